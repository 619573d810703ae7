//! `FlowRun`: one actor per run; owns the run's context and record (contract §3.6, §3.7).
//!
//! It drives a pure [`RunEngine`]: whatever the engine can do alone happens inline; a block call
//! becomes an [`ExecuteBlock`] to the owner pack's `PackContainer`, a nested flow becomes a child
//! `FlowRun` (inside this run's permit and deadline), and each answer comes back as a continuation
//! on this actor, so no message can interleave with a half-finished step. The run's deadline is a
//! timer on the actor; block calls are given at most the time left, so the worker is stopped at
//! the deadline too. When the run ends the permit is dropped (freeing the slot), the record and
//! its audit entry are written (through the `RunSink`: on this thread when it can, else by the
//! disk thread), and once they are the caller gets the record and the actor stops. Every entry the
//! run itself audits (block calls, refusals, events) goes through the audit queue, which is
//! written before the run's own entry, so all of them are in their files when it is answered.

use crate::audit::{AuditEntry, AuditWriter, Category, Severity};
use crate::clock::SystemClock;
use crate::limiter::Permit;
use crate::pack_container::{BlockOutput, ExecuteBlock};
use crate::registry::SandboxLost;
use crate::run_history::{RunFinished, RunSink, Stored};
use crate::view::{KernelView, PackState};
use actix::prelude::*;
use rumi_domain::engine::{self, Next, RunEngine};
use rumi_domain::run::{ErrorType, RunRecord, RunStatus, StepFailure};
use rumi_domain::{Flow, SourceRank};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// What every run needs from the kernel.
#[derive(Clone)]
pub struct RunDeps {
    pub view: Arc<KernelView>,
    /// What the administrative handlers of official flows change.
    pub admin: Arc<crate::admin::AdminServices>,
    /// Secret values, scrubbed from the record, block audit entries and events of every run.
    pub redactor: Arc<crate::capability::redact::Redactor>,
    pub audit: Addr<AuditWriter>,
    /// The writer's queue: what the run audits (block calls, refusals, events) goes there,
    /// without a message of their own (a wake-up of the disk thread each); the run writes what
    /// the queue holds before its own entry, when it stores its record.
    pub audit_queue: crate::audit::AuditQueue,
    /// Where a finished run's record and audit entry are stored (on the run's thread when it can).
    pub runs: RunSink,
    /// Told when a pack's sandbox does not answer, so it is replaced at once.
    pub sandbox_lost: Recipient<SandboxLost>,
    pub execution_mode: &'static str,
    /// What one run may hold (values and the whole context).
    pub limits: engine::ContextLimits,
    /// `kernel:skill.run` steps start skill runs here.
    pub skills: Arc<crate::skills::SkillRuntime>,
}

/// How a run was started.
pub struct RunRequest {
    pub run_id: String,
    pub flow: Arc<Flow>,
    pub inputs: Map<String, Value>,
    pub trigger: &'static str,
    pub deadline: Instant,
    /// The permit of a top-level run; `None` for nested runs (they use their parent's).
    pub permit: Option<Permit>,
    /// Flow ids from the root run to the parent (empty for a top-level run).
    pub chain: Vec<String>,
    /// Every run from the root to the parent is an official flow, called from an official step:
    /// only then may this run's administrative steps act (a pack flow calling an official flow
    /// with `kernel:flow.run` must not grant through it).
    pub official_chain: bool,
    /// What the whole tree of runs (the top-level run and every nested one) has used.
    pub tree: Arc<RunTree>,
    pub span: tracing::Span,
}

/// How long a finished run waits for its record and audit entry to be written.
const STORE_DEADLINE: Duration = Duration::from_secs(10);

/// Nested runs one top-level run may start, all levels together.
pub const MAX_NESTED_RUNS: usize = 100;

