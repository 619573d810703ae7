//! Pack lifecycle extras for the [`Registry`](super::Registry) (contract §9): the vocabulary and
//! converters of approved packs, component setups, and the queue that runs lib scripts and
//! setups in load order (the lib run itself is `lib.rs`).
//!
//! Whenever approval states may have changed (a scan, a decision), [`Registry::schedule_extras`]
//! rebuilds the vocabulary from the approved packs (published through the `KernelView`, which
//! `kernel:vocab.*` reads), forgets the components of packs no longer approved, and queues every
//! approved pack that has a lib run or component setups due. Jobs start in load order, up to
//! [`max_jobs`] at once and never two of one pack: first the pack's lib run (when due), then each
//! component's `setup(context)` in the pack's own sandbox (a `PackContainer` call with
//! `Entry::Setup`), [`SETUPS_TOTAL_TIMEOUT`] for all of them. A setup that fails disables that
//! component only. Setups run once per kernel start (and again after a re-approval). A job whose
//! pack's approval changes is stopped and its outcome dropped (`jobs.rs`).
//!
//! Every file read here (vocab.txt, a component's manifest.json) is read only when the approved
//! manifest lists it, without following a link, within a cap, and only if its bytes hash to the
//! approved SHA-256: a changed file is never read as if approved.

use super::lib::{LibPlan, LibRecord, LibSummary};
use super::Registry;
use crate::pack_container::{Entry, ExecuteBlock, PackContainer};
use crate::view::PackState;
use actix::prelude::*;
use rumi_domain::manifest::Manifest;
use rumi_domain::vocab::{self, PackVocab, Vocab};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Most components a pack may have.
pub const MAX_COMPONENTS: usize = 64;
/// Largest component manifest.json read.
pub const MAX_COMPONENT_MANIFEST_BYTES: usize = 64 * 1024;
/// Longest a component's setup may run.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest setup result kept (JSON bytes); a larger one is replaced by a note.
pub const MAX_SETUP_RESULT_BYTES: usize = 64 * 1024;
/// Longest all the setups of one pack may take together; the components left are disabled.
pub const SETUPS_TOTAL_TIMEOUT: Duration = Duration::from_secs(120);

/// How many packs' jobs run at once: the CPU count, at least 2 and at most 4 (one slow pack
/// never holds back the others' installs).
pub fn max_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

/// A component as `GET /api/packs/{id}` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentStatus {
    pub component_id: String,
    /// `ready` (its setup succeeded) or `disabled` (the reason says why).
    pub state: &'static str,
    pub reason: Option<String>,
    /// What `setup` returned (when ready).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub result: Value,
    pub version: Option<String>,
    pub description: Option<String>,
}

/// The Registry's state for the extras (see the module docs).
#[derive(Default)]
pub(super) struct Extras {
    /// `lib_records.json`, read at the first use.
    pub(super) records: Option<BTreeMap<String, LibRecord>>,
    /// Packs with a lib run under way.
    pub(super) running: HashSet<String>,
    /// (pack, manifest hash) whose lib run was started automatically during this kernel's life:
    /// a failed run is retried at the next start or on request, not at every scan.
    pub(super) tried: HashSet<(String, String)>,
    /// pack → (manifest hash, its components), once set up.
    components: HashMap<String, (String, Vec<ComponentStatus>)>,
    queue: VecDeque<String>,
    /// Packs with a queued job under way (never two of one pack; at most [`max_jobs`] in all).
    active: HashSet<String>,
    /// Every lib run and setup job under way, with its stop signal (`jobs.rs`).
    pub(super) jobs: super::jobs::Jobs,
    /// Problems building the vocabulary, for diagnostics.
    vocab_problems: Vec<String>,
}

impl Extras {
    /// Disabled components and vocabulary problems, for diagnostics.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.vocab_problems.clone();
        let mut packs: Vec<_> = self.components.iter().collect();
        packs.sort_by(|a, b| a.0.cmp(b.0));
        for (pack, (_, list)) in packs {
            for c in list.iter().filter(|c| c.state == "disabled") {
                out.push(format!(
                    "pack {pack:?}: component {:?} disabled: {}",
                    c.component_id,
                    c.reason.as_deref().unwrap_or("")
                ));
            }
        }
        out
    }

    pub(super) fn components_of(&self, pack: &str) -> Vec<ComponentStatus> {
        self.components
            .get(pack)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }
}

/// Asks the Registry to start the next queued job.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct PumpExtras;

