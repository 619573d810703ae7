//! The HTTP API and CLI end to end (contract §12–14; invariant 8): authentication, the envelope,
//! bad requests (the kernel keeps serving and nothing changes), the concurrency limiter, runs,
//! audit and diagnostics, the CLI client, and configuration errors.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;

#[tokio::test]
async fn every_bad_token_form_is_401_before_routing() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    let c = reqwest::Client::new();
    let (s, v) = {
        let r = c.get(k.url("/api/health")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, 200, "health needs no token");
    assert_eq!(v["data"]["status"], "ok");
    let forms: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("bearer {TOKEN}")),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer  {TOKEN}")),
        Some(TOKEN.to_string()),
        Some("Bearer wrong".into()),
    ];
    for path in [
        "/api/packs",
        "/api/flows/hello/run",
        "/api/does-not-exist",
        "/api/audit",
    ] {
        for form in &forms {
            let mut r = c.post(k.url(path));
            if path != "/api/flows/hello/run" {
                r = c.get(k.url(path));
            }
            if let Some(h) = form {
                r = r.header("Authorization", h);
            }
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{path} with {form:?}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(
                v,
                json!({"success": false, "data": null, "error": "missing or invalid bearer token"})
            );
        }
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    let c = reqwest::Client::new();
    let send = |method: &str, path: &str, body: Option<Vec<u8>>| {
        let mut r = c
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                k.url(path),
            )
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        async move {
            let resp = r.send().await.unwrap();
            let s = resp.status().as_u16();
            let retry = resp.headers().get("retry-after").is_some();
            (s, resp.json::<Value>().await.unwrap(), retry)
        }
    };
    /// (method, path, body, expected status, text the error must contain)
    type Case = (
        &'static str,
        &'static str,
        Option<Vec<u8>>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/flows/hello/run",
            Some(b"{not json".to_vec()),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/flows/hello/run",
            Some(b"[1,2]".to_vec()),
            400,
            "JSON object",
        ),
        (
            "POST",
            "/api/flows/hello/run",
            Some(br#"{"inputs": [1]}"#.to_vec()),
            400,
            "inputs must be a JSON object",
        ),
        (
            "POST",
            "/api/flows/hello/run",
            Some(br#"{"inputs": {}, "timeout": "soon"}"#.to_vec()),
            400,
            "timeout",
        ),
        (
            "POST",
            "/api/flows/hello/run",
            Some(vec![b' '; 2 * 1024 * 1024]),
            413,
            "larger than",
        ),
        (
            "POST",
            "/api/flows/nope/run",
            Some(b"{}".to_vec()),
            404,
            "no flow",
        ),
        ("GET", "/api/flows/nope", None, 404, "no flow"),
        ("GET", "/api/runs/nope", None, 404, "no run"),
        ("GET", "/api/nothing/here", None, 404, "no such endpoint"),
        ("DELETE", "/api/flows", None, 405, "method not allowed"),
        (
            "GET",
            "/api/audit?category=bogus",
            None,
            400,
            "unknown category",
        ),
        (
            "GET",
            "/api/audit?date=../../etc/passwd",
            None,
            400,
            "YYYY-MM-DD",
        ),
        ("GET", "/api/audit?limit=-1", None, 400, "bad query"),
        (
            "POST",
            "/api/packs/my_pack/reject",
            Some(br#"{"reason": 5}"#.to_vec()),
            400,
            "reason must be a string",
        ),
        (
            "POST",
            "/api/packs/-bad-/approve",
            Some(b"{}".to_vec()),
            400,
            "not a valid pack id",
        ),
    ];
    for (method, path, body, want, text) in cases {
        let (s, v, _) = send(method, path, body).await;
        assert_eq!(s, want, "{method} {path}: {v}");
        assert_eq!(v["success"], false);
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(text), "{method} {path}: {err}");
        assert!(
            !err.contains(home.path().to_str().unwrap()),
            "no host path: {err}"
        );
    }
    // Nothing changed: the pack is still approved and the flow runs.
    let (_, p) = k.get("/api/packs/my_pack").await;
    assert_eq!(p["data"]["state"], "approved");
    let (s, run) = k.run("hello", json!({"name": "still here"})).await;
    assert_eq!(s, 200);
    assert_eq!(run["result"]["greeting"]["message"], "Hello, still here!");
}

