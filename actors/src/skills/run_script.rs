//! The RunScript Sub Agent (contract §8, §15 "Scripts"): decides whether a script may run and
//! what its run means; a [`ScriptRunner`](super::script::ScriptRunner) runs it.
//!
//! * Only `.py`, `.sh` and `.js` from the skill root or `build/` run. Another extension, or a
//!   script path that escapes (absolute, `..`, a link out), ends the run at once with
//!   `sandbox_violation`: a model that tries either is not following the skill.
//! * Every argv item that would lead outside the skill root is refused (`path_rejected`)
//!   before anything runs; the run goes on.
//! * `build/` is snapshotted before and after: what changed is `files_written` (and is
//!   charged to the disk budget). A host script (permissive mode) could write into the skill
//!   itself through its view: the skill is snapshotted too, and any change ends the run with
//!   `sandbox_violation`.
//! * The timeout is the smaller of the call's, the budget's `script_timeout_s` and the time
//!   left; the run's deadline also cancels a running script (the runner kills it).

use super::agent::{blocking, delegated, guarded, AgentFailure};
use super::budget_guard::ChargeWritten;
use super::context::{arg_str, Outcome, RunContext};
use super::script::{Interpreter, ScriptJob};
use super::workspace::Resolve;
use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use rumi_domain::skill::act::ExitReason;
use rumi_domain::skill::budget::Which;
use rumi_domain::skill::paths::{check_argv_item, read_path};
use rumi_domain::skill::tools::AgentKind;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most argv items.
pub const MAX_ARGV: usize = 64;
/// Longest argv item, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;
/// Largest `args` (the script's stdin), as JSON.
pub const MAX_ARGS_BYTES: usize = 64 * 1024;
/// Most bytes of non-JSON stdout given to the model.
pub const MAX_STDOUT_TEXT: usize = 16 * 1024;

/// `run_script {path, argv?, args?, dependencies?, timeout_seconds?}` (or `script_run`).
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct RunScriptCall {
    pub args: Value,
}

/// `run_script {task}`: the delegated loop.
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct DelegateScript {
    pub task: String,
}

/// The RunScript agent of one run.
pub struct RunScript {
    ctx: Arc<RunContext>,
}

impl RunScript {
    pub fn new(ctx: Arc<RunContext>) -> Self {
        RunScript { ctx }
    }
}

impl Actor for RunScript {
    type Context = Context<Self>;
}

impl Handler<RunScriptCall> for RunScript {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: RunScriptCall, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("RunScript", run(ctx, msg.args)))
    }
}

/// Every `run_script` result carries `isolation` (§15), refusals included.
fn with_isolation(mut o: Outcome, isolation: &'static str) -> Outcome {
    if let Some(m) = o.result.as_object_mut() {
        m.entry("isolation").or_insert_with(|| json!(isolation));
    }
    o
}

impl Handler<DelegateScript> for RunScript {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: DelegateScript, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("RunScript", async move {
            let exec = |ctx: Arc<RunContext>,
                        _tool: String,
                        args: Value|
             -> LocalBoxFuture<'static, Outcome> {
                async move { run(ctx, args).await }.boxed_local()
            };
            delegated(ctx, AgentKind::RunScript, &msg.task, &exec).await
        }))
    }
}

/// How often `build/` and `io/` are measured while a script runs. Between two looks a script
/// can still write more than the budget (each file is capped at what is left, the total is
/// not): the budget is then exceeded by what one interval allows, and the run ends.
const DISK_WATCH_EVERY: Duration = Duration::from_millis(50);

/// Returns (with the reason) once the script has written more than `left` bytes since `from`
/// into `build/` or `io/`, or more entries than a walk measures; never returns otherwise.
async fn watch_disk(ctx: Arc<RunContext>, from: u64, left: u64) -> String {
    loop {
        tokio::time::sleep(DISK_WATCH_EVERY).await;
        let ctx = Arc::clone(&ctx);
        let (now, too_many) = blocking(move || ctx.files.written_bytes()).await;
        if too_many {
            return format!(
                "the script made more than {} files and directories in its workspace, more than the disk check measures; it was stopped",
                super::workspace::MAX_WALK_ENTRIES
            );
        }
        if now.saturating_sub(from) > left {
            return "the script wrote more than the disk budget left (disk_write_limit_mb); it was stopped".into();
        }
    }
}

