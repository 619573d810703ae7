//! What the benchmarks share: the release kernel started over loopback, a JSON POST with the
//! token, percentiles, RSS, and the printed summary.
#![allow(dead_code)]

use criterion::Criterion;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "bench-token";

pub struct Kernel {
    pub child: Child,
    pub base: String,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the release binary: `serve` plus `args` (e.g. `--permissive`), with `env` added.
pub fn start_with(
    home: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    trace: Option<&Path>,
) -> (Kernel, Instant) {
    let t0 = Instant::now();
    // BENCH_RUMI_BIN=<path> measures another build of the kernel (an A/B of two commits in one
    // session); BENCH_KERNEL_CPUS=0 runs the kernel (and so its workers) under `taskset -c 0`.
    let bin = std::env::var("BENCH_RUMI_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rumi").into());
    let mut cmd = match std::env::var("BENCH_KERNEL_CPUS") {
        Ok(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpus, &bin]);
            c
        }
        Err(_) => Command::new(&bin),
    };
    cmd.arg("serve")
        .args(args)
        .env("RUMI_HOME", home)
        .env("RUMI_API_PORT", "0")
        .env("RUMI_API_TOKEN", TOKEN)
        .env("RUMI_LOG", "error")
        .env("RUMI_FLOW_QUEUE_LIMIT", "1000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(t) = trace {
        cmd.env("RUMI_TRACE", format!("chrome:{}", t.display()));
    }
    let mut child = cmd.spawn().expect("start rumi");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("kernel output").unwrap();
        if let Some(rest) = line.strip_prefix("rumi listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    (Kernel { child, base }, t0)
}

pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> Result<Value, String> {
    let r = c
        .post(url)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if status.is_success() && v["success"] == true {
        Ok(v)
    } else {
        Err(format!("{status}: {v}"))
    }
}

/// The image a strict kernel would use, if Docker and the image are there.
pub fn strict_image() -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_rumi"))
        .args(["image", "show"])
        .env("RUMI_HOME", std::env::temp_dir())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("image: ").map(str::to_string))
}

/// A GET whose answer must be a success; its body is read whole.
pub async fn get(c: &reqwest::Client, url: &str) -> Result<(), String> {
    let r = c.get(url).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    r.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

/// Approves a pack of the running kernel.
pub async fn approve(c: &reqwest::Client, base: &str, pack: &str) {
    post(c, &format!("{base}/api/packs/{pack}/approve"), &json!({}))
        .await
        .expect("approve");
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system, seconds) used so far by process `pid` (all its threads) and by its
/// live children (the pack workers), from `/proc`.
pub fn cpu_secs(pid: u32) -> f64 {
    let ticks = |pid: &str| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                Some(rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?)
            })
            .unwrap_or(0.0)
    };
    let mut total = ticks(&pid.to_string());
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace() {
                total += ticks(child);
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    total / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Context switches so far of the kernel's threads and its pack workers (`/proc`, voluntary and
/// not): each thread hand-off on the block path is one, so their count per run shows the
/// hand-offs without the noise of timing.
pub fn switches(pid: u32) -> u64 {
    let of = |status: std::path::PathBuf| -> u64 {
        std::fs::read_to_string(status)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            total += of(t.path().join("status"));
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace() {
                total += of(std::path::PathBuf::from(format!("/proc/{child}/status")));
            }
        }
    }
    total
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Default)]
pub struct Summary {
    pub rows: Vec<(String, String)>,
}

impl Summary {
    pub fn add(&mut self, k: &str, v: String) {
        println!("  >> {k}: {v}");
        self.rows.push((k.to_string(), v));
    }
}

/// Criterion with the settings every bench here uses, and a two-thread runtime for the client.
pub fn setup() -> (Criterion, tokio::runtime::Runtime) {
    let c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    (c, rt)
}

/// Latency of one flow over HTTP (criterion samples, plus p50/p95/p99 of every request and the
/// p50 of the time inside the FlowRun) into the summary; answers the p50 in milliseconds.
pub fn latency_bench(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    base: &str,
    name: &str,
    flow: &str,
    summary: &mut Summary,
) -> f64 {
    latency_bench_cpu(c, rt, client, (base, None), name, flow, summary)
}

/// [`latency_bench`], also reporting the kernel's CPU time per run (its threads and its pack
/// workers, from `/proc`) when its `pid` is given.
pub fn latency_bench_cpu(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    (base, pid): (&str, Option<u32>),
    name: &str,
    flow: &str,
    summary: &mut Summary,
) -> f64 {
    let url = format!("{base}/api/flows/{flow}/run");
    let cpu0 = pid.map(|p| (cpu_secs(p), switches(p)));
    let body = json!({"inputs": {"name": "bench"}});
    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
    let inner = Arc::new(Mutex::new(Vec::<f64>::new()));
    let (s2, i2) = (samples.clone(), inner.clone());
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let v = post(client, &url, &body).await.expect("run");
                    let d = t.elapsed();
                    total += d;
                    s2.lock().unwrap().push(d.as_secs_f64() * 1000.0);
                    i2.lock()
                        .unwrap()
                        .push(v["data"]["execution_time_ms"].as_f64().unwrap_or(f64::NAN));
                }
                total
            })
        })
    });
    let mut v = samples.lock().unwrap().clone();
    v.sort_by(f64::total_cmp);
    let mut inner = inner.lock().unwrap().clone();
    inner.sort_by(f64::total_cmp);
    let cpu = match (pid, cpu0) {
        (Some(pid), Some((c0, s0))) if !v.is_empty() => format!(
            ", kernel CPU {:.1} µs and {:.1} thread switches per run",
            (cpu_secs(pid) - c0) * 1e6 / v.len() as f64,
            switches(pid).saturating_sub(s0) as f64 / v.len() as f64
        ),
        _ => String::new(),
    };
    summary.add(
        name,
        format!(
            "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms over {} requests (inside the FlowRun: p50 {:.3} ms){cpu}",
            pct(&v, 0.5),
            pct(&v, 0.95),
            pct(&v, 0.99),
            v.len(),
            pct(&inner, 0.5)
        ),
    );
    pct(&v, 0.5)
}

/// Writes the summary rows to `target/<file>` as JSON and prints them as a table.
pub fn finish(summary: &Summary, title: &str, file: &str) {
    println!("\n== {title} ==");
    for (k, v) in &summary.rows {
        println!("{k:<44} {v}");
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(file);
    let rows: Vec<Value> = summary
        .rows
        .iter()
        .map(|(k, v)| json!({"metric": k, "value": v}))
        .collect();
    let _ = std::fs::write(out, serde_json::to_vec_pretty(&rows).unwrap_or_default());
}
