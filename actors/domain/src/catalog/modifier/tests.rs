//! Modifier parsing and application: each action, the order of §4, every skip and refusal, and
//! properties over random modifier sets.

use super::*;
use crate::catalog::modifier::apply::{apply_within, MAX_APPLICATIONS};
use crate::catalog::modifier::{MAX_ADDED_STEP_BYTES, MAX_STEP_BYTES};
use crate::catalog::Environment;
use crate::flow::{parse_flow, FlowOrigin, OnError, SourceRank};
use crate::sources::{build_table, FlowTable};
use proptest::prelude::*;

fn flow(text: &str) -> Flow {
    parse_flow(
        text,
        FlowOrigin {
            rank: SourceRank::Official,
            path: "flows/f.flow.yaml".into(),
            pack_id: None,
        },
    )
    .unwrap()
}

use crate::Flow;

const BASE: &str = "flow_id: f\nphases: [pre, main, post]\nsteps:\n  - {id: a, phase: pre, type: set, input: {key: a, value: 1}}\n  - {id: b, phase: main, type: set, input: {key: b, value: 1}}\n  - {id: c, phase: main, priority: 200, type: set, input: {key: c, value: 1}}\n  - {id: d, phase: post, type: set, input: {key: d, value: 1}}\n";

fn file(name: &str, text: &str) -> ModifierFile {
    ModifierFile {
        origin: ModifierOrigin {
            rank: SourceRank::Shared,
            path: format!("user_data/shared/flows/modifiers/{name}.modifier.yaml"),
            pack_id: None,
        },
        bytes: Ok(text.as_bytes().to_vec()),
    }
}

fn pack_file(pack: &str, name: &str, text: &str) -> ModifierFile {
    ModifierFile {
        origin: ModifierOrigin {
            rank: SourceRank::Pack,
            path: format!("ecosystem/{pack}/flows/modifiers/{name}.modifier.yaml"),
            pack_id: Some(pack.into()),
        },
        bytes: Ok(text.as_bytes().to_vec()),
    }
}

/// A modifier of `action` on `target` placing a set step `id`.
fn m(id: &str, action: &str, phase: &str, target: Option<&str>, prio: i32) -> String {
    let target = target
        .map(|t| format!("target_step_id: {t}\n"))
        .unwrap_or_default();
    let step = if action == "remove" {
        String::new()
    } else {
        format!("step: {{id: {id}_step, type: set, input: {{key: {id}, value: 1}}}}\n")
    };
    format!("modifier_id: {id}\ntarget_flow_id: f\nphase: {phase}\npriority: {prio}\naction: {action}\n{target}{step}")
}

fn run(flow_text: &str, files: Vec<ModifierFile>) -> (FlowTable, ModifierReport) {
    let table = build_table(vec![Ok(flow(flow_text))]);
    apply_all(table, files, &Environment::default())
}

fn ids(t: &FlowTable) -> Vec<String> {
    t.flows["f"].steps.iter().map(|s| s.id.clone()).collect()
}

#[test]
fn each_action_places_its_step() {
    let (t, r) = run(
        BASE,
        vec![
            file("1", &m("before", "inject_before", "main", Some("b"), 100)),
            file("2", &m("after", "inject_after", "main", Some("b"), 100)),
            file("3", &m("app", "append", "main", None, 100)),
            file("4", &m("rep", "replace", "post", Some("d"), 100)),
            file("5", &m("rm", "remove", "pre", Some("a"), 100)),
        ],
    );
    assert_eq!(
        ids(&t),
        [
            "before_step",
            "b",
            "after_step",
            "c",
            "app_step",
            "rep_step"
        ]
    );
    let f = &t.flows["f"];
    let placed: Vec<Option<&str>> = f.steps.iter().map(|s| s.placed_by.as_deref()).collect();
    assert_eq!(
        placed,
        [
            Some("before"),
            None,
            Some("after"),
            None,
            Some("app"),
            Some("rep")
        ]
    );
    assert!(
        f.steps[0].origin == SourceRank::Shared,
        "the modifier's own origin"
    );
    let apps = &r.by_flow["f"];
    assert!(apps.iter().all(|a| a.status == Status::Applied), "{apps:?}");
    // Replace and remove first, then before, after, append.
    let order: Vec<&str> = apps.iter().map(|a| a.modifier_id.as_str()).collect();
    assert_eq!(order, ["rm", "rep", "before", "after", "app"]);
}

