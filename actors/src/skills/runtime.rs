//! The entrance to skill runs (contract §13): `GET /api/skills`, `POST /api/skills/run`, the
//! run's status and artifacts, and the flow handler `kernel:skill.run` all go through
//! [`SkillRuntime`]. It checks the ActInput, finds the skill, loads the model settings, creates
//! the run's workspace, starts the run's actors on the runtime's own arbiter (a thread of its
//! own: skill runs never hold up the HTTP workers or the kernel's actors), keeps each run's
//! latest state for `GET`, and writes `result.json` when a run starts and when it ends.
//!
//! A run the kernel was killed during is found at the next start (its `result.json` still
//! says `running`) and marked failed, so `GET` never shows a run that runs forever.

use super::budget_guard::BudgetGuard;
use super::cache::SkillCache;
use super::catalog::{discover, lookup, LookupError, Roots, SkillCatalog};
use super::context::RunContext;
use super::llm::{load_config, LlmClient, Provider, NOT_CONFIGURED};
use super::memo::RunCaches;
use super::script::{HostRunner, ScriptRunner};
use super::script_container::ContainerRunner;
use super::supervisor::{Publish, Supervisor};
use super::workspace::RunFiles;
use crate::audit::{AuditEntry, AuditWriter, Category, Record};
use crate::capability::secrets::SecretStore;
use crate::docker::DockerEngine;
use crate::layout::Layout;
use crate::view::{KernelView, PackState};
use actix::prelude::*;
use parking_lot::Mutex;
use rumi_domain::skill::act::{ActInput, ActResult, ExitReason, Metrics, Unmet, Validation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Skill runs at once (more are refused with 429).
pub const DEFAULT_MAX_ACTIVE_RUNS: usize = 8;
/// Finished runs whose result stays in memory (older ones are read from `result.json`).
pub const KEPT_RESULTS: usize = 256;
/// Run workspaces kept at start (older ones are deleted).
pub const KEPT_RUN_DIRS: usize = 500;
/// Largest `result.json` read back.
const MAX_RESULT_BYTES: u64 = 16 * 1024 * 1024;

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    UnknownSkill(String),
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0} skill runs are running; wait for one to end (or raise RUMI_MAX_SKILL_RUNS)")]
    Busy(usize),
    #[error("{0}")]
    Internal(String),
}

/// A run that started: its id, and its ActResult once it ends.
pub struct Started {
    pub run_id: String,
    pub result: oneshot::Receiver<ActResult>,
}

/// Why an artifact cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("no skill run {0:?}")]
    NoRun(String),
    #[error("{0}")]
    BadPath(String),
    #[error("run {run:?} has no artifact {path:?}")]
    NoArtifact { run: String, path: String },
}

#[derive(Default)]
struct RunTable {
    live: HashMap<String, ActResult>,
    finished: VecDeque<String>,
}

/// The skill runtime of a kernel.
pub struct SkillRuntime {
    /// The caches of every skill (`user_data/skill_cache/`, §10).
    cache: Arc<SkillCache>,
    layout: Layout,
    view: Arc<KernelView>,
    docker: Option<Arc<DockerEngine>>,
    python: PathBuf,
    secrets: Arc<SecretStore>,
    audit: Addr<AuditWriter>,
    /// Approval records: a pack's skill is checked against its pack's approved manifest before
    /// every tool call (as a block is before every call).
    approvals: crate::approval::ApprovalStore,
    arbiter: ArbiterHandle,
    runs: Mutex<RunTable>,
    slots: Arc<super::slots::RunSlots>,
    /// Dependency environments, one set per kernel (a home is never shared by two kernels).
    envs: Arc<super::envs::SkillEnvs>,
}

