//! The ReadRef Sub Agent (contract §2 L3, §4): reads the files SKILL.md references — exactly,
//! else ignoring letter case (recorded) —, describes binary files instead of inlining them,
//! refuses to read scripts (they are executed), lists files, and runs the checks that read
//! `build/` (`validate`, `summarize`). Direct mode (`{path}`) or delegated (`{task}`: its own
//! loop over `fs_read`, `fs_list`, the blackboard tools and `done`).
//!
//! A path outside the skill root and `build/` is `path_rejected` (never `not_found`: whether
//! something exists outside is none of the model's business) and the run goes on.

use super::agent::{blocking, delegated, guarded, AgentFailure};
use super::context::{arg_str, Outcome, RunContext};
use super::workspace::{Resolve, RunFiles};
use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use rumi_domain::skill::disclosure::{is_binary, mime_for};
use rumi_domain::skill::paths::{read_path, Area, ToolPath};
use rumi_domain::skill::tools::AgentKind;
use rumi_domain::skill::validate::{validate, BuildView};
use serde_json::{json, Value};
use std::sync::Arc;

/// Most bytes of one file given to the model (more is cut with a marker).
pub const MAX_L3_BYTES: usize = 100_000;

/// `read_ref {path}` (or `fs_read` inside a delegated loop).
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct ReadReference {
    pub args: Value,
}

/// `list_files {glob?}`.
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct ListFiles {
    pub args: Value,
}

/// `validate {}`: the three gates over the run's `expected_outputs`.
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct ValidateOutputs;

/// `summarize {path} | {text}`.
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct Summarize {
    pub args: Value,
}

/// `read_ref {task}`: the delegated loop.
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct DelegateRead {
    pub task: String,
}

/// The ReadRef agent of one run.
pub struct ReadRef {
    ctx: Arc<RunContext>,
}

impl ReadRef {
    pub fn new(ctx: Arc<RunContext>) -> Self {
        ReadRef { ctx }
    }
}

impl Actor for ReadRef {
    type Context = Context<Self>;
}

impl Handler<ReadReference> for ReadRef {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: ReadReference, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("ReadRef", async move {
            blocking(move || read(&ctx, &msg.args)).await
        }))
    }
}

impl Handler<ListFiles> for ReadRef {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: ListFiles, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("ReadRef", async move {
            blocking(move || list(&ctx, &msg.args)).await
        }))
    }
}

impl Handler<ValidateOutputs> for ReadRef {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, _: ValidateOutputs, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("ReadRef", async move {
            blocking(move || check(&ctx)).await
        }))
    }
}

impl Handler<Summarize> for ReadRef {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: Summarize, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("ReadRef", async move {
            blocking(move || summarize(&ctx, &msg.args)).await
        }))
    }
}

/// The delegated loop over this agent's own tools.
impl Handler<DelegateRead> for ReadRef {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: DelegateRead, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("ReadRef", async move {
            let exec = |ctx: Arc<RunContext>,
                        tool: String,
                        args: Value|
             -> LocalBoxFuture<'static, Outcome> {
                async move {
                    blocking(move || match tool.as_str() {
                        "fs_list" => list(&ctx, &args),
                        _ => read(&ctx, &args),
                    })
                    .await
                }
                .boxed_local()
            };
            delegated(ctx, AgentKind::ReadRef, &msg.task, &exec).await
        }))
    }
}

/// Resolves a model's read path, or the refusal to answer.
fn locate(files: &RunFiles, raw: &str) -> Result<super::workspace::Resolved, Outcome> {
    let path = read_path(raw).map_err(|e| Outcome::err("path_rejected", e.0))?;
    match files.resolve(&path, true) {
        Resolve::Found(r) => Ok(r),
        Resolve::Rejected(why) => Err(Outcome::err("path_rejected", why)),
        Resolve::NotFound => {
            let mut o = Outcome::err(
                "not_found",
                format!("{raw} does not exist in the skill or build/. If SKILL.md needs it, make one substitute attempt (write the content yourself with write_artifact); otherwise it is reported as unmet"),
            );
            o.tally.missing.push(raw.to_string());
            Err(o)
        }
    }
}

