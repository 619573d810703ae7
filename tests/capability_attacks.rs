//! An outside review's attacks on the capability system, kept as regression tests: each one
//! succeeded against the first version and asserts the contract's promise.
//!
//! * secret material escaping the redactor: truncation before scrubbing (2000-character error and
//!   stderr line caps), multi-line values, escaped (`repr`) spellings;
//! * secret values kept verbatim in `permission` audit lines (a third-party handler's `key` arg);
//! * a store key whose long segment is cut into pieces putting a `..` component on disk;
//! * a malformed `secrets.get` not getting the one identical denial;
//! * an ungranted pack writing the audit log without bound (denied calls were not limited);
//! * one pack's large reads stalling every other pack's capability calls (a shared arbiter);
//! * a pack flow running an official flow (`kernel:flow.run`) whose administrative step grants the
//!   pack;
//! * a pack file changed through a hard link from outside the pack, which inotify does not report.

mod common;

/// The two tests that load the CPUs (a flood of calls, a pack reading large values) run one at a
/// time: each measures what the other would disturb.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use common::*;
use serde_json::{json, Value};

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n.div_ceil(2)];
    getrandom::getrandom(&mut b).unwrap();
    let mut s: String = b.iter().map(|x| format!("{x:02x}")).collect();
    s.truncate(n);
    s
}

/// A flow `<pack>_<name>` with one step running `file` of `pack`, its result under `out`.
fn flow(home: &std::path::Path, pack: &str, name: &str, file: &str) {
    write(
        home,
        &format!("user_data/shared/flows/{pack}_{name}.flow.yaml"),
        &format!("flow_id: {pack}_{name}\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: python_file_call, owner_pack: {pack}, file: {file}, timeout_seconds: 30, output: out}}\n"),
    );
}

/// Gets the secret `inputs.key` and mishandles it the way ordinary code does.
const CARELESS: &str = r#"
import os, sys, rumi_capability

def run(input_data, context=None):
    i = context["inputs"]
    v = rumi_capability.call("secrets.get", args={"key": i["key"]})["output"]["value"]
    sys.stderr.write(v + "\n")
    sys.stderr.flush()
    os.write(2, (v + "\n").encode())  # the worker's real stderr: the kernel log
    if i.get("repr"):
        raise ValueError(f"cannot parse key {v!r}")
    raise ValueError(v)
"#;

/// Everything the kernel kept or answered about the runs: run records, audit, log.
async fn everything(k: &Kernel) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (_, runs) = k.get("/api/runs?limit=100").await;
    // `data` is the list itself (tests/secret_leak.rs reads `data.runs`, which is always
    // absent, so its run-record search never runs).
    let list = runs["data"].as_array().cloned().unwrap_or_default();
    assert!(!list.is_empty(), "the runs are listed: {runs}");
    for r in list {
        let id = r["run_id"].as_str().unwrap_or("").to_string();
        let (_, v) = k.get(&format!("/api/runs/{id}")).await;
        out.push((format!("GET /api/runs/{id}"), v.to_string()));
    }
    for cat in ["python_file_call", "permission", "security", "system"] {
        let (_, v) = k
            .get(&format!("/api/audit?category={cat}&limit=1000"))
            .await;
        out.push((format!("audit {cat}"), v.to_string()));
    }
    out
}

