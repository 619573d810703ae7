//! The run engine: steps through one flow run, purely.
//!
//! The engine executes everything it can by itself (`set`, `if`, the context handlers, `when`
//! conditions, failure policy, `__flow_control`) and stops at work that needs the outside world,
//! returning it as a [`Next`]: run a block, or run a nested flow. The `FlowRun` actor performs that
//! work and reports back with [`RunEngine::complete_block`] / [`RunEngine::complete_child`]. Keeping
//! this pure means every rule of contract §3.4–3.6 is unit-tested without actors, processes or
//! clocks.

use crate::flow::{Flow, OnError, Step, StepKind};
use crate::handler::{AdminHandler, KernelHandler};
use crate::run::{ErrorType, RunStatus, StepFailure, StepRecord, StepStatus};
use crate::vars;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Deepest nesting of `kernel:flow.run`.
pub const MAX_FLOW_DEPTH: usize = 8;

/// How much one run may hold. Every value stored in the context and every resolved step input
/// counts against `max_value_bytes`; the whole context against `max_context_bytes` (sizes as
/// compact JSON). A step that would pass either fails with `context_limit` and stores nothing,
/// so a flow cannot grow the kernel's memory without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextLimits {
    pub max_value_bytes: usize,
    pub max_context_bytes: usize,
}

impl Default for ContextLimits {
    /// The kernel's defaults: `RUMI_MAX_RESPONSE_BYTES` (4 MiB) per value, twice that in all.
    fn default() -> Self {
        ContextLimits {
            max_value_bytes: 4 << 20,
            max_context_bytes: 8 << 20,
        }
    }
}

/// Time as the engine needs it; injected so tests control it.
pub trait Clock {
    /// Wall-clock time, RFC 3339 UTC.
    fn wall(&self) -> String;
    /// A monotonic reading in milliseconds.
    fn monotonic_ms(&self) -> f64;
}

/// A block call the engine needs performed.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockCall {
    pub step_id: String,
    pub phase: String,
    pub owner_pack: String,
    pub file: String,
    pub input: Value,
    pub timeout_seconds: u32,
    pub principal_override: Option<String>,
}

/// A nested flow run the engine needs performed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildCall {
    pub step_id: String,
    pub flow_id: String,
    pub inputs: Map<String, Value>,
}

/// An administrative handler call (official flows only; the loader refuses it anywhere else)
/// the engine needs the kernel to perform: a grant or a revocation.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminCall {
    pub step_id: String,
    pub handler: crate::handler::AdminHandler,
    pub args: Map<String, Value>,
}

/// A vocabulary handler (`kernel:vocab.normalize`, `kernel:vocab.convert`) the engine needs the
/// kernel to perform: it reads the published vocabulary, and a conversion runs pack code.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabCall {
    pub step_id: String,
    pub handler: KernelHandler,
    pub args: Value,
}

/// A `kernel:skill.run` step the engine needs the kernel to perform: a whole skill run (its
/// ActResult is the step's output).
#[derive(Debug, Clone, PartialEq)]
pub struct SkillCall {
    pub step_id: String,
    pub args: Value,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: RunStatus,
    pub reason: Option<String>,
    pub failed_step: Option<String>,
}

/// What the engine needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Block(BlockCall),
    Child(ChildCall),
    /// An administrative handler; its result comes back through [`RunEngine::complete_block`].
    Admin(AdminCall),
    /// A vocabulary handler; its result comes back through [`RunEngine::complete_block`].
    Vocab(VocabCall),
    /// A skill run; its ActResult comes back through [`RunEngine::complete_block`].
    Skill(SkillCall),
    /// [`SYNC_STEPS_PER_SLICE`] steps ran without outside work: the caller checks its deadline and
    /// lets other work run, then calls [`RunEngine::advance`] again.
    Pause,
    Done(Outcome),
}

/// Steps the engine runs by itself before it hands control back ([`Next::Pause`]): a flow of a
/// thousand `set` steps over large values must neither outlive its deadline nor hold the thread
/// that also serves other runs.
pub const SYNC_STEPS_PER_SLICE: usize = 64;

/// An event emitted with `kernel:emit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub step_id: String,
    pub event: String,
    pub payload: Value,
}