/// A run id as the API shows it; anything else is refused before it touches the disk.
pub fn valid_run_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl SkillRuntime {
    /// The runtime, with its arbiter; marks runs a killed kernel left `running` as failed.
    pub fn new(
        layout: Layout,
        view: Arc<KernelView>,
        docker: Option<Arc<DockerEngine>>,
        python: PathBuf,
        secrets: Arc<SecretStore>,
        audit: Addr<AuditWriter>,
        approvals: crate::approval::ApprovalStore,
    ) -> SkillRuntime {
        let max_active = std::env::var("RUMI_MAX_SKILL_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=64).contains(n))
            .unwrap_or(DEFAULT_MAX_ACTIVE_RUNS);
        let layout_cache = layout.user_data().join("skill_cache");
        let envs = Arc::new(super::envs::SkillEnvs::new(
            &layout.user_data(),
            python.clone(),
            layout.runtime_python(),
            docker.clone(),
        ));
        let rt = SkillRuntime {
            envs,
            layout,
            view,
            docker,
            python,
            secrets,
            audit,
            approvals,
            arbiter: Arbiter::new().handle(),
            runs: Mutex::default(),
            slots: super::slots::RunSlots::new(max_active),
            cache: Arc::new(SkillCache::new(layout_cache)),
        };
        rt.recover_interrupted();
        rt
    }

    fn runs_root(&self) -> PathBuf {
        self.layout.user_data().join("skill_runs")
    }

    /// The roots skills are found in: `user_data/skills/` and each approved pack's `skills/`.
    pub fn roots(&self) -> Roots {
        let packs = crate::capability::candidates::pack_subdirs(&self.layout.ecosystem())
            .into_iter()
            .filter(|(id, _)| self.view.pack_state(id) == Some(PackState::Approved))
            .map(|(id, sub)| (id, sub.join("skills")))
            .collect();
        Roots {
            user: self.layout.user_data().join("skills"),
            packs,
        }
    }

    /// Every skill (blocking: walks directories).
    pub fn catalog(&self) -> SkillCatalog {
        discover(&self.roots())
    }

    /// Starts a run of `input` (an ActInput as JSON). `time_cap` bounds the time budget (a
    /// flow's remaining deadline). Blocking: reads the skill and creates the workspace.
    pub fn start(
        self: &Arc<Self>,
        input: &Value,
        time_cap: Option<Duration>,
    ) -> Result<Started, StartError> {
        let (input, mut budgets) = ActInput::parse(input).map_err(StartError::BadInput)?;
        if let Some(cap) = time_cap {
            budgets.time_budget_ms = budgets.time_budget_ms.min(cap.as_millis().max(1) as u64);
        }
        let skill = lookup(&self.roots(), &input.skill_id).map_err(|e| match e {
            LookupError::BadId(m) => StartError::BadInput(m),
            other => StartError::UnknownSkill(other.to_string()),
        })?;
        let env = |k: &str| std::env::var(k).ok();
        let secret = |k: &str| self.secrets.get(k);
        let mut config = load_config(&env, &self.layout.user_data().join("settings"), &secret)
            .map_err(StartError::NotConfigured)?
            .ok_or_else(|| StartError::NotConfigured(NOT_CONFIGURED.to_string()))?;
        // A relative replay file (RUMI_LLM_REPLAY) is read from the home, like every other path
        // of the installation.
        if let Some(f) = config.replay_file.take() {
            config.replay_file = Some(if f.is_relative() {
                self.layout.home().join(f)
            } else {
                f
            });
        }
        let still_approved = self.approval_gate(skill.pack_id.as_deref())?;
        let provider = config.provider;
        let model = config.model.clone();
        let llm = LlmClient::new(config).map_err(StartError::NotConfigured)?;
        let release = self.slots.take().map_err(StartError::Busy)?;
        let run_id = format!("skr-{}", crate::flow_run::new_run_id());
        let files =
            RunFiles::create(skill.root.clone(), &self.runs_root(), &run_id).map_err(|e| {
                StartError::Internal(format!(
                    "the run's workspace could not be created ({})",
                    e.kind()
                ))
            })?;
        let scripts: Arc<dyn ScriptRunner> = match &self.docker {
            Some(engine) => Arc::new(ContainerRunner::new(Arc::clone(engine))),
            None => Arc::new(HostRunner {
                python: self.python.clone(),
            }),
        };
        let isolation = scripts.isolation();
        let caches = self.caches_for(&files, &input, isolation);
        let seed = {
            let text = serde_json::to_string(&(&input.skill_id, &input.goal, &input.inputs))
                .unwrap_or_default();
            let d = Sha256::digest(text.as_bytes());
            u64::from_le_bytes(d[..8].try_into().unwrap_or_default()) >> 1
        };
        let started = Instant::now();
        let deadline =
            tokio::time::Instant::from_std(started + Duration::from_millis(budgets.time_budget_ms));
        let guard = BudgetGuard::start_in_arbiter(&self.arbiter, {
            let b = budgets;
            move |_| BudgetGuard::new(b, started)
        });
        let base = ActResult {
            run_id: run_id.clone(),
            status: "running".into(),
            artifacts: Vec::new(),
            validation: Validation {
                completeness: false,
                compliance: false,
                quality: false,
                details: Vec::new(),
            },
            evidence_summary: Vec::new(),
            metrics: Metrics::default(),
            remaining_budgets: rumi_domain::skill::budget::Ledger::new(budgets).remaining(0),
            unmet: Vec::new(),
            exit_reason: None,
            skill_id: input.skill_id.clone(),
            isolation: isolation.to_string(),
            model: json!({
                "provider": provider,
                "model": model,
                "replay": provider == Provider::Replay,
            }),
        };
        let ctx = Arc::new(RunContext {
            run_id: run_id.clone(),
            skill_id: input.skill_id.clone(),
            skill: skill.doc,
            files: files.clone(),
            blackboard: Default::default(),
            loaded: Default::default(),
            caches,
            versions: Default::default(),
            owners: Default::default(),
            build_generation: Default::default(),
            guard,
            llm: Arc::new(llm),
            scripts: Arc::clone(&scripts),
            envs: Arc::clone(&self.envs),
            input,
            budgets,
            deadline,
            seed,
            scripts_started: Default::default(),
            last_script_failed: Default::default(),
            still_approved,
        });
        self.runs.lock().live.insert(run_id.clone(), base.clone());
        persist(&files, &base);
        self.audit.do_send(Record(
            AuditEntry::new(Category::System, "skill_run_started", true).details(json!({
                "run_id": run_id, "skill_id": base.skill_id, "isolation": isolation, "provider": provider,
            })),
        ));
        let publish: Publish = {
            let me = Arc::downgrade(self);
            Arc::new(move |snapshot: ActResult| {
                if let Some(me) = me.upgrade() {
                    let mut runs = me.runs.lock();
                    if let Some(slot) = runs.live.get_mut(&snapshot.run_id) {
                        if slot.exit_reason.is_none() {
                            *slot = snapshot;
                        }
                    }
                }
            })
        };
        let (done_tx, done_rx) = oneshot::channel();
        let (out_tx, out_rx) = oneshot::channel();
        let me = Arc::clone(self);
        let waiter_base = base.clone();
        self.arbiter.spawn(async move {
            let release = release;
            let result = match done_rx.await {
                Ok(r) => r,
                Err(_) => stopped(waiter_base),
            };
            // The run's warm script containers go before its result is published.
            scripts.finish().await;
            // Its dependency environments may be removed from now on (least recently used).
            me.envs.release_run(&result.run_id);
            let files2 = files.clone();
            let r2 = result.clone();
            let _ = tokio::task::spawn_blocking(move || persist(&files2, &r2)).await;
            me.audit.do_send(Record(
                AuditEntry::new(
                    Category::System,
                    "skill_run_finished",
                    result.exit_reason == Some(ExitReason::Validated),
                )
                .details(json!({
                    "run_id": result.run_id,
                    "skill_id": result.skill_id,
                    "exit_reason": result.exit_reason,
                    "tool_calls": result.metrics.tool_calls,
                    "input_tokens": result.metrics.input_tokens,
                    "output_tokens": result.metrics.output_tokens,
                })),
            ));
            me.finished(result.clone());
            // The run's slot is free before its result is answered: a client that starts the next
            // run on the answer never finds the cap still taken by this one.
            drop(release);
            let _ = out_tx.send(result);
        });
        let ctx2 = Arc::clone(&ctx);
        self.arbiter.spawn_fn(move || {
            Supervisor::new(ctx2, base, publish, done_tx).start();
        });
        Ok(Started {
            run_id,
            result: out_rx,
        })
    }

    /// The run's caches: the skill tree hash (its files' digests persisted for the skill), and
    /// the memory of the last validated run with the same key. Blocking: hashes the skill.
    fn caches_for(&self, files: &RunFiles, input: &ActInput, isolation: &str) -> RunCaches {
        let cache = Arc::clone(&self.cache);
        let Some(entries) = files.skill_tree() else {
            return RunCaches::off(cache);
        };
        let tree = rumi_domain::skill::memo::tree_hash(&entries);
        cache.save_digests(&input.skill_id, &tree, &entries);
        let run_key = rumi_domain::skill::memo::run_key(input, &tree, isolation);
        let memory = cache.memory(&input.skill_id, &run_key, &tree);
        RunCaches::new(cache, Some(tree), memory, Some(run_key))
    }

    /// For a pack's skill: whether the pack is approved now and its files still match the
    /// approved manifest (a stat-cached walk, as before a block call): a file changed in any
    /// way — a hard link written from outside included — stops the run at its next tool call,
    /// without waiting for the registry to notice.
    fn approval_gate(
        &self,
        pack_id: Option<&str>,
    ) -> Result<Arc<dyn Fn() -> bool + Send + Sync>, StartError> {
        let Some(pack) = pack_id.map(str::to_string) else {
            return Ok(Arc::new(|| true));
        };
        let refused = || {
            StartError::UnknownSkill(format!(
            "pack {pack:?} is not approved (or changed since its approval): its skills do not run"
        ))
        };
        let dir = crate::pip::lockfile::pack_dirs(&self.layout.ecosystem())
            .into_iter()
            .find(|(id, _)| *id == pack)
            .map(|(_, d)| d)
            .ok_or_else(refused)?;
        let record = match self.approvals.load(&pack) {
            crate::keys::Stored::Valid(r) if r.decision == crate::approval::Decision::Approved => r,
            _ => return Err(refused()),
        };
        let mut verifier = crate::approval::ManifestVerifier::new(dir, record.manifest);
        if verifier.verify().is_err() {
            return Err(refused());
        }
        let verifier = Mutex::new(verifier);
        let view = Arc::clone(&self.view);
        Ok(Arc::new(move || {
            view.pack_state(&pack) == Some(PackState::Approved) && verifier.lock().verify().is_ok()
        }))
    }

    fn finished(&self, result: ActResult) {
        let mut runs = self.runs.lock();
        runs.finished.push_back(result.run_id.clone());
        runs.live.insert(result.run_id.clone(), result);
        while runs.finished.len() > KEPT_RESULTS {
            if let Some(old) = runs.finished.pop_front() {
                runs.live.remove(&old);
            }
        }
    }

    /// The run's latest state (`exit_reason` null while it runs), from memory or its
    /// `result.json`.
    pub fn status(&self, run_id: &str) -> Option<ActResult> {
        if !valid_run_id(run_id) {
            return None;
        }
        if let Some(r) = self.runs.lock().live.get(run_id) {
            return Some(r.clone());
        }
        read_result(&self.runs_root().join(run_id).join("result.json"))
    }

    /// The raw bytes of an artifact, named as `artifacts[].path` names it (`build/…`).
    /// The artifact opened for reading (whole: it is streamed, never held in memory) and its size.
    pub fn artifact(
        &self,
        run_id: &str,
        path: &str,
    ) -> Result<(std::fs::File, u64), ArtifactError> {
        if !valid_run_id(run_id) || !self.runs_root().join(run_id).is_dir() {
            return Err(ArtifactError::NoRun(run_id.to_string()));
        }
        let p =
            rumi_domain::skill::paths::read_path(path).map_err(|e| ArtifactError::BadPath(e.0))?;
        if p.area != rumi_domain::skill::paths::Area::Build {
            return Err(ArtifactError::BadPath(
                "artifact paths start with build/".into(),
            ));
        }
        let none = || ArtifactError::NoArtifact {
            run: run_id.to_string(),
            path: path.to_string(),
        };
        // The run's build/ as its own area: the skill root is not needed to serve it.
        let build = self.runs_root().join(run_id).join("build");
        // `build` itself must be the run's directory, not a link a host script put in its place
        // (canonicalizing would follow it); below it, every open refuses links anyway.
        match std::fs::symlink_metadata(&build) {
            Ok(m) if m.file_type().is_dir() => {}
            _ => return Err(none()),
        }
        let build = std::fs::canonicalize(&build).map_err(|_| none())?;
        let files = RunFiles::existing(build.clone(), build);
        match files.resolve(&p, false) {
            super::workspace::Resolve::Found(r) if !r.is_dir => {
                let f = super::fsat::open_file(&r.root, &r.rel_real).map_err(|_| none())?;
                let len = f.metadata().map_err(|_| none())?.len();
                Ok((f, len))
            }
            _ => Err(none()),
        }
    }

    /// Runs a `result.json` says are running were cut by a kill: mark them failed. Keeps the
    /// newest [`KEPT_RUN_DIRS`] workspaces (run ids start with their start time, so their
    /// order is their age) and deletes older ones, so `skill_runs/` cannot grow forever.
    fn recover_interrupted(&self) {
        let Ok(entries) = std::fs::read_dir(self.runs_root()) else {
            return;
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .take(1_000_000)
            .filter(|e| e.file_name().to_str().is_some_and(valid_run_id))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        if dirs.len() > KEPT_RUN_DIRS {
            for old in dirs.drain(..dirs.len() - KEPT_RUN_DIRS) {
                let _ = std::fs::remove_dir_all(old);
            }
        }
        for dir in dirs {
            let path = dir.join("result.json");
            let Some(mut r) = read_result(&path) else {
                continue;
            };
            if r.exit_reason.is_some() {
                continue;
            }
            r.status = "failed".into();
            r.exit_reason = Some(ExitReason::NoProgress);
            r.unmet.push(Unmet {
                item: "run".into(),
                reason: "the kernel stopped while the run was in progress".into(),
                suggestion: "run it again".into(),
            });
            if let Ok(text) = serde_json::to_vec_pretty(&r) {
                let _ = crate::fsutil::write_atomic(&path, &text, 0o600);
            }
        }
    }
}

/// The result of a run whose Supervisor stopped without answering.
fn stopped(mut base: ActResult) -> ActResult {
    base.status = "failed".into();
    base.exit_reason = Some(ExitReason::NoProgress);
    base.unmet.push(Unmet {
        item: "agent:Supervisor".into(),
        reason: "the run's supervisor stopped without a result (the kernel log has why)".into(),
        suggestion: "run it again; report the log if it repeats".into(),
    });
    base
}

fn persist(files: &RunFiles, result: &ActResult) {
    if let Ok(text) = serde_json::to_vec_pretty(result) {
        if let Err(e) =
            crate::fsutil::write_atomic(&files.run_dir().join("result.json"), &text, 0o600)
        {
            tracing::warn!(run_id = %result.run_id, error = %e.kind(), "could not write a skill run's result.json");
        }
    }
}

fn read_result(path: &std::path::Path) -> Option<ActResult> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut text = Vec::new();
    f.take(MAX_RESULT_BYTES).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}
