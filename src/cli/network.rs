//! `rumi network grant|revoke|list|check`.

use super::flows::Failed;
use super::output::{cell, text, Out};
use super::NetworkCommand;
use crate::client::Client;
use anyhow::Result;
use comfy_table::Cell;
use serde_json::{json, Value};

pub async fn run(c: &Client, out: &Out, cmd: NetworkCommand) -> Result<Option<Failed>> {
    match cmd {
        NetworkCommand::Grant {
            pack_id,
            domains,
            ports,
            notes,
        } => {
            let g = c
                .post(
                    "/api/network/grant",
                    json!({"pack_id": pack_id, "allowed_domains": domains,
                           "allowed_ports": ports, "notes": notes}),
                )
                .await?;
            if out.json {
                out.print_json(&g);
            } else {
                println!(
                    "{} {} to reach {} on port(s) {}",
                    out.paint_status("allowed", "granted"),
                    pack_id,
                    list_text(&g["allowed_domains"]),
                    list_text(&g["allowed_ports"])
                );
            }
        }
        NetworkCommand::Revoke { pack_id, reason } => {
            let g = c
                .post(
                    "/api/network/revoke",
                    json!({"pack_id": pack_id, "reason": reason}),
                )
                .await?;
            if out.json {
                out.print_json(&g);
            } else {
                println!(
                    "{} the network grant of {pack_id}",
                    out.paint_status("denied", "revoked")
                );
            }
        }
        NetworkCommand::List => {
            let grants = c.get("/api/network/list").await?;
            if out.json {
                out.print_json(&grants);
                return Ok(None);
            }
            let items = grants.as_array().map(Vec::as_slice).unwrap_or(&[]);
            if items.is_empty() {
                println!("no network grants: packs reach nothing until `rumi network grant <pack_id> --domain <d> --port <p>`");
                return Ok(None);
            }
            let rows = items
                .iter()
                .map(|g| {
                    vec![
                        cell(&g["pack_id"]),
                        out.status_cell(&text(&g["state"])),
                        cell(&g["pack_state"]),
                        Cell::new(list_text(&g["allowed_domains"])),
                        Cell::new(list_text(&g["allowed_ports"])),
                        cell(&g["granted_at"]),
                        cell(&g["notes"]),
                    ]
                })
                .collect();
            out.table(
                &[
                    "pack",
                    "grant",
                    "pack state",
                    "domains",
                    "ports",
                    "granted",
                    "notes",
                ],
                rows,
            );
        }
        NetworkCommand::Check {
            pack_id,
            domain,
            port,
        } => {
            let v = c
                .post(
                    "/api/network/check",
                    json!({"pack_id": pack_id, "domain": domain, "port": port}),
                )
                .await?;
            let allowed = v["allowed"] == Value::Bool(true);
            if out.json {
                out.print_json(&v);
            } else {
                let word = if allowed { "allowed" } else { "denied" };
                println!(
                    "{}: {pack_id} → {domain}:{port}: {}",
                    out.paint_status(word, word),
                    text(&v["reason"])
                );
                println!("  grant:   {}", text(&v["grant"]["reason"]));
                if v["address"].is_object() {
                    println!(
                        "  address: {} ({})",
                        text(&v["address"]["reason"]),
                        list_text(&v["address"]["addresses"])
                    );
                }
            }
            // A denial is an answer, not an error, but scripts test it with the exit status.
            if !allowed {
                return Ok(Some(Failed));
            }
        }
    }
    Ok(None)
}

fn list_text(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(text).collect::<Vec<_>>().join(", "),
        _ => "-".into(),
    }
}
