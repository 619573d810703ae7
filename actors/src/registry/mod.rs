//! `Registry`: owns the packs (discovery, metadata, approval state), the flows loaded from the
//! three sources, and the lifecycle of each approved pack's `PackContainer`. The HTTP layer sends
//! it commands (`Scan`, `Approve`, `Reject`, `Reload`) and queries; each `PackContainer` tells it
//! when its pack changed (`PackModified`). It publishes its state to the [`KernelView`] read by
//! the hot path.
//!
//! Only `approved` packs run code and contribute flows. An approval records the SHA-256 of every
//! file in a signed record; a changed file moves the pack to `modified` (persisted, so changing
//! the file back does not silently re-approve), which stops its sandbox and unloads its flows until
//! a person approves it again. Flows are read and parsed off the Registry's thread, one load at a
//! time, and only from approved packs whose files match their manifest (`flows.rs`); approval,
//! rejection and a change found in an approved pack are `decisions.rs`.

mod apply;
mod decisions;
mod doors;
mod extras;
mod flows;
mod jobs;
mod lib;
mod sandbox;
mod state;
mod summary;
mod uninstall;
mod watch;

pub use apply::{AppliedPack, ApplyStaged};
pub use decisions::{Approve, ApprovedPack, Reject, DECISION_FLOWS_DEADLINE};
pub use extras::ComponentStatus;
pub use flows::Stopping;
pub use lib::{LibRunError, LibRunResult, LibSummary, RunLib};
pub use sandbox::{ContainerHost, HostContainers, SandboxesPlaced};
pub use summary::RefreshSummary;
pub use uninstall::{Uninstall, Uninstalled};

use crate::approval::{ApprovalRecord, ApprovalStore, Decision, ManifestVerifier};
use crate::audit::{AuditEntry, AuditWriter, Category, Record};
use crate::config::RuntimeConfig;
use crate::docker::DockerEngine;
use crate::egress::listener::EgressListener;
use crate::egress::proxy::Proxy;
use crate::layout::Layout;
use crate::pack_container::{self, PackContainer};
use crate::view::{KernelView, PackState};
use actix::prelude::*;
use rumi_domain::manifest::ManifestDiff;
use rumi_domain::pack::{self, PackMeta};
use rumi_domain::sources::{FileProblem, FlowProblem};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Runtime problems kept for diagnostics.
const MAX_EVENTS: usize = 200;

// ---- messages ---------------------------------------------------------------------------------

/// Re-reads the ecosystem: new packs appear as `installed`, approved packs are re-verified.
#[derive(Message)]
#[rtype(result = "Vec<PackInfo>")]
pub struct Scan;

/// Re-reads every flow file; answers once the new table is published.
#[derive(Message)]
#[rtype(result = "FlowsReloaded")]
pub struct Reload;

/// Answers once every flow load asked for so far is published (the first one at start-up).
#[derive(Message)]
#[rtype(result = "FlowsReloaded")]
pub struct AwaitFlows;

/// Every pack.
#[derive(Message)]
#[rtype(result = "Vec<PackInfo>")]
pub struct ListPacks;

/// One pack.
#[derive(Message)]
#[rtype(result = "Result<PackInfo, RegistryError>")]
pub struct GetPack {
    pub pack_id: String,
}

/// Load problems and recent runtime events.
#[derive(Message)]
#[rtype(result = "Diagnostics")]
pub struct GetDiagnostics;

/// A pack's sandbox stopped answering (its actor died); sent by a `FlowRun` whose call failed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SandboxLost {
    pub pack_id: String,
}

/// Stops every pack's sandbox (kernel shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

/// A pack as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct PackInfo {
    pub pack_id: String,
    pub state: PackState,
    pub path: String,
    pub pack_identity: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub connectivity: Option<pack::Connectivity>,
    pub load_index: Option<usize>,
    pub error: Option<String>,
    pub decided_at: Option<String>,
    pub reason: Option<String>,
    pub manifest_hash: Option<String>,
    pub file_count: Option<usize>,
    /// What changed since approval, when `modified`.
    pub changes: Option<ManifestDiff>,
    /// `permissions.json` as the pack declares it (shown, never enforced).
    pub declared_permissions: Option<Value>,
    /// What is wrong with its place in the load order (an unmet `requires`, a cycle); it loads anyway.
    pub load_problems: Vec<String>,
    /// The last lib run (`lib.rs`), or null.
    pub lib: Option<LibSummary>,
    /// The components and their state (`extras.rs`).
    pub components: Vec<ComponentStatus>,
}

