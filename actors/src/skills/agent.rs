//! What the four Sub Agents share: how their work runs (file work on the blocking pool, every
//! panic caught), the blackboard tools, and the delegated loop (contract §4, §14): given a task
//! in words, an agent runs its own short model loop over its own tools plus `done`, under the
//! run's BudgetGuard, and answers `done.result` verbatim.

use super::context::{arg_str, digest, InnerStep, Outcome, RunContext, Tally};
use super::llm::{ChatMessage, ChatRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use rumi_domain::skill::act::ExitReason;
use rumi_domain::skill::tools::{agent_tools, AgentKind};
use serde_json::{json, Value};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

/// An agent stopped without an answer (it panicked, or its work could not be scheduled).
#[derive(Debug, Clone)]
pub struct AgentFailure {
    pub agent: &'static str,
    pub reason: String,
}

/// Runs an agent's work, turning a panic into an [`AgentFailure`] (a panic must never vanish,
/// and never take the run's thread with it).
pub async fn guarded<F>(agent: &'static str, work: F) -> Result<Outcome, AgentFailure>
where
    F: std::future::Future<Output = Outcome>,
{
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(o) => Ok(o),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(agent, %reason, "a skill agent panicked");
            Err(AgentFailure {
                agent,
                reason: "the agent stopped on an internal error (the kernel log has it)".into(),
            })
        }
    }
}

/// File work on the blocking pool; a panic there comes back as a panic here (caught by
/// [`guarded`]).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("blocking work was cancelled"),
    }
}

/// `blackboard_get {key}` → `{ok, value}` (null when absent).
pub fn blackboard_get(ctx: &RunContext, args: &Value) -> Outcome {
    match arg_str(args, "key") {
        Ok(key) => Outcome::ok(json!({"ok": true, "value": ctx.blackboard.get(key)})),
        Err(o) => o,
    }
}

/// `blackboard_put {key, value}` → `{ok}`.
pub fn blackboard_put(ctx: &RunContext, args: &Value) -> Outcome {
    let key = match arg_str(args, "key") {
        Ok(k) => k,
        Err(o) => return o,
    };
    let value = args.get("value").cloned().unwrap_or(Value::Null);
    match ctx.blackboard.put(key, value) {
        Ok(()) => Outcome::ok(json!({"ok": true})),
        Err(e) => Outcome::err("invalid_arguments", e),
    }
}

/// Most model turns of one delegated call.
pub const MAX_DELEGATED_TURNS: usize = 8;
/// Most output tokens one model turn may use.
pub const MAX_OUTPUT_TOKENS: u32 = 4096;

/// The system prompt of a delegated agent: what it is for, and nothing of the run's content.
fn agent_prompt(kind: AgentKind) -> &'static str {
    match kind {
        AgentKind::ReadRef => "You are the ReadRef agent of a skill run. You read the skill's files to answer the task you are given. \
Use fs_list to see the files and fs_read to read them (paths relative to the skill root; build/ holds the run's artifacts). \
When you have the answer, call done with {\"result\": …}; the result goes back verbatim.",
        AgentKind::RunScript => "You are the RunScript agent of a skill run. You run the skill's scripts (.py, .sh, .js) to do the task you are given. \
Call script_run with the script's path, its argv and its args (stdin JSON). When the task is done, call done with {\"result\": …}; the result goes back verbatim.",
        AgentKind::WriteArtifact => "You are the WriteArtifact agent of a skill run. You write the run's artifacts under build/ to do the task you are given. \
Call fs_write with a path relative to build/ and the content. When the task is done, call done with {\"result\": …}; the result goes back verbatim.",
    }
}

