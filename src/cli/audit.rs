//! `rumi audit [--category] [--date] [--limit] [--follow]` and `rumi diagnostics`.

use super::output::{cell, clip, short, text, Out};
use super::AuditArgs;
use crate::client::{enc, into_data, Client};
use anyhow::Result;
use comfy_table::Cell;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// How often `--follow` asks again.
const POLL: Duration = Duration::from_millis(500);

pub async fn audit(c: &Client, out: &Out, a: AuditArgs) -> Result<()> {
    let mut query = format!("limit={}", a.limit);
    if let Some(cat) = &a.category {
        query.push_str(&format!("&category={}", enc(cat)));
    }
    if let Some(d) = &a.date {
        query.push_str(&format!("&date={}", enc(d)));
    }
    let reply = c
        .request(Method::GET, &format!("/api/audit?{query}"), None)
        .await?;
    let mut after = header(&reply, "rumi-audit-after");
    let entries = into_data(reply)?;
    if !a.follow {
        if out.json {
            out.print_json(&entries);
        } else {
            table(out, &entries);
        }
        return Ok(());
    }
    print_lines(out, &entries);
    let mut day = today();
    loop {
        tokio::time::sleep(POLL).await;
        // After midnight (UTC) new entries go to the new day's files: follow them from their start.
        let now = today();
        let path = match (&after, a.date.is_none() && now != day) {
            (_, true) => {
                day = now;
                format!("/api/audit?limit=1000{}", category_query(&a))
            }
            (Some(cur), false) => format!(
                "/api/audit?limit=1000&after={}{}",
                enc(cur),
                category_query(&a)
            ),
            (None, false) => continue,
        };
        let reply = c.request(Method::GET, &path, None).await?;
        if let Some(cur) = header(&reply, "rumi-audit-after") {
            after = Some(cur);
        }
        print_lines(out, &into_data(reply)?);
    }
}

fn category_query(a: &AuditArgs) -> String {
    a.category
        .as_deref()
        .map(|c| format!("&category={}", enc(c)))
        .unwrap_or_default()
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn header(reply: &crate::client::Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// What an entry is about: the pack, the flow, the run and the step it names.
fn subject(e: &Value) -> String {
    let ids = ["owner_pack", "flow_id", "run_id", "step_id"]
        .iter()
        .filter_map(|k| e[*k].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    super::output::clean(&ids)
}

fn outcome(e: &Value) -> String {
    match (e["error"].as_str(), e["rejection_reason"].as_str()) {
        (Some(err), _) => match e["error_type"].as_str() {
            Some(t) => format!("{t}: {err}"),
            None => err.to_string(),
        },
        (None, Some(r)) => r.to_string(),
        (None, None) => short(&e["details"], 200),
    }
}

fn table(out: &Out, entries: &Value) {
    let list = items(entries);
    if list.is_empty() {
        println!("no audit entries for that day and category");
        return;
    }
    let rows = list
        .iter()
        .map(|e| {
            let ok = if e["success"] == Value::Bool(true) {
                "ok"
            } else {
                "failed"
            };
            vec![
                cell(&e["ts"]),
                cell(&e["category"]),
                cell(&e["action"]),
                out.status_cell(ok),
                Cell::new(subject(e)),
                Cell::new(clip(&outcome(e), 80)),
            ]
        })
        .collect();
    out.table(
        &["time", "category", "action", "ok", "subject", "details"],
        rows,
    );
}

/// `--follow` prints one line per entry (JSON lines with `--json`), so it can be piped.
fn print_lines(out: &Out, entries: &Value) {
    for e in items(entries) {
        if out.json {
            println!("{e}");
            continue;
        }
        let ok = if e["success"] == Value::Bool(true) {
            "ok"
        } else {
            "failed"
        };
        println!(
            "{} {} {} {} {} {}",
            text(&e["ts"]),
            text(&e["category"]),
            text(&e["action"]),
            out.paint_status(ok, ok),
            subject(e),
            clip(&outcome(e), 200)
        );
    }
}

pub async fn diagnostics(c: &Client, out: &Out) -> Result<()> {
    let d = c.get("/api/diagnostics").await?;
    if out.json {
        out.print_json(&d);
        return Ok(());
    }
    out.fields(&[
        ("mode", text(&d["mode"])),
        (
            "uptime",
            format!("{:.0} s", d["uptime_seconds"].as_f64().unwrap_or(0.0)),
        ),
        ("load order", text(&d["load_order"])),
        (
            "flows running",
            format!(
                "{} (queued {})",
                text(&d["limiter"]["running"]),
                text(&d["limiter"]["queued"])
            ),
        ),
    ]);
    let problems: Vec<String> = items(&d["flow_problems"])
        .iter()
        .map(|p| text(&p["message"]))
        .chain(items(&d["pack_problems"]).iter().map(text))
        .collect();
    println!();
    if problems.is_empty() {
        println!("no load problems");
    } else {
        println!("load problems:");
        for p in &problems {
            println!("  {} {p}", out.paint_status("failed", "!"));
        }
    }
    let events = items(&d["events"]);
    if !events.is_empty() {
        println!();
        println!("recent events ({}):", events.len());
        for e in events.iter().rev().take(20) {
            println!("  {}", clip(&e.to_string(), 160));
        }
    }
    let containers = items(&d["containers"]);
    if !containers.is_empty() {
        println!();
        let rows = containers
            .iter()
            .map(|s| vec![cell(&s["pack_id"]), Cell::new(clip(&s.to_string(), 100))])
            .collect();
        out.table(&["pack", "container"], rows);
    }
    Ok(())
}
