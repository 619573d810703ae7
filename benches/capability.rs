//! Capability calls from a real Python block through its pack's capability socket (release
//! kernel): the per-call round trip of `store.get` and `secrets.get` (target p50 ≤ 0.15 ms in
//! permissive mode), calls/s from 8 blocks running at once, and the `store.get` round trip from a
//! strict-mode container when Docker and the image are there. The block itself times each call
//! (`time.perf_counter_ns` around `rumi_capability.call`), so the figures are what pack code sees:
//! its framing, the socket, the broker's checks, the handler, the audit entry, and back.
//! Run with `cargo bench --bench capability`; the summary goes to
//! `target/rumi-bench-capability.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use serde_json::{json, Value};
use std::time::Instant;
use support::*;

/// `inputs.n` calls of `inputs.permission` with `inputs.args`; answers each call's time (ms).
const TIMED: &str = r#"
import time, rumi_capability

def run(input_data, context=None):
    i = context["inputs"]
    out = []
    for _ in range(i["n"]):
        t = time.perf_counter_ns()
        r = rumi_capability.call(i["permission"], args=i["args"])
        out.append((time.perf_counter_ns() - t) / 1e6)
        if not r.get("success"):
            raise RuntimeError("call failed: %r" % (r,))
    return {"ms": out}
"#;

