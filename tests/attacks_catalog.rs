//! An outside attack review of modifiers (§4) and pack routes (§11), kept: each `findingN_…`
//! test proved a hole on the code it was written against and now holds its fix (finding 6 is the
//! contract's own rule and checks that it is loud); each `stopped_…` test is an attack that was
//! stopped from the start.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn pack_file(home: &std::path::Path, pack: &str, rel: &str, text: &str) {
    write(home, &format!("ecosystem/{pack}/backend/{rel}"), text);
}

async fn network_allowed(k: &Kernel, pack: &str, domain: &str) -> bool {
    let (s, v) = k
        .post(
            "/api/network/check",
            json!({"pack_id": pack, "domain": domain, "port": 443}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["data"]["allowed"] == true
}

async fn wait_steps(k: &Kernel, flow: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = k.get(&format!("/api/flows/{flow}")).await;
        let ids: Vec<String> = v["data"]["steps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["id"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if ids == want {
            return;
        }
        assert!(Instant::now() < deadline, "steps of {flow}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `flow` reports `modifier` among the modifiers that target it; returns its entry.
async fn wait_modifier(k: &Kernel, flow: &str, modifier: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = k.get(&format!("/api/flows/{flow}")).await;
        if let Some(e) = v["data"]["modifiers_applied"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["modifier_id"] == modifier))
        {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "{modifier} on {flow}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fix of finding 1: no modifier changes an official flow that holds an administrative step
/// (or a `kernel:flow.run`); it is skipped with the reason.
fn assert_refused_on_admin_flow(entry: &serde_json::Value) {
    assert_eq!(entry["status"], "skipped", "{entry}");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("administrative step"),
        "{entry}"
    );
}

// ---- finding 1: a pack modifier steers an official administrative step -----------------------

/// An operator's official flow grants network access to the pack named in its inputs. An
/// approved (hostile) pack injects a plain `set` step (no administrative handler, so the loader
/// accepts it) right before the official `network.grant` step; the step overwrites `ctx.pack_id`,
/// and the official step — whose origin is official, so `may_administer` says yes — grants the
/// network to the attacker's pack instead. The pack never named an administrative handler, yet
/// it chose the arguments of one: administrative rights gained through the context.
#[tokio::test]
async fn finding1_pack_modifier_steers_official_grant_through_ctx() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "net_pack", &[]);
    make_pack(h, "evil", &[]);
    write(
        h,
        "flows/grant_for.flow.yaml",
        "flow_id: grant_for\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: \"${ctx.pack_id}\", allowed_domains: [\"${ctx.domain}\"], allowed_ports: [443]}}, output: grant}\n",
    );
    pack_file(
        h,
        "evil",
        "flows/modifiers/hijack.modifier.yaml",
        "modifier_id: hijack\ntarget_flow_id: grant_for\nphase: m\naction: inject_before\ntarget_step_id: g\nstep: {id: hijack_pack, type: set, input: {key: pack_id, value: evil}}\n",
    );
    let k = Kernel::start(h, &[]);
    k.approve("net_pack").await;
    k.approve("evil").await;
    assert_refused_on_admin_flow(&wait_modifier(&k, "grant_for", "hijack").await);
    wait_steps(&k, "grant_for", &["g"]).await;
    // The operator grants example.com to net_pack, as the official flow is meant to be used.
    let (s, run) = k
        .run(
            "grant_for",
            json!({"pack_id": "net_pack", "domain": "example.com"}),
        )
        .await;
    assert_eq!(s, 200, "{run}");
    let evil = network_allowed(&k, "evil", "example.com").await;
    let meant = network_allowed(&k, "net_pack", "example.com").await;
    k.stop();
    assert!(
        !evil,
        "the pack's injected set step redirected the official network.grant to pack `evil`: {run}"
    );
    assert!(meant, "the operator's grant went elsewhere: {run}");
}

/// The same hole through `replace` of a guard: the official flow grants only when the operator
/// confirms (`if` step → `when`). The pack replaces the guard step with a `set` that says yes;
/// the official grant step (still official origin) runs without the confirmation.
#[tokio::test]
async fn finding1_pack_modifier_replaces_guard_of_official_grant() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "evil", &[]);
    write(
        h,
        "flows/guarded_grant.flow.yaml",
        "flow_id: guarded_grant\nphases: [m]\nsteps:\n  - {id: check, phase: m, priority: 10, type: if, input: {condition: \"${ctx.confirm} == yes\"}, output: confirmed}\n  - {id: g, phase: m, priority: 20, type: handler, when: \"${ctx.confirmed}\", input: {handler: \"kernel:network.grant\", args: {pack_id: evil, allowed_domains: [\"example.com\"], allowed_ports: [443]}}, output: grant}\n",
    );
    pack_file(
        h,
        "evil",
        "flows/modifiers/unguard.modifier.yaml",
        "modifier_id: unguard\ntarget_flow_id: guarded_grant\nphase: m\naction: replace\ntarget_step_id: check\nstep: {id: check, type: set, input: {key: confirmed, value: true}}\n",
    );
    let k = Kernel::start(h, &[]);
    k.approve("evil").await;
    assert_refused_on_admin_flow(&wait_modifier(&k, "guarded_grant", "unguard").await);
    // The operator runs it WITHOUT confirming: nothing should be granted.
    let (s, run) = k.run("guarded_grant", json!({"confirm": "no"})).await;
    assert_eq!(s, 200, "{run}");
    let evil = network_allowed(&k, "evil", "example.com").await;
    k.stop();
    assert!(
        !evil,
        "the pack replaced the official guard and the official grant ran unconfirmed: {run}"
    );
}

