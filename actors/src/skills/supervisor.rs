//! The Supervisor (contract §3, §4): one per skill run. Its model chooses the next tool call;
//! the Supervisor admits it with the BudgetGuard, hands it to the Sub Agent that owns that
//! kind of work, records the evidence, and decides whether the run goes on. It never touches a
//! file or a process itself: every file operation is a message to an agent.
//!
//! The loop: **Acquire** (is time left?) → **Decide** (one model call, charged) → **Apply**
//! (each tool call of the reply in order, each admitted first) → **Record** (evidence, the
//! versions of what scripts wrote) → **Progress/Exit** (two steps without progress allow one
//! micro-reflect, a third ends the run; `finish` after a passing `validate` ends it validated).
//!
//! Failure modes end the run cleanly, with what exists: a budget (`budget_exceeded:<which>`),
//! a model that fails (`model_error`), a sandbox violation, an agent that panics (the run ends
//! `no_progress` with the agent named in `unmet`) or hangs (the run's deadline:
//! `budget_exceeded:time`).

use super::agent::{AgentFailure, MAX_OUTPUT_TOKENS};
use super::budget_guard::{Remaining, Spent};
use super::context::{digest, failure, Outcome, RunContext, Tally};
use super::llm::{ChatMessage, ChatRequest, ToolCall};
use super::read_ref::{
    DelegateRead, ListFiles, ReadRef, ReadReference, Summarize, ValidateOutputs,
};
use super::read_skill_md::{ReadSkill, ReadSkillMd};
use super::run_script::{DelegateScript, RunScript, RunScriptCall};
use super::write_artifact::{
    DelegateWrite, DiffCall, ListArtifacts, RecordEvidence, RecordVersions, TemplateExpand,
    WriteArtifact, WriteArtifactCall,
};
use actix::prelude::*;
use rumi_domain::skill::act::{ActResult, Cost, Evidence, ExitReason, Metrics, Unmet, Validation};
use rumi_domain::skill::budget::Which;
use rumi_domain::skill::disclosure::l1_tokens;
use rumi_domain::skill::prompt::{system_prompt, BEGIN, CONTINUE, REFLECT};
use rumi_domain::skill::tools::supervisor_tools;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// Most tool calls of one model turn that are run (the rest are answered as refused).
pub const MAX_CALLS_PER_TURN: usize = 16;
/// Largest tool result sent back to the model whole.
pub const MAX_TOOL_RESULT_BYTES: usize = 1024 * 1024;
/// Most entries kept in `evidence_summary`.
pub const MAX_SUMMARY_ENTRIES: usize = 400;

/// How the run reports while it runs (the runtime keeps the latest snapshot for `GET`).
pub type Publish = Arc<dyn Fn(ActResult) + Send + Sync>;

/// The Sub Agents' addresses.
#[derive(Clone)]
pub struct Agents {
    pub read_skill: Addr<ReadSkillMd>,
    pub read_ref: Addr<ReadRef>,
    pub run_script: Addr<RunScript>,
    pub write: Addr<WriteArtifact>,
}

impl Agents {
    /// Starts the four agents of a run on the current arbiter.
    pub fn start(ctx: &Arc<RunContext>) -> Agents {
        Agents {
            read_skill: ReadSkillMd::new(Arc::clone(ctx)).start(),
            read_ref: ReadRef::new(Arc::clone(ctx)).start(),
            run_script: RunScript::new(Arc::clone(ctx)).start(),
            write: WriteArtifact::new(Arc::clone(ctx)).start(),
        }
    }
}

/// The Supervisor of one run. It starts its agents, runs the loop, answers the final
/// ActResult on `done`, and stops (the agents stop with their last address).
pub struct Supervisor {
    ctx: Arc<RunContext>,
    publish: Publish,
    done: Option<oneshot::Sender<ActResult>>,
    base: ActResult,
}