#[test]
fn several_injections_on_one_target_keep_their_sorted_order() {
    let (t, _) = run(
        BASE,
        vec![
            file("1", &m("b2", "inject_before", "main", Some("c"), 20)),
            file("2", &m("b1", "inject_before", "main", Some("c"), 10)),
            file("3", &m("a2", "inject_after", "main", Some("b"), 20)),
            file("4", &m("a1", "inject_after", "main", Some("b"), 10)),
            file("5", &m("a0", "inject_after", "main", Some("b"), 10)),
            file("6", &m("p2", "append", "pre", None, 5)),
            file("7", &m("p1", "append", "pre", None, 1)),
        ],
    );
    assert_eq!(
        ids(&t),
        [
            "a", "p1_step", "p2_step", "b", "a0_step", "a1_step", "a2_step", "b1_step", "b2_step",
            "c", "d"
        ]
    );
}

#[test]
fn append_to_an_empty_phase_goes_where_the_phase_begins() {
    let text = "flow_id: f\nphases: [pre, main, post]\nsteps:\n  - {id: a, phase: pre, type: set, input: {key: a, value: 1}}\n  - {id: d, phase: post, type: set, input: {key: d, value: 1}}\n";
    let (t, _) = run(text, vec![file("1", &m("x", "append", "main", None, 1))]);
    assert_eq!(ids(&t), ["a", "x_step", "d"]);
    let text = "flow_id: f\nphases: [pre, main]\nsteps:\n  - {id: b, phase: main, type: set, input: {key: b, value: 1}}\n";
    let (t, _) = run(text, vec![file("1", &m("x", "append", "pre", None, 1))]);
    assert_eq!(ids(&t), ["x_step", "b"]);
}

#[test]
fn skips_say_why_and_change_nothing() {
    let env_needs = "modifier_id: needs\ntarget_flow_id: f\nphase: main\naction: append\nstep: {id: n, type: set, input: {key: n, value: 1}}\nrequires: {interfaces: [ai.client], capabilities: [tool_support]}\n";
    let (t, r) = run(
        BASE,
        vec![
            file("1", &m("nophase", "append", "nowhere", None, 1)),
            file("2", &m("missing", "inject_after", "main", Some("zz"), 1)),
            file("3", &m("otherphase", "inject_after", "main", Some("a"), 1)),
            file("4", env_needs),
            file(
                "5",
                "modifier_id: dup_id\ntarget_flow_id: f\nphase: main\naction: append\nstep: {id: b, type: set, input: {key: b, value: 2}}\n",
            ),
        ],
    );
    assert_eq!(ids(&t), ["a", "b", "c", "d"]);
    let reason = |id: &str| {
        r.by_flow["f"]
            .iter()
            .find(|a| a.modifier_id == id)
            .and_then(|a| a.reason.clone())
            .unwrap()
    };
    assert!(reason("nophase").contains("phase \"nowhere\" is not one of flow \"f\"'s phases"));
    assert!(reason("missing").contains("target step \"zz\" is not in flow \"f\""));
    assert!(reason("otherphase").contains("is in phase \"pre\""));
    assert!(reason("needs").contains("requires interface \"ai.client\""));
    assert!(reason("dup_id").contains("already has a step \"b\""));
    assert_eq!(r.skipped().count(), 5);

    // With the requirements met it applies.
    let mut env = Environment::default();
    env.interfaces.insert("ai.client".into());
    env.capabilities.insert("tool_support".into());
    let (t, r) = apply_all(
        build_table(vec![Ok(flow(BASE))]),
        vec![file("4", env_needs)],
        &env,
    );
    assert!(ids(&t).contains(&"n".to_string()));
    assert_eq!(r.by_flow["f"][0].status, Status::Applied);
    // A kernel interface counts; a capability without a handler does not.
    env.capabilities.clear();
    let (_, r) = apply_all(
        build_table(vec![Ok(flow(BASE))]),
        vec![file("4", &env_needs.replace("ai.client", "kernel.flows"))],
        &env,
    );
    assert!(r.by_flow["f"][0]
        .reason
        .as_ref()
        .unwrap()
        .contains("requires capability \"tool_support\""));
}

