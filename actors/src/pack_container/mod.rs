//! `PackContainer`: one per approved pack; owns the pack's sandbox (a warm host worker pool in
//! permissive mode; one long-lived Docker container in strict mode, see [`crate::docker`]), its
//! manifest verifier and its queue of block calls. `FlowRun`s send it [`ExecuteBlock`]; the
//! `Registry` starts and stops it and hears [`PackModified`] from it.
//!
//! Before every call, in order (contract §5.1): the manifest verifies (cheaply, stat-cached) → the
//! block file resolves inside the pack subdir after symlinks → the backend is usable (strict mode
//! without Docker answers `docker_required`, never a silent fallback). Each refusal is a failed
//! step with its `error_type` and a `security` audit entry.
//!
//! Calls queue in the actor (bounded) and go to an idle sandbox; the sandbox is moved into the
//! call's future and comes back in the continuation, so no other message can see it half-used. A
//! timed-out, crashed, out-of-memory or process-leaking sandbox is killed and a fresh one started
//! at once, so the pack's next call finds a warm one; a container that dies while idle is
//! replaced the same way. Sandboxes are never shared between packs. A container starts on the
//! pack's first call (or at approval when configured); a failed start answers the calls waiting
//! for it and is retried by the next call.
//!
//! Spill workers (permissive mode, with a [`SpillPool`]: the kernel confined to part of the
//! machine). A spill worker is a host worker confined to the CPUs the kernel left. A call with
//! nothing else of its pack in flight takes an idle warm worker, so a lone client's calls stay
//! on the kernel's CPU (a same-CPU hand-off). A call that overlaps another takes an idle spill
//! worker first, then an idle warm one; when none is idle, a spill worker is started for it if
//! the kernel's pool has room ([`SPILL_PER_CPU`] per CPU left, [`SPILL_MAX`] in all, over every
//! pack; one pack may take all of it, but while a pack below half of it finds it spent, packs at
//! or past half start no more and those past it stop theirs as they come back: see
//! [`SpillPool`]), else it waits. So overlapping calls run beside the kernel instead of taking
//! turns with it on its CPU. A spill worker idle for the pool's idle time is stopped; one that
//! fails is killed like any worker and not replaced (the next overlap may start another).

mod entry;
pub mod proctree;
mod resolve;
mod sandboxes;
mod spill;
mod wire;
pub mod worker;

pub use entry::{resolve_exact, Entry};
pub use resolve::resolve_block;
use sandboxes::Sandbox;
pub use spill::{SpillPool, SPILL_MAX, SPILL_PER_CPU};

use crate::approval::{ManifestVerifier, VerifyFailure};
use crate::audit::{AuditEntry, AuditQueue};
use crate::docker::sandbox::{self, DockerSandbox, StartError};
use crate::docker::{DockerEngine, PackSpec};
use actix::prelude::*;
use rumi_domain::manifest::ManifestDiff;
use rumi_domain::run::{ErrorType, StepFailure};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;
use wire::{describe_diff, truncate, CallContext, CallRequest};
use worker::{CallError, Worker, WorkerSpec};

/// Where a pack's blocks run.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Warm host Python workers (permissive mode).
    HostWorkers {
        spec: WorkerSpec,
        pool: usize,
        /// The kernel's spill workers (see the module docs); `None`: this pack has none.
        spill: Option<Arc<SpillPool>>,
    },
    /// One long-lived Docker container (strict mode). Without a daemon or an image, its start
    /// fails and calls are refused with `docker_required` (never a silent fallback).
    Docker {
        engine: Arc<DockerEngine>,
        spec: PackSpec,
        /// Start the container when the actor starts (at approval), not at the first call.
        eager: bool,
    },
}

// ---- messages ---------------------------------------------------------------------------------

/// Runs one block of this pack.
#[derive(Message)]
#[rtype(result = "Result<BlockOutput, StepFailure>")]
pub struct ExecuteBlock {
    pub run_id: String,
    pub flow_id: String,
    pub step_id: String,
    pub phase: String,
    /// As written in the flow; resolved and checked here.
    pub file: String,
    pub input: Value,
    /// The run's inputs (`context.inputs`).
    pub inputs: Arc<Value>,
    pub timeout: Duration,
    /// True when `timeout` is the run's remaining time rather than the step's own limit.
    pub run_deadline_bound: bool,
    pub span: tracing::Span,
    /// The function called: a block's `run` (flows), a component's `setup`, a converter's
    /// `convert`.
    pub entry: Entry,
}

