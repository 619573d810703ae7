//! Lib scripts (contract §9) for the [`Registry`](super::Registry): `<pack subdir>/lib/install.py`
//! runs once after a pack's first approval; `lib/update.py` (or install.py when there is none)
//! when the approved manifest differs from the one of the last successful run. Each runs
//! `run(context)` with `{pack_id, lib_type, ts, lib_dir, data_dir}` in a **throw-away** sandbox:
//!
//! * strict: a container of its own from the pack image with every flag of a pack container
//!   (no network, read-only root, no capabilities, uid 65534, limits), the pack read-only at
//!   `/pack` (so its `lib` directory is `/pack/lib`: `/lib` is the image's own library directory),
//!   `user_data/packs/<id>` writable at `/data`, and no egress or capability socket; removed after
//!   the run.
//! * permissive: a fresh host worker (the block host, scrubbed environment, no egress or
//!   capability socket), its working directory the pack's data directory; killed after the run.
//!
//! The manifest is verified (off the Registry's thread) before any lib code runs: a changed pack
//! never runs it and is marked `modified`. A run has [`LIB_TIMEOUT`]; its answer is capped like a
//! block's. Records go to `user_data/settings/lib_records.json` (atomic, fsynced), each run to the
//! audit (`system`, `lib_run`). Never two runs of one pack at once.

use super::Registry;
use crate::approval::{ManifestVerifier, VerifyFailure};
use crate::audit::{AuditEntry, Category, Record, Severity};
use crate::docker::{sandbox, DockerEngine, PackSpec};
use crate::pack_container::worker::{CallError, Worker, WorkerSpec};
use crate::view::PackState;
use actix::prelude::*;
use rumi_domain::manifest::ManifestDiff;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest a lib run may take.
pub const LIB_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest `lib_records.json` read.
const MAX_RECORDS_BYTES: u64 = 16 * 1024 * 1024;
/// Longest error or log kept from a run.
const MAX_TEXT: usize = 16 * 1024;

/// One pack's entry in `lib_records.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LibRecord {
    pub lib_type: String,
    pub success: bool,
    pub ts: String,
    pub manifest_hash: String,
    pub error: Option<String>,
    /// The manifest hash of the last successful run (decides between install and update).
    #[serde(default)]
    pub last_success_hash: Option<String>,
}

/// The last lib run as `GET /api/packs/{id}` shows it (`lib`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct LibSummary {
    /// `install` or `update`.
    pub lib_type: String,
    pub ok: bool,
    pub ts: String,
    pub error: Option<String>,
}

/// The answer to [`RunLib`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct LibRunResult {
    pub pack_id: String,
    pub lib_type: String,
    pub ok: bool,
    pub ts: String,
    pub error: Option<String>,
    pub manifest_hash: String,
    /// What the script printed (at most 16 KiB).
    pub log: String,
    /// What `run(context)` returned.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub result: Value,
}

/// Why a lib run on request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LibRunError {
    #[error("no pack {0:?} is installed")]
    NotFound(String),
    #[error("pack {0:?} is {1}, not approved; approve it first")]
    NotApproved(String, &'static str),
    #[error("pack {0:?} has no lib/install.py (nor lib/update.py after a first successful run)")]
    NoLib(String),
    #[error("a lib run of pack {0:?} is under way; try again when it has ended")]
    Running(String),
}

/// `POST /api/packs/{id}/lib/run`: runs the pack's lib script now and answers its result.
#[derive(Message)]
#[rtype(result = "Result<LibRunResult, LibRunError>")]
pub struct RunLib {
    pub pack_id: String,
}

enum Runner {
    Host(Worker),
    Docker {
        engine: Arc<DockerEngine>,
        spec: PackSpec,
    },
    Unavailable(String),
}

/// A lib run ready to go (built on the Registry's thread, run off it).
pub(super) struct LibPlan {
    pack_id: String,
    lib_type: &'static str,
    file: String,
    manifest_hash: String,
    verifier: ManifestVerifier,
    context: Value,
    runner: Runner,
}

