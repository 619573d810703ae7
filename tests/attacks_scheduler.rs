//! An outside review of the scheduler (contract §10, §12 limiter, §16 "Scheduler") from the point
//! of view of a hostile, approved pack.
//!
//! Each `finding_N_…` test proved a hole on the code it was written against and now holds its
//! fix; each `stopped_…` test is an attack that was stopped from the start.
//!
//! Only `finding_2_…` waits for a real tick (the minimum interval is 10 s).

mod common;

use chrono::{DateTime, Duration as Span, Utc};
use common::{python_available, until, write, Kernel};
use rumi_domain::catalog::schedule::{Schedule, Slot, Tick};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap()
}

fn parse(v: Value) -> Schedule {
    Schedule::parse("f", &v)
}

/// A flow of one `set` step (no Python), with an optional schedule line.
fn set_flow(id: &str, schedule: &str) -> String {
    format!(
        "flow_id: {id}\n{schedule}phases: [m]\nsteps:\n  - id: a\n    phase: m\n    type: set\n    input: {{key: x, value: 1}}\n"
    )
}

async fn schedules(k: &Kernel) -> Vec<Value> {
    let (s, v) = k.get("/api/schedules").await;
    assert_eq!(s, 200, "{v}");
    v["data"]["schedules"].as_array().unwrap().clone()
}

// ---- finding 1: an impossible date costs a search to year 5000, on the kernel's main arbiter ----

/// A never-matching date (`31` of months that have 30 days or fewer) is accepted as a *valid*
/// schedule, and computing its next fire walks croner's calendar to year 5000 (≈0.45 s per flow in
/// a debug build, tens of ms in release) inside the `Scheduler` actor, which lives on the System
/// arbiter together with the Registry. A hostile pack with a few dozen such flows freezes the
/// Registry (approve, reject, scan, reload…) and every schedule of the kernel for tens of seconds
/// on every approval / restart / re-approval (measured: 40 flows → 18 s debug; ≈48 ms per flow in
/// release, so 2 000 flows → ≈96 s). Here: a reload right after the approval must answer in 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_impossible_cron_dates_freeze_the_kernel_after_approval() {
    let home = common::fresh_home();
    common::make_pack(home.path(), "stall", &[]);
    for i in 0..40 {
        write(
            home.path(),
            &format!("ecosystem/stall/backend/flows/f{i}.flow.yaml"),
            &set_flow(
                &format!("stall.f{i}"),
                "schedule: {cron: \"59 23 31 2,4,6,9,11 *\"}\n",
            ),
        );
    }
    write(
        home.path(),
        "user_data/shared/flows/op.flow.yaml",
        &set_flow("op", ""),
    );
    let k = Kernel::start(home.path(), &[]);
    // Baseline: the operator's flow answers at once.
    let t = Instant::now();
    let (s, d) = k.run("op", json!({})).await;
    assert_eq!(s, 200, "{d}");
    assert!(t.elapsed() < Duration::from_secs(5));

    k.approve("stall").await;
    // The approval publishes a catalog; the Scheduler re-plans it on the System arbiter, where
    // the Registry lives too: a reload (any Registry request: approve, reject, scan…) waits.
    // Two reloads in a row: whichever way the first races the re-plan, the second waits for it.
    let t = Instant::now();
    for _ in 0..2 {
        let answered = tokio::time::timeout(
            Duration::from_secs(90),
            k.post("/api/flows/reload", json!({})),
        )
        .await;
        let (s, v) = answered.expect("a reload did not answer within 90 s");
        assert_eq!(s, 200, "{v}");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "two reloads took {took:?} after a pack with 40 impossible cron dates was approved"
    );
}

/// The same hole, as a rule: a date that can never come is not a valid schedule (§10: "A bad
/// expression makes the flow's schedule invalid (reported)"); today it is `valid: true, error:
/// null, next_fire: null`, silently, and the search behind it is the cost of finding 1.
#[test]
fn finding_1_a_date_that_never_comes_is_reported_invalid() {
    for expr in ["0 0 30 2 *", "0 0 31 4 *", "59 23 31 2,4,6,9,11 *"] {
        let s = parse(json!({ "cron": expr }));
        assert_eq!(s.first_fire(at(0)), None);
        assert!(
            !s.is_valid() || s.problem().is_some(),
            "{expr:?} never fires but is valid with no error"
        );
    }
}

