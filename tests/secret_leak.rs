//! Invariant 5 (contract §15): a secret's value appears nowhere but in the `secrets.get` answer
//! to a granted block. One random value is set, then every path is exercised — no grant, a grant,
//! a get, a key not allowed, a block that raises, prints and returns the value, the rate limit, a
//! call to a handler that does not exist, a delete and a get after it — and afterwards every HTTP
//! response, the kernel log (at debug level), every file under `user_data/` except the
//! ciphertext, run records, audit and diagnostics are searched for the value.

mod common;

use common::*;
use serde_json::{json, Value};

/// `secrets.get` of `inputs.key`, `inputs.n` times; answers each response without the value,
/// and its SHA-256 when there was one.
const GET: &str = r#"
import hashlib, rumi_capability

def run(input_data, context=None):
    i = context["inputs"]
    out = []
    for _ in range(i.get("n", 1)):
        r = rumi_capability.call("secrets.get", args={"key": i["key"]})
        value = (r.get("output") or {}).pop("value", None) if isinstance(r.get("output"), dict) else None
        r.pop("latency_ms", None)
        r["sha"] = hashlib.sha256(value.encode()).hexdigest() if value else None
        out.append(r)
    return {"answers": out}
"#;

/// Gets the secret and then does everything a careless block does with it.
const CARELESS: &str = r#"
import os, sys, rumi_capability

def run(input_data, context=None):
    i = context["inputs"]
    v = rumi_capability.call("secrets.get", args={"key": i["key"]})["output"]["value"]
    print("the value is", v)
    sys.stderr.write("stderr has " + v + "\n")
    sys.stderr.flush()
    os.write(2, ("raw fd 2 has " + v + "\n").encode())
    if i.get("raise"):
        raise ValueError("boom " + v)
    return {"echo": v, "nested": {v: [v]}}
"#;

/// Hands the secret to a third-party handler that fails with it in its message.
const VIA_HANDLER: &str = r#"
import rumi_capability

def run(input_data, context=None):
    v = rumi_capability.call("secrets.get", args={"key": context["inputs"]["key"]})["output"]["value"]
    r = rumi_capability.call("leak.fail", args={"v": v})
    return {"error_type": r.get("error_type"), "error": r.get("error")}
"#;

fn leak_pack(home: &std::path::Path) {
    make_pack(
        home,
        "leaky",
        &[
            ("get.py", GET),
            ("careless.py", CARELESS),
            ("via_handler.py", VIA_HANDLER),
        ],
    );
    let handler = "ecosystem/leaky/backend/share/capability_handlers/fail";
    write(
        home,
        &format!("{handler}/handler.json"),
        r#"{"handler_id":"failing","permission_id":"leak.fail","entrypoint":"handler.py:execute","description":"fails","risk":"low"}"#,
    );
    write(
        home,
        &format!("{handler}/handler.py"),
        "def execute(context, args):\n    raise ValueError('handler failed with ' + args['v'])\n",
    );
    for (flow, file) in [
        ("get", "get.py"),
        ("careless", "careless.py"),
        ("via_handler", "via_handler.py"),
    ] {
        write(
            home,
            &format!("user_data/shared/flows/leaky_{flow}.flow.yaml"),
            &format!("flow_id: leaky_{flow}\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: python_file_call, owner_pack: leaky, file: {file}, timeout_seconds: 30, output: out}}\n  - {{id: e, phase: m, priority: 200, type: handler, input: {{handler: \"kernel:emit\", args: {{event: done, payload: \"${{ctx.out}}\"}}}}}}\n"),
        );
    }
}

fn random_value() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).unwrap();
    format!(
        "sv-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Every response body the test saw, to search afterwards.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, v: &Value) -> Value {
        self.0.push(v.to_string());
        v.clone()
    }
}

