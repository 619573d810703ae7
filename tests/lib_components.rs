//! Lib scripts and components (contract §9, §16 "lib", "Components"): a lib install runs within
//! seconds of the approval (asynchronously) and an update after a change and a re-approval; a
//! failure is recorded and retried on request; records, audit and `GET /api/packs/{id}` show it;
//! lib code never sees the kernel's environment; in strict mode it runs in a throw-away container
//! (`/data` writable, `/pack` and its `lib` read-only, no network). Components: one failing setup
//! disables that component only.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const SECRET: &str = "kernel-secret-do-not-leak-4242";

/// A lib script that records what it saw into its data directory and returns a summary.
const LIB_SCRIPT: &str = r#"
import json, os, socket

def run(context):
    data = context["data_dir"]
    report = {"context": {k: v for k, v in context.items() if isinstance(v, (str, int, float))},
              "env": sorted(os.environ.keys()),
              "secret_seen": any("kernel-secret" in v for v in os.environ.values())}
    # Probed in strict mode only: in permissive mode the pack's own files are the host's, and a
    # probe written there would change the pack (it becomes `modified`, which stops the run).
    for name, path in [("pack", "/pack/probe"), ("lib", os.path.join(context["lib_dir"], "probe"))]:
        if data != "/data":
            continue
        try:
            with open(path, "w") as f:
                f.write("x")
            report[name + "_writable"] = True
        except OSError:
            report[name + "_writable"] = False
    try:
        s = socket.create_connection(("1.1.1.1", 80), timeout=2)
        s.close()
        report["network"] = True
    except OSError:
        report["network"] = False
    with open(os.path.join(data, "lib_%s.json" % context["lib_type"]), "w") as f:
        json.dump(report, f)
    return {"done": context["lib_type"]}
"#;

fn records(home: &Path) -> Value {
    std::fs::read(home.join("user_data/settings/lib_records.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

async fn record_where(home: &Path, pack: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    until(20, what, || {
        let r = records(home)[pack].clone();
        let hit = f(&r);
        async move { hit.then_some(r) }
    })
    .await
}

fn lib_pack(home: &Path, id: &str) {
    make_pack(
        home,
        id,
        &[(
            "hello.py",
            "def run(i, context=None):\n    return {'hi': 1}\n",
        )],
    );
    write(
        home,
        &format!("ecosystem/{id}/backend/lib/install.py"),
        LIB_SCRIPT,
    );
}

#[tokio::test]
async fn lib_install_runs_after_approval_then_update_after_a_change() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    lib_pack(home.path(), "libpack");
    let k = Kernel::start(home.path(), &[("RUMI_TEST_SECRET", SECRET)]);
    k.approve("libpack").await;
    // Asynchronous, within seconds of the approval.
    let rec = record_where(home.path(), "libpack", "the lib install", |r| {
        r["success"] == true
    })
    .await;
    assert_eq!(rec["lib_type"], "install");
    assert!(rec["error"].is_null());
    assert_eq!(rec["manifest_hash"].as_str().unwrap().len(), 64);
    let data = home.path().join("user_data/packs/libpack");
    let report: Value =
        serde_json::from_slice(&std::fs::read(data.join("lib_install.json")).unwrap()).unwrap();
    let ctx = &report["context"];
    assert_eq!(ctx["pack_id"], "libpack");
    assert_eq!(ctx["lib_type"], "install");
    assert_eq!(
        ctx["data_dir"],
        data.canonicalize().unwrap().to_str().unwrap()
    );
    assert!(
        ctx["lib_dir"].as_str().unwrap().ends_with("/backend/lib"),
        "{ctx}"
    );
    assert!(ctx["ts"].as_str().is_some());
    // The kernel's environment never reaches lib code.
    assert_eq!(report["secret_seen"], false, "{report}");
    let env = report["env"].as_array().unwrap();
    assert!(
        !env.iter()
            .any(|v| v == "RUMI_TEST_SECRET" || v == "RUMI_API_TOKEN"),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|v| v == "RUMI_EGRESS_SOCKET"),
        "lib runs get no egress: {env:?}"
    );

    let (status, p) = k.get("/api/packs/libpack").await;
    assert_eq!(status, 200);
    assert_eq!(p["data"]["lib"]["lib_type"], "install");
    assert_eq!(p["data"]["lib"]["ok"], true);
    let (_, audit) = k.get("/api/audit?category=system").await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "lib_run" && e["owner_pack"] == "libpack" && e["success"] == true));

    // A change and a re-approval: update.py runs (install.py does not run again).
    write(
        home.path(),
        "ecosystem/libpack/backend/lib/update.py",
        &LIB_SCRIPT.replace("return {", "return {'via': 'update.py', "),
    );
    k.post("/api/packs/scan", json!({})).await;
    k.approve("libpack").await;
    let rec2 = record_where(home.path(), "libpack", "the lib update", |r| {
        r["lib_type"] == "update"
    })
    .await;
    assert_eq!(rec2["success"], true, "{rec2}");
    assert_ne!(rec2["manifest_hash"], rec["manifest_hash"]);
    assert!(data.join("lib_update.json").exists());
    // A restart runs nothing again (the record matches the approved manifest).
    k.stop();
    std::fs::remove_file(data.join("lib_update.json")).unwrap();
    let k = Kernel::start(home.path(), &[]);
    let (_, p) = k.get("/api/packs/libpack").await;
    assert_eq!(p["data"]["lib"]["lib_type"], "update");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !data.join("lib_update.json").exists(),
        "the update ran again after a restart"
    );
}