// ---- finding 2: scheduled runs take the whole limiter, operators get 429 ----------------------

/// Scheduled runs queue in the limiter like API runs (default deadline 300 s). An approved pack
/// with slow flows on `interval: 10` (≥ RUMI_MAX_CONCURRENT_FLOWS + RUMI_FLOW_QUEUE_LIMIT of them;
/// 110 with the defaults) keeps every slot and every queue place taken forever, so every
/// operator request is refused with 429 — the pack gains a permanent denial of service without
/// any token. Scaled down here to 1 slot + 1 queue place and two flows. The operator's run may
/// wait or time out (408), but a pack's schedules must not make the kernel refuse it outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_scheduled_runs_starve_operator_runs_with_429() {
    if !python_available() {
        return;
    }
    let home = common::fresh_home();
    common::make_pack(
        home.path(),
        "hog",
        &[(
            "nap.py",
            "import time\ndef run(d, c=None):\n    time.sleep(120)\n    return {}\n",
        )],
    );
    for i in 0..2 {
        write(
            home.path(),
            &format!("ecosystem/hog/backend/flows/h{i}.flow.yaml"),
            &format!(
                "flow_id: hog.h{i}\nschedule: {{interval: 10}}\nphases: [main]\nsteps:\n  - id: nap\n    phase: main\n    type: python_file_call\n    file: nap.py\n    timeout_seconds: 600\n"
            ),
        );
    }
    write(
        home.path(),
        "user_data/shared/flows/op.flow.yaml",
        &set_flow("op", ""),
    );
    let k = Kernel::start(
        home.path(),
        &[
            ("RUMI_MAX_CONCURRENT_FLOWS", "1"),
            ("RUMI_FLOW_QUEUE_LIMIT", "1"),
        ],
    );
    k.approve("hog").await;
    // Wait (one real tick) until one scheduled run holds the slot and the other tick was not
    // started: at most half the slots (at least one) go to scheduled runs, so the queue place
    // stays the operator's.
    until(
        40,
        "one scheduled run started, the other skipped",
        || async {
            let all = schedules(&k).await;
            let running = all.iter().filter(|s| s["running"] == json!(true)).count();
            let busy = all
                .iter()
                .filter(|s| s["last_run"]["status"] == "skipped_busy")
                .count();
            (running == 1 && busy == 1).then_some(())
        },
    )
    .await;
    let (s, v) = k
        .post("/api/flows/op/run", json!({"inputs": {}, "timeout": 1}))
        .await;
    assert_ne!(
        s, 429,
        "the operator's run was refused because a pack's schedules filled the queue: {v}"
    );
}

// ---- finding 3: unbounded echo of hostile text in the schedule's error ------------------------

/// A hostile cron string or time zone (up to the 1 MiB YAML limit per flow, times any number of
/// flows) is copied whole into `error` (and again in `cron`/`timezone`), so `GET /api/schedules`
/// and `rumi schedules --json` return megabytes per flow. Errors elsewhere are clipped to 2000
/// bytes (engine::MAX_ERROR_BYTES).
#[test]
fn finding_3_a_schedule_error_is_bounded() {
    let huge_number = format!("{} * * * *", "9".repeat(300_000));
    let huge_zone = "X".repeat(300_000);
    for v in [
        json!({ "cron": huge_number }),
        json!({"cron": "0 9 * * *", "timezone": huge_zone}),
        json!({ "cron": format!("{} * * *", "* ".repeat(100_000)) }),
    ] {
        let s = parse(v);
        let e = s.problem().expect("invalid");
        assert!(e.len() <= 4096, "an error of {} bytes", e.len());
    }
}

// ---- finding 4: a backward wall-clock jump stalls every schedule for the size of the jump ------