/// Whether an argv item names a path that exists in the skill or build/ and leads outside
/// through a link (the lexical check cannot see that): the reason, if so. The item itself, the
/// value after `=`, and a one-letter option's attached value are each looked at.
fn leads_out(ctx: &RunContext, item: &str) -> Option<String> {
    let mut candidates = Vec::new();
    if let Some((_, v)) = item.split_once('=') {
        candidates.push(v);
    }
    match item.strip_prefix('-') {
        Some(rest) if !rest.starts_with('-') => candidates.push(rest.get(1..).unwrap_or("")),
        Some(_) => {}
        None => candidates.push(item),
    }
    for c in candidates.into_iter().filter(|c| !c.is_empty()) {
        if let Ok(p) = read_path(c) {
            if let Resolve::Rejected(why) = ctx.files.resolve(&p, false) {
                return Some(why);
            }
        }
    }
    None
}

fn violation(why: String) -> Outcome {
    Outcome::err("sandbox_violation", why).ending(ExitReason::SandboxViolation)
}

/// The checked parts of a call.
struct Checked {
    interpreter: Interpreter,
    shown: String,
    argv: Vec<String>,
    stdin: Vec<u8>,
    timeout: Duration,
    /// What the memo keys a run by: everything of the call that can change its result.
    memo_parts: Value,
    deps: rumi_domain::skill::deps::DepSet,
}

fn check(ctx: &RunContext, args: &Value) -> Result<Checked, Outcome> {
    let raw = arg_str(args, "path")?;
    let path =
        read_path(raw).map_err(|e| violation(format!("the script path is refused: {}", e.0)))?;
    let Some(interpreter) = Interpreter::for_path(&path.rel) else {
        return Err(violation(format!(
            "{raw}: only .py, .sh and .js scripts run"
        )));
    };
    let shown = match ctx.files.resolve(&path, true) {
        Resolve::Found(r) if !r.is_dir => r.shown,
        Resolve::Found(_) => {
            return Err(Outcome::err(
                "invalid_arguments",
                format!("{raw} is a directory"),
            ))
        }
        Resolve::NotFound => {
            return Err(Outcome::err(
                "not_found",
                format!("no script {raw}; list_files shows the skill's scripts"),
            ))
        }
        Resolve::Rejected(why) => return Err(violation(why)),
    };
    let argv: Vec<String> = match args.get("argv") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_ARGV => {
            let mut argv = Vec::with_capacity(items.len());
            for item in items {
                let Some(s) = item.as_str() else {
                    return Err(Outcome::err(
                        "invalid_arguments",
                        "argv is a list of strings",
                    ));
                };
                if s.len() > MAX_ARG_BYTES || s.contains('\0') {
                    return Err(Outcome::err(
                        "invalid_arguments",
                        format!("an argv item is at most {MAX_ARG_BYTES} bytes, without NUL"),
                    ));
                }
                if let Err(e) = check_argv_item(s) {
                    return Err(Outcome::err(
                        "path_rejected",
                        format!("argv item {s:?}: {}", e.0),
                    ));
                }
                if let Some(why) = leads_out(ctx, s) {
                    return Err(Outcome::err(
                        "path_rejected",
                        format!("argv item {s:?}: {why}"),
                    ));
                }
                argv.push(s.to_string());
            }
            argv
        }
        Some(_) => {
            return Err(Outcome::err(
                "invalid_arguments",
                format!("argv is a list of at most {MAX_ARGV} strings"),
            ))
        }
    };
    let input = match args.get("args") {
        None | Some(Value::Null) => json!({}),
        Some(v) => v.clone(),
    };
    let stdin = serde_json::to_vec(&input).unwrap_or_default();
    if stdin.len() > MAX_ARGS_BYTES {
        return Err(Outcome::err(
            "invalid_arguments",
            format!("args is at most {MAX_ARGS_BYTES} bytes as JSON"),
        ));
    }
    // The dependency set: the call's, the skill's requirements.txt / package.json, the
    // script's PEP 723 header — each item checked (contract §8).
    let deps = super::envs::dependency_set(ctx, args.get("dependencies"), &path, interpreter)?;
    let budget = u64::from(ctx.budgets.script_timeout_s);
    let asked = match args.get("timeout_seconds") {
        None | Some(Value::Null) => budget,
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 => (s.ceil() as u64).min(budget),
            _ => {
                return Err(Outcome::err(
                    "invalid_arguments",
                    "timeout_seconds is a positive number",
                ))
            }
        },
    };
    let left = ctx
        .deadline
        .saturating_duration_since(tokio::time::Instant::now());
    let memo_parts = json!({
        "path": shown,
        "argv": argv,
        "args": rumi_domain::skill::memo::value_digest(&input),
        "dependencies": [deps.pip, deps.npm.iter().map(|n| n.canonical()).collect::<Vec<_>>()],
        "timeout_s": asked,
        "isolation": ctx.scripts.isolation(),
    });
    Ok(Checked {
        interpreter,
        shown,
        argv,
        stdin,
        timeout: Duration::from_secs(asked).min(left),
        memo_parts,
        deps,
    })
}

