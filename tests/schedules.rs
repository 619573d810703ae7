//! The scheduler end to end (contract §10, §16 "Scheduler") through the real binary: a scheduled
//! run starts with no HTTP call and is recorded with `trigger: schedule`; a tick while the
//! previous run still runs is skipped, counted and audited; `GET /api/schedules` shows next fire
//! times that the test computes on its own, invalid and raised schedules; a reload re-plans; and
//! `rumi schedules` prints them as a table and as JSON.
//!
//! Only the first test waits for real ticks (the minimum interval is 10 s); the actor's own rules
//! (late ticks, restarts, reloads) are tested with a fake clock in actors/src/scheduler.rs.

mod common;

use chrono::{DateTime, Datelike, Duration as Span, FixedOffset, Timelike, Utc};
use common::cli::{ok, rumi};
use common::{python_available, until, write, Kernel};
use serde_json::Value;

/// `flow_id`'s entry of `GET /api/schedules` (null when absent).
async fn schedule(k: &Kernel, flow_id: &str) -> Value {
    let (s, v) = k.get("/api/schedules").await;
    assert_eq!(s, 200, "{v}");
    v["data"]["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["flow_id"] == flow_id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_flow_runs_by_itself_and_a_tick_while_it_runs_is_skipped() {
    if !python_available() {
        return;
    }
    let home = common::fresh_home();
    // A run lasts 12 s and the interval is 10 s: the second tick finds the first run running.
    common::make_pack(
        home.path(),
        "ticker",
        &[(
            "slow.py",
            "import time\ndef run(d, c=None):\n    time.sleep(12)\n    return {'done': True}\n",
        )],
    );
    write(
        home.path(),
        "ecosystem/ticker/backend/flows/slow.flow.yaml",
        "flow_id: ticker.slow\nschedule: {interval: 10}\nphases: [main]\nsteps:\n  - id: nap\n    phase: main\n    type: python_file_call\n    file: slow.py\n    output: out\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("ticker").await;

    // No HTTP call starts it: the record appears by itself.
    let listed = until(60, "a scheduled run record", || async {
        let (_, runs) = k.get("/api/runs?flow_id=ticker.slow").await;
        runs["data"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(listed["trigger"], "schedule", "{listed}");
    let run_id = listed["run_id"].as_str().unwrap().to_string();
    let (_, rec) = k.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(rec["data"]["trigger"], "schedule", "{rec}");
    assert_eq!(rec["data"]["status"], "succeeded", "{rec}");

    let s = until(30, "last_run and a skipped tick", || async {
        let s = schedule(&k, "ticker.slow").await;
        (s["skipped_ticks"].as_u64() >= Some(1) && s["last_run"].is_object()).then_some(s)
    })
    .await;
    assert!(s["last_run"]["run_id"].is_string(), "{s}");
    assert!(s["last_run"]["ts"].is_string(), "{s}");
    let (_, audit) = k.get("/api/audit?category=system").await;
    let skipped = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "schedule_skipped")
        .cloned()
        .unwrap_or_else(|| panic!("no schedule_skipped entry: {audit}"));
    assert_eq!(skipped["flow_id"], "ticker.slow");
    assert_eq!(skipped["category"], "system");
}

/// The next instant after `now` at which `m h dom mon dow` fires in a zone at a fixed offset (no
/// DST: UTC and Asia/Tokyo), by walking minutes and checking each field; dom and dow are ORed
/// when both are restricted.
fn expected_next(now: DateTime<Utc>, offset_hours: i32, fields: [&str; 5]) -> String {
    let zone = FixedOffset::east_opt(offset_hours * 3600).unwrap();
    let one = |f: &str, v: u32| -> bool {
        f == "*"
            || f.strip_prefix("*/")
                .is_some_and(|n| v % n.parse::<u32>().unwrap() == 0)
            || f.split(',').any(|x| x.parse() == Ok(v))
    };
    let mut t = now
        .with_timezone(&zone)
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    for _ in 0..(366 * 24 * 60) {
        t += Span::minutes(1);
        let dow = t.weekday().num_days_from_sunday();
        let dom_ok = one(fields[2], t.day());
        let dow_ok = one(fields[4], dow) || (dow == 0 && one(fields[4], 7));
        let day = if fields[2] != "*" && fields[4] != "*" {
            dom_ok || dow_ok
        } else {
            dom_ok && dow_ok
        };
        if one(fields[0], t.minute())
            && one(fields[1], t.hour())
            && one(fields[3], t.month())
            && day
        {
            return t
                .with_timezone(&Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
        }
    }
    panic!("no fire within a year");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_listed_with_their_next_fire_problems_and_a_reload_replans_them() {
    let home = common::fresh_home();
    let flow = |id: &str, schedule: &str| {
        format!(
            "flow_id: {id}\nschedule: {schedule}\nphases: [m]\nsteps:\n  - id: a\n    phase: m\n    type: set\n    input: {{key: x, value: 1}}\n"
        )
    };
    let crons = [
        ("every5", "*/5 * * * *", None),
        ("sunday9", "0 9 * * 7", None),
        ("sunday9_tokyo", "0 9 * * 7", Some("Asia/Tokyo")),
        ("first_or_monday", "0 12 1 * 1", None),
        ("first_or_monday_tokyo", "0 12 1 * 1", Some("Asia/Tokyo")),
    ];
    for (id, expr, tz) in crons {
        let schedule = match tz {
            Some(tz) => format!("{{cron: \"{expr}\", timezone: \"{tz}\"}}"),
            None => format!("{{cron: \"{expr}\"}}"),
        };
        write(
            home.path(),
            &format!("user_data/shared/flows/{id}.flow.yaml"),
            &flow(id, &schedule),
        );
    }
    write(
        home.path(),
        "user_data/shared/flows/bad.flow.yaml",
        &flow("bad", "{cron: \"* * *\", every: 2}"),
    );
    write(
        home.path(),
        "user_data/shared/flows/badzone.flow.yaml",
        &flow(
            "badzone",
            "{cron: \"0 9 * * *\", timezone: \"Mars/Olympus\"}",
        ),
    );
    write(
        home.path(),
        "user_data/shared/flows/fast.flow.yaml",
        &flow("fast", "{interval: 3}"),
    );
    let k = Kernel::start(home.path(), &[]);

    let before = Utc::now();
    let (s, all) = k.get("/api/schedules").await;
    let after = Utc::now();
    assert_eq!(s, 200, "{all}");
    let list = all["data"]["schedules"].as_array().unwrap();
    let find = |id: &str| {
        list.iter()
            .find(|s| s["flow_id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {all}"))
    };
    for (id, expr, tz) in crons {
        let s = find(id);
        let fields: Vec<&str> = expr.split(' ').collect();
        let fields: [&str; 5] = fields.try_into().unwrap();
        let offset = if tz.is_some() { 9 } else { 0 };
        // The kernel's "now" lies between the test's two readings.
        let candidates = [
            expected_next(before, offset, fields),
            expected_next(after, offset, fields),
        ];
        let next = s["next_fire"].as_str().unwrap_or_default().to_string();
        assert!(
            candidates.contains(&next),
            "{id}: {next} not in {candidates:?}: {s}"
        );
        assert_eq!(s["cron"], expr);
        assert_eq!(s["timezone"], tz.unwrap_or("UTC"));
        assert_eq!(
            (s["valid"].clone(), s["error"].clone()),
            (Value::Bool(true), Value::Null),
            "{s}"
        );
        assert_eq!(s["skipped_ticks"], 0);
        assert!(s.get("interval").is_none());
    }
    for (id, says) in [
        ("bad", "unknown key \"every\""),
        ("badzone", "unknown time zone"),
    ] {
        let s = find(id);
        assert_eq!(
            (s["valid"].clone(), s["next_fire"].clone()),
            (Value::Bool(false), Value::Null),
            "{s}"
        );
        assert!(s["error"].as_str().unwrap().contains(says), "{s}");
    }
    let fast = find("fast");
    assert_eq!(fast["interval"], 10, "{fast}");
    assert!(fast["valid"].as_bool().unwrap());
    assert!(
        fast["note"].as_str().unwrap().contains("raised to 10"),
        "{fast}"
    );
    assert!(
        fast["error"].as_str().unwrap().contains("raised to 10"),
        "{fast}"
    );
    assert!(fast.get("cron").is_none());

    // A bad schedule does not break its flow.
    let (s, run) = k.run("bad", serde_json::json!({})).await;
    assert_eq!(
        (s, &run["status"]),
        (200, &Value::from("succeeded")),
        "{run}"
    );

    // The CLI: a table by default, the API's data with --json.
    let o = ok(rumi(&k), &["schedules"]);
    assert!(o.stdout.starts_with("FLOW"), "{}", o.stdout);
    assert!(
        o.stdout.contains("*/5 * * * *") && o.stdout.contains("Asia/Tokyo"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("unknown key"), "{}", o.stdout);
    let j = ok(rumi(&k), &["schedules", "--json"]).json();
    assert_eq!(j["schedules"].as_array().unwrap().len(), 8, "{j}");

    // A reload re-plans an edited schedule and drops a removed one; the others keep their plan.
    let sunday = find("sunday9").clone();
    write(
        home.path(),
        "user_data/shared/flows/every5.flow.yaml",
        &flow("every5", "{cron: \"0 9 * * 7\", timezone: \"Asia/Tokyo\"}"),
    );
    std::fs::remove_file(home.path().join("user_data/shared/flows/bad.flow.yaml")).unwrap();
    let now = Utc::now();
    k.reload().await;
    let edited = schedule(&k, "every5").await;
    assert_eq!(edited["cron"], "0 9 * * 7");
    assert_eq!(edited["timezone"], "Asia/Tokyo");
    assert_eq!(
        edited["next_fire"],
        Value::from(expected_next(now, 9, ["0", "9", "*", "*", "7"]))
    );
    assert_eq!(schedule(&k, "bad").await, Value::Null);
    assert_eq!(
        schedule(&k, "sunday9").await["next_fire"],
        sunday["next_fire"]
    );
}