/// The delegated loop: `exec` runs the agent's own tools (never another agent's); the blackboard
/// tools every agent shares are answered here.
pub async fn delegated(
    ctx: Arc<RunContext>,
    kind: AgentKind,
    task: &str,
    exec: &(dyn Fn(Arc<RunContext>, String, Value) -> LocalBoxFuture<'static, Outcome> + Sync),
) -> Outcome {
    let tools = agent_tools(kind);
    let names: Vec<&str> = tools.iter().map(|t| t.name).collect();
    let mut messages = vec![ChatMessage::User(task.to_string())];
    let mut total = Outcome::ok(Value::Null);
    let mut tally = Tally::default();
    for _ in 0..MAX_DELEGATED_TURNS {
        let req = ChatRequest {
            system: agent_prompt(kind).to_string(),
            messages: messages.clone(),
            tools: tools.clone(),
            seed: Some(ctx.seed),
            max_tokens: MAX_OUTPUT_TOKENS,
        };
        let resp = match ctx.chat(&req, &mut tally).await {
            Ok(r) => r,
            Err(Ok(which)) => {
                return finish(
                    total,
                    tally,
                    Outcome::err(
                        "budget_exceeded",
                        format!(
                            "the {} budget ran out during the delegated task",
                            which.as_str()
                        ),
                    )
                    .ending(ExitReason::BudgetExceeded(which)),
                )
            }
            Err(Err(e)) => {
                return finish(
                    total,
                    tally,
                    Outcome::err(
                        "script_failed",
                        format!("the model failed during the delegated task: {e}"),
                    )
                    .ending(ExitReason::ModelError),
                )
            }
        };
        let turn_tokens = resp.usage.input_tokens + resp.usage.output_tokens;
        messages.push(ChatMessage::Assistant {
            text: resp.text.clone(),
            tool_calls: resp.tool_calls.clone(),
        });
        if resp.tool_calls.is_empty() {
            let said: String = resp.text.unwrap_or_default().chars().take(300).collect();
            return finish(
                total,
                tally,
                Outcome::err(
                    "invalid_arguments",
                    format!("the agent answered without calling done: {said}"),
                ),
            );
        }
        for (i, call) in resp.tool_calls.iter().enumerate() {
            if let Err(which) = ctx.admit(&call.name).await {
                return finish(
                    total,
                    tally,
                    Outcome::err(
                        "budget_exceeded",
                        format!(
                            "the {} budget ran out during the delegated task",
                            which.as_str()
                        ),
                    )
                    .ending(ExitReason::BudgetExceeded(which)),
                );
            }
            let started = Instant::now();
            if !(ctx.still_approved)() {
                return finish(
                    total,
                    tally,
                    Outcome::err(
                        "sandbox_violation",
                        "the skill's pack is no longer approved",
                    )
                    .ending(ExitReason::SandboxViolation),
                );
            }
            if call.name == "done" {
                let result = match &call.arguments {
                    Value::Object(m) if m.contains_key("result") => m["result"].clone(),
                    other => other.clone(),
                };
                total.result = result;
                total.inner.push(InnerStep {
                    tool: "done".into(),
                    inputs_digest: digest(&call.arguments),
                    ok: true,
                    tokens: if i == 0 { turn_tokens } else { 0 },
                    time_ms: 0,
                    files: Vec::new(),
                });
                total.tally.add(&tally);
                return total;
            }
            let o = if !call.arguments.is_object() && names.contains(&call.name.as_str()) {
                Outcome::err("invalid_arguments", "the arguments must be a JSON object")
            } else if call.name == "blackboard_get" {
                blackboard_get(&ctx, &call.arguments)
            } else if call.name == "blackboard_put" {
                blackboard_put(&ctx, &call.arguments)
            } else if names.contains(&call.name.as_str()) {
                exec(Arc::clone(&ctx), call.name.clone(), call.arguments.clone()).await
            } else {
                Outcome::err(
                    "invalid_arguments",
                    format!(
                        "no tool {:?} here; this agent's tools are {}",
                        truncate(&call.name),
                        names.join(", ")
                    ),
                )
            };
            total.inner.push(InnerStep {
                tool: call.name.clone(),
                inputs_digest: digest(&call.arguments),
                ok: o.result.get("ok") == Some(&Value::Bool(true)),
                tokens: if i == 0 { turn_tokens } else { 0 },
                time_ms: started.elapsed().as_millis() as u64,
                files: o.files.clone(),
            });
            let mut content = serde_json::to_string(&o.result).unwrap_or_default();
            if content.len() > super::supervisor::MAX_TOOL_RESULT_BYTES {
                content = json!({"ok": o.result.get("ok").cloned().unwrap_or(Value::Bool(false)), "truncated": true, "bytes": content.len()}).to_string();
            }
            messages.push(ChatMessage::ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                content,
            });
            let end = o.end;
            absorb(&mut total, o);
            if end.is_some() {
                total.end = end;
                total.tally.add(&tally);
                return total;
            }
        }
    }
    finish(
        total,
        tally,
        Outcome::err("invalid_arguments", format!("the agent did not call done within {MAX_DELEGATED_TURNS} turns; give it a smaller task or call the tool directly")),
    )
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Folds one inner call's effects into the delegated call's outcome.
fn absorb(total: &mut Outcome, o: Outcome) {
    total.progress |= o.progress;
    total.tally.add(&o.tally);
    total.files.extend(o.files);
    total.written.extend(o.written);
    total.script_failed |= o.script_failed;
    if !o.diff_summary.is_empty() {
        if !total.diff_summary.is_empty() {
            total.diff_summary.push_str("; ");
        }
        total.diff_summary.push_str(&o.diff_summary);
    }
}

/// The delegated call's answer when the loop ends without `done`: the effects so far, this result.
fn finish(mut total: Outcome, tally: Tally, last: Outcome) -> Outcome {
    total.result = last.result;
    total.end = last.end;
    total.tally.add(&tally);
    total
}
