//! `rumi routes [list]` and `rumi routes reload` (contract §11): the CLI face of `GET /api/routes`
//! and `POST /api/routes/reload`. The table lists the routes that serve; clashes and refused
//! routes follow on stderr, each with what to do, and make the command exit 1 (a pack author
//! or an operator must see them).

use super::flows::Failed;
use super::output::{cell, clip, text, Out};
use super::RoutesCommand;
use crate::client::Client;
use anyhow::Result;
use serde_json::{json, Value};

pub async fn run(c: &Client, out: &Out, cmd: Option<RoutesCommand>) -> Result<Option<Failed>> {
    let table = match cmd.unwrap_or(RoutesCommand::List) {
        RoutesCommand::List => c.get("/api/routes").await?,
        RoutesCommand::Reload => c.post("/api/routes/reload", json!({})).await?,
    };
    if out.json {
        out.print_json(&table);
    } else {
        show(out, &table);
    }
    let problems = |k: &str| table[k].as_array().map_or(0, Vec::len);
    Ok((problems("clashes") + problems("refused") > 0).then_some(Failed))
}

fn show(out: &Out, t: &Value) {
    let empty = Vec::new();
    let routes = t["routes"].as_array().unwrap_or(&empty);
    if routes.is_empty() {
        println!("no pack routes: an approved pack declares them in its routes.json");
    } else {
        let rows = routes
            .iter()
            .map(|r| {
                vec![
                    cell(&r["method"]),
                    cell(&r["path"]),
                    cell(&r["flow_id"]),
                    cell(&r["pack_id"]),
                    comfy_table::Cell::new(clip(&text(&r["description"]), 60)),
                ]
            })
            .collect();
        out.table(&["METHOD", "PATH", "FLOW", "PACK", "DESCRIPTION"], rows);
    }
    for c in t["clashes"].as_array().unwrap_or(&empty) {
        eprintln!(
            "{} {} {} is kept by {} (earlier in load order); {}'s route is not served — give it another path",
            out.paint_status("failed", "clash:"),
            text(&c["method"]),
            text(&c["path"]),
            text(&c["kept_by"]),
            text(&c["refused_for"]),
        );
    }
    for r in t["refused"].as_array().unwrap_or(&empty) {
        eprintln!(
            "{} {} {} {}: {}",
            out.paint_status("failed", "refused:"),
            text(&r["pack_id"]),
            text(&r["method"]),
            text(&r["path"]),
            text(&r["reason"]),
        );
    }
}
