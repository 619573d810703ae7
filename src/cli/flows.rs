//! `rumi flow list|show|reload|run` and `rumi runs list|show [--follow]`.

use super::output::{cell, clip, millis, short, text, Out};
use super::{FlowCommand, RunsCommand};
use crate::client::{enc, into_data, ApiFailure, Client};
use anyhow::{anyhow, bail, Result};
use comfy_table::Cell;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How often `--follow` asks again.
const POLL: Duration = Duration::from_millis(500);

/// The exit status a command asks for when it did its work but the outcome is a failure (a
/// failed run, a flow that did not load).
pub struct Failed;

pub async fn flow(c: &Client, out: &Out, cmd: FlowCommand) -> Result<Option<Failed>> {
    match cmd {
        FlowCommand::List => {
            let flows = c.get("/api/flows").await?;
            list_flows(out, &flows);
        }
        FlowCommand::Show { flow_id } => {
            let f = c.get(&format!("/api/flows/{}", enc(&flow_id))).await?;
            show_flow(out, &f);
        }
        FlowCommand::Reload => {
            let r = c.post("/api/flows/reload", json!({})).await?;
            let problems = r["problems"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if out.json {
                out.print_json(&r);
            } else {
                println!("{} flow(s) loaded", text(&r["flows"]));
                for p in problems {
                    eprintln!("{} {}", out.paint_status("failed", "problem:"), text(p));
                }
                if !problems.is_empty() {
                    eprintln!(
                        "{} flow file(s) failed to load; `rumi diagnostics` lists every problem",
                        problems.len()
                    );
                }
            }
            if !problems.is_empty() {
                return Ok(Some(Failed));
            }
        }
        FlowCommand::Run {
            flow_id,
            inputs,
            timeout,
        } => {
            let inputs = parse_inputs(&inputs)?;
            let reply = c
                .request(
                    Method::POST,
                    &format!("/api/flows/{}/run", enc(&flow_id)),
                    Some(json!({"inputs": inputs, "timeout": timeout})),
                )
                .await?;
            let run = reply.body["data"].clone();
            if run["run_id"].is_string() && run["status"].is_string() {
                return Ok(show_run(out, &run));
            }
            let status = reply.status;
            return Err(match into_data(reply) {
                Err(e) => match e.downcast::<ApiFailure>() {
                    Ok(f) if status == StatusCode::NOT_FOUND && !f.message.contains("rumi diagnostics") => anyhow!(
                        "{f}; see `rumi flow list` for the loaded flows and `rumi diagnostics` for flows that failed to load"
                    ),
                    Ok(f) => f.into(),
                    Err(e) => e,
                },
                Ok(_) => anyhow!("the kernel answered {status} without a run"),
            });
        }
    }
    Ok(None)
}

pub async fn runs(c: &Client, out: &Out, cmd: RunsCommand) -> Result<Option<Failed>> {
    match cmd {
        RunsCommand::List {
            flow_id,
            limit,
            follow,
        } => {
            let path = runs_path(flow_id.as_deref(), limit);
            let runs = c.get(&path).await?;
            if !follow {
                list_runs(out, &runs);
                return Ok(None);
            }
            follow_runs(c, out, flow_id.as_deref(), runs).await
        }
        RunsCommand::Show {
            run_id,
            follow,
            wait,
        } => {
            let path = format!("/api/runs/{}", enc(&run_id));
            let deadline = Instant::now() + Duration::from_secs_f64(wait.clamp(0.0, 86_400.0));
            loop {
                let reply = c.request(Method::GET, &path, None).await?;
                if follow && reply.status == StatusCode::NOT_FOUND && Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                if follow && reply.status == StatusCode::NOT_FOUND {
                    bail!("run {run_id:?} was not recorded within {wait} s");
                }
                let run = into_data(reply)?;
                return Ok(show_run(out, &run));
            }
        }
    }
}

fn runs_path(flow_id: Option<&str>, limit: usize) -> String {
    match flow_id {
        Some(f) => format!("/api/runs?limit={limit}&flow_id={}", enc(f)),
        None => format!("/api/runs?limit={limit}"),
    }
}

/// Prints the runs known now, then every run recorded later, oldest first, until interrupted.
async fn follow_runs(
    c: &Client,
    out: &Out,
    flow_id: Option<&str>,
    first: Value,
) -> Result<Option<Failed>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut page = first;
    loop {
        let items = page.as_array().map(Vec::as_slice).unwrap_or(&[]);
        for r in items.iter().rev() {
            let id = text(&r["run_id"]);
            if seen.insert(id) {
                if out.json {
                    println!("{r}");
                } else {
                    println!("{}", run_line(out, r));
                }
            }
        }
        // Bounded memory over days of following: the page holds at most 100 runs, so the ids of
        // older ones are not needed to recognise the next page's new ones.
        if seen.len() > 10_000 {
            seen = items.iter().map(|r| text(&r["run_id"])).collect();
        }
        tokio::time::sleep(POLL).await;
        page = c.get(&runs_path(flow_id, 100)).await?;
    }
}