/// What a block returned.
#[derive(Debug, Clone)]
pub struct BlockOutput {
    pub result: Value,
    pub log: String,
}

/// Stops the pack's workers and the actor (pack modified, rejected, uninstalled, shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Starts the pack's container now if it is not running (`POST /api/containers/{id}/start`);
/// answers when it is ready.
#[derive(Message)]
#[rtype(result = "Result<(), StepFailure>")]
pub struct StartSandbox;

/// Lets go of the pack's idle container and does not replace it until the next call
/// (`POST /api/containers/{id}/stop`, `DELETE /api/containers/{id}`); the caller stops or
/// removes it through the engine. A call in flight finishes or fails on its own.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseSandbox;

/// Observable counters.
#[derive(Message)]
#[rtype(result = "ContainerSnapshot")]
pub struct GetSnapshot;

/// Sent to the Registry when verification finds the pack's files changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PackModified {
    pub pack_id: String,
    pub diff: ManifestDiff,
}

/// The container's counters.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ContainerSnapshot {
    pub pack_id: String,
    pub backend: &'static str,
    pub workers: usize,
    pub idle: usize,
    pub queued: usize,
    pub calls: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub restarts: u64,
    pub manifest_rehashes: u64,
    /// Spill workers alive, idle or busy (counted in `workers`).
    pub spill_workers: usize,
    /// Idle host workers' pids (spill workers included).
    pub worker_pids: Vec<i32>,
    /// The idle container's short id (strict mode).
    pub container_id: Option<String>,
}

// ---- actor ------------------------------------------------------------------------------------

type Reply = oneshot::Sender<Result<BlockOutput, StepFailure>>;

struct Job {
    msg: ExecuteBlock,
    reply: Reply,
}

/// The pack's sandbox owner (see the module docs).
pub struct PackContainer {
    pack_id: String,
    pack_root: PathBuf,
    backend: Backend,
    verifier: ManifestVerifier,
    /// file as written → path relative to the pack root; valid while the manifest verifies.
    resolved: HashMap<String, String>,
    idle: Vec<Sandbox>,
    /// Sandboxes alive, idle or busy (spill workers included).
    live: usize,
    /// The spill workers alive, idle or busy (counted in `live`).
    spilled: usize,
    /// The check for idle spill workers is armed.
    spill_timer: bool,
    /// A pump is due while this pack waits for its share of spill workers.
    share_retry: bool,
    /// A container start is under way.
    starting: bool,
    /// Why the last container start failed; answers the calls that waited for it.
    start_error: Option<StepFailure>,
    /// Callers of [`StartSandbox`] waiting for the start under way.
    start_waiters: Vec<oneshot::Sender<Result<(), StepFailure>>>,
    /// Released on request: not replaced until the next call.
    parked: bool,
    next_request_id: u64,
    queue: VecDeque<Job>,
    queue_limit: usize,
    registry: Recipient<PackModified>,
    /// Its refusals go through the audit queue: a run's refused call is then written before the
    /// run's own entry, so before it is answered.
    audit: AuditQueue,
    modified: bool,
    /// Refusals held until the Registry has recorded the change, so that a caller who sees
    /// `hash_verification_failed` then sees the pack `modified` (and its grants suspended).
    held: Option<Vec<(Reply, StepFailure)>>,
    calls: u64,
    failures: u64,
    timeouts: u64,
    restarts: u64,
}

impl PackContainer {
    pub fn new(
        pack_id: String,
        pack_root: PathBuf,
        backend: Backend,
        verifier: ManifestVerifier,
        queue_limit: usize,
        registry: Recipient<PackModified>,
        audit: AuditQueue,
    ) -> Self {
        PackContainer {
            pack_id,
            pack_root,
            backend,
            verifier,
            resolved: HashMap::new(),
            idle: Vec::new(),
            live: 0,
            spilled: 0,
            spill_timer: false,
            share_retry: false,
            starting: false,
            start_error: None,
            start_waiters: Vec::new(),
            parked: false,
            next_request_id: 0,
            queue: VecDeque::new(),
            queue_limit,
            registry,
            audit,
            modified: false,
            held: None,
            calls: 0,
            failures: 0,
            timeouts: 0,
            restarts: 0,
        }
    }

