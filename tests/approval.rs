//! The approval gate end to end (contract §2.2, §5.1; invariants 1, 6, 7): nothing runs before
//! approval, any file change stops the pack at its next call, re-approval restores it, tampered
//! records deny, block paths cannot leave the pack, and state survives restarts.

mod common;

use common::*;
use serde_json::json;

const HELLO_FLOW: &str = "hello";

#[tokio::test]
async fn nothing_runs_before_approval_then_approval_runs_it() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, packs) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    let my = packs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pack_id"] == "my_pack")
        .unwrap();
    assert_eq!(my["state"], "installed");
    let (_, pending) = k.get("/api/packs/pending").await;
    assert!(pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["pack_id"] == "my_pack"));

    let (s, run) = k.run(HELLO_FLOW, json!({"name": "Ann"})).await;
    assert_eq!(s, 200);
    assert_eq!(step(&run, "call_hello")["error_type"], "approval_rejected");
    assert_eq!(run["result"]["greeting"]["error_type"], "approval_rejected");

    k.approve("my_pack").await;
    let (s, run) = k.run(HELLO_FLOW, json!({"name": "Ann"})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["result"]["greeting"], json!({"message": "Hello, Ann!"}));
    assert!(run["warnings"][0]
        .as_str()
        .unwrap()
        .contains("without container isolation"));

    // The refusal before approval was audited as a security decision.
    let (_, audit) = k.get("/api/audit?category=security").await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "block_refused" && e["owner_pack"] == "my_pack"));
    let (_, audit) = k.get("/api/audit?category=approval").await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "pack_approved"));
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.path().join("user_data/pending/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["version"], "1.0");
    assert!(!summary["packs"]["pending_ids"]
        .as_array()
        .unwrap()
        .contains(&json!("my_pack")));
}

async fn expect_modified(k: &Kernel, change: &str) {
    let (_, run) = k.run(HELLO_FLOW, json!({"name": "Ann"})).await;
    assert_eq!(
        step(&run, "call_hello")["error_type"],
        "hash_verification_failed",
        "{change}: {run}"
    );
    let (_, st) = k.get("/api/packs/my_pack/status").await;
    assert_eq!(st["data"]["state"], "modified", "{change}");
    // And it stays refused on the next call, with no new approval.
    let (_, run) = k.run(HELLO_FLOW, json!({})).await;
    assert_eq!(
        step(&run, "call_hello")["error_type"],
        "hash_verification_failed",
        "{change}"
    );
    // Re-approval restores it.
    k.approve("my_pack").await;
    let (_, run) = k.run(HELLO_FLOW, json!({"name": "Bo"})).await;
    assert_eq!(run["status"], "succeeded", "{change}: {run}");
}

#[tokio::test]
async fn edited_added_and_removed_files_are_detected() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "ecosystem/my_pack/backend/blocks/extra.py",
        "def run(i): return 1\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    let (_, run) = k.run(HELLO_FLOW, json!({"name": "Ann"})).await;
    assert_eq!(run["status"], "succeeded");
    let blocks = home.path().join("ecosystem/my_pack/backend/blocks");

    // Edited, with the same size (only the content changes).
    let hello = std::fs::read_to_string(blocks.join("hello.py")).unwrap();
    std::fs::write(blocks.join("hello.py"), hello.replace("Hello", "HELLO")).unwrap();
    expect_modified(&k, "edited").await;
    let (_, run) = k.run(HELLO_FLOW, json!({"name": "Cy"})).await;
    assert_eq!(
        run["result"]["greeting"]["message"], "HELLO, Cy!",
        "the re-approved code runs"
    );

    // Added: a file the original's exclusions would have ignored.
    std::fs::write(blocks.join("__pycache__.pyc"), "x").unwrap();
    expect_modified(&k, "added").await;
    std::fs::create_dir_all(home.path().join("ecosystem/my_pack/.git")).unwrap();
    std::fs::write(home.path().join("ecosystem/my_pack/.git/config"), "x").unwrap();
    expect_modified(&k, "added under .git").await;

    // Removed.
    std::fs::remove_file(blocks.join("extra.py")).unwrap();
    expect_modified(&k, "removed").await;

    let (_, audit) = k.get("/api/audit?category=security").await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "pack_modified"));
}

