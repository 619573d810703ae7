//! Criterion benchmarks of the kernel over loopback HTTP with keep-alive, permissive mode, against
//! the real release binary (contract: issue "Kernel spine"). Run with `cargo bench --bench kernel`.
//!
//! Measured: a 1-step block flow, a 5-step block flow and a `set`-only flow (latency, with p50 /
//! p95 / p99 printed from every sample), throughput with 10 and 50 concurrent clients (failures
//! and p99 counted), kernel RSS idle and under load, and start-up to the first successful flow
//! run. A summary table is printed at the end and written to `target/rumi-bench-summary.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use criterion::{Criterion, Throughput};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn bench_home() -> tempfile::TempDir {
    let dir = common::fresh_home();
    let flows = dir.path().join("user_data/shared/flows");
    std::fs::write(
        flows.join("five.flow.yaml"),
        "flow_id: five\nphases: [m]\nsteps:\n".to_string()
            + &(0..5)
                .map(|i| format!("  - {{id: s{i}, phase: m, priority: {i}, type: python_file_call, owner_pack: my_pack, file: blocks/hello.py, input: {{name: \"${{ctx.name}}\"}}, output: g{i}}}\n"))
                .collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        flows.join("set_only.flow.yaml"),
        "flow_id: set_only\nphases: [m]\nsteps:\n  - {id: a, phase: m, type: set, input: {key: greeting, value: \"Hello, ${ctx.name}!\"}}\n",
    )
    .unwrap();
    dir
}

fn start(home: &Path, trace: Option<&Path>) -> (Kernel, Instant) {
    start_with(home, &["--permissive"], &[], trace)
}

fn throughput_bench(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    base: &str,
    clients: usize,
    pid: u32,
    summary: &mut Summary,
) {
    let url = Arc::new(format!("{base}/api/flows/hello/run"));
    let per_iter = 200u64;
    let lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let failures = Arc::new(Mutex::new(0u64));
    let peak_rss = Arc::new(Mutex::new(0u64));
    let totals = Arc::new(Mutex::new((0u64, Duration::ZERO)));
    let totals2 = totals.clone();
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Elements(per_iter));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    // One connection pool per client task, as real independent clients would have.
    let pool: Vec<reqwest::Client> = (0..clients).map(|_| reqwest::Client::new()).collect();
    let pool = Arc::new(pool);
    g.bench_function(format!("hello_flow_{clients}_clients"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let mut tasks = Vec::new();
                    for ci in 0..clients {
                        let (url, lat, failures, pool) =
                            (url.clone(), lat.clone(), failures.clone(), pool.clone());
                        let n = per_iter as usize / clients
                            + usize::from(ci < per_iter as usize % clients);
                        tasks.push(tokio::spawn(async move {
                            let body = json!({"inputs": {"name": "load"}});
                            for _ in 0..n {
                                let t = Instant::now();
                                match post(&pool[ci], &url, &body).await {
                                    Ok(_) => {
                                        lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0)
                                    }
                                    Err(_) => *failures.lock().unwrap() += 1,
                                }
                            }
                        }));
                    }
                    for task in tasks {
                        task.await.unwrap();
                    }
                    total += t.elapsed();
                    {
                        let mut tt = totals2.lock().unwrap();
                        tt.0 += per_iter;
                        tt.1 += t.elapsed();
                    }
                    let r = rss_kib(pid);
                    let mut p = peak_rss.lock().unwrap();
                    *p = (*p).max(r);
                }
                total
            })
        })
    });
    g.finish();
    let mut v = lat.lock().unwrap().clone();
    v.sort_by(f64::total_cmp);
    let failed = *failures.lock().unwrap();
    let peak = *peak_rss.lock().unwrap();
    let (requests, wall) = *totals.lock().unwrap();
    let rate = requests as f64 / wall.as_secs_f64();
    summary.add(
        &format!("throughput {clients} clients"),
        format!(
            "{:.0} flows/s, p50 {:.3} ms, p99 {:.3} ms, {} failed of {}, peak kernel RSS {:.1} MiB",
            rate,
            pct(&v, 0.5),
            pct(&v, 0.99),
            failed,
            v.len() as u64 + failed,
            peak as f64 / 1024.0
        ),
    );
}

fn main() {
    let (mut c, rt) = setup();
    let mut summary = Summary::default();

    let home = bench_home();
    let (kernel, _) = start(home.path(), None);
    let pid = kernel.child.id();
    let client = reqwest::Client::new();
    rt.block_on(async {
        for pack in ["my_pack", "text_tools"] {
            post(
                &client,
                &format!("{}/api/packs/{pack}/approve", kernel.base),
                &json!({}),
            )
            .await
            .expect("approve");
        }
        for _ in 0..50 {
            post(
                &client,
                &format!("{}/api/flows/hello/run", kernel.base),
                &json!({"inputs": {}}),
            )
            .await
            .expect("warm-up");
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    summary.add(
        "kernel RSS idle (after warm-up)",
        format!("{:.1} MiB", rss_kib(pid) as f64 / 1024.0),
    );

    // The HTTP floor: an authenticated-free GET answered without any actor.
    let health = format!("{}/api/health", kernel.base);
    let hs = Arc::new(Mutex::new(Vec::<f64>::new()));
    let h2 = hs.clone();
    c.bench_function("http_health", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let r = client.get(&health).send().await.expect("health");
                    r.bytes().await.expect("health body");
                    let d = t.elapsed();
                    total += d;
                    h2.lock().unwrap().push(d.as_secs_f64() * 1000.0);
                }
                total
            })
        })
    });
    let mut v = hs.lock().unwrap().clone();
    v.sort_by(f64::total_cmp);
    summary.add(
        "http_health (floor)",
        format!("p50 {:.3} ms, p95 {:.3} ms", pct(&v, 0.5), pct(&v, 0.95)),
    );
    for (name, flow) in [
        ("flow_1_step_block", "hello"),
        ("flow_5_step_block", "five"),
        ("flow_set_only", "set_only"),
    ] {
        latency_bench(&mut c, &rt, &client, &kernel.base, name, flow, &mut summary);
    }
    throughput_bench(&mut c, &rt, &kernel.base, 10, pid, &mut summary);
    throughput_bench(&mut c, &rt, &kernel.base, 50, pid, &mut summary);
    summary.add(
        "kernel RSS after load",
        format!("{:.1} MiB", rss_kib(pid) as f64 / 1024.0),
    );
    drop(kernel);

    // Start-up to the first successful flow run, packs already approved (a restart).
    let startup = Arc::new(Mutex::new(Vec::<f64>::new()));
    let s2 = startup.clone();
    let mut g = c.benchmark_group("startup");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("start_to_first_flow_run", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (k, t0) = start(home.path(), None);
                let c2 = reqwest::Client::new();
                rt.block_on(async {
                    post(
                        &c2,
                        &format!("{}/api/flows/hello/run", k.base),
                        &json!({"inputs": {"name": "x"}}),
                    )
                    .await
                    .expect("first run");
                });
                let d = t0.elapsed();
                s2.lock().unwrap().push(d.as_secs_f64() * 1000.0);
                total += d;
                drop(k);
            }
            total
        })
    });
    g.finish();
    let mut v = startup.lock().unwrap().clone();
    v.sort_by(f64::total_cmp);
    summary.add(
        "start-up to first successful flow run",
        format!("p50 {:.1} ms, max {:.1} ms", pct(&v, 0.5), pct(&v, 1.0)),
    );

    c.final_summary();
    finish(
        &summary,
        "rumi kernel bench summary",
        "rumi-bench-summary.json",
    );
}