#[tokio::test]
async fn a_failed_lib_run_is_recorded_and_retried_on_request() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(
        home.path(),
        "flaky",
        &[("hello.py", "def run(i):\n    return 1\n")],
    );
    write(
        home.path(),
        "ecosystem/flaky/backend/lib/install.py",
        "import os\ndef run(context):\n    print('trying')\n    if not os.path.exists(os.path.join(context['data_dir'], 'ready')):\n        raise RuntimeError('not ready yet')\n    return {'ok': True}\n",
    );
    make_pack(
        home.path(),
        "nolib",
        &[("hello.py", "def run(i):\n    return 1\n")],
    );
    let k = Kernel::start(home.path(), &[]);
    // Refusals: unknown pack, pack not approved, pack with no lib script; nothing recorded.
    let (status, v) = k.post("/api/packs/nope/lib/run", json!({})).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = k.post("/api/packs/flaky/lib/run", json!({})).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not approved"), "{v}");
    k.approve("nolib").await;
    let (status, v) = k.post("/api/packs/nolib/lib/run", json!({})).await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("lib/install.py"),
        "{v}"
    );
    let (status, v) = k.post("/api/packs/bad..id/lib/run", json!({})).await;
    assert_eq!(status, 400, "{v}");

    k.approve("flaky").await;
    let rec = record_where(home.path(), "flaky", "the failed install", |r| {
        r["success"] == false
    })
    .await;
    assert!(
        rec["error"].as_str().unwrap().contains("not ready yet"),
        "{rec}"
    );
    let (_, p) = k.get("/api/packs/flaky").await;
    assert_eq!(p["data"]["lib"]["ok"], false);
    assert!(p["data"]["lib"]["error"]
        .as_str()
        .unwrap()
        .contains("not ready yet"));
    assert!(records(home.path()).get("nolib").is_none());
    let (_, audit) = k.get("/api/audit?category=system").await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "lib_run" && e["owner_pack"] == "flaky" && e["success"] == false));

    // Retried on request (the CLI exits 1 while it fails), still failing, then succeeding.
    let out = cli::fails(cli::rumi(&k), &["pack", "lib-run", "flaky"]);
    assert!(out.stdout.contains("not ready yet"), "{}", out.stdout);
    let shown = cli::ok(cli::rumi(&k), &["pack", "show", "flaky"]).stdout;
    assert!(shown.contains("lib: install failed"), "{shown}");
    let (status, v) = k.post("/api/packs/flaky/lib/run", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["data"]["ok"].clone(), v["data"]["lib_type"].clone()),
        (json!(false), json!("install"))
    );
    assert!(v["data"]["log"].as_str().unwrap().contains("trying"));
    write(home.path(), "user_data/packs/flaky/ready", "");
    let (status, v) = k.post("/api/packs/flaky/lib/run", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["ok"], true, "{v}");
    assert_eq!(v["data"]["result"], json!({"ok": true}));
    assert_eq!(records(home.path())["flaky"]["success"], true);

    // A modified pack never runs lib code: the run is refused as a change and the pack is
    // `modified`.
    write(
        home.path(),
        "ecosystem/flaky/backend/lib/install.py",
        "def run(context):\n    open('/tmp/rumi-should-not-run', 'w')\n",
    );
    let (status, v) = k.post("/api/packs/flaky/lib/run", json!({})).await;
    if status == 200 {
        assert_eq!(v["data"]["ok"], false, "{v}");
        assert!(
            v["data"]["error"].as_str().unwrap().contains("changed"),
            "{v}"
        );
    } else {
        assert_eq!(status, 409, "{v}");
    }
    until(10, "the pack to be modified", || async {
        let (_, p) = k.get("/api/packs/flaky").await;
        (p["data"]["state"] == "modified").then_some(())
    })
    .await;
}