#[test]
fn on_missing_step_error_refuses_the_flow() {
    let strict = BASE.replace(
        "phases: [pre, main, post]",
        "phases: [pre, main, post]\ndefaults: {on_missing_step: error}",
    );
    let (t, r) = run(
        &strict,
        vec![file("1", &m("missing", "remove", "main", Some("zz"), 1))],
    );
    assert!(!t.flows.contains_key("f"));
    let failure = t.failure("f").expect("the refusal is the flow's failure");
    assert!(failure.file.ends_with("1.modifier.yaml"), "{failure:?}");
    assert!(
        failure.message.contains("on_missing_step: error"),
        "{}",
        failure.message
    );
    assert_eq!(r.by_flow["f"][0].status, Status::Skipped);
}

#[test]
fn defaults_of_the_target_flow_decide_on_error() {
    let abort = BASE.replace(
        "phases: [pre, main, post]",
        "phases: [pre, main, post]\ndefaults: {fail_soft: false}",
    );
    let (t, _) = run(
        &abort,
        vec![
            file("1", &m("x", "append", "main", None, 1)),
            file(
                "2",
                "modifier_id: y\ntarget_flow_id: f\nphase: main\naction: append\nstep: {id: y, type: set, on_error: continue, input: {key: y, value: 1}}\n",
            ),
        ],
    );
    let f = &t.flows["f"];
    let step = |id: &str| f.steps.iter().find(|s| s.id == id).unwrap();
    assert_eq!(step("x_step").on_error, OnError::Abort);
    assert_eq!(step("y").on_error, OnError::Continue);
}

#[test]
fn patterns_target_every_matching_flow() {
    let other = BASE.replace("flow_id: f", "flow_id: my_pack.chat");
    let third = BASE.replace("flow_id: f", "flow_id: other");
    let table = build_table(vec![Ok(flow(BASE)), Ok(flow(&other)), Ok(flow(&third))]);
    let text =
        m("all", "append", "main", None, 1).replace("target_flow_id: f", "target_flow_id: \"*\"");
    let scoped = m("mine", "append", "main", None, 1)
        .replace("target_flow_id: f", "target_flow_id: \"my_pack.*\"");
    let none = m("none", "append", "main", None, 1)
        .replace("target_flow_id: f", "target_flow_id: nothing");
    let (t, r) = apply_all(
        table,
        vec![file("1", &text), file("2", &scoped), file("3", &none)],
        &Environment::default(),
    );
    assert_eq!(t.flows["my_pack.chat"].steps.len(), 6);
    assert_eq!(t.flows["f"].steps.len(), 5);
    assert_eq!(t.flows["other"].steps.len(), 5);
    assert_eq!(r.unmatched.len(), 1);
    assert!(r.unmatched[0].reason.contains("matches no loaded flow"));
}

#[test]
fn bad_modifiers_are_refused_with_file_and_line() {
    let cases: &[(&str, &str)] = &[
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: explode\nstep: {id: s, type: set, input: {key: k}}\n", "action \"explode\" is unknown"),
        ("target_flow_id: f\nphase: main\naction: append\n", "modifier_id is required"),
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: inject_after\nstep: {id: s, type: set, input: {key: k}}\n", "needs target_step_id"),
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: append\n", "needs a step"),
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: remove\ntarget_step_id: a\nstep: {id: s, type: set, input: {key: k}}\n", "remove takes no step"),
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: append\nstep:\n  id: s\n  type: nope\n", "unknown type"),
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: append\nstep: {id: s, phase: other, type: set, input: {key: k}}\n", "differs from the modifier's phase"),
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: append\nwehn: x\nstep: {id: s, type: set, input: {key: k}}\n", "wehn"),
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: append\nstep: {id: s, type: handler, input: {handler: \"kernel:network.grant\", args: {}}}\n", "administrative"),
        ("modifier_id: x\ntarget_flow_id: \"bad id!\"\nphase: main\naction: append\nstep: {id: s, type: set, input: {key: k}}\n", "neither a flow id nor a pattern"),
        ("modifier_id: x\ntarget_flow_id: f\nphase: main\naction: append\nstep: {id: s, type: python_file_call, file: blocks/x.py}\n", "owner_pack is required"),
    ];
    for (text, want) in cases {
        let (ok, refused) = parse_all(&[file("bad", text)]);
        assert!(ok.is_empty(), "{text}");
        assert_eq!(refused.len(), 1, "{text}");
        let shown = refused[0].to_string();
        assert!(shown.contains(want), "{text}\n→ {shown}");
        assert!(
            shown.starts_with("user_data/shared/flows/modifiers/bad.modifier.yaml:"),
            "{shown}"
        );
    }
    // A pack's block step may omit owner_pack: it is the pack's own.
    let (ok, _) = parse_all(&[pack_file(
        "p",
        "x",
        "modifier_id: x\ntarget_flow_id: f\nphase: main\naction: append\nstep: {id: s, type: python_file_call, file: blocks/x.py}\n",
    )]);
    assert_eq!(ok[0].step.as_ref().unwrap().origin, SourceRank::Pack);
}