impl Supervisor {
    /// `base` carries the run's fixed fields (run id, skill id, isolation, model).
    pub fn new(
        ctx: Arc<RunContext>,
        base: ActResult,
        publish: Publish,
        done: oneshot::Sender<ActResult>,
    ) -> Self {
        Supervisor {
            ctx,
            publish,
            done: Some(done),
            base,
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let agents = Agents::start(&self.ctx);
        let run = Loop::new(
            Arc::clone(&self.ctx),
            agents,
            self.base.clone(),
            Arc::clone(&self.publish),
        );
        let span = tracing::info_span!("skill.run", run_id = %self.ctx.run_id, skill_id = %self.ctx.skill_id);
        ctx.spawn(
            run.run()
                .instrument(span)
                .into_actor(self)
                .map(|result, act, ctx| {
                    if let Some(tx) = act.done.take() {
                        let _ = tx.send(result);
                    }
                    ctx.stop();
                }),
        );
    }
}

/// The loop's state: the conversation, the counters, the evidence.
struct Loop {
    ctx: Arc<RunContext>,
    agents: Agents,
    base: ActResult,
    publish: Publish,
    messages: Vec<ChatMessage>,
    tally: Tally,
    summary: Vec<Value>,
    stall: u32,
    /// The third step without progress ended the run: its exit reason is then decided like a
    /// run that simply stopped (`missing_refs` after a `not_found` read, §15).
    stalled: bool,
    reflected: bool,
    validated_generation: Option<u64>,
    finished: bool,
    script_failed: Option<String>,
    end: Option<ExitReason>,
    unmet: Vec<Unmet>,
    step: u32,
    /// The steps as the skill memory keeps them (`tool target → ok`).
    steps: Vec<String>,
}

impl Loop {
    fn new(ctx: Arc<RunContext>, agents: Agents, base: ActResult, publish: Publish) -> Loop {
        Loop {
            ctx,
            agents,
            base,
            publish,
            messages: vec![ChatMessage::User(BEGIN.to_string())],
            tally: Tally::default(),
            summary: Vec::new(),
            steps: Vec::new(),
            stall: 0,
            stalled: false,
            reflected: false,
            validated_generation: None,
            finished: false,
            script_failed: None,
            end: None,
            unmet: Vec::new(),
            step: 0,
        }
    }

