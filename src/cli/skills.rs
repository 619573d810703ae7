//! `rumi skill list|run|status|artifact`: the SkillRuntime's catalog, a run with one progress
//! line per step (tool, reason, cost, budget left) and the ActResult JSON last, a run's state,
//! and an artifact's bytes.

use super::output::{cell, clean, text, Out};
use crate::client::{enc, Client};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use comfy_table::Cell;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::time::Duration;

#[derive(Subcommand)]
pub enum SkillCommand {
    /// The skills (L1 catalog) with their warnings.
    List,
    /// Run a skill; prints one line per step, then the ActResult JSON. Exits 0 only when the
    /// run validated.
    Run {
        skill_id: String,
        /// What the run should achieve.
        #[arg(long)]
        goal: String,
        /// An input `key=value` (the value is JSON when it parses as JSON, else a string).
        #[arg(long = "input", value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// An expected output under build/ (kind from the extension).
        #[arg(long = "expect", value_name = "build/PATH")]
        expect: Vec<String>,
        /// A budget `key=N`: calls|tokens|time|script|disk or the full keys (max_tool_calls,
        /// token_budget, time_budget_ms, script_timeout_s, disk_write_limit_mb).
        #[arg(long = "budget", value_name = "KEY=N")]
        budgets: Vec<String>,
        /// A constraint for the model (repeatable).
        #[arg(long = "constraint")]
        constraints: Vec<String>,
    },
    /// A run's state (its ActResult; exit_reason null while it runs).
    Status { run_id: String },
    /// Write an artifact's bytes to stdout (or --output FILE).
    Artifact {
        run_id: String,
        /// As artifacts[].path names it, e.g. build/report.md.
        path: String,
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

/// A budget key as written on the command line, mapped to the ActInput's.
fn budget_key(k: &str) -> Option<&'static str> {
    Some(match k {
        "calls" | "max_tool_calls" => "max_tool_calls",
        "tokens" | "token_budget" => "token_budget",
        "time" | "time_budget_ms" => "time_budget_ms",
        "script" | "script_timeout_s" => "script_timeout_s",
        "disk" | "disk_write_limit_mb" => "disk_write_limit_mb",
        _ => return None,
    })
}

/// The ActInput the flags describe.
pub fn act_input(
    skill_id: &str,
    goal: &str,
    inputs: &[String],
    expect: &[String],
    budgets: &[String],
    constraints: &[String],
) -> Result<Value> {
    let mut ins = Map::new();
    for kv in inputs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--input {kv:?}: write key=value"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        ins.insert(k.to_string(), value);
    }
    let mut b = Map::new();
    for kv in budgets {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--budget {kv:?}: write key=N"))?;
        let key = budget_key(k).ok_or_else(|| {
            anyhow!("--budget {k:?}: use calls, tokens, time, script or disk (or the budgets' own keys)")
        })?;
        let n: u64 = v
            .parse()
            .map_err(|_| anyhow!("--budget {kv:?}: the value is a whole number"))?;
        b.insert(key.to_string(), json!(n));
    }
    let expected: Vec<Value> = expect.iter().map(|p| json!({"path": p})).collect();
    let mut input = json!({
        "skill_id": skill_id,
        "goal": goal,
        "inputs": ins,
        "expected_outputs": expected,
    });
    if !b.is_empty() {
        input["budgets"] = Value::Object(b);
    }
    if !constraints.is_empty() {
        input["constraints"] = json!(constraints);
    }
    Ok(input)
}

pub async fn run(c: &Client, out: &Out, cmd: SkillCommand) -> Result<Option<super::flows::Failed>> {
    match cmd {
        SkillCommand::List => list(c, out).await.map(|_| None),
        SkillCommand::Run {
            skill_id,
            goal,
            inputs,
            expect,
            budgets,
            constraints,
        } => {
            let input = act_input(&skill_id, &goal, &inputs, &expect, &budgets, &constraints)?;
            run_skill(c, out, input).await
        }
        SkillCommand::Status { run_id } => {
            let r = c.get(&format!("/api/skills/runs/{}", enc(&run_id))).await?;
            if out.json {
                out.print_json(&r);
            } else {
                status_table(out, &r);
            }
            Ok(None)
        }
        SkillCommand::Artifact {
            run_id,
            path,
            output,
        } => {
            let route = format!(
                "/api/skills/runs/{}/artifacts/{}",
                enc(&run_id),
                path.split('/').map(enc).collect::<Vec<_>>().join("/")
            );
            let bytes = c.get_raw(&route).await?;
            match output {
                Some(file) => std::fs::write(&file, &bytes)
                    .map_err(|e| anyhow!("writing {} failed: {e}", file.display()))?,
                None => std::io::stdout().write_all(&bytes)?,
            }
            Ok(None)
        }
    }
}

