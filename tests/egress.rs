//! The egress proxy under attack (contract §6, §15 invariants 3, 4, 6, 8): grants, every spelling
//! of an internal address, redirects, limits, hostile frames on the socket, parallel requests,
//! revocation, a modified pack, a tampered grant file. Real kernel, real Python blocks, real
//! upstream servers on 127.0.0.2 — opened with `RUMI_EGRESS_ALLOW_CIDRS`, and blocked without it.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A block that sends each request of `inputs.requests` through `rumi_syscall` and returns the
/// answers (with the decoded body as hex).
const REQ: &str = r#"
import rumi_syscall

def run(input_data, context=None):
    out = []
    for r in context["inputs"]["requests"]:
        body = r.get("body")
        if "body_hex" in r:
            body = bytes.fromhex(r["body_hex"])
        resp = rumi_syscall.http_request(r.get("method", "GET"), r["url"], headers=r.get("headers"), body=body, timeout_seconds=r.get("timeout", 10))
        if resp.get("success"):
            resp["decoded_hex"] = rumi_syscall.body_bytes(resp).hex()
        out.append(resp)
    return {"responses": out}
"#;

/// 50 requests at once from one block.
const PARALLEL: &str = r#"
import threading, rumi_syscall

def run(input_data, context=None):
    url = context["inputs"]["url"]
    results = [None] * 50
    def one(i):
        results[i] = rumi_syscall.get(url + "?i=%d" % i, timeout_seconds=20)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads: t.start()
    for t in threads: t.join()
    return {"ok": sum(1 for r in results if r and r.get("success") and r["status_code"] == 200),
            "errors": [r.get("error_type") for r in results if not (r and r.get("success"))][:5]}
"#;

/// `context.network_check`, the grant check from inside a block.
const CHECK: &str = r#"
def run(input_data, context=None):
    i = context["inputs"]
    return context["network_check"](i["domain"], i["port"])
"#;

fn net_home(pack: &str) -> tempfile::TempDir {
    let home = fresh_home();
    add_net_pack(home.path(), pack);
    home
}

/// A pack with the blocks above and a flow for each (`<pack>_req`, `_par`, `_chk`).
fn add_net_pack(home: &Path, pack: &str) {
    make_pack(
        home,
        pack,
        &[
            ("req.py", REQ),
            ("parallel.py", PARALLEL),
            ("check.py", CHECK),
        ],
    );
    for (flow, file) in [
        ("req", "req.py"),
        ("par", "parallel.py"),
        ("chk", "check.py"),
    ] {
        write(
            home,
            &format!("user_data/shared/flows/{pack}_{flow}.flow.yaml"),
            &format!("flow_id: {pack}_{flow}\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: python_file_call, owner_pack: {pack}, file: {file}, timeout_seconds: 60, output: out}}\n"),
        );
    }
}

fn start(home: &Path, allow: Option<&str>, extra: &[(&str, &str)]) -> Kernel {
    let mut env: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = allow {
        env.push(("RUMI_EGRESS_ALLOW_CIDRS", a));
    }
    Kernel::start(home, &env)
}

async fn grant(k: &Kernel, pack: &str, domains: Value, ports: Value) {
    let (s, v) = k
        .post(
            "/api/network/grant",
            json!({"pack_id": pack, "allowed_domains": domains, "allowed_ports": ports, "notes": "test"}),
        )
        .await;
    assert_eq!(s, 200, "grant: {v}");
}

/// Sends requests through the pack's block; answers the responses.
async fn send(k: &Kernel, pack: &str, requests: Value) -> Vec<Value> {
    let (s, run) = k
        .run(&format!("{pack}_req"), json!({"requests": requests}))
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    run["result"]["out"]["responses"]
        .as_array()
        .unwrap()
        .clone()
}

async fn one(k: &Kernel, pack: &str, request: Value) -> Value {
    send(k, pack, json!([request])).await.remove(0)
}

fn socket(k: &Kernel, pack: &str) -> PathBuf {
    k.home
        .join("user_data/sockets")
        .join(pack)
        .join("egress.sock")
}

fn assert_blocked(r: &Value, what: &str) {
    assert_eq!(r["success"], false, "{what}: {r}");
    assert_eq!(r["error_type"], "security_blocked", "{what}: {r}");
    assert_eq!(r["error"], "Request blocked by security policy", "{what}");
}

