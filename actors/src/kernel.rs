//! The kernel handle: the addresses of the long-lived actors, the published view and the
//! configuration, built once by [`Kernel::boot`] and passed to the edge (no globals).

use crate::admin::AdminServices;
use crate::approval::ApprovalStore;
use crate::audit::{AuditEntry, AuditWriter, Category, Record};
use crate::capability::Capabilities;
use crate::config::{RuntimeConfig, SecurityMode};
use crate::docker::{DockerEngine, DockerStatus, ManagedContainer};
use crate::egress::grants::{GrantError, NetworkPolicy};
use crate::egress::proxy::Proxy;
use crate::flow_run::{new_run_id, FlowRun, RunDeps, RunRequest};
use crate::keys::SigningKey;
use crate::layout::Layout;
use crate::limiter::{Acquire, ConcurrencyLimiter, LimiterError, LimiterHandle};
use crate::pack_container::{ReleaseSandbox, StartSandbox};
use crate::registry::{
    ContainerHost, HostContainers, Registry, SandboxSettings, SandboxesPlaced, StopAll,
};
use crate::run_history::{RunHistory, RunSink, RunStore};
use crate::scheduler::{Scheduler, SystemWallClock};
use crate::view::KernelView;
use actix::prelude::*;
use rumi_domain::egress::NetworkGrant;
use rumi_domain::flow::quoted;
use rumi_domain::run::RunRecord;
use serde_json::{json, Map, Value};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Default and largest run deadline, seconds (contract §3.6).
pub const DEFAULT_RUN_TIMEOUT_SECS: f64 = 300.0;
pub const MAX_RUN_TIMEOUT_SECS: f64 = 600.0;

/// The kernel's actors and settings.
#[derive(Clone)]
pub struct Kernel {
    pub layout: Layout,
    pub config: RuntimeConfig,
    pub view: Arc<KernelView>,
    pub registry: Addr<Registry>,
    pub limiter: LimiterHandle,
    pub audit: Addr<AuditWriter>,
    pub history: Addr<RunHistory>,
    /// Schedules and scheduled runs (contract §10).
    pub scheduler: Addr<Scheduler>,
    pub started: Instant,
    /// The Docker backend (strict mode only).
    pub docker: Option<Arc<DockerEngine>>,
    /// The packs' network grants (the egress proxy's step 2, and the grants API).
    pub network: Arc<NetworkPolicy>,
    /// The egress proxy (its checks answer `POST /api/network/check`).
    pub egress: Arc<Proxy>,
    /// Grants, secrets, stores and third-party handlers (the brokers and the API share them).
    pub capabilities: Arc<Capabilities>,
    /// The administrative acts (grants, revocations) of the API and of official flows.
    pub admin: Arc<AdminServices>,
    /// pip dependencies of packs: the candidates' workflow and the installer (contract §9).
    pub pip: Arc<crate::pip::Pip>,
    /// Skill runs (the SkillRuntime): the API, the CLI and `kernel:skill.run` start them here.
    pub skills: Arc<crate::skills::SkillRuntime>,
    /// Whether the pack sandboxes have their host yet (the HTTP gate waits for it; see
    /// [`ContainerHost`]).
    pub sandboxes_placed: Arc<SandboxesPlaced>,
    deps: RunDeps,
}

/// Why a container request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("containers exist only in strict mode; this kernel runs in permissive mode")]
    NotStrict,
    #[error("pack {0:?} is not approved, so it has no container")]
    NoSuchPack(String),
    #[error("{0}")]
    Docker(String),
}

/// Why a run could not be started or finished.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No flow of that id is loaded, and no file meant to provide it failed.
    #[error(
        "no flow {} is loaded; see `rumi flow list` and `rumi diagnostics`",
        quoted(.0)
    )]
    FlowNotFound(String),
    /// A file meant to provide the flow failed to load; `problem` is `file:line: …` (see
    /// [`KernelView::flow_failure`]).
    #[error("flow {} failed to load: {problem}; see `rumi diagnostics`", quoted(.flow_id))]
    FlowFailedToLoad { flow_id: String, problem: String },
    #[error(
        "the inputs are nested deeper than {} levels; flatten them",
        rumi_domain::vars::MAX_VALUE_DEPTH
    )]
    InputsTooDeep,
    #[error(transparent)]
    Limiter(#[from] LimiterError),
    /// The deadline passed while the run waited for a slot.
    #[error("the run's deadline passed while it waited for a free slot")]
    TimedOutWaiting { run_id: String },
    /// The run ended but its record could not be stored (the kernel log says why), or its actor
    /// stopped without one: it is not acknowledged.
    #[error("the run's record could not be stored; the kernel log says why")]
    Lost,
}