/// Largest event payload written into the audit as it is (bytes, as JSON); a larger one is
/// recorded by its size only, so no audit line grows past what the reader reads back.
pub const MAX_EVENT_AUDIT_BYTES: usize = 64 * 1024;

/// What a top-level run and all its nested runs share. Each run's engine bounds its own context
/// and events; without a shared count, a flow calling `kernel:flow.run` a thousand times gets a
/// thousand budgets (gigabytes of events into the audit, a thousand records pushing every other
/// run out of the history).
///
/// The tree also keeps the flow table of the catalog its top-level run started with: a nested
/// flow is found there, so a reload while the tree runs changes nothing for any run of it.
#[derive(Debug, Default)]
pub struct RunTree {
    nested_runs: std::sync::atomic::AtomicUsize,
    event_bytes: std::sync::atomic::AtomicUsize,
    flows: Arc<rumi_domain::sources::FlowTable>,
}

impl RunTree {
    /// The tree of a top-level run started with `flows`.
    pub fn new(flows: Arc<rumi_domain::sources::FlowTable>) -> Self {
        RunTree {
            flows,
            ..Default::default()
        }
    }
}

// ---- messages ---------------------------------------------------------------------------------

/// Begins the run.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Start;

// ---- actor ------------------------------------------------------------------------------------

/// One run (see the module docs).
pub struct FlowRun {
    run_id: String,
    engine: RunEngine,
    deps: RunDeps,
    clock: SystemClock,
    trigger: &'static str,
    deadline: Instant,
    permit: Option<Permit>,
    chain: Vec<String>,
    official_chain: bool,
    tree: Arc<RunTree>,
    inputs: Arc<Value>,
    inputs_digest: String,
    started_wall: String,
    started: Instant,
    reply: Option<oneshot::Sender<RunRecord>>,
    span: tracing::Span,
}

impl FlowRun {
    /// Starts a run on the current arbiter; the receiver gets the record when it ends.
    pub fn launch(req: RunRequest, deps: RunDeps) -> oneshot::Receiver<RunRecord> {
        let (tx, rx) = oneshot::channel();
        let inputs_value = Value::Object(req.inputs.clone());
        let digest = rumi_domain::manifest::sha256_hex(
            &serde_json::to_vec(&inputs_value).unwrap_or_default(),
        );
        let span = tracing::info_span!(parent: &req.span, "flow_run", run_id = %req.run_id, flow_id = %req.flow.flow_id);
        let mut chain = req.chain;
        chain.push(req.flow.flow_id.clone());
        let run = FlowRun {
            run_id: req.run_id,
            engine: RunEngine::new(req.flow, req.inputs).with_limits(deps.limits),
            deps,
            clock: SystemClock::default(),
            trigger: req.trigger,
            deadline: req.deadline,
            permit: req.permit,
            chain,
            official_chain: req.official_chain,
            tree: req.tree,
            inputs: Arc::new(inputs_value),
            inputs_digest: digest,
            started_wall: crate::clock::now_rfc3339(),
            started: Instant::now(),
            reply: Some(tx),
            span,
        };
        let addr = run.start();
        addr.do_send(Start);
        rx
    }

    fn flow_id(&self) -> &str {
        &self.engine.flow().flow_id
    }