/// The state of one run.
pub struct RunEngine {
    flow: Arc<Flow>,
    ctx: Map<String, Value>,
    cursor: usize,
    records: Vec<StepRecord>,
    outcome: Option<Outcome>,
    /// The step waiting for outside work: (index, started wall time, monotonic start).
    pending: Option<(usize, String, f64)>,
    events: Vec<Emitted>,
    limits: ContextLimits,
    /// The context's size as JSON, kept up to date by [`RunEngine::store`].
    ctx_bytes: usize,
    /// What the emitted events hold, counted against the same limit as the context.
    events_bytes: usize,
}

impl RunEngine {
    /// Starts a run with `inputs` as the initial context.
    pub fn new(flow: Arc<Flow>, inputs: Map<String, Value>) -> Self {
        let ctx_bytes = vars::json_size(&Value::Object(Map::new()), usize::MAX)
            + inputs
                .iter()
                .map(|(k, v)| entry_size(k, v, usize::MAX))
                .sum::<usize>();
        RunEngine {
            flow,
            ctx: inputs,
            cursor: 0,
            records: Vec::new(),
            outcome: None,
            pending: None,
            events: Vec::new(),
            limits: ContextLimits::default(),
            ctx_bytes,
            events_bytes: 0,
        }
    }

    /// Sets the run's size limits (the defaults are the kernel's defaults).
    pub fn with_limits(mut self, limits: ContextLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The context's current size as JSON (bytes).
    pub fn context_bytes(&self) -> usize {
        self.ctx_bytes
    }

    /// Resolves a step's template within the value limit.
    fn resolve(&self, template: &Value, what: &str) -> Result<Value, StepFailure> {
        vars::resolve_capped(template, &self.ctx, self.limits.max_value_bytes).map_err(|e| {
            let why = match e {
                vars::TooLarge::Bytes { limit } => format!(
                    "larger than {limit} bytes (the limit of one value, RUMI_MAX_RESPONSE_BYTES)"
                ),
                vars::TooLarge::Depth => {
                    format!("nested deeper than {} levels", vars::MAX_VALUE_DEPTH)
                }
            };
            StepFailure::new(
                ErrorType::ContextLimit,
                format!(
                    "resolving {what} would make a value {why}; keep large data out of the \
                     flow's context"
                ),
            )
        })
    }

    /// Stores `value` under `key`, unless it would pass the value or the context limit; the only
    /// way anything enters the context after the inputs.
    fn store(&mut self, key: &str, value: Value) -> Result<(), StepFailure> {
        let limits = self.limits;
        let measured = vars::measure(&value, limits.max_value_bytes);
        if measured.depth > vars::MAX_VALUE_DEPTH {
            return Err(StepFailure::new(
                ErrorType::ContextLimit,
                format!(
                    "the value for {key:?} is nested deeper than {} levels; flatten it",
                    vars::MAX_VALUE_DEPTH
                ),
            ));
        }
        let new = key.len() + 4 + measured.bytes;
        if measured.bytes > limits.max_value_bytes {
            return Err(StepFailure::new(
                ErrorType::ContextLimit,
                format!(
                    "the value for {key:?} is larger than {} bytes (the limit of one value, \
                     RUMI_MAX_RESPONSE_BYTES); keep large data out of the flow's context",
                    limits.max_value_bytes
                ),
            ));
        }
        let old = self
            .ctx
            .get(key)
            .map_or(0, |v| entry_size(key, v, usize::MAX));
        let total = self.ctx_bytes - old.min(self.ctx_bytes) + new + self.events_bytes;
        if total > limits.max_context_bytes {
            return Err(StepFailure::new(
                ErrorType::ContextLimit,
                format!(
                    "storing {key:?} would grow the run's context past {} bytes \
                     (RUMI_MAX_CONTEXT_BYTES); keep large data out of the flow's context",
                    limits.max_context_bytes
                ),
            ));
        }
        self.ctx.insert(key.to_string(), value);
        self.ctx_bytes = total - self.events_bytes;
        Ok(())
    }

    pub fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// The step records so far.
    pub fn records(&self) -> &[StepRecord] {
        &self.records
    }

    /// Events emitted so far (drained by the caller).
    pub fn take_events(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.events)
    }