/// Most flow problems a reload answer or the diagnostics list; the rest are only counted (every
/// file of every source may fail, and each answer should stay readable and small).
pub const MAX_LISTED_PROBLEMS: usize = 200;

/// The answer to [`Reload`]: how many flows are loaded and what went wrong, one problem per file
/// concerned (a clash of two files is told from each). Paths are relative to the home.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowsReloaded {
    pub flows: usize,
    /// `file:line: what was wrong — how to fix it` (`file: …` when the file could not be read).
    pub problems: Vec<String>,
    /// The same problems, structured: `problems[i]` is `errors[i]` shown.
    pub errors: Vec<FileProblem>,
    /// Problems beyond the first [`MAX_LISTED_PROBLEMS`], not listed.
    pub problems_omitted: usize,
}

impl FlowsReloaded {
    /// The answer for a table of `flows` flows and its `problems`.
    fn new(flows: usize, problems: &[FlowProblem]) -> Self {
        let all = problems.iter().flat_map(FlowProblem::per_file);
        let errors: Vec<FileProblem> = all.clone().take(MAX_LISTED_PROBLEMS).collect();
        FlowsReloaded {
            flows,
            problems: errors.iter().map(ToString::to_string).collect(),
            problems_omitted: all.count().saturating_sub(errors.len()),
            errors,
        }
    }
}

/// Diagnostics (bounded).
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The first [`MAX_LISTED_PROBLEMS`] flow problems.
    pub flow_problems: Vec<FlowProblem>,
    /// Flow problems beyond those.
    pub flow_problems_omitted: usize,
    pub pack_problems: Vec<String>,
    pub load_order: Vec<String>,
    /// Unmet requirements and cycles, by pack (`kind: "load_order"` in the diagnostics).
    pub load_problems: Vec<pack::LoadProblem>,
    pub events: Vec<Value>,
    /// Every approved pack's egress listener (asked for its snapshot by the caller).
    pub egress: Vec<Addr<EgressListener>>,
    /// Every approved pack's capability listener and broker (the same).
    pub capability: Vec<(
        Addr<crate::capability::broker::CapabilityListener>,
        Addr<crate::capability::broker::CapabilityBroker>,
    )>,
}

/// Registry refusals.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("no pack {0:?} is installed")]
    NotFound(String),
    #[error("pack {pack_id:?} cannot be approved: {why}")]
    Invalid { pack_id: String, why: String },
    #[error("the approval could not be recorded; nothing was changed")]
    Storage,
}

// ---- actor ------------------------------------------------------------------------------------

struct PackEntry {
    dir: PathBuf,
    subdir: PathBuf,
    meta: Option<PackMeta>,
    error: Option<String>,
    state: PackState,
    record: Option<ApprovalRecord>,
    changes: Option<ManifestDiff>,
    container: Option<Addr<PackContainer>>,
    /// The pack's egress and capability sockets (approved packs only).
    doors: doors::Doors,
    /// A verifier that has just checked (or hashed) the pack against its record, handed to the
    /// next sandbox so its first call does not hash the pack again.
    warm: Option<ManifestVerifier>,
}

/// What the Registry needs to start pack sandboxes.
#[derive(Clone)]
pub struct SandboxSettings {
    pub host_script: PathBuf,
    pub modules_dir: PathBuf,
    /// Pack sandboxes are spread over these by a hash of the pack id.
    pub arbiters: Vec<ArbiterHandle>,
    /// Where the `PackContainer` actors live (their doors stay on `arbiters`).
    pub container_host: sandbox::ContainerHost,
    /// Set once the sandboxes have their host; the HTTP gate waits for it (see
    /// [`sandbox::SandboxesPlaced`]).
    pub placed: Arc<sandbox::SandboxesPlaced>,
    /// The CPU each arbiter is pinned to (a container of that arbiter's pack uses it too).
    pub arbiter_cpus: Vec<Option<usize>>,
    /// The Docker backend: present exactly in strict mode.
    pub docker: Option<Arc<DockerEngine>>,
    /// The egress proxy every pack's socket hands its requests to.
    pub proxy: Arc<Proxy>,
    /// Grants, secrets, stores and handlers every pack's capability broker uses.
    pub capabilities: Arc<crate::capability::Capabilities>,
    /// The packs' live worker processes (who may use a pack's capability socket, permissive).
    pub processes: Arc<crate::capability::peers::PackProcesses>,
    /// What sandboxes audit about a run (refused calls) goes through the audit queue.
    pub audit_queue: crate::audit::AuditQueue,
}

