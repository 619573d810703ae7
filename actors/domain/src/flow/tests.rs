//! Flow parsing and validation: the guide's example, every refusal, ordering.

use super::*;
use proptest::prelude::*;

fn origin(rank: SourceRank) -> FlowOrigin {
    FlowOrigin {
        rank,
        path: "user_data/shared/flows/t.flow.yaml".into(),
        pack_id: None,
    }
}

fn parse(text: &str) -> Result<Flow, FlowError> {
    parse_flow(text, origin(SourceRank::Shared))
}

const HELLO: &str = r#"
flow_id: hello
inputs: {name: string}
phases: [main]
steps:
  - id: call_hello
    phase: main
    priority: 50
    type: python_file_call
    owner_pack: my_pack
    file: blocks/hello.py
    input:
      name: "${ctx.name}"
    output: greeting
"#;

#[test]
fn parses_the_guide_example() {
    let flow = parse(HELLO).unwrap();
    assert_eq!(flow.flow_id, "hello");
    assert_eq!(flow.steps.len(), 1);
    let step = &flow.steps[0];
    assert_eq!(step.priority, 50.0);
    assert_eq!(step.timeout_seconds, 60);
    assert_eq!(step.on_error, OnError::Continue);
    assert_eq!(step.line, Some(6));
    assert_eq!(
        find_line(
            "a: 1\nsteps:\n  - {id: x, phase: m}\n  - {phase: m, id: 'y'}\n",
            "id:",
            Some("y")
        ),
        Some(4)
    );
    assert_eq!(
        find_line("  - id: x\n  - pid: y\n  - id: y\n", "id:", Some("y")),
        Some(3)
    );
    match &step.kind {
        StepKind::Block {
            owner_pack, file, ..
        } => {
            assert_eq!(owner_pack, "my_pack");
            assert_eq!(file, "blocks/hello.py");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_file_and_line() {
    let text = "flow_id: f\nphases: [main]\nsteps:\n  - id: a\n    phase: nope\n    type: set\n    input: {key: x, value: 1}\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.file, "user_data/shared/flows/t.flow.yaml");
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("phase \"nope\""), "{e}");
    let e = parse("flow_id: f\nphases: [main]\nsteps:\n  - id: a\n    phase: main\n    type: set\n    wehn: x\n").unwrap_err();
    assert!(e.message.contains("wehn"), "{e}");
    assert!(e.line.is_some(), "{e}");
    assert!(
        e.to_string()
            .starts_with("user_data/shared/flows/t.flow.yaml:"),
        "{e}"
    );
}

#[test]
fn refuses_bad_flows() {
    let cases = [
            ("phases: [main]\n", "flow_id is required"),
            ("flow_id: 'a b'\nphases: [main]\n", "invalid"),
            ("flow_id: f\n", "phases is required"),
            ("flow_id: f\nphases: []\n", "must be a non-empty list"),
            ("flow_id: f\nphases: [a, a]\n", "twice"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: k}}\n  - {id: a, phase: m, type: set, input: {key: k}}\n", "used twice"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: magic}\n", "unknown type"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: python_file_call, owner_pack: p}\n", "file is required"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: python_file_call, file: x.py}\n", "owner_pack is required"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: python_file_call, file: x.py, owner_pack: '../x'}\n", "not a valid pack id"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: k}, timeout_seconds: 601}\n", "timeout_seconds"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: k}, timeout_seconds: 0}\n", "timeout_seconds"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: handler, input: {handler: 'kernel:rm_rf'}}\n", "unknown handler"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: handler, input: {handler: 'kernel:network.grant'}}\n", "administrative"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: k}, when: '${ctx.a} =='}\n", "invalid condition"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: if, input: {condition: 'true'}}\n", "needs output"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {value: 1}}\n", "needs input.key or output"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: k}, file: x.py}\n", "only valid for python_file_call"),
            ("flow_id: f\nphases: [m]\nsteps:\n  - {phase: m, type: set, input: {key: k}}\n", "has no id"),
            ("flow_id: f\nphases: [m]\nextra: 1\n", "unknown field"),
            ("- just\n- a list\n", "invalid type"),
        ];
    for (text, want) in cases {
        let e = parse(text).expect_err(text);
        assert!(e.message.contains(want), "{text:?}: got {e}");
    }
}