#[tokio::test]
async fn the_limiter_caps_queues_fifo_and_answers_429() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    // Runs hold their slot until the test creates the release file (or 30 s pass).
    make_pack(home.path(), "slow", &[("wait.py", "import os, time\ndef run(i, c=None):\n    end = time.time() + 30\n    while i.get('path') and not os.path.exists(i['path']) and time.time() < end:\n        time.sleep(0.01)\n    return {'done': i.get('n')}\n")]);
    write(
        home.path(),
        "user_data/shared/flows/wait.flow.yaml",
        "flow_id: wait\nphases: [m]\nsteps:\n  - {id: w, phase: m, type: python_file_call, owner_pack: slow, file: wait.py, input: {path: \"${ctx.path}\", n: \"${ctx.n}\"}, output: w}\n",
    );
    let k = Kernel::start(
        home.path(),
        &[
            ("RUMI_MAX_CONCURRENT_FLOWS", "2"),
            ("RUMI_FLOW_QUEUE_LIMIT", "2"),
            ("RUMI_PACK_WORKERS", "4"),
        ],
    );
    k.approve("slow").await;
    let k = std::sync::Arc::new(k);
    // Two run (cap), two wait (queue), the fifth is refused with 429 and Retry-After.
    let mut running = Vec::new();
    let release = home.path().join("release");
    for n in 0..4u64 {
        let (kc, path) = (k.clone(), release.to_string_lossy().to_string());
        running.push(tokio::spawn(async move {
            kc.post(
                "/api/flows/wait/run",
                json!({"inputs": {"path": path, "n": n}}),
            )
            .await
        }));
        // Arrival order is the order the limiter saw them: wait until it has this one.
        limiter_until(&k, |l| {
            l["running"].as_u64().unwrap() + l["queued"].as_u64().unwrap() == n + 1
        })
        .await;
    }
    let (_, d) = k.get("/api/diagnostics").await;
    assert_eq!(
        d["data"]["limiter"]["running"], 2,
        "{}",
        d["data"]["limiter"]
    );
    assert_eq!(d["data"]["limiter"]["queued"], 2);
    let resp = reqwest::Client::new()
        .post(k.url("/api/flows/wait/run"))
        .bearer_auth(TOKEN)
        .json(&json!({"inputs": {"s": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("queue"));
    std::fs::write(&release, b"go").unwrap();
    let mut started = Vec::new();
    for h in running {
        let (s, v) = h.await.unwrap();
        assert_eq!(s, 200, "{v}");
        let n = v["data"]["result"]["w"]["done"].as_i64().unwrap();
        let (_, rec) = k
            .get(&format!(
                "/api/runs/{}",
                v["data"]["run_id"].as_str().unwrap()
            ))
            .await;
        started.push((rec["data"]["started"].as_str().unwrap().to_string(), n));
    }
    // Queued runs started in FIFO order: runs 2 and 3 waited (arriving 100 ms apart), and the
    // first freed slot went to run 2. Sorting by the time each run actually started must give
    // the arrival order; a LIFO queue would start 3 before 2.
    started.sort();
    let order: Vec<i64> = started.iter().map(|(_, n)| *n).collect();
    assert_eq!(order, [0, 1, 2, 3], "start times: {started:?}");
    let (_, runs) = k.get("/api/runs?flow_id=wait&limit=10").await;
    let runs = runs["data"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let (_, d) = k.get("/api/diagnostics").await;
    assert_eq!(d["data"]["limiter"]["running"], 0);
    assert_eq!(d["data"]["limiter"]["rejected_total"], 1);
    // The queue drains and new runs are admitted again.
    let (s, _) = k
        .post("/api/flows/wait/run", json!({"inputs": {"s": 0}}))
        .await;
    assert_eq!(s, 200);
}

/// Polls the limiter's counters in `/api/diagnostics` until `pred` holds (10 s deadline).
async fn limiter_until(k: &Kernel, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, d) = k.get("/api/diagnostics").await;
        let l = d["data"]["limiter"].clone();
        if pred(&l) {
            return l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the limiter never reached the expected state: {l}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Hardening defect 1b: runs that gave up waiting (408) stayed in the queue for good, so once
/// the queue had filled with them every later run was answered 429 on an idle kernel. Now each
/// leaves the queue as it gives up, and a new run queues and runs.
#[tokio::test]
async fn runs_that_time_out_waiting_leave_the_queue() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let release = home.path().join("release-the-slot");
    make_pack(home.path(), "hold", &[("hold.py", "import os, time\ndef run(i, c=None):\n    end = time.time() + 30\n    while not os.path.exists(i['path']) and time.time() < end:\n        time.sleep(0.01)\n    return {'released': os.path.exists(i['path'])}\n")]);
    write(
        home.path(),
        "user_data/shared/flows/hold.flow.yaml",
        "flow_id: hold\nphases: [m]\nsteps:\n  - {id: h, phase: m, type: python_file_call, owner_pack: hold, file: hold.py, input: {path: \"${ctx.path}\"}, output: h}\n",
    );
    write(
        home.path(),
        "user_data/shared/flows/set_only.flow.yaml",
        "flow_id: set_only\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: x, value: 1}}\n",
    );
    let k = Kernel::start(
        home.path(),
        &[
            ("RUMI_MAX_CONCURRENT_FLOWS", "1"),
            ("RUMI_FLOW_QUEUE_LIMIT", "5"),
        ],
    );
    k.approve("hold").await;
    let k = std::sync::Arc::new(k);
    // One run holds the only slot until the test lets it go.
    let holder = {
        let (k, path) = (k.clone(), release.to_string_lossy().to_string());
        tokio::spawn(async move { k.run("hold", json!({"path": path})).await })
    };
    limiter_until(&k, |l| l["running"] == 1).await;
    // Five runs fill the queue and give up at their one-second deadline.
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let k = k.clone();
            tokio::spawn(async move {
                k.post(
                    "/api/flows/set_only/run",
                    json!({"inputs": {}, "timeout": 1}),
                )
                .await
            })
        })
        .collect();
    for w in waiters {
        let (s, v) = w.await.unwrap();
        assert_eq!(s, 408, "{v}");
    }
    let l = limiter_until(&k, |l| l["queued"] == 0).await;
    assert_eq!(l["running"], 1, "{l}");
    // The queue has room again: a new run waits (not 429) and runs once the slot is free.
    let queued = {
        let k = k.clone();
        tokio::spawn(async move {
            k.post("/api/flows/set_only/run", json!({"inputs": {}}))
                .await
        })
    };
    limiter_until(&k, |l| l["queued"] == 1).await;
    std::fs::write(&release, b"go").unwrap();
    let (s, v) = queued.await.unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, v) = holder.await.unwrap();
    assert_eq!((s, &v["result"]["h"]["released"]), (200, &json!(true)));
    let l = limiter_until(&k, |l| l["running"] == 0).await;
    assert_eq!(l["queued"], 0);
}

