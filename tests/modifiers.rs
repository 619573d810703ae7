//! Modifiers end to end (contract §4, §16): each action through the real binary, what
//! `GET /api/flows/{id}` shows, every skip and refusal in diagnostics and the audit, pack
//! modifiers that load with their pack's approval and never gain administrative rights, and a
//! reload that leaves runs in flight alone.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TARGET: &str = "flow_id: target\nphases: [pre, main, post]\nsteps:\n  - {id: a, phase: pre, type: set, input: {key: trail, value: [a]}}\n  - {id: b, phase: main, type: set, input: {key: b, value: 1}}\n  - {id: c, phase: main, priority: 200, type: set, input: {key: c, value: 1}}\n  - {id: d, phase: post, type: set, input: {key: d, value: 1}}\n";

fn modifier(home: &std::path::Path, name: &str, text: &str) {
    write(
        home,
        &format!("user_data/shared/flows/modifiers/{name}.modifier.yaml"),
        text,
    );
}

fn set_step(id: &str) -> String {
    format!("step: {{id: {id}, type: set, input: {{key: {id}, value: true}}}}\n")
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no {key}={value} in {list}"))
}

#[tokio::test]
async fn each_action_is_applied_shown_run_and_audited() {
    let home = fresh_home();
    let h = home.path();
    write(h, "user_data/shared/flows/target.flow.yaml", TARGET);
    modifier(h, "before", &format!("modifier_id: before\ntarget_flow_id: target\nphase: main\naction: inject_before\ntarget_step_id: b\n{}", set_step("before_b")));
    // Two inject_after on one target: right after it, in (priority, id) order.
    modifier(h, "after2", &format!("modifier_id: after2\ntarget_flow_id: target\nphase: main\npriority: 20\naction: inject_after\ntarget_step_id: b\n{}", set_step("after_b2")));
    modifier(h, "nested/after1", &format!("modifier_id: after1\ntarget_flow_id: target\nphase: main\npriority: 10\naction: inject_after\ntarget_step_id: b\n{}", set_step("after_b1")));
    modifier(
        h,
        "append",
        &format!(
            "modifier_id: appender\ntarget_flow_id: \"tar*\"\nphase: main\naction: append\n{}",
            set_step("tail")
        ),
    );
    modifier(h, "replace", "modifier_id: replacer\ntarget_flow_id: \"t?rget\"\nphase: post\naction: replace\ntarget_step_id: d\nstep: {id: d2, type: set, input: {key: replaced, value: yes}}\n");
    modifier(h, "remove", "modifier_id: remover\ntarget_flow_id: \"[st]arget\"\nphase: pre\naction: remove\ntarget_step_id: a\n");
    let k = Kernel::start(h, &[]);
    let (s, v) = k.get("/api/flows/target").await;
    assert_eq!(s, 200, "{v}");
    let f = &v["data"];
    assert_eq!(
        ids(&f["steps"]),
        ["before_b", "b", "after_b1", "after_b2", "c", "tail", "d2"]
    );
    let placed: Vec<Value> = f["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["placed_by"].clone())
        .collect();
    assert_eq!(
        placed,
        [
            json!("before"),
            Value::Null,
            json!("after1"),
            json!("after2"),
            Value::Null,
            json!("appender"),
            json!("replacer")
        ]
    );
    let applied = &f["modifiers_applied"];
    assert_eq!(applied.as_array().unwrap().len(), 6, "{applied}");
    let order: Vec<&str> = applied
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["modifier_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["remover", "replacer", "before", "after1", "after2", "appender"]
    );
    let r = find(applied, "modifier_id", "replacer");
    assert_eq!(r["action"], "replace");
    assert_eq!(r["target_step_id"], "d");
    assert_eq!(r["status"], "applied");
    assert_eq!(r["reason"], Value::Null);
    assert_eq!(r["source"], "shared");
    // The run executes the effective steps in that order.
    let (s, run) = k.run("target", json!({})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        ids(&run["steps"]),
        ["before_b", "b", "after_b1", "after_b2", "c", "tail", "d2"]
    );
    assert_eq!(run["result"]["replaced"], "yes");
    // The CLI shows who placed each step and what each modifier did.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rumi"))
        .args(["flow", "show", "target"])
        .env("RUMI_HOME", h)
        .env("RUMI_API_TOKEN", TOKEN)
        .env("RUMI_API_PORT", port_of(&k).to_string())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.to_lowercase().contains("placed by") && shown.contains("appender"),
        "{shown}"
    );
    assert!(
        shown.contains("inject_after") && shown.contains("applied"),
        "{shown}"
    );
    assert!(run["result"].get("trail").is_none(), "a was removed: {run}");
    // Every application is audited.
    let (_, audit) = k
        .get("/api/audit?category=modifier_application&limit=100")
        .await;
    let text = audit.to_string();
    for id in [
        "before", "after1", "after2", "appender", "replacer", "remover",
    ] {
        assert!(
            text.contains(&format!("\"modifier_id\":\"{id}\"")),
            "{id}: {audit}"
        );
    }
    assert!(text.contains("modifier_applied"), "{audit}");
    // A reload that changes nothing audits nothing new.
    let count = |a: &Value| a.to_string().matches("modifier_applied").count();
    let before = count(&audit);
    k.reload().await;
    let (_, audit) = k
        .get("/api/audit?category=modifier_application&limit=100")
        .await;
    assert_eq!(count(&audit), before);
    k.stop();
}

