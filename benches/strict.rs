//! Strict mode: a 1-step block flow over HTTP with the pack's container warm (target p50 ≤ 3 ms),
//! the cold first call (the container starts on it), and, side by side, the same block run the
//! way the original did it — one `docker run` per call — so the gain shows as a ratio.
//! Run with `cargo bench --bench strict` (needs Docker and `rumi image build`; skips otherwise).
//! The summary is printed and written to `target/rumi-bench-strict.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use serde_json::json;
use std::process::Command;
use std::time::Instant;
use support::*;

fn main() {
    let Some(image) = strict_image() else {
        println!("SKIPPED: strict-mode benchmarks need Docker and the image (`rumi image build`)");
        return;
    };
    let (mut c, rt) = setup();
    let mut summary = Summary::default();
    let home = common::fresh_home();
    let _ = Command::new("docker")
        .args(["rm", "-f", "rumi-pack-my_pack"])
        .output();
    let (kernel, _) = start_with(home.path(), &[], &[], None);
    let client = reqwest::Client::new();
    let run_url = format!("{}/api/flows/hello/run", kernel.base);
    let body = json!({"inputs": {"name": "bench"}});
    rt.block_on(async {
        approve(&client, &kernel.base, "my_pack").await;
    });

    // Cold: remove the container, then time the call that starts a new one.
    let mut cold = Vec::new();
    for _ in 0..10 {
        rt.block_on(async {
            client
                .delete(format!("{}/api/containers/my_pack", kernel.base))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("delete container");
            let t = Instant::now();
            post(&client, &run_url, &body).await.expect("cold run");
            cold.push(t.elapsed().as_secs_f64() * 1000.0);
        });
    }
    cold.sort_by(f64::total_cmp);
    summary.add(
        "strict cold first call (container start)",
        format!(
            "p50 {:.1} ms, max {:.1} ms over {} starts",
            pct(&cold, 0.5),
            pct(&cold, 1.0),
            cold.len()
        ),
    );
    rt.block_on(async {
        for _ in 0..50 {
            post(&client, &run_url, &body).await.expect("warm-up");
        }
    });
    let warm_p50 = latency_bench(
        &mut c,
        &rt,
        &client,
        &kernel.base,
        "strict_flow_1_step_block_warm",
        "hello",
        &mut summary,
    );
    drop(kernel);
    // The kernel was killed, not stopped: remove what it left.
    let _ = Command::new("docker")
        .args(["rm", "-f", "rumi-pack-my_pack"])
        .output();

    // The original's way: a container per call, with the same flags and the same block.
    let pack = home.path().join("ecosystem/my_pack");
    let mount = format!("type=bind,source={},target=/pack,readonly", pack.display());
    let script = "import json, sys; sys.path.insert(0, '/pack/backend/blocks'); import hello; print(json.dumps(hello.run({'name': 'bench'})))";
    let mut per_call = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let out = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network=none",
                "--read-only",
                "--cap-drop=ALL",
                "--security-opt=no-new-privileges",
                "--user=65534:65534",
                "--memory=256m",
                "--pids-limit=100",
                "--cpus=0.5",
                "--tmpfs=/tmp",
                "--mount",
                &mount,
                &image,
                "python3",
                "-B",
                "-c",
                script,
            ])
            .output()
            .expect("docker run");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Hello"),
            "docker run per call failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        per_call.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    per_call.sort_by(f64::total_cmp);
    let per_call_p50 = pct(&per_call, 0.5);
    summary.add(
        "container per call (docker run, same block)",
        format!(
            "p50 {:.1} ms, max {:.1} ms over {} runs",
            per_call_p50,
            pct(&per_call, 1.0),
            per_call.len()
        ),
    );
    summary.add(
        "warm container vs container per call",
        format!("{:.0}x faster at p50", per_call_p50 / warm_p50),
    );
    c.final_summary();
    finish(
        &summary,
        "rumi strict-mode bench summary",
        "rumi-bench-strict.json",
    );
}