/// The registry (see the module docs).
pub struct Registry {
    layout: Layout,
    config: RuntimeConfig,
    view: Arc<KernelView>,
    approvals: ApprovalStore,
    audit: Addr<AuditWriter>,
    sandbox: SandboxSettings,
    packs: BTreeMap<String, PackEntry>,
    pack_problems: Vec<String>,
    /// The packs' load order (`order`: every pack with readable metadata) and its problems.
    load_order: pack::LoadOrder,
    flow_problems: Vec<FlowProblem>,
    events: VecDeque<Value>,
    reloads: flows::Reloads,
    self_addr: Option<Addr<Registry>>,
    /// The kernel is stopping (`Stopping`): a sandbox that dies now (its HTTP worker host
    /// stopping first) is not replaced.
    stopping: bool,
    /// The kernel's spill workers, shared by every pack (permissive mode, CPUs left by the
    /// kernel; see `pack_container`).
    spill_pool: Option<Arc<crate::pack_container::SpillPool>>,
    /// The verifier of each `modified` pack, kept warm between scans: a file found changed is
    /// not hashed again while its stat stays the same, so a scan costs stats, not the hashing of
    /// a (possibly huge) changed file every time.
    modified_verifiers: HashMap<String, ManifestVerifier>,
    /// Approved packs' directories under watch (`watch.rs`).
    watch: watch::PackWatch,
    /// What the published catalog was built from (`flows.rs`).
    last_sources: flows::KeptSources,
    /// The outcome of each (flow, modifier) in the published catalog, to audit changes only.
    modifier_outcomes: HashMap<String, String>,
    /// Lib runs, components, vocabulary (`extras.rs`, `lib.rs`).
    extras: extras::Extras,
}

impl Registry {
    pub fn new(
        layout: Layout,
        config: RuntimeConfig,
        view: Arc<KernelView>,
        approvals: ApprovalStore,
        audit: Addr<AuditWriter>,
        sandbox: SandboxSettings,
    ) -> Self {
        let spill_pool =
            crate::pack_container::SpillPool::new(config.spill_cpus.clone(), config.spill_idle);
        Registry {
            layout,
            config,
            view,
            approvals,
            audit,
            sandbox,
            packs: BTreeMap::new(),
            pack_problems: Vec::new(),
            load_order: pack::LoadOrder::default(),
            flow_problems: Vec::new(),
            events: VecDeque::new(),
            reloads: flows::Reloads::default(),
            self_addr: None,
            stopping: false,
            spill_pool,
            modified_verifiers: HashMap::new(),
            watch: watch::PackWatch::default(),
            last_sources: flows::KeptSources::default(),
            modifier_outcomes: HashMap::new(),
            extras: extras::Extras::default(),
        }
    }