#[test]
fn a_duplicate_modifier_id_refuses_every_file_declaring_it() {
    let (ok, refused) = parse_all(&[
        file("one", &m("same", "append", "main", None, 1)),
        pack_file("p", "two", &m("same", "append", "main", None, 2)),
        file("three", &m("other", "append", "main", None, 1)),
    ]);
    assert_eq!(ok.len(), 1);
    assert_eq!(refused.len(), 2);
    assert!(refused
        .iter()
        .all(|r| r.reason.contains("is also declared by")));
}

#[test]
fn hostile_files_are_refused_quickly() {
    let deep = format!(
        "modifier_id: x\ntarget_flow_id: f\nphase: main\naction: append\nstep: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (_, refused) = parse_all(&[file("deep", &deep)]);
    assert_eq!(refused.len(), 1);
    let bin = ModifierFile {
        bytes: Ok(vec![0xff, 0xfe, b'\n']),
        ..file("bin", "")
    };
    let (_, refused) = parse_all(&[bin]);
    assert!(refused[0].reason.contains("UTF-8"));
}

// ---- properties ---------------------------------------------------------------------------------

const ACTIONS: [&str; 5] = [
    "inject_before",
    "inject_after",
    "append",
    "replace",
    "remove",
];
const TARGETS: [&str; 5] = ["a", "b", "c", "d", "zz"];
const PHASES: [&str; 3] = ["pre", "main", "post"];

fn phase_of(target: &str) -> &'static str {
    match target {
        "a" => "pre",
        "d" => "post",
        _ => "main",
    }
}

prop_compose! {
    fn modifier_text(i: usize)(action in 0..5usize, target in 0..5usize, phase in 0..3usize, prio in 0..4i32, own_phase in any::<bool>()) -> String {
        let action = ACTIONS[action];
        let target = TARGETS[target];
        let phase = if own_phase { phase_of(target) } else { PHASES[phase] };
        let t = (action != "append").then_some(target);
        m(&format!("m{i}"), action, phase, t, prio * 10)
    }
}

fn modifier_set() -> impl Strategy<Value = Vec<String>> {
    (0..12usize).prop_flat_map(|n| (0..n).map(modifier_text).collect::<Vec<_>>())
}

proptest! {
    #[test]
    fn file_order_does_not_matter(texts in modifier_set(), seed in any::<u64>()) {
        let files: Vec<ModifierFile> = texts.iter().enumerate().map(|(i, t)| file(&format!("{i}"), t)).collect();
        let mut shuffled = files.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let (a, ra) = run(BASE, files);
        let (b, rb) = run(BASE, shuffled);
        prop_assert_eq!(&a.flows["f"].steps, &b.flows["f"].steps);
        prop_assert_eq!(&ra.by_flow, &rb.by_flow);
    }

    #[test]
    fn applying_the_same_set_twice_changes_nothing_more(texts in modifier_set()) {
        let files: Vec<ModifierFile> = texts.iter().enumerate().map(|(i, t)| file(&format!("{i}"), t)).collect();
        let (once, _) = run(BASE, files.clone());
        let (twice, _) = apply_all(once.clone(), files, &Environment::default());
        prop_assert_eq!(&once.flows["f"].steps, &twice.flows["f"].steps);
    }

    #[test]
    fn no_step_is_lost_except_by_remove_or_replace(texts in modifier_set()) {
        let files: Vec<ModifierFile> = texts.iter().enumerate().map(|(i, t)| file(&format!("{i}"), t)).collect();
        let (t, r) = run(BASE, files);
        let out = ids(&t);
        let taken: Vec<&str> = r.by_flow.get("f").into_iter().flatten()
            .filter(|a| a.status == Status::Applied && matches!(a.action, Action::Remove | Action::Replace))
            .filter_map(|a| a.target_step_id.as_deref())
            .collect();
        for original in ["a", "b", "c", "d"] {
            prop_assert!(out.iter().any(|s| s == original) || taken.contains(&original), "{original} lost: {out:?}");
        }
        // Every applied placement is in the flow, once; ids stay unique.
        let mut seen = std::collections::HashSet::new();
        prop_assert!(out.iter().all(|s| seen.insert(s.clone())), "duplicate id: {out:?}");
        // Phases stay in order: a step never lands in another phase's run.
        let f = &t.flows["f"];
        let index: Vec<usize> = f.steps.iter().map(|s| f.phases.iter().position(|p| *p == s.phase).unwrap()).collect();
        prop_assert!(index.windows(2).all(|w| w[0] <= w[1]), "phases out of order: {index:?}");
    }
}