impl RunError {
    /// Why `flow_id` cannot run when the view has no such flow: the file meant to provide it
    /// failed to load (named, with its line and the fix), or there is no such flow at all. The
    /// CLI prints the message as it is.
    pub fn missing_flow(view: &KernelView, flow_id: &str) -> RunError {
        match view.flow_failure(flow_id) {
            Some(problem) => RunError::FlowFailedToLoad {
                flow_id: flow_id.to_string(),
                problem: problem.to_string(),
            },
            None => RunError::FlowNotFound(flow_id.to_string()),
        }
    }
}

/// How long the pack sandboxes wait at boot for [`Kernel::host_sandboxes`] before they start on
/// the pack arbiters (with `sandboxes_on_http_worker`).
const SANDBOX_HOST_WAIT: Duration = Duration::from_secs(30);

/// The arbiters that host pack sandboxes: one per two CPUs, each pinned to its own CPU when
/// pinning is on (see [`crate::affinity`]).
fn pack_arbiters(config: &RuntimeConfig) -> Vec<(ArbiterHandle, Option<usize>)> {
    let cpus = crate::affinity::allowed_cpus().len().max(1);
    let n = (cpus / 2).max(1);
    let targets = if config.pack_cpu_pinning {
        crate::affinity::pack_cpus(n)
    } else {
        Vec::new()
    };
    (0..n)
        .map(|i| {
            let arbiter = Arbiter::new();
            if let Some(&cpu) = targets.get(i) {
                arbiter.spawn_fn(move || {
                    if !crate::affinity::pin_current_thread(cpu) {
                        tracing::warn!(
                            cpu,
                            "could not pin a pack arbiter to its CPU; it stays unpinned"
                        );
                    }
                });
            }
            (arbiter.handle(), targets.get(i).copied())
        })
        .collect()
}

