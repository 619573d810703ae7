//! Schedules (contract §10): the plan of every flow's `schedule`, when each fires next, and the
//! rules of one schedule's life (a tick while the previous run is still running is skipped, a late
//! tick fires once, a reload keeps an unchanged schedule's state).
//!
//! Forms: `schedule: {cron: "m h dom mon dow", timezone: "Asia/Tokyo"}` (timezone optional, UTC
//! by default; see [`cron`] for the grammar and the daylight-saving rule) or `schedule: {interval:
//! 30}` (whole seconds; below [`MIN_INTERVAL_SECS`] it is raised and the note says so). Anything
//! else makes the *schedule* invalid with an error saying what to write; the flow still runs.
//!
//! Nothing here reads a clock: the scheduler passes "now" in.

pub mod cron;

use crate::sources::FlowTable;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The shortest interval; smaller ones are raised to it.
pub const MIN_INTERVAL_SECS: u64 = 10;
/// The longest interval (a year), so every planned instant stays representable.
pub const MAX_INTERVAL_SECS: u64 = 366 * 24 * 3600;

const FORMS: &str =
    "write `schedule: {cron: \"*/5 * * * *\", timezone: \"Europe/Paris\"}` or `schedule: {interval: 30}`";

/// How a valid schedule fires.
#[derive(Debug, Clone)]
pub enum Plan {
    Cron(Box<cron::CronExpr>),
    /// Every this many seconds (already raised to the minimum).
    Interval(u64),
}

/// One flow's schedule as written, and its plan or why it has none.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub flow_id: String,
    /// The cron expression as written (when the schedule has one).
    pub cron: Option<String>,
    /// The interval in seconds as it applies (raised to the minimum).
    pub interval: Option<u64>,
    /// The `interval` as written (a number, or the text of anything else, clipped), so that an
    /// invalid one still shows what it was.
    pub interval_written: Option<Value>,
    /// The time zone of a cron schedule (`UTC` when none is given).
    pub timezone: Option<String>,
    /// The plan, or the error that makes the schedule invalid.
    pub plan: Result<Plan, String>,
    /// Something the kernel changed or ignored in a valid schedule (a raised interval).
    pub note: Option<String>,
}

impl Schedule {
    /// Reads a flow's `schedule` value (see the module docs).
    pub fn parse(flow_id: &str, value: &Value) -> Schedule {
        let mut s = Schedule {
            flow_id: flow_id.to_string(),
            cron: None,
            interval: None,
            interval_written: None,
            timezone: None,
            plan: Err(String::new()),
            note: None,
        };
        s.plan = s.read(value);
        s
    }

