//! `rumi schedules` (contract §10), the CLI face of `GET /api/schedules`: one row per flow that
//! has a schedule — what it is, its time zone, when it fires next, its last run, skipped ticks and
//! any problem.

use super::flows::Failed;
use super::output::{cell, clip, text, Out};
use crate::client::Client;
use anyhow::Result;
use comfy_table::Cell;
use serde_json::Value;

pub async fn list(c: &Client, out: &Out) -> Result<Option<Failed>> {
    let v = c.get("/api/schedules").await?;
    if out.json {
        out.print_json(&v);
        return Ok(None);
    }
    let items = v["schedules"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        println!(
            "no schedules: give a flow `schedule: {{cron: \"*/5 * * * *\"}}` or `schedule: {{interval: 30}}`, then `rumi flow reload`"
        );
        return Ok(None);
    }
    let rows = items.iter().map(|s| row(out, s)).collect();
    out.table(
        &[
            "flow",
            "schedule",
            "timezone",
            "next fire",
            "last run",
            "skipped",
            "problem",
        ],
        rows,
    );
    Ok(None)
}

fn row(out: &Out, s: &Value) -> Vec<Cell> {
    let what = match (&s["cron"], &s["interval"]) {
        (Value::String(cron), _) => cron.clone(),
        (_, Value::Number(n)) => format!("every {n} s"),
        _ => "-".into(),
    };
    let last = match &s["last_run"] {
        Value::Object(r) => {
            let status = text(&r["status"]);
            out.paint_cell(&status, &format!("{status} {}", text(&r["run_id"])))
        }
        _ if s["running"] == Value::Bool(true) => out.status_cell("running"),
        _ => Cell::new("-"),
    };
    let problem = clip(&text(&s["error"]), 60);
    vec![
        cell(&s["flow_id"]),
        if s["valid"] == Value::Bool(true) {
            Cell::new(clip(&what, 30))
        } else {
            out.paint_cell("error", &clip(&what, 30))
        },
        cell(&s["timezone"]),
        cell(&s["next_fire"]),
        last,
        cell(&s["skipped_ticks"]),
        if s["valid"] == Value::Bool(true) {
            Cell::new(problem)
        } else {
            out.paint_cell("error", &problem)
        },
    ]
}