    fn event(&mut self, v: Value) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(v);
    }

    /// Finds pack directories: `ecosystem/<id>/` first, then the legacy `ecosystem/packs/<id>/`.
    fn discover(&mut self) -> Vec<(String, PathBuf)> {
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        let eco = self.layout.ecosystem();
        for (base, legacy) in [(eco.clone(), false), (eco.join("packs"), true)] {
            let Ok(entries) = fs::read_dir(&base) else {
                continue;
            };
            let mut names: Vec<(String, PathBuf)> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect();
            names.sort();
            for (name, path) in names {
                if !legacy && name == pack::RESERVED_PACK_ID {
                    // The legacy directory of packs, never a pack (a pack by that name would
                    // hold every legacy pack's files, and its purge would delete them).
                    if path.join("ecosystem.json").exists()
                        || path.join("backend/ecosystem.json").exists()
                    {
                        self.pack_problems.push(
                            "ecosystem/packs/ holds an ecosystem.json: that directory is where legacy packs live, so no pack may be named \"packs\"; not loaded (rename the pack)".into(),
                        );
                    }
                    continue;
                }
                if !pack::valid_pack_id(&name) {
                    self.pack_problems.push(format!(
                        "{}: {name:?} is not a valid pack id; not loaded",
                        self.layout.display(&path)
                    ));
                    continue;
                }
                if let Some(first) = found.get(&name) {
                    self.pack_problems.push(format!(
                        "pack {name:?} exists at {} and {}; the first wins",
                        self.layout.display(first),
                        self.layout.display(&path)
                    ));
                    continue;
                }
                found.insert(name, path);
            }
        }
        found.into_iter().collect()
    }

    /// Re-reads packs from disk and reconciles sandboxes and flows; the receiver answers once the
    /// flows are reloaded.
    fn scan(&mut self) -> oneshot::Receiver<FlowsReloaded> {
        self.pack_problems.clear();
        let found = self.discover();
        let present: std::collections::HashSet<&str> =
            found.iter().map(|(id, _)| id.as_str()).collect();
        let gone: Vec<String> = self
            .packs
            .keys()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        self.modified_verifiers
            .retain(|id, _| present.contains(id.as_str()));
        for id in gone {
            if let Some(mut entry) = self.packs.remove(&id) {
                if let Some(c) = entry.container.take() {
                    c.do_send(pack_container::Stop);
                }
                entry.doors.close();
                self.view.set_container(&id, None);
            }
            self.follow_watch(&id);
        }
        for (id, dir) in found {
            let (subdir, linked) = match Layout::pack_subdir(&dir) {
                Ok(s) => (s, None),
                Err(why) => (dir.clone(), Some(why)),
            };
            let (meta, error) = match (&linked, fs::read_to_string(subdir.join("ecosystem.json"))) {
                (Some(why), _) => (None, Some(why.clone())),
                (None, Ok(text)) => match pack::parse_ecosystem_json(&text, &id) {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(e)),
                },
                (None, Err(_)) => (
                    None,
                    Some("ecosystem.json is missing or unreadable".to_string()),
                ),
            };
            if let Some(e) = &error {
                self.pack_problems.push(format!("pack {id:?}: {e}"));
            }
            let (mut state, record, changes, mut warm) =
                self.decide_state(&id, &dir, error.is_some());
            if linked.is_some() {
                // Even an approval recorded over the link stands for nothing behind it.
                (state, warm) = (PackState::Error, None);
            }
            let (container, doors) = match self.packs.get_mut(&id) {
                Some(e) => (e.container.take(), std::mem::take(&mut e.doors)),
                None => (None, doors::Doors::default()),
            };
            self.packs.insert(
                id.clone(),
                PackEntry {
                    dir,
                    subdir,
                    meta,
                    error,
                    state,
                    record,
                    changes,
                    container,
                    doors,
                    warm,
                },
            );
            self.reconcile_container(&id);
        }
        let metas: Vec<PackMeta> = self.packs.values().filter_map(|p| p.meta.clone()).collect();
        self.load_order = pack::load_order(&metas);
        self.publish_states();
        self.drop_unapproved_flows();
        let reloaded = self.request_reload();
        self.write_pending_summary();
        self.schedule_extras();
        reloaded
    }

    fn publish_states(&self) {
        self.view.publish_states(
            self.packs
                .iter()
                .map(|(k, v)| (k.clone(), v.state))
                .collect(),
        );
    }

    /// Builds the catalog from loaded sources and publishes it; keeps the sources, and audits
    /// what the modifiers did where it changed since the last catalog.
    fn publish_catalog(&mut self, kept: flows::KeptSources) -> FlowsReloaded {
        let catalog = rumi_domain::catalog::build(kept.sources(self.environment()));
        self.publish_built(kept, catalog)
    }

    /// Publishes `catalog`, built from `kept` with the environment of now.
    fn publish_built(
        &mut self,
        kept: flows::KeptSources,
        catalog: rumi_domain::catalog::Catalog,
    ) -> FlowsReloaded {
        let old_sources = std::mem::replace(&mut self.last_sources, kept);
        let reloaded = FlowsReloaded::new(catalog.flows.flows.len(), &catalog.flows.problems);
        self.flow_problems = catalog.flows.problems.clone();
        self.audit_modifiers(&catalog.modifiers);
        let old = self.view.publish_catalog(catalog);
        // Freeing thousands of flows takes milliseconds: not on this thread, which the limiter
        // and the audit share with the Registry (runs in flight may still hold the old catalog;
        // the last of them frees it).
        let freed = std::thread::Builder::new()
            .name("rumi-catalog-free".into())
            .spawn(move || {
                crate::affinity::background_thread();
                drop((old, old_sources))
            });
        if let Err(e) = freed {
            tracing::warn!(error = %e, "could not start a thread to free the old catalog");
        }
        reloaded
    }

    /// One `modifier_application` audit entry per (flow, modifier) whose outcome is new or
    /// changed, and one per modifier file newly refused (a reload that changes nothing writes
    /// nothing: reloads are frequent, and the audit is for what changed).
    fn audit_modifiers(&mut self, report: &rumi_domain::catalog::modifier::ModifierReport) {
        use rumi_domain::catalog::modifier::Status;
        let mut now = HashMap::new();
        for (flow_id, apps) in &report.by_flow {
            for a in apps {
                let key = format!("{flow_id}\u{0}{}", a.modifier_id);
                let outcome = format!("{:?}\u{0}{}", a.status, a.reason.as_deref().unwrap_or(""));
                if self.modifier_outcomes.get(&key) != Some(&outcome) {
                    let mut entry = AuditEntry::new(
                        Category::ModifierApplication,
                        match a.status {
                            Status::Applied => "modifier_applied",
                            Status::Skipped => "modifier_skipped",
                        },
                        a.status == Status::Applied,
                    )
                    .details(json!({
                        "modifier_id": a.modifier_id,
                        "action": a.action,
                        "target_step_id": a.target_step_id,
                        "source": a.source,
                        "file": a.file,
                        "reason": a.reason,
                    }));
                    entry.flow_id = Some(flow_id.clone());
                    if let Some(pack) = &a.pack_id {
                        entry = entry.pack(pack);
                    }
                    self.audit.do_send(Record(entry));
                }
                now.insert(key, outcome);
            }
        }
        for r in &report.refused {
            let key = format!("\u{0}refused\u{0}{}", r.file);
            let outcome = r.reason.clone();
            if self.modifier_outcomes.get(&key) != Some(&outcome) {
                self.audit.do_send(Record(
                    AuditEntry::new(Category::ModifierApplication, "modifier_refused", false)
                        .details(json!({
                            "modifier_id": r.modifier_id,
                            "file": r.file,
                            "line": r.line,
                            "reason": r.reason,
                        })),
                ));
            }
            now.insert(key, outcome);
        }
        self.modifier_outcomes = now;
    }

    /// What modifiers may require: the services approved packs provide (the kernel's own
    /// interfaces are added by the domain); the capabilities with a handler, built-ins included.
    pub(super) fn environment(&self) -> rumi_domain::catalog::Environment {
        let mut env = rumi_domain::catalog::Environment::default();
        for e in self.packs.values() {
            if e.state == PackState::Approved {
                if let Some(meta) = &e.meta {
                    env.interfaces
                        .extend(meta.connectivity.provides.iter().cloned());
                }
            }
        }
        env.capabilities.extend(
            crate::capability::builtins::BUILTINS
                .iter()
                .map(|b| b.to_string()),
        );
        env.capabilities.extend(
            self.sandbox
                .capabilities
                .handlers
                .installed
                .read()
                .keys()
                .cloned(),
        );
        env
    }

    fn info(&self, id: &str) -> Option<PackInfo> {
        let e = self.packs.get(id)?;
        let declared = fs::read(e.subdir.join("permissions.json"))
            .ok()
            .filter(|b| b.len() <= 256 * 1024)
            .and_then(|b| serde_json::from_slice(&b).ok());
        Some(PackInfo {
            pack_id: id.to_string(),
            state: e.state,
            path: self.layout.display(&e.dir),
            pack_identity: e.meta.as_ref().map(|m| m.pack_identity.clone()),
            version: e.meta.as_ref().and_then(|m| m.version.clone()),
            description: e.meta.as_ref().and_then(|m| m.description.clone()),
            connectivity: e.meta.as_ref().map(|m| m.connectivity.clone()),
            load_index: self.load_order.order.iter().position(|x| x == id),
            error: e.error.clone(),
            decided_at: e.record.as_ref().map(|r| r.decided_at.clone()),
            reason: e.record.as_ref().and_then(|r| r.reason.clone()),
            manifest_hash: e
                .record
                .as_ref()
                .filter(|r| r.decision != Decision::Blocked)
                .map(|r| r.manifest_hash.clone()),
            file_count: e
                .record
                .as_ref()
                .filter(|r| r.decision != Decision::Blocked)
                .map(|r| r.manifest.files.len()),
            changes: e.changes.clone(),
            declared_permissions: declared,
            load_problems: self.load_order.problems_of(id),
            lib: self.lib_summary(id),
            components: self.extras.components_of(id),
        })
    }

    /// Every pack id in load order; packs whose metadata cannot be read come last, by id.
    fn in_load_order(&self) -> impl Iterator<Item = &str> + '_ {
        let ordered = self
            .load_order
            .order
            .iter()
            .filter(|id| self.packs.contains_key(id.as_str()))
            .map(String::as_str);
        let unordered = self
            .packs
            .iter()
            .filter(|(_, e)| e.meta.is_none())
            .map(|(id, _)| id.as_str());
        ordered.chain(unordered)
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
        self.self_addr = Some(ctx.address());
        uninstall::empty_trash(&self.layout.user_data());
        // `AwaitFlows` answers when this first load is published.
        drop(self.scan());
        self.await_container_host(ctx);
        ctx.run_interval(std::time::Duration::from_secs(1), |act, _| {
            act.restart_dead_sandboxes(None)
        });
        ctx.run_interval(watch::SWEEP, |act, ctx| act.sweep_packs(ctx));
    }
}