    /// Advances the engine until it needs outside work (sent, with a continuation) or the run ends.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        let _e = self.span.clone().entered();
        loop {
            match self.engine.advance(&self.clock) {
                Next::Done(_) => return self.finish(ctx),
                Next::Pause => {
                    if Instant::now() >= self.deadline {
                        self.engine.time_out(&self.clock);
                        return self.finish(ctx);
                    }
                    // Yield the thread to other runs and requests, then go on.
                    ctx.spawn(
                        tokio::task::yield_now()
                            .into_actor(self)
                            .map(|(), act, ctx| {
                                if !act.finished() {
                                    act.drive(ctx);
                                }
                            }),
                    );
                    return;
                }
                Next::Block(call) => {
                    let remaining = self.deadline.saturating_duration_since(Instant::now());
                    let step_limit = Duration::from_secs(u64::from(call.timeout_seconds));
                    if remaining.is_zero() {
                        // No time left: fail the step without touching (and so killing) a worker.
                        let f = StepFailure::new(
                            ErrorType::RunTimeout,
                            "the run's deadline passed before the step could start",
                        );
                        self.engine.fail_pending(f, &self.clock);
                        continue;
                    }
                    let (timeout, bound) = if remaining < step_limit {
                        (remaining, true)
                    } else {
                        (step_limit, false)
                    };
                    if let Some(claimed) = &call.principal_override {
                        self.deps.audit_queue.push(
                            AuditEntry::new(Category::Security, "principal_id_overridden", true)
                                .run(self.flow_id(), &self.run_id)
                                .step(&call.step_id, &call.phase)
                                .pack(&call.owner_pack)
                                .details(json!({"principal_id_in_flow": claimed, "principal_used": call.owner_pack})),
                        );
                    }
                    let Some(container) = self.deps.view.container(&call.owner_pack) else {
                        let state = self.deps.view.pack_state(&call.owner_pack);
                        let failure = not_approved(&call.owner_pack, state);
                        self.deps.audit_queue.push(AuditEntry::block_refused(
                            self.flow_id(),
                            &self.run_id,
                            &call.step_id,
                            &call.phase,
                            &call.owner_pack,
                            &failure,
                        ));
                        self.engine.fail_pending(failure, &self.clock);
                        continue;
                    };
                    let step_span = tracing::info_span!("step", step_id = %call.step_id, pack_id = %call.owner_pack);
                    let msg = ExecuteBlock {
                        run_id: self.run_id.clone(),
                        flow_id: self.flow_id().to_string(),
                        step_id: call.step_id.clone(),
                        phase: call.phase.clone(),
                        file: call.file.clone(),
                        input: call.input,
                        inputs: Arc::clone(&self.inputs),
                        timeout,
                        run_deadline_bound: bound,
                        span: step_span.clone(),
                        entry: Default::default(),
                    };
                    let (step_id, phase, pack) = (call.step_id, call.phase, call.owner_pack);
                    ctx.spawn(
                        container
                            .send(msg)
                            .instrument(step_span)
                            .into_actor(self)
                            .map(move |answer, act, ctx| {
                                if act.finished() {
                                    // The deadline ended the run while the block ran; its
                                    // record is being stored. The late answer changes nothing.
                                    return;
                                }
                                let answer = answer.unwrap_or_else(|_| {
                                    Err(act.sandbox_gone(&step_id, &phase, &pack, true))
                                });
                                act.audit_block(&step_id, &phase, &pack, &answer);
                                match answer {
                                    Ok(BlockOutput { result, log }) => act.engine.complete_block(
                                        Ok(result),
                                        Some(log).filter(|l| !l.is_empty()),
                                        &act.clock,
                                    ),
                                    Err(f) => act.engine.complete_block(Err(f), None, &act.clock),
                                }
                                act.drive(ctx);
                            }),
                    );
                    return;
                }
                Next::Admin(call) => {
                    if !self.may_administer(&call.step_id) {
                        let name = rumi_domain::handler::KernelHandler::Admin(call.handler).name();
                        let message = match &self.engine.flow().modified_by {
                            Some(m) => format!(
                                "{name}: administrative handlers act only in official flows no \
                                 modifier changed; modifier {m:?} changed this one — remove the \
                                 modifier (or its target) to give the flow its rights back"
                            ),
                            None => format!(
                                "{name}: administrative handlers act only in official flows started \
                                 by the operator, never in a flow a pack or shared flow called"
                            ),
                        };
                        let f = StepFailure::new(ErrorType::HandlerError, message);
                        self.engine.fail_pending(f, &self.clock);
                        continue;
                    }
                    let admin = Arc::clone(&self.deps.admin);
                    let work = async move { admin.execute(call).await };
                    ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
                        if act.finished() {
                            return; // as for a late block answer
                        }
                        act.engine.complete_block(result, None, &act.clock);
                        act.drive(ctx);
                    }));
                    return;
                }
                Next::Vocab(call) => {
                    use crate::vocab_call::{self, RunInfo, VocabWork};
                    let phase = self
                        .engine
                        .flow()
                        .steps
                        .iter()
                        .find(|s| s.id == call.step_id)
                        .map(|s| s.phase.clone())
                        .unwrap_or_default();
                    let step_id = call.step_id.clone();
                    let info = RunInfo {
                        run_id: &self.run_id,
                        flow_id: &self.engine.flow().flow_id,
                        phase: &phase,
                        remaining: self.deadline.saturating_duration_since(Instant::now()),
                        span: tracing::info_span!("step", step_id = %call.step_id),
                    };
                    match vocab_call::start(&self.deps.view, call, info) {
                        VocabWork::Done(result) => {
                            self.engine.complete_block(result, None, &self.clock);
                            continue;
                        }
                        VocabWork::Convert {
                            pack_id,
                            container,
                            msg,
                        } => {
                            ctx.spawn(container.send(*msg).into_actor(self).map(
                                move |answer, act, ctx| {
                                    if act.finished() {
                                        return; // as for a late block answer
                                    }
                                    let answer = answer.unwrap_or_else(|_| {
                                        Err(act.sandbox_gone(&step_id, &phase, &pack_id, false))
                                    });
                                    act.audit_block(&step_id, &phase, &pack_id, &answer);
                                    let (result, log) = vocab_call::converted(answer);
                                    act.engine.complete_block(result, log, &act.clock);
                                    act.drive(ctx);
                                },
                            ));
                            return;
                        }
                    }
                }
                Next::Skill(call) => {
                    // The skill run happens inside this run's limiter slot (the flow holds its
                    // permit throughout) and within its deadline: the time budget is capped by
                    // what the flow has left.
                    let skills = Arc::clone(&self.deps.skills);
                    let left = self.deadline.saturating_duration_since(Instant::now());
                    let work = async move {
                        let started = tokio::task::spawn_blocking(move || {
                            skills.start(&call.args, Some(left))
                        })
                        .await
                        .map_err(|_| {
                            StepFailure::new(
                                ErrorType::HandlerError,
                                "kernel:skill.run: the run could not start",
                            )
                        })?;
                        let started = started.map_err(|e| {
                            StepFailure::new(
                                ErrorType::HandlerError,
                                format!("kernel:skill.run: {e}"),
                            )
                        })?;
                        let result = started.result.await.map_err(|_| {
                            StepFailure::new(
                                ErrorType::HandlerError,
                                "kernel:skill.run: the run ended without a result",
                            )
                        })?;
                        serde_json::to_value(result).map_err(|e| {
                            StepFailure::new(
                                ErrorType::HandlerError,
                                format!("kernel:skill.run: {e}"),
                            )
                        })
                    };
                    ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
                        if act.finished() {
                            return; // as for a late block answer
                        }
                        act.engine.complete_block(result, None, &act.clock);
                        act.drive(ctx);
                    }));
                    return;
                }
                Next::Child(call) => {
                    if let Err(f) = engine::check_nesting(&self.chain, &call.flow_id) {
                        self.engine.fail_pending(f, &self.clock);
                        continue;
                    }
                    let started = self
                        .tree
                        .nested_runs
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if started >= MAX_NESTED_RUNS {
                        let f = StepFailure::new(
                            ErrorType::RecursionRefused,
                            format!(
                                "kernel:flow.run: a run may start at most {MAX_NESTED_RUNS} nested runs in all"
                            ),
                        );
                        self.engine.fail_pending(f, &self.clock);
                        continue;
                    }
                    let Some(flow) = self.tree.flows.flows.get(&call.flow_id).cloned() else {
                        let f = StepFailure::new(
                            ErrorType::FlowNotFound,
                            // Only that it is not loaded: why a file failed to load (its path,
                            // values quoted from it) is the operator's to read in diagnostics,
                            // never a pack flow's to read from its context.
                            format!(
                                "kernel:flow.run: {}",
                                crate::kernel::RunError::FlowNotFound(call.flow_id.clone())
                            ),
                        );
                        self.engine.fail_pending(f, &self.clock);
                        continue;
                    };
                    let child = RunRequest {
                        run_id: new_run_id(),
                        flow,
                        inputs: call.inputs,
                        trigger: "flow",
                        deadline: self.deadline,
                        permit: None,
                        chain: self.chain.clone(),
                        official_chain: self.may_administer(&call.step_id),
                        tree: Arc::clone(&self.tree),
                        span: self.span.clone(),
                    };
                    let rx = FlowRun::launch(child, self.deps.clone());
                    ctx.spawn(rx.into_actor(self).map(|record, act, ctx| {
                        if act.finished() {
                            return; // as for a late block answer
                        }
                        match record {
                            Ok(r) => act
                                .engine
                                .complete_child(r.status, r.result, r.reason, &act.clock),
                            Err(_) => act.engine.fail_pending(
                                StepFailure::new(
                                    ErrorType::HandlerError,
                                    "the nested run stopped without a result",
                                ),
                                &act.clock,
                            ),
                        }
                        act.drive(ctx);
                    }));
                    return;
                }
            }
        }
    }

    /// Whether `step_id` of this run may act administratively (or pass that right to a nested
    /// run): every caller up to the root was official, and so are this flow and the step, and no
    /// modifier changed the flow (a step injected around an administrative one, or a removal,
    /// could steer it).
    fn may_administer(&self, step_id: &str) -> bool {
        let flow = self.engine.flow();
        self.official_chain
            && flow.origin.rank == SourceRank::Official
            && flow.modified_by.is_none()
            && flow
                .steps
                .iter()
                .find(|s| s.id == step_id)
                .is_some_and(|s| s.origin == SourceRank::Official)
    }

    /// Whether the run has ended (its record is being stored or the caller has been answered):
    /// continuations that arrive after the deadline ended the run must not touch the engine.
    fn finished(&self) -> bool {
        self.reply.is_none()
    }

    fn audit_block(
        &self,
        step_id: &str,
        phase: &str,
        pack: &str,
        answer: &Result<BlockOutput, StepFailure>,
    ) {
        let mut e = AuditEntry::new(Category::PythonFileCall, "block_call", answer.is_ok())
            .run(self.flow_id(), &self.run_id)
            .step(step_id, phase)
            .pack(pack)
            .mode(self.deps.execution_mode);
        if let Err(f) = answer {
            let mut error = f.error.clone();
            self.deps.redactor.scrub(&mut error);
            e = e.error(&error, Some(f.error_type.as_str()));
        }
        self.deps.audit_queue.push(e);
    }

    /// Releases the permit, stores the record and its audit entry, then answers the caller and
    /// stops.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        let max_events = self.deps.limits.max_context_bytes;
        for ev in self.engine.take_events() {
            let size = rumi_domain::vars::json_size(&ev.payload, max_events);
            let used = self
                .tree
                .event_bytes
                .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
            // The whole tree's events share one context's worth of audit; past it, and for any
            // single payload too large to read back, only the size is recorded.
            let mut payload = if used + size > max_events || size > MAX_EVENT_AUDIT_BYTES {
                json!({"_omitted": true, "bytes": size})
            } else {
                ev.payload
            };
            self.deps.redactor.scrub_value(&mut payload);
            self.deps.audit_queue.push(
                AuditEntry::new(Category::System, "flow_event", true)
                    .run(self.flow_id(), &self.run_id)
                    .details(json!({"step_id": ev.step_id, "event": ev.event, "payload": payload})),
            );
        }
        let outcome = self
            .engine
            .outcome()
            .cloned()
            .expect("finish is called once the engine is done");
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0;
        let mut http = self.engine.take_http();
        let (mut steps, mut result) = self.engine.take_record_parts();
        // A block that received a secret must not get it into the record by returning, raising
        // or printing it (invariant 5), nor into a route's response headers.
        let redactor = &self.deps.redactor;
        redactor.scrub_value(&mut result);
        if let Some(h) = &mut http {
            redactor.scrub_value(h);
        }
        for step in &mut steps {
            redactor.scrub_opt(&mut step.error);
            redactor.scrub_opt(&mut step.log);
        }
        let mut reason = outcome.reason.clone();
        redactor.scrub_opt(&mut reason);
        let record = RunRecord {
            run_id: self.run_id.clone(),
            flow_id: self.flow_id().to_string(),
            trigger: self.trigger.to_string(),
            inputs_digest: self.inputs_digest.clone(),
            started: self.started_wall.clone(),
            ended: Some(crate::clock::now_rfc3339()),
            status: outcome.status,
            reason,
            failed_step: outcome.failed_step.clone(),
            steps,
            result,
            execution_time_ms: (elapsed * 1000.0).round() / 1000.0,
            execution_mode: self.deps.execution_mode.to_string(),
            http,
        };
        let ok = record.status == RunStatus::Succeeded;
        let mut entry = AuditEntry::new(Category::FlowExecution, "flow_run", ok)
            .run(&record.flow_id, &record.run_id)
            .mode(self.deps.execution_mode)
            .details(json!({"status": record.status, "trigger": record.trigger, "steps": record.steps.len(), "execution_time_ms": record.execution_time_ms}));
        if let Some(reason) = &record.reason {
            entry = entry.error(reason, None);
            if record.status == RunStatus::Failed {
                entry = entry.severity(Severity::Error);
            }
        }
        // The slot is free now: serialising and waiting for the disk below must not hold back
        // queued runs.
        self.permit.take();
        let finished = match RunFinished::new(&record, entry) {
            Ok(finished) => finished,
            Err(e) => {
                tracing::error!(run_id = %self.run_id, error = %e, "a finished run was not stored");
                ctx.stop();
                return;
            }
        };
        // Acknowledged means stored: the caller hears of the run only once its record and audit
        // entry are written, so a kernel crash after the answer cannot lose them (invariant 9).
        // Written here, on this thread, when the store's locks are free and the disk is quick;
        // the disk thread fsyncs in groups on its own interval.
        let finished = match self.deps.runs.store_here(finished) {
            Stored::Here(stored) => {
                match stored {
                    Ok(()) => {
                        let _ = reply.send(record);
                    }
                    Err(e) => {
                        tracing::error!(run_id = %self.run_id, error = %e, "a finished run was not stored")
                    }
                }
                ctx.stop();
                return;
            }
            Stored::ToDiskThread(finished) => *finished,
        };
        ctx.spawn(
            self.deps
                .runs
                .history()
                .send(finished)
                // A disk that hangs must not hold the caller for ever: past this the run is
                // answered as not stored (500), never as acknowledged.
                .timeout(STORE_DEADLINE)
                .into_actor(self)
                .map(move |stored, act, ctx| {
                    match stored {
                        Ok(Ok(())) => {
                            let _ = reply.send(record);
                        }
                        // Not stored, so not acknowledged: the caller gets an error (500), never
                        // a run that a restart would not know.
                        Ok(Err(e)) => {
                            tracing::error!(run_id = %act.run_id, error = %e, "a finished run was not stored")
                        }
                        Err(e) => tracing::error!(
                            run_id = %act.run_id,
                            "a finished run was not stored: the run history did not answer ({e})"
                        ),
                    }
                    ctx.stop();
                }),
        );
    }
}