/// How a lib run ended.
pub(super) struct LibOutcome {
    lib_type: &'static str,
    manifest_hash: String,
    ok: bool,
    error: Option<String>,
    log: String,
    result: Value,
    /// The pack's files changed since approval (the run did not start).
    changed: Option<ManifestDiff>,
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl LibPlan {
    /// Runs the script; `stop` ends it early (its worker killed, its container removed).
    pub(super) async fn run(self, stop: tokio::sync::watch::Receiver<bool>) -> LibOutcome {
        let mut out = LibOutcome {
            lib_type: self.lib_type,
            manifest_hash: self.manifest_hash.clone(),
            ok: false,
            error: None,
            log: String::new(),
            result: Value::Null,
            changed: None,
        };
        let mut verifier = self.verifier;
        let verified = tokio::task::spawn_blocking(move || verifier.verify()).await;
        match verified {
            Ok(Ok(())) => {}
            Ok(Err(VerifyFailure::Changed(diff))) => {
                out.error = Some(
                    "the pack's files changed since it was approved; approve it again (the lib script did not run)".into(),
                );
                out.changed = Some(diff);
                return out;
            }
            _ => {
                out.error =
                    Some("the pack could not be verified; the lib script did not run".into());
                return out;
            }
        }
        let frame = crate::frame::encode(&json!({
            "id": 1, "op": "call", "entry": "lib", "file": self.file,
            "input": null, "context": self.context,
        }))
        .unwrap_or_default();
        let stopped = || Err(super::jobs::STOPPED.to_string());
        let reply = match self.runner {
            Runner::Unavailable(why) => Err(why),
            // Dropped on a stop, the worker's process group is killed.
            Runner::Host(worker) => tokio::select! {
                biased;
                () = super::jobs::cancelled(stop.clone()) => stopped(),
                r = worker.call(1, frame, LIB_TIMEOUT) => r.1.map_err(describe),
            },
            // The start is not cut short (a container half created would be left behind); the
            // call is, and the sandbox it owns is removed when dropped.
            Runner::Docker { engine, spec } => match sandbox::start_lib(&engine, &spec).await {
                Err(sandbox::StartError::Unavailable(why)) => Err(format!(
                    "docker_required: {why}; strict mode never runs lib scripts outside a container"
                )),
                Err(sandbox::StartError::Failed(why)) => {
                    Err(format!("the lib container could not be started: {why}"))
                }
                Ok(mut sb) if *stop.borrow() => {
                    sb.destroy().await;
                    stopped()
                }
                Ok(sb) => tokio::select! {
                    biased;
                    () = super::jobs::cancelled(stop.clone()) => stopped(),
                    (sb, reply) = sb.call(1, frame, LIB_TIMEOUT) => {
                        if let Some(mut sb) = sb {
                            sb.destroy().await;
                        }
                        reply.map_err(describe)
                    }
                },
            },
        };
        tracing::info!(pack_id = %self.pack_id, lib_type = self.lib_type, "lib run ended");
        match reply {
            Ok(reply) => {
                out.log = clip(
                    reply
                        .get("log")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                );
                if reply.get("ok").and_then(Value::as_bool) == Some(true) {
                    out.ok = true;
                    out.result = reply.get("result").cloned().unwrap_or(Value::Null);
                } else {
                    out.error = Some(clip(
                        reply
                            .get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("the lib script failed")
                            .to_string(),
                    ));
                }
            }
            Err(why) => out.error = Some(clip(why)),
        }
        out
    }
}

fn describe(e: CallError) -> String {
    match e {
        CallError::TimedOut => format!(
            "the lib script ran longer than {}s and was stopped",
            LIB_TIMEOUT.as_secs()
        ),
        CallError::Crashed(why) => format!("the lib script's sandbox failed ({why})"),
        CallError::TooLarge(n) => format!("the lib script's answer of {n} bytes is over the limit"),
        CallError::OutOfMemory => "the lib script used more than the pack's memory limit".into(),
        CallError::Strays(n) => format!("the lib script left {n} processes running"),
    }
}

impl Registry {
    fn lib_records_path(&self) -> PathBuf {
        self.layout
            .user_data()
            .join("settings")
            .join("lib_records.json")
    }

