//! The kernel handle: the addresses of the long-lived actors, the published view and the
//! configuration, built once by [`Kernel::boot`] and passed to the edge (no globals).

use crate::approval::ApprovalStore;
use crate::audit::{AuditEntry, AuditWriter, Category, Record};
use crate::config::RuntimeConfig;
use crate::flow_run::{new_run_id, FlowRun, RunDeps, RunRequest};
use crate::keys::SigningKey;
use crate::layout::Layout;
use crate::limiter::{Acquire, ConcurrencyLimiter, LimiterError, LimiterHandle};
use crate::registry::{Registry, SandboxSettings, StopAll};
use crate::run_history::RunHistory;
use crate::view::KernelView;
use actix::prelude::*;
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
    pub started: Instant,
    deps: RunDeps,
}

/// Why a run could not be started or finished.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no flow {0:?} is loaded")]
    FlowNotFound(String),
    #[error(transparent)]
    Limiter(#[from] LimiterError),
    /// The deadline passed while the run waited for a slot.
    #[error("the run's deadline passed while it waited for a free slot")]
    TimedOutWaiting { run_id: String },
    #[error("the run stopped without a result")]
    Lost,
}

/// The arbiters that host pack sandboxes: one per two CPUs, each pinned to its own CPU when
/// pinning is on (see [`crate::affinity`]).
fn pack_arbiters(config: &RuntimeConfig) -> Vec<ArbiterHandle> {
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
            arbiter.handle()
        })
        .collect()
}

impl Kernel {
    /// Starts every kernel actor. Must be called inside a running actix `System`.
    pub fn boot(layout: Layout, config: RuntimeConfig) -> io::Result<Kernel> {
        for dir in [
            layout.user_data(),
            layout.audit(),
            layout.runs(),
            layout.approvals(),
        ] {
            crate::fsutil::ensure_dir(&dir, 0o700)?;
        }
        let key = SigningKey::load_or_create(&layout.keys())?;
        let host_script = crate::blockhost::install(&layout.runtime_python())?;

        // The disk writers share a thread of their own, so fsync latency never stalls runs and a
        // run's audit entries and record usually cost one wake-up between them.
        let disk = Arbiter::new();
        let (audit_dir, sync) = (layout.audit(), config.audit_sync_interval);
        let audit = AuditWriter::start_in_arbiter(&disk.handle(), move |_| {
            AuditWriter::new(audit_dir, sync)
        });
        let (runs_dir, cap, to_audit) = (layout.runs(), config.run_history, audit.clone());
        let history = RunHistory::start_in_arbiter(&disk.handle(), move |_| {
            RunHistory::load(runs_dir, cap, to_audit)
        });
        let limiter = ConcurrencyLimiter::new(config.max_concurrent_flows, config.flow_queue_limit)
            .start_handle();

        let view = Arc::new(KernelView::default());
        let sandbox = SandboxSettings {
            modules_dir: layout.runtime_python(),
            host_script,
            arbiters: pack_arbiters(&config),
        };
        let approvals = ApprovalStore::new(layout.approvals(), key);
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
        let deps = RunDeps {
            view: Arc::clone(&view),
            audit: audit.clone(),
            history: history.clone(),
            sandbox_lost: registry.clone().recipient(),
            execution_mode: config.mode.as_str(),
        };
        Ok(Kernel {
            layout,
            config,
            view,
            registry,
            limiter,
            audit,
            history,
            started: Instant::now(),
            deps,
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
        let flow = self
            .view
            .flow(flow_id)
            .ok_or_else(|| RunError::FlowNotFound(flow_id.to_string()))?;
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
                match tokio::time::timeout_at(deadline.into(), acquire).await {
                    Ok(Ok(Ok(p))) => p,
                    Ok(Ok(Err(e))) => return Err(RunError::Limiter(e)),
                    Ok(Err(_)) => return Err(RunError::Limiter(LimiterError::Closed)),
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
            span: span.clone(),
        };
        FlowRun::launch(req, self.deps.clone())
            .instrument(span)
            .await
            .map_err(|_| RunError::Lost)
    }

    /// Waits until the Registry has done its first scan (packs, approvals, flows), so no request
    /// is ever answered from an empty flow table at start-up.
    pub async fn ready(&self) -> Result<(), actix::MailboxError> {
        // `started` (the first scan) always runs before the actor handles any message.
        self.registry
            .send(crate::registry::ListPacks)
            .await
            .map(|_| ())
    }

    /// Stops every pack sandbox (shutdown).
    pub async fn shutdown(&self) {
        let _ = self.registry.send(StopAll).await;
    }

    pub fn execution_mode(&self) -> &'static str {
        self.config.mode.as_str()
    }
}