#[test]
fn the_catalog_bounds_what_modifiers_can_add() {
    // Many flows, a few `*` modifiers: the pairs beyond the budget are skipped, with the reason.
    const BUDGET: usize = 40;
    let flows: Vec<_> = (0..(BUDGET / 2 + 10))
        .map(|i| Ok(flow(&format!("flow_id: f{i}\nphases: [main]\n"))))
        .collect();
    let table = build_table(flows);
    let star = |id: &str| {
        file(
            id,
            &format!("modifier_id: {id}\ntarget_flow_id: \"*\"\nphase: main\naction: append\nstep: {{id: {id}, type: set, input: {{key: k, value: 1}}}}\n"),
        )
    };
    let (_, r) = apply_within(
        table,
        vec![star("s1"), star("s2"), star("s3")],
        &Environment::default(),
        BUDGET,
        u64::MAX,
    );
    let skipped: Vec<_> = r.skipped().collect();
    assert!(!skipped.is_empty());
    assert!(skipped.iter().all(|(_, a)| a
        .reason
        .as_ref()
        .unwrap()
        .contains("modifier applications already")));
    let total: usize = r.by_flow.values().map(Vec::len).sum();
    assert_eq!(total, 3 * (BUDGET / 2 + 10));
    let applied = total - skipped.len();
    assert_eq!(applied, BUDGET);
}

#[test]
fn an_effective_flow_keeps_the_step_limit() {
    let mut text = String::from("flow_id: f\nphases: [main]\nsteps:\n");
    for i in 0..crate::flow::MAX_STEPS {
        text.push_str(&format!(
            "  - {{id: s{i}, phase: main, type: set, input: {{key: k, value: 1}}}}\n"
        ));
    }
    let (t, r) = run(&text, vec![file("1", &m("x", "append", "main", None, 1))]);
    assert_eq!(t.flows["f"].steps.len(), crate::flow::MAX_STEPS);
    assert!(r.by_flow["f"][0]
        .reason
        .as_ref()
        .unwrap()
        .contains("more than 1000 steps"));
}

fn official(text: &str) -> Flow {
    flow(text)
}

#[test]
fn official_flows_that_administer_are_never_modified() {
    let admin = "flow_id: f\nphases: [main]\nsteps:\n  - {id: g, phase: main, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: p}}}\n";
    let nested = "flow_id: f\nphases: [main]\nsteps:\n  - {id: call, phase: main, type: handler, input: {handler: \"kernel:flow.run\", args: {flow_id: other}}}\n";
    for text in [admin, nested] {
        let (t, r) = apply_all(
            build_table(vec![Ok(official(text))]),
            vec![
                file(
                    "1",
                    &m("inj", "inject_before", "main", Some(ids_of(text)), 1),
                ),
                file("2", &m("rm", "remove", "main", Some(ids_of(text)), 1)),
            ],
            &Environment::default(),
        );
        assert_eq!(t.flows["f"].steps.len(), 1, "unchanged");
        assert!(t.flows["f"].modified_by.is_none());
        for a in &r.by_flow["f"] {
            assert_eq!(a.status, Status::Skipped);
            assert!(
                a.reason.as_ref().unwrap().contains("administrative step"),
                "{a:?}"
            );
        }
    }
    // An official flow that does not administer may be changed, and says by whom.
    let (t, _) = run(BASE, vec![file("1", &m("x", "append", "main", None, 1))]);
    assert_eq!(t.flows["f"].modified_by.as_deref(), Some("x"));
    // A shared flow with the same steps may be changed (it never administers).
    let shared = parse_flow(
        nested,
        FlowOrigin {
            rank: SourceRank::Shared,
            path: "user_data/shared/flows/f.flow.yaml".into(),
            pack_id: None,
        },
    )
    .unwrap();
    let (t, _) = apply_all(
        build_table(vec![Ok(shared)]),
        vec![file("1", &m("x", "append", "main", None, 1))],
        &Environment::default(),
    );
    assert_eq!(t.flows["f"].steps.len(), 2);
}

