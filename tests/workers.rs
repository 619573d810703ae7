//! Hostile blocks against a permissive worker's hygiene (README, "Workers"): a block that floods
//! stderr, leaves processes behind or returns a result nested too deep must not grow the kernel's
//! memory, leave processes running after its call, or cost the pack its worker. Through the real
//! binary, real HTTP and real Python workers.

mod common;

use common::*;
use serde_json::{json, Value};

/// Writes raw bytes to fd 2 (the worker's stderr pipe, which the kernel reads), never a newline.
const FLOOD: &str = "import os\ndef run(input_data, context=None):\n    chunk = b'x' * (1 << 20)\n    for _ in range(int(input_data['mib'])):\n        os.write(2, chunk)\n    return {'flooded': int(input_data['mib'])}\n";

const DEEP: &str = "def run(input_data, context=None):\n    v = 'bottom'\n    for _ in range(int(input_data['depth'])):\n        v = [v]\n    return v\n";

const PID: &str =
    "import os\ndef run(input_data, context=None):\n    return {'pid': os.getpid()}\n";

fn home_with(blocks: &[(&str, &str)]) -> tempfile::TempDir {
    let home = fresh_home();
    make_pack(home.path(), "hostile", blocks);
    for (name, _) in blocks {
        let id = name.trim_end_matches(".py");
        write(
            home.path(),
            &format!("user_data/shared/flows/{id}.flow.yaml"),
            &format!("flow_id: {id}\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: python_file_call, owner_pack: hostile, file: {name}, input: \"${{ctx.input}}\", timeout_seconds: 120, output: out}}\n"),
        );
    }
    home
}

/// The kernel's resident memory in KiB (`VmRSS` of /proc/<pid>/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("kernel status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

async fn pack_counters(k: &Kernel) -> Value {
    let (_, d) = k.get("/api/diagnostics").await;
    d["data"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pack_id"] == "hostile")
        .cloned()
        .unwrap_or_else(|| panic!("no counters for the pack in {d}"))
}

#[tokio::test]
async fn a_stderr_flood_without_newlines_does_not_grow_the_kernel() {
    if !python_available() {
        return;
    }
    let home = home_with(&[("flood.py", FLOOD)]);
    let k = Kernel::start(home.path(), &[]);
    k.approve("hostile").await;
    let (_, run) = k.run("flood", json!({"input": {"mib": 1}})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let pid = k.child.id();
    let before = rss_kib(pid);
    let (_, run) = k.run("flood", json!({"input": {"mib": 256}})).await;
    assert_eq!(run["result"]["out"]["flooded"], 256, "{run}");
    let after = rss_kib(pid);
    assert!(
        after <= before + 32 * 1024,
        "256 MiB on stderr without a newline grew the kernel from {before} KiB to {after} KiB"
    );
    let (_, run) = k.run("flood", json!({"input": {"mib": 0}})).await;
    assert_eq!(
        run["status"], "succeeded",
        "the kernel still answers: {run}"
    );
}

#[tokio::test]
async fn a_result_nested_too_deep_is_invalid_and_the_worker_stays() {
    if !python_available() {
        return;
    }
    let home = home_with(&[("deep.py", DEEP), ("pid.py", PID)]);
    let k = Kernel::start(home.path(), &[]);
    k.approve("hostile").await;
    let (_, run) = k.run("pid", json!({"input": {}})).await;
    let worker = run["result"]["out"]["pid"].clone();
    assert!(worker.is_i64(), "{run}");

    // Deep, but within the limit: returned as it is.
    let (_, run) = k.run("deep", json!({"input": {"depth": 90}})).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    let (_, run) = k.run("deep", json!({"input": {"depth": 200}})).await;
    let s = step(&run, "s");
    assert_eq!(s["error_type"], "invalid_result", "{run}");
    assert!(
        s["error"].as_str().unwrap().contains("nested"),
        "the error says what was wrong: {s}"
    );

    let (_, run) = k.run("pid", json!({"input": {}})).await;
    assert_eq!(
        run["result"]["out"]["pid"], worker,
        "the same worker answers: {run}"
    );
    let counters = pack_counters(&k).await;
    assert_eq!(counters["restarts"], 0, "{counters}");
}