/// Each malformed flow: the line its error points at and the start of its message, which says
/// what was wrong and what to write instead.
#[test]
fn malformed_flows_name_the_line_and_the_fix() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "flow_id: f\nsteps: []\n",
            1,
            "phases is required — add `phases: [main]`",
        ),
        (
            "flow_id: f\nphases: []\n",
            2,
            "phases: must be a non-empty list of names — add `phases: [main]`",
        ),
        (
            "flow_id: f\nphases: main\n",
            2,
            "phases: invalid type: string \"main\", expected a sequence — phases is a list of names, e.g. `phases: [main]`",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - id: a\n    phase: m\n    type: magic\n",
            4,
            "step \"a\": unknown type \"magic\" — use one of python_file_call, handler, set, if",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - id: a\n    phase: x\n    type: set\n    input: {key: k}\n",
            4,
            "step \"a\": phase \"x\" is not one of the flow's phases [\"m\"] — use one of them or add it to `phases:`",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - id: a\n    type: set\n",
            4,
            "step \"a\": phase is required — add `phase: m` (one of the flow's phases [\"m\"])",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - id: a\n    phase: m\n",
            4,
            "step \"a\": type is required — use one of python_file_call, handler, set, if",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - id: a\n    phase: m\n    type: python_file_call\n    owner_pack: p\n",
            4,
            "step \"a\": file is required for python_file_call — add `file: blocks/<name>.py`",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: k}}\n  - {id: b, phase: m, type: set, input: {key: k}}\n  - {id: a, phase: m, type: set, input: {key: k}}\n",
            6,
            "step id \"a\" is used twice (first at line 4) — give each step its own id",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, wehn: x, input: {key: k}}\n",
            4,
            "steps[0]: unknown field `wehn`, expected one of",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - id: a\n   phase: m\n",
            5,
            "did not find expected '-' indicator — check the YAML at this line",
        ),
        (
            "flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: k}, when: '${ctx.a} =='}\n",
            4,
            "step \"a\": invalid condition \"${ctx.a} ==\": both sides of the comparison are needed — write `${ctx.key} == value`",
        ),
        ("phases: [m]\n", 1, "flow_id is required — add `flow_id: <name>`"),
    ];
    for (text, line, start) in cases {
        let e = parse(text).expect_err(text);
        assert_eq!(e.file, "user_data/shared/flows/t.flow.yaml", "{text:?}");
        assert_eq!(e.line, Some(*line), "{text:?}: {e}");
        assert!(
            e.message.starts_with(start),
            "{text:?}:\n got  {}\n want {start}…",
            e.message
        );
        assert!(e.message.contains(" — "), "a fix is offered: {e}");
        let declared = text.starts_with("flow_id: f").then(|| "f".to_string());
        assert_eq!(e.flow_id, declared, "{text:?}");
    }
}

#[test]
fn a_file_that_does_not_parse_still_names_its_flow_id() {
    let e = parse("flow_id: \"hello\"  # the greeting\nphases: [m\n").unwrap_err();
    assert_eq!(e.flow_id.as_deref(), Some("hello"), "{e}");
    assert_eq!(declared_flow_id("flow_id: 'a.b'\n"), Some("a.b".into()));
    assert_eq!(declared_flow_id("x:\n  flow_id: nested\n"), None);
    assert_eq!(declared_flow_id("flow_id: 'not valid'\n"), None);
    assert_eq!(declared_flow_id("{flow_id: f}\n"), None);
}

#[test]
fn values_quoted_from_a_file_are_clipped() {
    let long = "x ".repeat(200_000);
    let e = parse(&format!("flow_id: f\nphases: [\"{long}\"]\n")).unwrap_err();
    assert!(e.message.chars().count() < 200, "{}", e.message.len());
    assert!(e.message.contains("…\" is invalid — use 1-128"), "{e}");
    let e = parse(&format!(
        "flow_id: f\nphases: [m]\n{}: 1\n",
        "k".repeat(1000)
    ))
    .unwrap_err();
    assert!(
        e.message.chars().count() <= MAX_MESSAGE_CHARS,
        "{}",
        e.message.len()
    );
    assert!(e.message.starts_with("unknown field `kkkk"), "{e}");
    assert!(
        e.message.ends_with("so a typo cannot change what runs)"),
        "{e}"
    );
}

#[test]
fn administrative_handlers_allowed_in_official_flows() {
    let text = "flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: handler, input: {handler: 'kernel:network.grant'}}\n";
    assert!(parse_flow(text, origin(SourceRank::Official)).is_ok());
    assert!(parse_flow(text, origin(SourceRank::Pack)).is_err());
}

#[test]
fn pack_flows_infer_owner_pack() {
    let text = "flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: python_file_call, file: x.py}\n";
    let o = FlowOrigin {
        rank: SourceRank::Pack,
        path: "p.flow.yaml".into(),
        pack_id: Some("pk".into()),
    };
    let flow = parse_flow(text, o).unwrap();
    assert!(
        matches!(&flow.steps[0].kind, StepKind::Block { owner_pack, .. } if owner_pack == "pk")
    );
}

