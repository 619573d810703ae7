//! Capabilities end to end (contract §7, §8, §15 invariants 4, 5, 6, 7): real kernels, real
//! Python blocks calling their pack's capability socket through `rumi_capability`, and attacks
//! made from inside blocks (another pack's socket, a spoofed principal, hostile frames, a flood
//! of concurrent calls, a pack modified while its block runs).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Makes each call of `inputs.calls` (`[permission_id, args]`) and answers the responses.
const CALLS: &str = r#"
import rumi_capability

def run(input_data, context=None):
    return {"answers": [rumi_capability.call(p, args=a) for p, a in context["inputs"]["calls"]]}
"#;

/// Raw frames on a socket path (`inputs.path`, default the pack's own): answers what came back.
const RAW: &str = r#"
import os, socket, struct, json

def exchange(path, data, shut=False):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before reading: the answer may still be there
        head = b""
        while len(head) < 4:
            c = s.recv(4 - len(head))
            if not c:
                return None
            head += c
        (n,) = struct.unpack(">I", head)
        body = b""
        while len(body) < n:
            c = s.recv(n - len(body))
            if not c:
                break
            body += c
        return json.loads(body)
    except OSError as e:
        return {"os_error": str(e)}
    finally:
        s.close()

def frame(obj):
    b = json.dumps(obj).encode()
    return struct.pack(">I", len(b)) + b

def run(input_data, context=None):
    i = context["inputs"]
    path = i.get("path") or os.environ["RUMI_CAPABILITY_SOCKET"]
    kind = i["kind"]
    if kind == "frame":
        return {"answer": exchange(path, frame(i["payload"]))}
    if kind == "oversized":
        return {"answer": exchange(path, struct.pack(">I", 4 * 1024 * 1024 + 1) + b"{}")}
    if kind == "truncated":
        return {"answer": exchange(path, struct.pack(">I", 100) + b"{\"permission_id\"", shut=True)}
    if kind == "not_json":
        return {"answer": exchange(path, struct.pack(">I", 9) + b"not json!")}
    raise ValueError(kind)
"#;

/// `inputs.n` concurrent calls, each on its own connection (more than the pack's connection
/// slots), retrying `busy` like `rumi_capability` does; answers how each ended.
const FLOOD: &str = r#"
import os, threading, time, struct, json, socket
import rumi_wire

def one(path, i, out):
    body = {"permission_id": "store.get", "args": {"store_id": "s1", "key": "k"}, "request_id": str(i)}
    pause = 0.002
    deadline = time.monotonic() + 240  # generous: the suite runs many kernels at once
    while time.monotonic() < deadline:
        try:
            r = rumi_wire.exchange(path, body, 30)
        except Exception as e:
            out[i] = "error:" + type(e).__name__
            return
        if r.get("error_type") == "busy":
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            continue
        out[i] = "ok" if r.get("success") else ("fail:" + str(r.get("error_type")))
        return
    out[i] = "gave_up"