/// The pack's egress listener in `GET /api/diagnostics` once it counts `n` open connections
/// (a closed connection is counted out when its actor has stopped).
async fn connections_settle(k: &Kernel, pack: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = k.get("/api/diagnostics").await;
        assert_eq!(s, 200, "{v}");
        let listener = v["data"]["egress"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["pack_id"] == pack).cloned())
            .unwrap_or_else(|| panic!("pack {pack} has an egress listener: {v}"));
        assert_eq!(listener["bound"], true, "{listener}");
        if listener["active_connections"] == n {
            return listener;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} open egress connections: {listener}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The category's audit entries once one matches `until` (the writer flushes within its sync
/// interval); panics naming the category if none does within 10 s.
async fn audit(k: &Kernel, category: &str, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = k
            .get(&format!("/api/audit?category={category}&limit=1000"))
            .await;
        assert_eq!(s, 200);
        let entries = v["data"].as_array().cloned().unwrap_or_default();
        if entries.iter().any(&until) {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "no matching {category} audit entry in: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn grants_decide_and_every_internal_spelling_is_blocked() {
    if !python_available() {
        return;
    }
    let up = Upstream::start("127.0.0.2");
    let pack = "eg_grants";
    let home = net_home(pack);
    let k = start(home.path(), Some("127.0.0.2/32"), &[]);
    k.approve(pack).await;
    let port = up.addr.port();
    let echo = up.url("/echo");

    // No grant at all.
    let r = one(&k, pack, json!({"url": echo})).await;
    assert_eq!(r["error_type"], "access_denied", "{r}");
    assert_eq!(
        r["error"],
        "Network access denied: the pack has no network grant"
    );

    // Exact host and port.
    grant(&k, pack, json!(["127.0.0.2"]), json!([port])).await;
    let r = one(&k, pack, json!({"url": echo})).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["status_code"], 200);
    let seen: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["headers"]["host"], format!("127.0.0.2:{port}"));
    assert_eq!(r["final_url"], echo);
    assert_eq!(r["redirect_hops"], 0);
    assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        r["bytes_read"].as_u64().unwrap() as usize,
        r["body"].as_str().unwrap().len()
    );

    // Wrong port; empty lists deny.
    grant(&k, pack, json!(["127.0.0.2"]), json!([port - 1])).await;
    let r = one(&k, pack, json!({"url": echo})).await;
    assert_eq!(r["error_type"], "access_denied");
    assert!(r["error"]
        .as_str()
        .unwrap()
        .contains(&format!("port {port}")));
    grant(&k, pack, json!([]), json!([0])).await;
    let r = one(&k, pack, json!({"url": echo})).await;
    assert!(r["error"].as_str().unwrap().contains("no domains"), "{r}");
    grant(&k, pack, json!(["*"]), json!([])).await;
    let r = one(&k, pack, json!({"url": echo})).await;
    assert!(r["error"].as_str().unwrap().contains("no ports"), "{r}");

    // Wildcards: `*.example.com` matches the apex and subdomains (which then fail to resolve
    // here, offline: proof the grant let them through), and nothing else.
    grant(&k, pack, json!(["*.example.com"]), json!([80])).await;
    let rs = send(
        &k,
        pack,
        json!([
            {"url": "http://api.example.com/"},
            {"url": "http://example.com/"},
            {"url": "http://example.org/"},
            {"url": "http://badexample.com/"},
        ]),
    )
    .await;
    for r in &rs[..2] {
        // Offline the name then fails to resolve; with a network it would be fetched.
        assert!(
            r["error_type"] == "dns_error" || r["success"] == true,
            "the grant let it through: {r}"
        );
    }
    for r in &rs[2..] {
        assert_eq!(r["error_type"], "access_denied", "{r}");
    }

    // `*` with port 0: the grant allows everything, the address check still blocks every
    // internal spelling — as a security block, never a connection error.
    grant(&k, pack, json!(["*"]), json!([0])).await;
    let spellings = [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "2130706433",
        "127.1",
        "0x7f000001",
        "0.0.0.0",
        "169.254.169.254",
        "100.64.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "[fd00::1]",
        "[fe80::1]",
    ];
    let requests: Vec<Value> = spellings
        .iter()
        .map(|h| json!({"url": format!("http://{h}:{port}/echo")}))
        .collect();
    let hits_before = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    let rs = send(&k, pack, Value::Array(requests)).await;
    for (r, h) in rs.iter().zip(spellings) {
        assert_blocked(r, h);
    }
    assert_eq!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits_before,
        "no blocked request reached any server"
    );
    // The opened range itself still works under `*`.
    assert_eq!(one(&k, pack, json!({"url": echo})).await["success"], true);

    // network_check inside a block and the API ask the same check.
    let (_, run) = k
        .run(
            &format!("{pack}_chk"),
            json!({"domain": "anything.net", "port": 443}),
        )
        .await;
    assert_eq!(run["result"]["out"]["allowed"], true, "{run}");
    grant(&k, pack, json!(["api.test"]), json!([443])).await;
    let (_, run) = k
        .run(
            &format!("{pack}_chk"),
            json!({"domain": "anything.net", "port": 443}),
        )
        .await;
    assert_eq!(run["result"]["out"]["allowed"], false);
    assert!(run["result"]["out"]["reason"]
        .as_str()
        .unwrap()
        .contains("allowed domains"));
    let (s, v) = k
        .post(
            "/api/network/check",
            json!({"pack_id": pack, "domain": "API.test", "port": 443}),
        )
        .await;
    assert_eq!((s, &v["data"]["allowed"]), (200, &json!(true)), "{v}");

    // Every decision is in the network audit, with its details.
    let entries = audit(&k, "network", |e| {
        e["action"] == "egress_request" && e["details"]["domain"] == "169.254.169.254"
    })
    .await;
    let blocked = entries
        .iter()
        .find(|e| e["action"] == "egress_request" && e["details"]["domain"] == "169.254.169.254")
        .expect("the blocked request is audited");
    assert_eq!(blocked["details"]["allowed"], false);
    assert!(blocked["details"]["reason"]
        .as_str()
        .unwrap()
        .contains("link-local"));
    assert_eq!(blocked["owner_pack"], pack);
    let allowed = entries
        .iter()
        .find(|e| e["action"] == "egress_request" && e["success"] == true)
        .expect("an allowed request is audited");
    for key in [
        "domain",
        "port",
        "method",
        "status",
        "latency_ms",
        "bytes",
        "hops",
    ] {
        assert!(!allowed["details"][key].is_null(), "{key} in {allowed}");
    }
    assert!(entries.iter().any(|e| e["action"] == "network_grant"));
}