    /// The result: the context without keys starting with `_`.
    pub fn result(&self) -> Value {
        Value::Object(
            self.ctx
                .iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Takes `ctx._http` out of a finished run (a pack route's status and headers, contract
    /// §11); call it before [`Self::take_record_parts`].
    pub fn take_http(&mut self) -> Option<Value> {
        self.ctx.remove("_http")
    }

    /// Moves the step records and the result (the context without `_` keys) out of a finished
    /// run, without copying them; the engine is empty afterwards.
    pub fn take_record_parts(&mut self) -> (Vec<StepRecord>, Value) {
        let ctx = std::mem::take(&mut self.ctx);
        let result = Value::Object(
            ctx.into_iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .collect(),
        );
        (std::mem::take(&mut self.records), result)
    }

    /// Runs steps until outside work is needed or the run ends.
    pub fn advance(&mut self, clock: &dyn Clock) -> Next {
        if let Some(outcome) = &self.outcome {
            return Next::Done(outcome.clone());
        }
        assert!(
            self.pending.is_none(),
            "advance called while a step is pending"
        );
        let mut ran = 0usize;
        while self.cursor < self.flow.steps.len() {
            if ran == SYNC_STEPS_PER_SLICE {
                return Next::Pause;
            }
            ran += 1;
            let index = self.cursor;
            self.cursor += 1;
            let flow = Arc::clone(&self.flow);
            let step = &flow.steps[index];
            let started = clock.wall();
            let t0 = clock.monotonic_ms();
            if let Some(cond) = &step.when {
                if !cond.eval(&self.ctx) {
                    self.record(step, StepStatus::Skipped, started, 0.0, None, None);
                    continue;
                }
            }
            let result: Result<Value, StepFailure> = match &step.kind {
                StepKind::Block {
                    owner_pack,
                    file,
                    input,
                    principal_override,
                } => match self.resolve(input, "the block's input") {
                    Ok(input) => {
                        self.pending = Some((index, started, t0));
                        return Next::Block(BlockCall {
                            step_id: step.id.clone(),
                            phase: step.phase.clone(),
                            owner_pack: owner_pack.clone(),
                            file: file.clone(),
                            input,
                            timeout_seconds: step.timeout_seconds,
                            principal_override: principal_override.clone(),
                        });
                    }
                    Err(failure) => Err(failure),
                },
                StepKind::Set { key, value } => {
                    let key = key
                        .as_ref()
                        .or(step.output.as_ref())
                        .expect("validated: set has key or output");
                    let stored = self
                        .resolve(value, "the value")
                        .and_then(|value| self.store(key, value));
                    match stored {
                        Ok(()) => {
                            self.record(
                                step,
                                StepStatus::Succeeded,
                                started,
                                clock.monotonic_ms() - t0,
                                None,
                                None,
                            );
                            continue;
                        }
                        Err(failure) => Err(failure),
                    }
                }
                StepKind::If { condition } => Ok(Value::Bool(condition.eval(&self.ctx))),
                StepKind::Handler { handler, args } => {
                    match self.resolve(args, "the handler's args") {
                        Ok(args) => match self.run_handler(step, *handler, args) {
                            HandlerResult::Done(r) => r,
                            HandlerResult::Child(call) => {
                                self.pending = Some((index, started, t0));
                                return Next::Child(call);
                            }
                            HandlerResult::Admin(call) => {
                                self.pending = Some((index, started, t0));
                                return Next::Admin(call);
                            }
                            HandlerResult::Vocab(call) => {
                                self.pending = Some((index, started, t0));
                                return Next::Vocab(call);
                            }
                            HandlerResult::Skill(call) => {
                                self.pending = Some((index, started, t0));
                                return Next::Skill(call);
                            }
                        },
                        Err(failure) => Err(failure),
                    }
                }
            };
            let elapsed = clock.monotonic_ms() - t0;
            self.finish_step(index, result, started, elapsed, None);
            if let Some(outcome) = &self.outcome {
                return Next::Done(outcome.clone());
            }
        }
        let outcome = Outcome {
            status: RunStatus::Succeeded,
            reason: None,
            failed_step: None,
        };
        self.outcome = Some(outcome.clone());
        Next::Done(outcome)
    }

    /// Reports the result of the pending block call. `log` is what the block printed.
    pub fn complete_block(
        &mut self,
        result: Result<Value, StepFailure>,
        log: Option<String>,
        clock: &dyn Clock,
    ) {
        let (index, started, t0) = self
            .pending
            .take()
            .expect("complete_block without a pending block");
        let log = match &result {
            Err(f) if log.is_none() => f.log.clone(),
            _ => log,
        };
        self.finish_step(index, result, started, clock.monotonic_ms() - t0, log);
    }

    /// Fails the pending step (block or nested flow) with `failure`, e.g. when the work could not
    /// even be started.
    pub fn fail_pending(&mut self, failure: StepFailure, clock: &dyn Clock) {
        let (index, started, t0) = self
            .pending
            .take()
            .expect("fail_pending without a pending step");
        self.finish_step(
            index,
            Err(failure),
            started,
            clock.monotonic_ms() - t0,
            None,
        );
    }

    /// Reports the outcome of the pending nested flow: its status and result.
    pub fn complete_child(
        &mut self,
        status: RunStatus,
        result: Value,
        reason: Option<String>,
        clock: &dyn Clock,
    ) {
        let (index, started, t0) = self
            .pending
            .take()
            .expect("complete_child without a pending child");
        let flow_id = match &self.flow.steps[index].kind {
            StepKind::Handler { args, .. } => args
                .get("flow_id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            _ => "?".into(),
        };
        let r = match status {
            RunStatus::Succeeded | RunStatus::Aborted => Ok(result),
            RunStatus::TimedOut => Err(StepFailure::new(
                ErrorType::RunTimeout,
                format!("nested flow {flow_id:?} ran past the run's deadline"),
            )),
            other => Err(StepFailure::new(
                ErrorType::HandlerError,
                format!(
                    "nested flow {flow_id:?} {}{}",
                    other.as_str(),
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                ),
            )),
        };
        self.finish_step(index, r, started, clock.monotonic_ms() - t0, None);
    }

    /// The run's deadline passed: the run ends `timed_out` (the pending step, if any, failed).
    pub fn time_out(&mut self, clock: &dyn Clock) {
        if self.outcome.is_some() {
            return;
        }
        if let Some((index, started, t0)) = self.pending.take() {
            let step = Arc::clone(&self.flow);
            let step = &step.steps[index];
            self.record(
                step,
                StepStatus::Failed,
                started,
                clock.monotonic_ms() - t0,
                Some(StepFailure::new(
                    ErrorType::RunTimeout,
                    "the run's deadline passed",
                )),
                None,
            );
        }
        self.outcome = Some(Outcome {
            status: RunStatus::TimedOut,
            reason: Some("the run's deadline passed".into()),
            failed_step: self
                .records
                .last()
                .filter(|r| r.status == StepStatus::Failed)
                .map(|r| r.id.clone()),
        });
    }

    /// The final outcome, once the run is over.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    fn finish_step(
        &mut self,
        index: usize,
        result: Result<Value, StepFailure>,
        started: String,
        elapsed: f64,
        log: Option<String>,
    ) {
        let flow = Arc::clone(&self.flow);
        let step = &flow.steps[index];
        match result {
            Ok(value) => {
                let abort_reason = flow_control_abort(&value);
                if let Some(out) = &step.output {
                    if let Err(failure) = self.store(out, value) {
                        // Too large to keep: the step fails as if it had failed itself.
                        return self.finish_step(index, Err(failure), started, elapsed, log);
                    }
                }
                match abort_reason {
                    Some(reason) => {
                        self.record(step, StepStatus::Aborted, started, elapsed, None, log);
                        self.outcome = Some(Outcome {
                            status: RunStatus::Aborted,
                            reason: Some(reason),
                            failed_step: Some(step.id.clone()),
                        });
                    }
                    None => self.record(step, StepStatus::Succeeded, started, elapsed, None, log),
                }
            }
            Err(failure) => {
                if let Some(out) = &step.output {
                    let error = json!({"error": failure.error, "error_type": failure.error_type});
                    // The error object is small; if even it does not fit, the key is dropped so
                    // no stale value stays under it.
                    if self.store(out, error).is_err() {
                        if let Some(old) = self.ctx.remove(out.as_str()) {
                            self.ctx_bytes -= entry_size(out, &old, usize::MAX).min(self.ctx_bytes);
                        }
                    }
                }
                let timed_out = failure.error_type == ErrorType::RunTimeout;
                let message = clip(failure.error.clone(), MAX_ERROR_BYTES);
                self.record(
                    step,
                    StepStatus::Failed,
                    started,
                    elapsed,
                    Some(failure),
                    log,
                );
                if timed_out {
                    self.outcome = Some(Outcome {
                        status: RunStatus::TimedOut,
                        reason: Some("the run's deadline passed".into()),
                        failed_step: Some(step.id.clone()),
                    });
                } else if step.on_error == OnError::Abort {
                    self.outcome = Some(Outcome {
                        status: RunStatus::Failed,
                        reason: Some(format!("step {:?} failed: {message}", step.id)),
                        failed_step: Some(step.id.clone()),
                    });
                }
            }
        }
    }

    fn record(
        &mut self,
        step: &Step,
        status: StepStatus,
        started: String,
        duration_ms: f64,
        failure: Option<StepFailure>,
        log: Option<String>,
    ) {
        let (error, error_type) = match failure {
            Some(f) => (Some(clip(f.error, MAX_ERROR_BYTES)), Some(f.error_type)),
            None => (None, None),
        };
        // A record is kept (a thousand of them in memory) and written whole: what a block says
        // about itself is clipped here, whatever its host did (the host runs inside the block's
        // own interpreter and can be bypassed).
        let log = log.map(|l| clip(l, MAX_LOG_BYTES));
        self.records.push(StepRecord {
            id: step.id.clone(),
            phase: step.phase.clone(),
            step_type: step.kind.type_name().into(),
            status,
            started,
            duration_ms: (duration_ms * 1000.0).round() / 1000.0,
            error,
            error_type,
            log,
        });
    }

    fn run_handler(&mut self, step: &Step, handler: KernelHandler, args: Value) -> HandlerResult {
        let arg_str = |name: &str| -> Result<String, StepFailure> {
            args.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    StepFailure::new(
                        ErrorType::HandlerError,
                        format!("{handler}: args.{name} (non-empty string) is required"),
                    )
                })
        };
        let r = match handler {
            KernelHandler::Noop => Ok(Value::Null),
            KernelHandler::CtxGet => arg_str("key").map(|key| {
                vars::get_path(&self.ctx, &key)
                    .unwrap_or_else(|| args.get("default").cloned().unwrap_or(Value::Null))
            }),
            KernelHandler::CtxSet => arg_str("key").and_then(|key| {
                let value = args.get("value").cloned().unwrap_or(Value::Null);
                self.store(&key, value.clone())?;
                Ok(value)
            }),
            KernelHandler::CtxCopy => arg_str("from_key").and_then(|from| {
                let to = arg_str("to_key")?;
                let value = vars::get_path(&self.ctx, &from).unwrap_or(Value::Null);
                self.store(&to, value.clone())?;
                Ok(value)
            }),
            KernelHandler::Emit => arg_str("event").and_then(|event| {
                let payload = args.get("payload").cloned().unwrap_or(Value::Null);
                // Held until the run ends, then written to the audit: counted with the context,
                // or a flow emitting the same large value in a loop grows memory and disk freely.
                let size = event.len() + vars::json_size(&payload, self.limits.max_context_bytes);
                let total = self
                    .ctx_bytes
                    .saturating_add(self.events_bytes)
                    .saturating_add(size);
                if total > self.limits.max_context_bytes {
                    return Err(StepFailure::new(
                        ErrorType::ContextLimit,
                        format!(
                            "kernel:emit: the run's context and events would pass {} bytes \
                             (RUMI_MAX_CONTEXT_BYTES); emit less, or smaller payloads",
                            self.limits.max_context_bytes
                        ),
                    ));
                }
                self.events_bytes += size;
                self.events.push(Emitted {
                    step_id: step.id.clone(),
                    event: event.clone(),
                    payload,
                });
                Ok(json!({"event": event, "emitted": true}))
            }),
            KernelHandler::FlowRun => {
                let flow_id = match arg_str("flow_id") {
                    Ok(f) => f,
                    Err(e) => return HandlerResult::Done(Err(e)),
                };
                let inputs = match args.get("inputs") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(m)) => m.clone(),
                    Some(_) => {
                        return HandlerResult::Done(Err(StepFailure::new(
                            ErrorType::HandlerError,
                            "kernel:flow.run: args.inputs must be an object",
                        )))
                    }
                };
                return HandlerResult::Child(ChildCall {
                    step_id: step.id.clone(),
                    flow_id,
                    inputs,
                });
            }
            KernelHandler::VocabNormalize | KernelHandler::VocabConvert => {
                if !args.is_object() {
                    return HandlerResult::Done(Err(StepFailure::new(
                        ErrorType::HandlerError,
                        format!("{handler}: args must be an object"),
                    )));
                }
                return HandlerResult::Vocab(VocabCall {
                    step_id: step.id.clone(),
                    handler,
                    args,
                });
            }
            KernelHandler::SkillRun => {
                if !args.is_object() {
                    return HandlerResult::Done(Err(StepFailure::new(
                        ErrorType::HandlerError,
                        "kernel:skill.run: args must be an object {skill_id, goal, inputs, expected_outputs, budgets}",
                    )));
                }
                return HandlerResult::Skill(SkillCall {
                    step_id: step.id.clone(),
                    args,
                });
            }
            KernelHandler::Admin(
                a @ (AdminHandler::NetworkGrant
                | AdminHandler::NetworkRevoke
                | AdminHandler::CapabilityGrant
                | AdminHandler::CapabilityRevoke),
            ) => {
                let args = match args {
                    Value::Object(m) => m,
                    Value::Null => Map::new(),
                    _ => {
                        return HandlerResult::Done(Err(StepFailure::new(
                            ErrorType::HandlerError,
                            format!("{handler}: args must be an object"),
                        )))
                    }
                };
                return HandlerResult::Admin(AdminCall {
                    step_id: step.id.clone(),
                    handler: a,
                    args,
                });
            }
            KernelHandler::Admin(_) => Err(StepFailure::new(
                ErrorType::HandlerUnavailable,
                format!("{handler} is not available in this kernel build"),
            )),
        };
        HandlerResult::Done(r)
    }
}