fn answers(run: &Value) -> Vec<Value> {
    run["result"]["out"]["answers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A denial with its latency removed (the one field allowed to differ).
fn shape(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("latency_ms");
        o.remove("sha");
    }
    v
}

#[tokio::test]
async fn a_secret_value_appears_nowhere_but_in_its_granted_answer() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    leak_pack(home.path());
    let k = Kernel::start(
        home.path(),
        &[("RUMI_SECRET_GET_RATE_LIMIT", "12"), ("RUMI_LOG", "debug")],
    );
    let mut seen = Seen::default();
    let value = random_value();
    k.approve("leaky").await;
    k.reload().await;
    let (s, v) = k
        .post(
            "/api/secrets/set",
            json!({"key": "API_KEY", "value": value}),
        )
        .await;
    assert_eq!(s, 200, "{}", seen.keep(&v));
    let (s, v) = k
        .post(
            "/api/secrets/set",
            json!({"key": "OTHER_KEY", "value": random_value()}),
        )
        .await;
    assert_eq!(s, 200, "{}", seen.keep(&v));

    // No grant: the one denial.
    let (_, run) = k.run("leaky_get", json!({"key": "API_KEY"})).await;
    let denial = shape(answers(&seen.keep(&run))[0].clone());
    assert_eq!(
        denial["error"], "Access denied or secret not found",
        "{run}"
    );
    assert_eq!(denial["output"]["error_type"], "access_denied", "{run}");

    let (s, v) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": "leaky", "permission_id": "secrets.get", "config": {"allowed_keys": ["API_KEY"]}}),
        )
        .await;
    assert_eq!(s, 200, "{}", seen.keep(&v));
    // Granted: the block gets the value (it answers only its digest).
    let (_, run) = k.run("leaky_get", json!({"key": "API_KEY"})).await;
    let a = answers(&seen.keep(&run));
    assert_eq!(a[0]["success"], true, "{run}");
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(value.as_bytes()));
    assert_eq!(a[0]["sha"], json!(digest), "the block received the value");
    // A key the grant does not allow, and a key that does not exist: the same denial.
    for key in ["OTHER_KEY", "MISSING_KEY", "bad key!"] {
        let (_, run) = k.run("leaky_get", json!({"key": key})).await;
        assert_eq!(
            shape(answers(&seen.keep(&run))[0].clone()),
            denial,
            "{key}: {run}"
        );
    }
    // A careless block: prints it, writes it to stderr, raises with it, returns it.
    for raise in [true, false] {
        let (_, run) = k
            .run("leaky_careless", json!({"key": "API_KEY", "raise": raise}))
            .await;
        seen.keep(&run);
        if raise {
            let err = step(&run, "s")["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                err.contains("[redacted]"),
                "the error keeps its shape: {run}"
            );
        } else {
            assert_eq!(run["result"]["out"]["echo"], "[redacted]", "{run}");
        }
    }
    // A failing third-party handler quoting the value: the block gets its error scrubbed.
    let (_, v) = k.post("/api/capability/candidates/scan", json!({})).await;
    let key = seen.keep(&v)["data"]["candidates"][0]["candidate_key"]
        .as_str()
        .expect("the handler is a candidate")
        .to_string();
    let (s, v) = k
        .post(
            &format!("/api/capability/requests/{key}/approve"),
            json!({"notes": "test"}),
        )
        .await;
    assert_eq!(s, 200, "{}", seen.keep(&v));
    let (s, v) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": "leaky", "permission_id": "leak.fail", "config": {}}),
        )
        .await;
    assert_eq!(s, 200, "{}", seen.keep(&v));
    let (_, run) = k.run("leaky_via_handler", json!({"key": "API_KEY"})).await;
    let out = &seen.keep(&run)["result"]["out"];
    assert_eq!(out["error_type"], "handler_error", "{run}");
    assert!(
        out["error"]
            .as_str()
            .unwrap_or_default()
            .contains("[redacted]"),
        "the handler's error reached the block scrubbed: {run}"
    );
    // Past the rate limit: the same denial again.
    let (_, run) = k.run("leaky_get", json!({"key": "API_KEY", "n": 20})).await;
    let a = answers(&seen.keep(&run));
    let limited: Vec<&Value> = a.iter().filter(|r| r["success"] == false).collect();
    assert!(!limited.is_empty(), "the rate limit was reached: {run}");
    for r in limited {
        assert_eq!(shape(r.clone()), denial, "{run}");
    }
    // A handler that does not exist, then the secret deleted: denied, the same way for the secret.
    let (s, v) = k
        .post("/api/secrets/delete", json!({"key": "API_KEY"}))
        .await;
    assert_eq!(s, 200, "{}", seen.keep(&v));
    // Let the rate window refill a little is not needed: a deleted secret is denied either way.
    let (_, run) = k.run("leaky_get", json!({"key": "API_KEY"})).await;
    assert_eq!(shape(answers(&seen.keep(&run))[0].clone()), denial, "{run}");

    for path in [
        "/api/secrets",
        "/api/runs?limit=100",
        "/api/diagnostics",
        "/api/capability/grants?principal_id=leaky",
        "/api/packs",
    ] {
        let (_, v) = k.get(path).await;
        seen.keep(&v);
    }
    let (_, runs) = k.get("/api/runs?limit=100").await;
    let listed = runs["data"].as_array().cloned().unwrap_or_default();
    assert!(
        listed.len() >= 8,
        "the run list holds this test's runs: {runs}"
    );
    for r in listed {
        let (_, v) = k
            .get(&format!("/api/runs/{}", r["run_id"].as_str().unwrap_or("")))
            .await;
        seen.keep(&v);
    }
    for cat in [
        "flow_execution",
        "python_file_call",
        "permission",
        "security",
        "system",
        "approval",
        "network",
    ] {
        let (_, v) = k
            .get(&format!("/api/audit?category={cat}&limit=1000"))
            .await;
        seen.keep(&v);
    }
    let log_path = k.stderr_log.clone();
    k.stop();

    for (i, body) in seen.0.iter().enumerate() {
        assert!(
            !body.contains(&value),
            "response {i} holds the value: {body}"
        );
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("worker:"),
        "the debug log has the workers' stderr lines"
    );
    assert!(!log.contains(&value), "the kernel log holds the value");
    let mut files = 0;
    let mut stack = vec![home.path().join("user_data")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains(&value),
                    "{} holds the value in plaintext",
                    path.display()
                );
                files += 1;
            }
        }
    }
    assert!(files > 5, "the search saw the home's files");
}