    async fn run(mut self) -> ActResult {
        let system = system_prompt(
            &self.ctx.skill.name,
            &self.ctx.skill.description,
            &self.ctx.input,
            &self.ctx.budgets,
        );
        let tools = supervisor_tools();
        while self.end.is_none() && !self.finished && !self.stalled {
            // Acquire.
            if tokio::time::Instant::now() >= self.ctx.deadline {
                self.end = Some(ExitReason::BudgetExceeded(Which::Time));
                break;
            }
            // Decide.
            let req = ChatRequest {
                system: system.clone(),
                messages: self.messages.clone(),
                tools: tools.clone(),
                seed: Some(self.ctx.seed),
                max_tokens: MAX_OUTPUT_TOKENS,
            };
            let decided = Instant::now();
            let resp = match self.ctx.chat(&req, &mut self.tally).await {
                Ok(r) => r,
                Err(Ok(which)) => {
                    self.end = Some(ExitReason::BudgetExceeded(which));
                    break;
                }
                Err(Err(e)) => {
                    self.unmet.push(Unmet {
                        item: "model".into(),
                        reason: e.to_string(),
                        suggestion: "check the model settings (RUMI_LLM_* or user_data/settings/llm.json) and that the model answers; then run again".into(),
                    });
                    self.end = Some(ExitReason::ModelError);
                    break;
                }
            };
            let turn_tokens = resp.usage.input_tokens + resp.usage.output_tokens;
            let decide = decided.elapsed();
            let decide_ms = decide.as_millis() as u64;
            self.messages.push(ChatMessage::Assistant {
                text: resp.text.clone(),
                tool_calls: resp.tool_calls.clone(),
            });
            if resp.tool_calls.is_empty() {
                break; // no tool call: the run ends (validated only through finish)
            }
            let reason = rumi_domain::skill::text::reason_short(resp.text.as_deref());
            let mut need_reflect = false;
            for (i, call) in resp.tool_calls.iter().enumerate() {
                if self.end.is_some() || self.finished {
                    break;
                }
                if i >= MAX_CALLS_PER_TURN {
                    self.messages.push(ChatMessage::ToolResult {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        content: failure(
                            "invalid_arguments",
                            format!("at most {MAX_CALLS_PER_TURN} tool calls run per turn"),
                        )
                        .to_string(),
                    });
                    continue;
                }
                let name: String = call.name.chars().take(64).collect();
                if let Err(which) = self.ctx.admit(&name).await {
                    self.end = Some(ExitReason::BudgetExceeded(which));
                    break;
                }
                self.step += 1;
                let started = Instant::now();
                if !(self.ctx.still_approved)() {
                    self.unmet.push(Unmet {
                        item: format!("skill:{}", self.ctx.skill_id),
                        reason: "the skill's pack is no longer approved (it changed, or was rejected or removed) while the run ran".into(),
                        suggestion: "review and approve the pack again, then run again".into(),
                    });
                    self.end = Some(ExitReason::SandboxViolation);
                    break;
                }
                let outcome = match self.apply(call).await {
                    Ok(o) => o,
                    Err(f) => {
                        self.unmet.push(Unmet {
                            item: format!("agent:{}", f.agent),
                            reason: f.reason.clone(),
                            suggestion: "the run's files are kept; run again, and report the kernel log if it repeats".into(),
                        });
                        self.end = Some(ExitReason::NoProgress);
                        Outcome::err(
                            "invalid_arguments",
                            format!("the {} agent failed: {}", f.agent, f.reason),
                        )
                    }
                };
                let applied = started.elapsed();
                let cost = Cost {
                    tokens: if i == 0 { turn_tokens } else { 0 },
                    time_ms: applied.as_millis() as u64 + if i == 0 { decide_ms } else { 0 },
                };
                let timing = Timing {
                    decide: if i == 0 { decide } else { Duration::ZERO },
                    applied,
                };
                self.record(&name, call, &reason, cost, timing, &outcome)
                    .await;
                let content = self.capped(&outcome.result);
                self.messages.push(ChatMessage::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content,
                });
                if let Some(e) = outcome.end {
                    self.end.get_or_insert(e);
                    break;
                }
                if outcome.progress {
                    self.stall = 0;
                    self.reflected = false;
                } else {
                    self.stall += 1;
                    if self.stall >= 3 && !self.finished {
                        self.stalled = true;
                        break;
                    }
                    need_reflect |= self.stall == 2 && !self.reflected;
                }
            }
            if need_reflect && self.end.is_none() && !self.finished && !self.stalled {
                self.reflect().await;
            }
        }
        self.conclude().await
    }

    /// A tool result as the model gets it: whole up to [`MAX_TOOL_RESULT_BYTES`], else its
    /// `ok` and the start of its JSON (a delegated agent's `done.result`, a listing of
    /// thousands of files, …), the cut counted in `bytes_truncated`.
    fn capped(&mut self, result: &Value) -> String {
        let text = result.to_string();
        if text.len() <= MAX_TOOL_RESULT_BYTES {
            return text;
        }
        let mut cut = MAX_TOOL_RESULT_BYTES / 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.tally.bytes_truncated += (text.len() - cut) as u64;
        json!({
            "ok": result.get("ok").cloned().unwrap_or(Value::Bool(false)),
            "truncated": true,
            "bytes": text.len(),
            "preview": &text[..cut],
        })
        .to_string()
    }

