//! The `Scheduler` actor (contract §10): owns one [`Slot`] per flow that has a `schedule` — its
//! plan, next fire time, whether a scheduled run of it is running, its last run and its skipped
//! ticks — and starts scheduled runs.
//!
//! It reads the schedules from the published catalog ([`KernelView::catalog`]) and re-plans on
//! every publication ([`KernelView::subscribe`]: reload, approval…): a new schedule is planned
//! from now, an unchanged one keeps its next fire time and its state, a removed flow's slot goes.
//! The rules of one slot (skip while running, a late tick fires once) are the domain's
//! ([`rumi_domain::catalog::schedule`]); this file only holds the state, keeps one timer armed
//! for the earliest fire, and starts runs through a [`Runner`] (the kernel's passes the
//! concurrency limiter like every trigger and records `trigger: schedule`).
//!
//! Time comes from a [`WallClock`], so tests drive the actor with a fake clock and [`Tick`].
//! Who talks to it: the kernel starts it at boot; `GET /api/schedules` asks [`GetSchedules`].

use crate::audit::{AuditEntry, Category, Record, Severity};
use crate::view::KernelView;
use actix::prelude::*;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::future::LocalBoxFuture;
use rumi_domain::catalog::schedule::{LastRun, Slot, Tick as Decision};
use rumi_domain::catalog::Catalog;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The longest the actor sleeps between two looks at the clock, so a wall-clock jump (NTP, a
/// suspended host) delays a fire by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Where "now" comes from.
pub trait WallClock {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Starts one scheduled run of a flow (its id, and the instant the tick was due) and resolves to
/// how it ended.
pub type Runner = Rc<dyn Fn(String, DateTime<Utc>) -> LocalBoxFuture<'static, LastRun>>;

/// Where the schedules come from: the published catalog and its changes ([`KernelView`] in the
/// kernel; benches feed their own).
pub trait CatalogSource {
    fn catalog(&self) -> Arc<Catalog>;
    /// Changes whenever a new catalog is published.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}

impl CatalogSource for KernelView {
    fn catalog(&self) -> Arc<Catalog> {
        KernelView::catalog(self)
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        KernelView::subscribe(self)
    }
}

// ---- messages ---------------------------------------------------------------------------------

/// Looks at the clock and starts (or skips) every schedule that is due. The actor sends it to
/// itself when its timer fires; tests send it after moving a fake clock.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// A new catalog was published: re-plan from its schedules.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Replan;

/// Every schedule, by flow id, as `GET /api/schedules` shows it.
#[derive(Message)]
#[rtype(result = "Vec<ScheduleInfo>")]
pub struct GetSchedules;

/// One schedule as the API shows it (contract §16 "Scheduler").
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleInfo {
    pub flow_id: String,
    /// The cron expression as written (cron schedules only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Seconds between runs as applied, i.e. raised to 10 (interval schedules only); for an
    /// invalid interval, the value as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<serde_json::Value>,
    /// The cron schedule's IANA time zone (`UTC` when none is written); null for an interval.
    pub timezone: Option<String>,
    /// False when the schedule cannot be planned; the flow still runs on other triggers.
    pub valid: bool,
    /// The problem with the schedule as written: why it is invalid, or what was changed (a raised
    /// interval); null when there is none.
    pub error: Option<String>,
    /// What the kernel changed or ignored in a valid schedule (a raised interval); null otherwise.
    pub note: Option<String>,
    /// The next fire time, RFC 3339 UTC; null for an invalid schedule (or a date that never comes).
    pub next_fire: Option<String>,
    /// The last scheduled run that ended (or could not start); null before the first.
    pub last_run: Option<LastRun>,
    /// Ticks skipped because the previous scheduled run was still running.
    pub skipped_ticks: u64,
    /// A scheduled run of the flow is running now.
    pub running: bool,
}

// ---- state ------------------------------------------------------------------------------------

/// The scheduler (see the module docs).
pub struct Scheduler {
    view: Arc<dyn CatalogSource>,
    audit: Recipient<Record>,
    clock: Arc<dyn WallClock>,
    runner: Runner,
    /// One per flow that has a schedule in the current catalog: bounded by the flows, each of
    /// constant size.
    slots: BTreeMap<String, Slot>,
    /// Flows whose schedule went (a reload) while a scheduled run of theirs was still running: if
    /// the schedule comes back before that run ends, its new slot starts as running, so the two
    /// never overlap. Bounded by the flows, emptied as those runs end.
    orphans: BTreeSet<String>,
    /// The timer armed for the earliest fire.
    timer: Option<SpawnHandle>,
}

impl Scheduler {
    pub fn new(
        view: Arc<dyn CatalogSource>,
        audit: Recipient<Record>,
        clock: Arc<dyn WallClock>,
        runner: Runner,
    ) -> Scheduler {
        Scheduler {
            view,
            audit,
            clock,
            runner,
            slots: BTreeMap::new(),
            orphans: BTreeSet::new(),
            timer: None,
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Subscribe before the first plan, so a catalog published in between is not missed.
        let mut changes = self.view.subscribe();
        let me = ctx.address();
        ctx.spawn(
            async move {
                while changes.changed().await.is_ok() {
                    me.do_send(Replan);
                }
            }
            .into_actor(self),
        );
        self.replan(ctx);
    }
}

// ---- handlers ---------------------------------------------------------------------------------

/// Starts or skips what is due, then re-arms the timer.
impl Handler<Tick> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

/// Takes the schedules of the catalog now published (nothing is caught up: new plans start from
/// now; unchanged ones keep their next fire; removed flows lose their slot).
impl Handler<Replan> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Replan, ctx: &mut Context<Self>) {
        self.replan(ctx);
    }
}

/// Every schedule, valid or not, in flow id order.
impl Handler<GetSchedules> for Scheduler {
    type Result = MessageResult<GetSchedules>;
    fn handle(&mut self, _: GetSchedules, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.slots.values().map(info).collect())
    }
}

// ---- private helpers --------------------------------------------------------------------------

impl Scheduler {
    fn replan(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let catalog = self.view.catalog();
        let table = &catalog.schedules.schedules;
        let orphans = &mut self.orphans;
        self.slots.retain(|flow_id, slot| {
            let keep = table.contains_key(flow_id);
            if !keep && slot.running {
                orphans.insert(flow_id.clone());
            }
            keep
        });
        for (flow_id, schedule) in table {
            match self.slots.get_mut(flow_id) {
                Some(slot) => slot.replan(Arc::clone(schedule), now),
                None => {
                    let mut slot = Slot::new(Arc::clone(schedule), now);
                    slot.running = self.orphans.contains(flow_id);
                    self.slots.insert(flow_id.clone(), slot);
                }
            }
        }
        self.tick(ctx);
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let mut fire = Vec::new();
        for (flow_id, slot) in &mut self.slots {
            let due = slot.next_fire.unwrap_or(now);
            match slot.tick(now) {
                Decision::Wait => {}
                Decision::Fire => fire.push((flow_id.clone(), due)),
                // Every skip is audited (§16). Their number is bounded: a skip needs this flow's
                // own scheduled run still running, and at most half the concurrency limit of
                // scheduled runs run at once (the kernel's runner), so a few lines per interval.
                Decision::Skip => {
                    tracing::info!(flow_id = %flow_id, skipped_ticks = slot.skipped_ticks,
                        "scheduled tick skipped: the previous scheduled run is still running");
                    let mut entry = AuditEntry::new(Category::System, "schedule_skipped", true)
                        .severity(Severity::Warning)
                        .details(json!({
                            "reason": "the previous scheduled run of the flow is still running",
                            "skipped_ticks": slot.skipped_ticks,
                        }));
                    entry.flow_id = Some(flow_id.clone());
                    self.audit.do_send(Record(entry));
                }
            }
        }
        for (flow_id, due) in fire {
            self.start_run(flow_id, due, ctx);
        }
        self.arm(ctx);
    }

    /// Starts a run; its end (whatever it is) frees the slot for the next tick.
    fn start_run(&mut self, flow_id: String, due: DateTime<Utc>, ctx: &mut Context<Self>) {
        let run = (self.runner)(flow_id.clone(), due);
        ctx.spawn(run.into_actor(self).map(move |last, act, _| {
            act.orphans.remove(&flow_id);
            if let Some(slot) = act.slots.get_mut(&flow_id) {
                slot.finished(last);
            }
        }));
    }

    /// One timer, for the earliest fire (at most [`MAX_SLEEP`] away).
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let now = self.clock.now();
        let earliest = self.slots.values().filter_map(|s| s.next_fire).min();
        let delay = earliest
            .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        self.timer = Some(ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.tick(ctx);
        }));
    }
}

