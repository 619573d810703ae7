//! Outside review (attack) of the pack lifecycle extras: lib scripts, components, vocab and
//! converters, uninstall, load order. Each test proves one finding and is ignored so the suite
//! stays green; remove its `#[ignore]` once the finding is fixed (the test then passes).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Waits until `done` holds or `secs` pass (the caller asserts afterwards, with its message).
async fn poll(secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn records(home: &Path) -> Value {
    std::fs::read(home.join("user_data/settings/lib_records.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

async fn lib_record(home: &Path, pack: &str, secs: u64) -> Value {
    until(secs, &format!("a lib record of {pack}"), || {
        let r = records(home)[pack].clone();
        async move { (!r.is_null()).then_some(r) }
    })
    .await
}

/// Files in `dir` whose name starts with `prefix`.
fn count(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Removes every container of the given packs (whatever the installation) when dropped.
struct Containers(Vec<&'static str>);

impl Drop for Containers {
    fn drop(&mut self) {
        for p in &self.0 {
            if let Ok(o) = Command::new("docker")
                .args(["ps", "-aq", "--filter"])
                .arg(format!("label=rumi.pack_id={p}"))
                .output()
            {
                let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Finding 1 (critical, strict mode): a lib run (which has /data writable) plants a symlink at
// /data/python/site-packages; the kernel then bind-mounts `user_data/packs/<id>/python/
// site-packages` into the pack's long-lived container at /pip-packages *following the link on
// the host*, so the pack's blocks read any host directory it names. The host path of the
// kernel's home is in /proc/self/mountinfo of every pack container. Here: pack `atkthief` reads
// the private data of pack `atkvictim`.
// ------------------------------------------------------------------------------------------

const THIEF_LIB: &str = r#"
import os
def run(context):
    host = None
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            if fields[4] == '/data':
                host = fields[3]          # the host path of this pack's data directory
    victim = os.path.join(os.path.dirname(host), 'atkvictim')
    os.makedirs('/data/python', exist_ok=True)
    os.symlink(victim, '/data/python/site-packages')
    return {'host_data_dir': host, 'linked_to': victim}
"#;

const THIEF_BLOCK: &str = r#"
import os
def run(input_data, context=None):
    try:
        with open('/pip-packages/private.txt') as f:
            return {'stolen': f.read()}
    except Exception as e:
        return {'error': repr(e)}
"#;

#[tokio::test]
async fn f1_lib_symlinked_site_packages_mounts_any_host_dir_into_the_pack_container() {
    if !docker_ready() {
        return;
    }
    let _c = Containers(vec!["atkvictim", "atkthief"]);
    let home = fresh_home();
    make_pack(home.path(), "atkvictim", &[]);
    write(
        home.path(),
        "ecosystem/atkvictim/backend/lib/install.py",
        "def run(context):\n    with open('/data/private.txt', 'w') as f:\n        f.write('victim-private-7731')\n    return 1\n",
    );
    make_pack(home.path(), "atkthief", &[("read.py", THIEF_BLOCK)]);
    write(
        home.path(),
        "ecosystem/atkthief/backend/lib/install.py",
        THIEF_LIB,
    );
    write(
        home.path(),
        "user_data/shared/flows/atkthief_read.flow.yaml",
        "flow_id: atkthief_read\nphases: [m]\nsteps:\n  - {id: b, phase: m, type: python_file_call, owner_pack: atkthief, file: read.py, timeout_seconds: 20, output: out}\n",
    );
    let k = Kernel::start_mode(home.path(), &[], false);
    k.approve("atkvictim").await;
    let r = lib_record(home.path(), "atkvictim", 120).await;
    assert_eq!(r["success"], true, "{r}");
    k.approve("atkthief").await;
    let r = lib_record(home.path(), "atkthief", 120).await;
    // (Fixed: /data/python is read-only in a lib container, so the link cannot be planted.)
    assert_eq!(r["success"], false, "{r}");
    assert!(r["error"].to_string().contains("Read-only"), "{r}");
    // A link planted some other way (permissive mode, an older kernel) is removed before any
    // container mounts it.
    let site = home
        .path()
        .join("user_data/packs/atkthief/python/site-packages");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(site.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(home.path().join("user_data/packs/atkvictim"), &site).unwrap();
    // The next container of the pack (a restart here; a crash of the pack's own block does the
    // same) is created with the planted link as its /pip-packages source.
    k.stop();
    let k = Kernel::start_mode(home.path(), &[], false);
    let (status, run) = k.run("atkthief_read", json!({})).await;
    assert_eq!(status, 200, "{run}");
    let out = &run["result"]["out"];
    assert!(
        !out.to_string().contains("victim-private-7731"),
        "pack atkthief read pack atkvictim's data through /pip-packages: {out}"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 2 (high, permissive; strict with a link into /data): lib/install.py (and update.py)
// are run without the symlink check blocks, components and converters get (§5.1.3: inside the
// pack after resolving links). The manifest records a link by its target text, so the code that
// runs lies outside the pack, was never hashed, and can change after approval without the pack
// becoming `modified`.
// ------------------------------------------------------------------------------------------

#[tokio::test]

async fn f2_lib_script_symlinked_out_of_the_pack_runs_unapproved_code() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "symlib", &[]);
    let outside = home.path().join("outside/payload.py");
    let payload = |tag: &str| {
        format!("import os\ndef run(context):\n    open(os.path.join(context['data_dir'], 'ran_{tag}'), 'w').close()\n    return '{tag}'\n")
    };
    write(home.path(), "outside/payload.py", &payload("v1"));
    std::fs::create_dir_all(home.path().join("ecosystem/symlib/backend/lib")).unwrap();
    std::os::unix::fs::symlink(
        &outside,
        home.path().join("ecosystem/symlib/backend/lib/install.py"),
    )
    .unwrap();
    let k = Kernel::start(home.path(), &[]);
    k.approve("symlib").await;
    let first = lib_record(home.path(), "symlib", 20).await;
    let data = home.path().join("user_data/packs/symlib");
    // The code outside the pack, changed after the approval, runs on request; the pack stays approved.
    write(home.path(), "outside/payload.py", &payload("v2"));
    let (_, again) = k.post("/api/packs/symlib/lib/run", json!({})).await;
    let (_, pack) = k.get("/api/packs/symlib").await;
    assert!(
        !data.join("ran_v1").exists() && !data.join("ran_v2").exists(),
        "code outside the pack ran as its lib script: first {first}, on request {again}, pack state {}",
        pack["data"]["state"]
    );
}

// ------------------------------------------------------------------------------------------
// Finding 3 (medium): uninstall does not stop a lib run under way. The pack's code keeps running
// (up to LIB_TIMEOUT = 300 s, /data writable) after `DELETE /api/packs/{id}` answered.
// ------------------------------------------------------------------------------------------

const SLOW_LIB: &str = "import os, time\ndef run(context):\n    d = context['data_dir']\n    open(os.path.join(d, 'started_%d' % time.time_ns()), 'w').close()\n    time.sleep(3)\n    open(os.path.join(d, 'finished_%d' % time.time_ns()), 'w').close()\n    return 1\n";

#[tokio::test]
async fn f3_uninstall_leaves_a_lib_run_running() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "slowun", &[]);
    write(
        home.path(),
        "ecosystem/slowun/backend/lib/install.py",
        SLOW_LIB,
    );
    let k = Kernel::start(home.path(), &[]);
    let data = home.path().join("user_data/packs/slowun");
    k.approve("slowun").await;
    until(20, "the lib run to start", || {
        let n = count(&data, "started_");
        async move { (n > 0).then_some(()) }
    })
    .await;
    let (s, v) = k.req("DELETE", "/api/packs/slowun", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["pack"]["state"], "installed", "{v}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        count(&data, "finished_"),
        0,
        "the uninstalled pack's lib script kept running and wrote after the uninstall"
    );
}

/// Finding 3 in strict mode: the uninstall removes the throw-away lib container at once.
#[tokio::test]
async fn f3b_strict_uninstall_removes_the_lib_container() {
    if !docker_ready() {
        return;
    }
    let _cleanup = Containers(vec!["slowstrict"]);
    let home = fresh_home();
    make_pack(home.path(), "slowstrict", &[]);
    write(
        home.path(),
        "ecosystem/slowstrict/backend/lib/install.py",
        &SLOW_LIB.replace("time.sleep(3)", "time.sleep(60)"),
    );
    let k = Kernel::start_mode(home.path(), &[], false);
    let data = home.path().join("user_data/packs/slowstrict");
    k.approve("slowstrict").await;
    until(120, "the strict lib run to start", || {
        let n = count(&data, "started_");
        async move { (n > 0).then_some(()) }
    })
    .await;
    let lib_containers = || {
        let out = Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("rumi-lib-slowstrict.")
    };
    assert!(lib_containers(), "the lib container runs");
    let (s, v) = k.req("DELETE", "/api/packs/slowstrict", None).await;
    assert_eq!(s, 200, "{v}");
    until(30, "the lib container to be removed", || {
        let gone = !lib_containers();
        async move { gone.then_some(()) }
    })
    .await;
    assert_eq!(count(&data, "finished_"), 0);
    assert!(
        records(home.path())["slowstrict"].is_null(),
        "a stopped run is not recorded"
    );
}

/// Finding 3 and 4 through a rejection: the run stops, is audited as stopped and not recorded;
/// approved again, the pack's install runs (again) and is recorded.
#[tokio::test]
async fn f3c_reject_stops_the_lib_run_and_the_next_approval_runs_it_again() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "slowrej", &[]);
    write(
        home.path(),
        "ecosystem/slowrej/backend/lib/install.py",
        SLOW_LIB,
    );
    let k = Kernel::start(home.path(), &[]);
    let data = home.path().join("user_data/packs/slowrej");
    k.approve("slowrej").await;
    until(20, "the lib run to start", || {
        let n = count(&data, "started_");
        async move { (n > 0).then_some(()) }
    })
    .await;
    let (s, v) = k.post("/api/packs/slowrej/reject", json!({})).await;
    assert_eq!(s, 200, "{v}");
    until(10, "the stopped run in the audit", || {
        let k = &k;
        async move {
            let (_, a) = k.get("/api/audit?category=system").await;
            a["data"].as_array()?.iter().find(|e| {
                e["action"] == "lib_run"
                    && e["owner_pack"] == "slowrej"
                    && e.to_string().contains("stopped")
            })?;
            Some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        count(&data, "finished_"),
        0,
        "the rejected pack's lib run went on"
    );
    assert!(
        records(home.path())["slowrej"].is_null(),
        "{}",
        records(home.path())
    );
    k.approve("slowrej").await;
    let rec = lib_record(home.path(), "slowrej", 20).await;
    assert_eq!(rec["success"], true, "{rec}");
    assert_eq!(count(&data, "started_"), 2);
    assert_eq!(count(&data, "finished_"), 1);
}

// ------------------------------------------------------------------------------------------
// Finding 4 (medium): uninstall + approve again while the old lib run is under way: the new
// installation's install never runs (the queue skips a pack whose run is `running` and nothing
// re-queues it), and the old run's outcome is recorded as the re-installed pack's
// (`finish_lib` only drops a record when the pack has no approval *at the end*). Contract §2.2 /
// lib.rs: "installed again, its install runs again".
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn f4_reinstall_during_a_lib_run_never_runs_the_new_install() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "slowre", &[]);
    write(
        home.path(),
        "ecosystem/slowre/backend/lib/install.py",
        SLOW_LIB,
    );
    let k = Kernel::start(home.path(), &[]);
    let data = home.path().join("user_data/packs/slowre");
    k.approve("slowre").await;
    until(20, "the lib run to start", || {
        let n = count(&data, "started_");
        async move { (n > 0).then_some(()) }
    })
    .await;
    let (s, v) = k.req("DELETE", "/api/packs/slowre", None).await;
    assert_eq!(s, 200, "{v}");
    k.approve("slowre").await;
    // The old run ends ~3 s later; the new installation's install should follow (waited for,
    // up to 12 s).
    poll(12, || count(&data, "started_") >= 2).await;
    assert!(
        count(&data, "started_") >= 2,
        "the re-installed pack's install never ran; its lib record (inherited from the run of the \
         uninstalled installation): {}",
        records(home.path())["slowre"]
    );
}

// ------------------------------------------------------------------------------------------
// Finding 5 (medium): a pack whose id is `packs` lives at `ecosystem/packs/` — the legacy
// directory of every other pack. The kernel loads it *and* the legacy packs inside it; its
// manifest covers their files, its sandbox sees them at /pack, and `DELETE ?purge=true` of
// `packs` deletes every legacy pack.
// ------------------------------------------------------------------------------------------

#[tokio::test]

async fn f5_purging_a_pack_named_packs_deletes_the_legacy_packs() {
    let home = fresh_home();
    write(
        home.path(),
        "ecosystem/packs/ecosystem.json",
        r#"{"pack_id":"packs","pack_identity":"test:packs"}"#,
    );
    write(
        home.path(),
        "ecosystem/packs/legacyvictim/ecosystem.json",
        r#"{"pack_id":"legacyvictim","pack_identity":"test:legacyvictim"}"#,
    );
    write(
        home.path(),
        "ecosystem/packs/legacyvictim/blocks/precious.py",
        "def run(i):\n    return 1\n",
    );
    let k = Kernel::start(home.path(), &[]);
    let (_, list) = k.get("/api/packs").await;
    let text = list.to_string();
    // (Fixed: `packs` is a reserved id; ecosystem/packs/ is only ever the legacy directory.)
    assert!(
        text.contains("\"legacyvictim\"") && !text.contains("\"pack_id\":\"packs\""),
        "{list}"
    );
    let (_, d) = k.get("/api/diagnostics").await;
    assert!(d.to_string().contains("no pack may be named"), "{d}");
    k.approve("legacyvictim").await;
    let (s, v) = k.req("DELETE", "/api/packs/packs?purge=true", None).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        home.path()
            .join("ecosystem/packs/legacyvictim/blocks/precious.py")
            .exists(),
        "purging pack `packs` deleted the approved legacy pack legacyvictim"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 6 (medium): `kernel:vocab.convert` hands the converter the *whole run's inputs* in its
// context (`context["inputs"]`, plus flow_id and run_id), not just `data`. Which pack's converter
// runs is decided by the merged vocabulary: the earliest pack in load order keeps a (from, to)
// pair, and `load_order` is self-declared in ecosystem.json. So any approved pack declaring
// `load_order: -1000` and a converter of a common pair receives every caller's run inputs.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn f6_converter_receives_the_callers_run_inputs() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    // The legitimate converter.
    make_pack(home.path(), "units", &[]);
    write(
        home.path(),
        "ecosystem/units/backend/converters/celsius_to_fahrenheit.py",
        "def convert(data, context=None):\n    return data * 9 / 5 + 32\n",
    );
    // A later pack tries to take the pair over by declaring itself first.
    write(
        home.path(),
        "ecosystem/zhijack/backend/ecosystem.json",
        r#"{"pack_id":"zhijack","pack_identity":"test:zhijack","load_order":-1000}"#,
    );
    write(
        home.path(),
        "ecosystem/zhijack/backend/converters/celsius_to_fahrenheit.py",
        "def convert(data, context=None):\n    return {'seen': (context or {}).get('inputs'), 'flow': (context or {}).get('flow_id'), 'keys': sorted((context or {}).keys())}\n",
    );
    write(
        home.path(),
        "user_data/shared/flows/temps.flow.yaml",
        "flow_id: temps\nphases: [m]\nsteps:\n  - {id: c, phase: m, type: handler, input: {handler: \"kernel:vocab.convert\", args: {from_term: celsius, to_term: fahrenheit, data: 20}}, output: f}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("units").await;
    k.approve("zhijack").await;
    // Two packs offer the pair: it is refused for both (load order decides nothing).
    let (_, v) = k.get("/api/vocab").await;
    assert_eq!(v["data"]["converters"], json!([]), "{v}");
    assert_eq!(
        v["data"]["conflicts"],
        json!([{"from": "celsius", "to": "fahrenheit", "pack_ids": ["zhijack", "units"]}]),
        "{v}"
    );
    let inputs = json!({"api_key": "caller-private-5150", "user": "alice"});
    let (_, run) = k.run("temps", inputs.clone()).await;
    let step = &run["steps"][0];
    let err = step["error"].as_str().unwrap_or_default();
    assert!(
        step["status"] == "failed" && run["result"]["f"]["keys"].is_null(),
        "a converter ran although two packs offer the pair: {run}"
    );
    assert!(
        err.contains("\"zhijack\"") && err.contains("\"units\"") && err.contains("only one"),
        "the step error names both packs: {run}"
    );
    // With only zhijack offering it, its converter runs, and sees nothing of the caller's run.
    let (s, v) = k.req("DELETE", "/api/packs/units", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, run) = k.run("temps", inputs).await;
    assert_eq!(s, 200, "{run}");
    let f = &run["result"]["f"];
    assert_eq!(
        f["keys"],
        json!([
            "from_term",
            "http_request",
            "network_check",
            "owner_pack",
            "pack_id",
            "to_term",
            "ts"
        ]),
        "{run}"
    );
    assert!(
        !f.to_string().contains("caller-private-5150") && f["flow"].is_null(),
        "the converter of pack zhijack saw the calling run's inputs: {f}"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 7 (medium, availability): lib runs and component setups of *all* packs go through one
// serial queue (`Extras::busy`), with LIB_TIMEOUT = 300 s per lib run and SETUP_TIMEOUT = 60 s
// per component (up to 64 components). One approved pack whose lib script (or setups) just
// sleeps holds back every other pack's install and setups — for up to 300 s + 64 × 60 s, again
// at every start (a failed run is retried at the next start, setups run at every start).
// Contract §16 "lib": the first run starts within a few seconds of the approval.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn f7_one_slow_lib_run_stalls_every_other_packs_install() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "hog", &[]);
    write(
        home.path(),
        "ecosystem/hog/backend/lib/install.py",
        "import time\ndef run(context):\n    time.sleep(120)\n    return 1\n",
    );
    make_pack(home.path(), "patient", &[]);
    write(
        home.path(),
        "ecosystem/patient/backend/lib/install.py",
        "def run(context):\n    return 'installed'\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("hog").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.approve("patient").await;
    poll(15, || records(home.path())["patient"]["success"] == true).await;
    let r = records(home.path())["patient"].clone();
    assert_eq!(
        r["success"], true,
        "pack patient's install had not run 15 s after its approval (pack hog's lib run holds the queue): {r}"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 8 (low): uninstall — even with purge — leaves the pack's installed capability handler
// (`user_data/capabilities/handlers/<slug>/`, its signed trust record, the candidate
// `installed`). Trust is checked as "the pack *with that id* is approved now", so any later pack
// that takes the id (another author, another `pack_identity`, no handler of its own), once
// approved, brings the old handler back as trusted. "Installed again under the same id starts
// with nothing" (uninstall.rs) does not hold for handler trust.
// ------------------------------------------------------------------------------------------

#[tokio::test]

async fn f8_purged_packs_handler_trust_returns_with_a_new_pack_of_that_id() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "hp8", &[("noop.py", "def run(i): return i\n")]);
    let base = "ecosystem/hp8/backend/share/capability_handlers/echo8";
    write(
        home.path(),
        &format!("{base}/handler.json"),
        r#"{"handler_id":"echo8_handler","permission_id":"test.echo8","entrypoint":"handler.py:execute","description":"echo","risk":"none"}"#,
    );
    write(
        home.path(),
        &format!("{base}/handler.py"),
        "def execute(context, args):\n    return {'echo': args}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("hp8").await;
    let (s, v) = k.post("/api/capability/candidates/scan", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let key = v["data"]["candidates"][0]["candidate_key"]
        .as_str()
        .unwrap()
        .replace(':', "%3A");
    let (s, v) = k
        .post(
            &format!("/api/capability/requests/{key}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = k.req("DELETE", "/api/packs/hp8?purge=true", None).await;
    assert_eq!(s, 200, "{v}");
    // Someone else's pack, same id, no handler at all.
    write(
        home.path(),
        "ecosystem/hp8/backend/ecosystem.json",
        r#"{"pack_id":"hp8","pack_identity":"github:someone-else/other"}"#,
    );
    k.post("/api/packs/scan", json!({})).await;
    k.approve("hp8").await;
    let (_, v) = k.get("/api/capability/requests?status=installed").await;
    let trusted: Vec<&Value> = v["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["pack_id"] == "hp8" && i["trusted"] == true)
        .collect();
    assert!(
        trusted.is_empty(),
        "the purged pack's handler is trusted again for the new pack hp8: {v}"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 1, escalated (critical, strict mode): the same planted link, aimed at *another pack's
// socket directory* (`user_data/sockets/<other>/`, group `socket_gid`, which every pack
// container has in its groups), puts that pack's capability and egress sockets inside the
// attacker's container at /pip-packages. The strict-mode peer check is only "through that
// pack's mount, as uid 65534", so the attacker is taken for the other pack: it reads the
// other pack's granted secrets (invariants 4 and 5).
// ------------------------------------------------------------------------------------------

const SPY_LIB: &str = r#"
import os
def run(context):
    host = None
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            if fields[4] == '/data':
                host = fields[3]          # <home>/user_data/packs/atkspy
    user_data = os.path.dirname(os.path.dirname(host))
    target = os.path.join(user_data, 'sockets', 'atkbank')
    os.makedirs('/data/python', exist_ok=True)
    os.symlink(target, '/data/python/site-packages')
    return target
"#;

const SPY_BLOCK: &str = r#"
import os, rumi_capability
def run(input_data, context=None):
    out = {'listing': sorted(os.listdir('/pip-packages')) if os.path.isdir('/pip-packages') else None}
    os.environ['RUMI_CAPABILITY_SOCKET'] = '/pip-packages/capability.sock'
    try:
        answer = rumi_capability.call('secrets.get', {'key': 'BANK_KEY'})
        out['success'] = answer.get('success')
        value = (answer.get('output') or {}).get('value') or ''
        out['reversed'] = value[::-1]   # the run record redacts the value itself, not this
    except Exception as e:
        out['error'] = repr(e)
    return out
"#;

#[tokio::test]
async fn f1b_planted_link_to_another_packs_sockets_impersonates_it() {
    if !docker_ready() {
        return;
    }
    let _c = Containers(vec!["atkbank", "atkspy"]);
    let home = fresh_home();
    make_pack(
        home.path(),
        "atkbank",
        &[("noop.py", "def run(i): return i\n")],
    );
    make_pack(home.path(), "atkspy", &[("spy.py", SPY_BLOCK)]);
    write(
        home.path(),
        "ecosystem/atkspy/backend/lib/install.py",
        SPY_LIB,
    );
    write(
        home.path(),
        "user_data/shared/flows/atkspy_spy.flow.yaml",
        "flow_id: atkspy_spy\nphases: [m]\nsteps:\n  - {id: b, phase: m, type: python_file_call, owner_pack: atkspy, file: spy.py, timeout_seconds: 20, output: out}\n",
    );
    let k = Kernel::start_mode(home.path(), &[], false);
    let (s, v) = k
        .post(
            "/api/secrets/set",
            json!({"key": "BANK_KEY", "value": "bank-secret-90210"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": "atkbank", "permission_id": "secrets.get", "config": {"allowed_keys": ["BANK_KEY"]}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    k.approve("atkbank").await;
    k.approve("atkspy").await;
    let r = lib_record(home.path(), "atkspy", 120).await;
    // (Fixed: /data/python is read-only in a lib container, so the link cannot be planted.)
    assert_eq!(r["success"], false, "{r}");
    let site = home
        .path()
        .join("user_data/packs/atkspy/python/site-packages");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(site.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(home.path().join("user_data/sockets/atkbank"), &site).unwrap();
    k.stop();
    let k = Kernel::start_mode(home.path(), &[], false);
    let (status, run) = k.run("atkspy_spy", json!({})).await;
    assert_eq!(status, 200, "{run}");
    let out = &run["result"]["out"];
    eprintln!("spy saw: {run}");
    let reversed: String = "bank-secret-90210".chars().rev().collect();
    assert!(
        out["success"] != true && !out.to_string().contains(&reversed),
        "pack atkspy read pack atkbank's secret through atkbank's capability socket: {out}"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 9 (high): the pack subdir `backend/` may be a symlink. The scan picks it (`is_dir()`
// follows links) and reads ecosystem.json through it, blocks resolve inside it (the root is
// canonicalized first, so "inside the pack after links" holds), in strict mode /pack is
// bind-mounted from it — but the manifest records `backend` only as a link (its target text) and
// never descends. So every file of such a pack lies outside the approval: its code can be
// replaced after approval and runs without the pack ever becoming `modified`.
// ------------------------------------------------------------------------------------------

#[tokio::test]

async fn f9_symlinked_backend_dir_escapes_the_manifest() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "elsewhere/ecosystem.json",
        r#"{"pack_id":"linked","pack_identity":"test:linked"}"#,
    );
    write(
        home.path(),
        "elsewhere/blocks/hello.py",
        "def run(i, context=None):\n    return 'approved code'\n",
    );
    std::fs::create_dir_all(home.path().join("ecosystem/linked")).unwrap();
    std::os::unix::fs::symlink(
        home.path().join("elsewhere"),
        home.path().join("ecosystem/linked/backend"),
    )
    .unwrap();
    write(
        home.path(),
        "user_data/shared/flows/linked_hello.flow.yaml",
        "flow_id: linked_hello\nphases: [m]\nsteps:\n  - {id: b, phase: m, type: python_file_call, owner_pack: linked, file: hello.py, output: out}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    // (Fixed: a symlinked backend/ puts the pack in `error`, and it cannot be approved.)
    let (s, v) = k.post("/api/packs/linked/approve", json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("backend is a symbolic link"),
        "{v}"
    );
    let (_, pack) = k.get("/api/packs/linked").await;
    assert_eq!(pack["data"]["state"], "error", "{pack}");
    let (_, run) = k.run("linked_hello", json!({})).await;
    assert_ne!(run["result"]["out"], "approved code", "{run}");
    // Replaced after the approval (new size and mtime), the new code runs.
    std::thread::sleep(Duration::from_millis(1100));
    write(
        home.path(),
        "elsewhere/blocks/hello.py",
        "def run(i, context=None):\n    return 'NEVER APPROVED ' * 2\n",
    );
    let (_, run) = k.run("linked_hello", json!({})).await;
    let (_, pack) = k.get("/api/packs/linked").await;
    assert!(
        !run.to_string().contains("NEVER APPROVED"),
        "code changed after approval ran; pack state {}: {run}",
        pack["data"]["state"]
    );
}
