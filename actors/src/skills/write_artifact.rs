//! The WriteArtifact Sub Agent (contract §4, §7): the one writer of a run. It writes under the
//! run's `build/` only (the domain's `build_path` rules, then [`RunFiles::write_build`], which
//! never follows a link), charges every write to the disk budget **before** writing, keeps a
//! named version `act.<name>@N` of every content change (so `diff` between versions is always
//! possible), expands templates, lists the artifacts, and appends the run's evidence lines.
//! Direct mode (`{path, content}`) or delegated (`{task}`: its own loop over `fs_write`, the
//! blackboard tools and `done`).

use super::agent::{blocking, delegated, guarded, AgentFailure};
use super::budget_guard::ChargeDisk;
use super::context::{arg_str, Outcome, RunContext};
use super::workspace::{Resolve, RunFiles, WriteError};
use super::MAX_ARTIFACT_BYTES;
use actix::prelude::*;
use base64::Engine as _;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use rumi_domain::skill::act::{ArtifactInfo, Evidence, ExitReason};
use rumi_domain::skill::artifact::{artifact_name, parse_versioned, versioned};
use rumi_domain::skill::budget::Which;
use rumi_domain::skill::disclosure::is_binary;
use rumi_domain::skill::paths::{build_path, read_path};
use rumi_domain::skill::tools::AgentKind;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::Arc;

/// Largest template, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 1024 * 1024;
/// Largest template data, as JSON.
pub const MAX_TEMPLATE_DATA_BYTES: usize = 256 * 1024;

/// `write_artifact {path, content, encoding?}` (or `fs_write`).
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct WriteArtifactCall {
    pub args: Value,
}

/// `template_expand {template_path, data, out_path}`.
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct TemplateExpand {
    pub args: Value,
}

/// `diff {a, b}` (paths or `act.<name>@N`).
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct DiffCall {
    pub args: Value,
}

/// Keep versions of files a script wrote (paths relative to `build/`).
#[derive(Message)]
#[rtype(result = "Result<(), AgentFailure>")]
pub struct RecordVersions {
    pub files: Vec<String>,
}

/// Every file under `build/` with its latest version.
#[derive(Message)]
#[rtype(result = "Result<Vec<ArtifactInfo>, AgentFailure>")]
pub struct ListArtifacts;

/// Append evidence lines to `evidence.jsonl`.
#[derive(Message)]
#[rtype(result = "Result<(), AgentFailure>")]
pub struct RecordEvidence {
    pub lines: Vec<Evidence>,
}

/// `write_artifact {task}`: the delegated loop.
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct DelegateWrite {
    pub task: String,
}

/// The WriteArtifact agent of one run.
pub struct WriteArtifact {
    ctx: Arc<RunContext>,
}

impl WriteArtifact {
    pub fn new(ctx: Arc<RunContext>) -> Self {
        WriteArtifact { ctx }
    }
}

impl Actor for WriteArtifact {
    type Context = Context<Self>;
}

impl Handler<WriteArtifactCall> for WriteArtifact {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: WriteArtifactCall, _: &mut Self::Context) -> Self::Result {
        Box::pin(guarded(
            "WriteArtifact",
            write(Arc::clone(&self.ctx), msg.args),
        ))
    }
}

impl Handler<TemplateExpand> for WriteArtifact {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: TemplateExpand, _: &mut Self::Context) -> Self::Result {
        Box::pin(guarded(
            "WriteArtifact",
            template(Arc::clone(&self.ctx), msg.args),
        ))
    }
}

impl Handler<DiffCall> for WriteArtifact {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: DiffCall, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("WriteArtifact", async move {
            blocking(move || diff(&ctx, &msg.args)).await
        }))
    }
}

impl Handler<RecordVersions> for WriteArtifact {
    type Result = ResponseFuture<Result<(), AgentFailure>>;
    fn handle(&mut self, msg: RecordVersions, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move {
            guarded("WriteArtifact", async move {
                blocking(move || {
                    for f in &msg.files {
                        record_version(&ctx, f);
                    }
                    Outcome::ok(Value::Null)
                })
                .await
            })
            .await
            .map(|_| ())
        })
    }
}