#[tokio::test]
async fn changing_a_file_back_does_not_silently_reapprove() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    let f = home
        .path()
        .join("ecosystem/my_pack/backend/blocks/hello.py");
    let original = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, "def run(i, c=None):\n    return {'evil': True}\n").unwrap();
    let (_, run) = k.run(HELLO_FLOW, json!({})).await;
    assert_eq!(
        step(&run, "call_hello")["error_type"],
        "hash_verification_failed",
        "{run}"
    );
    std::fs::write(&f, original).unwrap();
    let (_, run) = k.run(HELLO_FLOW, json!({})).await;
    assert_eq!(
        step(&run, "call_hello")["error_type"],
        "hash_verification_failed",
        "{run}"
    );
}

#[tokio::test]
async fn reject_blocks_and_approve_again_restores() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("text_tools").await;
    assert_eq!(
        k.get("/api/flows/text_tools.report").await.0,
        200,
        "an approved pack's flow is loaded"
    );
    let (s, v) = k
        .post(
            "/api/packs/text_tools/reject",
            json!({"reason": "not today"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["state"], "blocked");
    assert_eq!(v["data"]["reason"], "not today");
    assert_eq!(
        k.get("/api/flows/text_tools.report").await.0,
        404,
        "a blocked pack's flows are unloaded"
    );
    k.approve("text_tools").await;
    let (_, run) = k.run("text_tools.report", json!({"text": "a b a"})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, audit) = k.get("/api/audit?category=approval").await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "pack_rejected" && e["rejection_reason"] == "not today"));
}

#[tokio::test]
async fn state_survives_restart_and_tampered_records_deny() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    k.post("/api/packs/text_tools/reject", json!({})).await;
    let (_, run) = k.run(HELLO_FLOW, json!({"name": "Ann"})).await;
    let run_id = run["run_id"].as_str().unwrap().to_string();
    k.stop();

    let k = Kernel::start(home.path(), &[]);
    let (_, p) = k.get("/api/packs/my_pack").await;
    assert_eq!(p["data"]["state"], "approved");
    let (_, p) = k.get("/api/packs/text_tools").await;
    assert_eq!(p["data"]["state"], "blocked");
    let (_, run) = k.run(HELLO_FLOW, json!({"name": "Ann"})).await;
    assert_eq!(run["status"], "succeeded");
    let (s, old) = k.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(s, 200, "run records survive restarts");
    assert_eq!(old["data"]["flow_id"], "hello");
    k.stop();

    // Flip the recorded decision of the blocked pack to "approved": the signature breaks.
    let rec = home
        .path()
        .join("user_data/permissions/approvals/text_tools.json");
    let text = std::fs::read_to_string(&rec)
        .unwrap()
        .replace("\"blocked\"", "\"approved\"");
    std::fs::write(&rec, text).unwrap();
    let k = Kernel::start(home.path(), &[]);
    let (_, p) = k.get("/api/packs/text_tools").await;
    assert_eq!(
        p["data"]["state"], "modified",
        "a tampered record is never approval"
    );
    assert_eq!(k.get("/api/flows/text_tools.report").await.0, 404);
    let (_, audit) = k.get("/api/audit?category=security").await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "approval_record_invalid"));
}

#[tokio::test]
async fn block_paths_cannot_leave_the_pack() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "ecosystem/outside.py",
        "def run(i): return {'escaped': True}\n",
    );
    make_pack(
        home.path(),
        "paths",
        &[
            ("ok.py", "def run(i): return {'ok': True}\n"),
            ("notes.txt", "x"),
        ],
    );
    std::os::unix::fs::symlink(
        home.path().join("ecosystem/outside.py"),
        home.path().join("ecosystem/paths/backend/blocks/link.py"),
    )
    .unwrap();
    write(
        home.path(),
        "user_data/shared/flows/paths.flow.yaml",
        r#"
flow_id: paths
phases: [m]
steps:
  - {id: ok, phase: m, priority: 1, type: python_file_call, owner_pack: paths, file: ok.py, output: ok}
  - {id: dotdot, phase: m, priority: 2, type: python_file_call, owner_pack: paths, file: ../../outside.py, output: dotdot}
  - {id: abs, phase: m, priority: 3, type: python_file_call, owner_pack: paths, file: /etc/passwd, output: abs}
  - {id: link, phase: m, priority: 4, type: python_file_call, owner_pack: paths, file: link.py, output: link}
  - {id: txt, phase: m, priority: 5, type: python_file_call, owner_pack: paths, file: notes.txt, output: txt}
  - {id: missing, phase: m, priority: 6, type: python_file_call, owner_pack: paths, file: nope.py, output: missing}
"#,
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("paths").await;
    let (_, run) = k.run("paths", json!({})).await;
    assert_eq!(run["result"]["ok"], json!({"ok": true}));
    for id in ["dotdot", "abs", "link", "txt", "missing"] {
        let st = step(&run, id);
        assert_eq!(st["error_type"], "path_rejected", "{id}: {st}");
        let msg = st["error"].as_str().unwrap();
        assert!(
            !msg.contains(home.path().to_str().unwrap()),
            "no host path in {msg}"
        );
        assert!(run["result"][id].get("escaped").is_none());
    }
    assert!(step(&run, "missing")["error"]
        .as_str()
        .unwrap()
        .starts_with("File not found: nope.py"));
    assert!(step(&run, "link")["error"]
        .as_str()
        .unwrap()
        .contains("outside pack boundary"));
}