def run(input_data, context=None):
    n = context["inputs"]["n"]
    path = os.environ["RUMI_CAPABILITY_SOCKET"]
    out = [None] * n
    threads = [threading.Thread(target=one, args=(path, i, out)) for i in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    counts = {}
    for o in out:
        counts[o] = counts.get(o, 0) + 1
    return {"counts": counts}
"#;

/// Calls `store.get` until a call is refused (or 20 s pass); answers how many were answered and
/// the refusal. Writes `started` into its data directory once the first call succeeded.
const LOOP: &str = r#"
import time, rumi_capability

def run(input_data, context=None):
    ok = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = rumi_capability.call("store.get", args={"store_id": "s1", "key": "k"})
        # The key does not exist: a granted call answers key_not_found; a refusal is the door.
        if r.get("error") == "Permission denied":
            return {"ok": ok, "refused": r}
        ok += 1
        if ok == 1:
            open("started", "w").write("yes")
        time.sleep(0.01)
    return {"ok": ok, "refused": None}
"#;

fn cap_pack(home: &Path, pack: &str) {
    make_pack(
        home,
        pack,
        &[
            ("calls.py", CALLS),
            ("raw.py", RAW),
            ("flood.py", FLOOD),
            ("loop.py", LOOP),
        ],
    );
    for (flow, file) in [
        ("calls", "calls.py"),
        ("raw", "raw.py"),
        ("flood", "flood.py"),
        ("loop", "loop.py"),
    ] {
        write(
            home,
            &format!("user_data/shared/flows/{pack}_{flow}.flow.yaml"),
            &format!("flow_id: {pack}_{flow}\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: python_file_call, owner_pack: {pack}, file: {file}, timeout_seconds: 280, output: out}}\n"),
        );
    }
}

async fn calls(k: &Kernel, pack: &str, list: Value) -> Vec<Value> {
    let (s, run) = k
        .run(&format!("{pack}_calls"), json!({"calls": list}))
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    run["result"]["out"]["answers"].as_array().unwrap().clone()
}

async fn raw(k: &Kernel, pack: &str, inputs: Value) -> Value {
    let (s, run) = k.run(&format!("{pack}_raw"), inputs).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    run["result"]["out"]["answer"].clone()
}

async fn grant(k: &Kernel, principal: &str, permission: &str, config: Value) {
    let (s, v) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": principal, "permission_id": permission, "config": config}),
        )
        .await;
    assert_eq!(s, 200, "grant {principal} {permission}: {v}");
}

async fn create_store(k: &Kernel, id: &str) {
    let (s, v) = k
        .post(
            "/api/stores/create",
            json!({"store_id": id, "root_path": format!("user_data/stores/{id}")}),
        )
        .await;
    assert_eq!(s, 200, "create store {id}: {v}");
}

fn denied(r: &Value, error_type: &str, what: &str) {
    assert_eq!(r["success"], false, "{what}: {r}");
    assert_eq!(r["error"], "Permission denied", "{what}: {r}");
    assert_eq!(r["error_type"], error_type, "{what}: {r}");
}

fn two_packs() -> (tempfile::TempDir, Kernel) {
    let home = fresh_home();
    cap_pack(home.path(), "cap_a");
    cap_pack(home.path(), "cap_b");
    let k = Kernel::start(home.path(), &[]);
    (home, k)
}