/// A component found in an approved pack (validated, or why not).
struct ComponentPlan {
    component_id: String,
    file: String,
    version: Option<String>,
    description: Option<String>,
    invalid: Option<String>,
}

/// The prefix of the pack subdir's files in the manifest (`""` or `backend/`).
pub(super) fn subdir_prefix(dir: &Path, subdir: &Path) -> String {
    match subdir.strip_prefix(dir) {
        Ok(p) if !p.as_os_str().is_empty() => format!("{}/", p.to_string_lossy()),
        _ => String::new(),
    }
}

/// Reads `rel` (relative to the pack dir) when the manifest lists it and its bytes are the
/// approved ones; never follows a link; at most `cap` bytes.
pub(super) fn read_approved(
    dir: &Path,
    rel: &str,
    manifest: &Manifest,
    cap: usize,
) -> Result<Vec<u8>, String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let want = manifest
        .files
        .get(rel)
        .ok_or_else(|| format!("{rel} is not part of the approved pack"))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(rel))
        .map_err(|_| format!("{rel} could not be opened (a link or unreadable)"))?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(format!("{rel} is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{rel} could not be read ({})", e.kind()))?;
    if bytes.len() > cap {
        return Err(format!("{rel} is larger than {cap} bytes"));
    }
    if hex::encode(Sha256::digest(&bytes)) != *want {
        return Err(format!(
            "{rel} changed since the pack was approved; approve it again"
        ));
    }
    Ok(bytes)
}

fn valid_component_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && id.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The components of an approved pack, from its manifest (see the module docs for the rules).
fn plan_components(dir: &Path, prefix: &str, manifest: &Manifest) -> Vec<ComponentPlan> {
    let base = format!("{prefix}components/");
    let mut ids: Vec<String> = manifest
        .files
        .keys()
        .filter_map(|k| k.strip_prefix(&base))
        .filter_map(|rest| rest.split_once('/').map(|(id, _)| id.to_string()))
        .collect();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        let file = format!("components/{id}/setup.py");
        let mut plan = ComponentPlan {
            component_id: id.clone(),
            file: file.clone(),
            version: None,
            description: None,
            invalid: None,
        };
        if out.len() >= MAX_COMPONENTS {
            plan.invalid = Some(format!(
                "a pack may have at most {MAX_COMPONENTS} components; this one was not set up"
            ));
            out.push(plan);
            break;
        }
        let why = (|| -> Result<(), String> {
            if !valid_component_id(&id) {
                return Err("a component directory is named with letters, digits, _ - . (at most 64, starting with a letter or digit)".into());
            }
            let rel = format!("{base}{id}/manifest.json");
            let bytes = read_approved(dir, &rel, manifest, MAX_COMPONENT_MANIFEST_BYTES)?;
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("components/{id}/manifest.json is not valid JSON ({e})"))?;
            let field = |name: &str, max: usize| -> Result<Option<String>, String> {
                match v.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
                    _ => Err(format!(
                        "components/{id}/manifest.json: {name} must be a string of at most {max} characters"
                    )),
                }
            };
            if !v.is_object() {
                return Err(format!("components/{id}/manifest.json must hold an object"));
            }
            match field("component_id", 64)? {
                Some(c) if c == id => {}
                _ => {
                    return Err(format!(
                        "components/{id}/manifest.json: component_id must equal the directory name {id:?}"
                    ))
                }
            }
            plan.version = field("version", 64)?;
            plan.description = field("description", 1000)?;
            if !manifest.files.contains_key(&format!("{prefix}{file}")) {
                return Err(format!(
                    "{file} is missing; a component needs setup.py with setup(context=None)"
                ));
            }
            Ok(())
        })();
        plan.invalid = why.err();
        out.push(plan);
    }
    out
}

/// One pack's vocabulary and converters (files from its approved manifest).
fn pack_vocab(id: &str, dir: &Path, prefix: &str, manifest: &Manifest) -> PackVocab {
    let mut pv = PackVocab {
        pack_id: id.to_string(),
        ..Default::default()
    };
    let rel = format!("{prefix}vocab.txt");
    if manifest.files.contains_key(&rel) {
        match read_approved(dir, &rel, manifest, vocab::MAX_VOCAB_BYTES) {
            Ok(bytes) => pv.vocab = vocab::parse_vocab(&String::from_utf8_lossy(&bytes)),
            Err(why) => pv.vocab.problems.push(why),
        }
    }
    let base = format!("{prefix}converters/");
    for key in manifest.files.keys() {
        let Some(name) = key.strip_prefix(&base) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".py").filter(|s| !s.contains('/')) {
            pv.converters
                .push((stem.to_string(), format!("converters/{name}")));
        }
    }
    pv
}