/// `read_ref {path}` / `fs_read {path}`.
pub fn read(ctx: &RunContext, args: &Value) -> Outcome {
    let raw = match arg_str(args, "path") {
        Ok(p) => p,
        Err(o) => return o,
    };
    let found = match locate(&ctx.files, raw) {
        Ok(f) => f,
        Err(o) => return o,
    };
    let mut base = Outcome::ok(Value::Null);
    if found.is_dir {
        return Outcome::err(
            "invalid_arguments",
            format!("{} is a directory; list it with list_files", found.shown),
        );
    }
    if is_skill_script(&found.shown) {
        return Outcome::err(
            "invalid_arguments",
            format!(
                "{} is a script: scripts are executed, not read — call run_script",
                found.shown
            ),
        );
    }
    // Read whole (up to the artifact cap) so "binary" is decided on the file, not on a cut.
    let (bytes, size) = match ctx.files.read(&found, super::MAX_ARTIFACT_BYTES) {
        Ok(r) => r,
        Err(_) => return Outcome::err("not_found", format!("{} cannot be read", found.shown)),
    };
    let shown = found.shown.clone();
    base.files.push(shown.clone());
    let binary = if (size as usize) > bytes.len() {
        rumi_domain::skill::disclosure::is_binary_prefix(&bytes)
    } else {
        is_binary(&bytes)
    };
    if binary {
        let mut o = Outcome::ok(
            json!({"ok": true, "path": raw, "resolved_path": shown, "bytes": size, "mime": mime_for(&shown)}),
        );
        o.tally = base.tally;
        o.files = base.files;
        o.tally.l3_reads += 1;
        o.progress = ctx.first_load(&bytes);
        return o;
    }
    let text = String::from_utf8_lossy(&bytes);
    let (content, omitted) = if size as usize > MAX_L3_BYTES {
        let mut cut = MAX_L3_BYTES.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let omitted = size as usize - cut;
        (
            format!("{}\n[truncated: {omitted} bytes omitted]", &text[..cut]),
            omitted,
        )
    } else {
        (text.into_owned(), 0)
    };
    if !ctx.first_load(&bytes) {
        let mut o = Outcome::ok(
            json!({"ok": true, "path": raw, "resolved_path": shown, "already_loaded": true}),
        );
        o.tally = base.tally;
        o.tally.cache_hits += 1;
        o.files = base.files;
        return o;
    }
    let mut result = json!({"ok": true, "path": raw, "resolved_path": shown, "content": content});
    if found.case_resolved {
        result["case_resolved"] = json!(true);
    }
    if omitted > 0 {
        result["truncated"] = json!(true);
    }
    let mut o = Outcome::ok(result).progress();
    o.tally = base.tally;
    o.tally.l3_reads += 1;
    o.tally.cache_misses += 1;
    o.tally.bytes_truncated += omitted as u64;
    o.files = base.files;
    o.diff_summary = if found.case_resolved {
        format!("read {shown} (asked for {raw}; resolved ignoring letter case)")
    } else {
        format!("read {shown}")
    };
    o
}

/// A script of the skill (not one the run wrote under `build/`): executed, never read.
pub fn is_skill_script(shown: &str) -> bool {
    !shown.starts_with("build/") && super::script::Interpreter::for_path(shown).is_some()
}

/// `list_files {glob?}` / `fs_list {glob?}`.
pub fn list(ctx: &RunContext, args: &Value) -> Outcome {
    let glob = match args.get("glob") {
        None | Some(Value::Null) => None,
        Some(Value::String(g)) if g.len() <= 256 => Some(g.as_str()),
        Some(_) => {
            return Outcome::err(
                "invalid_arguments",
                "glob is a string of at most 256 characters",
            )
        }
    };
    let (files, truncated) = ctx.files.list();
    let files: Vec<String> = files
        .into_iter()
        .filter(|f| glob.is_none_or(|g| rumi_domain::skill::glob::matches(g, f)))
        .collect();
    let mut result = json!({"ok": true, "files": files});
    if truncated {
        result["truncated"] = json!(true);
    }
    Outcome::ok(result)
}

/// `build/` as the domain's validation sees it.
struct Build<'a>(&'a RunFiles);

impl BuildView for Build<'_> {
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        let p = ToolPath {
            area: Area::Build,
            rel: rel.to_string(),
        };
        match self.0.resolve(&p, false) {
            Resolve::Found(r) if !r.is_dir => self
                .0
                .read(&r, super::MAX_ARTIFACT_BYTES)
                .ok()
                .map(|(b, _)| b),
            _ => None,
        }
    }
}

/// `validate {}`: `{ok, passed, completeness, compliance, quality, details, unmet}`, and the
/// build generation it saw (a later change makes a pass stale).
pub fn check(ctx: &RunContext) -> Outcome {
    let generation = ctx
        .build_generation
        .load(std::sync::atomic::Ordering::SeqCst);
    let report = validate(&ctx.input.expected_outputs, &Build(&ctx.files));
    let mut o = Outcome::ok(json!({
        "ok": true,
        "passed": report.passed,
        "completeness": report.validation.completeness,
        "compliance": report.validation.compliance,
        "quality": report.validation.quality,
        "details": report.validation.details,
        "unmet": report.unmet,
        "generation": generation,
    }));
    o.diff_summary = if report.passed {
        "validation passed".into()
    } else {
        format!("validation failed: {} output(s) unmet", report.unmet.len())
    };
    o
}

/// `summarize {path} | {text}`.
pub fn summarize(ctx: &RunContext, args: &Value) -> Outcome {
    let text = match (
        args.get("path").and_then(Value::as_str),
        args.get("text").and_then(Value::as_str),
    ) {
        (Some(raw), _) => {
            let found = match locate(&ctx.files, raw) {
                Ok(f) if is_skill_script(&f.shown) => {
                    return Outcome::err(
                        "invalid_arguments",
                        format!("{raw} is a script: scripts are executed, not read"),
                    )
                }
                Ok(f) if !f.is_dir => f,
                Ok(_) => return Outcome::err("invalid_arguments", format!("{raw} is a directory")),
                Err(o) => return o,
            };
            match ctx.files.read(&found, MAX_L3_BYTES) {
                Ok((b, _)) if !is_binary(&b) => String::from_utf8_lossy(&b).into_owned(),
                Ok(_) => {
                    return Outcome::err(
                        "invalid_arguments",
                        format!("{raw} is binary; it cannot be summarized"),
                    )
                }
                Err(_) => return Outcome::err("not_found", format!("{raw} cannot be read")),
            }
        }
        (None, Some(t)) if t.len() <= MAX_L3_BYTES => t.to_string(),
        (None, Some(_)) => {
            return Outcome::err(
                "invalid_arguments",
                format!("text is at most {MAX_L3_BYTES} bytes"),
            )
        }
        (None, None) => return Outcome::err("invalid_arguments", "give {path} or {text}"),
    };
    Outcome::ok(json!({"ok": true, "summary": rumi_domain::skill::text::summarize(&text)}))
}