impl Actor for FlowRun {
    type Context = Context<Self>;
}

impl Drop for FlowRun {
    /// A run dropped before it answered: its caller gets 500 ("not stored"); say why here.
    fn drop(&mut self) {
        if self.reply.is_some() {
            tracing::error!(run_id = %self.run_id, "a run stopped before it ended (its actor was dropped); it is answered as not stored");
        }
    }
}

impl Handler<Start> for FlowRun {
    type Result = ();

    /// Arms the deadline timer and runs the first steps.
    fn handle(&mut self, _: Start, ctx: &mut Self::Context) {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        // A small grace lets a block bounded by the deadline report its own run_timeout first.
        ctx.run_later(remaining + Duration::from_millis(200), |act, ctx| {
            act.engine.time_out(&act.clock);
            act.finish(ctx);
        });
        self.drive(ctx);
    }
}

/// A fresh run id: 32 hex characters, a millisecond timestamp then 80 random bits. The random
/// bits come from a per-thread generator seeded once from the OS (ids must be unique and
/// unguessable enough not to collide, not secret: reading a run needs the API token), so making
/// an id costs no system call.
pub fn new_run_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u128> = Cell::new({
            let mut seed = [0u8; 16];
            let _ = getrandom::getrandom(&mut seed);
            u128::from_le_bytes(seed) | 1
        });
    }
    // xorshift128+ style step on a u128 state; good spread, no syscall.
    let r = STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 23;
        x ^= x >> 17;
        x ^= x << 26;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15)
    });
    let ms = chrono::Utc::now().timestamp_millis() as u64;
    format!("{:012x}{:020x}", ms & 0xffff_ffff_ffff, r >> 48)
}

