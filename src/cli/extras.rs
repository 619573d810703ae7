//! `rumi pack lib-run <id>`, `rumi vocab`, and the lib and component lines of `rumi pack show`.

use super::output::{cell, clean, text, Out};
use crate::client::{enc, Client};
use anyhow::Result;
use comfy_table::Cell;
use serde_json::{json, Value};

/// `rumi pack lib-run <id>`: runs the pack's lib script now; exits 1 when it failed.
pub async fn lib_run(c: &Client, out: &Out, pack_id: &str) -> Result<()> {
    let r = c
        .post(&format!("/api/packs/{}/lib/run", enc(pack_id)), json!({}))
        .await?;
    if out.json {
        out.print_json(&r);
    } else {
        let ok = r["ok"].as_bool() == Some(true);
        println!(
            "{} {} of {}{}",
            out.paint_status(
                if ok { "approved" } else { "blocked" },
                if ok { "ok" } else { "failed" }
            ),
            text(&r["lib_type"]),
            text(&r["pack_id"]),
            r["error"]
                .as_str()
                .map(|e| format!(": {}", clean(e)))
                .unwrap_or_default()
        );
        if let Some(log) = r["log"].as_str().filter(|l| !l.is_empty()) {
            println!("{}", clean(log));
        }
    }
    if r["ok"].as_bool() != Some(true) {
        anyhow::bail!("the lib script of {pack_id} failed");
    }
    Ok(())
}

/// `rumi vocab`: the groups of synonyms, then the converters.
pub async fn vocab(c: &Client, out: &Out) -> Result<()> {
    let v = c.get("/api/vocab").await?;
    if out.json {
        out.print_json(&v);
        return Ok(());
    }
    let groups = v["groups"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if groups.is_empty() {
        println!("no vocabulary: approved packs add synonyms in vocab.txt");
    } else {
        let rows = groups
            .iter()
            .map(|g| {
                let terms = g.as_array().map(Vec::as_slice).unwrap_or(&[]);
                let rest: Vec<String> = terms.iter().skip(1).map(text).collect();
                vec![
                    cell(terms.first().unwrap_or(&Value::Null)),
                    Cell::new(clean(&rest.join(", "))),
                ]
            })
            .collect();
        out.table(&["preferred", "synonyms"], rows);
    }
    let convs = v["converters"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !convs.is_empty() {
        println!();
        let rows = convs
            .iter()
            .map(|c| vec![cell(&c["from"]), cell(&c["to"]), cell(&c["pack_id"])])
            .collect();
        out.table(&["from", "to", "pack"], rows);
    }
    Ok(())
}

/// The lib and component part of `rumi pack show`.
pub fn show_extras(out: &Out, p: &Value) {
    if p["lib"].is_object() {
        let l = &p["lib"];
        let ok = l["ok"].as_bool() == Some(true);
        println!(
            "\nlib: {} {} at {}{}",
            text(&l["lib_type"]),
            out.paint_status(
                if ok { "approved" } else { "blocked" },
                if ok { "ok" } else { "failed" }
            ),
            text(&l["ts"]),
            l["error"]
                .as_str()
                .map(|e| format!(": {}", clean(e)))
                .unwrap_or_default()
        );
    }
    let comps = p["components"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !comps.is_empty() {
        println!();
        let rows = comps
            .iter()
            .map(|c| {
                vec![
                    cell(&c["component_id"]),
                    cell(&c["state"]),
                    cell(&c["reason"]),
                ]
            })
            .collect();
        out.table(&["component", "state", "reason"], rows);
    }
}