/// The actor claims (scheduler.rs, MAX_SLEEP) that "a wall-clock jump (NTP, a suspended host)
/// delays a fire by at most" 1 s. A *backward* jump leaves every `next_fire` planned on the old
/// clock: an `interval: 10` schedule stays silent for the whole jump (an hour here) plus 10 s.
/// After the tick at the jumped-back `now`, the next fire must be no later than a plan made now.
#[test]
fn finding_4_a_backward_clock_jump_does_not_silence_schedules() {
    for v in [json!({"interval": 10}), json!({"cron": "* * * * *"})] {
        let sched = Arc::new(parse(v.clone()));
        let mut slot = Slot::new(Arc::clone(&sched), at(0));
        let due = slot.next_fire.unwrap();
        assert_eq!(slot.tick(due), Tick::Fire);
        slot.finished(rumi_domain::catalog::schedule::LastRun {
            run_id: Some("r".into()),
            status: "succeeded".into(),
            ts: String::new(),
        });
        // The clock steps back one hour.
        let now = due - Span::hours(1) + Span::seconds(1);
        let _ = slot.tick(now);
        let fresh = sched.first_fire(now).unwrap();
        assert!(
            slot.next_fire.unwrap() <= fresh,
            "{v}: after the clock went back an hour the next fire is {:?}, a plan made now says {fresh}",
            slot.next_fire
        );
    }
}

// ---- finding 5: an invalid interval/cron value is listed with neither `cron` nor `interval` -----

/// §16: each entry is `{flow_id, cron|interval, …}`. A schedule whose `interval` (or `cron`) value
/// is of the wrong kind or out of range is listed with *neither* key, so a client cannot tell
/// what was written (only `error` mentions it) and a strict client of §16 breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_5_an_invalid_schedule_keeps_its_cron_or_interval_key() {
    let home = common::fresh_home();
    for (id, sched) in [
        ("neg", "schedule: {interval: -10}\n"),
        ("huge", "schedule: {interval: 99999999999}\n"),
        ("text", "schedule: {interval: \"30\"}\n"),
        ("num", "schedule: {cron: 5}\n"),
    ] {
        write(
            home.path(),
            &format!("user_data/shared/flows/{id}.flow.yaml"),
            &set_flow(id, sched),
        );
    }
    let k = Kernel::start(home.path(), &[]);
    let all = schedules(&k).await;
    for id in ["neg", "huge", "text", "num"] {
        let s = all.iter().find(|s| s["flow_id"] == id).unwrap();
        assert_eq!(s["valid"], json!(false), "{s}");
        let o = s.as_object().unwrap();
        assert!(
            o.contains_key("cron") || o.contains_key("interval"),
            "{id}: neither cron nor interval: {s}"
        );
    }
}

// ---- attacks that were stopped (regression tests; these pass) ---------------------------------

/// Odd time zones: path-like names, offsets beyond range, case games and a huge name are refused
/// (chrono-tz's compiled table is used; no file is read).
#[test]
fn stopped_hostile_time_zones_are_invalid() {
    for tz in [
        "../../etc/localtime",
        "/etc/passwd",
        "UTC+99",
        "Etc/GMT+15",
        "utc",
        "localtime",
        "posixrules",
        "right/UTC",
        "",
        "Asia/Tokyo\0",
        "Ａsia/Tokyo",
    ] {
        let s = parse(json!({"cron": "0 9 * * *", "timezone": tz}));
        assert!(!s.is_valid(), "{tz:?} accepted");
        assert!(s.problem().unwrap().contains("unknown time zone"));
        assert_eq!(s.first_fire(at(0)), None);
    }
    let s = parse(json!({"cron": "0 9 * * *", "timezone": "Z".repeat(100_000)}));
    assert!(!s.is_valid());
}

/// Intervals at and beyond every numeric edge: no panic, no overflow, clear errors.
#[test]
fn stopped_extreme_intervals_neither_panic_nor_overflow() {
    for n in [
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-1e308),
        json!(-1),
        json!(0),
        json!(-0.0),
        json!(1e-300),
        json!(10.5),
        json!(9.999999999999998),
        json!("10"),
        json!(true),
        json!(null),
        json!([10]),
        json!({"secs": 10}),
        json!(31_622_401u64),
    ] {
        let s = parse(json!({ "interval": n }));
        assert!(!s.is_valid(), "{n} accepted");
        assert_eq!(s.first_fire(at(0)), None);
    }
    // The largest accepted interval plans and keeps planning without overflow, however late.
    let s = Arc::new(parse(json!({"interval": 31_622_400u64})));
    let mut slot = Slot::new(Arc::clone(&s), at(0));
    let due = slot.next_fire.unwrap();
    assert_eq!(slot.tick(due + Span::days(365 * 1000)), Tick::Fire);
    assert!(slot.next_fire.unwrap() > due + Span::days(365 * 1000));
    // Far in the future (chrono's range edge) the plan just ends instead of panicking.
    let end = DateTime::<Utc>::MAX_UTC - Span::days(10);
    assert_eq!(s.first_fire(end), None);
    let mut slot = Slot::new(s, end - Span::days(400));
    let due = slot.next_fire.unwrap();
    assert_eq!(slot.tick(due), Tick::Fire);
}