async fn run_flow(c: &reqwest::Client, base: &str, inputs: Value) -> Vec<f64> {
    let v = post(
        c,
        &format!("{base}/api/flows/bench_cap/run"),
        &json!({"inputs": inputs}),
    )
    .await
    .expect("run");
    assert_eq!(v["data"]["status"], "succeeded", "{v}");
    v["data"]["result"]["out"]["ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

/// Starts a kernel on a fresh home with the bench pack approved, a store holding one value, a
/// secret, and the grants; answers the kernel and its home.
fn prepare(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    args: &[&str],
) -> (Kernel, tempfile::TempDir) {
    let home = common::fresh_home();
    common::make_pack(home.path(), "cap_bench", &[("timed.py", TIMED)]);
    // A third-party handler the pack ships (trusted and granted below).
    let handler = "ecosystem/cap_bench/backend/share/capability_handlers/echo";
    common::write(
        home.path(),
        &format!("{handler}/handler.json"),
        r#"{"handler_id":"bench_echo","permission_id":"bench.echo","entrypoint":"handler.py:execute","description":"echo","risk":"none"}"#,
    );
    common::write(
        home.path(),
        &format!("{handler}/handler.py"),
        "def execute(context, args):\n    return {'success': True, 'echo': args}\n",
    );
    common::write(
        home.path(),
        "user_data/shared/flows/bench_cap.flow.yaml",
        "flow_id: bench_cap\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: python_file_call, owner_pack: cap_bench, file: timed.py, timeout_seconds: 300, output: out}\n",
    );
    let (kernel, _) = start_with(
        home.path(),
        args,
        &[
            ("RUMI_SECRET_GET_RATE_LIMIT", "1000000"),
            ("RUMI_PACK_WORKERS", "8"),
        ],
        None,
    );
    let base = kernel.base.clone();
    rt.block_on(async {
        approve(client, &base, "cap_bench").await;
        let p = |path: &str, body: Value| {
            let (client, url) = (client.clone(), format!("{base}{path}"));
            async move { post(&client, &url, &body).await.expect(&url) }
        };
        p("/api/flows/reload", json!({})).await;
        p("/api/stores/create", json!({"store_id": "bench", "root_path": "user_data/stores/bench"})).await;
        p("/api/secrets/set", json!({"key": "BENCH_KEY", "value": "x".repeat(40)})).await;
        for perm in ["store.get", "store.set"] {
            p("/api/capability/grants/grant", json!({"principal_id": "cap_bench", "permission_id": perm, "config": {}})).await;
        }
        p("/api/capability/grants/grant", json!({"principal_id": "cap_bench", "permission_id": "secrets.get", "config": {"allowed_keys": ["BENCH_KEY"]}})).await;
        p("/api/capability/candidates/scan", json!({})).await;
        let list = reqwest::Client::new()
            .get(format!("{base}/api/capability/requests?status=pending"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("requests")
            .json::<Value>()
            .await
            .expect("requests JSON");
        let key = list["data"]["items"][0]["candidate_key"].as_str().expect("a candidate").to_string();
        p(&format!("/api/capability/requests/{key}/approve"), json!({"notes": "bench"})).await;
        p("/api/capability/grants/grant", json!({"principal_id": "cap_bench", "permission_id": "bench.echo", "config": {}})).await;
        run_flow(client, &base, json!({"n": 1, "permission": "store.set", "args": {"store_id": "bench", "key": "users/u1", "value": {"name": "Alice", "n": 1}}})).await;
    });
    (kernel, home)
}

fn row(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms over {} calls",
        pct(v, 0.5),
        pct(v, 0.95),
        pct(v, 0.99),
        v.len()
    )
}

/// 20 blocks of 100 calls after a warm-up block.
fn round_trips(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    base: &str,
    permission: &str,
    args: &Value,
) -> Vec<f64> {
    let inputs = json!({"n": 100, "permission": permission, "args": args});
    rt.block_on(async {
        run_flow(client, base, inputs.clone()).await;
        let mut all = Vec::new();
        for _ in 0..20 {
            all.extend(run_flow(client, base, inputs.clone()).await);
        }
        all
    })
}

/// Whether Docker and the pack image are there (strict mode can run).
fn strict_available() -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_rumi"))
        .args(["image", "show"])
        .env("RUMI_HOME", std::env::temp_dir())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn main() {
    let (c, rt) = setup();
    drop(c);
    let mut summary = Summary::default();
    let client = reqwest::Client::new();
    let store_get = json!({"store_id": "bench", "key": "users/u1"});
    {
        let (kernel, _home) = prepare(&rt, &client, &["--permissive"]);
        let base = kernel.base.clone();
        let mut v = round_trips(&rt, &client, &base, "store.get", &store_get);
        summary.add(
            "store.get round trip from a block, permissive (target p50 <= 0.15 ms)",
            row(&mut v),
        );
        let mut v = round_trips(
            &rt,
            &client,
            &base,
            "secrets.get",
            &json!({"key": "BENCH_KEY"}),
        );
        summary.add(
            "secrets.get round trip from a block, permissive",
            row(&mut v),
        );
        let mut v = round_trips(&rt, &client, &base, "bench.echo", &json!({"x": 1}));
        summary.add(
            "third-party handler round trip from a block through its warm worker (target p50 <= 0.5 ms)",
            row(&mut v),
        );
        // 8 blocks at once (8 workers of the pack), 2000 store.get calls each.
        let t = Instant::now();
        let total: usize = rt.block_on(async {
            let runs = (0..8).map(|_| {
                run_flow(
                    &client,
                    &base,
                    json!({"n": 2000, "permission": "store.get", "args": store_get.clone()}),
                )
            });
            futures_util::future::join_all(runs)
                .await
                .iter()
                .map(Vec::len)
                .sum()
        });
        summary.add(
            "store.get calls/s from 8 concurrent blocks, permissive",
            format!("{:.0}", total as f64 / t.elapsed().as_secs_f64()),
        );
        summary.add(
            "kernel RSS after the runs",
            format!("{} KiB", rss_kib(kernel.child.id())),
        );
    }
    if strict_available() {
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                "docker ps -aq --filter label=rumi.pack_id=cap_bench | xargs -r docker rm -f",
            ])
            .output();
        let (kernel, _home) = prepare(&rt, &client, &[]);
        let base = kernel.base.clone();
        let mut v = round_trips(&rt, &client, &base, "store.get", &store_get);
        summary.add(
            "store.get round trip from a block in its container, strict",
            row(&mut v),
        );
        drop(kernel);
        // The kernel was killed: its container is this bench's to remove.
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                "docker ps -aq --filter label=rumi.pack_id=cap_bench | xargs -r docker rm -f",
            ])
            .output();
    } else {
        summary.add(
            "strict",
            "SKIPPED: needs Docker and the image (`rumi image build`)".into(),
        );
    }
    finish(
        &summary,
        "rumi capability bench summary",
        "rumi-bench-capability.json",
    );
}