    /// Fills the pool: host workers start at once; a container start is spawned (one at a time)
    /// and the queue is pumped when it is ready. Warm start and replacement after a kill.
    fn fill_pool(&mut self, ctx: &mut Context<Self>) {
        match &self.backend {
            Backend::HostWorkers { spec, pool, .. } => {
                while self.live.saturating_sub(self.spilled) < *pool {
                    match Worker::spawn(spec) {
                        Ok(w) => {
                            self.live += 1;
                            self.idle.push(Sandbox::Host(w));
                        }
                        Err(e) => {
                            tracing::error!(pack_id = %self.pack_id, error = %e, "cannot start the pack's worker");
                            break;
                        }
                    }
                }
            }
            Backend::Docker { engine, spec, .. } => {
                if self.live > 0 || self.starting || self.start_error.is_some() || self.parked {
                    return;
                }
                self.starting = true;
                let (engine, spec) = (Arc::clone(engine), spec.clone());
                let span = tracing::info_span!("pack.container_start", pack_id = %self.pack_id);
                let fut = async move { sandbox::start(&engine, &spec).await }.instrument(span);
                ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
                    act.started_container(result, ctx);
                    act.pump(ctx);
                }));
            }
        }
    }

    /// A container start finished: keep the sandbox and watch it, or remember why it failed.
    fn started_container(
        &mut self,
        result: Result<DockerSandbox, StartError>,
        ctx: &mut Context<Self>,
    ) {
        self.starting = false;
        let outcome = match result {
            Ok(sb) => {
                tracing::info!(pack_id = %self.pack_id, container = %sb.name(), id = %sb.id(), "pack container ready");
                let id = sb.id().to_string();
                ctx.spawn(
                    sb.exited()
                        .into_actor(self)
                        .map(move |(), act, ctx| act.container_exited(&id, ctx)),
                );
                self.live += 1;
                self.idle.push(Sandbox::Container(sb));
                Ok(())
            }
            Err(e) => {
                let failure = match e {
                    StartError::Unavailable(why) => StepFailure::new(
                        ErrorType::DockerRequired,
                        format!("{why}; strict mode never falls back to running blocks outside a container"),
                    ),
                    StartError::Failed(why) => StepFailure::new(
                        ErrorType::WorkerUnavailable,
                        format!("the container of pack {:?} could not be started: {why}", self.pack_id),
                    ),
                };
                tracing::warn!(pack_id = %self.pack_id, error = %failure.error, "pack container start failed");
                self.start_error = Some(failure.clone());
                Err(failure)
            }
        };
        for waiter in self.start_waiters.drain(..) {
            let _ = waiter.send(outcome.clone());
        }
    }

    /// An idle container stopped by itself: drop it and start a fresh one.
    fn container_exited(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(pos) = self
            .idle
            .iter()
            .position(|s| matches!(s, Sandbox::Container(c) if c.id() == id))
        else {
            return;
        };
        if let Sandbox::Container(c) = self.idle.swap_remove(pos) {
            // The next start removes the dead container by name; removing it here as well
            // would race with that.
            c.forget();
        }
        tracing::warn!(pack_id = %self.pack_id, container = %id, "the pack's container stopped by itself; replacing it");
        self.live = self.live.saturating_sub(1);
        self.restarts += 1;
        self.fill_pool(ctx);
    }

    /// The checks of §5.1 that precede any code; returns the path relative to the pack root.
    fn precheck(
        &mut self,
        msg: &ExecuteBlock,
        ctx: &mut Context<Self>,
    ) -> Result<String, StepFailure> {
        if self.modified {
            return Err(StepFailure::new(
                ErrorType::HashVerificationFailed,
                format!(
                    "pack {:?} changed since it was approved; approve it again",
                    self.pack_id
                ),
            ));
        }
        match self.verifier.verify() {
            Ok(()) => {}
            Err(VerifyFailure::Changed(diff)) => {
                self.modified = true;
                self.resolved.clear();
                let message = format!(
                    "pack {:?} changed since it was approved ({}); approve it again",
                    self.pack_id,
                    describe_diff(&diff)
                );
                self.report_modified(diff, ctx);
                return Err(StepFailure::new(ErrorType::HashVerificationFailed, message));
            }
            Err(VerifyFailure::Unreadable(why)) => {
                return Err(StepFailure::new(
                    ErrorType::HashVerificationFailed,
                    format!("pack {:?} could not be verified: {why}", self.pack_id),
                ));
            }
        }
        if msg.entry != Entry::Block {
            return entry::resolve_exact(&self.pack_root, &msg.file);
        }
        let rel = match self.resolved.get(&msg.file) {
            Some(r) => r.clone(),
            None => {
                let r = resolve_block(&self.pack_root, &msg.file)?;
                self.resolved.insert(msg.file.clone(), r.clone());
                r
            }
        };
        Ok(rel)
    }

    /// Tells the Registry of a change verification found, holding the refusals until it has
    /// recorded it (or is gone).
    fn report_modified(&mut self, diff: ManifestDiff, ctx: &mut Context<Self>) {
        self.held = Some(Vec::new());
        let sent = self.registry.send(PackModified {
            pack_id: self.pack_id.clone(),
            diff,
        });
        ctx.spawn(sent.into_actor(self).map(|_, act, _| act.release_held()));
    }

    fn release_held(&mut self) {
        for (reply, failure) in self.held.take().into_iter().flatten() {
            let _ = reply.send(Err(failure));
        }
    }

    /// Starts queued calls while workers are free. A call is checked (§5.1) only when a worker
    /// can take it, so a call that waits is verified once, just before it runs.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while !self.queue.is_empty() {
            if self.idle.is_empty() {
                self.fill_pool(ctx);
            }
            if self.idle.is_empty() && !self.may_spill() && (self.live > 0 || self.starting) {
                // Every sandbox is busy or starting; its completion pumps again (and so does a
                // retry while this pack waits for its share of spill workers).
                self.retry_for_share(ctx);
                return;
            }
            let Some(job) = self.queue.pop_front() else {
                return;
            };
            if job.reply.is_closed() {
                continue;
            }
            let rel = match self.precheck(&job.msg, ctx) {
                Ok(rel) => rel,
                Err(failure) => {
                    self.refuse(&job.msg, &failure);
                    match &mut self.held {
                        Some(held) => held.push((job.reply, failure)),
                        None => {
                            let _ = job.reply.send(Err(failure));
                        }
                    }
                    continue;
                }
            };
            let Some(worker) = self.take_sandbox(ctx) else {
                if self.live > 0 || self.starting {
                    // No spill worker could start after all: the call waits for a busy sandbox
                    // (checked again when it is taken).
                    self.queue.push_front(job);
                    return;
                }
                let f = self.start_error.clone().unwrap_or_else(|| {
                    StepFailure::new(
                        ErrorType::WorkerUnavailable,
                        format!("the worker of pack {:?} could not be started", self.pack_id),
                    )
                });
                // `docker_required` is a security refusal (§5.1) and is audited as one.
                self.refuse(&job.msg, &f);
                let _ = job.reply.send(Err(f));
                continue;
            };
            self.calls += 1;
            let Job { msg, reply } = job;
            let span = tracing::info_span!(parent: &msg.span, "pack.execute", pack_id = %self.pack_id, step_id = %msg.step_id, sandbox = %worker.label());
            // Unique per pack, so per channel: a reply must carry its request's id back.
            self.next_request_id += 1;
            let id = self.next_request_id;
            let block = matches!(msg.entry, Entry::Block);
            let request = CallRequest {
                id,
                op: "call",
                entry: msg.entry.wire_name(),
                file: &rel,
                input: &msg.input,
                context: CallContext {
                    flow_id: block.then_some(msg.flow_id.as_str()),
                    run_id: block.then_some(msg.run_id.as_str()),
                    step_id: block.then_some(msg.step_id.as_str()),
                    phase: block.then_some(msg.phase.as_str()),
                    ts: crate::clock::now_rfc3339(),
                    owner_pack: &self.pack_id,
                    pack_id: (!block).then_some(self.pack_id.as_str()),
                    inputs: block.then_some(&*msg.inputs),
                    component_id: match &msg.entry {
                        Entry::Setup { component_id } => Some(component_id),
                        _ => None,
                    },
                    from_term: match &msg.entry {
                        Entry::Convert { from, .. } => Some(from),
                        _ => None,
                    },
                    to_term: match &msg.entry {
                        Entry::Convert { to, .. } => Some(to),
                        _ => None,
                    },
                },
            };
            let frame = match crate::frame::encode(&request) {
                Ok(b) => b,
                Err(e) => {
                    self.idle.push(worker);
                    let f = StepFailure::new(
                        ErrorType::BlockError,
                        format!("the block's input could not be encoded: {e}"),
                    );
                    let _ = reply.send(Err(f));
                    continue;
                }
            };
            let (timeout, bound) = (msg.timeout, msg.run_deadline_bound);
            let spill = worker.is_spill();
            let fut = worker
                .call(id, frame, timeout)
                .instrument(tracing::debug_span!(parent: &span, "sandbox.call"));
            ctx.spawn(
                fut.into_actor(self)
                    .map(move |(worker, outcome), act, ctx| {
                        let _e = span.enter();
                        match worker {
                            Some(w) => act.back_from_call(w),
                            None => {
                                act.live = act.live.saturating_sub(1);
                                if spill {
                                    // Not replaced: the next overlap may start another.
                                    act.spilled = act.spilled.saturating_sub(1);
                                } else {
                                    act.restarts += 1;
                                    act.fill_pool(ctx);
                                }
                            }
                        }
                        let result = act.interpret(outcome, timeout, bound);
                        if result.is_err() {
                            act.failures += 1;
                        }
                        let _ = reply.send(result);
                        act.pump(ctx);
                    }),
            );
        }
        // Every call that waited for a failed start has its answer; the next call tries again.
        self.start_error = None;
    }

    /// Turns a worker reply (or failure) into the step's result.
    fn interpret(
        &mut self,
        outcome: Result<Value, CallError>,
        timeout: Duration,
        bound: bool,
    ) -> Result<BlockOutput, StepFailure> {
        match outcome {
            Ok(mut reply) => {
                let log = match reply.get_mut("log").map(Value::take) {
                    Some(Value::String(log)) => log,
                    _ => String::new(),
                };
                if reply.get("ok").and_then(Value::as_bool) == Some(true) {
                    // Moved out, not copied: a result may be megabytes.
                    return Ok(BlockOutput {
                        result: reply
                            .get_mut("result")
                            .map(Value::take)
                            .unwrap_or(Value::Null),
                        log,
                    });
                }
                let error = reply
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the block failed")
                    .to_string();
                let error_type = match reply.get("error_type").and_then(Value::as_str) {
                    Some("invalid_result") => ErrorType::InvalidResult,
                    Some("protocol_error") => ErrorType::WorkerCrashed,
                    _ => ErrorType::BlockError,
                };
                Err(StepFailure {
                    error: truncate(&error, 2000),
                    error_type,
                    log: Some(log).filter(|l| !l.is_empty()),
                })
            }
            Err(CallError::TimedOut) => {
                self.timeouts += 1;
                if bound {
                    Err(StepFailure::new(
                        ErrorType::RunTimeout,
                        "the run's deadline passed while the block ran; its sandbox was stopped",
                    ))
                } else {
                    Err(StepFailure::new(
                        ErrorType::Timeout,
                        format!(
                            "the block ran longer than {}s; its sandbox was stopped and replaced",
                            timeout.as_secs_f64()
                        ),
                    ))
                }
            }
            Err(CallError::Crashed(why)) => Err(StepFailure::new(
                ErrorType::WorkerCrashed,
                format!("the block's sandbox failed ({why}); it was replaced"),
            )),
            Err(CallError::OutOfMemory) => {
                let limit = match &self.backend {
                    Backend::Docker { engine, .. } => engine.settings().memory_bytes >> 20,
                    _ => 0,
                };
                Err(StepFailure::new(
                    ErrorType::MemoryLimit,
                    format!("the block used more than the pack's memory limit ({limit} MiB); its container was killed and replaced"),
                ))
            }
            Err(CallError::Strays(n)) => {
                let limit = match &self.backend {
                    Backend::Docker { engine, .. } => engine.settings().pids_limit,
                    _ => 0,
                };
                Err(StepFailure::new(
                    ErrorType::ProcessLimit,
                    format!("the block had {n} processes running when its call ended (a pack may run at most {limit}); its container was killed and replaced"),
                ))
            }
            Err(CallError::TooLarge(n)) => Err(StepFailure::new(
                ErrorType::InvalidResult,
                format!(
                    "the block's reply of {n} bytes is over the limit; its sandbox was replaced"
                ),
            )),
        }
    }

    fn refuse(&self, msg: &ExecuteBlock, failure: &StepFailure) {
        if failure.error_type.is_security() {
            let entry = AuditEntry::block_refused(
                &msg.flow_id,
                &msg.run_id,
                &msg.step_id,
                &msg.phase,
                &self.pack_id,
                failure,
            )
            .details(json!({"file": msg.file}));
            self.audit.push(entry);
        }
    }
}