impl Handler<Scan> for Registry {
    type Result = ResponseFuture<Vec<PackInfo>>;

    /// Re-reads the ecosystem and answers with every pack once the flows are reloaded.
    fn handle(&mut self, _: Scan, _: &mut Self::Context) -> Self::Result {
        let reloaded = self.scan();
        let packs: Vec<PackInfo> = self
            .in_load_order()
            .filter_map(|id| self.info(id))
            .collect();
        Box::pin(async move {
            let _ = reloaded.await;
            packs
        })
    }
}

impl Handler<Reload> for Registry {
    type Result = ResponseFuture<FlowsReloaded>;

    /// Starts a load (or joins the next one) and answers when its table is published; the
    /// Registry answers other messages meanwhile.
    fn handle(&mut self, _: Reload, _: &mut Self::Context) -> Self::Result {
        let reloaded = self.request_reload();
        Box::pin(async move { reloaded.await.unwrap_or_default() })
    }
}

impl Handler<AwaitFlows> for Registry {
    type Result = ResponseFuture<FlowsReloaded>;

    /// Answers when every load asked for so far is published.
    fn handle(&mut self, _: AwaitFlows, _: &mut Self::Context) -> Self::Result {
        let reloaded = self.reloads.wait();
        Box::pin(async move { reloaded.await.unwrap_or_default() })
    }
}