impl Handler<ListArtifacts> for WriteArtifact {
    type Result = ResponseFuture<Result<Vec<ArtifactInfo>, AgentFailure>>;
    fn handle(&mut self, _: ListArtifacts, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move {
            let mut list = Vec::new();
            let slot = &mut list;
            guarded("WriteArtifact", async move {
                *slot = blocking(move || artifacts(&ctx)).await;
                Outcome::ok(Value::Null)
            })
            .await?;
            Ok(list)
        })
    }
}

impl Handler<RecordEvidence> for WriteArtifact {
    type Result = ResponseFuture<Result<(), AgentFailure>>;
    fn handle(&mut self, msg: RecordEvidence, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move {
            guarded("WriteArtifact", async move {
                blocking(move || {
                    let path = ctx.files.run_dir().join("evidence.jsonl");
                    let mut text = String::new();
                    for line in &msg.lines {
                        text.push_str(&serde_json::to_string(line).unwrap_or_default());
                        text.push('\n');
                    }
                    let appended = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .and_then(|mut f| f.write_all(text.as_bytes()));
                    if let Err(e) = appended {
                        tracing::warn!(run_id = %ctx.run_id, error = %e.kind(), "could not append skill evidence");
                    }
                    Outcome::ok(Value::Null)
                })
                .await
            })
            .await
            .map(|_| ())
        })
    }
}

impl Handler<DelegateWrite> for WriteArtifact {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, msg: DelegateWrite, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("WriteArtifact", async move {
            let exec = |ctx: Arc<RunContext>,
                        _tool: String,
                        args: Value|
             -> LocalBoxFuture<'static, Outcome> {
                async move { write(ctx, args).await }.boxed_local()
            };
            delegated(ctx, AgentKind::WriteArtifact, &msg.task, &exec).await
        }))
    }
}

/// Bumps the version of `build/<rel>` when its content differs from the last kept one;
/// answers (version, name).
fn record_version(ctx: &RunContext, rel: &str) -> Option<(u32, String)> {
    let base = artifact_name(rel);
    {
        let mut owners = ctx.owners.lock();
        match owners.get(&base) {
            Some(owner) if owner != rel => return None,
            Some(_) => {}
            None => {
                owners.insert(base.clone(), rel.to_string());
            }
        }
    }
    let mut versions = ctx.versions.lock();
    let current = versions.get(rel).copied().unwrap_or(0);
    if current > 0 {
        let last = ctx.files.version(&versioned(&base, current));
        let now = read_build(&ctx.files, rel);
        if last.is_some() && last == now {
            return Some((current, versioned(&base, current)));
        }
    }
    let next = current + 1;
    let name = versioned(&base, next);
    ctx.files.keep_version(rel, &name).ok()?;
    versions.insert(rel.to_string(), next);
    Some((next, name))
}

fn read_build(files: &RunFiles, rel: &str) -> Option<Vec<u8>> {
    let p = rumi_domain::skill::paths::ToolPath {
        area: rumi_domain::skill::paths::Area::Build,
        rel: rel.to_string(),
    };
    match files.resolve(&p, false) {
        Resolve::Found(r) if !r.is_dir => files.read(&r, MAX_ARTIFACT_BYTES).ok().map(|(b, _)| b),
        _ => None,
    }
}

/// Writes `bytes` to `build/<rel>` after the guard admitted them; the result of §14.
async fn store(ctx: Arc<RunContext>, rel: String, bytes: Vec<u8>) -> Outcome {
    let name = artifact_name(&rel);
    if let Some(owner) = ctx.owners.lock().get(&name).filter(|o| **o != rel) {
        let o = Outcome::err(
            "path_rejected",
            format!("build/{rel} would be artifact {name}, which is build/{owner}'s: choose another file name"),
        );
        return o;
    }
    let admitted = ctx
        .guard
        .send(ChargeDisk {
            bytes: bytes.len() as u64,
        })
        .await
        .unwrap_or(Err(Which::Disk));
    if let Err(which) = admitted {
        let o = Outcome::err(
            "budget_exceeded",
            format!(
                "writing {} bytes passes the disk budget (disk_write_limit_mb)",
                bytes.len()
            ),
        )
        .ending(ExitReason::BudgetExceeded(which));
        return o;
    }
    blocking(move || {
        let before = read_build(&ctx.files, &rel);
        if let Err(e) = ctx.files.write_build(&rel, &bytes) {
            let o = match e {
                WriteError::Rejected(why) => Outcome::err("path_rejected", why),
                WriteError::Io(e) => Outcome::err(
                    "invalid_arguments",
                    format!("build/{rel} could not be written ({})", e.kind()),
                ),
            };
            return o;
        }
        let changed = before.as_deref() != Some(&bytes[..]);
        if changed {
            ctx.build_changed();
        }
        let (version, name) = record_version(&ctx, &rel).unwrap_or((0, String::new()));
        let sha = hex::encode(Sha256::digest(&bytes));
        let mut o = Outcome::ok(json!({
            "ok": true,
            "path": format!("build/{rel}"),
            "name": name,
            "version": version,
            "bytes": bytes.len(),
            "sha256": sha,
        }));
        o.progress = changed;
        o.files.push(format!("build/{rel}"));
        o.diff_summary = if !changed {
            format!("build/{rel} unchanged")
        } else if version > 1 {
            format!("rewrote build/{rel} as {name}")
        } else {
            format!("created build/{rel} ({} bytes)", bytes.len())
        };
        o
    })
    .await
}