impl Actor for PackContainer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // Host workers are always warm; a container starts here only when configured to.
        if !matches!(self.backend, Backend::Docker { eager: false, .. }) {
            self.fill_pool(ctx);
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.release_held();
        for job in self.queue.drain(..) {
            let _ = job.reply.send(Err(StepFailure::new(
                ErrorType::WorkerUnavailable,
                "the pack's sandbox was stopped",
            )));
        }
        self.idle.clear();
        Running::Stop
    }
}

impl Handler<ExecuteBlock> for PackContainer {
    type Result = ResponseFuture<Result<BlockOutput, StepFailure>>;

    /// Queues the call (or refuses it with `busy` when the queue is full) and answers when a
    /// worker has run it.
    fn handle(&mut self, msg: ExecuteBlock, ctx: &mut Self::Context) -> Self::Result {
        if self.queue.len() >= self.queue_limit {
            let f = StepFailure::new(
                ErrorType::Busy,
                format!(
                    "pack {:?} has {} calls waiting; retry later",
                    self.pack_id,
                    self.queue.len()
                ),
            );
            return Box::pin(async move { Err(f) });
        }
        let (tx, rx) = oneshot::channel();
        self.queue.push_back(Job { msg, reply: tx });
        self.parked = false;
        self.pump(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(StepFailure::new(
                    ErrorType::WorkerUnavailable,
                    "the pack's sandbox stopped during the call",
                ))
            })
        })
    }
}