impl Kernel {
    /// Starts every kernel actor. Must be called inside a running actix `System`, before anything
    /// else writes under `user_data/` (the edge creates the API token after it).
    pub fn boot(layout: Layout, config: RuntimeConfig) -> io::Result<Kernel> {
        // Not dumpable: `/proc/<kernel>/environ` (RUMI_LLM_API_KEY, RUMI_API_TOKEN), its memory
        // and its descriptors become unreadable to other processes of the same user — a host
        // script of a permissive skill run, or a permissive block, runs as that user.
        // SAFETY: prctl with these arguments only changes this process's dumpable flag.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        // A crash between an atomic write's temporary file and its rename leaves the temporary
        // file behind; nothing is writing yet, so every one found is stale.
        let stale = crate::fsutil::remove_interrupted_writes(&layout.atomic_write_dirs())?;
        if stale > 0 {
            tracing::warn!(
                removed = stale,
                "removed temporary files of writes an earlier crash interrupted"
            );
        }
        // Before the Registry's first scan: finish or undo a pack apply a crash cut (§2.4).
        // Fail-soft: a staging area the kernel cannot tidy is logged, not a reason to stop.
        match crate::lifecycle::recover(&layout) {
            Ok(done) => done.iter().for_each(|d| tracing::warn!("{d}")),
            Err(e) => tracing::error!(error = %e, "could not recover user_data/pack_staging"),
        }
        for dir in [
            layout.user_data(),
            layout.audit(),
            layout.runs(),
            layout.approvals(),
            layout.network_grants(),
        ] {
            crate::fsutil::ensure_dir(&dir, 0o700)?;
        }
        let key = SigningKey::load_or_create(&layout.keys())?;
        let host_script = crate::blockhost::install(&layout.runtime_python())?;

        // The disk writers share a thread of their own: the group fsyncs, the compaction of the
        // run history and every audit message happen there, never on a thread that runs flows. A
        // finished run writes its record and audit entry itself (`run_history::RunSink`).
        let disk = Arbiter::new();
        let (audit_dir, sync) = (layout.audit(), config.audit_sync_interval);
        // Secret values are scrubbed from every audit entry: the redactor exists before the
        // writer, and the secrets store fills it when it opens.
        let redactor: Arc<crate::capability::redact::Redactor> = Arc::default();
        let r = Arc::clone(&redactor);
        let writer = AuditWriter::new(audit_dir, sync).with_redactor(r);
        let (audit_queue, audit_log) = (writer.queue(), writer.log());
        let audit = AuditWriter::start_in_arbiter(&disk.handle(), move |_| writer);
        let runs = RunStore::load(layout.runs(), config.run_history);
        let (store, log) = (runs.clone(), audit_log.clone());
        let history = RunHistory::start_in_arbiter(&disk.handle(), move |_| {
            RunHistory::new(store, log, sync)
        });
        let run_sink = RunSink::new(runs, audit_log, history.clone());
        let limiter = ConcurrencyLimiter::new(config.max_concurrent_flows, config.flow_queue_limit)
            .start_handle();

        let view = Arc::new(KernelView::default());
        let docker = (config.mode == SecurityMode::Strict).then(|| {
            DockerEngine::new(
                config.container.clone(),
                crate::docker::instance_id(layout.home()),
            )
        });
        let (network, tampered) =
            NetworkPolicy::load(layout.network_grants(), key.clone(), Arc::clone(&view));
        for pack in tampered {
            tracing::error!(pack_id = %pack, "a network grant file failed its signature check; the pack's requests are denied");
            audit.do_send(Record(crate::egress::grants::tampered_entry(&pack)));
        }
        let network = Arc::new(network);
        let proxy = Proxy::new(
            Arc::clone(&network),
            &config.egress,
            config.max_response_bytes,
            audit.clone(),
        )
        .map_err(io::Error::other)?;
        let proxy = Arc::new(proxy);
        let (capabilities, report) =
            Capabilities::open(&layout, key.clone(), Arc::clone(&view), redactor)?;
        for principal in report.tampered_grants {
            tracing::error!(principal_id = %principal, "a capability grant file failed its signature check; the principal's calls are denied");
            audit.do_send(Record(crate::capability::grants::tampered_entry(
                &principal,
            )));
        }
        capabilities.handlers.set_python(config.python.clone());
        capabilities
            .handlers
            .set_redactor(Arc::clone(&capabilities.redactor));
        let capabilities = Arc::new(capabilities);
        let (arbiters, arbiter_cpus) = pack_arbiters(&config).into_iter().unzip();
        let sandbox = SandboxSettings {
            modules_dir: layout.runtime_python(),
            host_script,
            arbiters,
            container_host: if config.sandboxes_on_http_worker {
                ContainerHost::Awaiting {
                    wait: SANDBOX_HOST_WAIT,
                }
            } else {
                ContainerHost::Arbiters
            },
            placed: if config.sandboxes_on_http_worker {
                Arc::default()
            } else {
                SandboxesPlaced::placed()
            },
            arbiter_cpus,
            docker: docker.clone(),
            proxy: Arc::clone(&proxy),
            capabilities: Arc::clone(&capabilities),
            processes: Arc::default(),
            audit_queue: audit_queue.clone(),
        };
        let pip = Arc::new(crate::pip::Pip::new(
            &layout,
            Arc::clone(&view),
            crate::pip::install::Installer {
                python: config.python.clone(),
                find_links: config.pip_find_links.clone(),
                work_root: layout.user_data().join("pip").join("work"),
                runtime_dir: layout.runtime_python(),
                docker: docker.clone(),
            },
        ));
        let approvals = ApprovalStore::new(layout.approvals(), key);
        let skill_approvals = approvals.clone();
        let sandboxes_placed = Arc::clone(&sandbox.placed);
        let registry = {
            let (layout, config, view, audit) = (
                layout.clone(),
                config.clone(),
                Arc::clone(&view),
                audit.clone(),
            );
            Registry::new(layout, config, view, approvals, audit, sandbox).start()
        };
        audit.do_send(Record(
            AuditEntry::new(Category::System, "kernel_started", true)
                .mode(config.mode.as_str())
                .details(json!({"version": env!("CARGO_PKG_VERSION")})),
        ));
        let admin = Arc::new(AdminServices {
            network: Arc::clone(&network),
            capabilities: Arc::clone(&capabilities),
            audit: audit.clone(),
        });
        let skills = Arc::new(crate::skills::SkillRuntime::new(
            layout.clone(),
            Arc::clone(&view),
            docker.clone(),
            config.python.clone(),
            Arc::clone(&capabilities.secrets),
            audit.clone(),
            skill_approvals,
        ));
        let deps = RunDeps {
            skills: Arc::clone(&skills),
            admin: Arc::clone(&admin),
            redactor: Arc::clone(&capabilities.redactor),
            view: Arc::clone(&view),
            audit: audit.clone(),
            audit_queue,
            runs: run_sink,
            sandbox_lost: registry.clone().recipient(),
            execution_mode: config.mode.as_str(),
            limits: rumi_domain::engine::ContextLimits {
                max_value_bytes: config.max_response_bytes,
                max_context_bytes: config.max_context_bytes,
            },
        };
        // The scheduler starts runs through the kernel, which holds its address: its mailbox
        // exists first, the actor starts once the kernel it calls is built. It lives on a thread
        // of its own: planning many schedules, or the runs it starts (they run on its arbiter),
        // never hold up the Registry, the limiter or the audit on the system arbiter.
        let (address_tx, address_rx) = std::sync::mpsc::sync_channel(1);
        let (kernel_tx, kernel_rx) = std::sync::mpsc::sync_channel::<Kernel>(1);
        let scheduler_arbiter = Arbiter::new();
        scheduler_arbiter.spawn_fn(move || {
            let ctx = Context::<Scheduler>::new();
            let _ = address_tx.send(ctx.address());
            match kernel_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(kernel) => {
                    ctx.run(Scheduler::new(
                        Arc::clone(&kernel.view) as Arc<dyn crate::scheduler::CatalogSource>,
                        kernel.audit.clone().recipient(),
                        Arc::new(SystemWallClock),
                        kernel.scheduled_runner(),
                    ));
                }
                Err(_) => tracing::error!("the scheduler did not start: the kernel was not built"),
            };
        });
        let scheduler = address_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| io::Error::other("the scheduler's thread did not start"))?;
        let kernel = Kernel {
            layout,
            config,
            view,
            registry,
            limiter,
            audit,
            history,
            scheduler,
            started: Instant::now(),
            docker,
            network,
            egress: proxy,
            capabilities,
            admin,
            pip,
            skills,
            sandboxes_placed,
            deps,
        };
        let _ = kernel_tx.send(kernel.clone());
        Ok(kernel)
    }

    /// Starts scheduled runs: through the limiter like every trigger, with `trigger: schedule`,
    /// no inputs and the default deadline. At most half the concurrency limit (at least one) of
    /// scheduled runs are running or waiting for a slot at once: a tick beyond that is not
    /// started (`last_run.status: "skipped_busy"`), so schedules — many of them an approved pack's
    /// — can never take every slot and queue place from the operator's runs.
    fn scheduled_runner(&self) -> crate::scheduler::Runner {
        let kernel = self.clone();
        let cap = (self.config.max_concurrent_flows / 2).max(1);
        let in_flight = std::rc::Rc::new(std::cell::Cell::new(0usize));
        std::rc::Rc::new(move |flow_id: String, due: chrono::DateTime<chrono::Utc>| {
            let kernel = kernel.clone();
            let late = chrono::Utc::now() - due;
            if late > chrono::Duration::seconds(1) {
                tracing::info!(flow_id = %flow_id, late_ms = late.num_milliseconds(), "a scheduled run starts late (fired once)");
            }
            let in_flight = std::rc::Rc::clone(&in_flight);
            Box::pin(async move {
                if in_flight.get() >= cap {
                    tracing::debug!(flow_id = %flow_id, "a scheduled tick was not started: {cap} scheduled runs are running or waiting");
                    return rumi_domain::catalog::schedule::LastRun {
                        run_id: None,
                        status: "skipped_busy".to_string(),
                        ts: crate::clock::now_rfc3339(),
                    };
                }
                // Counted until this future ends, however it ends (dropped included).
                struct InFlight(std::rc::Rc<std::cell::Cell<usize>>);
                impl Drop for InFlight {
                    fn drop(&mut self) {
                        self.0.set(self.0.get() - 1);
                    }
                }
                in_flight.set(in_flight.get() + 1);
                let _counted = InFlight(in_flight);
                let outcome = kernel
                    .run_flow(&flow_id, Map::new(), None, "schedule")
                    .await;
                let ts = crate::clock::now_rfc3339();
                match outcome {
                    Ok(record) => rumi_domain::catalog::schedule::LastRun {
                        run_id: Some(record.run_id),
                        status: record.status.as_str().to_string(),
                        ts,
                    },
                    Err(e) => {
                        tracing::warn!(flow_id = %flow_id, "a scheduled run did not start: {e}");
                        let (run_id, status) = match e {
                            RunError::TimedOutWaiting { run_id } => (Some(run_id), "timed_out"),
                            _ => (None, "not_started"),
                        };
                        rumi_domain::catalog::schedule::LastRun {
                            run_id,
                            status: status.to_string(),
                            ts,
                        }
                    }
                }
            })
        })
    }

    /// Runs a flow to its end: takes a slot (waiting in the FIFO queue within the deadline), runs
    /// the flow in a new `FlowRun` on the current arbiter, and returns its record.
    pub async fn run_flow(
        &self,
        flow_id: &str,
        inputs: Map<String, Value>,
        timeout_secs: Option<f64>,
        trigger: &'static str,
    ) -> Result<RunRecord, RunError> {
        // The run and every nested run of it take their flows from this one table.
        let flows = self.view.flows();
        let flow = flows
            .flows
            .get(flow_id)
            .cloned()
            .ok_or_else(|| RunError::missing_flow(&self.view, flow_id))?;
        self.run_loaded_flow(flows, flow, inputs, timeout_secs, trigger)
            .await
    }

    /// Runs a flow already taken from a catalog's flow table `flows`, like [`Self::run_flow`]: a
    /// pack route runs the flow of the very catalog its route came from, so a reload between the
    /// two cannot pair a route with another load's flow (and the flows it calls come from there too).
    pub async fn run_loaded_flow(
        &self,
        flows: Arc<rumi_domain::sources::FlowTable>,
        flow: Arc<rumi_domain::Flow>,
        inputs: Map<String, Value>,
        timeout_secs: Option<f64>,
        trigger: &'static str,
    ) -> Result<RunRecord, RunError> {
        let flow_id = flow.flow_id.clone();
        let flow_id = flow_id.as_str();
        // A run's context never holds anything deeper than a step could store (its record must
        // read back, and every walk of it recurses per level).
        if inputs.values().any(|v| {
            rumi_domain::vars::measure(v, usize::MAX).depth > rumi_domain::vars::MAX_VALUE_DEPTH
        }) {
            return Err(RunError::InputsTooDeep);
        }
        let secs = timeout_secs
            .unwrap_or(DEFAULT_RUN_TIMEOUT_SECS)
            .clamp(1.0, MAX_RUN_TIMEOUT_SECS);
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let run_id = new_run_id();
        let span =
            tracing::info_span!("run_request", run_id = %run_id, flow_id = %flow_id, trigger);
        let fast = tracing::debug_span!(parent: &span, "limiter.try_acquire")
            .in_scope(|| self.limiter.try_acquire());
        let permit = match fast {
            Some(p) => p,
            None => {
                let acquire = self.limiter.addr.send(Acquire {
                    run_id: run_id.clone(),
                    span: span.clone(),
                });
                // The ticket is ours: when the deadline passes (or the client goes and this
                // future is dropped) the waiter is dropped with it and leaves the queue.
                let wait = async {
                    match acquire.await {
                        Ok(ticket) => ticket?.into_permit().await,
                        Err(_) => Err(LimiterError::Closed),
                    }
                };
                match tokio::time::timeout_at(deadline.into(), wait).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return Err(RunError::Limiter(e)),
                    Err(_) => return Err(RunError::TimedOutWaiting { run_id }),
                }
            }
        };
        let req = RunRequest {
            run_id,
            flow,
            inputs,
            trigger,
            deadline,
            permit: Some(permit),
            chain: Vec::new(),
            // A pack route is the pack's door, whoever calls it: an official flow behind it runs
            // without administrative rights (as when a pack flow calls it with kernel:flow.run).
            official_chain: trigger != "route",
            tree: Arc::new(crate::flow_run::RunTree::new(flows)),
            span: span.clone(),
        };
        FlowRun::launch(req, self.deps.clone())
            .instrument(span)
            .await
            .map_err(|_| RunError::Lost)
    }

    /// Names the arbiter the pack sandboxes live on (the HTTP worker's; with
    /// `sandboxes_on_http_worker`, see [`ContainerHost`]): called once on that worker's thread
    /// when the HTTP server starts. Without the setting, or the second time, it changes nothing.
    pub fn host_sandboxes(&self, arbiter: actix::ArbiterHandle) {
        self.registry.do_send(HostContainers(arbiter));
    }

    /// Waits until the Registry has done its first scan (packs, approvals, flows), so no request
    /// is ever answered from an empty flow table at start-up.
    /// In strict mode it also removes containers left by an earlier kernel process that crashed.
    pub async fn ready(&self) -> Result<(), actix::MailboxError> {
        if let Some(docker) = &self.docker {
            match docker.remove_leftovers().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        removed = n,
                        "removed pack containers left by an earlier run"
                    );
                    self.audit.do_send(Record(
                        AuditEntry::new(Category::System, "containers_cleaned", true)
                            .details(json!({"removed": n})),
                    ));
                }
                Err(why) => tracing::warn!("could not look for leftover containers: {why}"),
            }
        }
        // `started` (the first scan) always runs before the actor handles any message; its flows
        // are read off the Registry's thread, and the kernel serves once they are published.
        self.registry
            .send(crate::registry::AwaitFlows)
            .await
            .map(|_| ())
    }

    /// Stops every pack sandbox (shutdown); in strict mode every container of this installation
    /// is removed before this returns.
    pub async fn shutdown(&self) {
        let _ = self.registry.send(StopAll).await;
        if let Some(docker) = &self.docker {
            match docker.remove_managed(None).await {
                Ok(n) => tracing::info!(removed = n, "pack containers removed"),
                Err(why) => tracing::warn!("could not remove the pack containers: {why}"),
            }
        }
    }

    /// `GET /api/docker/status`.
    pub async fn docker_status(&self) -> Option<DockerStatus> {
        match &self.docker {
            Some(d) => Some(d.status().await),
            None => None,
        }
    }

    fn docker(&self) -> Result<&Arc<DockerEngine>, ContainerError> {
        self.docker.as_ref().ok_or(ContainerError::NotStrict)
    }

    /// `GET /api/containers`: this installation's pack containers.
    pub async fn containers(&self) -> Result<Vec<ManagedContainer>, ContainerError> {
        self.docker()?
            .list_managed(None)
            .await
            .map_err(ContainerError::Docker)
    }

    /// `POST /api/containers/{id}/start`: starts an approved pack's container and waits until
    /// its block host answers.
    pub async fn start_container(&self, pack_id: &str) -> Result<(), ContainerError> {
        self.docker()?;
        let addr = self
            .view
            .container(pack_id)
            .ok_or_else(|| ContainerError::NoSuchPack(pack_id.to_string()))?;
        match addr.send(StartSandbox).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(f)) => Err(ContainerError::Docker(f.error)),
            Err(_) => Err(ContainerError::Docker(
                "the pack's sandbox stopped while starting".into(),
            )),
        }
    }

    /// `POST /api/containers/{id}/stop` (`remove: false`) and `DELETE /api/containers/{id}`
    /// (`remove: true`). The pack's next call starts a fresh container. Answers whether there
    /// was a container.
    pub async fn stop_container(
        &self,
        pack_id: &str,
        remove: bool,
    ) -> Result<bool, ContainerError> {
        let docker = self.docker()?;
        let addr = self.view.container(pack_id);
        let known = addr.is_some() || self.view.pack_state(pack_id).is_some();
        if !known {
            return Err(ContainerError::NoSuchPack(pack_id.to_string()));
        }
        if let Some(addr) = addr {
            let _ = addr.send(ReleaseSandbox).await;
        }
        if remove {
            docker
                .remove_managed(Some(pack_id))
                .await
                .map(|n| n > 0)
                .map_err(ContainerError::Docker)
        } else {
            docker
                .stop_pack(pack_id)
                .await
                .map_err(ContainerError::Docker)
        }
    }

    /// `POST /api/network/grant`: replaces the pack's lists and enables its grant; answers once the
    /// signed file and its audit entry are on disk.
    pub async fn grant_network(
        &self,
        pack_id: &str,
        domains: &[String],
        ports: &[i64],
        notes: &str,
    ) -> Result<NetworkGrant, GrantError> {
        self.admin
            .grant_network(pack_id, domains, ports, notes)
            .await
    }

    /// `POST /api/network/revoke`.
    pub async fn revoke_network(
        &self,
        pack_id: &str,
        reason: &str,
    ) -> Result<NetworkGrant, GrantError> {
        self.admin.revoke_network(pack_id, reason).await
    }

    pub fn execution_mode(&self) -> &'static str {
        self.config.mode.as_str()
    }
}
