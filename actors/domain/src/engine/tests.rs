//! The run engine's tests: every rule of contract §3.4–3.6, the context limits, and a property
//! test over generated flows.

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

/// The doubling flow of the hardening review: `k{n} = "${ctx.k{n-1}}${ctx.k{n-1}}"` for 39
/// steps reached gigabytes. Now the step that would pass the value limit fails with
/// `context_limit`, stores nothing, and the context never passes its limit.
#[test]
fn a_doubling_chain_stops_at_the_value_limit() {
    let mut text = String::from("flow_id: grow\nphases: [m]\nsteps:\n  - {id: s00, phase: m, type: set, input: {key: k0, value: \"0123456789abcdef\"}}\n");
    for n in 1..40 {
        text.push_str(&format!(
            "  - {{id: s{n:02}, phase: m, type: set, on_error: abort, input: {{key: k{n}, value: \"${{ctx.k{p}}}${{ctx.k{p}}}\"}}}}\n",
            p = n - 1
        ));
    }
    let limits = ContextLimits {
        max_value_bytes: 1 << 20,
        max_context_bytes: 4 << 20,
    };
    let (e, o) = run_inline_with(&text, json!({}), limits);
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(
        o.failed_step.as_deref(),
        Some("s16"),
        "16 B doubled 16 times passes 1 MiB"
    );
    let failed = e.records().last().unwrap();
    assert_eq!(failed.error_type, Some(ErrorType::ContextLimit));
    assert!(failed
        .error
        .as_deref()
        .unwrap()
        .contains("RUMI_MAX_RESPONSE_BYTES"));
    assert!(e.context_bytes() <= limits.max_context_bytes);
    assert!(
        e.ctx.get("k16").is_none(),
        "nothing stored for the refused step"
    );
}

/// The whole context is capped too: many values each under the value limit cannot together
/// pass the context limit, and `kernel:ctx.set` / `ctx.copy` count like `set`.
#[test]
fn the_whole_context_is_capped() {
    let mut text = String::from("flow_id: wide\nphases: [m]\nsteps:\n");
    for n in 0..10 {
        text.push_str(&format!(
            "  - {{id: s{n}, phase: m, type: handler, output: o{n}, input: {{handler: \"kernel:ctx.copy\", args: {{from_key: big, to_key: c{n}}}}}}}\n"
        ));
    }
    let limits = ContextLimits {
        max_value_bytes: 2000,
        max_context_bytes: 5000,
    };
    let (e, o) = run_inline_with(&text, json!({"big": "z".repeat(1000)}), limits);
    // Fail-soft: the run goes on, but the copies past the limit failed and stored nothing.
    assert_eq!(o.status, RunStatus::Succeeded);
    let refused = e
        .records()
        .iter()
        .filter(|r| r.error_type == Some(ErrorType::ContextLimit))
        .count();
    assert!(refused > 0, "some copies were refused");
    assert!(e.context_bytes() <= limits.max_context_bytes);
    assert!(
        serde_json::to_string(&Value::Object(e.ctx.clone()))
            .unwrap()
            .len()
            <= limits.max_context_bytes,
        "the tracked size bounds the real one"
    );
}

fn run_inline(text: &str, input: Value) -> (RunEngine, Outcome) {
    run_inline_with(text, input, ContextLimits::default())
}

