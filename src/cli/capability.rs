//! `rumi capability grant|revoke|grants`: capability grants (contract §7.3), the CLI face of
//! `/api/capability/grants*`. (The third-party handler commands live in
//! `capability_handlers.rs`.)

use super::flows::Failed;
use super::output::{cell, Out};
use super::CapabilityCommand;
use crate::client::{enc, Client};
use anyhow::{anyhow, Result};
use comfy_table::Cell;
use serde_json::{json, Value};

pub async fn run(c: &Client, out: &Out, cmd: CapabilityCommand) -> Result<Option<Failed>> {
    match cmd {
        CapabilityCommand::Grant {
            principal_id,
            permission_id,
            config,
        } => {
            let config: Value = match config {
                None => json!({}),
                Some(text) => serde_json::from_str(&text).map_err(|e| {
                    anyhow!("--config is not JSON ({e}); e.g. --config '{{\"allowed_store_ids\": [\"notes\"]}}'")
                })?,
            };
            let g = c
                .post(
                    "/api/capability/grants/grant",
                    json!({"principal_id": principal_id, "permission_id": permission_id,
                           "config": config}),
                )
                .await?;
            if out.json {
                out.print_json(&g);
            } else {
                println!(
                    "{} {principal_id} may use {permission_id} with config {}",
                    out.paint_status("allowed", "granted:"),
                    g["config"]
                );
            }
        }
        CapabilityCommand::Revoke {
            principal_id,
            permission_id,
        } => {
            let r = c
                .post(
                    "/api/capability/grants/revoke",
                    json!({"principal_id": principal_id, "permission_id": permission_id}),
                )
                .await?;
            if out.json {
                out.print_json(&r);
            } else {
                println!(
                    "{} {principal_id} may no longer use {permission_id}",
                    out.paint_status("denied", "revoked:")
                );
            }
        }
        CapabilityCommand::Grants { principal } => {
            let path = match &principal {
                Some(p) => format!("/api/capability/grants?principal_id={}", enc(p)),
                None => "/api/capability/grants".to_string(),
            };
            let v = c.get(&path).await?;
            if out.json {
                out.print_json(&v);
                return Ok(None);
            }
            let grants = v["grants"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if grants.is_empty() {
                println!("no capability grants: `rumi capability grant <principal> <permission> --config JSON` gives one");
                return Ok(None);
            }
            let rows = grants
                .iter()
                .map(|g| {
                    vec![
                        cell(&g["principal_id"]),
                        cell(&g["permission_id"]),
                        Cell::new(super::output::clean(&g["config"].to_string())),
                        cell(&g["granted_at"]),
                    ]
                })
                .collect();
            out.table(&["principal", "permission", "config", "granted"], rows);
        }
        other => return super::capability_handlers::run(c, out, other).await,
    }
    Ok(None)
}