/// `key=value` pairs as a JSON object (a value that is valid JSON is taken as JSON).
fn parse_inputs(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for kv in pairs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--input {kv:?}: use key=value"))?;
        if k.is_empty() {
            bail!("--input {kv:?}: the key is empty");
        }
        let value =
            serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
        map.insert(k.to_string(), value);
    }
    Ok(map)
}

fn list_flows(out: &Out, flows: &Value) {
    if out.json {
        return out.print_json(flows);
    }
    let items = flows.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        println!("no flows are loaded; `rumi diagnostics` shows flows that failed to load");
        return;
    }
    let rows = items
        .iter()
        .map(|f| {
            vec![
                cell(&f["flow_id"]),
                cell(&f["source"]),
                cell(&f["pack_id"]),
                cell(&f["step_count"]),
                Cell::new(short(&f["description"], 60)),
            ]
        })
        .collect();
    out.table(&["flow", "source", "pack", "steps", "description"], rows);
}

fn show_flow(out: &Out, f: &Value) {
    if out.json {
        return out.print_json(f);
    }
    out.fields(&[
        ("flow", text(&f["flow_id"])),
        ("description", text(&f["description"])),
        ("source", text(&f["source"])),
        ("pack", text(&f["pack_id"])),
        ("file", text(&f["path"])),
        ("phases", text(&f["phases"])),
        ("inputs", text(&f["inputs"])),
        ("outputs", text(&f["outputs"])),
        ("defaults", text(&f["defaults"])),
        ("schedule", text(&f["schedule"])),
    ]);
    let steps = f["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if steps.is_empty() {
        return;
    }
    println!();
    let rows = steps
        .iter()
        .map(|s| {
            let target = match s["type"].as_str() {
                Some("python_file_call") => {
                    format!("{}: {}", text(&s["owner_pack"]), text(&s["file"]))
                }
                Some("handler") => text(&s["handler"]),
                Some("set") => text(&s["key"]),
                _ => "-".into(),
            };
            vec![
                cell(&s["id"]),
                cell(&s["phase"]),
                cell(&s["priority"]),
                cell(&s["type"]),
                Cell::new(target),
                Cell::new(short(&s["when"], 40)),
                cell(&s["output"]),
                cell(&s["placed_by"]),
            ]
        })
        .collect();
    out.table(
        &[
            "step",
            "phase",
            "priority",
            "type",
            "target",
            "when",
            "output",
            "placed by",
        ],
        rows,
    );
    let modifiers = f["modifiers_applied"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if modifiers.is_empty() {
        return;
    }
    println!();
    let rows = modifiers
        .iter()
        .map(|m| {
            vec![
                cell(&m["modifier_id"]),
                cell(&m["action"]),
                cell(&m["target_step_id"]),
                cell(&m["status"]),
                cell(&m["file"]),
                Cell::new(short(&m["reason"], 80)),
            ]
        })
        .collect();
    out.table(
        &[
            "modifier",
            "action",
            "target step",
            "status",
            "file",
            "reason",
        ],
        rows,
    );
}

fn list_runs(out: &Out, runs: &Value) {
    if out.json {
        return out.print_json(runs);
    }
    let items = runs.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        println!("no runs are recorded yet");
        return;
    }
    let rows = items
        .iter()
        .map(|r| {
            vec![
                cell(&r["run_id"]),
                cell(&r["flow_id"]),
                out.status_cell(&text(&r["status"])),
                Cell::new(
                    r["execution_time_ms"]
                        .as_f64()
                        .map(millis)
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::new(
                    failure(r)
                        .map(|f| clip(&f, 70))
                        .unwrap_or_else(|| "-".into()),
                ),
            ]
        })
        .collect();
    out.table(&["run", "flow", "status", "time", "failure"], rows);
}

/// Prints a run (its steps, its result) and a one-line summary on stderr; asks for a non-zero exit
/// when it failed or timed out.
fn show_run(out: &Out, run: &Value) -> Option<Failed> {
    let (line, ok) = run_summary(run);
    if out.json {
        out.print_json(run);
    } else {
        let steps = run["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let rows: Vec<Vec<Cell>> = steps
            .iter()
            .map(|s| {
                vec![
                    cell(&s["id"]),
                    cell(&s["phase"]),
                    cell(&s["type"]),
                    out.status_cell(&text(&s["status"])),
                    Cell::new(s["duration_ms"].as_f64().map(millis).unwrap_or_default()),
                    Cell::new(match s["error"].as_str() {
                        Some(e) => clip(&format!("{}: {e}", text(&s["error_type"])), 80),
                        None => "-".into(),
                    }),
                ]
            })
            .collect();
        out.table(&["step", "phase", "type", "status", "time", "error"], rows);
        if !run["result"].is_null() {
            println!("result:");
            out.print_json(&run["result"]);
        }
        for w in run["warnings"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            eprintln!("{} {}", out.paint_status("warning", "warning:"), text(w));
        }
    }
    let status = text(&run["status"]);
    eprintln!("{}", out.paint_status(&status, &line));
    (!ok).then_some(Failed)
}

/// The one line of `rumi runs list --follow`.
fn run_line(out: &Out, r: &Value) -> String {
    let (line, _) = run_summary(r);
    out.paint_status(&text(&r["status"]), &line)
}

/// What failed in a run, for a table cell: the last failed step and why, else the reason.
fn failure(run: &Value) -> Option<String> {
    let steps = run["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    match steps.iter().rev().find(|s| s["status"] == "failed") {
        Some(s) if run["status"] != "succeeded" => Some(format!(
            "{} ({}): {}",
            text(&s["id"]),
            text(&s["error_type"]),
            text(&s["error"])
        )),
        _ => run["reason"].as_str().map(str::to_string),
    }
}

/// One line about a run, and whether it ended well (succeeded, or aborted by a block's
/// `__flow_control`): `run <id> (<flow>): succeeded in 12 ms`, or the status with the step that
/// failed and why. Steps that failed under fail-soft are counted even when the run succeeded.
pub fn run_summary(run: &Value) -> (String, bool) {
    let status = run["status"].as_str().unwrap_or("unknown");
    let ms = run["execution_time_ms"]
        .as_f64()
        .map(|t| format!(" in {}", millis(t)))
        .unwrap_or_default();
    let steps = run["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let failed: Vec<&Value> = steps.iter().filter(|s| s["status"] == "failed").collect();
    let mut line = format!(
        "run {} ({}): {status}{ms}",
        text(&run["run_id"]),
        text(&run["flow_id"])
    );
    let ok = matches!(status, "succeeded" | "aborted");
    if ok {
        if !failed.is_empty() {
            line.push_str(&format!(
                "; {} step(s) failed and the run went on: {}",
                failed.len(),
                failed
                    .iter()
                    .map(|s| text(&s["id"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let (true, Some(reason)) = (status == "aborted", run["reason"].as_str()) {
            line.push_str(&format!(": {reason}"));
        }
        return (line, true);
    }
    if let Some(f) = failure(run) {
        line.push_str(&format!("; {}", clip(&f, 300)));
    }
    (line, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_the_failed_step_and_asks_for_failure() {
        let run = json!({"run_id": "r1", "flow_id": "f", "status": "failed", "execution_time_ms": 12.0,
            "steps": [{"id": "a", "status": "succeeded"}, {"id": "b", "status": "failed", "error_type": "block_error", "error": "boom"}]});
        let (line, ok) = run_summary(&run);
        assert!(!ok);
        assert_eq!(line, "run r1 (f): failed in 12 ms; b (block_error): boom");
    }

    #[test]
    fn a_summary_of_a_fail_soft_run_counts_the_failed_steps() {
        let run = json!({"run_id": "r1", "flow_id": "f", "status": "succeeded", "execution_time_ms": 1500.0,
            "steps": [{"id": "b", "status": "failed"}]});
        let (line, ok) = run_summary(&run);
        assert!(ok);
        assert_eq!(
            line,
            "run r1 (f): succeeded in 1.50 s; 1 step(s) failed and the run went on: b"
        );
        let timed_out =
            json!({"run_id": "r2", "flow_id": "f", "status": "timed_out", "reason": "deadline"});
        assert_eq!(
            run_summary(&timed_out),
            ("run r2 (f): timed_out; deadline".into(), false)
        );
    }

    #[test]
    fn inputs_take_json_values_and_refuse_pairs_without_a_key() {
        let m = parse_inputs(&["n=3".into(), "s=hello".into(), "o={\"a\":1}".into()]).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"n": 3, "s": "hello", "o": {"a": 1}})
        );
        assert!(parse_inputs(&["=1".into()]).is_err());
        assert!(parse_inputs(&["novalue".into()]).is_err());
    }
}