#[tokio::test]
async fn runs_audit_and_diagnostics_are_served() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    let (_, run) = k.run("hello", json!({"name": "Ann"})).await;
    let id = run["run_id"].as_str().unwrap();
    let (s, rec) = k.get(&format!("/api/runs/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(rec["data"]["trigger"], "api");
    assert_eq!(rec["data"]["status"], "succeeded");
    assert_eq!(
        rec["data"]["inputs_digest"].as_str().unwrap().len(),
        64,
        "records keep a digest of the inputs"
    );
    assert!(!rec["data"]["inputs_digest"].to_string().contains("Ann"));
    assert!(
        rec["data"].get("inputs").is_none(),
        "no input values in the record"
    );
    let (_, list) = k.get("/api/runs").await;
    assert_eq!(list["data"][0]["run_id"], id);
    let (_, audit) = k.get("/api/audit?category=flow_execution").await;
    let e = audit["data"].as_array().unwrap().last().unwrap();
    assert_eq!(e["run_id"], id);
    assert_eq!(e["category"], "flow_execution");
    assert_eq!(e["execution_mode"], "permissive");
    let (_, audit) = k.get("/api/audit?category=python_file_call&limit=1").await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);
    assert_eq!(audit["data"][0]["owner_pack"], "my_pack");
    let (_, d) = k.get("/api/diagnostics").await;
    let c = d["data"]["containers"].as_array().unwrap();
    assert_eq!(c[0]["pack_id"], "my_pack");
    assert_eq!(c[0]["calls"], 1);
    let (_, flows) = k.get("/api/flows").await;
    assert!(flows["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["flow_id"] == "hello"));
    let (_, f) = k.get("/api/flows/hello").await;
    assert_eq!(f["data"]["steps"][0]["id"], "call_hello");
    assert_eq!(f["data"]["steps"][0]["priority"], 50.0);
    // Audit files are per category and day, written as things happen.
    let files: Vec<String> = std::fs::read_dir(home.path().join("user_data/audit"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("flow_execution_") && f.ends_with(".jsonl")),
        "{files:?}"
    );
    // The digest identifies the inputs: equal inputs, equal digest; other inputs, another one.
    let digest_of = |name: &'static str| {
        let k = &k;
        async move {
            let (_, run) = k.run("hello", json!({"name": name})).await;
            let (_, rec) = k
                .get(&format!("/api/runs/{}", run["run_id"].as_str().unwrap()))
                .await;
            rec["data"]["inputs_digest"].as_str().unwrap().to_string()
        }
    };
    let first = rec["data"]["inputs_digest"].as_str().unwrap().to_string();
    assert_eq!(digest_of("Ann").await, first);
    assert_ne!(digest_of("Bo").await, first);
}

#[test]
fn the_cli_talks_to_the_running_kernel() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "user_data/shared/flows/fails.flow.yaml",
        "flow_id: fails\nphases: [m]\nsteps:\n  - {id: f, phase: m, type: handler, on_error: abort, input: {handler: \"kernel:ctx.get\", args: {}}}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    let port = k.base.rsplit(':').next().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rumi"))
            .args(args)
            .env("RUMI_HOME", home.path())
            .env("RUMI_API_PORT", &port)
            .env("RUMI_API_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = cli(&["pack", "list", "--json"]);
    assert!(ok && out.contains("\"my_pack\""), "{out}");
    let (ok, out, err) = cli(&["pack", "approve", "my_pack", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"approved\""));
    let (ok, out, _) = cli(&["flow", "list", "--json"]);
    assert!(ok && out.contains("\"hello\""));
    let (ok, out, err) = cli(&["flow", "run", "hello", "--input", "name=Cli", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("Hello, Cli!"), "{out}");
    assert!(
        err.starts_with("run ") && err.contains(": succeeded in "),
        "{err}"
    );
    // Hardening defect 14: a run that failed exited 0 without a word. Now the record still goes
    // to stdout, one line says what failed on stderr, and the exit status is non-zero.
    let (ok, out, err) = cli(&["flow", "run", "fails", "--json"]);
    assert!(!ok, "a failed run exits non-zero");
    assert!(out.contains("\"status\": \"failed\""), "{out}");
    assert!(
        err.contains("(fails): failed in ") && err.contains("; f (handler_error)"),
        "{err}"
    );
    // A reader that goes away (`rumi pack list | head`) ends the client quietly, no panic.
    let piped = Command::new("sh")
        .args(["-c", "\"$0\" pack list | true", env!("CARGO_BIN_EXE_rumi")])
        .env("RUMI_HOME", home.path())
        .env("RUMI_API_PORT", &port)
        .env("RUMI_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    let piped_err = String::from_utf8_lossy(&piped.stderr);
    assert!(!piped_err.contains("panicked"), "{piped_err}");
    // The kernel's log is plain text when it is not a terminal (the harness writes it to a file).
    let log = std::fs::read_to_string(&k.stderr_log).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escapes in a log file: {log}"
    );
    let (ok, _, err) = cli(&["flow", "run", "nope"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = cli(&["pack", "reject", "nope"]);
    assert!(!ok && err.contains("no pack"), "{err}");
    let (ok, out, _) = cli(&["token"]);
    assert!(ok && out.trim() == TOKEN);
}

#[test]
fn a_generated_token_is_private_and_readable_with_rumi_token() {
    if !python_available() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let home = fresh_home();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rumi"));
    cmd.args(["serve", "--permissive"])
        .env("RUMI_HOME", home.path())
        .env("RUMI_API_PORT", "0")
        .env_remove("RUMI_API_TOKEN");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let path = home.path().join("user_data/api_token");
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(first.contains(&token), "shown once on first start: {first}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rumi"))
        .arg("token")
        .env("RUMI_HOME", home.path())
        .env_remove("RUMI_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), token);
}

#[test]
fn invalid_configuration_stops_startup_naming_the_variable() {
    let home = fresh_home();
    for (var, value) in [
        ("RUMI_SECURITY_MODE", "lax"),
        ("RUMI_MAX_CONCURRENT_FLOWS", "many"),
        ("RUMI_MAX_CONCURRENT_FLOWS", "0"),
        ("RUMI_API_PORT", "99999"),
        ("RUMI_TRACE", "json:/tmp/x"),
        ("RUMI_LOG", "=[bad"),
        ("RUMI_BODY_READ_TIMEOUT", "0"),
        ("RUMI_MAX_CONTEXT_BYTES", "lots"),
        ("RUMI_CORS_ORIGINS", "*"),
        ("RUMI_CORS_ORIGINS", "http://a.example/path"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rumi"))
            .arg("serve")
            .env("RUMI_HOME", home.path())
            .env(var, value)
            .env(
                "RUMI_API_PORT",
                if var == "RUMI_API_PORT" { value } else { "0" },
            )
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} must stop start-up");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}={value}: {err}");
    }
}

#[tokio::test]
async fn a_result_over_the_response_limit_is_summarised() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "user_data/shared/flows/big.flow.yaml",
        "flow_id: big\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: blob, value: \"${ctx.text}\"}}\n",
    );
    let k = Kernel::start(home.path(), &[("RUMI_MAX_RESPONSE_BYTES", "2048")]);
    // Each value fits the limit (one value may not pass it: `context_limit`), the two together
    // do not, so the response summarises the result.
    let (s, run) = k.run("big", json!({"text": "x".repeat(1500)})).await;
    assert_eq!(s, 200);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["result"],
        json!({"_truncated": true, "_keys": ["blob", "text"]})
    );
    let (s, small) = k.run("big", json!({"text": "short"})).await;
    assert_eq!(s, 200);
    assert_eq!(small["result"]["blob"], "short");
    let (_, rec) = k
        .get(&format!("/api/runs/{}", small["run_id"].as_str().unwrap()))
        .await;
    assert_eq!(rec["data"]["result"]["blob"], "short");
    assert_eq!(rec["data"]["trigger"], "api");
}