#[tokio::test]
async fn skips_and_refusals_say_why() {
    let home = fresh_home();
    let h = home.path();
    write(h, "user_data/shared/flows/target.flow.yaml", TARGET);
    write(
        h,
        "user_data/shared/flows/strict.flow.yaml",
        "flow_id: strict\nphases: [main]\ndefaults: {on_missing_step: error}\nsteps:\n  - {id: only, phase: main, type: set, input: {key: k, value: 1}}\n",
    );
    modifier(
        h,
        "nophase",
        &format!(
            "modifier_id: nophase\ntarget_flow_id: target\nphase: nowhere\naction: append\n{}",
            set_step("x1")
        ),
    );
    modifier(h, "nostep", &format!("modifier_id: nostep\ntarget_flow_id: target\nphase: main\naction: inject_after\ntarget_step_id: ghost\n{}", set_step("x2")));
    modifier(h, "needs", &format!("modifier_id: needs\ntarget_flow_id: target\nphase: main\naction: append\nrequires: {{interfaces: [ai.client]}}\n{}", set_step("x3")));
    modifier(h, "needs_cap", &format!("modifier_id: needs_cap\ntarget_flow_id: target\nphase: main\naction: append\nrequires: {{capabilities: [store.get, tool_support]}}\n{}", set_step("x4")));
    modifier(
        h,
        "dup1",
        &format!(
            "modifier_id: twin\ntarget_flow_id: target\nphase: main\naction: append\n{}",
            set_step("x5")
        ),
    );
    modifier(
        h,
        "dup2",
        &format!(
            "modifier_id: twin\ntarget_flow_id: target\nphase: main\naction: append\n{}",
            set_step("x6")
        ),
    );
    modifier(h, "badstep", "modifier_id: badstep\ntarget_flow_id: target\nphase: main\naction: append\nstep:\n  id: x7\n  type: teleport\n");
    modifier(h, "strict", &format!("modifier_id: strict_missing\ntarget_flow_id: strict\nphase: main\naction: inject_before\ntarget_step_id: ghost\n{}", set_step("x8")));
    let k = Kernel::start(h, &[]);
    let (_, v) = k.get("/api/flows/target").await;
    assert_eq!(
        ids(&v["data"]["steps"]),
        ["a", "b", "c", "d"],
        "nothing applied: {v}"
    );
    let applied = &v["data"]["modifiers_applied"];
    let reason = |id: &str| {
        let e = find(applied, "modifier_id", id);
        assert_eq!(e["status"], "skipped", "{e}");
        e["reason"].as_str().unwrap().to_string()
    };
    assert!(reason("nophase").contains("phase \"nowhere\" is not one of flow \"target\"'s phases"));
    assert!(reason("nostep").contains("target step \"ghost\" is not in flow \"target\""));
    assert!(reason("needs").contains("requires interface \"ai.client\""));
    // A built-in capability counts as installed; an unknown one does not.
    assert!(reason("needs_cap").contains("requires capability \"tool_support\""));
    // Diagnostics: skips and refusals as entries {kind, modifier_id, file, reason}.
    let (_, d) = k.get("/api/diagnostics").await;
    let entries = &d["data"]["modifiers"];
    let of = |kind: &str, id: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind && e["modifier_id"] == id)
            .unwrap_or_else(|| panic!("no {kind} {id}: {entries}"))
            .clone()
    };
    let skipped = of("modifier_skipped", "nostep");
    assert_eq!(
        skipped["file"],
        "user_data/shared/flows/modifiers/nostep.modifier.yaml"
    );
    let twin = of("modifier_refused", "twin");
    assert!(twin["reason"]
        .as_str()
        .unwrap()
        .contains("also declared by"));
    let bad = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == "user_data/shared/flows/modifiers/badstep.modifier.yaml")
        .unwrap();
    assert_eq!(bad["kind"], "modifier_refused");
    assert!(
        bad["reason"].as_str().unwrap().contains("unknown type"),
        "{bad}"
    );
    assert!(bad["line"].as_u64().is_some(), "{bad}");
    // on_missing_step: error refuses the flow, and its 404 says why.
    let (s, v) = k.post("/api/flows/strict/run", json!({})).await;
    assert_eq!(s, 404, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("strict.modifier.yaml"), "{error}");
    assert!(error.contains("on_missing_step: error"), "{error}");
    // Refusals are audited.
    let (_, audit) = k
        .get("/api/audit?category=modifier_application&limit=100")
        .await;
    assert!(audit.to_string().contains("modifier_refused"), "{audit}");
    k.stop();
}