/// `write_artifact` / `fs_write`.
pub async fn write(ctx: Arc<RunContext>, args: Value) -> Outcome {
    let parsed = (|| {
        let raw = arg_str(&args, "path")?;
        let rel = build_path(raw).map_err(|e| Outcome::err("path_rejected", e.0))?;
        let content = arg_str(&args, "content")?;
        let bytes = match args.get("encoding").and_then(Value::as_str) {
            None | Some("text") => content.as_bytes().to_vec(),
            Some("base64") => {
                if content.len() > MAX_ARTIFACT_BYTES / 3 * 4 + 4 {
                    return Err(Outcome::err(
                        "invalid_arguments",
                        format!("an artifact is at most {MAX_ARTIFACT_BYTES} bytes"),
                    ));
                }
                base64::engine::general_purpose::STANDARD
                    .decode(content.trim())
                    .map_err(|_| Outcome::err("invalid_arguments", "content is not valid base64"))?
            }
            Some(other) => {
                return Err(Outcome::err(
                    "invalid_arguments",
                    format!("encoding {other:?}: use \"text\" or \"base64\""),
                ))
            }
        };
        if bytes.len() > MAX_ARTIFACT_BYTES {
            return Err(Outcome::err(
                "invalid_arguments",
                format!("an artifact is at most {MAX_ARTIFACT_BYTES} bytes"),
            ));
        }
        Ok((rel, bytes))
    })();
    match parsed {
        Ok((rel, bytes)) => store(ctx, rel, bytes).await,
        Err(o) => o,
    }
}

/// `template_expand {template_path, data, out_path}` → `{ok, path, bytes}`.
pub async fn template(ctx: Arc<RunContext>, args: Value) -> Outcome {
    let prepared = {
        let ctx = Arc::clone(&ctx);
        blocking(move || -> Result<(String, Vec<u8>), Outcome> {
            let raw = arg_str(&args, "template_path")?;
            let out = build_path(arg_str(&args, "out_path")?)
                .map_err(|e| Outcome::err("path_rejected", e.0))?;
            let data = args.get("data").cloned().unwrap_or(Value::Null);
            if serde_json::to_string(&data)
                .map(|s| s.len())
                .unwrap_or(usize::MAX)
                > MAX_TEMPLATE_DATA_BYTES
            {
                return Err(Outcome::err(
                    "invalid_arguments",
                    format!("data is at most {MAX_TEMPLATE_DATA_BYTES} bytes as JSON"),
                ));
            }
            let path = read_path(raw).map_err(|e| Outcome::err("path_rejected", e.0))?;
            let found = match ctx.files.resolve(&path, true) {
                Resolve::Found(r) if super::read_ref::is_skill_script(&r.shown) => {
                    return Err(Outcome::err(
                        "invalid_arguments",
                        format!("{raw} is a script: scripts are executed, not read"),
                    ))
                }
                Resolve::Found(r) if !r.is_dir => r,
                Resolve::Found(_) => {
                    return Err(Outcome::err(
                        "invalid_arguments",
                        format!("{raw} is a directory"),
                    ))
                }
                Resolve::Rejected(why) => return Err(Outcome::err("path_rejected", why)),
                Resolve::NotFound => {
                    return Err(Outcome::err("not_found", format!("no template {raw}")))
                }
            };
            let (bytes, size) = ctx
                .files
                .read(&found, MAX_TEMPLATE_BYTES)
                .map_err(|_| Outcome::err("not_found", format!("{raw} cannot be read")))?;
            if size as usize > MAX_TEMPLATE_BYTES || is_binary(&bytes) {
                return Err(Outcome::err(
                    "invalid_arguments",
                    format!("{raw} is not a text template of at most {MAX_TEMPLATE_BYTES} bytes"),
                ));
            }
            let text = String::from_utf8_lossy(&bytes);
            let expanded = rumi_domain::skill::text::expand_template(&text, &data)
                .map_err(|e| Outcome::err("invalid_arguments", format!("{raw}: {e}")))?;
            if expanded.len() > MAX_ARTIFACT_BYTES {
                return Err(Outcome::err(
                    "invalid_arguments",
                    format!("the expanded template passes {MAX_ARTIFACT_BYTES} bytes"),
                ));
            }
            Ok((out, expanded.into_bytes()))
        })
        .await
    };
    match prepared {
        Ok((out, bytes)) => {
            let mut o = store(ctx, out, bytes).await;
            if let Some(m) = o.result.as_object_mut() {
                m.remove("sha256");
            }
            o
        }
        Err(o) => o,
    }
}