/// Hardening defect 5: a second `rumi serve` on the same home booted far enough to remove the
/// running kernel's containers and re-bind its egress sockets before failing on the port, and
/// the running kernel's egress then failed for good. Now it stops first — on any port — naming
/// the kernel that holds the home, and the running kernel is untouched.
#[tokio::test]
async fn a_second_kernel_on_the_same_home_is_refused_and_changes_nothing() {
    if !python_available() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    let sock = home.path().join("user_data/sockets/my_pack/egress.sock");
    let inode = std::fs::metadata(&sock).expect("egress socket").ino();
    let port = port_of(&k);
    // On its own free port (the old code started a second kernel), and on the busy one.
    for p in ["0".to_string(), port.to_string()] {
        let err = serve_refused(home.path(), &[("RUMI_API_PORT", &p)]);
        let want = format!(
            "another kernel (pid {}) serves this home on :{port}",
            k.child.id()
        );
        assert!(err.contains(&want), "{err}");
        assert!(err.contains("RUMI_HOME"), "says what to do: {err}");
    }
    // The running kernel kept its socket (same file, still answering) and runs flows.
    assert_eq!(std::fs::metadata(&sock).unwrap().ino(), inode);
    let r = socket_exchange(&sock, b"{not json").expect("the egress socket still answers");
    assert_eq!(r["error_type"], "protocol_error", "{r}");
    let (s, run) = k.run("hello", json!({"name": "Ann"})).await;
    assert_eq!(s, 200);
    assert_eq!(run["result"]["greeting"]["message"], "Hello, Ann!");
    // The lock goes with its holder, even a killed one: a kernel starts again on the home.
    drop(k);
    let k2 = Kernel::start(home.path(), &[]);
    let (s, _) = k2.get("/api/packs").await;
    assert_eq!(s, 200);
}

