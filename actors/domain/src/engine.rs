//! The run engine: steps through one flow run, purely.
//!
//! The engine executes everything it can by itself (`set`, `if`, the context handlers, `when`
//! conditions, failure policy, `__flow_control`) and stops at work that needs the outside world,
//! returning it as a [`Next`]: run a block, or run a nested flow. The `FlowRun` actor performs that
//! work and reports back with [`RunEngine::complete_block`] / [`RunEngine::complete_child`]. Keeping
//! this pure means every rule of contract §3.4–3.6 is unit-tested without actors, processes or
//! clocks.

use crate::flow::{Flow, OnError, Step, StepKind};
use crate::handler::KernelHandler;
use crate::run::{ErrorType, RunStatus, StepFailure, StepRecord, StepStatus};
use crate::vars;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Deepest nesting of `kernel:flow.run`.
pub const MAX_FLOW_DEPTH: usize = 8;

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
    Done(Outcome),
}

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
}

impl RunEngine {
    /// Starts a run with `inputs` as the initial context.
    pub fn new(flow: Arc<Flow>, inputs: Map<String, Value>) -> Self {
        RunEngine {
            flow,
            ctx: inputs,
            cursor: 0,
            records: Vec::new(),
            outcome: None,
            pending: None,
            events: Vec::new(),
        }
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
        while self.cursor < self.flow.steps.len() {
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
                } => {
                    self.pending = Some((index, started, t0));
                    return Next::Block(BlockCall {
                        step_id: step.id.clone(),
                        phase: step.phase.clone(),
                        owner_pack: owner_pack.clone(),
                        file: file.clone(),
                        input: vars::resolve(input, &self.ctx),
                        timeout_seconds: step.timeout_seconds,
                        principal_override: principal_override.clone(),
                    });
                }
                StepKind::Set { key, value } => {
                    let value = vars::resolve(value, &self.ctx);
                    let key = key
                        .as_ref()
                        .or(step.output.as_ref())
                        .expect("validated: set has key or output");
                    self.ctx.insert(key.clone(), value);
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
                StepKind::If { condition } => Ok(Value::Bool(condition.eval(&self.ctx))),
                StepKind::Handler { handler, args } => {
                    let args = vars::resolve(args, &self.ctx);
                    match self.run_handler(step, *handler, args) {
                        HandlerResult::Done(r) => r,
                        HandlerResult::Child(call) => {
                            self.pending = Some((index, started, t0));
                            return Next::Child(call);
                        }
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
                    self.ctx.insert(out.clone(), value);
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
                    self.ctx.insert(
                        out.clone(),
                        json!({"error": failure.error, "error_type": failure.error_type}),
                    );
                }
                let timed_out = failure.error_type == ErrorType::RunTimeout;
                let message = failure.error.clone();
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
            Some(f) => (Some(f.error), Some(f.error_type)),
            None => (None, None),
        };
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
                vars::get_path(&self.ctx, &key).unwrap_or_else(|| args.get("default").cloned().unwrap_or(Value::Null))
            }),
            KernelHandler::CtxSet => arg_str("key").map(|key| {
                let value = args.get("value").cloned().unwrap_or(Value::Null);
                self.ctx.insert(key, value.clone());
                value
            }),
            KernelHandler::CtxCopy => arg_str("from_key").and_then(|from| {
                let to = arg_str("to_key")?;
                let value = vars::get_path(&self.ctx, &from).unwrap_or(Value::Null);
                self.ctx.insert(to, value.clone());
                Ok(value)
            }),
            KernelHandler::Emit => arg_str("event").map(|event| {
                let payload = args.get("payload").cloned().unwrap_or(Value::Null);
                self.events.push(Emitted { step_id: step.id.clone(), event: event.clone(), payload });
                json!({"event": event, "emitted": true})
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
                        return HandlerResult::Done(Err(StepFailure::new(ErrorType::HandlerError, "kernel:flow.run: args.inputs must be an object")))
                    }
                };
                return HandlerResult::Child(ChildCall { step_id: step.id.clone(), flow_id, inputs });
            }
            KernelHandler::SkillRun => Err(StepFailure::new(
                ErrorType::HandlerUnavailable,
                "kernel:skill.run is not available: the SkillRuntime is not part of this kernel build yet",
            )),
            KernelHandler::Admin(_) => Err(StepFailure::new(
                ErrorType::HandlerUnavailable,
                format!("{handler} is not available in this kernel build"),
            )),
        };
        HandlerResult::Done(r)
    }
}

enum HandlerResult {
    Done(Result<Value, StepFailure>),
    Child(ChildCall),
}