impl Registry {
    /// After approval states may have changed: rebuild the vocabulary, forget what belongs to
    /// packs no longer approved, queue the lib runs and setups that are due (see the module docs).
    pub(super) fn schedule_extras(&mut self) {
        self.stop_stale_jobs();
        self.load_lib_records();
        let order: Vec<String> = self.in_load_order().map(str::to_string).collect();
        let mut packs = Vec::new();
        for id in &order {
            let Some(e) = self.packs.get(id) else {
                continue;
            };
            let Some(rec) = e.record.as_ref().filter(|_| e.state == PackState::Approved) else {
                continue;
            };
            let prefix = subdir_prefix(&e.dir, &e.subdir);
            packs.push(pack_vocab(id, &e.dir, &prefix, &rec.manifest));
        }
        let built = Vocab::build(&packs);
        self.extras.vocab_problems = built.problems.clone();
        self.view.publish_vocab(built);
        self.queue_due_extras();
    }

    /// Forgets the components of packs no longer approved as they were and queues, in load
    /// order, every approved pack with a lib run or setups due (without rebuilding the vocabulary:
    /// what a job's end calls).
    pub(super) fn queue_due_extras(&mut self) {
        self.load_lib_records();
        let order: Vec<String> = self.in_load_order().map(str::to_string).collect();
        // Forget the components of packs that are not approved, or approved with other files.
        let current: HashMap<String, String> = self
            .packs
            .iter()
            .filter(|(_, e)| e.state == PackState::Approved)
            .filter_map(|(id, e)| {
                e.record
                    .as_ref()
                    .map(|r| (id.clone(), r.manifest_hash.clone()))
            })
            .collect();
        self.extras
            .components
            .retain(|id, (hash, _)| current.get(id) == Some(hash));
        for id in order {
            let Some(hash) = current.get(&id) else {
                continue;
            };
            let setups_due = !self.extras.components.contains_key(&id);
            let lib_due = self.lib_due(&id).is_some()
                && !self.extras.tried.contains(&(id.clone(), hash.clone()));
            if (setups_due || lib_due) && !self.extras.queue.contains(&id) {
                self.extras.queue.push_back(id);
            }
        }
        if let Some(addr) = &self.self_addr {
            addr.do_send(PumpExtras);
        }
    }

    /// Starts queued jobs, in load order, while fewer than [`max_jobs`] run; a pack with a job
    /// (or a lib run on request) under way keeps its place in the queue.
    fn pump_extras(&mut self, ctx: &mut Context<Self>) {
        if self.sandboxes_wait_for_host() {
            return; // setups need the sandboxes: pumped again once they have their host
        }
        let limit = max_jobs();
        let mut i = 0;
        while self.extras.active.len() < limit && i < self.extras.queue.len() {
            let id = self.extras.queue[i].clone();
            if self.extras.active.contains(&id) || self.extras.running.contains(&id) {
                i += 1;
                continue;
            }
            self.extras.queue.remove(i);
            let Some(e) = self.packs.get(&id) else {
                continue;
            };
            let Some(rec) = e.record.as_ref().filter(|_| e.state == PackState::Approved) else {
                continue;
            };
            let hash = rec.manifest_hash.clone();
            let prefix = subdir_prefix(&e.dir, &e.subdir);
            let components = if self.extras.components.contains_key(&id) {
                None
            } else {
                Some(plan_components(&e.dir, &prefix, &rec.manifest))
            };
            let lib = if !self.extras.tried.contains(&(id.clone(), hash.clone())) {
                self.lib_due(&id).and_then(|t| self.lib_plan(&id, t))
            } else {
                None
            };
            if lib.is_none() && components.is_none() {
                continue;
            }
            let had_lib = lib.is_some();
            if had_lib {
                self.extras.tried.insert((id.clone(), hash.clone()));
                self.extras.running.insert(id.clone());
            }
            self.extras.active.insert(id.clone());
            let (token, stop) = self.track_job(&id);
            let container = self.view.container(&id);
            let job = run_job(id.clone(), lib, components, container, stop);
            ctx.spawn(job.into_actor(self).map(move |(lib, comps), act, _| {
                act.extras.active.remove(&id);
                if had_lib {
                    act.extras.running.remove(&id);
                }
                let current = act.untrack_job(token);
                if let Some(outcome) = lib {
                    if current {
                        act.finish_lib(&id, outcome);
                    } else {
                        act.extras.tried.remove(&(id.clone(), hash.clone()));
                        act.stopped_lib(&id, outcome);
                    }
                }
                if let Some(comps) = comps.filter(|_| current) {
                    for c in &comps {
                        let mut entry = crate::audit::AuditEntry::new(
                            crate::audit::Category::System,
                            "component_setup",
                            c.state == "ready",
                        )
                        .pack(&id)
                        .details(json!({"component_id": c.component_id}));
                        if let Some(why) = &c.reason {
                            entry = entry.error(why, Some("component_disabled"));
                        }
                        act.audit.do_send(crate::audit::Record(entry));
                    }
                    for c in comps.iter().filter(|c| c.state == "disabled") {
                        act.event(json!({"pack_id": id, "event": "component_disabled", "component_id": c.component_id, "reason": c.reason}));
                    }
                    act.extras.components.insert(id.clone(), (hash, comps));
                }
                // Whatever became due while this job ran (a re-approval) is queued now.
                act.queue_due_extras();
            }));
        }
    }

