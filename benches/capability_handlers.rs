//! One call through a third-party capability handler's warm worker (contract §7.2): the
//! `Execute` message to its `CapabilityHandler` actor, the pipe round trip to
//! `rumi_handlerhost.py` and `execute(context, args)` — what the broker adds to a capability
//! call once its checks passed. Target: p50 ≤ 0.5 ms. `cargo bench --bench capability_handlers`.

use actix::prelude::*;
use criterion::Criterion;
use rumi_actors::capability::handler::{CapabilityHandler, Execute, HandlerSpec};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

const SOURCE: &str =
    "def execute(context, args):\n    return {'success': True, 'echo': args.get('x')}\n";

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("py");
    rumi_actors::blockhost::install(&runtime).unwrap();
    let spec = HandlerSpec {
        handler_id: "bench".into(),
        permission_id: "bench.echo".into(),
        python: python(),
        host_script: runtime.join("rumi_handlerhost.py"),
        handler_dir: tmp.path().join("handlers/bench"),
        home: tmp.path().join("homes/bench"),
        source: Arc::from(SOURCE),
        function: "execute".into(),
        redactor: None,
    };
    let sys = System::new();
    let (addr, arbiter) = sys.block_on(async {
        let arbiter = Arbiter::new();
        let addr = CapabilityHandler::start_in_arbiter(&arbiter.handle(), move |_| {
            CapabilityHandler::new(spec)
        });
        (addr, arbiter)
    });
    let msg = || Execute {
        context: json!({"principal_id": "p", "permission_id": "bench.echo", "handler_id": "bench",
                        "grant_config": {}, "request_id": "r", "ts": "2026-01-01T00:00:00Z"}),
        args: json!({"x": 1}).as_object().cloned().unwrap(),
        timeout: Duration::from_secs(10),
    };
    // Warm, then the distribution of single calls.
    let mut samples = sys.block_on(async {
        for _ in 0..50 {
            addr.send(msg()).await.unwrap().unwrap();
        }
        let mut s = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let t = Instant::now();
            addr.send(msg()).await.unwrap().unwrap();
            s.push(t.elapsed());
        }
        s
    });
    samples.sort();
    println!(
        "capability_handler_call: p50 {:?}, p90 {:?}, p99 {:?} (target p50 ≤ 0.5 ms)",
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() * 99 / 100]
    );
    c.bench_function("capability_handler_call", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    addr.send(msg()).await.unwrap().unwrap();
                }
                t.elapsed()
            })
        })
    });
    drop(arbiter);
    c.final_summary();
}
