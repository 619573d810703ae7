//! The scheduler's soak bench (not a timed test): 100 interval schedules (10–19 s, so ticks
//! spread) run in the real `Scheduler` actor on the system clock for `SCHEDULER_BENCH_SECS`
//! (default 600, i.e. 10 minutes); each scheduled "run" takes 20 ms. It reports the lateness of
//! every fire (the instant the run started minus the instant it was due: p50, p99, max), the number
//! of fires and skips, and the process's RSS after warm-up (20 s), at the end and at its highest
//! (flat memory: the difference does not grow with the duration; it includes the bench's own list
//! of lateness samples, 8 bytes a fire). Every 30 s the catalog is published again
//! unchanged, as a reload would, which must keep every plan. The target is p99 ≤ 50 ms.
//!
//! `cargo bench --bench scheduler` (10 min), or `SCHEDULER_BENCH_SECS=60 cargo bench --bench
//! scheduler` for a quick look.

mod support;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use rumi_actors::scheduler::{CatalogSource, GetSchedules, Runner, Scheduler, SystemWallClock};
use rumi_domain::catalog::schedule::LastRun;
use rumi_domain::catalog::{build, Catalog, Sources};
use rumi_domain::flow::{parse_flow, FlowOrigin, SourceRank};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{pct, Summary};

const SCHEDULES: usize = 100;

/// A catalog the bench publishes by hand.
struct Published {
    catalog: Mutex<Arc<Catalog>>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl CatalogSource for Published {
    fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.lock().unwrap())
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

fn catalog() -> Catalog {
    let flows = (0..SCHEDULES)
        .map(|i| {
            parse_flow(
                &format!(
                    "flow_id: bench{i}\nschedule: {{interval: {}}}\nphases: [m]\n",
                    10 + i % 10
                ),
                FlowOrigin {
                    rank: SourceRank::Shared,
                    path: format!("s/bench{i}.flow.yaml"),
                    pack_id: None,
                },
            )
        })
        .collect();
    build(Sources {
        flows,
        ..Default::default()
    })
}

/// A recipient for the audit entries of skipped ticks (none are expected).
struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<rumi_actors::audit::Record> for Sink {
    type Result = ();
    fn handle(&mut self, _: rumi_actors::audit::Record, _: &mut Context<Self>) {}
}

fn main() {
    let secs: u64 = std::env::var("SCHEDULER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let pid = std::process::id();
    let mut summary = Summary::default();
    let late_ms: Rc<RefCell<Vec<f64>>> = Rc::default();
    let (rss_start, rss_end, rss_max, skipped) = actix::System::new().block_on({
        let late_ms = Rc::clone(&late_ms);
        async move {
            let source = Arc::new(Published {
                catalog: Mutex::new(Arc::new(catalog())),
                generation: tokio::sync::watch::Sender::new(0),
            });
            let samples = Rc::clone(&late_ms);
            let runner: Runner = Rc::new(move |flow_id: String, due: DateTime<Utc>| {
                let late = (Utc::now() - due).num_microseconds().unwrap_or(i64::MAX);
                samples.borrow_mut().push(late as f64 / 1000.0);
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    LastRun {
                        run_id: Some(flow_id),
                        status: "succeeded".into(),
                        ts: Utc::now().to_rfc3339(),
                    }
                })
            });
            let scheduler = Scheduler::new(
                Arc::clone(&source) as Arc<dyn CatalogSource>,
                Sink.start().recipient(),
                Arc::new(SystemWallClock),
                runner,
            )
            .start();
            let warm_up = secs.min(20);
            let mut rss_start = 0;
            let mut rss_max = 0;
            for s in 1..=secs {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if s % 30 == 0 {
                    // A reload that changes nothing.
                    *source.catalog.lock().unwrap() = Arc::new(catalog());
                    source.generation.send_modify(|g| *g += 1);
                }
                let rss = support::rss_kib(pid);
                if s == warm_up {
                    rss_start = rss;
                }
                rss_max = rss_max.max(rss);
            }
            let all = scheduler.send(GetSchedules).await.expect("the scheduler");
            let skipped: u64 = all.iter().map(|s| s.skipped_ticks).sum();
            (rss_start, support::rss_kib(pid), rss_max, skipped)
        }
    });
    let mut v = late_ms.borrow().clone();
    v.sort_by(f64::total_cmp);
    summary.add(
        "fires",
        format!(
            "{} over {secs} s from {SCHEDULES} interval schedules (10-19 s)",
            v.len()
        ),
    );
    summary.add(
        "lateness",
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target: p99 <= 50 ms)",
            pct(&v, 0.5),
            pct(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        ),
    );
    summary.add("skipped ticks", skipped.to_string());
    summary.add(
        "RSS",
        format!("{rss_start} KiB after warm-up, {rss_end} KiB at the end, {rss_max} KiB at most"),
    );
    support::finish(&summary, "scheduler soak", "bench-scheduler.json");
    assert!(
        pct(&v, 0.99) <= 50.0,
        "p99 lateness {:.2} ms is over 50 ms",
        pct(&v, 0.99)
    );
}