impl FlowRun {
    /// A call's sandbox stopped before it took the call. The Registry publishes a decision's
    /// state before it stops the sandbox, so a pack no longer approved (modified, rejected,
    /// uninstalled) is refused for that reason, audited as the refusal it is (as when the sandbox
    /// is already gone from the view); an approved pack's sandbox is being replaced (`report`
    /// tells the Registry, for block calls).
    fn sandbox_gone(&self, step_id: &str, phase: &str, pack: &str, report: bool) -> StepFailure {
        match self.deps.view.pack_state(pack) {
            Some(PackState::Approved) => {
                if report {
                    self.deps.sandbox_lost.do_send(SandboxLost {
                        pack_id: pack.to_string(),
                    });
                }
                StepFailure::new(
                    ErrorType::WorkerUnavailable,
                    format!("the sandbox of pack {pack:?} is not running; it is being replaced"),
                )
            }
            state => {
                let failure = not_approved(pack, state);
                self.deps.audit_queue.push(AuditEntry::block_refused(
                    self.flow_id(),
                    &self.run_id,
                    step_id,
                    phase,
                    pack,
                    &failure,
                ));
                failure
            }
        }
    }
}

fn not_approved(pack: &str, state: Option<PackState>) -> StepFailure {
    match state {
        None => StepFailure::new(
            ErrorType::ApprovalRejected,
            format!("pack {pack:?} is not installed"),
        ),
        // Approved, without a sandbox: the kernel is starting (its sandboxes wait for the HTTP
        // worker that hosts them) or the pack's sandbox is being replaced.
        Some(PackState::Approved) => StepFailure::new(
            ErrorType::WorkerUnavailable,
            format!("the sandbox of pack {pack:?} is starting; retry in a moment"),
        ),
        Some(PackState::Modified) => StepFailure::new(
            ErrorType::HashVerificationFailed,
            format!("pack {pack:?} changed since it was approved; approve it again"),
        ),
        Some(s) => StepFailure::new(
            ErrorType::ApprovalRejected,
            format!("pack {pack:?} is {}, not approved", s.as_str()),
        ),
    }
}