/// Runs a flow that needs no outside work (and fits one slice) to its end under `limits`.
fn run_inline_with(text: &str, input: Value, limits: ContextLimits) -> (RunEngine, Outcome) {
    let clock = TestClock(Cell::new(0.0));
    let mut e = RunEngine::new(flow(text), inputs(input)).with_limits(limits);
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
  - {id: s, phase: m, type: handler, input: {handler: "kernel:skill.run", args: "not an object"}, output: s}
"#;
    let (e, o) = run_inline(text, json!({}));
    assert_eq!(o.status, RunStatus::Succeeded);
    assert_eq!(e.result()["g"]["error_type"], json!("handler_error"));
    assert_eq!(e.result()["s"]["error_type"], json!("handler_error"));
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

/// Review finding: a flow that wraps a value in 25 more levels per `set` step built values
/// thousands of levels deep and overflowed the kernel's stack (cloning is recursive). Values are
/// now refused past `MAX_VALUE_DEPTH`, in resolution and when stored.
#[test]
fn values_cannot_be_nested_past_the_depth_limit() {
    let wrap = format!("{}\"${{ctx.k}}\"{}", "[".repeat(25), "]".repeat(25));
    let mut text = String::from("flow_id: deep\nphases: [m]\nsteps:\n");
    for n in 0..10 {
        text.push_str(&format!(
            "  - {{id: s{n}, phase: m, type: set, on_error: abort, input: {{key: k, value: {wrap}}}}}\n"
        ));
    }
    let (e, o) = run_inline(&text, json!({"k": 1}));
    assert_eq!(o.status, RunStatus::Failed);
    // 25, 50, 75, 100 levels are kept; the fifth wrap would make 125.
    assert_eq!(o.failed_step.as_deref(), Some("s4"));
    let failed = e.records().last().unwrap();
    assert_eq!(failed.error_type, Some(ErrorType::ContextLimit));
    assert!(
        failed.error.as_deref().unwrap().contains("deeper than 100"),
        "{failed:?}"
    );
    assert_eq!(vars::measure(&e.ctx["k"], usize::MAX).depth, 100);
}

/// Review finding: `kernel:emit` kept every payload until the run ended, outside the context
/// limit (120 emits of 2 MiB took a kernel to 277 MB). Events now count with the context.
#[test]
fn emitted_events_count_against_the_context_limit() {
    let mut text = String::from("flow_id: loud\nphases: [m]\nsteps:\n");
    for n in 0..20 {
        text.push_str(&format!(
            "  - {{id: e{n:02}, phase: m, type: handler, input: {{handler: \"kernel:emit\", args: {{event: x, payload: \"${{ctx.big}}\"}}}}}}\n"
        ));
    }
    let limits = ContextLimits {
        max_value_bytes: 2000,
        max_context_bytes: 5000,
    };
    let (mut e, _) = run_inline_with(&text, json!({"big": "z".repeat(1000)}), limits);
    let events = e.take_events();
    assert!(events.len() < 5, "{} events kept", events.len());
    assert!(e
        .records()
        .iter()
        .any(|r| r.error_type == Some(ErrorType::ContextLimit)));
}

/// Second review: a block's abort reason, error or log went into the run record whole (a
/// thousand records are kept in memory), so 4 MiB reasons made a 4 GiB history. They are clipped.
#[test]
fn what_a_block_says_is_clipped_in_the_record() {
    let text = "flow_id: talk\nphases: [m]\nsteps:\n  - {id: b, phase: m, type: python_file_call, owner_pack: p, file: b.py, output: o}\n";
    let clock = TestClock(Cell::new(0.0));
    let mut e = RunEngine::new(flow(text), Map::new());
    let Next::Block(_) = e.advance(&clock) else {
        panic!("a block step")
    };
    let long = "r".repeat(1 << 20);
    e.complete_block(
        Ok(json!({"__flow_control": "abort", "reason": long})),
        Some("l".repeat(4 << 20)),
        &clock,
    );
    let Next::Done(o) = e.advance(&clock) else {
        panic!("aborted")
    };
    assert!(o.reason.unwrap().len() <= MAX_ERROR_BYTES + 4);
    assert!(e.records()[0].log.as_ref().unwrap().len() <= MAX_LOG_BYTES + 4);

    let mut e = RunEngine::new(flow(text), Map::new());
    let Next::Block(_) = e.advance(&clock) else {
        panic!("a block step")
    };
    e.complete_block(
        Err(StepFailure::new(ErrorType::BlockError, "e".repeat(1 << 20))),
        None,
        &clock,
    );
    let _ = e.advance(&clock);
    assert!(e.records()[0].error.as_ref().unwrap().len() <= MAX_ERROR_BYTES + 4);
    assert_eq!(clip("héllo".into(), 2), "h…", "cut on a character boundary");
}

/// Second review: a long chain of synchronous steps ran in one go, past the run's deadline and
/// holding the thread. The engine hands control back every `SYNC_STEPS_PER_SLICE` steps.
#[test]
fn long_synchronous_chains_pause_between_slices() {
    let mut text = String::from("flow_id: long\nphases: [m]\nsteps:\n");
    for n in 0..150 {
        text.push_str(&format!(
            "  - {{id: s{n:03}, phase: m, type: set, input: {{key: k, value: {n}}}}}\n"
        ));
    }
    let clock = TestClock(Cell::new(0.0));
    let mut e = RunEngine::new(flow(&text), Map::new());
    assert_eq!(e.advance(&clock), Next::Pause);
    assert_eq!(e.records().len(), SYNC_STEPS_PER_SLICE);
    assert_eq!(e.advance(&clock), Next::Pause);
    let Next::Done(o) = e.advance(&clock) else {
        panic!("done after the third slice")
    };
    assert_eq!(o.status, RunStatus::Succeeded);
    assert_eq!(e.records().len(), 150);
    assert_eq!(e.ctx["k"], json!(149));
}