    fn read(&mut self, value: &Value) -> Result<Plan, String> {
        let Some(map) = value.as_object() else {
            return Err(format!("the schedule is not a mapping; {FORMS}"));
        };
        // Even an invalid schedule shows which form it meant (§16: `cron|interval` in each entry).
        if let Some(c) = map.get("cron") {
            self.cron = Some(match c {
                Value::String(s) => clipped(s),
                other => clipped(&other.to_string()),
            });
        }
        if let Some(i) = map.get("interval") {
            self.interval_written = Some(match i {
                Value::Number(_) => i.clone(),
                other => Value::String(clipped(&other.to_string())),
            });
        }
        if let Some(key) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "cron" | "interval" | "timezone"))
        {
            return Err(format!(
                "unknown key {} in the schedule (the keys are cron, timezone and interval); {FORMS}",
                cron::shown(key)
            ));
        }
        let timezone = match map.get("timezone") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => {
                return Err(
                    "timezone must be an IANA name in quotes, e.g. timezone: \"Asia/Tokyo\"".into(),
                )
            }
        };
        match (map.get("cron"), map.get("interval")) {
            (Some(_), Some(_)) => Err(format!(
                "the schedule has both cron and interval; keep one: {FORMS}"
            )),
            (None, None) => Err(format!(
                "the schedule has neither cron nor interval; {FORMS}"
            )),
            (Some(expr), None) => {
                let Some(expr) = expr.as_str() else {
                    return Err(
                        "cron must be a string in quotes, e.g. cron: \"*/5 * * * *\"".into(),
                    );
                };
                self.cron = Some(clipped(expr));
                let name = timezone.unwrap_or_else(|| "UTC".to_string());
                self.timezone = Some(clipped(&name));
                let tz: chrono_tz::Tz = name.parse().map_err(|_| {
                    format!(
                        "unknown time zone {}; write an IANA name such as \"UTC\", \
                         \"Europe/London\" or \"Asia/Tokyo\"",
                        cron::shown(&name)
                    )
                })?;
                cron::CronExpr::parse(expr, tz).map(|c| Plan::Cron(Box::new(c)))
            }
            (None, Some(n)) => {
                let secs = match n {
                    Value::Number(n) => n.as_u64().or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                            .map(|f| f as u64)
                    }),
                    _ => None,
                };
                let Some(secs) = secs.filter(|s| *s >= 1) else {
                    return Err(format!(
                        "interval must be a positive whole number of seconds (at least \
                         {MIN_INTERVAL_SECS}), e.g. interval: 30; got {n}"
                    ));
                };
                if secs > MAX_INTERVAL_SECS {
                    return Err(format!(
                        "interval {secs} is longer than a year ({MAX_INTERVAL_SECS} s); use cron \
                         for rare schedules, e.g. cron: \"0 0 1 1 *\""
                    ));
                }
                if timezone.is_some() {
                    self.note = Some("timezone is ignored for an interval schedule".into());
                }
                let applied = secs.max(MIN_INTERVAL_SECS);
                if applied != secs {
                    self.note = Some(format!(
                        "interval {secs} s is below the minimum; raised to {MIN_INTERVAL_SECS} s"
                    ));
                }
                self.interval = Some(applied);
                Ok(Plan::Interval(applied))
            }
        }
    }

    pub fn is_valid(&self) -> bool {
        self.plan.is_ok()
    }

    /// The problem to show: why the schedule is invalid, or what was changed in it.
    pub fn problem(&self) -> Option<&str> {
        match &self.plan {
            Err(e) => Some(e),
            Ok(_) => self.note.as_deref(),
        }
    }

    /// Whether `other` fires at the same times (a reload that leaves it so keeps the state).
    pub fn same_plan(&self, other: &Schedule) -> bool {
        self.is_valid() == other.is_valid()
            && self.cron == other.cron
            && self.interval == other.interval
            && self.timezone == other.timezone
    }

    /// When a schedule first registered at `now` fires: the next cron time, or one interval on
    /// (nothing is caught up after a restart or a reload: plans start from now).
    pub fn first_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.plan {
            Ok(Plan::Cron(c)) => c.next_after(now),
            Ok(Plan::Interval(secs)) => now.checked_add_signed(Duration::seconds(*secs as i64)),
            Err(_) => None,
        }
    }

    /// The fire after the one due at `due`, handled at `now` (≥ `due`): the first planned time
    /// strictly after `now`, so however late the tick was, it fired once and no missed tick follows.
    /// An interval keeps its cadence (`due + k·interval`).
    pub fn fire_after(&self, due: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.plan {
            Ok(Plan::Cron(c)) => c.next_after(now.max(due)),
            Ok(Plan::Interval(secs)) => {
                let step = *secs as i64;
                let late = (now - due).num_seconds().max(0);
                let k = late / step + 1;
                due.checked_add_signed(Duration::seconds(k.checked_mul(step)?))
            }
            Err(_) => None,
        }
    }
}

/// Longest text of a schedule kept as written (an expression or a zone; longer ones are invalid).
const MAX_KEPT_CHARS: usize = cron::MAX_EXPR_CHARS;