#[test]
fn fail_soft_false_makes_abort_the_default() {
    let text = "flow_id: f\nphases: [m]\ndefaults: {fail_soft: false}\nsteps:\n  - {id: a, phase: m, type: set, input: {key: k}}\n  - {id: b, phase: m, type: set, input: {key: k}, on_error: continue}\n";
    let flow = parse(text).unwrap();
    assert_eq!(flow.steps[0].on_error, OnError::Abort);
    assert_eq!(flow.steps[1].on_error, OnError::Continue);
}

#[test]
fn principal_override_is_recorded() {
    let text = "flow_id: f\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: python_file_call, file: x.py, owner_pack: p, principal_id: other}\n";
    let flow = parse(text).unwrap();
    assert!(
        matches!(&flow.steps[0].kind, StepKind::Block { principal_override: Some(o), .. } if o == "other")
    );
}

fn step(id: &str, phase: &str, priority: f64) -> Step {
    Step {
        id: id.into(),
        phase: phase.into(),
        priority,
        kind: StepKind::Set {
            key: Some("k".into()),
            value: Value::Null,
        },
        when: None,
        output: None,
        timeout_seconds: 60,
        on_error: OnError::Continue,
        origin: SourceRank::Shared,
        line: None,
        placed_by: None,
    }
}

#[test]
fn ordering_by_phase_priority_id() {
    let phases = vec!["prepare".to_string(), "main".to_string()];
    let mut steps = vec![
        step("z", "main", 10.0),
        step("b", "prepare", 100.0),
        step("a", "prepare", 100.0),
        step("c", "prepare", 5.0),
        step("y", "main", 10.0),
    ];
    sort_steps(&mut steps, &phases);
    let ids: Vec<_> = steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["c", "a", "b", "y", "z"]);
}

proptest! {
    /// Sorting yields a sequence ordered by (phase index, priority, id), and is a permutation.
    #[test]
    fn ordering_property(specs in prop::collection::vec((0usize..3, -5i32..5, "[a-e]{1,3}"), 0..30)) {
        let phases: Vec<String> = ["p0", "p1", "p2"].iter().map(|s| s.to_string()).collect();
        let mut steps: Vec<Step> = specs.iter().enumerate()
            .map(|(i, (p, pr, id))| step(&format!("{id}{i}"), &phases[*p], *pr as f64))
            .collect();
        let mut before: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
        sort_steps(&mut steps, &phases);
        for pair in steps.windows(2) {
            let key = |s: &Step| (phases.iter().position(|p| *p == s.phase).unwrap(), s.priority, s.id.clone());
            let (a, b) = (key(&pair[0]), key(&pair[1]));
            prop_assert!(a.0 < b.0 || (a.0 == b.0 && (a.1 < b.1 || (a.1 == b.1 && a.2 <= b.2))));
        }
        let mut after: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
        before.sort();
        after.sort();
        prop_assert_eq!(before, after);
    }

    /// No text makes the parser panic.
    #[test]
    fn parse_total(text in "[a-z_:{}\\[\\],\\-\\n $.'\"0-9]{0,200}") {
        let _ = parse(&text);
    }
}

#[test]
fn the_id_index_finds_what_the_search_finds() {
    let text = "a: 1\nsteps:\n  - {id: x, phase: m}\n  - {phase: m, id: 'y'}\n  - id: \"z\" # c\n  - pid: w\n  - id: w\n  - id: y\n";
    let idx = IdLines::new(text);
    for v in ["x", "y", "z", "w", "nope"] {
        assert_eq!(idx.first(v), find_line(text, "id:", Some(v)), "{v}");
    }
    assert_eq!(idx.after(4, "y"), Some(8));
    assert_eq!(idx.after(8, "y"), None);
}

#[test]
fn a_huge_line_of_keys_is_indexed_in_one_pass() {
    // 400 KB of `id: id: id: …` on one line (quadratic before: seconds per 16 KB).
    let line = "id: ".repeat(100_000);
    let text = format!("flow_id: f\n# {line}\nsteps:\n  - id: s\n");
    let idx = IdLines::new(&text);
    assert_eq!(idx.first("s"), Some(4));
    assert_eq!(find_line(&text, "id:", Some("s")), Some(4));
}

proptest::proptest! {
    #[test]
    fn the_id_index_agrees_with_the_search(
        lines in proptest::collection::vec(
            proptest::sample::select(vec![
                "  - id: a", "  - {id: b, phase: m}", "  - id: 'a'", "# id: c", "  - pid: a",
                "    id: \"b\" # x", "  - {phase: m, id: c}", "steps:", "  - id: a b",
            ]),
            0..12,
        )
    ) {
        let text = lines.join("\n");
        let idx = IdLines::new(&text);
        // Step ids never hold spaces (they are checked before their line is looked up).
        for v in ["a", "b", "c"] {
            proptest::prop_assert_eq!(idx.first(v), find_line(&text, "id:", Some(v)), "{} in {:?}", v, text);
        }
    }
}