/// A pack's modifiers load with its approval; its injected step keeps the pack's origin, so an
/// official flow it is injected into does not lend it administrative rights, directly (refused at
/// load) or through a nested official flow (denied when it runs).
#[tokio::test]
async fn pack_modifiers_follow_approval_and_never_administer() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "modpack", &[]);
    make_pack(h, "net_pack", &[]);
    write(
        h,
        "flows/grant_net.flow.yaml",
        "flow_id: grant_net\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: net_pack, allowed_domains: [\"example.com\"], allowed_ports: [443]}}, output: grant}\n",
    );
    write(
        h,
        "flows/official.flow.yaml",
        "flow_id: official\nphases: [m]\nsteps:\n  - {id: first, phase: m, type: set, input: {key: first, value: 1}}\n",
    );
    write(
        h,
        "ecosystem/modpack/backend/flows/modifiers/escalate.modifier.yaml",
        "modifier_id: escalate\ntarget_flow_id: official\nphase: m\naction: inject_after\ntarget_step_id: first\nstep: {id: sneak, type: handler, input: {handler: \"kernel:flow.run\", args: {flow_id: grant_net, inputs: {}}}, output: child}\n",
    );
    write(
        h,
        "ecosystem/modpack/backend/flows/modifiers/direct.modifier.yaml",
        "modifier_id: direct\ntarget_flow_id: official\nphase: m\naction: append\nstep: {id: grant, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: net_pack, allowed_domains: [\"*\"], allowed_ports: [0]}}}\n",
    );
    let k = Kernel::start(h, &[]);
    let (_, v) = k.get("/api/flows/official").await;
    assert_eq!(ids(&v["data"]["steps"]), ["first"], "not approved yet: {v}");
    k.approve("net_pack").await;
    k.approve("modpack").await;
    // Approval reloads the catalog: no reload call.
    let (_, v) = k.get("/api/flows/official").await;
    assert_eq!(ids(&v["data"]["steps"]), ["first", "sneak"], "{v}");
    let sneak = &v["data"]["steps"][1];
    assert_eq!(sneak["origin"], "pack");
    assert_eq!(sneak["placed_by"], "escalate");
    let e = find(&v["data"]["modifiers_applied"], "modifier_id", "escalate");
    assert_eq!(e["source"], "pack");
    assert_eq!(e["pack_id"], "modpack");
    // The administrative step was refused at load.
    let (_, d) = k.get("/api/diagnostics").await;
    let direct = d["data"]["modifiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["modifier_id"] == "direct")
        .unwrap_or_else(|| panic!("{d}"))
        .clone();
    assert_eq!(direct["kind"], "modifier_refused");
    assert!(
        direct["reason"]
            .as_str()
            .unwrap()
            .contains("administrative"),
        "{direct}"
    );
    // Through a nested official flow: denied.
    let (s, run) = k.run("official", json!({})).await;
    assert_eq!(s, 200, "{run}");
    let child = &run["result"]["child"];
    assert!(child.to_string().contains("administ"), "{run}");
    let check = json!({"pack_id": "net_pack", "domain": "example.com", "port": 443});
    let (_, v) = k.post("/api/network/check", check.clone()).await;
    assert_eq!(v["data"]["allowed"], false, "no grant was made: {v}");
    // The same official flow run directly does administer (the denial was the origin's).
    let (_, run) = k.run("grant_net", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, v) = k.post("/api/network/check", check).await;
    assert_eq!(v["data"]["allowed"], true, "{v}");
    // A modified pack's modifiers leave at once.
    write(h, "ecosystem/modpack/backend/blocks/new.py", "x = 1\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = k.get("/api/flows/official").await;
        if ids(&v["data"]["steps"]) == ["first"] {
            assert_eq!(v["data"]["modifiers_applied"], json!([]));
            break;
        }
        assert!(Instant::now() < deadline, "still modified: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    k.stop();
}

/// A reload while a run is in flight changes nothing for that run; the next run sees the new
/// catalog.
#[tokio::test]
async fn a_reload_leaves_runs_in_flight_alone() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    make_pack(
        h,
        "tools",
        &[(
            "wait.py",
            "import os, time\ndef run(input_data, context=None):\n    p = input_data['path']\n    open(p + '.started', 'w').close()\n    deadline = time.time() + 30\n    while not os.path.exists(p) and time.time() < deadline:\n        time.sleep(0.01)\n    return {'waited': True}\n",
        )],
    );
    write(
        h,
        "user_data/shared/flows/slow.flow.yaml",
        "flow_id: slow\nphases: [m]\nsteps:\n  - {id: wait, phase: m, type: python_file_call, owner_pack: tools, file: blocks/wait.py, input: {path: \"${ctx.path}\"}}\n  - {id: last, phase: m, priority: 200, type: handler, input: {handler: \"kernel:flow.run\", args: {flow_id: inner}}, output: child}\n",
    );
    write(
        h,
        "user_data/shared/flows/inner.flow.yaml",
        "flow_id: inner\nphases: [m]\nsteps:\n  - {id: own, phase: m, type: set, input: {key: own, value: 1}}\n",
    );
    let k = Kernel::start(h, &[]);
    k.approve("tools").await;
    let gate = h.join("gate");
    let path = gate.to_string_lossy().into_owned();
    let run = {
        let k_http = k.http.clone();
        let url = k.url("/api/flows/slow/run");
        let path = path.clone();
        tokio::spawn(async move {
            let r = k_http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({"inputs": {"path": path}}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    let started = h.join("gate.started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the block never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While it runs: modifiers of the flow and of the flow it calls next appear, and the
    // catalog is reloaded.
    modifier(
        h,
        "late_inner",
        &format!(
            "modifier_id: late_inner\ntarget_flow_id: inner\nphase: m\naction: append\n{}",
            set_step("added_inner")
        ),
    );
    modifier(
        h,
        "late",
        &format!(
            "modifier_id: late\ntarget_flow_id: slow\nphase: m\naction: append\n{}",
            set_step("added")
        ),
    );
    k.reload().await;
    let (_, v) = k.get("/api/flows/slow").await;
    assert_eq!(ids(&v["data"]["steps"]), ["wait", "last", "added"]);
    std::fs::write(&gate, "").unwrap();
    let first = run.await.unwrap();
    assert_eq!(ids(&first["data"]["steps"]), ["wait", "last"], "{first}");
    // The nested run came from the catalog the run started with.
    assert_eq!(
        first["data"]["result"]["child"],
        json!({"own": 1}),
        "{first}"
    );
    std::fs::remove_file(&gate).unwrap();
    std::fs::remove_file(&started).unwrap();
    std::fs::write(&gate, "").unwrap();
    let (_, second) = k.run("slow", json!({"path": path})).await;
    assert_eq!(ids(&second["steps"]), ["wait", "last", "added"], "{second}");
    assert_eq!(
        second["result"]["child"],
        json!({"own": 1, "added_inner": true}),
        "{second}"
    );
    k.stop();
}