/// One side of a diff: a kept version or a readable text file.
fn side(ctx: &RunContext, s: &str) -> Result<String, Outcome> {
    let bytes = if let Some((name, n)) = parse_versioned(s).or_else(|| {
        // `act.x@v2` is read like `act.x@2`.
        let (name, v) = s.rsplit_once("@v")?;
        Some((name.to_string(), v.parse().ok()?))
    }) {
        ctx.files
            .version(&versioned(&name, n))
            .ok_or_else(|| Outcome::err("not_found", format!("no version {s}")))?
    } else {
        let path = read_path(s).map_err(|e| Outcome::err("path_rejected", e.0))?;
        match ctx.files.resolve(&path, true) {
            Resolve::Found(r) if super::read_ref::is_skill_script(&r.shown) => {
                return Err(Outcome::err(
                    "invalid_arguments",
                    format!("{s} is a script: scripts are executed, not read"),
                ))
            }
            Resolve::Found(r) if !r.is_dir => ctx
                .files
                .read(&r, MAX_ARTIFACT_BYTES)
                .map(|(b, _)| b)
                .map_err(|_| Outcome::err("not_found", format!("{s} cannot be read")))?,
            Resolve::Found(_) => {
                return Err(Outcome::err(
                    "invalid_arguments",
                    format!("{s} is a directory"),
                ))
            }
            Resolve::Rejected(why) => return Err(Outcome::err("path_rejected", why)),
            Resolve::NotFound => return Err(Outcome::err("not_found", format!("no file {s}"))),
        }
    };
    if is_binary(&bytes) {
        return Err(Outcome::err(
            "invalid_arguments",
            format!("{s} is binary; diff compares text"),
        ));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `diff {a, b}` → `{ok, diff}`.
pub fn diff(ctx: &RunContext, args: &Value) -> Outcome {
    let r = (|| {
        let a = side(ctx, arg_str(args, "a")?)?;
        let b = side(ctx, arg_str(args, "b")?)?;
        Ok::<_, Outcome>(rumi_domain::skill::text::line_diff(&a, &b))
    })();
    match r {
        Ok(d) => Outcome::ok(json!({"ok": true, "diff": d})),
        Err(o) => o,
    }
}

/// Every file under `build/`, each with its latest version (a file never versioned gets its
/// first version now).
fn artifacts(ctx: &RunContext) -> Vec<ArtifactInfo> {
    let snap = ctx.files.snapshot_build();
    let mut list = Vec::new();
    for rel in snap.files.keys() {
        // Size and hash of the whole file (a script may write more than one read holds),
        // streamed, never through a link.
        let Some((bytes, sha256)) = whole_file_digest(ctx.files.build(), rel) else {
            continue;
        };
        let (version, name) = record_version(ctx, rel).unwrap_or((0, artifact_name(rel)));
        list.push(ArtifactInfo {
            path: format!("build/{rel}"),
            name,
            version,
            bytes,
            sha256,
        });
    }
    list
}

/// The size and SHA-256 of `build/<rel>`, read in chunks.
fn whole_file_digest(build: &std::path::Path, rel: &str) -> Option<(u64, String)> {
    use std::io::Read;
    let mut f = super::fsat::open_file(build, rel).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Some((total, hex::encode(hasher.finalize())))
}