/// `run_script` / `script_run`.
pub async fn run(ctx: Arc<RunContext>, args: Value) -> Outcome {
    let isolation = ctx.scripts.isolation();
    with_isolation(run_inner(ctx, args).await, isolation)
}

async fn run_inner(ctx: Arc<RunContext>, args: Value) -> Outcome {
    let checked = {
        let (ctx, args) = (Arc::clone(&ctx), args.clone());
        blocking(move || check(&ctx, &args)).await
    };
    let c = match checked {
        Ok(c) => c,
        Err(o) => return o,
    };
    let isolation = ctx.scripts.isolation();
    let host = isolation == "host";
    if host && crate::docker::is_root() && c.shown.starts_with("build/") {
        // A script the model wrote, run on the host by a root kernel, could read everything
        // root reads (the home's keys, the API token): it runs only in strict mode's
        // container, or under a kernel that is not root. The skill's own scripts still run.
        let o = Outcome::err(
            "sandbox_violation",
            "scripts written during the run (under build/) run only in strict mode, or under a kernel that does not run as root; use the skill's own scripts",
        );
        return o;
    }
    // The AttemptMemo (§10): an identical run from the same build/ is answered, not run. The
    // disk budget left is part of the inputs: it is the script's file-size limit, and a failure
    // it caused must not answer a run with more room.
    let disk_left = ctx
        .guard
        .send(super::budget_guard::DiskLeft)
        .await
        .unwrap_or(0);
    let inputs = {
        let (ctx, mut parts) = (Arc::clone(&ctx), c.memo_parts.clone());
        parts["disk_left"] = json!(disk_left);
        blocking(move || super::memo::script_inputs(&ctx, parts)).await
    };
    if let Some(inputs) = &inputs {
        if let Some(o) = from_memo(&ctx, inputs, &c.shown).await {
            return o;
        }
    }
    let o = execute(Arc::clone(&ctx), c, host, isolation, disk_left).await;
    // Kept: a script that ran to an exit, failures included; not a runner failure, nor a run
    // the budgets stopped, nor a timeout (it says as much about the machine's load as about the
    // script: the next attempt runs it again).
    let timed_out = o.result.get("error_type").and_then(Value::as_str) == Some("timeout");
    if let Some(inputs) = inputs {
        if o.end.is_none() && o.result.get("exit_code").is_some() && !timed_out {
            let (ctx, result) = (Arc::clone(&ctx), o.result.clone());
            let (written, removed) = (o.written.clone(), o.removed.clone());
            blocking(move || super::memo::script_store(&ctx, &inputs, &result, &written, &removed))
                .await;
        }
    }
    o
}

/// A memo hit: the kept result, its files restored into `build/` (admitted by the guard).
async fn from_memo(ctx: &Arc<RunContext>, inputs: &str, shown: &str) -> Option<Outcome> {
    let hit = {
        let (c, inputs) = (Arc::clone(ctx), inputs.to_string());
        blocking(move || super::memo::script_hit(&c, &inputs)).await?
    };
    let removed = hit.record.removed.clone();
    let restored = super::memo::restore_files(ctx, hit.files).await?;
    // What the script removed goes too: build/ ends as the script left it.
    if !removed.is_empty() {
        let c = Arc::clone(ctx);
        let gone = removed.clone();
        blocking(move || {
            for rel in gone {
                c.files.remove_build_file(&rel);
            }
        })
        .await;
        ctx.build_changed();
    }
    let mut result = hit.record.result;
    result["from_memo"] = json!(true);
    let ok = result.get("ok") == Some(&Value::Bool(true));
    ctx.last_script_failed.store(!ok, Ordering::SeqCst);
    let mut o = Outcome::ok(result);
    o.tally.tool_calls_from_memo = 1;
    o.progress = ok;
    o.script_failed = !ok;
    o.files.push(shown.to_string());
    o.diff_summary = format!(
        "{shown}: answered from the memo{}",
        if restored.is_empty() {
            String::new()
        } else {
            format!(", restored {}", restored.join(", "))
        }
    );
    o.written = restored;
    Some(o)
}