#[tokio::test]
async fn unknown_packs_and_invalid_ids() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "ecosystem/bad pack/backend/ecosystem.json",
        "{}",
    );
    write(
        home.path(),
        "ecosystem/mismatch/backend/ecosystem.json",
        r#"{"pack_id":"other","pack_identity":"x"}"#,
    );
    let k = Kernel::start(home.path(), &[]);
    assert_eq!(k.post("/api/packs/nope/approve", json!({})).await.0, 404);
    assert_eq!(k.get("/api/packs/nope").await.0, 404);
    assert_eq!(
        k.post("/api/packs/..%2Fetc/approve", json!({})).await.0,
        400
    );
    let (s, v) = k.post("/api/packs/mismatch/approve", json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("directory name"));
    let (_, d) = k.get("/api/diagnostics").await;
    let problems = d["data"]["pack_problems"].to_string();
    assert!(
        problems.contains("bad pack") && problems.contains("mismatch"),
        "{problems}"
    );
}

/// An approved pack's flows load only while every file of the pack is as approved.
const EVIL_FLOW: &str = "flow_id: evil\nphases: [m]\nsteps:\n  - {id: pwn, phase: m, type: python_file_call, file: blocks/hello.py, input: {name: evil}, output: out}\n";

/// The pack was found changed by a flow load: `modified`, its flows gone, and why, in the audit
/// log and the diagnostics.
async fn expect_found_by_flow_load(k: &Kernel, pack: &str, file: &str, how: &str) {
    let (s, p) = k.get(&format!("/api/packs/{pack}")).await;
    assert_eq!(s, 200);
    assert_eq!(p["data"]["state"], "modified", "{p}");
    assert!(
        p["data"]["changes"][how]
            .as_array()
            .unwrap()
            .contains(&json!(file)),
        "{p}"
    );
    let (_, flows) = k.get("/api/flows").await;
    assert!(
        !flows["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["pack_id"] == pack),
        "no flow of a modified pack is listed: {flows}"
    );
    let (_, audit) = k.get("/api/audit?category=security").await;
    let entry = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "pack_modified" && e["owner_pack"] == pack)
        .unwrap_or_else(|| panic!("a pack_modified audit entry: {audit}"));
    // The flow load or the watch on approved packs (inotify, within ~50 ms of the write),
    // whichever looks first: both stop the pack before any of its flows loads.
    assert!(
        matches!(
            entry["details"]["found_by"].as_str(),
            Some("flow_reload" | "watcher")
        ),
        "{entry}"
    );
    assert!(
        entry["details"][how]
            .as_array()
            .unwrap()
            .contains(&json!(file)),
        "{entry}"
    );
    assert!(
        entry["error"].as_str().unwrap().contains("approve"),
        "{entry}"
    );
    let (_, diag) = k.get("/api/diagnostics").await;
    assert!(
        diag["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "pack_modified" && e["pack_id"] == pack),
        "{diag}"
    );
}

/// A kernel whose `my_pack` was approved, then had a flow file added behind its back.
async fn my_pack_approved_then_given_an_evil_flow() -> (tempfile::TempDir, Kernel) {
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    write(
        home.path(),
        "ecosystem/my_pack/backend/flows/evil.flow.yaml",
        EVIL_FLOW,
    );
    (home, k)
}

#[tokio::test]
async fn a_flow_file_added_to_an_approved_pack_is_never_loaded_on_reload() {
    let (_home, k) = my_pack_approved_then_given_an_evil_flow().await;
    k.reload().await;
    assert_eq!(k.get("/api/flows/evil").await.0, 404);
    assert_eq!(k.run("evil", json!({})).await.0, 404);
    expect_found_by_flow_load(&k, "my_pack", "backend/flows/evil.flow.yaml", "added").await;
    // It stays out until a person approves the pack again (with the new file).
    k.reload().await;
    assert_eq!(k.get("/api/flows/evil").await.0, 404);
    k.approve("my_pack").await;
    assert_eq!(k.get("/api/flows/evil").await.0, 200);
}

#[tokio::test]
async fn a_flow_file_added_to_an_approved_pack_is_never_loaded_when_another_pack_is_approved() {
    let (_home, k) = my_pack_approved_then_given_an_evil_flow().await;
    // Approving any pack reloads every flow.
    k.approve("text_tools").await;
    assert_eq!(k.get("/api/flows/evil").await.0, 404);
    assert_eq!(k.run("evil", json!({})).await.0, 404);
    assert_eq!(k.get("/api/flows/text_tools.report").await.0, 200);
    expect_found_by_flow_load(&k, "my_pack", "backend/flows/evil.flow.yaml", "added").await;
}

#[tokio::test]
async fn an_approved_flow_file_edited_in_place_is_not_loaded() {
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("text_tools").await;
    assert_eq!(k.get("/api/flows/text_tools.report").await.0, 200);
    let rel = "ecosystem/text_tools/backend/flows/text_report.flow.yaml";
    let text = std::fs::read_to_string(home.path().join(rel)).unwrap();
    // Same flow id, same size class: one step's input changed.
    write(home.path(), rel, &text.replace("value: 3", "value: 9"));
    k.reload().await;
    assert_eq!(k.get("/api/flows/text_tools.report").await.0, 404);
    assert_eq!(k.run("text_tools.report", json!({})).await.0, 404);
    expect_found_by_flow_load(
        &k,
        "text_tools",
        "backend/flows/text_report.flow.yaml",
        "changed",
    )
    .await;
}

/// Approving a pack one of whose flow files is broken succeeds: the answer names that file, its
/// line and the fix as a warning, the pack's good flow runs, and a run of the broken one says why
/// it is missing.
#[tokio::test]
async fn approving_a_pack_with_a_broken_flow_warns_and_loads_the_rest() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(
        home.path(),
        "mixed",
        &[(
            "hi.py",
            "def run(input_data, context=None):\n    return {'hi': input_data['name']}\n",
        )],
    );
    write(
        home.path(),
        "ecosystem/mixed/backend/flows/good.flow.yaml",
        "flow_id: mixed.good\nphases: [main]\nsteps:\n  - {id: hi, phase: main, type: python_file_call, file: blocks/hi.py, input: {name: \"${ctx.name}\"}, output: out}\n",
    );
    write(
        home.path(),
        "ecosystem/mixed/backend/flows/bad.flow.yaml",
        "flow_id: mixed.bad\nphases: [main]\nsteps:\n  - id: hi\n    phase: main\n    type: python\n",
    );
    let k = Kernel::start(home.path(), &[]);
    let (s, v) = k.post("/api/packs/mixed/approve", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["data"]["pack_id"], "mixed", "the pack's fields are kept");
    assert_eq!(v["data"]["state"], "approved");
    assert_eq!(
        v["data"]["warnings"],
        json!(["ecosystem/mixed/backend/flows/bad.flow.yaml:4: step \"hi\": unknown type \"python\" — use one of python_file_call, handler, set, if"]),
        "{v}"
    );

    let (s, run) = k.run("mixed.good", json!({"name": "Ann"})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["result"]["out"], json!({"hi": "Ann"}), "{run}");
    let (s, v) = k.post("/api/flows/mixed.bad/run", json!({})).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        v["error"],
        "flow \"mixed.bad\" failed to load: ecosystem/mixed/backend/flows/bad.flow.yaml:4: step \"hi\": unknown type \"python\" — use one of python_file_call, handler, set, if; see `rumi diagnostics`"
    );

    // Another pack's approval answers only its own problems: none.
    let (s, v) = k.post("/api/packs/text_tools/approve", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["warnings"], json!([]), "{v}");
}
