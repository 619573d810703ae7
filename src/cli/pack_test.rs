//! `rumi pack test <id>`: copies the pack into a throw-away home, starts a kernel there
//! (`throwaway.rs`: permissive, or in containers with `--strict`), approves the pack, and runs
//! each of its flows: once per case in `tests/*.test.json` of the pack
//! (`{flow, inputs, expect, expect_status}`), and once with no inputs for a flow without a case.
//! A case fails when the run's status is not the expected one (default: succeeded or aborted),
//! when any step failed (fail-soft steps included), or when a key in `expect` does not hold that
//! value in the result. A flow file that fails to load is a failure too. The operator's kernel and
//! home are never touched by the kernel; in permissive mode the pack's code runs as the operator
//! (no isolation), which the command says before it starts.

use super::output::{cell, clean, clip, millis, Out};
use super::throwaway::{Interrupt, Interrupted, Sandbox};
use crate::client::{enc, Client};
use anyhow::{anyhow, bail, Context, Result};
use comfy_table::Cell;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Largest case file read.
const MAX_CASE_BYTES: u64 = 1 << 20;

/// One line of the report.
struct Outcome {
    flow: String,
    case: String,
    status: String,
    ms: Option<f64>,
    problem: Option<String>,
}

/// Tests the pack; `Ok(false)` when something failed. `strict` runs it in containers.
pub fn run(id: &str, timeout: f64, strict: bool, out: &Out) -> Result<bool> {
    if !rumi_domain::pack::valid_pack_id(id) {
        bail!("{id:?} is not a valid pack id");
    }
    let home = crate::config::home()?;
    let src = home.join("ecosystem").join(id);
    if std::fs::symlink_metadata(&src).is_err() {
        bail!(
            "no pack {id} in {}: `rumi pack new {id}` writes one",
            home.join("ecosystem").display()
        );
    }
    if !strict {
        eprintln!(
            "{} the pack's code runs on this machine as you, without isolation (permissive \
             mode): test only packs you trust, or add --strict to run it in containers",
            out.paint_status("warning", "warning:")
        );
    }
    let interrupt = Interrupt::install()?;
    // On this thread, which lives as long as the command: the kernel dies with it.
    let sandbox = Sandbox::start(&src, id, strict, &interrupt)?;
    let client = sandbox
        .client
        .as_ref()
        .ok_or_else(|| anyhow!("no kernel"))?;
    let pack = sandbox.home.path().join("ecosystem").join(id);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcomes = rt.block_on(async {
        tokio::select! {
            r = test_flows(client, id, &pack, timeout) => r,
            _ = interrupt.wait() => Err(Interrupted.into()),
        }
    });
    drop(sandbox);
    Ok(report(id, &outcomes?, out))
}

async fn test_flows(c: &Client, id: &str, pack: &Path, timeout: f64) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    let approved = c
        .post(&format!("/api/packs/{}/approve", enc(id)), json!({}))
        .await
        .context("the throw-away kernel refused to approve the pack")?;
    let reloaded = c.post("/api/flows/reload", json!({})).await?;
    // The throw-away home holds nothing but this pack: every problem is one of its flows.
    let mut problems: Vec<String> = Vec::new();
    for p in approved["warnings"]
        .as_array()
        .into_iter()
        .chain(reloaded["problems"].as_array())
        .flatten()
    {
        let p = super::output::text(p);
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    for p in problems {
        outcomes.push(Outcome {
            flow: "-".into(),
            case: "load".into(),
            status: "failed".into(),
            ms: None,
            problem: Some(p),
        });
    }
    let flows = c.get("/api/flows").await?;
    let flow_ids: Vec<String> = flows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["pack_id"] == id)
        .filter_map(|f| f["flow_id"].as_str().map(str::to_string))
        .collect();
    let cases = read_cases(pack, &mut outcomes);
    for case in &cases {
        if !flow_ids.contains(&case.flow) {
            outcomes.push(Outcome {
                flow: case.flow.clone(),
                case: case.name.clone(),
                status: "failed".into(),
                ms: None,
                problem: Some(format!(
                    "the case names flow {:?}, which the pack does not have (or it failed to load)",
                    case.flow
                )),
            });
        }
    }
    for flow in &flow_ids {
        let mine: Vec<&Case> = cases.iter().filter(|c| &c.flow == flow).collect();
        let default = Case {
            name: "no inputs".into(),
            flow: flow.clone(),
            inputs: json!({}),
            expect: None,
            expect_status: None,
        };
        let list = if mine.is_empty() {
            vec![&default]
        } else {
            mine
        };
        for case in list {
            outcomes.push(run_case(c, case, timeout).await?);
        }
    }
    if flow_ids.is_empty() && outcomes.is_empty() {
        outcomes.push(Outcome {
            flow: "-".into(),
            case: "-".into(),
            status: "failed".into(),
            ms: None,
            problem: Some("the pack has no flows (put them in flows/*.flow.yaml)".into()),
        });
    }
    Ok(outcomes)
}

