//! `rumi capability candidates|scan|approve|reject|blocked|unblock`: third-party capability
//! handler candidates and their trust (contract §7.2). Tables by default, the API's `data` with
//! `--json`.

use super::flows::Failed;
use super::output::{cell, clip, text, Out};
use super::CapabilityCommand;
use crate::client::{enc, Client};
use anyhow::Result;
use comfy_table::Cell;
use serde_json::{json, Value};

/// Runs a `rumi capability` command of the candidate workflow.
pub async fn run(c: &Client, out: &Out, cmd: CapabilityCommand) -> Result<Option<Failed>> {
    match cmd {
        CapabilityCommand::Candidates { status } => {
            let path = match status {
                Some(s) => format!("/api/capability/requests?status={}", enc(&s)),
                None => "/api/capability/requests".to_string(),
            };
            let list = c.get(&path).await?;
            if out.json {
                out.print_json(&list);
            } else {
                table(
                    out,
                    &list["items"],
                    "no capability handler candidates; `rumi capability scan` looks for them in every pack",
                );
            }
        }
        CapabilityCommand::Scan => {
            let report = c.post("/api/capability/candidates/scan", json!({})).await?;
            if out.json {
                out.print_json(&report);
                return Ok(None);
            }
            println!(
                "{} pack(s) scanned: {} candidate(s), {} new, {} invalid",
                text(&report["packs"]),
                report["candidates"].as_array().map_or(0, Vec::len),
                text(&report["new"]),
                report["invalid"].as_array().map_or(0, Vec::len),
            );
            table(out, &report["candidates"], "no candidates found");
            let invalid = report["invalid"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if !invalid.is_empty() {
                let rows = invalid
                    .iter()
                    .map(|i| vec![cell(&i["pack_id"]), cell(&i["slug"]), cell(&i["reason"])])
                    .collect();
                out.table(&["pack", "slug", "invalid because"], rows);
            }
        }
        CapabilityCommand::Approve {
            candidate_key,
            notes,
        } => {
            let item = c
                .post(
                    &format!("/api/capability/requests/{}/approve", enc(&candidate_key)),
                    json!({"notes": notes}),
                )
                .await?;
            decided(
                out,
                &item,
                "approved",
                "installed; grant it with `rumi capability grant` before packs can call it",
            );
        }
        CapabilityCommand::Reject {
            candidate_key,
            reason,
        } => {
            let item = c
                .post(
                    &format!("/api/capability/requests/{}/reject", enc(&candidate_key)),
                    json!({"reason": reason}),
                )
                .await?;
            let what = if item["status"] == "blocked" {
                "blocked (third rejection); `rumi capability unblock` brings it back".to_string()
            } else {
                format!(
                    "rejected {} time(s); offered again after {}",
                    text(&item["reject_count"]),
                    text(&item["cooldown_until"])
                )
            };
            decided(out, &item, "denied", &what);
        }
        CapabilityCommand::Blocked => {
            let list = c.get("/api/capability/blocked").await?;
            if out.json {
                out.print_json(&list);
            } else {
                table(out, &list["items"], "no blocked candidates");
            }
        }
        CapabilityCommand::Unblock {
            candidate_key,
            reason,
        } => {
            let item = c
                .post(
                    &format!("/api/capability/blocked/{}/unblock", enc(&candidate_key)),
                    json!({"reason": reason}),
                )
                .await?;
            decided(
                out,
                &item,
                "pending",
                "pending again, its rejection count reset",
            );
        }
        // Grants are `capability.rs`'s, which hands over only the commands above.
        CapabilityCommand::Grant { .. }
        | CapabilityCommand::Revoke { .. }
        | CapabilityCommand::Grants { .. } => {
            return Err(anyhow::anyhow!(
                "internal: a grant command reached the handler commands"
            ))
        }
    }
    Ok(None)
}

/// One decided candidate: its JSON, or a line saying what happened.
fn decided(out: &Out, item: &Value, status: &str, what: &str) {
    if out.json {
        out.print_json(item);
    } else {
        println!(
            "{} {} ({} → {}): {what}",
            out.paint_status(status, &text(&item["status"])),
            text(&item["candidate_key"]),
            text(&item["pack_id"]),
            text(&item["permission_id"]),
        );
    }
}

fn table(out: &Out, items: &Value, empty: &str) {
    let items = items.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        println!("{empty}");
        return;
    }
    let rows = items
        .iter()
        .map(|i| {
            vec![
                out.status_cell(&text(&i["status"])),
                cell(&i["pack_id"]),
                cell(&i["slug"]),
                cell(&i["handler_id"]),
                cell(&i["permission_id"]),
                cell(&i["reject_count"]),
                cell(&i["cooldown_until"]),
                Cell::new(clip(&text(&i["sha256"]), 12)),
                trust_cell(out, i),
                cell(&i["candidate_key"]),
            ]
        })
        .collect();
    out.table(
        &[
            "status",
            "pack",
            "slug",
            "handler",
            "permission",
            "rejects",
            "cooldown until",
            "sha256",
            "trust",
            "candidate key",
        ],
        rows,
    );
}

/// An installed candidate's trust now: `trusted`, or `denied: <why>`; empty for the others.
fn trust_cell(out: &Out, i: &Value) -> Cell {
    match i["trusted"].as_bool() {
        Some(true) => out.status_cell("trusted"),
        Some(false) => out.paint_cell(
            "denied",
            &format!("denied: {}", clip(&text(&i["untrusted_reason"]), 60)),
        ),
        None => Cell::new(""),
    }
}