async fn set_and_grant(k: &Kernel, pack: &str, key: &str, value: &str) {
    let (s, v) = k
        .post("/api/secrets/set", json!({"key": key, "value": value}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": pack, "permission_id": "secrets.get", "config": {"allowed_keys": [key]}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// Invariant 5 with a long secret (a certificate, a JWT, a service-account JSON: well under the
/// 64 KiB a secret may hold). The block host cuts an exception message to 2000 characters and the
/// kernel cuts a stderr line to 2000 bytes *before* the redactor sees them; the redactor only
/// replaces the whole value, so the first ~2000 characters of the secret are kept in clear in the
/// run record, the `python_file_call` audit and the kernel log.
#[tokio::test]
async fn attack_long_secret_prefix_survives_truncation_before_redaction() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "longleak", &[("careless.py", CARELESS)]);
    flow(home.path(), "longleak", "careless", "careless.py");
    let k = Kernel::start(home.path(), &[("RUMI_LOG", "debug")]);
    k.approve("longleak").await;
    k.reload().await;
    let value = format!("LS-{}", random_hex(3000));
    set_and_grant(&k, "longleak", "LONG_KEY", &value).await;
    let (_, run) = k.run("longleak_careless", json!({"key": "LONG_KEY"})).await;
    assert_eq!(step(&run, "s")["status"], "failed", "{run}");

    // 256 bits of the secret are plenty to prove a leak.
    let piece = &value[..64];
    let mut leaks: Vec<String> = Vec::new();
    for (place, body) in everything(&k).await {
        if body.contains(piece) {
            leaks.push(place);
        }
    }
    let log_path = k.stderr_log.clone();
    k.stop();
    if std::fs::read_to_string(&log_path).unwrap().contains(piece) {
        leaks.push("kernel log (RUMI_LOG=debug)".into());
    }
    assert!(
        leaks.is_empty(),
        "the first characters of a 3003-byte secret are kept in clear in: {leaks:?}"
    );
}

/// Invariant 5 with a multi-line secret (a PEM private key, the most common secret that is
/// not a token). Worker stderr is scrubbed line by line, so no single line holds the whole
/// value and every line of the key is logged; an exception message that uses `{v!r}` spells the
/// newlines as `\n`, so the record holds the whole key too.
#[tokio::test]
async fn attack_multiline_secret_escapes_the_redactor() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "pemleak", &[("careless.py", CARELESS)]);
    flow(home.path(), "pemleak", "careless", "careless.py");
    let k = Kernel::start(home.path(), &[("RUMI_LOG", "debug")]);
    k.approve("pemleak").await;
    k.reload().await;
    let (l1, l2) = (random_hex(64), random_hex(64));
    let value = format!("-----BEGIN PRIVATE KEY-----\n{l1}\n{l2}\n-----END PRIVATE KEY-----");
    set_and_grant(&k, "pemleak", "TLS_KEY", &value).await;
    let (_, run) = k
        .run("pemleak_careless", json!({"key": "TLS_KEY", "repr": true}))
        .await;
    assert_eq!(step(&run, "s")["status"], "failed", "{run}");

    let mut leaks: Vec<String> = Vec::new();
    for (place, body) in everything(&k).await {
        if body.contains(&l1) || body.contains(&l2) {
            leaks.push(place);
        }
    }
    let log_path = k.stderr_log.clone();
    k.stop();
    let log = std::fs::read_to_string(&log_path).unwrap();
    if log.contains(&l1) || log.contains(&l2) {
        leaks.push("kernel log (RUMI_LOG=debug)".into());
    }
    assert!(
        leaks.is_empty(),
        "lines of a PEM secret are kept in clear in: {leaks:?}"
    );
}

/// Gets the secret, then makes calls that carry it as an argument the audit shows verbatim.
const ARGS: &str = r#"
import rumi_capability

def run(input_data, context=None):
    v = rumi_capability.call("secrets.get", args={"key": "API_TOKEN"})["output"]["value"]
    a = rumi_capability.call("vendor.lookup", args={"key": v})
    b = rumi_capability.call("store.list", args={"store_id": "notes", "prefix": v})
    return {"a": a.get("error_type"), "b": b.get("success")}
"#;