/// The bytes one context entry adds to the context's JSON: its key, a colon and a comma.
fn entry_size(key: &str, value: &Value, limit: usize) -> usize {
    key.len() + 4 + vars::json_size(value, limit)
}

enum HandlerResult {
    Done(Result<Value, StepFailure>),
    Child(ChildCall),
    Admin(AdminCall),
    Vocab(VocabCall),
    Skill(SkillCall),
}

/// Longest step error kept in a run record (bytes).
pub const MAX_ERROR_BYTES: usize = 2000;
/// Longest step log kept in a run record (bytes); the block host keeps 16 K characters.
pub const MAX_LOG_BYTES: usize = 64 * 1024;

/// `text` cut to at most `max` bytes (on a character boundary), marked with `…` when cut.
pub fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// `{"__flow_control": "abort", "reason": "..."}` → the reason (clipped like a step error).
pub fn flow_control_abort(value: &Value) -> Option<String> {
    let obj = value.as_object()?;
    if obj.get("__flow_control")?.as_str()? != "abort" {
        return None;
    }
    let reason = match obj.get("reason") {
        // Measured before it is turned into text: a reason may be a whole 4 MiB value.
        Some(r) if vars::json_size(r, MAX_ERROR_BYTES * 2) > MAX_ERROR_BYTES * 2 => {
            "aborted by the block (its reason was too long to keep)".to_string()
        }
        Some(r) => vars::embed_text(r),
        None => "aborted by the block".into(),
    };
    Some(clip(reason, MAX_ERROR_BYTES))
}

/// Refuses a nested run that would recurse or nest too deep. `chain` is the ids of the running
/// flows from the root to the parent.
pub fn check_nesting(chain: &[String], flow_id: &str) -> Result<(), StepFailure> {
    if chain.iter().any(|f| f == flow_id) {
        return Err(StepFailure::new(
            ErrorType::RecursionRefused,
            format!("kernel:flow.run: {flow_id:?} is already running in this chain ({}); recursion is refused", chain.join(" → ")),
        ));
    }
    if chain.len() >= MAX_FLOW_DEPTH {
        return Err(StepFailure::new(
            ErrorType::RecursionRefused,
            format!("kernel:flow.run: nesting deeper than {MAX_FLOW_DEPTH} is refused"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