struct Case {
    name: String,
    flow: String,
    inputs: Value,
    expect: Option<serde_json::Map<String, Value>>,
    expect_status: Option<String>,
}

/// The cases in `tests/*.test.json` (or `backend/tests/`); a case file that cannot be read is
/// reported as a failure.
fn read_cases(pack: &Path, outcomes: &mut Vec<Outcome>) -> Vec<Case> {
    let dir = [pack.join("backend/tests"), pack.join("tests")]
        .into_iter()
        .find(|d| d.is_dir());
    let Some(dir) = dir else { return Vec::new() };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".test.json"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match parse_case(&f) {
            Ok(mut c) => {
                c.name = name;
                cases.push(c);
            }
            Err(why) => outcomes.push(Outcome {
                flow: "-".into(),
                case: name,
                status: "failed".into(),
                ms: None,
                problem: Some(why),
            }),
        }
    }
    cases
}

fn parse_case(path: &Path) -> Result<Case, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_CASE_BYTES {
        return Err(format!("larger than {MAX_CASE_BYTES} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let flow = v["flow"]
        .as_str()
        .ok_or("`flow` (the flow id to run) is required")?
        .to_string();
    let inputs = match &v["inputs"] {
        Value::Null => json!({}),
        Value::Object(_) => v["inputs"].clone(),
        _ => return Err("`inputs` must be an object".into()),
    };
    let expect = match &v["expect"] {
        Value::Null => None,
        Value::Object(m) => Some(m.clone()),
        _ => return Err("`expect` must be an object of result keys and values".into()),
    };
    let expect_status = match &v["expect_status"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err("`expect_status` must be a run status such as \"succeeded\"".into()),
    };
    Ok(Case {
        name: String::new(),
        flow,
        inputs,
        expect,
        expect_status,
    })
}

async fn run_case(c: &Client, case: &Case, timeout: f64) -> Result<Outcome> {
    let reply = c
        .request(
            reqwest::Method::POST,
            &format!("/api/flows/{}/run", enc(&case.flow)),
            Some(json!({"inputs": case.inputs, "timeout": timeout})),
        )
        .await?;
    let run = &reply.body["data"];
    let status = run["status"].as_str().unwrap_or("failed").to_string();
    let mut problems = Vec::new();
    if !run["run_id"].is_string() {
        problems.push(
            reply.body["error"]
                .as_str()
                .unwrap_or("the kernel answered without a run")
                .to_string(),
        );
    }
    let status_ok = match &case.expect_status {
        Some(s) => &status == s,
        None => status == "succeeded" || status == "aborted",
    };
    if !status_ok && run["run_id"].is_string() {
        let wanted = case
            .expect_status
            .clone()
            .unwrap_or_else(|| "succeeded".into());
        let why = run["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        problems.push(format!("the run ended {status}, not {wanted}{why}"));
    }
    for s in run["steps"].as_array().into_iter().flatten() {
        if s["status"] == "failed" {
            problems.push(format!(
                "step {} failed ({}): {}",
                super::output::text(&s["id"]),
                super::output::text(&s["error_type"]),
                super::output::text(&s["error"])
            ));
        }
    }
    for (key, want) in case.expect.iter().flatten() {
        let got = &run["result"][key];
        if got != want {
            problems.push(format!("result.{key} is {got}, expected {want}"));
        }
    }
    Ok(Outcome {
        flow: case.flow.clone(),
        case: case.name.clone(),
        status: if problems.is_empty() {
            "passed".into()
        } else {
            "failed".into()
        },
        ms: run["execution_time_ms"].as_f64(),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}

fn report(id: &str, outcomes: &[Outcome], out: &Out) -> bool {
    let failed = outcomes.iter().filter(|o| o.status != "passed").count();
    let passed = outcomes.len() - failed;
    if out.json {
        out.print_json(&json!({
            "pack_id": id,
            "passed": passed,
            "failed": failed,
            "results": outcomes.iter().map(|o| json!({
                "flow_id": o.flow, "case": o.case, "status": o.status,
                "execution_time_ms": o.ms, "problem": o.problem,
            })).collect::<Vec<_>>(),
        }));
    } else {
        let rows = outcomes
            .iter()
            .map(|o| {
                let word = if o.status == "passed" {
                    "succeeded"
                } else {
                    "failed"
                };
                vec![
                    Cell::new(clean(&o.flow)),
                    Cell::new(clean(&o.case)),
                    out.paint_cell(word, &o.status),
                    Cell::new(o.ms.map(millis).unwrap_or_else(|| "-".into())),
                    o.problem
                        .as_deref()
                        .map(|p| Cell::new(clip(p, 200)))
                        .unwrap_or_else(|| cell(&Value::Null)),
                ]
            })
            .collect();
        out.table(&["flow", "case", "result", "time", "problem"], rows);
        eprintln!(
            "{}",
            out.paint_status(
                if failed == 0 { "succeeded" } else { "failed" },
                &format!("pack {id}: {passed} passed, {failed} failed")
            )
        );
    }
    failed == 0
}
