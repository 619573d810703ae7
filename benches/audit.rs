//! `GET /api/audit` on a large day: builds a `flow_execution` day file of `AUDIT_BENCH_MB` MiB
//! (default 120) in a temporary directory and measures the reader behind the endpoint
//! (`rumi_actors::audit_query::query`, what the edge runs on a blocking thread) for `limit=1`,
//! `limit=100` and a page further back through a `before` cursor. It prints the bytes each query
//! read and the process's peak RSS (`VmHWM` in /proc/self/status) before and after the queries:
//! the delta is the memory a query needs. `AUDIT_BENCH_BASELINE=1` also times the previous
//! approach (read every line, parse, sort) once, for comparison (seconds and ~1 GB on 168 MB).
//! `cargo bench --bench audit`.

use criterion::Criterion;
use rumi_actors::audit::Category;
use rumi_actors::audit_query::{query, AuditQuery, Cursor};
use serde_json::Value;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const DATE: &str = "2026-11-21";

/// A field of /proc/self/status in KiB (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Writes entries shaped like the kernel's `flow_run` entries until the file holds `bytes`.
fn build_day(dir: &Path, bytes: u64) -> (u64, u64) {
    let path = dir.join(format!("flow_execution_{DATE}.jsonl"));
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
    let (mut written, mut lines) = (0u64, 0u64);
    while written < bytes {
        let ms = lines / 20; // twenty entries per millisecond: plenty of ts ties
        let line = format!(
            "{{\"ts\":\"{DATE}T{:02}:{:02}:{:02}.{:03}Z\",\"category\":\"flow_execution\",\"severity\":\"info\",\"action\":\"flow_run\",\"success\":true,\"flow_id\":\"hello\",\"run_id\":\"{:032x}\",\"details\":{{\"execution_time_ms\":0.412,\"status\":\"succeeded\",\"steps\":1,\"trigger\":\"api\"}},\"execution_mode\":\"permissive\"}}\n",
            (ms / 3_600_000) % 24,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
            lines
        );
        out.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        lines += 1;
    }
    out.flush().unwrap();
    (written, lines)
}

fn q(limit: usize, before: Option<Cursor>) -> AuditQuery {
    AuditQuery {
        category: Some(Category::FlowExecution),
        date: Some(DATE.into()),
        limit,
        before,
        after: None,
    }
}

/// The previous implementation: every line read, parsed and sorted, then the last `limit` kept.
fn whole_day(dir: &Path, limit: usize) -> usize {
    let f = std::fs::File::open(dir.join(format!("flow_execution_{DATE}.jsonl"))).unwrap();
    let mut entries: Vec<Value> = BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    entries.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
    entries.len().saturating_sub(limit)
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mib: u64 = std::env::var("AUDIT_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = Instant::now();
    let (bytes, lines) = build_day(dir, mib << 20);
    println!(
        "audit bench: built a {:.0} MiB day of {lines} entries in {:.1} s",
        bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let hwm_before = status_kib("VmHWM");
    let t = Instant::now();
    let first = query(dir, &q(1, None)).unwrap();
    let first_time = t.elapsed();
    let back = query(dir, &q(100, first.before.clone())).unwrap();
    let hwm_after = status_kib("VmHWM");
    println!(
        "audit bench: limit=1 first query {:.3} ms, read {} bytes; limit=100 behind a cursor read {} bytes",
        first_time.as_secs_f64() * 1000.0,
        first.bytes_read,
        back.bytes_read
    );
    println!(
        "audit bench: peak RSS (VmHWM) {hwm_before} KiB before the queries, {hwm_after} KiB after: +{} KiB",
        hwm_after.saturating_sub(hwm_before)
    );

    c.bench_function("audit_limit_1", |b| {
        b.iter(|| query(dir, &q(1, None)).unwrap())
    });
    c.bench_function("audit_limit_100", |b| {
        b.iter(|| query(dir, &q(100, None)).unwrap())
    });
    let cursor = first.before.clone();
    c.bench_function("audit_limit_100_before_cursor", |b| {
        b.iter(|| query(dir, &q(100, cursor.clone())).unwrap())
    });
    println!(
        "audit bench: peak RSS after the measured queries {} KiB (+{} KiB over the start)",
        status_kib("VmHWM"),
        status_kib("VmHWM").saturating_sub(hwm_before)
    );

    if std::env::var("AUDIT_BENCH_BASELINE").as_deref() == Ok("1") {
        let t = Instant::now();
        whole_day(dir, 1);
        println!(
            "audit bench: the previous whole-day read took {:.2} s; peak RSS now {} KiB (+{} KiB)",
            t.elapsed().as_secs_f64(),
            status_kib("VmHWM"),
            status_kib("VmHWM").saturating_sub(hwm_before)
        );
    }
    c.final_summary();
}