/// Runs the checked script and reads what it did.
/// `disk_left`: the disk budget left as the memo key took it (nothing of the run writes in
/// between: its calls run one at a time), the script's file-size limit.
async fn execute(
    ctx: Arc<RunContext>,
    c: Checked,
    host: bool,
    isolation: &'static str,
    disk_left: u64,
) -> Outcome {
    // The environments (built once, reused after); a failed install goes back to the agent.
    let env = match super::envs::ensure_for(&ctx, &c.deps).await {
        Ok(env) => env,
        Err(o) => return o,
    };
    let before = {
        let ctx = Arc::clone(&ctx);
        blocking(move || {
            ctx.scripts.prepare(&ctx.files);
            (
                ctx.files.snapshot_build(),
                host.then(|| ctx.files.snapshot_skill()),
            )
        })
        .await
    };
    let seq = ctx.scripts_started.fetch_add(1, Ordering::SeqCst) + 1;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let job = ScriptJob {
        stop: stop_rx,
        interpreter: c.interpreter,
        shown: c.shown.clone(),
        argv: c.argv,
        stdin: c.stdin,
        timeout: c.timeout,
        files: ctx.files.clone(),
        seq,
        max_file_bytes: disk_left,
        env,
    };
    let grown_from = {
        let ctx = Arc::clone(&ctx);
        blocking(move || ctx.files.written_bytes().0).await
    };
    let mut runner = Box::pin(tokio::time::timeout_at(ctx.deadline, ctx.scripts.run(job)));
    let ran = tokio::select! {
        r = &mut runner => Ok(r),
        why = watch_disk(Arc::clone(&ctx), grown_from, disk_left) => Err(why),
    };
    if ran.is_err() {
        // Stop the script and wait until it is gone (a container removed), so nothing writes
        // into build/ after the cleanup below.
        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut runner).await;
    }
    let ran = match ran {
        Ok(r) => r,
        Err(why) => {
            // Dropping the runner's future stopped the script (its process tree killed, its
            // container removed). A script that passes the disk budget loses what it wrote: a
            // burst between two looks of the watch must not stay on disk past the budget.
            {
                let ctx = Arc::clone(&ctx);
                let before = before.0.clone();
                blocking(move || {
                    ctx.files.clear_io();
                    let (changed, _) = before.changes(&ctx.files.snapshot_build());
                    for rel in changed {
                        ctx.files.remove_build_file(&rel);
                    }
                })
                .await;
            }
            let mut o = Outcome::err("budget_exceeded", why)
                .ending(ExitReason::BudgetExceeded(Which::Disk));
            o.tally.script_runs += 1;
            o.tally.script_failures += 1;
            o.script_failed = true;
            ctx.build_changed();
            return o;
        }
    };
    let after = {
        let ctx = Arc::clone(&ctx);
        blocking(move || {
            // io/ (a host script's HOME and TMPDIR) is scratch: emptied after every script, so
            // nothing written there outlives it or escapes the disk budget.
            ctx.files.clear_io();
            (
                ctx.files.snapshot_build(),
                host.then(|| ctx.files.snapshot_skill()),
            )
        })
        .await
    };
    let (changed, gone) = before.0.changes(&after.0);
    let files_written: Vec<String> = changed.iter().map(|p| format!("build/{p}")).collect();
    let mut o = Outcome::ok(Value::Null);
    o.removed = gone;
    o.files.push(c.shown.clone());
    o.written = changed.clone();
    if !changed.is_empty() {
        ctx.build_changed();
    }
    if let (Some(b), Some(a)) = (&before.1, &after.1) {
        let (touched, gone) = b.changes(a);
        if !touched.is_empty() || !gone.is_empty() || a.truncated {
            let mut list: Vec<String> = touched.into_iter().chain(gone).take(10).collect();
            list.sort();
            let mut v = violation(format!(
                "the script changed the skill's own files ({}): scripts write only under build/",
                list.join(", ")
            ));
            v.tally = o.tally;
            v.files = o.files;
            return v;
        }
    }
    let bytes: u64 = changed
        .iter()
        .filter_map(|p| after.0.files.get(p).map(|s| s.size))
        .sum();
    if bytes > 0 {
        let charged = ctx
            .guard
            .send(ChargeWritten { bytes })
            .await
            .unwrap_or(Err(Which::Disk));
        if let Err(which) = charged {
            // Past the budget: what this script wrote is removed, as above.
            let ctx2 = Arc::clone(&ctx);
            let written = changed.clone();
            blocking(move || {
                for rel in written {
                    ctx2.files.remove_build_file(&rel);
                }
            })
            .await;
            o.result = json!({"ok": false, "error_type": "budget_exceeded", "error": "the script's files pass the disk budget; they were removed", "files_written": files_written});
            o.end = Some(ExitReason::BudgetExceeded(which));
            return o;
        }
    }
    let retry = ctx.last_script_failed.load(Ordering::SeqCst);
    if retry {
        o.tally.script_retries += 1;
    }
    o.tally.script_runs += 1;
    o.tally.l3_exec += 1;
    let out = match ran {
        Err(_) => {
            ctx.last_script_failed.store(true, Ordering::SeqCst);
            o.tally.script_failures += 1;
            o.script_failed = true;
            o.result = json!({"ok": false, "error_type": "timeout", "error": "the run's time budget ended while the script ran", "files_written": files_written, "isolation": isolation, "from_memo": false});
            o.end = Some(ExitReason::BudgetExceeded(Which::Time));
            return o;
        }
        Ok(Err(why)) => {
            ctx.last_script_failed.store(true, Ordering::SeqCst);
            o.tally.script_failures += 1;
            o.script_failed = true;
            o.result = json!({"ok": false, "error_type": "script_failed", "error": why, "files_written": files_written, "isolation": isolation, "from_memo": false});
            return o;
        }
        Ok(Ok(out)) => out,
    };
    let succeeded = !out.timed_out && out.exit_code == Some(0);
    ctx.last_script_failed.store(!succeeded, Ordering::SeqCst);
    let mut result = json!({
        "ok": succeeded,
        "exit_code": out.exit_code,
        "stderr_tail": out.stderr_tail.join("\n"),
        "files_written": files_written,
        "duration_ms": out.duration_ms,
        "from_memo": false,
        "isolation": isolation,
    });
    match serde_json::from_slice::<Value>(&out.stdout) {
        // Parsed JSON goes back whole only while small: a bigger one is given as cut text.
        Ok(v) if !out.stdout_truncated && out.stdout.len() <= MAX_STDOUT_TEXT * 4 => {
            result["stdout_json"] = v
        }
        _ => {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut cut = MAX_STDOUT_TEXT.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut < text.len() || out.stdout_truncated {
                o.tally.bytes_truncated += (out.stdout.len() - cut) as u64;
                result["stdout_truncated"] = json!(true);
            }
            result["stdout_text"] = json!(&text[..cut]);
        }
    }
    if out.timed_out {
        result["error_type"] = json!("timeout");
        result["error"] = json!(format!(
            "the script did not finish within {} s and was stopped",
            c.timeout.as_secs()
        ));
    } else if !succeeded {
        result["error_type"] = json!("script_failed");
        result["error"] = json!(format!(
            "the script exited with {}",
            out.exit_code
                .map_or("a signal".to_string(), |c| c.to_string())
        ));
    }
    if !succeeded {
        o.tally.script_failures += 1;
        o.script_failed = true;
    }
    o.result = result;
    o.progress = succeeded;
    o.diff_summary = format!(
        "ran {} ({}, exit {}, {} ms{})",
        c.shown,
        isolation,
        out.exit_code.map_or("-".into(), |c| c.to_string()),
        out.duration_ms,
        if files_written.is_empty() {
            String::new()
        } else {
            format!(", wrote {}", files_written.join(", "))
        }
    );
    o
}