impl Handler<Stop> for PackContainer {
    type Result = ();

    /// Kills every worker (idle ones now; busy ones are dropped with their call) and stops.
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        self.idle.clear();
        ctx.stop();
    }
}

impl Handler<StartSandbox> for PackContainer {
    type Result = ResponseFuture<Result<(), StepFailure>>;

    fn handle(&mut self, _: StartSandbox, ctx: &mut Self::Context) -> Self::Result {
        if self.live > 0 {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        self.start_waiters.push(tx);
        self.parked = false;
        self.start_error = None;
        self.fill_pool(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(StepFailure::new(
                    ErrorType::WorkerUnavailable,
                    "the pack's sandbox stopped while starting",
                ))
            })
        })
    }
}

impl Handler<ReleaseSandbox> for PackContainer {
    type Result = ();

    fn handle(&mut self, _: ReleaseSandbox, _: &mut Self::Context) {
        self.parked = true;
        for sandbox in std::mem::take(&mut self.idle) {
            self.live = self.live.saturating_sub(1);
            if sandbox.is_spill() {
                self.spilled = self.spilled.saturating_sub(1);
            }
            if let Sandbox::Container(c) = sandbox {
                c.forget();
            }
        }
    }
}

impl Handler<GetSnapshot> for PackContainer {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(ContainerSnapshot {
            pack_id: self.pack_id.clone(),
            backend: match self.backend {
                Backend::HostWorkers { .. } => "host_worker",
                Backend::Docker { .. } => "docker",
            },
            workers: self.live,
            idle: self.idle.len(),
            queued: self.queue.len(),
            calls: self.calls,
            failures: self.failures,
            timeouts: self.timeouts,
            restarts: self.restarts,
            manifest_rehashes: self.verifier.rehashed,
            spill_workers: self.spilled,
            worker_pids: self.idle.iter().filter_map(Sandbox::pid).collect(),
            container_id: self.idle.iter().find_map(|s| match s {
                Sandbox::Container(c) => Some(c.id().to_string()),
                _ => None,
            }),
        })
    }
}

/// Makes the actor panic, as a bug in a handler would (tests of supervision only).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

#[cfg(test)]
impl Handler<InjectPanic> for PackContainer {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _: &mut Self::Context) {
        panic!("injected panic in the sandbox of {}", self.pack_id);
    }
}