/// A retry at the next start: the failed run of the last kernel runs again.
#[tokio::test]
async fn a_failed_lib_run_is_retried_at_the_next_start() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(
        home.path(),
        "later",
        &[("hello.py", "def run(i):\n    return 1\n")],
    );
    write(
        home.path(),
        "ecosystem/later/backend/lib/install.py",
        "import os\ndef run(context):\n    if not os.path.exists(os.path.join(context['data_dir'], 'ready')):\n        raise RuntimeError('not ready yet')\n    return 1\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("later").await;
    record_where(home.path(), "later", "the failed install", |r| {
        r["success"] == false
    })
    .await;
    k.stop();
    write(home.path(), "user_data/packs/later/ready", "");
    let _k = Kernel::start(home.path(), &[]);
    record_where(home.path(), "later", "the retried install", |r| {
        r["success"] == true
    })
    .await;
}

#[tokio::test]
async fn a_failing_component_is_disabled_alone() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(
        home.path(),
        "comps",
        &[(
            "hello.py",
            "def run(i, context=None):\n    return {'hi': i}\n",
        )],
    );
    let c = "ecosystem/comps/backend/components";
    write(
        home.path(),
        &format!("{c}/good/manifest.json"),
        r#"{"component_id":"good","version":"1.0","description":"works"}"#,
    );
    write(
        home.path(),
        &format!("{c}/good/setup.py"),
        "import os\ndef setup(context=None):\n    return {'component': context['component_id'], 'secret': os.environ.get('RUMI_TEST_SECRET')}\n",
    );
    write(
        home.path(),
        &format!("{c}/bad/manifest.json"),
        r#"{"component_id":"bad","version":"1.0"}"#,
    );
    write(
        home.path(),
        &format!("{c}/bad/setup.py"),
        "def setup(context=None):\n    raise ValueError('cannot set up')\n",
    );
    write(
        home.path(),
        &format!("{c}/misnamed/manifest.json"),
        r#"{"component_id":"other"}"#,
    );
    write(
        home.path(),
        &format!("{c}/misnamed/setup.py"),
        "def setup():\n    return 1\n",
    );
    write(
        home.path(),
        &format!("{c}/nosetup/manifest.json"),
        r#"{"component_id":"nosetup"}"#,
    );
    write(
        home.path(),
        "ecosystem/comps/backend/flows/hi.flow.yaml",
        "flow_id: comps.hi\nphases: [m]\nsteps:\n  - {id: h, phase: m, type: python_file_call, file: hello.py, input: 2, output: out}\n",
    );
    let k = Kernel::start(home.path(), &[("RUMI_TEST_SECRET", SECRET)]);
    k.approve("comps").await;
    let comps = until(20, "the components' setups", || async {
        let (_, p) = k.get("/api/packs/comps").await;
        let c = p["data"]["components"].clone();
        (c.as_array().map(Vec::len) == Some(4)).then_some(c)
    })
    .await;
    let by = |id: &str| {
        comps
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component_id"] == id)
            .unwrap()
            .clone()
    };
    let good = by("good");
    assert_eq!(good["state"], "ready", "{comps}");
    assert_eq!(good["result"], json!({"component": "good", "secret": null}));
    assert!(good["reason"].is_null());
    let bad = by("bad");
    assert_eq!(bad["state"], "disabled");
    assert!(
        bad["reason"].as_str().unwrap().contains("cannot set up"),
        "{bad}"
    );
    assert!(by("misnamed")["reason"]
        .as_str()
        .unwrap()
        .contains("must equal the directory name"));
    assert!(by("nosetup")["reason"]
        .as_str()
        .unwrap()
        .contains("setup.py is missing"));
    let shown = cli::ok(cli::rumi(&k), &["pack", "show", "comps"]).stdout;
    assert!(
        shown.contains("good") && shown.contains("ready") && shown.contains("cannot set up"),
        "{shown}"
    );
    let (_, d) = k.get("/api/diagnostics").await;
    let text = d["data"].to_string();
    assert!(text.contains("component \\\"bad\\\" disabled"), "{text}");
    assert!(!text.contains("component \\\"good\\\" disabled"));
    // The pack's flows still work.
    let (status, run) = k.run("comps.hi", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["out"], json!({"hi": 2}));

    // Setups run again at every start, once the pack's sandbox is there (with one HTTP worker
    // the sandbox waits for that worker to host it; a setup must wait with it, not fail).
    k.stop();
    let k = Kernel::start(home.path(), &[]);
    let good = until(20, "the setups after a restart", || async {
        let (_, p) = k.get("/api/packs/comps").await;
        let comps = p["data"]["components"].as_array()?.clone();
        (comps.len() == 4)
            .then(|| comps.into_iter().find(|c| c["component_id"] == "good"))
            .flatten()
    })
    .await;
    assert_eq!(good["state"], "ready", "{good}");
    assert_eq!(good["result"], json!({"component": "good", "secret": null}));
}