async fn list(c: &Client, out: &Out) -> Result<()> {
    let v = c.get("/api/skills").await?;
    if out.json {
        out.print_json(&v);
        return Ok(());
    }
    let skills = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if skills.is_empty() {
        println!("no skills: add a folder with a SKILL.md under user_data/skills/");
        return Ok(());
    }
    let rows = skills
        .iter()
        .map(|s| {
            let warnings: Vec<String> = s["warnings"]
                .as_array()
                .map(|w| w.iter().map(text).collect())
                .unwrap_or_default();
            let desc: String = text(&s["description"]).chars().take(100).collect();
            vec![
                cell(&s["skill_id"]),
                Cell::new(clean(&desc)),
                Cell::new(clean(&warnings.join("; "))),
            ]
        })
        .collect();
    out.table(&["skill", "description", "warnings"], rows);
    Ok(())
}

/// `rumi skill status`: the run in one table, then its artifacts and what is unmet.
fn status_table(out: &Out, r: &Value) {
    let m = &r["metrics"];
    let exit = if r["exit_reason"].is_null() {
        "(running)".to_string()
    } else {
        text(&r["exit_reason"])
    };
    out.table(
        &[
            "run",
            "skill",
            "status",
            "exit",
            "tool calls",
            "tokens in/out",
            "isolation",
        ],
        vec![vec![
            cell(&r["run_id"]),
            cell(&r["skill_id"]),
            cell(&r["status"]),
            Cell::new(clean(&exit)),
            cell(&m["tool_calls"]),
            Cell::new(format!(
                "{}/{}",
                text(&m["input_tokens"]),
                text(&m["output_tokens"])
            )),
            cell(&r["isolation"]),
        ]],
    );
    let artifacts = r["artifacts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !artifacts.is_empty() {
        println!();
        let rows = artifacts
            .iter()
            .map(|a| vec![cell(&a["path"]), cell(&a["name"]), cell(&a["bytes"])])
            .collect();
        out.table(&["artifact", "version", "bytes"], rows);
    }
    let unmet = r["unmet"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !unmet.is_empty() {
        println!();
        let rows = unmet
            .iter()
            .map(|u| vec![cell(&u["item"]), cell(&u["reason"]), cell(&u["suggestion"])])
            .collect();
        out.table(&["unmet", "reason", "suggestion"], rows);
    }
}

/// One progress line: step, tool, reason, cost and what is left.
fn progress_line(e: &Value) -> String {
    let reason: String = text(&e["reason_short"])
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(70)
        .collect();
    let left = &e["remaining"];
    format!(
        "#{:<3} {:<16} {} {:<70} {:>6} tok {:>6} ms | left: {} calls, {} tokens, {} ms",
        text(&e["step"]),
        text(&e["tool"]),
        if e["ok"] == Value::Bool(true) {
            "ok  "
        } else {
            "fail"
        },
        clean(&reason),
        text(&e["cost"]["tokens"]),
        text(&e["cost"]["time_ms"]),
        text(&left["max_tool_calls"]),
        text(&left["token_budget"]),
        text(&left["time_budget_ms"]),
    )
}

/// Starts the run (async), prints each new step as it appears, then the ActResult.
async fn run_skill(c: &Client, out: &Out, input: Value) -> Result<Option<super::flows::Failed>> {
    let started = c.post("/api/skills/run?async=true", input).await?;
    let run_id = started["run_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the kernel answered no run id"))?
        .to_string();
    if !out.json {
        eprintln!("run {run_id}");
    }
    let mut shown = 0usize;
    let mut wait = Duration::from_millis(50);
    let result = loop {
        let r = c.get(&format!("/api/skills/runs/{}", enc(&run_id))).await?;
        let steps = r["evidence_summary"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if !out.json {
            for e in steps.iter().skip(shown) {
                println!("{}", progress_line(e));
            }
        }
        shown = shown.max(steps.len());
        if !r["exit_reason"].is_null() {
            break r;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
    };
    println!("{}", serde_json::to_string_pretty(&result)?);
    if result["exit_reason"] != json!("validated") {
        if !out.json {
            eprintln!(
                "the run ended {}: see unmet above",
                text(&result["exit_reason"])
            );
        }
        return Ok(Some(super::flows::Failed));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_an_act_input() {
        let v = act_input(
            "s",
            "g",
            &["n=3".into(), "name=x y".into()],
            &["build/a.md".into()],
            &["tokens=500".into()],
            &[],
        )
        .unwrap();
        assert_eq!(v["inputs"]["n"], json!(3));
        assert_eq!(v["inputs"]["name"], json!("x y"));
        assert_eq!(v["budgets"]["token_budget"], json!(500));
        assert_eq!(v["expected_outputs"][0]["path"], json!("build/a.md"));
        assert!(act_input("s", "g", &[], &[], &["bogus=1".into()], &[]).is_err());
        assert!(act_input("s", "g", &["novalue".into()], &[], &[], &[]).is_err());
    }
}