/// `{"__flow_control": "abort", "reason": "..."}` → the reason.
pub fn flow_control_abort(value: &Value) -> Option<String> {
    let obj = value.as_object()?;
    if obj.get("__flow_control")?.as_str()? != "abort" {
        return None;
    }
    Some(
        obj.get("reason")
            .map(vars::embed_text)
            .unwrap_or_else(|| "aborted by the block".into()),
    )
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
mod tests {
    use super::*;
    use crate::flow::{parse_flow, FlowOrigin, SourceRank};
    use std::cell::Cell;

    struct TestClock(Cell<f64>);
    impl Clock for TestClock {
        fn wall(&self) -> String {
            "2026-01-01T00:00:00Z".into()
        }
        fn monotonic_ms(&self) -> f64 {
            let t = self.0.get();
            self.0.set(t + 1.0);
            t
        }
    }

    fn flow(text: &str) -> Arc<Flow> {
        Arc::new(
            parse_flow(
                text,
                FlowOrigin {
                    rank: SourceRank::Shared,
                    path: "t.flow.yaml".into(),
                    pack_id: None,
                },
            )
            .unwrap(),
        )
    }

    fn inputs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn run_inline(text: &str, input: Value) -> (RunEngine, Outcome) {
        let clock = TestClock(Cell::new(0.0));
        let mut e = RunEngine::new(flow(text), inputs(input));
        match e.advance(&clock) {
            Next::Done(o) => (e, o),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn set_if_when_and_handlers() {
        let text = r#"
flow_id: f
phases: [prepare, main]
steps:
  - {id: s1, phase: prepare, type: set, input: {key: model, value: "gpt-${ctx.v}"}}
  - {id: s2, phase: prepare, priority: 1, type: set, input: {key: n, value: "${ctx.v}"}}
  - {id: c, phase: main, priority: 1, type: if, input: {condition: "${ctx.n} == 4"}, output: is_four}
  - {id: yes, phase: main, priority: 2, type: set, when: "${ctx.is_four}", input: {key: branch, value: four}}
  - {id: no, phase: main, priority: 2, type: set, when: "${ctx.is_four} == false", input: {key: branch, value: other}}
  - {id: g, phase: main, priority: 3, type: handler, input: {handler: "kernel:ctx.get", args: {key: "model"}}, output: got}
  - {id: gd, phase: main, priority: 3, type: handler, input: {handler: "kernel:ctx.get", args: {key: "nope", default: 7}}, output: gotd}
  - {id: cp, phase: main, priority: 4, type: handler, input: {handler: "kernel:ctx.copy", args: {from_key: "got", to_key: "copied"}}}
  - {id: st, phase: main, priority: 5, type: handler, input: {handler: "kernel:ctx.set", args: {key: "_hidden", value: 1}}, output: set_out}
  - {id: nop, phase: main, priority: 6, type: handler, input: {handler: "kernel:noop"}, output: nothing}
  - {id: em, phase: main, priority: 7, type: handler, input: {handler: "kernel:emit", args: {event: done, payload: {x: 1}}}, output: emitted}
"#;
        let (mut e, o) = run_inline(text, json!({"v": 4}));
        assert_eq!(o.status, RunStatus::Succeeded);
        let r = e.result();
        assert_eq!(r["model"], json!("gpt-4"));
        assert_eq!(r["n"], json!(4));
        assert_eq!(r["is_four"], json!(true));
        assert_eq!(r["branch"], json!("four"));
        assert_eq!(r["got"], json!("gpt-4"));
        assert_eq!(r["gotd"], json!(7));
        assert_eq!(r["copied"], json!("gpt-4"));
        assert_eq!(r["set_out"], json!(1));
        assert!(
            r.get("_hidden").is_none(),
            "underscore keys are not part of the result"
        );
        assert_eq!(r["nothing"], Value::Null);
        assert_eq!(r["emitted"], json!({"event": "done", "emitted": true}));
        let statuses: Vec<_> = e
            .records()
            .iter()
            .map(|r| (r.id.as_str(), r.status))
            .collect();
        assert!(statuses.contains(&("no", StepStatus::Skipped)));
        assert_eq!(
            e.records()[0].id,
            "s2",
            "priority 1 runs before the default 100"
        );
        assert_eq!(e.take_events().len(), 1);
    }

    const BLOCKS: &str = r#"
flow_id: b
phases: [main]
steps:
  - {id: a, phase: main, priority: 1, type: python_file_call, owner_pack: p, file: a.py, input: {x: "${ctx.x}"}, output: a_out}
  - {id: b, phase: main, priority: 2, type: python_file_call, owner_pack: p, file: b.py, input: "${ctx.a_out}", output: b_out}
"#;

    #[test]
    fn record_parts_are_moved_out() {
        let (mut e, _) = run_inline(
            "flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: _x, value: 1}}\n  - {id: b, phase: m, type: set, input: {key: y, value: 2}}\n",
            json!({"in": 0}),
        );
        let expected = e.result();
        let (records, result) = e.take_record_parts();
        assert_eq!(records.len(), 2);
        assert_eq!(result, expected);
        assert_eq!(result, json!({"in": 0, "y": 2}));
        assert!(e.records().is_empty());
    }

    #[test]
    fn block_calls_and_fail_soft() {
        let clock = TestClock(Cell::new(0.0));
        let mut e = RunEngine::new(flow(BLOCKS), inputs(json!({"x": [1, 2]})));
        let Next::Block(call) = e.advance(&clock) else {
            panic!()
        };
        assert_eq!(call.input, json!({"x": [1, 2]}));
        assert_eq!(call.owner_pack, "p");
        e.complete_block(
            Err(StepFailure::new(ErrorType::BlockError, "boom")),
            Some("printed".into()),
            &clock,
        );
        let Next::Block(call) = e.advance(&clock) else {
            panic!()
        };
        assert_eq!(
            call.input,
            json!({"error": "boom", "error_type": "block_error"})
        );
        e.complete_block(Ok(json!({"ok": true})), None, &clock);
        let Next::Done(o) = e.advance(&clock) else {
            panic!()
        };
        assert_eq!(o.status, RunStatus::Succeeded);
        assert_eq!(e.records()[0].status, StepStatus::Failed);
        assert_eq!(e.records()[0].error_type, Some(ErrorType::BlockError));
        assert_eq!(e.records()[0].log.as_deref(), Some("printed"));
        assert_eq!(e.result()["b_out"], json!({"ok": true}));
    }

    #[test]
    fn fail_hard_stops_the_run() {
        let text = BLOCKS.replace(
            "phases: [main]",
            "phases: [main]\ndefaults: {fail_soft: false}",
        );
        let clock = TestClock(Cell::new(0.0));
        let mut e = RunEngine::new(flow(&text), Map::new());
        let Next::Block(_) = e.advance(&clock) else {
            panic!()
        };
        e.complete_block(
            Err(StepFailure::new(ErrorType::Timeout, "step timed out")),
            None,
            &clock,
        );
        let Next::Done(o) = e.advance(&clock) else {
            panic!()
        };
        assert_eq!(o.status, RunStatus::Failed);
        assert_eq!(o.failed_step.as_deref(), Some("a"));
        assert_eq!(e.records().len(), 1);
    }

    #[test]
    fn flow_control_abort_stops_later_steps() {
        let clock = TestClock(Cell::new(0.0));
        let mut e = RunEngine::new(flow(BLOCKS), Map::new());
        let Next::Block(_) = e.advance(&clock) else {
            panic!()
        };
        e.complete_block(
            Ok(json!({"__flow_control": "abort", "reason": "Invalid input"})),
            None,
            &clock,
        );
        let Next::Done(o) = e.advance(&clock) else {
            panic!()
        };
        assert_eq!(o.status, RunStatus::Aborted);
        assert_eq!(o.reason.as_deref(), Some("Invalid input"));
        assert_eq!(e.result()["a_out"]["__flow_control"], json!("abort"));
        assert_eq!(e.records().len(), 1);
        assert_eq!(e.records()[0].status, StepStatus::Aborted);
    }

    #[test]
    fn run_timeout_wins_over_fail_soft() {
        let clock = TestClock(Cell::new(0.0));
        let mut e = RunEngine::new(flow(BLOCKS), Map::new());
        let Next::Block(_) = e.advance(&clock) else {
            panic!()
        };
        e.complete_block(
            Err(StepFailure::new(ErrorType::RunTimeout, "deadline")),
            None,
            &clock,
        );
        let Next::Done(o) = e.advance(&clock) else {
            panic!()
        };
        assert_eq!(o.status, RunStatus::TimedOut);
        let mut e = RunEngine::new(flow(BLOCKS), Map::new());
        let Next::Block(_) = e.advance(&clock) else {
            panic!()
        };
        e.time_out(&clock);
        assert_eq!(e.outcome().unwrap().status, RunStatus::TimedOut);
        assert_eq!(e.records()[0].error_type, Some(ErrorType::RunTimeout));
    }

    #[test]
    fn nested_flows() {
        let text = r#"
flow_id: parent
phases: [m]
steps:
  - {id: c, phase: m, type: handler, input: {handler: "kernel:flow.run", args: {flow_id: child, inputs: {v: "${ctx.v}"}}}, output: child}
"#;
        let clock = TestClock(Cell::new(0.0));
        let mut e = RunEngine::new(flow(text), inputs(json!({"v": 1})));
        let Next::Child(call) = e.advance(&clock) else {
            panic!()
        };
        assert_eq!(call.flow_id, "child");
        assert_eq!(call.inputs, inputs(json!({"v": 1})));
        e.complete_child(RunStatus::Succeeded, json!({"r": 2}), None, &clock);
        let Next::Done(o) = e.advance(&clock) else {
            panic!()
        };
        assert_eq!(o.status, RunStatus::Succeeded);
        assert_eq!(e.result()["child"], json!({"r": 2}));

        assert!(check_nesting(&["a".into(), "b".into()], "c").is_ok());
        assert_eq!(
            check_nesting(&["a".into(), "b".into()], "a")
                .unwrap_err()
                .error_type,
            ErrorType::RecursionRefused
        );
        let deep: Vec<String> = (0..MAX_FLOW_DEPTH).map(|i| format!("f{i}")).collect();
        assert!(check_nesting(&deep, "x").is_err());
    }

    #[test]
    fn handler_argument_errors_fail_the_step() {
        let text = r#"
flow_id: f
phases: [m]
steps:
  - {id: g, phase: m, type: handler, input: {handler: "kernel:ctx.get", args: {}}, output: g}
  - {id: s, phase: m, type: handler, input: {handler: "kernel:skill.run"}, output: s}
"#;
        let (e, o) = run_inline(text, json!({}));
        assert_eq!(o.status, RunStatus::Succeeded);
        assert_eq!(e.result()["g"]["error_type"], json!("handler_error"));
        assert_eq!(e.result()["s"]["error_type"], json!("handler_unavailable"));
    }

    #[test]
    fn input_text_is_never_expanded_twice() {
        let text = r#"
flow_id: f
phases: [m]
steps:
  - {id: a, phase: m, type: set, input: {key: echo, value: "${ctx.user}"}}
  - {id: b, phase: m, type: set, input: {key: echo2, value: "got ${ctx.echo}"}}
"#;
        let (e, _) = run_inline(text, json!({"user": "${ctx.secret}", "secret": "s3cr3t"}));
        assert_eq!(e.result()["echo"], json!("${ctx.secret}"));
        assert_eq!(e.result()["echo2"], json!("got ${ctx.secret}"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// (phase index, priority, condition flag: None = no `when`, Some(b) = `when` on a key
        /// that holds b)
        fn arb_steps() -> impl Strategy<Value = Vec<(usize, i32, Option<bool>)>> {
            prop::collection::vec(
                (0usize..3, -3i32..3, prop::option::of(any::<bool>())),
                1..25,
            )
        }

        proptest! {
            /// For any flow of `set` steps: the run succeeds, every step is recorded exactly once in
            /// (phase, priority, id) order, a step is skipped exactly when its condition is false,
            /// and each executed step's value is in the result.
            #[test]
            fn run_engine_records_every_step_in_order(specs in arb_steps()) {
                let mut text = String::from("flow_id: p\nphases: [a, b, c]\nsteps:\n");
                for (i, (phase, prio, cond)) in specs.iter().enumerate() {
                    let when = match cond {
                        None => String::new(),
                        Some(b) => format!(", when: \"${{ctx.flag{b}}}\""),
                    };
                    text.push_str(&format!(
                        "  - {{id: s{i:02}, phase: {}, priority: {prio}, type: set, input: {{key: v{i:02}, value: {i}}}{when}}}\n",
                        ["a", "b", "c"][*phase]
                    ));
                }
                let (e, o) = run_inline(&text, json!({"flagtrue": true, "flagfalse": false}));
                prop_assert_eq!(o.status, RunStatus::Succeeded);
                prop_assert_eq!(e.records().len(), specs.len());
                let key = |id: &str| {
                    let i: usize = id[1..].parse().unwrap();
                    (specs[i].0, specs[i].1, id.to_string())
                };
                for pair in e.records().windows(2) {
                    prop_assert!(key(&pair[0].id) <= key(&pair[1].id));
                }
                for r in e.records() {
                    let i: usize = r.id[1..].parse().unwrap();
                    let runs = specs[i].2 != Some(false);
                    prop_assert_eq!(r.status == StepStatus::Skipped, !runs);
                    let stored = e.result().get(format!("v{i:02}")).cloned();
                    prop_assert_eq!(stored, if runs { Some(json!(i)) } else { None });
                }
            }
        }
    }
}