    /// Reads `lib_records.json` once (a missing, oversized or unreadable file counts as empty,
    /// logged: every lib then runs again, which is what a lost record means).
    pub(super) fn load_lib_records(&mut self) {
        if self.extras.records.is_some() {
            return;
        }
        let path = self.lib_records_path();
        let records = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_RECORDS_BYTES => {
                tracing::warn!(
                    "lib_records.json is larger than {MAX_RECORDS_BYTES} bytes; ignored"
                );
                BTreeMap::new()
            }
            Ok(_) => std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| {
                    tracing::warn!("lib_records.json is unreadable; ignored");
                    BTreeMap::new()
                }),
            Err(_) => BTreeMap::new(),
        };
        self.extras.records = Some(records);
    }

    fn lib_files(&self, id: &str) -> Option<(bool, bool, String)> {
        let e = self.packs.get(id)?;
        let rec = e
            .record
            .as_ref()
            .filter(|_| e.state == PackState::Approved)?;
        let prefix = super::extras::subdir_prefix(&e.dir, &e.subdir);
        let has = |f: &str| rec.manifest.files.contains_key(&format!("{prefix}lib/{f}"));
        Some((
            has("install.py"),
            has("update.py"),
            rec.manifest_hash.clone(),
        ))
    }

    /// The lib run due for `id` now (install after the first approval, update after a change),
    /// or `None`.
    pub(super) fn lib_due(&self, id: &str) -> Option<&'static str> {
        let (install, update, hash) = self.lib_files(id)?;
        let last = self
            .extras
            .records
            .as_ref()
            .and_then(|r| r.get(id))
            .and_then(|r| r.last_success_hash.clone());
        match last {
            None => install.then_some("install"),
            Some(h) if h != hash => (install || update).then_some("update"),
            Some(_) => None,
        }
    }

    /// Builds the run of `lib_type` for `id` (a host worker is started here, on the Registry's
    /// long-lived thread, as every pack worker is).
    pub(super) fn lib_plan(&self, id: &str, lib_type: &'static str) -> Option<LibPlan> {
        let (install, update, hash) = self.lib_files(id)?;
        let file = if lib_type == "update" && update {
            "lib/update.py"
        } else if install {
            "lib/install.py"
        } else {
            return None;
        };
        let e = self.packs.get(id)?;
        let rec = e.record.as_ref()?;
        let data_dir = self.layout.pack_data(id);
        let lib_dir = e.subdir.join("lib");
        // The script itself must be a regular file inside the pack: a symlink out of it would run
        // code the manifest never hashed (it records a link by its target's name only).
        let refused = crate::pack_container::resolve_exact(&e.subdir, file)
            .err()
            .map(|f| format!("the lib script is refused: {}", f.error));
        let (runner, lib_dir_seen, data_dir_seen) = match (&self.sandbox.docker, refused) {
            (_, Some(why)) => (Runner::Unavailable(why), String::new(), String::new()),
            (None, None) => {
                let spec = WorkerSpec {
                    pack_id: id.to_string(),
                    python: self.config.python.clone(),
                    host_script: self.sandbox.host_script.clone(),
                    modules_dir: self.sandbox.modules_dir.clone(),
                    pack_root: e.subdir.clone(),
                    data_dir: data_dir.clone(),
                    max_frame: self.config.max_response_bytes,
                    egress_socket: None,
                    capability_socket: None,
                    processes: None,
                    redactor: Some(Arc::clone(&self.sandbox.capabilities.redactor)),
                };
                let runner = match Worker::spawn(&spec) {
                    Ok(w) => Runner::Host(w),
                    Err(e) => Runner::Unavailable(format!(
                        "the lib worker could not be started ({})",
                        e.kind()
                    )),
                };
                let abs = |p: &PathBuf| {
                    p.canonicalize()
                        .unwrap_or_else(|_| p.clone())
                        .to_string_lossy()
                        .into_owned()
                };
                (runner, abs(&lib_dir), abs(&data_dir))
            }
            (Some(engine), None) => {
                if let Err(e) = crate::fsutil::ensure_dir(&data_dir, 0o755) {
                    tracing::warn!(pack_id = id, error = %e, "cannot create the pack's data directory");
                }
                if crate::docker::is_root() {
                    // /data is writable for lib runs: it belongs to the container's user.
                    let uid = sandbox::PACK_UID;
                    let _ = std::os::unix::fs::chown(&data_dir, Some(uid), Some(uid));
                }
                let spec = PackSpec {
                    pack_id: id.to_string(),
                    pack_root: e.subdir.clone(),
                    data_dir: data_dir.clone(),
                    site_packages: self.layout.pack_site_packages(id),
                    // A directory of its own: the channel only, no egress or capability socket.
                    socket_dir: self.layout.sockets().join(format!("{id}.lib")),
                    runtime_dir: self.sandbox.modules_dir.clone(),
                    capability_dir: None,
                    max_frame: self.config.max_response_bytes,
                    cpuset: None,
                };
                let runner = Runner::Docker {
                    engine: Arc::clone(engine),
                    spec,
                };
                (runner, "/pack/lib".to_string(), "/data".to_string())
            }
        };
        Some(LibPlan {
            pack_id: id.to_string(),
            lib_type,
            file: file.to_string(),
            manifest_hash: hash,
            verifier: ManifestVerifier::new(e.dir.clone(), rec.manifest.clone()),
            context: json!({
                "pack_id": id,
                "lib_type": lib_type,
                "ts": crate::clock::now_rfc3339(),
                "lib_dir": lib_dir_seen,
                "data_dir": data_dir_seen,
            }),
            runner,
        })
    }

    /// Records a finished run (file, audit, diagnostics) and answers what it was.
    /// Writes `lib_records.json` (atomic, fsynced).
    fn save_lib_records(&self, id: &str) {
        let Some(records) = &self.extras.records else {
            return;
        };
        let bytes = serde_json::to_vec_pretty(records).unwrap_or_default();
        let path = self.lib_records_path();
        let written = path
            .parent()
            .map(|d| crate::fsutil::ensure_dir(d, 0o700))
            .unwrap_or(Ok(()))
            .and_then(|()| crate::fsutil::write_atomic(&path, &bytes, 0o600));
        if let Err(e) = written {
            tracing::error!(pack_id = id, error = %e, "could not write lib_records.json");
        }
    }

    /// Forgets a pack's lib record (uninstall: installed again, its install runs again).
    pub(super) fn forget_lib_record(&mut self, id: &str) {
        self.load_lib_records();
        self.extras.tried.retain(|(p, _)| p != id);
        if self
            .extras
            .records
            .as_mut()
            .is_some_and(|r| r.remove(id).is_some())
        {
            self.save_lib_records(id);
        }
    }

    /// A run whose pack was uninstalled, rejected, modified or approved again while it ran: its
    /// outcome is not the pack's and is not recorded (audited as stopped).
    pub(super) fn stopped_lib(&mut self, id: &str, o: LibOutcome) -> LibRunResult {
        let ts = crate::clock::now_rfc3339();
        let error = super::jobs::STOPPED.to_string();
        let entry = AuditEntry::new(Category::System, "lib_run", false)
            .pack(id)
            .details(json!({"lib_type": o.lib_type, "manifest_hash": o.manifest_hash}))
            .severity(Severity::Warning)
            .error(&error, Some("lib_stopped"));
        self.audit.do_send(Record(entry));
        self.event(json!({"pack_id": id, "event": "lib_run_failed", "lib_type": o.lib_type, "error": error}));
        LibRunResult {
            pack_id: id.to_string(),
            lib_type: o.lib_type.to_string(),
            ok: false,
            ts,
            error: Some(error),
            manifest_hash: o.manifest_hash,
            log: o.log,
            result: Value::Null,
        }
    }

    pub(super) fn finish_lib(&mut self, id: &str, o: LibOutcome) -> LibRunResult {
        let ts = crate::clock::now_rfc3339();
        self.load_lib_records();
        let records = self.extras.records.get_or_insert_with(BTreeMap::new);
        let last_success = if o.ok {
            Some(o.manifest_hash.clone())
        } else {
            records.get(id).and_then(|r| r.last_success_hash.clone())
        };
        records.insert(
            id.to_string(),
            LibRecord {
                lib_type: o.lib_type.to_string(),
                success: o.ok,
                ts: ts.clone(),
                manifest_hash: o.manifest_hash.clone(),
                error: o.error.clone(),
                last_success_hash: last_success,
            },
        );
        // A run that finished after its pack was uninstalled leaves no record: the pack, when
        // installed again, starts from nothing (its install runs again).
        let uninstalled = self.packs.get(id).is_none_or(|e| e.record.is_none());
        if uninstalled {
            records.remove(id);
        }
        self.save_lib_records(id);
        let mut entry = AuditEntry::new(Category::System, "lib_run", o.ok)
            .pack(id)
            .details(json!({"lib_type": o.lib_type, "manifest_hash": o.manifest_hash}));
        if let Some(err) = &o.error {
            entry = entry
                .severity(Severity::Warning)
                .error(err, Some("lib_error"));
            self.event(json!({"pack_id": id, "event": "lib_run_failed", "lib_type": o.lib_type, "error": err}));
        }
        self.audit.do_send(Record(entry));
        if let Some(diff) = o.changed {
            drop(self.pack_changed(id, diff, "lib_run"));
        }
        LibRunResult {
            pack_id: id.to_string(),
            lib_type: o.lib_type.to_string(),
            ok: o.ok,
            ts,
            error: o.error,
            manifest_hash: o.manifest_hash,
            log: o.log,
            result: o.result,
        }
    }
}