impl Handler<ListPacks> for Registry {
    type Result = MessageResult<ListPacks>;

    fn handle(&mut self, _: ListPacks, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.in_load_order()
                .filter_map(|id| self.info(id))
                .collect(),
        )
    }
}

impl Handler<GetPack> for Registry {
    type Result = Result<PackInfo, RegistryError>;

    fn handle(&mut self, msg: GetPack, _: &mut Self::Context) -> Self::Result {
        self.info(&msg.pack_id)
            .ok_or(RegistryError::NotFound(msg.pack_id))
    }
}

impl Handler<GetDiagnostics> for Registry {
    type Result = MessageResult<GetDiagnostics>;

    fn handle(&mut self, _: GetDiagnostics, _: &mut Self::Context) -> Self::Result {
        MessageResult(Diagnostics {
            flow_problems: self
                .flow_problems
                .iter()
                .take(MAX_LISTED_PROBLEMS)
                .cloned()
                .collect(),
            flow_problems_omitted: self.flow_problems.len().saturating_sub(MAX_LISTED_PROBLEMS),
            pack_problems: [self.pack_problems.clone(), self.extras.problems()].concat(),
            load_order: self.load_order.order.clone(),
            load_problems: self.load_order.problems.clone(),
            events: self.events.iter().cloned().collect(),
            egress: self
                .packs
                .values()
                .filter_map(|e| e.doors.egress.clone())
                .collect(),
            capability: self
                .packs
                .values()
                .filter_map(|e| e.doors.capability.clone())
                .map(|(broker, listener)| (listener, broker))
                .collect(),
        })
    }
}

impl Handler<SandboxLost> for Registry {
    type Result = ();

    /// Replaces the pack's sandbox now if it is dead (the periodic check would within a second).
    fn handle(&mut self, msg: SandboxLost, _: &mut Self::Context) {
        self.restart_dead_sandboxes(Some(&msg.pack_id));
    }
}

impl Handler<StopAll> for Registry {
    type Result = ();

    fn handle(&mut self, _: StopAll, _: &mut Self::Context) {
        for (id, entry) in self.packs.iter_mut() {
            if let Some(c) = entry.container.take() {
                c.do_send(pack_container::Stop);
            }
            entry.doors.close();
            self.view.set_container(id, None);
        }
    }
}

#[cfg(test)]
mod tests;