#[tokio::test]
async fn stores_answer_a_granted_block_and_refuse_everything_else() {
    if !python_available() {
        return;
    }
    let (_home, k) = two_packs();
    k.approve("cap_a").await;
    k.approve("cap_b").await;
    k.reload().await;
    create_store(&k, "s1").await;
    let set =
        json!(["store.set", {"store_id": "s1", "key": "users/u1", "value": {"name": "Alice"}}]);
    let get = json!(["store.get", {"store_id": "s1", "key": "users/u1"}]);
    // No grant yet: refused at the grant step, nothing written.
    let a = calls(&k, "cap_a", json!([set, get])).await;
    denied(&a[0], "grant_denied", "set without a grant");
    denied(&a[1], "grant_denied", "get without a grant");
    let a = calls(&k, "cap_a", json!([["no.such.permission", {}]])).await;
    denied(&a[0], "handler_not_found", "an unknown permission");

    for p in ["store.get", "store.set", "store.list", "store.delete"] {
        grant(&k, "cap_a", p, json!({"allowed_store_ids": ["s1"]})).await;
    }
    let a = calls(
        &k,
        "cap_a",
        json!([
            set,
            ["store.set", {"store_id": "s1", "key": "users/u0", "value": 1}],
            ["store.set", {"store_id": "s1", "key": "other", "value": 2}],
            get,
            ["store.list", {"store_id": "s1", "prefix": "users/"}],
            ["store.delete", {"store_id": "s1", "key": "users/u1"}],
            get,
            ["store.get", {"store_id": "s2", "key": "x"}],
        ]),
    )
    .await;
    assert_eq!(a[0]["success"], true, "{}", a[0]);
    assert_eq!(
        a[3]["output"]["value"],
        json!({"name": "Alice"}),
        "{}",
        a[3]
    );
    assert_eq!(
        a[4]["output"]["keys"],
        json!(["users/u0", "users/u1"]),
        "sorted, by prefix: {}",
        a[4]
    );
    assert_eq!(a[5]["success"], true, "{}", a[5]);
    assert_eq!(a[6]["output"]["error_type"], "key_not_found", "{}", a[6]);
    assert_eq!(
        a[7]["output"]["error_type"], "grant_denied",
        "a store outside allowed_store_ids: {}",
        a[7]
    );
    // The value is a JSON file in the store's root.
    let file = k.home.join("user_data/stores/s1/users/u0.json");
    assert_eq!(std::fs::read_to_string(file).unwrap().trim(), "1");

    // Hostile keys are refused before any file is touched.
    for key in [
        "../x",
        "/abs",
        "a\\b",
        "a\u{0}b",
        "a/../b",
        "trailing/",
        &"k".repeat(513),
    ] {
        let a = calls(
            &k,
            "cap_a",
            json!([["store.set", {"store_id": "s1", "key": key, "value": 1}]]),
        )
        .await;
        assert_eq!(
            a[0]["output"]["error_type"], "validation_error",
            "key {key:?}: {}",
            a[0]
        );
    }
    let ok = calls(
        &k,
        "cap_a",
        json!([["store.set", {"store_id": "s1", "key": "k".repeat(512), "value": 1}]]),
    )
    .await;
    assert_eq!(
        ok[0]["success"], true,
        "512 characters are allowed: {}",
        ok[0]
    );

    // The other pack holds no grant: a principal named in the payload changes nothing.
    let b = raw(
        &k,
        "cap_b",
        json!({"kind": "frame", "payload": {"permission_id": "store.get", "args": {"store_id": "s1", "key": "users/u0"}, "principal_id": "cap_a", "owner_pack": "cap_a"}}),
    )
    .await;
    denied(&b, "grant_denied", "a spoofed principal");

    // Every call is in the permission audit, with its principal and no value.
    let (s, audit) = k.get("/api/audit?category=permission&limit=500").await;
    assert_eq!(s, 200);
    let text = audit.to_string();
    assert!(text.contains("\"principal_id\":\"cap_a\""), "{text}");
    assert!(text.contains("\"permission_id\":\"store.set\""));
    assert!(!text.contains("Alice"), "values never reach the audit");
    k.stop();
}