/// And through `remove`: the operator's official `lockdown` flow revokes the pack's network;
/// the pack's modifier removes the revoke step, the run "succeeds", the grant stays.
#[tokio::test]
async fn finding1_pack_modifier_removes_official_revoke() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "evil", &[]);
    write(
        h,
        "flows/grant_evil.flow.yaml",
        "flow_id: grant_evil\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: evil, allowed_domains: [\"example.com\"], allowed_ports: [443]}}, output: grant}\n",
    );
    write(
        h,
        "flows/lockdown.flow.yaml",
        "flow_id: lockdown\nphases: [m]\nsteps:\n  - {id: r, phase: m, type: handler, input: {handler: \"kernel:network.revoke\", args: {pack_id: evil, reason: lockdown}}, output: revoked}\n",
    );
    pack_file(
        h,
        "evil",
        "flows/modifiers/keep.modifier.yaml",
        "modifier_id: keep\ntarget_flow_id: lockdown\nphase: m\naction: remove\ntarget_step_id: r\n",
    );
    let k = Kernel::start(h, &[]);
    let (_, run) = k.run("grant_evil", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    k.approve("evil").await;
    assert_refused_on_admin_flow(&wait_modifier(&k, "lockdown", "keep").await);
    wait_steps(&k, "lockdown", &["r"]).await;
    let (s, run) = k.run("lockdown", json!({})).await;
    assert_eq!(s, 200, "{run}");
    let evil = network_allowed(&k, "evil", "example.com").await;
    k.stop();
    assert!(
        !evil,
        "the pack removed the official revoke step; its grant survived the operator's lockdown: {run}"
    );
}

// ---- finding 2: memory amplification through `*` modifiers -----------------------------------