impl Handler<RunLib> for Registry {
    type Result = ResponseActFuture<Self, Result<LibRunResult, LibRunError>>;

    fn handle(&mut self, msg: RunLib, _: &mut Self::Context) -> Self::Result {
        let id = msg.pack_id;
        self.load_lib_records();
        let refused = |e: LibRunError| -> Self::Result { Box::pin(actix::fut::ready(Err(e))) };
        let Some(e) = self.packs.get(&id) else {
            return refused(LibRunError::NotFound(id));
        };
        if e.state != PackState::Approved {
            return refused(LibRunError::NotApproved(id, e.state.as_str()));
        }
        if self.extras.running.contains(&id) {
            return refused(LibRunError::Running(id));
        }
        let never = self
            .extras
            .records
            .as_ref()
            .and_then(|r| r.get(&id))
            .and_then(|r| r.last_success_hash.as_ref())
            .is_none();
        let Some(plan) = self.lib_plan(&id, if never { "install" } else { "update" }) else {
            return refused(LibRunError::NoLib(id));
        };
        self.extras.running.insert(id.clone());
        let (token, stop) = self.track_job(&id);
        Box::pin(plan.run(stop).into_actor(self).map(move |outcome, act, _| {
            act.extras.running.remove(&id);
            if !act.untrack_job(token) {
                let result = act.stopped_lib(&id, outcome);
                act.queue_due_extras();
                return Ok(result);
            }
            if let Some(e) = act.packs.get(&id).and_then(|e| e.record.as_ref()) {
                act.extras
                    .tried
                    .insert((id.clone(), e.manifest_hash.clone()));
            }
            let result = act.finish_lib(&id, outcome);
            // A queued job of this pack waited for this run.
            act.queue_due_extras();
            Ok(result)
        }))
    }
}