/// `GET /api/audit` pages with opaque cursors (review defect 9): `before` walks back page by page
/// without gaps or repeats, `after` returns only what came later, and a bad cursor is a 400.
#[tokio::test]
async fn audit_pages_with_cursors() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        let (s, run) = k.run("hello", json!({"name": "Ann"})).await;
        assert_eq!(s, 200);
        ids.push(run["run_id"].as_str().unwrap().to_string());
    }
    let page = |query: String| {
        let k = &k;
        async move {
            let r = k
                .http
                .get(k.url(&format!(
                    "/api/audit?category=flow_execution&limit=3{query}"
                )))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let (before, after) = (header("rumi-audit-before"), header("rumi-audit-after"));
            let v: Value = r.json().await.unwrap();
            (status, v, before, after)
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let (s, v, mut before, after) = page(String::new()).await;
    assert_eq!(s, 200, "{v}");
    let first_after = after.expect("an after cursor");
    let mut pages = vec![v["data"].as_array().unwrap().clone()];
    while let Some(c) = before.take() {
        let (s, v, b, _) = page(format!("&before={c}")).await;
        assert_eq!(s, 200, "{v}");
        let entries = v["data"].as_array().unwrap().clone();
        if entries.is_empty() {
            break;
        }
        pages.push(entries);
        before = b;
        assert!(pages.len() < 10, "paging does not end");
    }
    for p in pages.iter().rev() {
        seen.extend(p.iter().map(|e| e["run_id"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen, ids, "oldest first, every run once");

    let (s, run) = k.run("hello", json!({"name": "Bo"})).await;
    assert_eq!(s, 200);
    let (s, v, _, _) = page(format!("&after={first_after}")).await;
    assert_eq!(s, 200, "{v}");
    let newer: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(newer, vec![run["run_id"].as_str().unwrap()]);

    let day = &first_after[..10];
    for bad in [
        "&before=bogus".to_string(),
        "&after=".to_string(),
        "&date=2026-01-02&before=2026-01-01~0.0".to_string(),
        "&before=1999-01-01~0.5".to_string(),
        "&before=2026-01-01~3.0".to_string(),
        "&before=2026-01-01~0.0~0.5".to_string(),
        "&before=2026-01-01~0.99999999999999999999999".to_string(),
        format!("&before={day}~0.1"),
    ] {
        let (s, v, _, _) = page(bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("cursor"),
            "{bad}: {v}"
        );
    }
}

/// Hardening defect 13: a body sent a few bytes at a time held its connection forever. Now the
/// whole body must arrive within `RUMI_BODY_READ_TIMEOUT`: past it the client gets 408 with the
/// envelope, and the kernel goes on serving.
#[tokio::test]
async fn a_body_that_never_finishes_is_answered_408() {
    if !python_available() {
        return;
    }
    use std::io::{Read, Write};
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[("RUMI_BODY_READ_TIMEOUT", "1")]);
    let addr = k.base.trim_start_matches("http://").to_string();
    let started = std::time::Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        write!(
            s,
            "POST /api/flows/hello/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"inputs\":"
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the kernel answers and closes (or the 20 s read deadline fails the test).
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("no answer: {e}; got {:?}", String::from_utf8_lossy(&got)),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                break;
            }
        }
        String::from_utf8_lossy(&got).to_string()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RUMI_BODY_READ_TIMEOUT"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200, "still serving");
}

/// CORS (§12, §16): a preflight needs no token and answers 204 with the request's exact origin,
/// the methods (POST among them) and the headers (authorization, content-type); an unlisted origin
/// gets no `Access-Control-Allow-Origin`; `RUMI_CORS_ORIGINS` replaces the defaults.
#[tokio::test]
async fn cors_allows_the_listed_origins_only() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let preflight = |k: &Kernel, origin: &str| {
        let url = k.url("/api/flows/hello/run");
        let origin = origin.to_string();
        async move {
            reqwest::Client::new()
                .request(reqwest::Method::OPTIONS, url)
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                )
                .send()
                .await
                .unwrap()
        }
    };
    let acao = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let k = Kernel::start(home.path(), &[]);
    for origin in ["http://localhost:5173", "http://127.0.0.1:3000"] {
        let r = preflight(&k, origin).await;
        assert_eq!(r.status(), 204, "{origin}");
        assert_eq!(acao(&r).as_deref(), Some(origin));
        let h = |n: &str| r.headers().get(n).unwrap().to_str().unwrap().to_lowercase();
        assert!(h("access-control-allow-methods").contains("post"));
        let allowed = h("access-control-allow-headers");
        assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    }
    let r = preflight(&k, "http://evil.example").await;
    assert_eq!(acao(&r), None);
    assert_ne!(r.status(), 204);
    // An answer to a listed origin carries it (a 401 included, so a page can read why); an
    // unlisted origin's answer does not.
    let get = |origin: &'static str, token: bool| {
        let url = k.url("/api/packs");
        async move {
            let mut r = reqwest::Client::new().get(url).header("Origin", origin);
            if token {
                r = r.bearer_auth(TOKEN);
            }
            r.send().await.unwrap()
        }
    };
    let r = get("http://localhost:8080", true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(acao(&r).as_deref(), Some("http://localhost:8080"));
    let r = get("http://localhost:8080", false).await;
    assert_eq!(r.status(), 401);
    assert_eq!(acao(&r).as_deref(), Some("http://localhost:8080"));
    let r = get("http://evil.example", true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(acao(&r), None);
    k.stop();

    let k = Kernel::start(
        home.path(),
        &[(
            "RUMI_CORS_ORIGINS",
            "https://app.example.com, http://10.0.0.5:9000",
        )],
    );
    let r = preflight(&k, "https://app.example.com").await;
    assert_eq!(r.status(), 204);
    assert_eq!(acao(&r).as_deref(), Some("https://app.example.com"));
    let r = preflight(&k, "http://localhost:5173").await;
    assert_eq!(acao(&r), None, "the variable replaces the defaults");
}
