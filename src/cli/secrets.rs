//! `rumi secrets set|delete|list` and `rumi stores create|list` (contract §8), the CLI face of
//! `/api/secrets*` and `/api/stores*`. A secret's value comes from `--value` or standard input
//! (read without echo on a terminal) and is never printed.

use super::flows::Failed;
use super::output::{cell, Out};
use super::{SecretsCommand, StoresCommand};
use crate::client::Client;
use anyhow::{anyhow, Result};
use serde_json::json;
use std::io::{IsTerminal, Read};

/// The value of `rumi secrets set` when `--value` is absent: a line typed without echo on a
/// terminal, else all of standard input without its final newline.
pub fn read_value(key: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("value of {key} (not shown): ");
        let line = without_echo(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })?;
        eprintln!();
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let mut value = String::new();
    stdin
        .lock()
        .read_to_string(&mut value)
        .map_err(|e| anyhow!("the value on standard input could not be read: {e}"))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// Runs `f` with the terminal's echo off, restoring it after.
fn without_echo<T>(f: impl FnOnce() -> std::io::Result<T>) -> Result<T> {
    // SAFETY: a zeroed termios is a valid out-parameter for tcgetattr.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 and a valid pointer.
    let have = unsafe { libc::tcgetattr(0, &mut saved) } == 0;
    if have {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: fd 0 and a valid termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
    }
    let r = f();
    if have {
        // SAFETY: restores what tcgetattr read.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    }
    Ok(r?)
}

pub async fn secrets(c: &Client, out: &Out, cmd: SecretsCommand) -> Result<Option<Failed>> {
    match cmd {
        SecretsCommand::Set { key, value } => {
            let value = match value {
                Some(v) => v,
                None => read_value(&key)?,
            };
            if value.is_empty() {
                return Err(anyhow!(
                    "no value for {key}: pipe it in (`printf %s \"$VALUE\" | rumi secrets set {key}`) or type it at the prompt"
                ));
            }
            let info = c
                .post("/api/secrets/set", json!({"key": key, "value": value}))
                .await?;
            drop(value);
            if out.json {
                out.print_json(&info);
            } else {
                println!("{} secret {key}", out.paint_status("ok", "set:"));
            }
        }
        SecretsCommand::Delete { key } => {
            let info = c.post("/api/secrets/delete", json!({"key": key})).await?;
            if out.json {
                out.print_json(&info);
            } else {
                println!("{} secret {key}", out.paint_status("denied", "deleted:"));
            }
        }
        SecretsCommand::List => {
            let v = c.get("/api/secrets").await?;
            if out.json {
                out.print_json(&v);
                return Ok(None);
            }
            let items = v["secrets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if items.is_empty() {
                println!(
                    "no secrets: `rumi secrets set <KEY>` sets one (the value from standard input)"
                );
                return Ok(None);
            }
            let rows = items
                .iter()
                .map(|s| {
                    let state = if s["deleted"] == json!(true) {
                        "deleted"
                    } else {
                        "set"
                    };
                    vec![
                        cell(&s["key"]),
                        out.paint_cell(if state == "set" { "ok" } else { "skipped" }, state),
                        cell(&s["created_at"]),
                        cell(&s["updated_at"]),
                    ]
                })
                .collect();
            out.table(&["key", "state", "created", "updated"], rows);
        }
    }
    Ok(None)
}

pub async fn stores(c: &Client, out: &Out, cmd: StoresCommand) -> Result<Option<Failed>> {
    match cmd {
        StoresCommand::Create {
            store_id,
            root_path,
        } => {
            let info = c
                .post(
                    "/api/stores/create",
                    json!({"store_id": store_id, "root_path": root_path}),
                )
                .await?;
            if out.json {
                out.print_json(&info);
            } else {
                println!(
                    "{} store {store_id} at {}",
                    out.paint_status("ok", "created:"),
                    super::output::text(&info["root_path"])
                );
            }
        }
        StoresCommand::List => {
            let v = c.get("/api/stores").await?;
            if out.json {
                out.print_json(&v);
                return Ok(None);
            }
            let items = v["stores"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if items.is_empty() {
                println!("no stores: `rumi stores create <id> user_data/stores/<id>` creates one");
                return Ok(None);
            }
            let rows = items
                .iter()
                .map(|s| {
                    let state = if s["available"] == json!(false) {
                        "unavailable"
                    } else {
                        "ok"
                    };
                    vec![
                        cell(&s["store_id"]),
                        cell(&s["root_path"]),
                        out.paint_cell(if state == "ok" { "ok" } else { "error" }, state),
                        cell(&s["created_at"]),
                    ]
                })
                .collect();
            out.table(&["store", "root", "state", "created"], rows);
        }
    }
    Ok(None)
}