    /// One tool-less model call to re-plan (counted in `model_calls` and tokens).
    async fn reflect(&mut self) {
        self.reflected = true;
        self.messages.push(ChatMessage::User(REFLECT.to_string()));
        let req = ChatRequest {
            system: system_prompt(
                &self.ctx.skill.name,
                &self.ctx.skill.description,
                &self.ctx.input,
                &self.ctx.budgets,
            ),
            messages: self.messages.clone(),
            tools: Vec::new(),
            seed: Some(self.ctx.seed),
            max_tokens: 512,
        };
        match self.ctx.chat(&req, &mut self.tally).await {
            Ok(r) => {
                self.messages.push(ChatMessage::Assistant {
                    text: Some(r.text.unwrap_or_default()),
                    tool_calls: Vec::new(),
                });
                self.messages.push(ChatMessage::User(CONTINUE.to_string()));
            }
            Err(Ok(which)) => self.end = Some(ExitReason::BudgetExceeded(which)),
            Err(Err(e)) => {
                self.unmet.push(Unmet {
                    item: "model".into(),
                    reason: e.to_string(),
                    suggestion: "check the model settings and that the model answers".into(),
                });
                self.end = Some(ExitReason::ModelError);
            }
        }
    }

    /// Sends `msg` to an agent, racing the run's deadline.
    async fn ask<A, M>(
        &self,
        agent: &'static str,
        addr: &Addr<A>,
        msg: M,
    ) -> Result<Outcome, AgentFailure>
    where
        A: Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: Message<Result = Result<Outcome, AgentFailure>> + Send + 'static,
    {
        let message = std::any::type_name::<M>()
            .rsplit("::")
            .next()
            .unwrap_or("?");
        let span = tracing::info_span!("skill.message", from = "Supervisor", to = agent, message);
        match tokio::time::timeout_at(self.ctx.deadline, addr.send(msg).instrument(span)).await {
            Err(_) => Ok(Outcome::err(
                "timeout",
                "the run's time budget ended while the agent worked",
            )
            .ending(ExitReason::BudgetExceeded(Which::Time))),
            Ok(Err(_)) => Err(AgentFailure {
                agent,
                reason: "the agent stopped".into(),
            }),
            Ok(Ok(r)) => r,
        }
    }