#[tokio::test]
async fn another_packs_socket_and_hostile_frames_are_refused() {
    if !python_available() {
        return;
    }
    let (home, k) = two_packs();
    k.approve("cap_a").await;
    k.approve("cap_b").await;
    k.reload().await;
    grant(&k, "cap_b", "store.get", json!({})).await;
    // cap_a's block connects to cap_b's socket path: refused by its peer credentials.
    let b_sock = home.path().join("user_data/sockets/cap_b/capability.sock");
    let a = raw(
        &k,
        "cap_a",
        json!({"kind": "frame", "path": b_sock, "payload": {"permission_id": "store.get", "args": {"store_id": "s", "key": "k"}}}),
    )
    .await;
    assert_eq!(a["error_type"], "peer_refused", "{a}");
    // The test process (not a process of the pack) is refused too.
    let direct = socket_exchange(&b_sock, br#"{"permission_id":"store.get","args":{}}"#);
    assert_eq!(direct.unwrap()["error_type"], "peer_refused");
    // Both refusals are counted on cap_b's socket, and its broker never saw a call.
    let (_, d) = k.get("/api/diagnostics").await;
    let b = d["data"]["capability"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["socket"]["pack_id"] == "cap_b")
        .cloned()
        .unwrap_or_else(|| panic!("cap_b's capability socket in diagnostics: {d}"));
    assert_eq!(b["socket"]["refused_peer"], 2, "{b}");
    assert_eq!(b["broker"]["calls"], 0, "{b}");

    for kind in ["oversized", "not_json"] {
        let r = raw(&k, "cap_a", json!({"kind": kind})).await;
        assert_eq!(r["error_type"], "protocol_error", "{kind}: {r}");
    }
    // A truncated frame may find the connection closed before an answer: either way, no crash,
    // and the next call below works.
    let r = raw(&k, "cap_a", json!({"kind": "truncated"})).await;
    assert!(
        r.is_null() || r["error_type"] == "protocol_error",
        "truncated: {r}"
    );
    let r = raw(
        &k,
        "cap_a",
        json!({"kind": "frame", "payload": {"permission_id": 5}}),
    )
    .await;
    assert_eq!(r["error_type"], "validation_error", "{r}");
    let r = raw(
        &k,
        "cap_a",
        json!({"kind": "frame", "payload": {"permission_id": "store.get", "args": [1]}}),
    )
    .await;
    assert_eq!(r["error_type"], "validation_error", "{r}");
    let a = calls(
        &k,
        "cap_a",
        json!([["store.get", {"store_id": "s", "key": "k"}]]),
    )
    .await;
    denied(
        &a[0],
        "grant_denied",
        "the socket still answers after hostile frames",
    );
    k.stop();
}

#[tokio::test]
async fn a_thousand_concurrent_calls_are_bounded_and_all_answered() {
    if !python_available() {
        return;
    }
    let (_home, k) = two_packs();
    k.approve("cap_a").await;
    k.reload().await;
    create_store(&k, "s1").await;
    grant(&k, "cap_a", "store.get", json!({})).await;
    let (s, run) = k.run("cap_a_flood", json!({"n": 1000})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    // Every call ends in an answer: the key does not exist, so each one is a logical failure.
    assert_eq!(
        run["result"]["out"]["counts"],
        json!({"fail:key_not_found": 1000}),
        "{run}"
    );
    k.stop();
}

/// Invariant 1 for doors: a pack whose file changes while its block runs loses its capability
/// and network grants at once — the watcher records `modified` within a second, without any call.
#[tokio::test]
async fn a_pack_modified_while_its_block_runs_loses_its_doors_at_once() {
    if !python_available() {
        return;
    }
    let (home, k) = two_packs();
    k.approve("cap_a").await;
    k.reload().await;
    create_store(&k, "s1").await;
    grant(&k, "cap_a", "store.get", json!({})).await;
    let (s, v) = k
        .post(
            "/api/network/grant",
            json!({"pack_id": "cap_a", "allowed_domains": ["example.com"], "allowed_ports": [443]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let check = json!({"pack_id": "cap_a", "domain": "example.com", "port": 443});
    let (_, v) = k.post("/api/network/check", check.clone()).await;
    assert_eq!(v["data"]["allowed"], true, "{v}");

    let base = k.base.clone();
    let running = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/api/flows/cap_a_loop/run"))
            .bearer_auth(TOKEN)
            .json(&json!({"inputs": {}}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    let marker = home.path().join("user_data/packs/cap_a/started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the block never started calling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The change, made while the block runs.
    let changed_at = Instant::now();
    write(
        home.path(),
        "ecosystem/cap_a/backend/blocks/extra.py",
        "x = 1\n",
    );
    // Without any call: the API shows `modified` and the network check says no.
    loop {
        let (_, p) = k.get("/api/packs/cap_a").await;
        if p["data"]["state"] == "modified" {
            break;
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(5),
            "the change was not noticed: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let noticed = changed_at.elapsed();
    let (_, v) = k.post("/api/network/check", check).await;
    assert_eq!(v["data"]["allowed"], false, "{v}");
    let run = running.await.unwrap();
    // The running block lost its doors: its next call was refused, or (as the pack's sandbox is
    // stopped when the pack stops being approved) the block itself was stopped mid-call.
    let out = &run["data"]["result"]["out"];
    let refused = out["refused"]["error_type"] == "grant_denied";
    let stopped = run["data"]["steps"][0]["error_type"] == "worker_unavailable";
    assert!(refused || stopped, "the running block kept its door: {run}");
    assert!(
        noticed < Duration::from_secs(2),
        "noticed after {noticed:?}"
    );
    k.stop();
}

/// The administrative handlers of official flows are real: `kernel:network.grant` in a flow under
/// `flows/` grants (signed, audited), `kernel:network.revoke` revokes; the same handler in a
/// shared flow is refused at load.
#[tokio::test]
async fn official_flows_grant_and_revoke_through_administrative_handlers() {
    let home = fresh_home();
    make_pack(
        home.path(),
        "net_pack",
        &[("b.py", "def run(i, context=None):\n    return 1\n")],
    );
    write(
        home.path(),
        "flows/admin_grant.flow.yaml",
        "flow_id: admin_grant\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: \"${ctx.pack}\", allowed_domains: [\"example.com\"], allowed_ports: [443], notes: \"by flow\"}}, output: grant}\n  - {id: r, phase: m, type: handler, when: \"${ctx.revoke} == true\", input: {handler: \"kernel:network.revoke\", args: {pack_id: \"${ctx.pack}\", reason: \"by flow\"}}, output: revoked}\n",
    );
    write(
        home.path(),
        "user_data/shared/flows/sneaky.flow.yaml",
        "flow_id: sneaky\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: net_pack, allowed_domains: [\"*\"], allowed_ports: [0]}}}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("net_pack").await;
    k.reload().await;
    let (s, run) = k
        .run("admin_grant", json!({"pack": "net_pack", "revoke": false}))
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["result"]["grant"]["allowed_domains"],
        json!(["example.com"]),
        "{run}"
    );
    let check = json!({"pack_id": "net_pack", "domain": "example.com", "port": 443});
    let (_, v) = k.post("/api/network/check", check.clone()).await;
    assert_eq!(v["data"]["allowed"], true, "{v}");
    let (s, run) = k
        .run("admin_grant", json!({"pack": "net_pack", "revoke": true}))
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, v) = k.post("/api/network/check", check).await;
    assert_eq!(v["data"]["allowed"], false, "{v}");
    // Bad arguments fail the step with the fix, and grant nothing.
    let (_, run) = k
        .run(
            "admin_grant",
            json!({"pack": "no_such_pack", "revoke": false}),
        )
        .await;
    let g = step(&run, "g");
    assert_eq!(g["status"], "failed", "{run}");
    assert!(g["error"].as_str().unwrap().contains("no pack"), "{run}");
    // The shared flow naming an administrative handler never loaded.
    let (s, _) = k.run("sneaky", json!({})).await;
    assert_eq!(s, 404);
    let (_, audit) = k.get("/api/audit?category=network&limit=50").await;
    assert!(audit.to_string().contains("network_revoke"), "{audit}");
    k.stop();
}

/// `kernel:capability.grant|revoke` in an official flow grant and revoke like the API.
#[tokio::test]
async fn official_flows_grant_capabilities() {
    let home = fresh_home();
    write(
        home.path(),
        "flows/cap_admin.flow.yaml",
        "flow_id: cap_admin\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:capability.grant\", args: {principal_id: some_pack, permission_id: store.get, config: {allowed_store_ids: [s1]}}}, output: g}\n  - {id: r, phase: m, type: handler, when: \"${ctx.revoke} == true\", input: {handler: \"kernel:capability.revoke\", args: {principal_id: some_pack, permission_id: store.get}}, output: r}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    let (s, run) = k.run("cap_admin", json!({"revoke": false})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(step(&run, "g")["status"], "succeeded", "{run}");
    let (_, v) = k.get("/api/capability/grants?principal_id=some_pack").await;
    assert_eq!(
        v["data"]["grants"][0]["config"]["allowed_store_ids"],
        json!(["s1"]),
        "{v}"
    );
    let (_, run) = k.run("cap_admin", json!({"revoke": true})).await;
    assert_eq!(step(&run, "r")["status"], "succeeded", "{run}");
    let (_, v) = k.get("/api/capability/grants?principal_id=some_pack").await;
    assert_eq!(v["data"]["grants"], json!([]), "{v}");
    let (_, audit) = k.get("/api/audit?category=permission&limit=50").await;
    let text = audit.to_string();
    assert!(
        text.contains("capability_grant") && text.contains("capability_revoke"),
        "{text}"
    );
    k.stop();
}
