//! An outside review of the block path (issue "the block path at the physical floor"), kept as
//! regression tests: audit entries of nested runs stay in the order they were made.

mod common;

use common::*;
use serde_json::{json, Value};

/// Review finding (an earlier version held a run's block-call entries for up to 20 ms and sent
/// them with its record): a parent's block call followed by a `kernel:flow.run` child that
/// finished within those 20 ms had the child's entries written first, so the log was no longer
/// in the order things happened. Block calls now go through the writer's queue in the order
/// they are made.
#[actix_rt::test]
async fn a_nested_run_does_not_write_its_entries_before_the_parents_earlier_block_call() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "ecosystem/my_pack/backend/blocks/nap.py",
        "import time\ndef run(i, c=None):\n    time.sleep(0.004)\n    return {}\n",
    );
    write(
        home.path(),
        "user_data/shared/flows/parent.flow.yaml",
        "flow_id: parent\nphases: [m]\nsteps:\n  - {id: a, phase: m, priority: 0, type: python_file_call, owner_pack: my_pack, file: blocks/nap.py, input: {}, output: a}\n  - {id: c, phase: m, priority: 1, type: handler, input: {handler: \"kernel:flow.run\", args: {flow_id: child}}, output: c}\n",
    );
    write(
        home.path(),
        "user_data/shared/flows/child.flow.yaml",
        "flow_id: child\nphases: [m]\nsteps:\n  - {id: b, phase: m, type: python_file_call, owner_pack: my_pack, file: blocks/nap.py, input: {}, output: b}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    // Warm the worker so the parent run fits in the 20 ms hold.
    for _ in 0..3 {
        let (s, v) = k.run("child", json!({})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, answer) = k.run("parent", json!({})).await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["status"], "succeeded", "{answer}");
    let parent_id = answer["run_id"].as_str().unwrap().to_string();
    // Every entry of the parent and of its child, in the order the log returns them.
    let entries: Vec<Value> = until(10, "the parent's entries", || async {
        let (status, page) = k.get("/api/audit?limit=1000").await;
        assert_eq!(status, 200, "{page}");
        let all = page["data"].as_array().unwrap().clone();
        let child_run = all.iter().find(|e| {
            e["flow_id"] == "child"
                && e["action"] == "flow_run"
                && e["details"]["trigger"] == "flow"
        })?;
        let child_id = child_run["run_id"].clone();
        let mine: Vec<Value> = all
            .into_iter()
            .filter(|e| e["run_id"] == parent_id.as_str() || e["run_id"] == child_id)
            .collect();
        (mine.len() >= 4).then_some(mine)
    })
    .await;
    let shape: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["ts"].as_str().unwrap(),
                e["flow_id"].as_str().unwrap(),
                e["action"].as_str().unwrap()
            )
        })
        .collect();
    let ts: Vec<&str> = entries.iter().map(|e| e["ts"].as_str().unwrap()).collect();
    let ascending = ts.windows(2).all(|w| w[0] <= w[1]);
    let descending = ts.windows(2).all(|w| w[0] >= w[1]);
    assert!(
        ascending || descending,
        "the audit log is not in the order things happened:\n{}",
        shape.join("\n")
    );
}