/// Strict mode: the lib script runs in a throw-away container: `/data` writable, `/pack` (and
/// its `lib`, `/pack/lib`) read-only, no network, no kernel environment; the container is gone afterwards.
#[tokio::test]
async fn strict_lib_runs_in_a_throwaway_container() {
    if !docker_ready() {
        return;
    }
    let home = fresh_home();
    lib_pack(home.path(), "strictlib");
    let k = Kernel::start_mode(home.path(), &[("RUMI_TEST_SECRET", SECRET)], false);
    k.approve("strictlib").await;
    let rec = until(120, "the strict lib install", || {
        let r = records(home.path())["strictlib"].clone();
        async move { (!r.is_null()).then_some(r) }
    })
    .await;
    assert_eq!(rec["success"], true, "{rec}");
    let data = home.path().join("user_data/packs/strictlib");
    let report: Value =
        serde_json::from_slice(&std::fs::read(data.join("lib_install.json")).unwrap()).unwrap();
    assert_eq!(report["context"]["data_dir"], "/data");
    assert_eq!(report["context"]["lib_dir"], "/pack/lib");
    assert!(data.join("lib_install.json").exists(), "/data is writable");
    assert_eq!(report["pack_writable"], false, "{report}");
    assert_eq!(report["lib_writable"], false, "{report}");
    assert_eq!(report["network"], false, "{report}");
    assert_eq!(report["secret_seen"], false, "{report}");
    // No lib container is left behind.
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("rumi-lib-strictlib."));
}

/// Never two lib runs of one pack at once: a request while one runs is refused (409), nothing
/// else changes.
#[tokio::test]
async fn two_lib_runs_of_one_pack_never_overlap() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(
        home.path(),
        "slow",
        &[("hello.py", "def run(i):\n    return 1\n")],
    );
    write(
        home.path(),
        "ecosystem/slow/backend/lib/install.py",
        "import os, time\ndef run(context):\n    marker = os.path.join(context['data_dir'], 'running')\n    if os.path.exists(marker):\n        raise RuntimeError('overlap')\n    open(marker, 'w').close()\n    time.sleep(1.5)\n    os.remove(marker)\n    return 1\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("slow").await;
    record_where(home.path(), "slow", "the first install", |r| {
        r["success"] == true
    })
    .await;
    let (a, b) = tokio::join!(
        k.post("/api/packs/slow/lib/run", json!({})),
        k.post("/api/packs/slow/lib/run", json!({}))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let ran = if a.0 == 200 { &a.1 } else { &b.1 };
    let refused = if a.0 == 409 { &a.1 } else { &b.1 };
    assert_eq!(ran["data"]["ok"], true, "{ran}");
    assert_eq!(ran["data"]["lib_type"], "update");
    assert!(
        refused["error"].as_str().unwrap().contains("under way"),
        "{refused}"
    );
}
