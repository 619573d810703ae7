//! Pack routes end to end (contract §11, §16 "Routes"): the real binary, real HTTP, real Python
//! blocks where a route must prove what arrives. Every wait has a deadline.

mod common;

use base64::Engine;
use common::{make_pack, python_available, write, Kernel, TOKEN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Writes a pack's `routes.json`.
fn routes(home: &std::path::Path, pack: &str, routes: Value) {
    write(
        home,
        &format!("ecosystem/{pack}/backend/routes.json"),
        &json!({ "routes": routes }).to_string(),
    );
}

fn flow(home: &std::path::Path, pack: &str, name: &str, yaml: &str) {
    write(
        home,
        &format!("ecosystem/{pack}/backend/flows/{name}.flow.yaml"),
        yaml,
    );
}

/// A raw request: (status, headers, body as JSON).
async fn call(
    k: &Kernel,
    method: &str,
    path: &str,
    token: bool,
    build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = k.http.request(m, k.url(path));
    if token {
        r = r.bearer_auth(TOKEN);
    }
    let resp = build(r).send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, headers, v)
}

/// Polls `GET /api/routes` until `cond` holds, within `secs`.
async fn wait_routes(k: &Kernel, secs: u64, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, v) = k.get("/api/routes").await;
        assert_eq!(s, 200, "{v}");
        if cond(&v["data"]) {
            return v["data"].clone();
        }
        assert!(Instant::now() < deadline, "{what}: still {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has_route(table: &Value, method: &str, path: &str) -> bool {
    table["routes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["method"] == method && r["path"] == path)
}

const ECHO: &str = "def run(input_data, context):\n    return {'inputs': context['inputs']}\n";

/// Path parameters, query (single and repeated, URL-decoded), JSON, text and binary bodies,
/// `_headers`, `_method`, `_path`, a status and headers from `ctx._http` (a refused one dropped),
/// 401, 405, 404 and a route `timeout` → 408.
#[tokio::test]
async fn a_route_gets_its_inputs_and_chooses_its_status() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    make_pack(
        home,
        "alpha",
        &[
            ("echo.py", ECHO),
            (
                "slow.py",
                "import time\n\ndef run(input_data):\n    time.sleep(30)\n    return {}\n",
            ),
        ],
    );
    flow(home, "alpha", "echo", "flow_id: alpha.echo\nphases: [m]\nsteps:\n  - {id: e, phase: m, type: python_file_call, file: blocks/echo.py, input: {}, output: got}\n");
    flow(home, "alpha", "status", "flow_id: alpha.status\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: _http, value: {status: 201, headers: {X-Alpha: made, Keep-Alive: 'timeout=1', Upgrade: evil, X-Num: 3}}}}\n  - {id: v, phase: m, type: set, input: {key: created, value: true}}\n");
    flow(home, "alpha", "slow", "flow_id: alpha.slow\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: python_file_call, file: blocks/slow.py, input: {}, output: x}\n");
    routes(
        home,
        "alpha",
        json!([
            {"method": "GET", "path": "/api/alpha/items/{id}", "flow_id": "alpha.echo", "description": "echo"},
            {"method": "POST", "path": "/api/alpha/items/{id}", "flow_id": "alpha.echo"},
            {"method": "GET", "path": "/api/alpha/items/special", "flow_id": "alpha.status"},
            {"method": "GET", "path": "/api/alpha/slow", "flow_id": "alpha.slow", "timeout": 1},
        ]),
    );
    let k = Kernel::start(home, &[]);
    k.approve("alpha").await;
    let table = wait_routes(&k, 10, "alpha's routes", |t| {
        has_route(t, "GET", "/api/alpha/slow")
    })
    .await;
    assert_eq!(table["routes"][0]["pack_id"], "alpha");
    assert_eq!(table["routes"][0]["flow_id"], "alpha.echo");
    assert_eq!(table["routes"][0]["description"], "echo");

    // Path parameter (decoded), repeated and single query keys (decoded), headers, method, path.
    let (s, _, v) = call(
        &k,
        "GET",
        "/api/alpha/items/caf%C3%A9?tag=a&tag=b%20c&q=x+y",
        true,
        |r| r.header("X-Custom-Thing", "Yes"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true);
    assert!(
        v["data"].get("run_id").is_none(),
        "data is the flow's result: {v}"
    );
    let got = &v["data"]["got"]["inputs"];
    assert_eq!(got["id"], "café");
    assert_eq!(got["tag"], json!(["a", "b c"]));
    assert_eq!(got["q"], "x y");
    assert_eq!(got["_method"], "GET");
    assert_eq!(got["_path"], "/api/alpha/items/caf%C3%A9");
    assert_eq!(got["_headers"]["x-custom-thing"], "Yes");
    assert!(got["_headers"].get("authorization").is_none(), "{got}");
    assert_eq!(got["_raw_body"], "");

    // A JSON body: its keys are inputs; the path parameter wins over a body key.
    let (s, _, v) = call(&k, "POST", "/api/alpha/items/7?n=q", true, |r| {
        r.json(&json!({"n": 3, "id": "body", "nested": {"a": 1}}))
    })
    .await;
    assert_eq!(s, 200, "{v}");
    let got = &v["data"]["got"]["inputs"];
    assert_eq!(
        (got["n"].clone(), got["id"].clone()),
        (json!(3), json!("7"))
    );
    assert_eq!(got["nested"], json!({"a": 1}));
    assert_eq!(got["_method"], "POST");

    // A text body and a binary body: `_raw_body` round-trips.
    let b64 = base64::engine::general_purpose::STANDARD;
    let (s, _, v) = call(&k, "POST", "/api/alpha/items/t", true, |r| {
        r.header("Content-Type", "text/plain")
            .body("{not json, just text")
    })
    .await;
    assert_eq!(s, 200, "{v}");
    let raw = v["data"]["got"]["inputs"]["_raw_body"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(b64.decode(raw).unwrap(), b"{not json, just text");
    let binary: Vec<u8> = (0..=255u8).collect();
    let (s, _, v) = call(&k, "POST", "/api/alpha/items/b", true, |r| {
        r.header("Content-Type", "application/octet-stream")
            .body(binary.clone())
    })
    .await;
    assert_eq!(s, 200, "{v}");
    let raw = v["data"]["got"]["inputs"]["_raw_body"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(b64.decode(raw).unwrap(), binary);
    // Malformed JSON sent as JSON: 400 in the envelope.
    let (s, _, v) = call(&k, "POST", "/api/alpha/items/b", true, |r| {
        r.header("Content-Type", "application/json")
            .body("{not json")
    })
    .await;
    assert_eq!((s, v["success"].clone()), (400, json!(false)), "{v}");

    // A literal beats a parameter; ctx._http chooses the status and adds a header; the
    // hop-by-hop ones and a non-string value are dropped.
    let (s, h, v) = call(&k, "GET", "/api/alpha/items/special", true, |r| r).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["data"], json!({"created": true}));
    assert_eq!(h.get("x-alpha").unwrap(), "made");
    assert!(
        h.get("upgrade").is_none() && h.get("keep-alive").is_none() && h.get("x-num").is_none(),
        "{h:?}"
    );
    assert_eq!(h.get("content-type").unwrap(), "application/json");

    // No token: 401 before anything; another method: 405; an unknown path: 404.
    let (s, _, v) = call(&k, "GET", "/api/alpha/items/1", false, |r| r).await;
    assert_eq!((s, v["success"].clone()), (401, json!(false)));
    let (s, h, v) = call(&k, "DELETE", "/api/alpha/items/1", true, |r| r).await;
    assert_eq!(s, 405, "{v}");
    assert_eq!(h.get("allow").unwrap(), "GET, POST");
    let (s, _, v) = call(&k, "GET", "/api/alpha/nothing", true, |r| r).await;
    assert_eq!((s, v["success"].clone()), (404, json!(false)));

    // The route's timeout is the run's deadline.
    let started = Instant::now();
    let (s, _, v) = call(&k, "GET", "/api/alpha/slow", true, |r| r).await;
    assert_eq!(s, 408, "{v}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The run record says it came from a route.
    let (_, runs) = k.get("/api/runs?flow_id=alpha.status").await;
    let run_id = runs["data"][0]["run_id"].as_str().unwrap().to_string();
    let (_, run) = k.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["data"]["trigger"], "route", "{run}");
    k.stop();
}

fn who(home: &std::path::Path, pack: &str) {
    flow(
        home,
        pack,
        "who",
        &format!("flow_id: {pack}.who\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: set, input: {{key: who, value: {pack}}}}}\n"),
    );
}

/// Clashes (load order decides, reported), shadowing refused, 403 for a pack that is not
/// approved, routes appearing on approval and leaving when the pack is modified, the reload.
#[tokio::test]
async fn clashes_shadowing_approval_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    for p in ["aa", "bb", "cc"] {
        make_pack(home, p, &[]);
        who(home, p);
    }
    routes(
        home,
        "aa",
        json!([
            {"method": "GET", "path": "/api/shared/{x}", "flow_id": "aa.who"},
            {"method": "GET", "path": "/api/health", "flow_id": "aa.who"},
            {"method": "POST", "path": "/api/{anything}", "flow_id": "aa.who"},
            {"method": "GET", "path": "/api/aa/ghost", "flow_id": "aa.none"},
        ]),
    );
    routes(
        home,
        "bb",
        json!([
            {"method": "GET", "path": "/api/shared/{key}", "flow_id": "bb.who"},
            {"method": "GET", "path": "/api/bb/me", "flow_id": "bb.who"},
        ]),
    );
    routes(
        home,
        "cc",
        json!([{"method": "GET", "path": "/api/cc/hello", "flow_id": "cc.who"}]),
    );
    let k = Kernel::start(home, &[]);

    // Not approved: 403 naming the pack.
    let (s, _, v) = call(&k, "GET", "/api/cc/hello", true, |r| r).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"cc\""), "{v}");

    // Approval alone loads the routes (no reload call).
    k.approve("bb").await;
    k.approve("aa").await;
    let t = wait_routes(&k, 10, "aa and bb routes", |t| {
        has_route(t, "GET", "/api/bb/me") && has_route(t, "GET", "/api/shared/{x}")
    })
    .await;
    // Load order (id order here): aa keeps the shared route, the clash is reported.
    assert_eq!(
        t["clashes"],
        json!([{"method": "GET", "path": "/api/shared/{x}", "kept_by": "aa", "refused_for": "bb"}])
    );
    let (s, _, v) = call(&k, "GET", "/api/shared/1", true, |r| r).await;
    assert_eq!((s, v["data"]["who"].clone()), (200, json!("aa")), "{v}");
    // Shadowing a kernel endpoint is refused, with the reason; the kernel answers its path.
    let refused = t["refused"].as_array().unwrap();
    for path in ["/api/health", "/api/{anything}"] {
        let r = refused
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path} not refused: {t}"));
        assert_eq!(r["pack_id"], "aa");
        assert!(
            r["reason"].as_str().unwrap().contains("kernel endpoint"),
            "{r}"
        );
    }
    let (s, _, v) = call(&k, "POST", "/api/anything", true, |r| r).await;
    assert_eq!(s, 404, "{v}");
    // A route whose flow is not loaded: 404 naming the flow and diagnostics.
    let (s, _, v) = call(&k, "GET", "/api/aa/ghost", true, |r| r).await;
    assert_eq!(s, 404);
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("aa.none") && e.contains("rumi diagnostics"),
        "{e}"
    );
    // Diagnostics list the clash too.
    let (_, d) = k.get("/api/diagnostics").await;
    assert_eq!(d["data"]["routes"]["clashes"][0]["kept_by"], "aa");

    // The reload answers the table.
    let (s, r) = k.post("/api/routes/reload", json!({})).await;
    assert_eq!(s, 200);
    assert!(has_route(&r["data"], "GET", "/api/bb/me"), "{r}");

    // aa is modified: its routes leave at once, bb takes the shared route, aa's answer 403.
    write(home, "ecosystem/aa/backend/extra.txt", "changed");
    wait_routes(&k, 15, "aa's routes to leave", |t| {
        !t["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["pack_id"] == "aa")
    })
    .await;
    let t = wait_routes(&k, 10, "bb to take the shared route", |t| {
        has_route(t, "GET", "/api/shared/{key}")
    })
    .await;
    assert_eq!(t["clashes"], json!([]));
    let (s, _, v) = call(&k, "GET", "/api/shared/1", true, |r| r).await;
    assert_eq!(
        (s, v["data"].clone()),
        (200, json!({"who": "bb", "key": "1"})),
        "{v}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, v) = call(&k, "GET", "/api/aa/ghost", true, |r| r).await;
        if s == 403 {
            assert!(v["error"].as_str().unwrap().contains("\"aa\""), "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "aa's route should answer 403: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    k.stop();
}

/// A route → a flow that runs another flow (`kernel:flow.run`) with one slot: the nested run
/// uses its parent's slot, so nothing waits for itself.
#[tokio::test]
async fn a_route_running_nested_flows_with_one_slot_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    make_pack(home, "nest", &[]);
    flow(home, "nest", "inner", "flow_id: nest.inner\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: inner, value: done}}\n");
    flow(home, "nest", "outer", "flow_id: nest.outer\nphases: [m]\nsteps:\n  - {id: c, phase: m, type: handler, input: {handler: \"kernel:flow.run\", args: {flow_id: nest.inner, inputs: {}}}, output: child}\n");
    routes(
        home,
        "nest",
        json!([{"method": "GET", "path": "/api/nest/outer", "flow_id": "nest.outer", "timeout": 20}]),
    );
    let k = Kernel::start(home, &[("RUMI_MAX_CONCURRENT_FLOWS", "1")]);
    k.approve("nest").await;
    wait_routes(&k, 10, "nest's route", |t| {
        has_route(t, "GET", "/api/nest/outer")
    })
    .await;
    for _ in 0..3 {
        let (s, _, v) = call(&k, "GET", "/api/nest/outer", true, |r| {
            r.timeout(Duration::from_secs(25))
        })
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["success"], true, "{v}");
        assert!(v["data"]["child"].to_string().contains("done"), "{v}");
    }
    k.stop();
}
