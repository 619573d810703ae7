//! `rumi pack list|show|scan|approve|reject|diff|uninstall`.

use super::output::{cell, clean, clip, short, text, when, Out};
use super::PackCommand;
use crate::client::{enc, ApiFailure, Client};
use anyhow::Result;
use comfy_table::Cell;
use serde_json::{json, Value};

pub async fn run(c: &Client, out: &Out, cmd: PackCommand) -> Result<()> {
    match cmd {
        PackCommand::List => {
            let packs = c.get("/api/packs").await?;
            list(out, &packs);
        }
        PackCommand::Scan => {
            let packs = c.post("/api/packs/scan", json!({})).await?;
            list(out, &packs);
        }
        PackCommand::Show { pack_id } => {
            let p = c.get(&format!("/api/packs/{}", enc(&pack_id))).await?;
            show(out, &p);
        }
        PackCommand::Approve { pack_id } => {
            let path = format!("/api/packs/{}/approve", enc(&pack_id));
            let p = match c.post(&path, json!({})).await {
                // A pack put in place after the last scan is not known yet: look, then retry.
                Err(e) if is_not_found(&e) => {
                    c.post("/api/packs/scan", json!({})).await?;
                    c.post(&path, json!({})).await?
                }
                other => other?,
            };
            if out.json {
                out.print_json(&p);
                return Ok(());
            }
            println!(
                "{} {}: {} file(s), manifest {}",
                out.paint_status("approved", "approved"),
                text(&p["pack_id"]),
                text(&p["file_count"]),
                short(&p["manifest_hash"], 16)
            );
            warnings(out, &p);
        }
        PackCommand::Reject { pack_id, reason } => {
            let p = c
                .post(
                    &format!("/api/packs/{}/reject", enc(&pack_id)),
                    json!({ "reason": reason }),
                )
                .await?;
            if out.json {
                out.print_json(&p);
                return Ok(());
            }
            println!(
                "{} {}{}",
                out.paint_status("blocked", "rejected"),
                text(&p["pack_id"]),
                p["reason"]
                    .as_str()
                    .map(|r| format!(": {}", clean(r)))
                    .unwrap_or_default()
            );
        }
        PackCommand::Diff { pack_id } => {
            // A scan first, so a change made a moment ago is seen without waiting for a call.
            c.post("/api/packs/scan", json!({})).await?;
            let s = c
                .get(&format!("/api/packs/{}/status", enc(&pack_id)))
                .await?;
            diff(out, &s);
        }
        PackCommand::Uninstall { pack_id, purge } => {
            let path = format!("/api/packs/{}?purge={purge}", enc(&pack_id));
            let u = c.call(reqwest::Method::DELETE, &path, None).await?;
            if out.json {
                out.print_json(&u);
                return Ok(());
            }
            let id = text(&u["pack_id"]);
            let grants = match (
                u["network_grant_removed"].as_bool() == Some(true),
                u["capability_principals_removed"].as_u64().unwrap_or(0),
            ) {
                (false, 0) => "it held no grants".to_string(),
                (net, caps) => format!(
                    "removed: {}{} capability principal(s)",
                    if net { "its network grant, " } else { "" },
                    caps
                ),
            };
            if u["purged"].as_bool() == Some(true) {
                println!("{id} uninstalled and purged (files and data removed); {grants}");
            } else {
                println!("{id} uninstalled; its files stay (state: installed); {grants}");
            }
        }
        PackCommand::LibRun { pack_id } => super::extras::lib_run(c, out, &pack_id).await?,
        PackCommand::Import { path } => super::pack_import::import(c, out, &path).await?,
        PackCommand::Apply { staging_id } => super::pack_import::apply(c, out, &staging_id).await?,
        PackCommand::New { .. } | PackCommand::Test { .. } => {
            unreachable!("handled without a client")
        }
    }
    Ok(())
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status == reqwest::StatusCode::NOT_FOUND)
}

fn list(out: &Out, packs: &Value) {
    if out.json {
        return out.print_json(packs);
    }
    let items = packs.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        println!("no packs: put one under ecosystem/<pack_id>/ or write one with `rumi pack new <pack_id>`");
        return;
    }
    let rows = items
        .iter()
        .map(|p| {
            let state = text(&p["state"]);
            vec![
                cell(&p["pack_id"]),
                out.status_cell(&state),
                cell(&p["version"]),
                cell(&p["file_count"]),
                Cell::new(when(&p["decided_at"])),
                Cell::new(match p["error"].as_str() {
                    Some(e) => clip(e, 60),
                    None => short(&p["description"], 60),
                }),
            ]
        })
        .collect();
    out.table(
        &[
            "pack",
            "state",
            "version",
            "files",
            "decided",
            "description",
        ],
        rows,
    );
}

fn show(out: &Out, p: &Value) {
    if out.json {
        return out.print_json(p);
    }
    let state = text(&p["state"]);
    let mut pairs = vec![
        ("pack", text(&p["pack_id"])),
        ("state", out.paint_status(&state, &state)),
        ("identity", text(&p["pack_identity"])),
        ("version", text(&p["version"])),
        ("description", text(&p["description"])),
        ("path", text(&p["path"])),
        ("files", text(&p["file_count"])),
        ("manifest", text(&p["manifest_hash"])),
        ("decided", text(&p["decided_at"])),
        ("load index", text(&p["load_index"])),
    ];
    for problem in p["load_problems"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        pairs.push(("load problem", clean(&text(problem))));
    }
    if let Some(r) = p["reason"].as_str() {
        pairs.push(("reason", clean(r)));
    }
    if let Some(e) = p["error"].as_str() {
        pairs.push(("error", clean(e)));
    }
    if !p["connectivity"].is_null() {
        pairs.push(("connectivity", text(&p["connectivity"])));
    }
    if !p["declared_permissions"].is_null() {
        pairs.push(("declared permissions", text(&p["declared_permissions"])));
    }
    out.fields(&pairs);
    if p["changes"].is_object() {
        println!();
        print_changes(out, &p["changes"]);
    }
    super::extras::show_extras(out, p);
}

fn diff(out: &Out, s: &Value) {
    if out.json {
        return out.print_json(s);
    }
    let id = text(&s["pack_id"]);
    match s["state"].as_str() {
        Some("installed") => {
            println!("{id} has never been approved: every file is new (`rumi pack approve {id}` after reading them)")
        }
        _ if s["changes"].is_object() => {
            println!("{id} changed since it was approved:");
            print_changes(out, &s["changes"]);
            if ["added", "removed", "changed"]
                .iter()
                .all(|k| s["changes"][*k].as_array().is_none_or(Vec::is_empty))
            {
                println!("  (the files are back as they were approved)");
            }
            println!("its code does not run until `rumi pack approve {id}`");
        }
        Some(state) => println!(
            "{id} ({state}): no change since the decision at {}",
            text(&s["decided_at"])
        ),
        None => println!("{id}: no state"),
    }
}

fn print_changes(out: &Out, changes: &Value) {
    for (key, mark, status) in [
        ("added", "+", "succeeded"),
        ("removed", "-", "failed"),
        ("changed", "~", "modified"),
    ] {
        for f in changes[key].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            println!("  {} {}", out.paint_status(status, mark), text(f));
        }
    }
}

/// Problems the kernel found while acting (e.g. flows of an approved pack that fail to load).
pub fn warnings(out: &Out, v: &Value) {
    for w in v["warnings"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        eprintln!("{} {}", out.paint_status("warning", "warning:"), text(w));
    }
}