/// Invariant 5 / §16 "permission audit lines carry ... summarised args (never a secret value)":
/// `summarise_args` shows `key`, `prefix` and `store_id` verbatim for *every* permission (a
/// third-party handler's `key` is typically an API key), and the `permission` audit is not
/// scrubbed by the redactor. A block passing a secret it holds to any capability call puts the
/// value into the audit log in clear (up to 128 chars).
#[tokio::test]
async fn attack_secret_passed_as_call_argument_is_audited_verbatim() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "argleak", &[("args.py", ARGS)]);
    flow(home.path(), "argleak", "args", "args.py");
    let k = Kernel::start(home.path(), &[]);
    k.approve("argleak").await;
    k.reload().await;
    let value = format!("tok{}", random_hex(40));
    set_and_grant(&k, "argleak", "API_TOKEN", &value).await;
    let (s, v) = k
        .post(
            "/api/stores/create",
            json!({"store_id": "notes", "root_path": "user_data/stores/notes"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": "argleak", "permission_id": "store.list", "config": {}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, run) = k.run("argleak_args", json!({})).await;
    assert_eq!(run["result"]["out"]["a"], "handler_not_found", "{run}");
    let (_, audit) = k.get("/api/audit?category=permission&limit=1000").await;
    let audit = audit.to_string();
    k.stop();
    assert!(
        !audit.contains(&value),
        "the permission audit holds the secret value in clear: {audit}"
    );
}

/// Raw frames on the pack's own capability socket.
const RAW: &str = r#"
import os, socket, struct, json

def run(input_data, context=None):
    out = []
    for payload in context["inputs"]["payloads"]:
        b = payload.encode()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(os.environ["RUMI_CAPABILITY_SOCKET"])
        s.sendall(struct.pack(">I", len(b)) + b)
        head = s.recv(4)
        (n,) = struct.unpack(">I", head)
        body = b""
        while len(body) < n:
            body += s.recv(n - len(body))
        s.close()
        r = json.loads(body)
        r.pop("latency_ms", None)
        out.append(r)
    return {"answers": out}
"#;

/// §16 "Capability calls": every failure of `secrets.get` is the identical response (the broker's
/// own docs list "malformed" among them). A `secrets.get` frame whose `args` or
/// `timeout_seconds` is malformed is answered `validation_error` with its own text instead.
#[tokio::test]
async fn attack_malformed_secrets_get_is_not_the_identical_denial() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "shape", &[("raw.py", RAW)]);
    flow(home.path(), "shape", "raw", "raw.py");
    let k = Kernel::start(home.path(), &[]);
    k.approve("shape").await;
    k.reload().await;
    let payloads = [
        r#"{"permission_id":"secrets.get","args":{"key":"NOPE"}}"#,
        r#"{"permission_id":"secrets.get","args":["NOPE"]}"#,
        r#"{"permission_id":"secrets.get","args":{"key":"NOPE"},"timeout_seconds":-1}"#,
    ];
    let (_, run) = k.run("shape_raw", json!({"payloads": payloads})).await;
    k.stop();
    let answers = run["result"]["out"]["answers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(answers.len(), 3, "{run}");
    let denial = &answers[0];
    assert_eq!(
        denial["error"], "Access denied or secret not found",
        "{run}"
    );
    for a in &answers[1..] {
        assert_eq!(
            a, denial,
            "a malformed secrets.get answers differently: {a}"
        );
    }
}

/// Set `key` to `value` then get `probe`.
const ALIAS: &str = r#"
import rumi_capability

def run(input_data, context=None):
    i = context["inputs"]
    s = rumi_capability.call("store.set", args={"store_id": "notes", "key": i["key"], "value": i["value"]})
    g = rumi_capability.call("store.get", args={"store_id": "notes", "key": i["probe"]})
    return {"set": s.get("output"), "get": g.get("output")}
"#;

/// Contract §7.1 "Store keys: ... no `..` segment", invariant 7. `check_store_key` refuses a
/// `..` segment, but `split_key` then cuts a segment longer than 200 characters into `<piece>+`
/// directories and a remainder, and a remainder of `..` (a 202-character segment ending in `..`)
/// becomes a real `..` path component opened with `openat`. The key
/// `"A"*200 + "../victim"` writes `<root>/victim.json`: the value of the *different* key
/// `victim`. (The `+` piece before it keeps the climb inside the root, so this is aliasing and
/// overwriting of other keys, not an escape; a `.` remainder aliases the same way.)
#[tokio::test]
async fn attack_store_key_piece_becomes_dotdot_component() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "alias", &[("alias.py", ALIAS)]);
    flow(home.path(), "alias", "alias", "alias.py");
    let k = Kernel::start(home.path(), &[]);
    k.approve("alias").await;
    k.reload().await;
    let (s, v) = k
        .post(
            "/api/stores/create",
            json!({"store_id": "notes", "root_path": "user_data/stores/notes"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for perm in ["store.set", "store.get"] {
        let (s, v) = k
            .post(
                "/api/capability/grants/grant",
                json!({"principal_id": "alias", "permission_id": perm, "config": {"allowed_store_ids": ["notes"]}}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let key = format!("{}../victim", "A".repeat(200));
    let (_, run) = k
        .run(
            "alias_alias",
            json!({"key": key, "value": "overwritten", "probe": "victim"}),
        )
        .await;
    k.stop();
    let out = &run["result"]["out"];
    let on_disk = home
        .path()
        .join("user_data/stores/notes/victim.json")
        .exists();
    assert!(
        !(out["get"]["success"] == true || on_disk),
        "a key with a `..` piece wrote the value of key `victim`: {run}"
    );
}

/// Denied calls as fast as one connection goes, each with the biggest args summary the audit
/// keeps (32 args, names of 64 characters, `key`/`prefix`/`store_id` of 128, a 128-byte
/// request id), for `inputs.secs` seconds.
const FLOOD_AUDIT: &str = r#"
import os, socket, struct, json, time

def run(input_data, context=None):
    path = os.environ["RUMI_CAPABILITY_SOCKET"]
    args = {("k%02d" % i) + "x" * 61: "v" for i in range(29)}
    args.update({"key": "k" * 512, "prefix": "p" * 512, "store_id": "s" * 512})
    body = json.dumps({"permission_id": "no.such.handler", "args": args, "request_id": "r" * 128}).encode()
    frame = struct.pack(">I", len(body)) + body
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    n = 0
    deadline = time.monotonic() + context["inputs"]["secs"]
    while time.monotonic() < deadline:
        s.sendall(frame)
        head = b""
        while len(head) < 4:
            head += s.recv(4 - len(head))
        (m,) = struct.unpack(">I", head)
        got = 0
        while got < m:
            got += len(s.recv(m - got))
        n += 1
    return {"calls": n}
"#;

/// §15 invariant 8 / resource exhaustion: a pack with *no grant at all* can write the audit log
/// as fast as it can send frames. Denied calls are not rate-limited (only `secrets.get` is) and
/// every one is a `permission` audit line of ~5 KiB (the args summary keeps 32 names and three
/// 128-character values), appended and kept forever: one block fills the disk in hours. The
/// assertion bounds what 5 seconds of denied calls from one block may add to the audit (1 MiB).
#[tokio::test]
async fn attack_ungranted_pack_floods_the_audit_log() {
    let _heavy = HEAVY.lock().await;
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "flooder", &[("flood.py", FLOOD_AUDIT)]);
    write(
        home.path(),
        "user_data/shared/flows/flooder_flood.flow.yaml",
        "flow_id: flooder_flood\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: python_file_call, owner_pack: flooder, file: flood.py, timeout_seconds: 60, output: out}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("flooder").await;
    k.reload().await;
    let audit_bytes = |home: &std::path::Path| -> u64 {
        std::fs::read_dir(home.join("user_data/audit"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("permission_"))
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    };
    let before = audit_bytes(home.path());
    let (_, run) = k.run("flooder_flood", json!({"secs": 5})).await;
    // Let the audit writer catch up.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = audit_bytes(home.path());
    k.stop();
    let calls = run["result"]["out"]["calls"].as_u64().unwrap_or(0);
    let grown = after - before;
    eprintln!("{calls} denied calls in 5 s added {grown} bytes to the permission audit");
    assert!(calls > 0, "{run}");
    assert!(
        grown < 1024 * 1024,
        "{calls} denied calls of a pack without any grant added {grown} bytes of audit in 5 s \
         (~{} MiB/hour from one block)",
        grown * 720 / (1024 * 1024)
    );
}

/// inotify reports a write to the directory the writer named, so a file of the pack written
/// through a hard link outside the pack directory (permissive mode: the pack's own data
/// directory is on the same file system and writable) raises no event; the first version kept
/// the pack `approved`, its doors open, until its next block call. The periodic sweep of approved
/// packs (`watch.rs`, every 2 s, stat-cached) finds it.
#[tokio::test]
async fn attack_change_through_a_hard_link_is_found_by_the_sweep() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(
        home.path(),
        "linked",
        &[("noop.py", "def run(i, context=None):\n    return {}\n")],
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("linked").await;
    let (_, p) = k.get("/api/packs/linked").await;
    assert_eq!(p["data"]["state"], "approved", "{p}");
    // Settle (stats younger than 2 s are never trusted; let the watch be in place).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let inside = home.path().join("ecosystem/linked/backend/blocks/noop.py");
    let outside_dir = home.path().join("user_data/packs/linked");
    std::fs::create_dir_all(&outside_dir).unwrap();
    let outside = outside_dir.join("alias.py");
    std::fs::hard_link(&inside, &outside).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&outside)
            .unwrap();
        f.write_all(b"import os  # changed after approval\n")
            .unwrap();
    }
    assert!(std::fs::read_to_string(&inside)
        .unwrap()
        .contains("changed after approval"));
    let mut state = Value::Null;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while std::time::Instant::now() < deadline {
        let (_, p) = k.get("/api/packs/linked").await;
        state = p["data"]["state"].clone();
        if state == "modified" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Control: the same change made through the pack's own path is seen at once.
    let mut control = Value::Null;
    if state != "modified" {
        std::fs::write(
            home.path().join("ecosystem/linked/backend/blocks/other.py"),
            "x = 1\n",
        )
        .unwrap();
        for _ in 0..100 {
            let (_, p) = k.get("/api/packs/linked").await;
            control = p["data"]["state"].clone();
            if control == "modified" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    k.stop();
    assert_eq!(
        state, "modified",
        "a pack file changed through a hard link stayed `approved` for 8 s (no watcher event, \
         no sweep); a direct change afterwards was seen: {control}"
    );
}

/// Python helpers: one kept connection per thread, frames in and out.
const WIRE: &str = r#"
import os, socket, struct, json, time, threading

def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["RUMI_CAPABILITY_SOCKET"])
    return s

def call(s, perm, args):
    b = json.dumps({"permission_id": perm, "args": args}).encode()
    s.sendall(struct.pack(">I", len(b)) + b)
    head = b""
    while len(head) < 4:
        head += s.recv(4 - len(head))
    (m,) = struct.unpack(">I", head)
    body = bytearray()
    while len(body) < m:
        body += s.recv(min(1 << 20, m - len(body)))
    return json.loads(body)
"#;

/// Stores a ~1 MiB array (within the default `max_value_bytes`), then reads it back from
/// `inputs.threads` connections for `inputs.secs` seconds.
const HOG: &str = r#"
def run(input_data, context=None):
    i = context["inputs"]
    s = conn()
    r = call(s, "store.set", {"store_id": "big", "key": "blob", "value": list(range(140000))})
    assert r.get("success"), r
    n = [0]
    def loop():
        c = conn()
        end = time.monotonic() + i["secs"]
        while time.monotonic() < end:
            call(c, "store.get", {"store_id": "big", "key": "blob"})
            n[0] += 1
    ts = [threading.Thread(target=loop) for _ in range(i["threads"])]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return {"gets": n[0]}
"#;

/// Cheap calls on its own store for `inputs.secs` seconds; answers the latencies.
const VICTIM: &str = r#"
def run(input_data, context=None):
    i = context["inputs"]
    time.sleep(i.get("delay", 0))
    s = conn()
    lat = []
    end = time.monotonic() + i["secs"]
    while time.monotonic() < end:
        t = time.monotonic()
        call(s, "store.get", {"store_id": "small", "key": "k"})
        lat.append((time.monotonic() - t) * 1000)
    lat.sort()
    return {"n": len(lat), "p50_ms": lat[len(lat) // 2], "max_ms": lat[-1]}
"#;

/// Resource isolation between packs. Every pack's broker, listener and connections live on a
/// *pack arbiter*, and there is one arbiter per two CPUs (`kernel.rs` `pack_arbiters`): on a
/// 1–3 CPU host every pack shares one thread. `store.get`, `store.list` and `secrets.get` run
/// synchronously on the broker (only writes go to `spawn_blocking`), so one pack reading a
/// 1 MiB value (the default `max_value_bytes`) in a loop holds that thread, and another pack's
/// trivial capability calls (and its egress) wait behind it.
#[tokio::test]
async fn attack_one_pack_stalls_another_packs_capability_calls() {
    let _heavy = HEAVY.lock().await;
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let hog = format!("import os, socket, struct, json, time, threading\n{WIRE}\n{HOG}");
    let victim = format!("import os, socket, struct, json, time, threading\n{WIRE}\n{VICTIM}");
    make_pack(home.path(), "hog", &[("hog.py", &hog)]);
    make_pack(home.path(), "victim", &[("victim.py", &victim)]);
    flow(home.path(), "hog", "run", "hog.py");
    flow(home.path(), "victim", "run", "victim.py");
    let k = Kernel::start(home.path(), &[]);
    k.approve("hog").await;
    k.approve("victim").await;
    k.reload().await;
    for (store, pack, perms) in [
        ("big", "hog", &["store.set", "store.get"][..]),
        ("small", "victim", &["store.get"][..]),
    ] {
        let (s, v) = k
            .post(
                "/api/stores/create",
                json!({"store_id": store, "root_path": format!("user_data/stores/{store}")}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        for p in perms {
            let (s, v) = k
                .post(
                    "/api/capability/grants/grant",
                    json!({"principal_id": pack, "permission_id": p, "config": {"allowed_store_ids": [store]}}),
                )
                .await;
            assert_eq!(s, 200, "{v}");
        }
    }
    let (_, alone) = k.run("victim_run", json!({"secs": 2})).await;
    let alone = alone["result"]["out"].clone();
    let (hogged, attacked) = tokio::join!(
        k.run("hog_run", json!({"secs": 6, "threads": 8})),
        k.run("victim_run", json!({"secs": 4, "delay": 1.0})),
    );
    k.stop();
    let attacked = attacked.1["result"]["out"].clone();
    eprintln!(
        "victim alone: {alone}; victim while hog reads its 1 MiB value: {attacked}; hog: {}",
        hogged.1["result"]["out"]
    );
    // What the kernel controls: the victim's calls are not queued behind the other pack's work
    // (its median stays near its own, and no call waits long). Its throughput on a two-CPU
    // machine is another matter: the other pack's own Python and its reads (two blocking threads
    // at most) use the CPUs too, so calls/s are shared, not isolated. The first version held the
    // pack arbiter for each 1 MiB read and encode: median 2.8 ms against 0.5, slowest 601 ms.
    let (p50_alone, p50_attacked, slowest) = (
        alone["p50_ms"].as_f64().unwrap_or(f64::MAX),
        attacked["p50_ms"].as_f64().unwrap_or(f64::MAX),
        attacked["max_ms"].as_f64().unwrap_or(f64::MAX),
    );
    assert!(
        p50_attacked <= (p50_alone * 3.0).max(2.0) && slowest < 400.0,
        "another pack's reads held up the victim's capability calls: median {p50_alone:.2} ms \
         alone, {p50_attacked:.2} ms attacked, slowest {slowest:.0} ms: {attacked}"
    );
}

/// Contract §8 ("Grants API"... administrative handlers for official flows only) and the
/// threat model ("a pack may ... widen its own rights"). The loader refuses
/// `kernel:capability.grant` in pack and shared flows and in injected steps, but a pack flow may
/// `kernel:flow.run` an *official* flow, whose administrative steps then run with the inputs the
/// pack chose (templated from `ctx`). Any parametrised official helper (here the obvious
/// "onboard a pack" flow an operator writes) becomes the pack's own grant API: the pack grants
/// itself `secrets.get` without the operator. (`actors/src/flow_run.rs`, `Next::Child` /
/// `Next::Admin`: nothing carries the caller's rank into the child run.)
#[tokio::test]
async fn attack_pack_flow_runs_an_official_admin_flow_to_grant_itself() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    // The operator's helper: grants a pack read access to one secret.
    write(
        home.path(),
        "flows/onboard.flow.yaml",
        "flow_id: onboard\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:capability.grant\", args: {principal_id: \"${ctx.pack}\", permission_id: secrets.get, config: {allowed_keys: [\"${ctx.key}\"]}}}, output: g}\n",
    );
    // The hostile pack's own flow (loaded once the pack is approved).
    make_pack(
        home.path(),
        "climber",
        &[("noop.py", "def run(i, context=None):\n    return {}\n")],
    );
    write(
        home.path(),
        "ecosystem/climber/backend/flows/climb.flow.yaml",
        "flow_id: climb\nphases: [m]\nsteps:\n  - {id: c, phase: m, type: handler, input: {handler: \"kernel:flow.run\", args: {flow_id: onboard, inputs: {pack: climber, key: DB_PASSWORD}}}, output: c}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("climber").await;
    k.reload().await;
    // Whatever starts it (a schedule or route of the pack, a shared flow, an operator running the
    // pack's flow): here the API.
    let (s, run) = k.run("climb", json!({})).await;
    let (_, grants) = k.get("/api/capability/grants?principal_id=climber").await;
    k.stop();
    assert_eq!(s, 200, "{run}");
    assert_eq!(
        grants["data"]["grants"],
        json!([]),
        "a pack flow granted its own pack secrets.get through an official flow: {grants}; run: {run}"
    );
}