    /// Apply: hands the call to the agent that owns its kind of work.
    async fn apply(&mut self, call: &ToolCall) -> Result<Outcome, AgentFailure> {
        let args = match &call.arguments {
            Value::Object(_) => call.arguments.clone(),
            _ => {
                return Ok(Outcome::err(
                    "invalid_arguments",
                    "the arguments must be a JSON object",
                ))
            }
        };
        let task = match (args.get("task").and_then(Value::as_str), args.get("path")) {
            (Some(t), None) if !t.trim().is_empty() => {
                Some(t.chars().take(8192).collect::<String>())
            }
            _ => None,
        };
        let a = self.agents.clone();
        match call.name.as_str() {
            "read_skill_md" | "read_ref" if task.is_none() => {
                // The run's memo and the skill memory answer first (§10).
                let name = call.name.as_str();
                if let Some(o) = super::memo::before_read(&self.ctx, name, &args) {
                    return Ok(o);
                }
                let o = if name == "read_skill_md" {
                    self.ask("ReadSkillMd", &a.read_skill, ReadSkill).await?
                } else {
                    let args = args.clone();
                    self.ask("ReadRef", &a.read_ref, ReadReference { args })
                        .await?
                };
                super::memo::after_read(&self.ctx, name, &args, &o);
                Ok(o)
            }
            "read_skill_md" => self.ask("ReadSkillMd", &a.read_skill, ReadSkill).await,
            "read_ref" => match task {
                Some(task) => self.ask("ReadRef", &a.read_ref, DelegateRead { task }).await,
                None => self.ask("ReadRef", &a.read_ref, ReadReference { args }).await,
            },
            "run_script" => match task {
                Some(task) => self.ask("RunScript", &a.run_script, DelegateScript { task }).await,
                None => self.ask("RunScript", &a.run_script, RunScriptCall { args }).await,
            },
            "write_artifact" => match task {
                Some(task) => self.ask("WriteArtifact", &a.write, DelegateWrite { task }).await,
                None => self.ask("WriteArtifact", &a.write, WriteArtifactCall { args }).await,
            },
            "list_files" => self.ask("ReadRef", &a.read_ref, ListFiles { args }).await,
            "summarize" => self.ask("ReadRef", &a.read_ref, Summarize { args }).await,
            "diff" => self.ask("WriteArtifact", &a.write, DiffCall { args }).await,
            "template_expand" => self.ask("WriteArtifact", &a.write, TemplateExpand { args }).await,
            "validate" => {
                // Once the skill memory was given, the kept outputs still missing are filled in.
                let restored = super::memo::restore_for_validate(&self.ctx).await;
                if !restored.is_empty() {
                    let _ = a
                        .write
                        .send(RecordVersions {
                            files: restored.clone(),
                        })
                        .await;
                }
                let mut o = self.ask("ReadRef", &a.read_ref, ValidateOutputs).await?;
                if !restored.is_empty() {
                    let shown: Vec<String> =
                        restored.iter().map(|p| format!("build/{p}")).collect();
                    o.diff_summary =
                        format!("restored from the skill memory: {}", shown.join(", "));
                    o.result["restored"] = json!(shown);
                    o.progress = true;
                }
                if let Some(m) = o.result.as_object_mut() {
                    let generation = m.remove("generation").and_then(|g| g.as_u64());
                    if m.get("passed") == Some(&Value::Bool(true)) {
                        self.validated_generation = generation;
                    } else {
                        self.validated_generation = None;
                    }
                }
                Ok(o)
            }
            "blackboard_get" => Ok(super::agent::blackboard_get(&self.ctx, &args)),
            "blackboard_put" => Ok(super::agent::blackboard_put(&self.ctx, &args)),
            "finish" => self.finish(&args).await,
            other => Ok(Outcome::err(
                "invalid_arguments",
                format!(
                    "no tool {:?}; the tools are read_skill_md, read_ref, run_script, write_artifact, list_files, validate, summarize, diff, blackboard_get, blackboard_put, template_expand, finish",
                    other.chars().take(64).collect::<String>()
                ),
            )),
        }
    }

    /// `finish {summary}`: accepted only after a passing `validate` of the current files.
    async fn finish(&mut self, args: &Value) -> Result<Outcome, AgentFailure> {
        let now = self.ctx.build_generation.load(Ordering::SeqCst);
        if self.validated_generation == Some(now) {
            self.finished = true;
            let summary: String = args
                .get("summary")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(2000)
                .collect();
            let mut o = Outcome::ok(json!({"ok": true, "accepted": true}));
            o.diff_summary = format!("finished: {summary}");
            return Ok(o);
        }
        let a = self.agents.clone();
        let check = self.ask("ReadRef", &a.read_ref, ValidateOutputs).await?;
        let unmet = check.result.get("unmet").cloned().unwrap_or(json!([]));
        let passed = check.result.get("passed") == Some(&Value::Bool(true));
        let error = if passed {
            "call validate first: finish is accepted only after a passing validate of the current files"
        } else {
            "the expected outputs do not validate yet: fix what unmet lists, call validate, then finish"
        };
        Ok(Outcome::ok(
            json!({"ok": false, "error": error, "error_type": "validation_failed", "unmet": unmet}),
        ))
    }

