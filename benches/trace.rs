//! One traced run, for developers following message flows: starts the real kernel with
//! `RUMI_TRACE=chrome:target/rumi-trace.json`, approves the hello pack, runs the `hello` flow once,
//! stops the kernel (which flushes the trace), and prints the run's spans in order: HTTP →
//! limiter → FlowRun → step → PackContainer → the pack's worker. Open the file in
//! <https://ui.perfetto.dev> or `chrome://tracing`. Run with `cargo bench --bench trace`.

#[path = "../tests/common/mod.rs"]
mod common;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = common::fresh_home();
    let trace = repo.join("target/rumi-trace.json");
    let _ = std::fs::remove_file(&trace);

    let mut child = Command::new(env!("CARGO_BIN_EXE_rumi"))
        .args(["serve", "--permissive"])
        .env("RUMI_HOME", home.path())
        .env("RUMI_API_PORT", "0")
        .env("RUMI_API_TOKEN", "trace-token")
        .env("RUMI_LOG", "warn")
        .env("RUMI_TRACE", format!("chrome:{}", trace.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rumi");
    let base = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("rumi listening on ")
                .map(|r| r.split_whitespace().next().unwrap().to_string())
        })
        .expect("banner");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run_id = rt.block_on(async {
        let c = reqwest::Client::new();
        let post = |path: &str, body: Value| {
            c.post(format!("{base}{path}"))
                .bearer_auth("trace-token")
                .json(&body)
                .send()
        };
        post("/api/packs/my_pack/approve", serde_json::json!({}))
            .await
            .unwrap();
        let v: Value = post(
            "/api/flows/hello/run",
            serde_json::json!({"inputs": {"name": "trace"}}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(v["data"]["status"], "succeeded", "{v}");
        v["data"]["run_id"].as_str().unwrap().to_string()
    });
    // SIGTERM: the kernel shuts down in order and the trace layer flushes its file.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();

    let events: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&trace).expect("trace file")).expect("trace JSON");
    let wanted = [
        "http.flow_run",
        "run_request",
        "limiter.try_acquire",
        "flow_run",
        "step",
        "pack.execute",
        "worker.call",
    ];
    println!(
        "run {run_id}: spans in the trace (first begin of each, µs since trace start, thread):"
    );
    let mut missing = Vec::new();
    for name in wanted {
        match events.iter().find(|e| e["name"] == name && e["ph"] == "B") {
            Some(e) => println!(
                "  {:>12.1}  tid {:<4} {name}  {}",
                e["ts"].as_f64().unwrap_or(0.0),
                e["tid"],
                e.get("args").map(|a| a.to_string()).unwrap_or_default()
            ),
            None => missing.push(name),
        }
    }
    assert!(
        missing.is_empty(),
        "spans missing from the trace: {missing:?}"
    );
    println!(
        "trace written to {} ({} events); open it in ui.perfetto.dev",
        trace.display(),
        events.len()
    );
}
