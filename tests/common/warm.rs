//! Fixtures of the warm script container tests (`tests/skills_warm.rs`,
//! `tests/attacks_skill_warm.rs`): a skill of scripts, a strict kernel on the scripted model, a
//! run of a plan and the check that its containers went with it.
#![allow(dead_code)]

use super::llm_server::{Flavor, Policy, ScriptedModel};
use super::skills::{calls, supervisor_results};
use super::{write, Kernel};
use serde_json::{json, Value};
use std::path::Path;

/// The script containers of one run, running or not (their names carry the run id).
pub fn containers_of(run_id: &str) -> Vec<String> {
    super::container_names(&[
        "label=rumi.role=skill-script",
        &format!("name=rumi-skill-{run_id}-"),
    ])
}

pub fn skill(home: &Path, scripts: &[(&str, &str)]) {
    write(
        home,
        "user_data/skills/warm/SKILL.md",
        "---\nname: warm\ndescription: Runs scripts in a row.\n---\nRun the scripts.\n",
    );
    for (name, text) in scripts {
        write(home, &format!("user_data/skills/warm/scripts/{name}"), text);
    }
}

pub fn strict_kernel(home: &Path, model: &ScriptedModel) -> Kernel {
    let base = model.base_url();
    Kernel::start_mode(
        home,
        &[
            ("RUMI_LLM_PROVIDER", "openai"),
            ("RUMI_LLM_BASE_URL", &base),
            ("RUMI_LLM_MODEL", "scripted"),
        ],
        false,
    )
}

/// Runs `plan` (then `finish`) in strict mode; the ActResult and the tool results.
pub async fn strict_run(
    home: &Path,
    plan: Vec<super::llm_server::Move>,
    extra: Value,
) -> (Value, Vec<Value>) {
    let mut plan = plan;
    plan.push(calls(&[("finish", json!({"summary": "done"}))]));
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: plan,
            ..Policy::default()
        },
    );
    let k = strict_kernel(home, &model);
    let mut input = json!({"skill_id": "warm", "goal": "run the scripts"});
    if let Value::Object(m) = extra {
        for (key, v) in m {
            input[key] = v;
        }
    }
    let (status, body) = k.post("/api/skills/run", input).await;
    assert_eq!(status, 200, "{body}");
    let r = body["data"].clone();
    assert_eq!(r["isolation"], "container", "{r:#}");
    let results = supervisor_results(&model.requests());
    // Gone when the run has ended (finish removes them before the result is published).
    let run_id = r["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        containers_of(&run_id),
        Vec::<String>::new(),
        "the run's script containers outlived it"
    );
    k.stop();
    (r, results)
}

pub fn script(path: &str) -> super::llm_server::Move {
    calls(&[("run_script", json!({"path": path}))])
}
