//! What a pack route adds over running the same flow through `POST /api/flows/{id}/run` (contract
//! §11): the same `set`-only flow, the same inputs, one keep-alive HTTP client, the two requests
//! interleaved so both see the same machine. Target: the route's p50 at most 0.05 ms above the
//! run endpoint's. Run with `cargo bench --bench routes`; the summary is printed and written to
//! `target/rumi-bench-routes.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use serde_json::{json, Value};
use std::time::Instant;
use support::*;

/// Requests of each kind measured (after as many for warm-up).
const N: usize = 3000;

fn main() {
    let (_c, rt) = setup();
    let mut summary = Summary::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    common::make_pack(home, "web", &[]);
    common::write(
        home,
        "ecosystem/web/backend/flows/greet.flow.yaml",
        "flow_id: web.greet\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: greeting, value: \"Hello, ${ctx.name}!\"}}\n",
    );
    common::write(
        home,
        "ecosystem/web/backend/routes.json",
        r#"{"routes": [{"method": "POST", "path": "/api/web/greet", "flow_id": "web.greet"}]}"#,
    );
    let (kernel, _) = start_with(home, &["--permissive"], &[], None);
    let client = reqwest::Client::new();
    let base = kernel.base.clone();
    let inputs = json!({"name": "bench"});
    let (api, route) = rt.block_on(async {
        approve(&client, &base, "web").await;
        let run_url = format!("{base}/api/flows/web.greet/run");
        let route_url = format!("{base}/api/web/greet");
        let run_body = json!({ "inputs": inputs });
        let mut api = Vec::with_capacity(N);
        let mut route = Vec::with_capacity(N);
        for i in 0..2 * N {
            let t = Instant::now();
            let v: Value = post(&client, &run_url, &run_body).await.expect("run");
            let d_api = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(v["data"]["result"]["greeting"], "Hello, bench!");
            let t = Instant::now();
            let v: Value = post(&client, &route_url, &inputs).await.expect("route");
            let d_route = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(v["data"]["greeting"], "Hello, bench!");
            if i >= N {
                api.push(d_api);
                route.push(d_route);
            }
        }
        (api, route)
    });
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let (api, route) = (sorted(api), sorted(route));
    let line = |v: &[f64]| {
        format!(
            "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms over {} requests",
            pct(v, 0.5),
            pct(v, 0.95),
            pct(v, 0.99),
            v.len()
        )
    };
    summary.add("POST /api/flows/web.greet/run", line(&api));
    summary.add("POST /api/web/greet (pack route)", line(&route));
    let added = pct(&route, 0.5) - pct(&api, 0.5);
    summary.add(
        "route p50 over run p50",
        format!(
            "{added:+.3} ms ({})",
            if added <= 0.05 {
                "within the 0.05 ms target"
            } else {
                "OVER the 0.05 ms target"
            }
        ),
    );
    finish(&summary, "Pack route overhead", "rumi-bench-routes.json");
}