fn ids_of(text: &str) -> &'static str {
    if text.contains("id: g,") {
        "g"
    } else {
        "call"
    }
}

#[test]
fn a_large_step_is_refused_and_the_catalog_bounds_the_bytes_modifiers_add() {
    let big = "A".repeat(MAX_STEP_BYTES);
    let (_, refused) = parse_all(&[file(
        "big",
        &format!("modifier_id: big\ntarget_flow_id: \"*\"\nphase: main\naction: append\nstep: {{id: big, type: set, input: {{key: k, value: \"{big}\"}}}}\n"),
    )]);
    assert!(
        refused[0].reason.contains("may hold at most 65536"),
        "{refused:?}"
    );
    // Steps just under the limit, placed into many flows: the bytes beyond the budget are skipped.
    let per_step = MAX_STEP_BYTES - 1024;
    let value = "B".repeat(per_step - 400);
    let flows: Vec<_> = (0..(MAX_ADDED_STEP_BYTES / per_step + 50))
        .map(|i| Ok(flow(&format!("flow_id: f{i}\nphases: [main]\n"))))
        .collect();
    let (t, r) = apply_all(
        build_table(flows),
        vec![file(
            "wide",
            &format!("modifier_id: wide\ntarget_flow_id: \"*\"\nphase: main\naction: append\nstep: {{id: w, type: set, input: {{key: k, value: \"{value}\"}}}}\n"),
        )],
        &Environment::default(),
    );
    let placed = t.flows.values().filter(|f| !f.steps.is_empty()).count();
    assert!(
        placed * (per_step - 400) <= MAX_ADDED_STEP_BYTES,
        "{placed}"
    );
    assert!(placed > 0);
    let skipped: Vec<_> = r.skipped().collect();
    assert!(!skipped.is_empty());
    assert!(skipped[0]
        .1
        .reason
        .as_ref()
        .unwrap()
        .contains("hold 67108864 bytes already"));
}

#[test]
fn pattern_matching_has_a_budget_and_past_it_no_pattern_modifier_applies_anywhere() {
    let flows: Vec<_> = (0..50)
        .map(|i| Ok(flow(&format!("flow_id: f{i}\nphases: [main]\n"))))
        .collect();
    let files = vec![
        file(
            "star",
            "modifier_id: star\ntarget_flow_id: \"f*\"\nphase: main\naction: append\nstep: {id: s, type: set, input: {key: k, value: 1}}\n",
        ),
        file(
            "exact",
            "modifier_id: exact\ntarget_flow_id: f7\nphase: main\naction: append\nstep: {id: e, type: set, input: {key: k, value: 1}}\n",
        ),
    ];
    // Enough steps: the pattern applies to every flow.
    let (t, _) = apply_within(
        build_table(flows.clone()),
        files.clone(),
        &Environment::default(),
        MAX_APPLICATIONS,
        u64::MAX,
    );
    assert!(t
        .flows
        .values()
        .all(|f| f.steps.iter().any(|s| s.id == "s")));
    // Too few: refused everywhere (not applied to the first flows only); exact targets still apply.
    let (t, r) = apply_within(
        build_table(flows),
        files,
        &Environment::default(),
        MAX_APPLICATIONS,
        40,
    );
    assert!(t
        .flows
        .values()
        .all(|f| f.steps.iter().all(|s| s.id != "s")));
    assert!(t.flows["f7"].steps.iter().any(|s| s.id == "e"));
    assert_eq!(r.refused.len(), 1, "{:?}", r.refused);
    assert!(r.refused[0].reason.contains("pattern"));
    assert!(r.unmatched.is_empty());
}