    /// The last lib run of `id`, for `GET /api/packs/{id}`.
    pub(super) fn lib_summary(&self, id: &str) -> Option<LibSummary> {
        let r = self.extras.records.as_ref()?.get(id)?;
        Some(LibSummary {
            lib_type: r.lib_type.clone(),
            ok: r.success,
            ts: r.ts.clone(),
            error: r.error.clone(),
        })
    }
}

/// Runs one job: the lib run (when due), then each component's setup in the pack's sandbox.
async fn run_job(
    pack_id: String,
    lib: Option<LibPlan>,
    components: Option<Vec<ComponentPlan>>,
    container: Option<Addr<PackContainer>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Option<super::lib::LibOutcome>, Option<Vec<ComponentStatus>>) {
    let lib = match lib {
        Some(plan) => Some(plan.run(stop.clone()).await),
        None => None,
    };
    let Some(plans) = components else {
        return (lib, None);
    };
    let mut out = Vec::with_capacity(plans.len());
    let inputs = Arc::new(Value::Null);
    let deadline = tokio::time::Instant::now() + SETUPS_TOTAL_TIMEOUT;
    for p in plans {
        let mut status = ComponentStatus {
            component_id: p.component_id.clone(),
            state: "disabled",
            reason: p.invalid.clone(),
            result: Value::Null,
            version: p.version.clone(),
            description: p.description.clone(),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if p.invalid.is_none() && *stop.borrow() {
            status.reason = Some(super::jobs::STOPPED.into());
        } else if p.invalid.is_none() && left.is_zero() {
            status.reason = Some(format!(
                "the pack's setups took longer than {}s together; this one was not run",
                SETUPS_TOTAL_TIMEOUT.as_secs()
            ));
        } else if p.invalid.is_none() {
            let call = async {
                let Some(addr) = &container else {
                    return Err(format!("pack {pack_id:?} has no running sandbox"));
                };
                addr
                    .send(ExecuteBlock {
                        run_id: String::new(),
                        flow_id: String::new(),
                        step_id: format!("component:{}", p.component_id),
                        phase: "setup".into(),
                        file: p.file.clone(),
                        input: Value::Null,
                        inputs: Arc::clone(&inputs),
                        timeout: SETUP_TIMEOUT.min(left),
                        run_deadline_bound: false,
                        span: tracing::info_span!("component.setup", pack_id = %pack_id, component_id = %p.component_id),
                        entry: Entry::Setup {
                            component_id: p.component_id.clone(),
                        },
                    })
                    .await
                    .map_err(|_| "the pack's sandbox stopped during the setup".to_string())
                    .and_then(|r| r.map_err(|f| format!("setup failed: {}", f.error)))
            };
            let answer = tokio::select! {
                a = call => a,
                () = super::jobs::cancelled(stop.clone()) => Err(super::jobs::STOPPED.to_string()),
            };
            match answer {
                Ok(output) => {
                    status.state = "ready";
                    let size = serde_json::to_vec(&output.result)
                        .map(|b| b.len())
                        .unwrap_or(0);
                    status.result = if size > MAX_SETUP_RESULT_BYTES {
                        json!({"_truncated": true, "_bytes": size})
                    } else {
                        output.result
                    };
                }
                Err(why) => status.reason = Some(why),
            }
        }
        out.push(status);
    }
    (lib, Some(out))
}

impl Handler<PumpExtras> for Registry {
    type Result = ();

    fn handle(&mut self, _: PumpExtras, ctx: &mut Self::Context) {
        self.pump_extras(ctx);
    }
}
