//! `rumi pip scan|list|approve|reject|blocked|unblock`: pip dependencies of packs (contract §9
//! "pip"): `requirements.lock` candidates, their review and their offline install. Tables by
//! default, the API's `data` with `--json`.

use super::flows::Failed;
use super::output::{cell, clip, text, Out};
use crate::client::{enc, Client};
use anyhow::Result;
use clap::Subcommand;
use comfy_table::Cell;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum PipCommand {
    /// Look for requirements.lock in every pack now; valid new ones are pending, refused lines
    /// are listed.
    Scan,
    /// pip candidates with their status.
    List {
        /// pending, rejected, blocked, installed, failed or all (default).
        #[arg(long)]
        status: Option<String>,
    },
    /// Download a lock's wheels and install them offline into the pack's site-packages.
    Approve {
        /// pack_id:relpath:sha256, as `rumi pip list` shows it.
        candidate_key: String,
        /// Refused by this kernel (building an sdist runs its setup.py); kept so the refusal
        /// says why.
        #[arg(long)]
        allow_sdist: bool,
        /// An https index with a public host (default: the machine's pip configuration).
        #[arg(long)]
        index_url: Option<String>,
    },
    /// Reject a candidate for an hour; the third rejection blocks it.
    Reject {
        candidate_key: String,
        /// Why, for the audit log and the listing.
        #[arg(long)]
        reason: String,
    },
    /// Blocked candidates.
    Blocked,
    /// Unblock a candidate: pending again, its rejection count reset.
    Unblock {
        candidate_key: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs a `rumi pip` command; an approval whose install failed exits 1.
pub async fn run(c: &Client, out: &Out, cmd: PipCommand) -> Result<Option<Failed>> {
    match cmd {
        PipCommand::Scan => {
            let report = c.post("/api/pip/candidates/scan", json!({})).await?;
            if out.json {
                out.print_json(&report);
                return Ok(None);
            }
            let invalid = report["invalid"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            println!(
                "{} pack(s) scanned: {} candidate(s), {} new, {} refused line(s)",
                text(&report["packs"]),
                report["candidates"].as_array().map_or(0, Vec::len),
                text(&report["new"]),
                invalid.len(),
            );
            table(out, &report["candidates"], "no requirements.lock found");
            if !invalid.is_empty() {
                let rows = invalid
                    .iter()
                    .map(|i| {
                        vec![
                            cell(&i["pack_id"]),
                            cell(&i["relpath"]),
                            cell(&i["line"]),
                            cell(&i["reason"]),
                        ]
                    })
                    .collect();
                out.table(&["pack", "file", "line", "refused because"], rows);
            }
        }
        PipCommand::List { status } => {
            let path = match status {
                Some(s) => format!("/api/pip/requests?status={}", enc(&s)),
                None => "/api/pip/requests".to_string(),
            };
            let list = c.get(&path).await?;
            if out.json {
                out.print_json(&list);
            } else {
                table(
                    out,
                    &list["items"],
                    "no pip candidates; `rumi pip scan` looks for requirements.lock in every pack",
                );
            }
        }
        PipCommand::Approve {
            candidate_key,
            allow_sdist,
            index_url,
        } => {
            let item = c
                .post(
                    &format!("/api/pip/requests/{}/approve", enc(&candidate_key)),
                    json!({"allow_sdist": allow_sdist, "index_url": index_url}),
                )
                .await?;
            if item["status"] == "installed" {
                let dists: Vec<String> = item["installed"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .iter()
                    .map(|d| format!("{}=={}", text(&d["name"]), text(&d["version"])))
                    .collect();
                decided(
                    out,
                    &item,
                    "approved",
                    &format!("installed {}", dists.join(", ")),
                );
            } else {
                decided(
                    out,
                    &item,
                    "failed",
                    &format!("failed: {}", text(&item["reason"])),
                );
                return Ok(Some(Failed));
            }
        }
        PipCommand::Reject {
            candidate_key,
            reason,
        } => {
            let item = c
                .post(
                    &format!("/api/pip/requests/{}/reject", enc(&candidate_key)),
                    json!({"reason": reason}),
                )
                .await?;
            let what = if item["status"] == "blocked" {
                "blocked (third rejection); `rumi pip unblock` brings it back".to_string()
            } else {
                format!(
                    "rejected {} time(s); offered again after {}",
                    text(&item["reject_count"]),
                    text(&item["cooldown_until"])
                )
            };
            decided(out, &item, "denied", &what);
        }
        PipCommand::Blocked => {
            let list = c.get("/api/pip/blocked").await?;
            if out.json {
                out.print_json(&list);
            } else {
                table(out, &list["items"], "no blocked pip candidates");
            }
        }
        PipCommand::Unblock {
            candidate_key,
            reason,
        } => {
            let item = c
                .post(
                    &format!("/api/pip/blocked/{}/unblock", enc(&candidate_key)),
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
    }
    Ok(None)
}

fn decided(out: &Out, item: &Value, status: &str, what: &str) {
    if out.json {
        out.print_json(item);
    } else {
        println!(
            "{} {} ({} {}): {what}",
            out.paint_status(status, &text(&item["status"])),
            text(&item["candidate_key"]),
            text(&item["pack_id"]),
            text(&item["relpath"]),
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
            let pins: Vec<String> = i["packages"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .map(|p| format!("{}=={}", text(&p["name"]), text(&p["version"])))
                .collect();
            vec![
                out.status_cell(&text(&i["status"])),
                cell(&i["pack_id"]),
                cell(&i["relpath"]),
                Cell::new(clip(&pins.join(" "), 60)),
                cell(&i["reject_count"]),
                cell(&i["cooldown_until"]),
                Cell::new(clip(&text(&i["reason"]), 60)),
                cell(&i["candidate_key"]),
            ]
        })
        .collect();
    out.table(
        &[
            "status",
            "pack",
            "file",
            "packages",
            "rejects",
            "cooldown until",
            "reason",
            "candidate key",
        ],
        rows,
    );
}