#[tokio::test]
async fn redirects_limits_bodies_and_validation() {
    if !python_available() {
        return;
    }
    let up = Upstream::start("127.0.0.2");
    let pack = "eg_limits";
    let home = net_home(pack);
    let k = start(home.path(), Some("127.0.0.2/32"), &[]);
    k.approve(pack).await;
    grant(&k, pack, json!(["*"]), json!([0])).await;
    let port = up.addr.port();

    let rs = send(
        &k,
        pack,
        json!([
            // 0: a redirect from the allowed host into the internal network
            {"url": up.url(&format!("/to?http://127.0.0.1:{port}/echo"))},
            // 1: three redirects are followed
            {"url": up.url("/hop/3")},
            // 2: the fourth is refused
            {"url": up.url("/hop/4")},
            // 3: POST 3xx is returned as is
            {"method": "POST", "url": up.url("/post-redirect"), "body": "x"},
            // 4: a redirect to another scheme is re-checked from step 1
            {"url": up.url("/to?ftp://127.0.0.2/x")},
            // 5, 6: 5 MiB, with and without a declared length
            {"url": up.url("/big")},
            {"url": up.url("/big-chunked")},
            // 7: a binary response body
            {"url": up.url("/bin")},
            // 8: a binary request body
            {"method": "PUT", "url": up.url("/echo"), "body_hex": "00ff10"},
            // 9-14: validation
            {"url": up.url("/echo"), "headers": {"Host": "evil.example"}},
            {"method": "TRACE", "url": up.url("/echo")},
            {"url": "ftp://127.0.0.2/x"},
            {"url": up.url("/echo"), "timeout": 0},
            {"url": up.url("/echo"), "timeout": 121},
            {"url": up.url("/echo"), "headers": (0..101).map(|i| (format!("x-h{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()},
            // 15: HEAD follows redirects too
            {"method": "HEAD", "url": up.url("/hop/1")},
        ]),
    )
    .await;
    assert_blocked(&rs[0], "redirect to 127.0.0.1");
    assert_eq!(rs[0]["redirect_hops"], 1);
    assert_eq!(rs[1]["success"], true, "{}", rs[1]);
    assert_eq!(rs[1]["redirect_hops"], 3);
    assert_eq!(rs[1]["body"], "landed");
    assert!(rs[1]["final_url"].as_str().unwrap().ends_with("/hop/0"));
    assert_eq!(rs[2]["error_type"], "too_many_redirects", "{}", rs[2]);
    assert_eq!(rs[2]["error"], "too_many_redirects");
    assert_eq!(rs[3]["success"], true, "{}", rs[3]);
    assert_eq!(rs[3]["status_code"], 307);
    assert_eq!(rs[3]["redirect_hops"], 0);
    assert_eq!(rs[4]["error_type"], "validation", "{}", rs[4]);
    assert!(rs[4]["error"].as_str().unwrap().contains("scheme"));
    for r in &rs[5..7] {
        assert_eq!(r["error_type"], "response_too_large", "{r}");
        assert_eq!(r["error"], "response_too_large");
    }
    assert_eq!(rs[7]["headers"]["x-proxy-body-encoding"], "base64");
    assert_eq!(rs[7]["decoded_hex"], "000102fffe");
    let echoed: Value = serde_json::from_str(rs[8]["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["body_hex"], "00ff10");
    assert!(
        echoed["headers"].get("x-proxy-body-encoding").is_none(),
        "the marker is not sent upstream"
    );
    for (r, needle) in rs[9..15].iter().zip([
        "Host",
        "method",
        "scheme",
        "timeout",
        "timeout",
        "100 headers",
    ]) {
        assert_eq!(r["error_type"], "validation", "{r}");
        assert!(r["error"].as_str().unwrap().contains(needle), "{r}");
    }
    assert_eq!(rs[15]["success"], true, "{}", rs[15]);
    assert_eq!(rs[15]["redirect_hops"], 1);

    // An upstream that stalls: the request's timeout fires.
    let t = Instant::now();
    let r = one(&k, pack, json!({"url": up.url("/stall"), "timeout": 1})).await;
    assert_eq!(r["error_type"], "timeout", "{r}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn response_memory_is_bounded_and_released_once_written() {
    if !python_available() {
        return;
    }
    let up = Upstream::start("127.0.0.2");
    let pack = "eg_memory";
    let home = net_home(pack);
    // Room for one 5 MiB body (charged three times: body, and its frame) and a little more.
    let k = start(
        home.path(),
        Some("127.0.0.2/32"),
        &[
            ("RUMI_MAX_RESPONSE_BYTES", "6291456"),
            ("RUMI_EGRESS_BUFFER_BYTES", "18874368"),
        ],
    );
    k.approve(pack).await;
    grant(&k, pack, json!(["127.0.0.2"]), json!([up.addr.port()])).await;
    let big = json!({"method": "GET", "url": up.url("/big")}).to_string();

    // A client asks for 5 MiB and does not read its reply: the kernel holds it, charged.
    let mut slow = UnixStream::connect(socket(&k, pack)).unwrap();
    slow.write_all(&(big.len() as u32).to_be_bytes()).unwrap();
    slow.write_all(big.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listener = connections_settle(&k, pack, 1).await;
        if listener["buffered_bytes"] == 3 * (5 << 20) {
            break;
        }
        assert!(Instant::now() < deadline, "the body is charged: {listener}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile another large response finds no room: `busy` at once, nothing else is held.
    let r = one(&k, pack, json!({"url": up.url("/big")})).await;
    assert_eq!(r["error_type"], "busy", "{r}");
    assert!(r["error"].as_str().unwrap().contains("retry"), "{r}");
    // The slow client reads its reply after all: whole, and the memory is free again.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let first = read_frame(&mut slow).expect("the held reply");
    assert_eq!(first["success"], true);
    assert_eq!(first["body"].as_str().unwrap().len(), 5 << 20);
    drop(slow);
    let listener = connections_settle(&k, pack, 0).await;
    assert_eq!(listener["buffered_bytes"], 0, "{listener}");
    let again = socket_exchange(&socket(&k, pack), big.as_bytes()).unwrap();
    assert_eq!(again["success"], true, "{}", again["error"]);
    audit(&k, "network", |e| {
        e["action"] == "egress_request" && e["error_type"] == "busy"
    })
    .await;
}

#[tokio::test]
async fn the_socket_survives_hostile_frames() {
    if !python_available() {
        return;
    }
    let up = Upstream::start("127.0.0.2");
    let (pack, other) = ("eg_frames", "eg_frames_other");
    let home = net_home(pack);
    make_pack(home.path(), other, &[("req.py", REQ)]);
    let k = start(
        home.path(),
        Some("127.0.0.2/32"),
        &[
            ("RUMI_EGRESS_READ_TIMEOUT", "1"),
            ("RUMI_EGRESS_MAX_CONNECTIONS", "4"),
        ],
    );
    k.approve(pack).await;
    k.approve(other).await;
    // Only the *other* pack may reach the upstream.
    grant(&k, other, json!(["*"]), json!([0])).await;
    let sock = socket(&k, pack);
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&sock).expect("the pack has its egress socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // A payload naming another pack is still this pack's request.
    let frame =
        json!({"method": "GET", "url": up.url("/echo"), "owner_pack": other, "pack_id": other});
    let r = socket_exchange(&sock, frame.to_string().as_bytes()).unwrap();
    assert_eq!(r["error_type"], "access_denied", "{r}");
    let r = socket_exchange(&socket(&k, other), frame.to_string().as_bytes()).unwrap();
    assert_eq!(r["success"], true, "the other pack's own socket works: {r}");

    // Invalid JSON, a JSON array, an empty frame.
    for bad in [&b"{not json"[..], b"[1,2,3]", b"\xff\xfe"] {
        let r = socket_exchange(&sock, bad).unwrap();
        assert_eq!(r["error_type"], "protocol_error", "{r}");
    }
    let r = socket_exchange(&sock, b"").unwrap();
    assert_eq!(r["error_type"], "protocol_error");

    // An oversized frame is refused from its header, without reading its body.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&(2u32 << 20).to_be_bytes()).unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!(r["error_type"], "protocol_error");
    assert!(r["error"].as_str().unwrap().contains("1048576"), "{r}");
    let mut rest = Vec::new();
    assert!(
        matches!(s.read_to_end(&mut rest), Ok(0)),
        "then closed (EOF, not a read timeout)"
    );

    // A truncated frame.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"{\"url\":").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!(r["error_type"], "protocol_error");

    // Silent clients are closed at the read deadline; while they hang on, a fifth connection is
    // told `busy`; then the slots are free again.
    connections_settle(&k, pack, 0).await;
    let t = Instant::now();
    let mut silent: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    connections_settle(&k, pack, 4).await;
    let r = socket_exchange(
        &sock,
        br#"{"op":"network_check","domain":"a.com","port":443}"#,
    );
    assert_eq!(r.unwrap()["error_type"], "busy");
    for s in silent.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1];
        assert!(
            matches!(s.read(&mut buf), Ok(0)),
            "closed by the kernel (EOF, not a read timeout)"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(8));
    let snapshot = connections_settle(&k, pack, 0).await;
    assert_eq!(snapshot["refused_busy"], 1, "{snapshot}");
    assert_eq!(snapshot["max_connections"], 4, "{snapshot}");
    let r = socket_exchange(
        &sock,
        br#"{"op":"network_check","domain":"a.com","port":443}"#,
    )
    .unwrap();
    assert_eq!(r["allowed"], false);
    assert!(r["reason"].as_str().unwrap().contains("no network grant"));

    // The kernel is unharmed; the refusals are audited.
    let (s, _) = k.get("/api/health").await;
    assert_eq!(s, 200);
    audit(&k, "network", |e| {
        e["action"] == "egress_refused" && e["error_type"] == "protocol_error"
    })
    .await;
}

#[tokio::test]
async fn parallel_requests_revoke_modify_reapprove_and_tampering() {
    if !python_available() {
        return;
    }
    let up = Upstream::start("127.0.0.2");
    let pack = "eg_life";
    let home = net_home(pack);
    let k = start(home.path(), Some("127.0.0.2/32"), &[]);
    k.approve(pack).await;
    grant(&k, pack, json!(["127.0.0.2"]), json!([up.addr.port()])).await;

    // 50 requests at once from one block.
    let (s, run) = k
        .run(&format!("{pack}_par"), json!({"url": up.url("/echo")}))
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["result"]["out"]["ok"], 50, "{run}");

    // Revoke: denied at once.
    let (s, v) = k
        .post(
            "/api/network/revoke",
            json!({"pack_id": pack, "reason": "test"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = one(&k, pack, json!({"url": up.url("/echo")})).await;
    assert_eq!(r["error_type"], "access_denied");
    assert!(r["error"].as_str().unwrap().contains("revoked"));
    grant(&k, pack, json!(["127.0.0.2"]), json!([up.addr.port()])).await;
    assert_eq!(
        one(&k, pack, json!({"url": up.url("/echo")})).await["success"],
        true
    );

    // A modified pack: its grant is suspended (and its socket gone) ...
    write(
        home.path(),
        &format!("ecosystem/{pack}/backend/blocks/extra.py"),
        "X = 1\n",
    );
    let (_, run) = k.run(&format!("{pack}_req"), json!({"requests": []})).await;
    assert_eq!(
        step(&run, "s")["error_type"],
        "hash_verification_failed",
        "a modified pack does not run: {run}"
    );
    let (_, v) = k
        .post(
            "/api/network/check",
            json!({"pack_id": pack, "domain": "127.0.0.2", "port": up.addr.port()}),
        )
        .await;
    assert_eq!(v["data"]["allowed"], false);
    assert!(v["data"]["reason"].as_str().unwrap().contains("modified"));
    let (_, list) = k.get("/api/network/list").await;
    let entry = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["pack_id"] == pack)
        .unwrap()
        .clone();
    assert_eq!(entry["state"], "suspended", "{entry}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while socket(&k, pack).exists() {
        assert!(Instant::now() < deadline, "the socket is removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and restored by re-approval, without a new grant.
    k.approve(pack).await;
    assert_eq!(
        one(&k, pack, json!({"url": up.url("/echo")})).await["success"],
        true
    );

    // Bad grant requests change nothing.
    for (body, status) in [
        (
            json!({"pack_id": pack, "allowed_domains": "x", "allowed_ports": [1]}),
            400,
        ),
        (
            json!({"pack_id": pack, "allowed_domains": ["a b"], "allowed_ports": [1]}),
            400,
        ),
        (
            json!({"pack_id": pack, "allowed_domains": ["x.com"], "allowed_ports": [70000]}),
            400,
        ),
        (
            json!({"pack_id": "../etc", "allowed_domains": [], "allowed_ports": []}),
            400,
        ),
        (
            json!({"pack_id": "ghost", "allowed_domains": [], "allowed_ports": []}),
            404,
        ),
    ] {
        let (s, v) = k.post("/api/network/grant", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert_eq!(v["success"], false);
    }
    assert_eq!(
        one(&k, pack, json!({"url": up.url("/echo")})).await["success"],
        true
    );

    // A grant file edited while the kernel is down denies after restart.
    k.stop();
    let file = home
        .path()
        .join(format!("user_data/permissions/network/{pack}.json"));
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("\"127.0.0.2\"", "\"*\"")).unwrap();
    let k = start(home.path(), Some("127.0.0.2/32"), &[]);
    let r = one(&k, pack, json!({"url": up.url("/echo")})).await;
    assert_eq!(r["error_type"], "access_denied", "{r}");
    assert!(r["error"].as_str().unwrap().contains("signature"));
    let (_, list) = k.get("/api/network/list").await;
    assert_eq!(list["data"][0]["state"], "tampered");
    audit(&k, "security", |e| {
        e["action"] == "network_grant_tampered" && e["owner_pack"] == pack
    })
    .await;
}

#[tokio::test]
async fn without_allow_cidrs_a_local_upstream_is_blocked_and_sockets_can_move() {
    if !python_available() {
        return;
    }
    let up = Upstream::start("127.0.0.2");
    let pack = "eg_closed";
    let home = net_home(pack);
    // The socket directories moved elsewhere (`RUMI_EGRESS_SOCK_DIR`): the worker still finds its
    // socket through `RUMI_EGRESS_SOCKET`.
    let socks = tempfile::tempdir().unwrap();
    let sock_dir = socks.path().to_str().unwrap();
    // A second pack whose socket cannot be bound: a file stands where its directory would be.
    let unbound = "eg_unbound";
    add_net_pack(home.path(), unbound);
    std::fs::write(socks.path().join(unbound), "not a directory").unwrap();
    let k = start(home.path(), None, &[("RUMI_EGRESS_SOCK_DIR", sock_dir)]);
    k.approve(pack).await;
    k.approve(unbound).await;
    grant(&k, pack, json!(["*"]), json!([0])).await;
    grant(&k, unbound, json!(["*"]), json!([0])).await;
    let r = one(&k, pack, json!({"url": up.url("/echo")})).await;
    assert_blocked(&r, "127.0.0.2 without RUMI_EGRESS_ALLOW_CIDRS");
    // Hardening defect 14: the check said `allowed` for a granted name that resolves to a blocked
    // address. Its address step now resolves and classifies, names the range and the setting
    // that opens it, and the kernel log says the same; the pack's own check stays short.
    let (_, v) = k
        .post(
            "/api/network/check",
            json!({"pack_id": pack, "domain": "localhost", "port": 80}),
        )
        .await;
    let check = &v["data"];
    assert_eq!(check["allowed"], false, "{check}");
    assert_eq!(check["grant"]["allowed"], true, "{check}");
    let why = check["address"]["reason"].as_str().unwrap();
    assert!(
        why.contains("loopback") && why.contains("RUMI_EGRESS_ALLOW_CIDRS="),
        "{why}"
    );
    assert_eq!(check["reason"], why);
    let (_, run) = k
        .run(
            &format!("{pack}_chk"),
            json!({"domain": "localhost", "port": 80}),
        )
        .await;
    let r = &run["result"]["out"];
    assert_eq!(r["allowed"], false, "{run}");
    assert!(
        !r.to_string().contains("127.0.0.1"),
        "the pack is not told the address: {r}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&k.stderr_log)
        .unwrap_or_default()
        .contains("egress: localhost resolves to 127.0.0.1")
    {
        assert!(
            Instant::now() < deadline,
            "the kernel log warns about the blocked address"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A name that does not resolve is not a policy refusal: the check says so and allows.
    let (_, v) = k
        .post(
            "/api/network/check",
            json!({"pack_id": pack, "domain": "no-such-host.invalid", "port": 80}),
        )
        .await;
    assert_eq!(v["data"]["allowed"], true, "{v}");
    assert_eq!(v["data"]["address"]["resolved"], false, "{v}");
    assert!(socks.path().join(pack).join("egress.sock").exists());
    assert!(!socket(&k, pack).exists());
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The unbound pack's requests fail plainly (nothing claims access it does not have); the
    // listener stays down without bringing the kernel down, and diagnostics say so.
    let r = one(&k, unbound, json!({"url": up.url("/echo")})).await;
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["error_type"], "egress_unavailable", "{r}");
    let (_, v) = k.get("/api/diagnostics").await;
    let listeners = v["data"]["egress"].as_array().unwrap();
    let bound = |id: &str| {
        listeners
            .iter()
            .find(|l| l["pack_id"] == id)
            .map(|l| l["bound"].clone())
    };
    assert_eq!(bound(unbound), Some(json!(false)), "{listeners:?}");
    assert_eq!(bound(pack), Some(json!(true)), "{listeners:?}");
    assert!(
        !v.to_string().contains(sock_dir),
        "diagnostics name no host path"
    );
    assert_blocked(
        &one(&k, pack, json!({"url": up.url("/echo")})).await,
        "the other pack is unaffected",
    );
}

#[test]
fn bad_egress_settings_stop_start_up_naming_the_variable() {
    for (var, value) in [
        ("RUMI_EGRESS_ALLOW_CIDRS", "10.0.0.0/33"),
        ("RUMI_EGRESS_ALLOW_CIDRS", "not-a-range"),
        ("RUMI_EGRESS_SOCK_DIR", "relative/dir"),
        ("RUMI_EGRESS_CA_FILE", "/nonexistent/ca.pem"),
        ("RUMI_EGRESS_READ_TIMEOUT", "0"),
        ("RUMI_EGRESS_BUFFER_BYTES", "1048576"),
        ("RUMI_EGRESS_BUFFER_BYTES", "lots"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rumi"))
            .args(["serve", "--permissive"])
            .env("RUMI_HOME", home.path())
            .env("RUMI_API_PORT", "0")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} must stop start-up");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
    }
}
