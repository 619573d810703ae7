//! The egress proxy: the latency it adds to one request over the same request sent directly
//! (target ≤ 0.5 ms at p50), and requests/s through one pack's socket. Both sides open a fresh
//! connection per request to the same local upstream (127.0.0.2, opened with
//! `RUMI_EGRESS_ALLOW_CIDRS`); the proxy path is the real kernel (release build): the pack's
//! socket, its `EgressConnection` actor, every check of §6, the upstream hop and the audit entry.
//! Run with `cargo bench --bench egress`; the summary goes to `target/rumi-bench-egress.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// One GET straight to the upstream, on a fresh connection.
fn direct(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET /hop/0 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(out.ends_with(b"landed"));
}

/// The same GET through the pack's egress socket.
fn proxied(sock: &Path, frame: &[u8]) {
    let r = common::socket_exchange(sock, frame).expect("a proxy answer");
    assert_eq!(r["body"], "landed", "{r}");
}

fn timed(c: &mut criterion::Criterion, name: &str, mut f: impl FnMut()) -> Vec<f64> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&samples);
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                f();
                let d = t.elapsed();
                total += d;
                s2.lock().unwrap().push(d.as_secs_f64() * 1000.0);
            }
            total
        })
    });
    let mut v = samples.lock().unwrap().clone();
    v.sort_by(f64::total_cmp);
    v
}

/// Requests/s from `clients` threads for `secs` seconds.
fn throughput(clients: usize, secs: u64, f: impl Fn() + Send + Sync + 'static) -> f64 {
    let f = Arc::new(f);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (f, stop, done) = (Arc::clone(&f), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    f();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let (mut c, rt) = setup();
    let mut summary = Summary::default();
    let up = common::Upstream::start("127.0.0.2");
    let home = common::fresh_home();
    let (kernel, _) = start_with(
        home.path(),
        &["--permissive"],
        &[("RUMI_EGRESS_ALLOW_CIDRS", "127.0.0.2/32")],
        None,
    );
    let client = reqwest::Client::new();
    rt.block_on(async {
        approve(&client, &kernel.base, "my_pack").await;
        post(
            &client,
            &format!("{}/api/network/grant", kernel.base),
            &json!({"pack_id": "my_pack", "allowed_domains": ["127.0.0.2"], "allowed_ports": [up.addr.port()]}),
        )
        .await
        .expect("grant");
    });
    let sock = home.path().join("user_data/sockets/my_pack/egress.sock");
    let frame = json!({"method": "GET", "url": up.url("/hop/0")}).to_string();
    for _ in 0..200 {
        direct(up.addr);
        proxied(&sock, frame.as_bytes());
    }

    let addr = up.addr;
    let d = timed(&mut c, "egress_direct_request", || direct(addr));
    let p = timed(&mut c, "egress_via_proxy", || {
        proxied(&sock, frame.as_bytes())
    });
    let row = |v: &[f64]| {
        format!(
            "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms over {} requests",
            pct(v, 0.5),
            pct(v, 0.95),
            pct(v, 0.99),
            v.len()
        )
    };
    summary.add("direct request (fresh connection)", row(&d));
    summary.add("through the egress proxy", row(&p));
    summary.add(
        "added by the proxy at p50 (target <= 0.5 ms)",
        format!("{:.3} ms", pct(&p, 0.5) - pct(&d, 0.5)),
    );
    for clients in [1, 8] {
        let (s2, f2) = (sock.clone(), frame.clone());
        let rps = throughput(clients, 4, move || proxied(&s2, f2.as_bytes()));
        summary.add(
            &format!("requests/s through one pack socket, {clients} client(s)"),
            format!("{rps:.0}"),
        );
    }
    let rps = throughput(8, 4, move || direct(addr));
    summary.add("requests/s direct, 8 clients", format!("{rps:.0}"));
    summary.add(
        "kernel RSS after the runs",
        format!("{} KiB", rss_kib(kernel.child.id())),
    );
    c.final_summary();
    finish(
        &summary,
        "rumi egress bench summary",
        "rumi-bench-egress.json",
    );
}