/// `s`, cut to [`MAX_KEPT_CHARS`] characters (then `…`).
fn clipped(s: &str) -> String {
    match s.char_indices().nth(MAX_KEPT_CHARS) {
        None => s.to_string(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// Every flow's schedule, valid or not, by flow id (flows without a schedule are absent).
#[derive(Debug, Clone, Default)]
pub struct ScheduleTable {
    pub schedules: BTreeMap<String, Arc<Schedule>>,
}

/// Reads the schedule of every effective flow.
pub fn build_table(flows: &FlowTable) -> ScheduleTable {
    let schedules = flows
        .flows
        .iter()
        .filter_map(|(id, flow)| {
            // `schedule:` left empty means no schedule, not a bad one.
            let value = flow.schedule.as_ref().filter(|v| !v.is_null())?;
            Some((id.clone(), Arc::new(Schedule::parse(id, value))))
        })
        .collect();
    ScheduleTable { schedules }
}

/// How the last scheduled run of a flow ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastRun {
    /// The run's id (null when it could not start, e.g. the queue was full).
    pub run_id: Option<String>,
    /// `succeeded`, `failed`, … as in the run record, or `not_started`.
    pub status: String,
    /// When it ended (RFC 3339 UTC).
    pub ts: String,
}

/// What a tick decided for one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Not due yet.
    Wait,
    /// Due: start a run now.
    Fire,
    /// Due while the previous scheduled run is still running: skipped (and counted).
    Skip,
}

/// One schedule's state in the scheduler; constant size whatever happens.
#[derive(Debug, Clone)]
pub struct Slot {
    pub schedule: Arc<Schedule>,
    pub next_fire: Option<DateTime<Utc>>,
    /// A scheduled run of the flow is running.
    pub running: bool,
    pub last_run: Option<LastRun>,
    pub skipped_ticks: u64,
    /// The latest `now` a tick saw: a later tick that sees an earlier time means the wall clock
    /// went back, and the plan starts again from the new now.
    seen: Option<DateTime<Utc>>,
}

impl Slot {
    /// A schedule registered at `now`.
    pub fn new(schedule: Arc<Schedule>, now: DateTime<Utc>) -> Slot {
        Slot {
            next_fire: schedule.first_fire(now),
            schedule,
            running: false,
            last_run: None,
            skipped_ticks: 0,
            seen: Some(now),
        }
    }

    /// The schedule read by a new load: an unchanged plan keeps its next fire time; a changed one
    /// is planned from `now`. The run state and counters stay either way.
    pub fn replan(&mut self, schedule: Arc<Schedule>, now: DateTime<Utc>) {
        if !self.schedule.same_plan(&schedule) {
            self.next_fire = schedule.first_fire(now);
        }
        self.schedule = schedule;
    }

    /// Decides at `now`: not due, fire, or skip because the previous run is still running. A due
    /// tick (fired or skipped) moves `next_fire` past `now`, so a late tick counts once.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Tick {
        // The wall clock went back (by more than a second, past jitter): what was due "in an
        // hour" may now be due in two; plan from the new now.
        let went_back = self
            .seen
            .is_some_and(|seen| now < seen - Duration::seconds(1));
        if went_back {
            self.next_fire = self.schedule.first_fire(now);
        }
        self.seen = Some(match self.seen {
            Some(seen) if !went_back => seen.max(now),
            _ => now,
        });
        let Some(due) = self.next_fire else {
            return Tick::Wait;
        };
        if now < due {
            return Tick::Wait;
        }
        self.next_fire = self.schedule.fire_after(due, now);
        if self.running {
            self.skipped_ticks = self.skipped_ticks.saturating_add(1);
            Tick::Skip
        } else {
            self.running = true;
            Tick::Fire
        }
    }

    /// The scheduled run ended (or could not start).
    pub fn finished(&mut self, last_run: LastRun) {
        self.running = false;
        self.last_run = Some(last_run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap()
    }
    fn parse(v: Value) -> Schedule {
        Schedule::parse("f", &v)
    }

    #[test]
    fn the_two_forms_parse() {
        let s = parse(json!({"cron": "*/5 * * * *", "timezone": "Asia/Tokyo"}));
        assert!(s.is_valid(), "{:?}", s.plan);
        assert_eq!(s.timezone.as_deref(), Some("Asia/Tokyo"));
        let s = parse(json!({"cron": "*/5 * * * *"}));
        assert_eq!(s.timezone.as_deref(), Some("UTC"));
        let s = parse(json!({"interval": 30}));
        assert_eq!(s.interval, Some(30));
        assert_eq!(s.problem(), None);
    }

    #[test]
    fn a_short_interval_is_raised_and_reported() {
        for n in [json!(1), json!(9), json!(5.0)] {
            let s = parse(json!({ "interval": n }));
            assert!(s.is_valid());
            assert_eq!(s.interval, Some(MIN_INTERVAL_SECS));
            assert!(
                s.problem().unwrap().contains("raised to 10"),
                "{:?}",
                s.note
            );
        }
        assert_eq!(parse(json!({"interval": 10})).note, None);
    }

    #[test]
    fn bad_schedules_are_invalid_with_a_clear_error() {
        for (v, says) in [
            (json!("*/5 * * * *"), "not a mapping"),
            (
                json!({"cron": "* * * * *", "every": 3}),
                "unknown key \"every\"",
            ),
            (
                json!({"cron": "* * * * *", "interval": 30}),
                "both cron and interval",
            ),
            (json!({}), "neither cron nor interval"),
            (json!({"interval": "30"}), "positive whole number"),
            (json!({"interval": 0}), "positive whole number"),
            (json!({"interval": -5}), "positive whole number"),
            (json!({"interval": 2.5}), "positive whole number"),
            (json!({"interval": 1e12}), "longer than a year"),
            (json!({"cron": 5}), "cron must be a string"),
            (json!({"cron": "* * *"}), "write 5"),
            (
                json!({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}),
                "unknown time zone",
            ),
            (json!({"cron": "0 9 * * *", "timezone": 9}), "IANA name"),
        ] {
            let s = parse(v.clone());
            let e = s.plan.as_ref().unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
            assert!(e.contains("write") || e.contains("e.g."), "{v}: {e}");
            assert_eq!(s.first_fire(at(0)), None);
        }
    }

    #[test]
    fn the_table_holds_only_flows_with_a_schedule_and_a_bad_one_does_not_break_the_flow() {
        use crate::flow::{parse_flow, FlowOrigin, SourceRank};
        let flow = |id: &str, extra: &str| {
            parse_flow(
                &format!("flow_id: {id}\nphases: [m]\n{extra}"),
                FlowOrigin {
                    rank: SourceRank::Shared,
                    path: format!("s/{id}.flow.yaml"),
                    pack_id: None,
                },
            )
        };
        let flows = crate::sources::build_table(vec![
            flow("plain", ""),
            flow("every", "schedule: {interval: 30}\n"),
            flow("bad", "schedule: {cron: \"nope\"}\n"),
            flow("empty", "schedule:\n"),
        ]);
        assert!(flows.flows.contains_key("bad"), "{:?}", flows.problems);
        let table = build_table(&flows);
        let ids: Vec<&str> = table.schedules.keys().map(String::as_str).collect();
        assert_eq!(ids, ["bad", "every"]);
        assert!(!table.schedules["bad"].is_valid());
        assert!(table.schedules["every"].is_valid());
    }

    #[test]
    fn an_interval_fires_one_interval_after_registration_then_keeps_its_cadence() {
        let mut slot = Slot::new(Arc::new(parse(json!({"interval": 30}))), at(0));
        assert_eq!(slot.next_fire, Some(at(30)));
        assert_eq!(slot.tick(at(29)), Tick::Wait);
        assert_eq!(slot.tick(at(30)), Tick::Fire);
        assert_eq!(slot.next_fire, Some(at(60)));
    }

    #[test]
    fn a_late_tick_fires_once() {
        let mut slot = Slot::new(Arc::new(parse(json!({"interval": 10}))), at(0));
        // Ten ticks were missed (the kernel was busy): one fire, and the next is in the future.
        assert_eq!(slot.tick(at(105)), Tick::Fire);
        assert_eq!(slot.next_fire, Some(at(110)));
        slot.finished(LastRun {
            run_id: Some("r".into()),
            status: "succeeded".into(),
            ts: String::new(),
        });
        assert_eq!(slot.tick(at(106)), Tick::Wait);
        let mut cron = Slot::new(Arc::new(parse(json!({"cron": "* * * * *"}))), at(0));
        let due = cron.next_fire.unwrap();
        assert_eq!(cron.tick(due + Duration::minutes(30)), Tick::Fire);
        assert!(cron.next_fire.unwrap() > due + Duration::minutes(30));
    }

    #[test]
    fn a_tick_while_running_is_skipped_and_counted() {
        let mut slot = Slot::new(Arc::new(parse(json!({"interval": 10}))), at(0));
        assert_eq!(slot.tick(at(10)), Tick::Fire);
        assert_eq!(slot.tick(at(20)), Tick::Skip);
        assert_eq!(slot.tick(at(30)), Tick::Skip);
        assert_eq!(slot.skipped_ticks, 2);
        slot.finished(LastRun {
            run_id: Some("r1".into()),
            status: "succeeded".into(),
            ts: String::new(),
        });
        assert_eq!(slot.tick(at(40)), Tick::Fire);
    }

    #[test]
    fn a_reload_keeps_an_unchanged_plan_and_replans_a_changed_one() {
        let mut slot = Slot::new(Arc::new(parse(json!({"interval": 30}))), at(0));
        slot.tick(at(30));
        slot.finished(LastRun {
            run_id: Some("r1".into()),
            status: "failed".into(),
            ts: String::new(),
        });
        slot.skipped_ticks = 3;
        slot.replan(Arc::new(parse(json!({"interval": 30}))), at(45));
        assert_eq!(slot.next_fire, Some(at(60)));
        assert_eq!(slot.skipped_ticks, 3);
        slot.replan(Arc::new(parse(json!({"interval": 20}))), at(45));
        assert_eq!(slot.next_fire, Some(at(65)));
        assert_eq!(
            slot.last_run.as_ref().unwrap().run_id.as_deref(),
            Some("r1")
        );
        slot.replan(Arc::new(parse(json!({"interval": "x"}))), at(46));
        assert_eq!(slot.next_fire, None);
        assert_eq!(slot.tick(at(1000)), Tick::Wait);
    }

    proptest! {
        /// However late a tick is handled, a due schedule fires (or skips) once and its next fire
        /// lies after the tick; an interval stays on its grid.
        #[test]
        fn late_ticks_count_once(secs in 10u64..500, late in 0i64..100_000, running: bool) {
            let mut slot = Slot::new(Arc::new(parse(json!({ "interval": secs }))), at(0));
            slot.running = running;
            let due = slot.next_fire.unwrap();
            let now = due + Duration::seconds(late);
            let t = slot.tick(now);
            prop_assert_eq!(t, if running { Tick::Skip } else { Tick::Fire });
            let next = slot.next_fire.unwrap();
            prop_assert!(next > now);
            prop_assert!(next - now <= Duration::seconds(secs as i64));
            prop_assert_eq!((next - due).num_seconds() % secs as i64, 0);
            prop_assert_eq!(slot.tick(now), Tick::Wait);
        }
    }
}