fn vm_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A few KB of flows and ~3 MB of modifier files (shared configuration; an approved pack can
/// ship the same under its own flows/) make the kernel hold ~N×M deep copies of a ~1 MB step:
/// every modifier with `target_flow_id: "*"` clones its step into every flow it matches
/// (`apply.rs::place`, `m.step.clone()`), bounded only by MAX_APPLICATIONS = 200 000 pairs —
/// 200 000 × ~1 MB. Here 300 flows × 3 modifiers: the kernel's peak RSS goes past a gigabyte.
/// (Scaled down so the proof does not take the test machine down; 2 000 flows and 10 such
/// modifiers — 12 MB on disk — ask for ~20 GB.)
#[tokio::test]
async fn finding2_star_modifiers_amplify_memory() {
    let home = fresh_home();
    let h = home.path();
    let flows = 300;
    for i in 0..flows {
        write(
            h,
            &format!("user_data/shared/flows/bulk/f{i}.flow.yaml"),
            &format!("flow_id: bulk.f{i}\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: set, input: {{key: x, value: 1}}}}\n"),
        );
    }
    let big = "A".repeat(1_000_000);
    for j in 0..3 {
        write(
            h,
            &format!("user_data/shared/flows/modifiers/big{j}.modifier.yaml"),
            &format!("modifier_id: big{j}\ntarget_flow_id: \"*\"\nphase: m\naction: append\nstep: {{id: big{j}, type: set, input: {{key: blob{j}, value: \"{big}\"}}}}\n"),
        );
    }
    // And ten `*` modifiers whose steps are just under the per-step limit: 3 000 copies of ~60 KB
    // would be ~180 MB; the catalog's byte budget skips the placements beyond 64 MiB.
    let wide = "W".repeat(60_000);
    for j in 0..10 {
        write(
            h,
            &format!("user_data/shared/flows/modifiers/wide{j}.modifier.yaml"),
            &format!("modifier_id: wide{j}\ntarget_flow_id: \"*\"\nphase: m\naction: append\nstep: {{id: wide{j}, type: set, input: {{key: w{j}, value: \"{wide}\"}}}}\n"),
        );
    }
    let k = Kernel::start(h, &[]);
    let pid = k.child.id();
    // The first load is published once the modifiers report on the last flow.
    let deadline = Instant::now() + Duration::from_secs(120);
    let detail = loop {
        let (s, v) = k.get(&format!("/api/flows/bulk.f{}", flows - 1)).await;
        if s == 200 && v["data"]["modifiers_applied"].as_array().map(Vec::len) == Some(10) {
            break v;
        }
        assert!(Instant::now() < deadline, "not loaded: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The 1 MB steps were refused; some wide placements were skipped for the budget.
    let (_, d) = k.get("/api/diagnostics").await;
    let text = d.to_string();
    assert!(text.contains("may hold at most 65536"), "{text:.2000}");
    assert!(
        detail.to_string().contains("bytes already") || text.contains("bytes already"),
        "{detail:.2000}"
    );
    let hwm_mib = vm_kib(pid, "VmHWM:") / 1024;
    k.stop();
    assert!(
        hwm_mib < 256,
        "~3 MB of modifier files made the kernel peak at {hwm_mib} MiB of RSS"
    );
}

// ---- finding 3: ctx._http status 204/304 with a body desynchronises keep-alive --------------

/// Sends `requests` (raw HTTP/1.1) on one connection and reads until it closes.
fn raw_exchange(port: u16, requests: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(requests.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn route_pack_with_status(h: &std::path::Path, status: u16) {
    make_pack(h, "rt", &[]);
    pack_file(
        h,
        "rt",
        "flows/st.flow.yaml",
        &format!("flow_id: rt.st\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: set, input: {{key: _http, value: {{status: {status}}}}}}}\n  - {{id: v, phase: m, type: set, input: {{key: payload, value: \"HTTP/1.1 200 OK\"}}}}\n"),
    );
    pack_file(
        h,
        "rt",
        "routes.json",
        &json!({"routes": [{"method": "GET", "path": "/api/rt/st", "flow_id": "rt.st"}]})
            .to_string(),
    );
}

async fn wait_route(k: &Kernel, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = k.get("/api/routes").await;
        if v["data"]["routes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["path"] == path))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A route's flow chooses `ctx._http.status = 204` (in 200–599, so accepted). actix-http writes a
/// 204 head without a Content-Length but still writes the envelope after it, so on a keep-alive
/// connection the next response a client (or a reverse proxy pooling connections) reads begins
/// with the flow's JSON: the flow controls bytes that are read as the start of another response.
#[tokio::test]
async fn finding3_route_status_204_desyncs_keep_alive() {
    let home = fresh_home();
    let h = home.path();
    route_pack_with_status(h, 204);
    let k = Kernel::start(h, &[]);
    k.approve("rt").await;
    wait_route(&k, "/api/rt/st").await;
    let port = port_of(&k);
    let reqs = format!(
        "GET /api/rt/st HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\nGET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let out = String::from_utf8_lossy(&raw_exchange(port, &reqs)).into_owned();
    k.stop();
    assert_refused_bodiless_status(&out);
}

/// The fix of finding 3: a status that carries no body is refused (200 is sent, with its
/// Content-Length), and the connection's next response starts right after that body.
fn assert_refused_bodiless_status(out: &str) {
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "the route answered: {out:?}"
    );
    let head_end = out.find("\r\n\r\n").expect("a head") + 4;
    let length: usize = out[..head_end]
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    assert!(
        out[head_end + length..].starts_with("HTTP/1.1 200"),
        "the next response does not follow the first one's body: {out:?}"
    );
}

/// The same with 304 (actix keeps a Content-Length there but still sends the body).
#[tokio::test]
async fn finding3_route_status_304_desyncs_keep_alive() {
    let home = fresh_home();
    let h = home.path();
    route_pack_with_status(h, 304);
    let k = Kernel::start(h, &[]);
    k.approve("rt").await;
    wait_route(&k, "/api/rt/st").await;
    let port = port_of(&k);
    let reqs = format!(
        "GET /api/rt/st HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\nGET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let out = String::from_utf8_lossy(&raw_exchange(port, &reqs)).into_owned();
    k.stop();
    assert_refused_bodiless_status(&out);
}

// ---- finding 4: the caller, not the flow, chooses the reply through a `_http` input ----------

/// The inputs of a route run take every JSON body key, `_http` included (only the kernel's four
/// `_raw_body/_headers/_method/_path` are overwritten). The context starts as the inputs, and the
/// edge reads `ctx._http` at the end: a caller picks the status and headers (here a 302 with a
/// Location of their choosing) of a route whose flow never set `_http`.
#[tokio::test]
async fn finding4_caller_forges_ctx_http_through_inputs() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "plain", &[]);
    pack_file(
        h,
        "plain",
        "flows/ok.flow.yaml",
        "flow_id: plain.ok\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: ok, value: true}}\n",
    );
    pack_file(
        h,
        "plain",
        "routes.json",
        &json!({"routes": [{"method": "POST", "path": "/api/plain/ok", "flow_id": "plain.ok"}]})
            .to_string(),
    );
    let k = Kernel::start(h, &[]);
    k.approve("plain").await;
    wait_route(&k, "/api/plain/ok").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(k.url("/api/plain/ok"))
        .bearer_auth(TOKEN)
        .json(&json!({"_http": {"status": 302, "headers": {"location": "https://evil.example/"}}}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    k.stop();
    assert_eq!(
        (status, location.as_deref()),
        (200, None),
        "the caller's `_http` input chose the route's reply"
    );
}

// ---- finding 5: a pack route runs an official flow with administrative rights -------------

/// `kernel:flow.run` from a pack flow into an official flow loses administrative rights
/// (`official_chain` false) — but a pack's `routes.json` may name ANY flow id, official ones
/// included, and a route run starts with `official_chain: true` (`Kernel::run_loaded_flow`).
/// So a pack publishes an innocuous-looking `GET /api/evil/ping` that runs the operator's
/// official `grant_evil` flow: whoever calls the pack's endpoint (its UI, with the token)
/// administers on the pack's behalf without knowing it.
#[tokio::test]
async fn finding5_pack_route_runs_official_admin_flow() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "evil", &[]);
    write(
        h,
        "flows/grant_evil.flow.yaml",
        "flow_id: grant_evil\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: evil, allowed_domains: [\"example.com\"], allowed_ports: [443]}}, output: grant}\n",
    );
    pack_file(
        h,
        "evil",
        "routes.json",
        &json!({"routes": [{"method": "GET", "path": "/api/evil/ping", "flow_id": "grant_evil", "description": "health ping"}]})
            .to_string(),
    );
    let k = Kernel::start(h, &[]);
    k.approve("evil").await;
    wait_route(&k, "/api/evil/ping").await;
    let (s, v) = k.get("/api/evil/ping").await;
    // The run happened, and its administrative step was denied.
    assert_eq!(s, 200, "{v}");
    assert!(v.to_string().contains("administrative"), "{v}");
    let evil = network_allowed(&k, "evil", "example.com").await;
    k.stop();
    assert!(
        !evil,
        "the pack's route ran the official flow with administrative rights ({s}): {v}"
    );
}

// ---- finding 6: a pack knocks out a shared modifier by reusing its id ------------------------

/// §4: "a clash refuses both files". The operator's shared modifier (say, one that adds a guard
/// step) is disabled by any approved pack that ships a modifier with the same `modifier_id`. The
/// contract says so in as many words, so the kernel keeps it (black-box tests rely on the exact
/// rule); what it guarantees is that the operator sees it at once: the refusal names both files in
/// diagnostics and in the `modifier_application` audit. (Kept as a known limit in the notes.)
#[tokio::test]
async fn finding6_a_pack_clashing_with_a_shared_modifier_id_is_loud() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "evil", &[]);
    write(
        h,
        "flows/official.flow.yaml",
        "flow_id: official\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: a, value: 1}}\n",
    );
    write(
        h,
        "user_data/shared/flows/modifiers/guard.modifier.yaml",
        "modifier_id: guard\ntarget_flow_id: official\nphase: m\naction: inject_before\ntarget_step_id: a\nstep: {id: guard_step, type: set, input: {key: guarded, value: true}}\n",
    );
    pack_file(
        h,
        "evil",
        "flows/modifiers/x.modifier.yaml",
        "modifier_id: guard\ntarget_flow_id: nothing_at_all\nphase: m\naction: append\nstep: {id: z, type: set, input: {key: z, value: 1}}\n",
    );
    let k = Kernel::start(h, &[]);
    wait_steps(&k, "official", &["guard_step", "a"]).await;
    k.approve("evil").await;
    wait_steps(&k, "official", &["a"]).await;
    let (_, d) = k.get("/api/diagnostics").await;
    let refusals: Vec<&serde_json::Value> = d["data"]["modifiers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "modifier_refused" && e["modifier_id"] == "guard")
        .collect();
    assert_eq!(refusals.len(), 2, "{d}");
    for r in &refusals {
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("also declared by"), "{reason}");
    }
    let (_, audit) = k
        .get("/api/audit?category=modifier_application&limit=100")
        .await;
    k.stop();
    let text = audit.to_string();
    assert!(
        text.contains("modifier_refused") && text.contains("ecosystem/evil/"),
        "{text}"
    );
}

// ---- finding 7: other credentials of the caller reach the pack's flow ------------------------

/// Only `authorization` is removed from `_headers`. `proxy-authorization` (a credential meant for
/// a proxy in front of the kernel) and `cookie` (whatever the browser holds for 127.0.0.1 /
/// localhost — other local apps' sessions, since cookies ignore ports) are handed to untrusted
/// pack code as they are.
#[tokio::test]
async fn finding7_other_credentials_reach_route_flow() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "rt", &[]);
    pack_file(
        h,
        "rt",
        "flows/h.flow.yaml",
        "flow_id: rt.h\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: seen, value: \"${ctx._headers}\"}}\n",
    );
    pack_file(
        h,
        "rt",
        "routes.json",
        &json!({"routes": [{"method": "GET", "path": "/api/rt/h", "flow_id": "rt.h"}]}).to_string(),
    );
    let k = Kernel::start(h, &[]);
    k.approve("rt").await;
    wait_route(&k, "/api/rt/h").await;
    let v: Value = k
        .http
        .get(k.url("/api/rt/h"))
        .bearer_auth(TOKEN)
        .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
        .header("cookie", "session=other-local-app-session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    k.stop();
    let seen = &v["data"]["seen"];
    assert!(seen.is_object(), "{v}");
    assert!(
        seen.get("proxy-authorization").is_none() && seen.get("cookie").is_none(),
        "credentials handed to the pack: {seen}"
    );
}

// ---- stopped attacks (regression tests) --------------------------------------------------------

/// Path tricks never pass the token gate, and a pack route at a kernel path is refused.
#[tokio::test]
async fn stopped_token_gate_path_tricks_and_shadowing() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "rt", &[]);
    pack_file(
        h,
        "rt",
        "flows/ok.flow.yaml",
        "flow_id: rt.ok\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: ok, value: true}}\n",
    );
    pack_file(
        h,
        "rt",
        "routes.json",
        &json!({"routes": [
            {"method": "GET", "path": "/api/rt/ok", "flow_id": "rt.ok"},
            {"method": "POST", "path": "/api/health", "flow_id": "rt.ok"},
            {"method": "GET", "path": "/api/packs/{id}", "flow_id": "rt.ok"},
            {"method": "GET", "path": "/api/{a}", "flow_id": "rt.ok"},
        ]})
        .to_string(),
    );
    let k = Kernel::start(h, &[]);
    k.approve("rt").await;
    wait_route(&k, "/api/rt/ok").await;
    let (_, v) = k.get("/api/routes").await;
    assert_eq!(v["data"]["routes"].as_array().unwrap().len(), 1, "{v}");
    let port = port_of(&k);
    for path in [
        "/api/rt/ok",
        "//api/rt/ok",
        "/api/rt/ok/",
        "/api/rt/%6fk",
        "/API/rt/ok",
        "/api/./rt/ok",
        "/api/x/../rt/ok",
        "/api/%2e%2e/api/rt/ok",
        "/api/rt%2fok",
        "/api/health/../rt/ok",
        "/api/rt/ok?x=/api/health",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let out = String::from_utf8_lossy(&raw_exchange(port, &req)).into_owned();
        assert!(
            out.starts_with("HTTP/1.1 401") || out.starts_with("HTTP/1.1 400"),
            "{path}: {out}"
        );
    }
    let long = format!("/api/rt/{}", "a".repeat(60_000));
    let req = format!("GET {long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let out = String::from_utf8_lossy(&raw_exchange(port, &req)).into_owned();
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
    // Lower-case scheme, duplicate Authorization: never let a wrong token in.
    let req = format!(
        "GET /api/rt/ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let out = String::from_utf8_lossy(&raw_exchange(port, &req)).into_owned();
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
    let (s, v) = k.get("/api/rt/ok").await;
    assert_eq!((s, &v["data"]["ok"]), (200, &json!(true)), "{v}");
    k.stop();
}

/// Credentials never reach the flow (odd casing, duplicates), the kernel's `_` inputs cannot be
/// forged by query or body, CRLF / framing headers from `ctx._http` are dropped, and a body over
/// the limit is 413 for any content type.
#[tokio::test]
async fn stopped_route_inputs_and_reply_headers() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    make_pack(
        h,
        "rt",
        &[(
            "echo.py",
            "def run(input_data, context):\n    return {'inputs': context['inputs']}\n",
        )],
    );
    pack_file(
        h,
        "rt",
        "flows/echo.flow.yaml",
        "flow_id: rt.echo\nphases: [m]\nsteps:\n  - {id: e, phase: m, type: python_file_call, file: blocks/echo.py, input: {}, output: got}\n  - {id: h, phase: m, type: set, input: {key: _http, value: {status: 200, headers: {X-A: \"a\\r\\nSet-Cookie: x=1\", Content-Length: '0', Transfer-Encoding: chunked, Set-Cookie: 'a=b', X-Ok: fine}}}}\n",
    );
    pack_file(
        h,
        "rt",
        "routes.json",
        &json!({"routes": [{"method": "POST", "path": "/api/rt/echo", "flow_id": "rt.echo"}]})
            .to_string(),
    );
    let k = Kernel::start(h, &[]);
    k.approve("rt").await;
    wait_route(&k, "/api/rt/echo").await;
    let resp = k
        .http
        .post(k.url("/api/rt/echo?_path=forged&_headers=x&_method=PUT"))
        .header("AuThOrIzAtIoN", format!("Bearer {TOKEN}"))
        .json(&json!({"_raw_body": "forged", "_headers": {"authorization": "x"}, "_method": "X"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    {
        let got = &v["data"]["got"]["inputs"];
        assert_eq!(got["_path"], "/api/rt/echo", "{v}");
        assert_eq!(got["_method"], "POST");
        assert!(got["_headers"].get("authorization").is_none(), "{v}");
        assert!(!v.to_string().contains(TOKEN), "{v}");
        assert_ne!(got["_raw_body"], "forged");
        assert_eq!(headers.get("x-ok").unwrap(), "fine");
        assert!(headers.get("x-a").is_none());
        assert!(headers.get("set-cookie").is_none());
        assert!(headers.get("transfer-encoding").is_none());
    }
    // Over the limit, not JSON: 413.
    let resp = k
        .http
        .post(k.url("/api/rt/echo"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    k.stop();
}

/// Modifier files that try to exhaust the loader: deep YAML, an alias bomb, a pathological
/// pattern, a step of another phase, a `remove` with a step, more than 1000 steps via `*`;
/// the kernel stays up, refuses each with a reason, and leaks no host path.
#[tokio::test]
async fn stopped_hostile_modifier_files() {
    let home = fresh_home();
    let h = home.path();
    let m = |name: &str, text: &str| {
        write(
            h,
            &format!("user_data/shared/flows/modifiers/{name}.modifier.yaml"),
            text,
        )
    };
    let mut steps = String::from("flow_id: full\nphases: [m]\nsteps:\n");
    for i in 0..1000 {
        steps.push_str(&format!(
            "  - {{id: s{i}, phase: m, type: set, input: {{key: k, value: {i}}}}}\n"
        ));
    }
    write(h, "user_data/shared/flows/full.flow.yaml", &steps);
    m(
        "deep",
        &format!(
            "modifier_id: deep\nx: {}{}\n",
            "[".repeat(5000),
            "]".repeat(5000)
        ),
    );
    m(
        "bomb",
        "modifier_id: bomb\na: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
    );
    m(
        "patho",
        &format!(
            "modifier_id: patho\ntarget_flow_id: \"{}b\"\nphase: m\naction: append\nstep: {{id: p, type: set, input: {{key: p, value: 1}}}}\n",
            "*a".repeat(120)
        ),
    );
    m("over", "modifier_id: over\ntarget_flow_id: \"*\"\nphase: m\naction: append\nstep: {id: one_more, type: set, input: {key: o, value: 1}}\n");
    m("phase", "modifier_id: phasex\ntarget_flow_id: full\nphase: m\naction: append\nstep: {id: q, phase: other, type: set, input: {key: o, value: 1}}\n");
    m("admin", "modifier_id: admin\ntarget_flow_id: \"*\"\nphase: m\naction: append\nstep: {id: adm, type: handler, input: {handler: \"kernel:capability.grant\", args: {}}}\n");
    let mut k = Kernel::start(h, &[]);
    let (s, v) = k.get("/api/flows/full").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["steps"].as_array().unwrap().len(), 1000, "{v}");
    let (_, d) = k.get("/api/diagnostics").await;
    let text = d.to_string();
    for id in ["deep", "bomb", "phasex", "admin"] {
        assert!(text.contains(id), "{id} not reported: {d}");
    }
    assert!(
        !text.contains(h.to_str().unwrap()),
        "a host path in diagnostics: {d}"
    );
    assert!(k.alive());
    k.stop();
}

/// A burst of concurrent reloads while a pack's files change: the kernel stays up and answers,
/// and the modified pack's route and modifier leave (403 / gone) — no stale catalog keeps them.
#[tokio::test]
async fn stopped_reload_burst_and_modified_pack_leaves() {
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "rt", &[]);
    write(
        h,
        "flows/official.flow.yaml",
        "flow_id: official\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: a, value: 1}}\n",
    );
    pack_file(
        h,
        "rt",
        "flows/ok.flow.yaml",
        "flow_id: rt.ok\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: ok, value: true}}\n",
    );
    pack_file(
        h,
        "rt",
        "flows/modifiers/m.modifier.yaml",
        "modifier_id: m\ntarget_flow_id: official\nphase: m\naction: append\nstep: {id: added, type: set, input: {key: b, value: 1}}\n",
    );
    pack_file(
        h,
        "rt",
        "routes.json",
        &json!({"routes": [{"method": "GET", "path": "/api/rt/ok", "flow_id": "rt.ok"}]})
            .to_string(),
    );
    let mut k = Kernel::start(h, &[]);
    k.approve("rt").await;
    wait_route(&k, "/api/rt/ok").await;
    wait_steps(&k, "official", &["a", "added"]).await;
    let mut burst = Vec::new();
    for i in 0..40 {
        let http = k.http.clone();
        let url = if i % 2 == 0 {
            k.url("/api/flows/reload")
        } else {
            k.url("/api/routes/reload")
        };
        burst.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(TOKEN)
                .json(&json!({}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    pack_file(h, "rt", "blocks/new.py", "x = 1\n");
    for b in burst {
        let s = b.await.unwrap().unwrap();
        assert!(s == 200 || s == 429 || s == 503, "{s}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _) = k.get("/api/rt/ok").await;
        let (_, v) = k.get("/api/flows/official").await;
        if s == 403 && v["data"]["steps"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "still served ({s}): {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(k.alive());
    k.stop();
}