/// Cron grammar abuse: zero / giant / signed steps, numbers beyond u32/u64, unicode digits and
/// spaces, croner extensions and junk are refused; long lists parse quickly.
#[test]
fn stopped_hostile_cron_expressions_are_refused_quickly() {
    for expr in [
        "*/0 * * * *",
        "*/60 * * * *",
        "*/4294967296 * * * *",
        "*/99999999999999999999999 * * * *",
        "*/+5 * * * *",
        "*/-5 * * * *",
        "0-59/+1 * * * *",
        "4294967296 * * * *",
        "18446744073709551616 * * * *",
        "-1 * * * *",
        "+5 * * * *",
        "٥ * * * *",
        "５ * * * *",
        "0 0 L * *",
        "0 0 ? * *",
        "0 0 * * 1#2",
        "0 0 * * MON",
        "0 0 1W * *",
        "@reboot",
        "0 0 * * * 2030",
        "*,*/0 * * * *",
        "1-2-3 * * * *",
        "1/2/3 * * * *",
        "*-5 * * * *",
        "0 0 * * 8",
        "0 0 * * 0-8",
    ] {
        let t = Instant::now();
        let s = parse(json!({ "cron": expr }));
        assert!(!s.is_valid(), "{expr:?} accepted");
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    // A long list is refused, quickly, past 1 024 characters; within it, lists work.
    let t = Instant::now();
    let long = format!("{} * * * *", vec!["7"; 100_000].join(","));
    assert!(!parse(json!({ "cron": long })).is_valid());
    assert!(t.elapsed() < Duration::from_secs(1));
    let t = Instant::now();
    let long = format!("{} * * * *", vec!["7"; 200].join(","));
    let s = parse(json!({ "cron": long }));
    assert!(s.is_valid());
    let first = s.first_fire(at(0)).unwrap();
    assert_eq!(first.format("%M:%S").to_string(), "07:00");
    assert!(first - at(0) <= Span::hours(1));
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A reload storm: republishing an unchanged schedule never moves its next fire (nothing is
/// postponed forever, nothing fires again), and a changed-then-restored one is planned from now.
#[test]
fn stopped_a_reload_storm_neither_postpones_nor_repeats_fires() {
    let mut slot = Slot::new(Arc::new(parse(json!({"interval": 10}))), at(0));
    for i in 0..1000 {
        slot.replan(Arc::new(parse(json!({"interval": 10}))), at(i % 10));
        assert_eq!(slot.next_fire, Some(at(10)));
    }
    assert_eq!(slot.tick(at(10)), Tick::Fire);
    for _ in 0..100 {
        slot.replan(Arc::new(parse(json!({"interval": 10}))), at(10));
        assert_eq!(slot.tick(at(10)), Tick::Wait, "fired twice for one tick");
    }
    // 3 → raised to 10: the same applied plan, so a raised interval does not re-plan either.
    slot.replan(Arc::new(parse(json!({"interval": 3}))), at(15));
    assert_eq!(slot.next_fire, Some(at(20)));
}

/// DST in zones with odd offsets: one fire per matching wall-clock time, never two at once and
/// never backwards, across Lord Howe's 30-minute shift and Chatham's +12:45/+13:45.
#[test]
fn stopped_dst_edges_in_odd_zones_fire_once_and_move_forward() {
    for (tz, start) in [
        ("Australia/Lord_Howe", "2025-10-04T12:00:00Z"),
        ("Australia/Lord_Howe", "2025-04-05T12:00:00Z"),
        ("Pacific/Chatham", "2025-09-27T12:00:00Z"),
        ("Pacific/Chatham", "2025-04-05T12:00:00Z"),
        ("America/St_Johns", "2025-11-02T01:00:00Z"),
        ("Asia/Kathmandu", "2025-01-01T00:00:00Z"),
    ] {
        let s = parse(json!({"cron": "*/15 * * * *", "timezone": tz}));
        assert!(s.is_valid(), "{tz}");
        let mut t = DateTime::parse_from_rfc3339(start)
            .unwrap()
            .with_timezone(&Utc);
        let end = t + Span::hours(12);
        let mut n = 0;
        while t < end {
            let next = s.first_fire(t).unwrap();
            assert!(next > t, "{tz}: {next} after {t}");
            assert!(
                next - t <= Span::minutes(120),
                "{tz}: a gap from {t} to {next}"
            );
            t = next;
            n += 1;
        }
        assert!((40..=52).contains(&n), "{tz}: {n} fires in 12 h");
    }
}

/// `GET /api/schedules` with hostile schedules: the exact shape of §16, the kernel survives, and
/// text from the pack comes back JSON-escaped (never raw control characters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_hostile_schedules_are_listed_in_the_exact_shape() {
    let home = common::fresh_home();
    common::make_pack(home.path(), "evil", &[]);
    let flows = [
        (
            "evil.esc",
            "schedule: {cron: \"\\e]0;pwn\\a\\e[2J * * * *\"}\n",
        ),
        (
            "evil.zone",
            "schedule: {cron: \"0 9 * * *\", timezone: \"../../etc/localtime\"}\n",
        ),
        ("evil.big", "schedule: {interval: 18446744073709551615}\n"),
        ("evil.neg", "schedule: {interval: -10}\n"),
        ("evil.ok", "schedule: {interval: 3600}\n"),
        (
            "evil.cron",
            "schedule: {cron: \"0 9 * * *\", timezone: \"Asia/Tokyo\"}\n",
        ),
    ];
    for (id, sched) in flows {
        write(
            home.path(),
            &format!("ecosystem/evil/backend/flows/{id}.flow.yaml"),
            &set_flow(id, sched),
        );
    }
    let mut k = Kernel::start(home.path(), &[]);
    k.approve("evil").await;
    let list = until(20, "the pack's schedules", || async {
        let all = schedules(&k).await;
        (all.iter()
            .filter(|s| s["flow_id"].as_str().unwrap_or("").starts_with("evil."))
            .count()
            == flows.len())
        .then_some(all)
    })
    .await;
    for s in &list {
        let o = s.as_object().unwrap();
        for key in [
            "flow_id",
            "timezone",
            "valid",
            "error",
            "next_fire",
            "last_run",
            "skipped_ticks",
        ] {
            assert!(o.contains_key(key), "{key} missing: {s}");
        }
        if s["valid"] == json!(false) {
            assert!(s["next_fire"].is_null() && s["error"].is_string(), "{s}");
        } else {
            assert!(o.contains_key("cron") ^ o.contains_key("interval"), "{s}");
            let nf = s["next_fire"].as_str().unwrap();
            assert!(nf.ends_with('Z'), "{s}");
            DateTime::parse_from_rfc3339(nf).unwrap();
        }
        assert!(s["last_run"].is_null());
    }
    let find = |id: &str| list.iter().find(|s| s["flow_id"] == id).unwrap().clone();
    for id in ["evil.esc", "evil.zone", "evil.big", "evil.neg"] {
        assert_eq!(find(id)["valid"], json!(false), "{}", find(id));
    }
    assert_eq!(find("evil.cron")["timezone"], "Asia/Tokyo");
    assert!(find("evil.ok")["timezone"].is_null());
    // The raw body never carries a control character (JSON escapes them).
    let r = k
        .http
        .get(k.url("/api/schedules"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    let raw = r.text().await.unwrap();
    assert!(
        !raw.bytes().any(|b| b == 0x1b || b == 0x07),
        "raw control characters"
    );
    assert!(k.alive());
    // The flows themselves still exist (a bad schedule does not break the flow).
    let (s, _) = k.get("/api/flows/evil.zone").await;
    assert_eq!(s, 200);
}