fn info(slot: &Slot) -> ScheduleInfo {
    let s = &slot.schedule;
    ScheduleInfo {
        flow_id: s.flow_id.clone(),
        cron: s.cron.clone(),
        interval: s
            .interval
            .map(serde_json::Value::from)
            .or_else(|| s.interval_written.clone()),
        timezone: s.timezone.clone(),
        valid: s.is_valid(),
        error: s.problem().map(str::to_string),
        note: s.note.clone(),
        next_fire: slot
            .next_fire
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        last_run: slot.last_run.clone(),
        skipped_ticks: slot.skipped_ticks,
        running: slot.running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use rumi_domain::catalog::{build, Sources};
    use rumi_domain::flow::{parse_flow, FlowOrigin, SourceRank};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A clock the test moves by hand.
    #[derive(Default)]
    struct FakeClock(Mutex<i64>);
    impl WallClock for FakeClock {
        fn now(&self) -> DateTime<Utc> {
            DateTime::from_timestamp(1_780_000_000 + *self.0.lock(), 0).unwrap()
        }
    }

    /// Records the audit entries it is sent.
    struct Audit(Arc<Mutex<Vec<AuditEntry>>>);
    impl Actor for Audit {
        type Context = Context<Self>;
    }
    impl Handler<Record> for Audit {
        type Result = ();
        fn handle(&mut self, r: Record, _: &mut Context<Self>) {
            self.0.lock().push(r.0);
        }
    }

    /// Runs that end when the test says so.
    type Pending = Rc<RefCell<Vec<(String, tokio::sync::oneshot::Sender<()>)>>>;

    struct Harness {
        view: Arc<KernelView>,
        clock: Arc<FakeClock>,
        audit: Arc<Mutex<Vec<AuditEntry>>>,
        runs: Pending,
        addr: Addr<Scheduler>,
    }

    fn catalog(flows: &[(&str, &str)]) -> rumi_domain::catalog::Catalog {
        let flows = flows
            .iter()
            .map(|(id, sched)| {
                parse_flow(
                    &format!("flow_id: {id}\nphases: [m]\nschedule: {sched}\n"),
                    FlowOrigin {
                        rank: SourceRank::Shared,
                        path: format!("s/{id}.flow.yaml"),
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

    async fn start(flows: &[(&str, &str)]) -> Harness {
        start_at(flows, 0).await
    }

    /// Starts the actor at `now` and waits until it planned (its first message is answered after
    /// `started`).
    async fn start_at(flows: &[(&str, &str)], now: i64) -> Harness {
        let view = Arc::new(KernelView::default());
        view.publish_catalog(catalog(flows));
        let clock = Arc::new(FakeClock(Mutex::new(now)));
        let audit: Arc<Mutex<Vec<AuditEntry>>> = Arc::default();
        let runs: Pending = Rc::default();
        let r = Rc::clone(&runs);
        let runner: Runner = Rc::new(move |flow_id: String, _due| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            r.borrow_mut().push((flow_id.clone(), tx));
            Box::pin(async move {
                let _ = rx.await;
                LastRun {
                    run_id: Some(format!("run-{flow_id}")),
                    status: "succeeded".into(),
                    ts: "t".into(),
                }
            })
        });
        let addr = Scheduler::new(
            Arc::clone(&view) as Arc<dyn CatalogSource>,
            Audit(Arc::clone(&audit)).start().recipient(),
            Arc::clone(&clock) as Arc<dyn WallClock>,
            runner,
        )
        .start();
        addr.send(GetSchedules).await.unwrap();
        Harness {
            view,
            clock,
            audit,
            runs,
            addr,
        }
    }

    impl Harness {
        async fn at(&self, secs: i64) {
            *self.clock.0.lock() = secs;
            self.addr.send(Tick).await.unwrap();
        }
        async fn get(&self, flow_id: &str) -> Option<ScheduleInfo> {
            let all = self.addr.send(GetSchedules).await.unwrap();
            all.into_iter().find(|s| s.flow_id == flow_id)
        }
        fn started(&self) -> usize {
            self.runs.borrow().len()
        }
        /// Ends every pending run and waits (with a deadline) until the actor saw it.
        async fn finish_all(&self, flow_id: &str) {
            for (_, tx) in self.runs.borrow_mut().drain(..) {
                let _ = tx.send(());
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while self.get(flow_id).await.is_some_and(|s| s.running) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the run never ended"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    #[actix_rt::test]
    async fn a_late_tick_fires_once_and_nothing_is_caught_up() {
        let h = start(&[("f", "{interval: 10}")]).await;
        assert_eq!(
            h.get("f").await.unwrap().next_fire.unwrap(),
            "2026-05-28T20:26:50Z"
        );
        // A hundred seconds late: ten ticks missed, one run.
        h.at(105).await;
        assert_eq!(h.started(), 1);
        h.finish_all("f").await;
        h.at(106).await;
        assert_eq!(h.started(), 0);
        let s = h.get("f").await.unwrap();
        assert_eq!(s.next_fire.unwrap(), "2026-05-28T20:28:30Z"); // 110 s
        assert_eq!(s.last_run.unwrap().run_id.as_deref(), Some("run-f"));
        assert_eq!(s.skipped_ticks, 0);
    }

    #[actix_rt::test]
    async fn a_tick_while_running_is_skipped_counted_and_audited() {
        let h = start(&[("slow", "{interval: 10}")]).await;
        h.at(10).await;
        h.at(20).await;
        h.at(30).await;
        assert_eq!(h.started(), 1);
        let s = h.get("slow").await.unwrap();
        assert_eq!((s.skipped_ticks, s.running), (2, true));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while h.audit.lock().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no audit entry");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let e = h.audit.lock()[0].clone();
        assert_eq!(
            (e.action.as_str(), e.category),
            ("schedule_skipped", Category::System)
        );
        assert_eq!(e.flow_id.as_deref(), Some("slow"));
        h.finish_all("slow").await;
        h.at(40).await;
        assert_eq!(h.started(), 1);
    }

    #[actix_rt::test]
    async fn a_reload_keeps_unchanged_schedules_replans_changed_ones_and_drops_removed_ones() {
        let h = start(&[
            ("keep", "{interval: 30}"),
            ("edit", "{interval: 30}"),
            ("gone", "{interval: 30}"),
        ])
        .await;
        h.at(30).await;
        h.finish_all("keep").await;
        h.at(45).await;
        let keep_before = h.get("keep").await.unwrap();
        h.view.publish_catalog(catalog(&[
            ("keep", "{interval: 30}"),
            ("edit", "{cron: \"0 9 * * *\"}"),
        ]));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while h.get("gone").await.is_some() {
            assert!(tokio::time::Instant::now() < deadline, "never re-planned");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let keep = h.get("keep").await.unwrap();
        assert_eq!(keep.next_fire, keep_before.next_fire);
        assert_eq!(keep.last_run, keep_before.last_run);
        assert!(keep.last_run.is_some());
        let edit = h.get("edit").await.unwrap();
        assert_eq!(edit.cron.as_deref(), Some("0 9 * * *"));
        assert_eq!(edit.next_fire.unwrap(), "2026-05-29T09:00:00Z");
        assert!(edit.last_run.is_some(), "the state stays with the flow");
    }

    #[actix_rt::test]
    async fn a_schedule_removed_and_back_while_its_run_runs_does_not_overlap() {
        let h = start(&[("f", "{interval: 10}")]).await;
        h.at(10).await;
        assert_eq!(h.started(), 1);
        h.view.publish_catalog(catalog(&[]));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while h.get("f").await.is_some() {
            assert!(tokio::time::Instant::now() < deadline, "never removed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.view.publish_catalog(catalog(&[("f", "{interval: 10}")]));
        while !h.get("f").await.is_some_and(|s| s.running) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never came back running"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.at(100).await;
        assert_eq!(h.started(), 1, "no second run while the first runs");
        assert_eq!(h.get("f").await.unwrap().skipped_ticks, 1);
        h.finish_all("f").await;
        h.at(200).await;
        assert_eq!(h.started(), 1);
    }

    #[actix_rt::test]
    async fn a_restart_plans_from_now() {
        // A kernel started later (no state survives a restart) plans from its own now and
        // fires nothing at start, whatever an earlier kernel had planned.
        let h = start_at(
            &[("f", "{interval: 10}"), ("c", "{cron: \"*/5 * * * *\"}")],
            1_000_000,
        )
        .await;
        h.at(1_000_000).await;
        assert_eq!(h.started(), 0);
        assert_eq!(
            h.get("f").await.unwrap().next_fire.unwrap(),
            "2026-06-09T10:13:30Z"
        );
        assert_eq!(
            h.get("c").await.unwrap().next_fire.unwrap(),
            "2026-06-09T10:15:00Z"
        );
    }

    #[actix_rt::test]
    async fn an_invalid_schedule_is_listed_and_never_fires() {
        let h = start(&[
            ("bad", "{cron: \"61 * * * *\"}"),
            ("raised", "{interval: 3}"),
        ])
        .await;
        let bad = h.get("bad").await.unwrap();
        assert!(!bad.valid && bad.next_fire.is_none());
        assert!(bad.error.unwrap().contains("minute"));
        let raised = h.get("raised").await.unwrap();
        assert!(raised.valid);
        assert_eq!(raised.interval, Some(serde_json::json!(10)));
        assert!(raised.note.unwrap().contains("raised to 10"));
        h.at(1_000).await;
        assert_eq!(h.started(), 1, "only the raised interval fires");
    }
}