    /// Record: the evidence line, the summary entry, versions of what a script wrote, the
    /// counters; then publishes the run's state.
    async fn record(
        &mut self,
        tool: &str,
        call: &ToolCall,
        reason: &str,
        cost: Cost,
        timing: Timing,
        o: &Outcome,
    ) {
        self.tally.add(&o.tally);
        if self.steps.len() < rumi_domain::skill::memo::MAX_MEMORY_STEPS {
            self.steps
                .push(rumi_domain::skill::memo::SkillMemory::step_line(
                    tool,
                    &rumi_domain::skill::text::args_hint(&call.arguments),
                    o.result.get("ok") == Some(&Value::Bool(true)),
                ));
        }
        if o.script_failed {
            let path = call
                .arguments
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("a script");
            let err = o
                .result
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("it failed");
            self.script_failed = Some(format!("{path}: {err}"));
        } else if tool == "run_script" && o.result.get("ok") == Some(&Value::Bool(true)) {
            self.script_failed = None;
        }
        if !o.written.is_empty() {
            let _ = self
                .agents
                .write
                .send(RecordVersions {
                    files: o.written.clone(),
                })
                .await;
        }
        let mut lines = Vec::with_capacity(1 + o.inner.len());
        lines.push(Evidence {
            tool: tool.to_string(),
            reason_short: if reason.is_empty() {
                format!(
                    "{tool} {}",
                    rumi_domain::skill::text::args_hint(&call.arguments)
                )
            } else {
                reason.to_string()
            },
            inputs_digest: digest(&call.arguments),
            cost,
            diff_summary: o.diff_summary.clone(),
            file_ids: o.files.clone(),
        });
        for inner in &o.inner {
            lines.push(Evidence {
                tool: inner.tool.clone(),
                reason_short: format!("inside the delegated {tool}"),
                inputs_digest: inner.inputs_digest.clone(),
                cost: Cost {
                    tokens: inner.tokens,
                    time_ms: inner.time_ms,
                },
                diff_summary: String::new(),
                file_ids: inner.files.clone(),
            });
        }
        let _ = self
            .agents
            .write
            .send(RecordEvidence {
                lines: lines.clone(),
            })
            .await;
        let spent = self.spent().await;
        if self.summary.len() < MAX_SUMMARY_ENTRIES {
            self.summary.push(json!({
                "step": self.step,
                "tool": tool,
                "ok": o.result.get("ok").cloned().unwrap_or(Value::Bool(false)),
                "reason_short": lines[0].reason_short,
                "cost": cost,
                // Where cost.time_ms went, in µs-precise milliseconds: the model call that chose
                // this step (first call of a turn only) and the step itself.
                "decide_ms": ms3(timing.decide),
                "tool_ms": ms3(timing.applied),
                "diff_summary": o.diff_summary,
                "remaining": spent.as_ref().map(|s| json!(s.remaining)),
            }));
        }
        let mut snapshot = self.base.clone();
        snapshot.status = "running".into();
        snapshot.evidence_summary = self.summary.clone();
        if let Some(s) = &spent {
            snapshot.metrics = self.metrics(s);
            snapshot.remaining_budgets = s.remaining.clone();
        }
        (self.publish)(snapshot);
    }

    async fn spent(&self) -> Option<Spent> {
        self.ctx.guard.send(Remaining).await.ok()
    }

    fn metrics(&self, s: &Spent) -> Metrics {
        let t = &self.tally;
        Metrics {
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            model_calls: t.model_calls,
            tool_calls: u64::from(s.calls),
            // Every admitted call that the memo did not answer ran (validate, finish and the
            // blackboard tools included).
            tool_calls_executed: u64::from(s.calls).saturating_sub(t.tool_calls_from_memo),
            tool_calls_from_memo: t.tool_calls_from_memo,
            tool_calls_by_name: s
                .by_name
                .iter()
                .map(|(k, v)| (k.clone(), u64::from(*v)))
                .collect(),
            script_runs: t.script_runs,
            script_failures: t.script_failures,
            script_retries: t.script_retries,
            l1_tokens: l1_tokens(&self.ctx.skill.name, &self.ctx.skill.description),
            l2_loads: t.l2_loads,
            l3_reads: t.l3_reads,
            l3_exec: t.l3_exec,
            cache_hits: t.cache_hits,
            cache_misses: t.cache_misses,
            bytes_truncated: t.bytes_truncated,
        }
    }

