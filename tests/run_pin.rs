//! Pins what a 1-step and a 5-step block run leave behind — their audit entries (category,
//! action, success and the keys of each) and the keys of their run record, as answered and as
//! stored — so that an optimisation of the block path cannot drop an entry or a field silently
//! (issue "the block path at the physical floor"). A deliberate change of either updates the
//! expectation here, in the same commit.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Every key path of `v`: objects by key, arrays as `[]` (each element's paths merged).
fn paths(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                paths(x, &p, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                paths(x, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

fn key_paths(v: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    paths(v, "", &mut out);
    out.into_iter().collect()
}

/// The audit entries of `run_id`, once `want` of them are written (the block calls' entries are
/// written beside the run's acknowledged one, so they may land a moment after the answer).
async fn audit_of(k: &Kernel, run_id: &str, want: usize) -> Vec<Value> {
    until(
        10,
        &format!("{want} audit entries of run {run_id}"),
        || async {
            let (status, page) = k.get("/api/audit?limit=1000").await;
            assert_eq!(status, 200, "{page}");
            let mine: Vec<Value> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["run_id"] == run_id)
                .cloned()
                .collect();
            (mine.len() >= want).then_some(mine)
        },
    )
    .await
}

/// What the pin compares of an entry: its kind and its keys (values such as times vary).
fn entry_shape(e: &Value) -> String {
    let keys: Vec<String> = key_paths(e);
    format!(
        "{}/{} success={} keys={}",
        e["category"].as_str().unwrap(),
        e["action"].as_str().unwrap(),
        e["success"],
        keys.join(",")
    )
}

const BLOCK_CALL: &str = "python_file_call/block_call success=true keys=action,category,details,execution_mode,flow_id,owner_pack,phase,run_id,severity,step_id,success,ts";
const FLOW_RUN: &str = "flow_execution/flow_run success=true keys=action,category,details,details.execution_time_ms,details.status,details.steps,details.trigger,execution_mode,flow_id,run_id,severity,success,ts";

/// The keys of a run record as `POST /api/flows/{id}/run` answers it (`data`).
const ANSWER_KEYS: &[&str] = &[
    "execution_mode",
    "execution_time",
    "execution_time_ms",
    "flow_id",
    "result",
    "run_id",
    "status",
    "steps",
    "steps[].duration_ms",
    "steps[].id",
    "steps[].phase",
    "steps[].started",
    "steps[].status",
    "steps[].type",
    "warnings",
];

/// The keys of the stored run record (`GET /api/runs/{id}`'s `data`).
const STORED_KEYS: &[&str] = &[
    "ended",
    "execution_mode",
    "execution_time",
    "execution_time_ms",
    "flow_id",
    "inputs_digest",
    "result",
    "run_id",
    "started",
    "status",
    "steps",
    "steps[].duration_ms",
    "steps[].id",
    "steps[].phase",
    "steps[].started",
    "steps[].status",
    "steps[].type",
    "trigger",
    "warnings",
];

#[actix_rt::test]
async fn a_one_step_and_a_five_step_run_keep_their_audit_entries_and_record_keys() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "user_data/shared/flows/five.flow.yaml",
        &five_step_flow(),
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    for (flow, steps) in [("hello", 1usize), ("five", 5)] {
        let (status, answer) = k.run(flow, json!({"name": "Ann"})).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "succeeded", "{answer}");
        let run_id = answer["run_id"].as_str().unwrap().to_string();

        let mut want = vec![BLOCK_CALL.to_string(); steps];
        want.push(FLOW_RUN.to_string());
        let entries = audit_of(&k, &run_id, want.len()).await;
        let mut got: Vec<String> = entries.iter().map(entry_shape).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "the audit entries of the {steps}-step run");
        for e in entries.iter().filter(|e| e["action"] == "block_call") {
            assert_eq!(e["owner_pack"], "my_pack");
            assert_eq!(e["flow_id"], flow);
        }
        let run = entries.iter().find(|e| e["action"] == "flow_run").unwrap();
        assert_eq!(run["details"]["steps"], steps);
        assert_eq!(run["details"]["status"], "succeeded");
        assert_eq!(run["details"]["trigger"], "api");

        let (status, stored) = k.get(&format!("/api/runs/{run_id}")).await;
        assert_eq!(status, 200, "{stored}");
        for (what, record, want) in [
            ("answered", &answer, ANSWER_KEYS),
            ("stored", &stored["data"], STORED_KEYS),
        ] {
            let keys: Vec<String> = key_paths(record)
                .into_iter()
                .filter(|p| !p.starts_with("result."))
                .collect();
            assert_eq!(
                keys, want,
                "the keys of the {what} record of the {steps}-step run"
            );
            assert_eq!(record["steps"].as_array().unwrap().len(), steps);
        }
        assert_eq!(stored["data"]["result"], answer["result"]);
        let greeting = if steps == 1 { "greeting" } else { "g4" };
        assert_eq!(
            answer["result"][greeting]["message"], "Hello, Ann!",
            "{answer}"
        );
    }
}