    /// Progress/Exit: the final validation, the artifacts, the reason the run ended.
    async fn conclude(mut self) -> ActResult {
        let a = self.agents.clone();
        // The final checks get a short grace past the deadline: a run that ran out of time
        // still reports what exists.
        let grace = std::time::Duration::from_secs(10);
        let validation = tokio::time::timeout(grace, a.read_ref.send(ValidateOutputs)).await;
        let report = match validation {
            Ok(Ok(Ok(o))) => o.result,
            _ => json!({}),
        };
        let artifacts = match tokio::time::timeout(grace, a.write.send(ListArtifacts)).await {
            Ok(Ok(Ok(list))) => list,
            _ => Vec::new(),
        };
        let exit = if self.finished {
            ExitReason::Validated
        } else if let Some(e) = self.end {
            e
        } else if !self.tally.missing.is_empty() {
            ExitReason::MissingRefs
        } else if self.script_failed.is_some() {
            ExitReason::ScriptFailed
        } else {
            ExitReason::NoProgress
        };
        let mut unmet = std::mem::take(&mut self.unmet);
        if exit != ExitReason::Validated {
            if let Some(items) = report.get("unmet").and_then(Value::as_array) {
                unmet.extend(
                    items
                        .iter()
                        .filter_map(|u| serde_json::from_value::<Unmet>(u.clone()).ok()),
                );
            }
            for m in &self.tally.missing {
                unmet.push(Unmet {
                    item: m.clone(),
                    reason: "the skill names this file but it does not exist".into(),
                    suggestion: "add the file to the skill or correct the reference in SKILL.md; or give the content as an input".into(),
                });
            }
            if let Some(s) = &self.script_failed {
                unmet.push(Unmet {
                    item: "script".into(),
                    reason: s.clone(),
                    suggestion: "check the script's argv and args (stdin JSON) against the skill's instructions".into(),
                });
            }
            if let ExitReason::BudgetExceeded(w) = exit {
                unmet.push(Unmet {
                    item: format!("budget:{}", w.as_str()),
                    reason: format!("the {} budget ran out", w.as_str()),
                    suggestion: format!("raise budgets.{} or narrow the goal", w.budget_key()),
                });
            }
            if exit == ExitReason::NoProgress && unmet.is_empty() {
                unmet.push(Unmet {
                    item: "run".into(),
                    reason: "the model stopped choosing tools that make progress".into(),
                    suggestion: "make the goal and expected outputs more specific".into(),
                });
            }
        }
        let spent = self.spent().await;
        let mut result = self.base.clone();
        result.status = if exit == ExitReason::Validated {
            "succeeded"
        } else {
            "failed"
        }
        .into();
        result.exit_reason = Some(exit);
        result.artifacts = artifacts;
        result.validation = Validation {
            completeness: report
                .get("completeness")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            compliance: report
                .get("compliance")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            quality: report
                .get("quality")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            details: report
                .get("details")
                .and_then(|d| serde_json::from_value(d.clone()).ok())
                .unwrap_or_default(),
        };
        result.evidence_summary = std::mem::take(&mut self.summary);
        if let Some(s) = &spent {
            result.metrics = self.metrics(s);
            result.remaining_budgets = s.remaining.clone();
        }
        result.unmet = unmet;
        if exit == ExitReason::Validated {
            let ctx = Arc::clone(&self.ctx);
            let paths: Vec<String> = result.artifacts.iter().map(|a| a.path.clone()).collect();
            let steps = std::mem::take(&mut self.steps);
            super::agent::blocking(move || super::memo::save_memory(&ctx, &paths, steps)).await;
        }
        result
    }
}

/// Where one step's time went.
#[derive(Debug, Clone, Copy)]
struct Timing {
    decide: Duration,
    applied: Duration,
}

/// Milliseconds with three decimals.
fn ms3(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
