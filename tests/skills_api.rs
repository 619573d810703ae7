//! The SkillRuntime's entrances end to end: model retries and the micro-reflect, refusals before a
//! run starts, async runs, the catalog, the flow handler, the CLI, the shipped replay, kill -9 and
//! the run cap, a key from the secrets store (runs themselves: `tests/skills.rs`).

mod common;

use common::llm_server::{Flavor, Policy, ScriptedModel};
use common::skills::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn the_model_is_retried_on_429_and_500_and_a_run_without_progress_reflects_once() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let plan = vec![
        calls(&[("list_files", json!({}))]),
        calls(&[("list_files", json!({"glob": "references/*"}))]),
        calls(&[("list_files", json!({"glob": "**/*.py"}))]),
        calls(&[("read_skill_md", json!({}))]),
    ];
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: plan,
            faults: vec![(0, 429), (1, 500)],
            ..Policy::default()
        },
    );
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (_, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(r["exit_reason"], "no_progress", "{r:#}");
    let reqs = model.requests();
    assert_eq!(reqs[0].answered_status, 429);
    assert_eq!(reqs[1].answered_status, 500);
    // Two list_files without progress → one tool-less reflect call; the third → no_progress.
    let reflects = reqs.iter().filter(|q| q.tool_names().is_empty()).count();
    assert_eq!(reflects, 1);
    assert_eq!(r["metrics"]["tool_calls"], 3);
    assert_eq!(r["metrics"]["model_calls"], 4);
    let results = supervisor_results(&reqs);
    let files = results[1]["files"].as_array().unwrap();
    assert!(files
        .iter()
        .all(|f| f.as_str().unwrap().starts_with("references/")));
    assert!(results[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "scripts/count.py"));
    k.stop();
}

#[tokio::test]
async fn runs_are_refused_before_they_start_only_for_bad_input_unknown_skills_or_no_model() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let k = Kernel::start(home.path(), &[]);
    let (status, body) = k.post("/api/skills/run", note_input(json!({}))).await;
    assert_eq!(status, 400);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("RUMI_LLM_PROVIDER") && msg.contains("llm.json"),
        "{msg}"
    );
    k.stop();
    let model = ScriptedModel::start(Flavor::OpenAi, policy(vec![]));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    for (input, want) in [
        (json!({"skill_id": "nope", "goal": "g"}), 404),
        (json!({"skill_id": "../notes", "goal": "g"}), 400),
        (json!({"skill_id": "/etc", "goal": "g"}), 400),
        (json!({"skill_id": "notes"}), 400),
        (
            json!({"skill_id": "notes", "goal": "g", "budgets": {"max_tool_calls": 0}}),
            400,
        ),
        (json!({"skill_id": "notes", "goal": "g", "bogus": 1}), 400),
        (
            json!({"skill_id": "notes", "goal": "g", "expected_outputs": [{"path": "../x.md"}]}),
            400,
        ),
    ] {
        let (status, body) = k.post("/api/skills/run", input.clone()).await;
        assert_eq!(status, want, "{input}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(
        model.requests().is_empty(),
        "no refused run reached the model"
    );
    k.stop();
}

#[tokio::test]
async fn an_async_run_shows_its_state_then_its_result() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: the_happy_plan(),
            delay: Duration::from_millis(300),
            ..Policy::default()
        },
    );
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, body) = k
        .post("/api/skills/run?async=true", note_input(json!({})))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["status"], "running");
    let id = body["data"]["run_id"].as_str().unwrap().to_string();
    let (s, v) = k.get(&format!("/api/skills/runs/{id}")).await;
    assert_eq!(s, 200);
    assert!(v["data"]["exit_reason"].is_null(), "{v}");
    assert_eq!(v["data"]["status"], "running");
    let done = until(60, "the async run to end", || {
        let path = format!("/api/skills/runs/{id}");
        let k = &k;
        async move {
            let (_, v) = k.get(&path).await;
            (!v["data"]["exit_reason"].is_null()).then_some(v["data"].clone())
        }
    })
    .await;
    assert_eq!(done["exit_reason"], "validated");
    for bad in ["/api/skills/runs/nope", "/api/skills/runs/..%2F..%2Fetc"] {
        assert_eq!(k.get(bad).await.0, 404, "{bad}");
    }
    let (s, _) = k
        .get(&format!(
            "/api/skills/runs/{id}/artifacts/build/../result.json"
        ))
        .await;
    assert!(s == 400 || s == 404, "{s}");
    let (s, _) = k
        .get(&format!("/api/skills/runs/{id}/artifacts/evidence.jsonl"))
        .await;
    assert_eq!(s, 400);
    k.stop();
}

#[tokio::test]
async fn the_catalog_lists_skills_with_warnings_and_diagnostics_the_skipped() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    write(
        home.path(),
        "user_data/skills/group/inner/SKILL.md",
        "---\nname: other-name\ndescription: d\nflavour: x\n---\nbody\n",
    );
    write(
        home.path(),
        "user_data/skills/nodesc/SKILL.md",
        "---\nname: nodesc\n---\nbody\n",
    );
    write(
        home.path(),
        "user_data/skills/broken/SKILL.md",
        "---\nname: [unclosed\n---\n",
    );
    let k = Kernel::start(home.path(), &[]);
    let (s, v) = k.get("/api/skills").await;
    assert_eq!(s, 200);
    let list = v["data"].as_array().unwrap();
    let ids: Vec<&str> = list
        .iter()
        .map(|x| x["skill_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["group/inner", "notes"]);
    let warnings = list[0]["warnings"].to_string();
    assert!(
        warnings.contains("inner") && warnings.contains("flavour"),
        "{warnings}"
    );
    assert_eq!(list[1]["warnings"], json!([]));
    // A pack's skills are listed as <pack>:<id> once the pack is approved, and not before.
    make_pack(
        home.path(),
        "skilled",
        &[(
            "b.py",
            "def run(input_data, context=None):\n    return {}\n",
        )],
    );
    write(
        home.path(),
        "ecosystem/skilled/backend/skills/tidy/SKILL.md",
        "---\nname: tidy\ndescription: A pack's skill.\n---\nbody\n",
    );
    let (_, scanned) = k.post("/api/packs/scan", json!({})).await;
    assert_eq!(scanned["success"], true, "{scanned}");
    let listed = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["skill_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!listed(&k.get("/api/skills").await.1).contains(&"skilled:tidy".to_string()));
    k.approve("skilled").await;
    assert!(listed(&k.get("/api/skills").await.1).contains(&"skilled:tidy".to_string()));
    let (_, d) = k.get("/api/diagnostics").await;
    let skipped = d["data"]["skills"].as_array().unwrap();
    let skipped_ids: Vec<&str> = skipped
        .iter()
        .map(|x| x["skill_id"].as_str().unwrap())
        .collect();
    assert!(
        skipped_ids.contains(&"nodesc") && skipped_ids.contains(&"broken"),
        "{skipped:?}"
    );
    assert!(skipped
        .iter()
        .all(|x| x["source"] == "skills" && x["error"].is_string()));
    k.stop();
}

#[tokio::test]
async fn a_flow_step_runs_a_skill_and_gets_its_act_result() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    write(
        home.path(),
        "user_data/shared/flows/skill_flow.flow.yaml",
        "flow_id: skill_flow\nphases: [main]\nsteps:\n  - id: s\n    phase: main\n    type: handler\n    input:\n      handler: kernel:skill.run\n      args:\n        skill_id: notes\n        goal: Write a note\n        expected_outputs: [{path: build/note.md}]\n    output: act\n",
    );
    let plan = vec![
        calls(&[(
            "write_artifact",
            json!({"path": "note.md", "content": "# Note\n"}),
        )]),
        calls(&[("validate", json!({}))]),
        calls(&[("finish", json!({"summary": "ok"}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (s, v) = k.run("skill_flow", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let act = &v["result"]["act"];
    assert_eq!(act["exit_reason"], "validated", "{v:#}");
    assert_eq!(act["artifacts"][0]["path"], "build/note.md");
    k.stop();
}

#[tokio::test]
async fn the_cli_lists_and_runs_skills_with_a_line_per_step() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let plan = vec![
        calls(&[("read_skill_md", json!({}))]),
        calls(&[(
            "write_artifact",
            json!({"path": "note.md", "content": "# Note\n"}),
        )]),
        calls(&[("validate", json!({}))]),
        calls(&[("finish", json!({"summary": "ok"}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let port = port_of(&k).to_string();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rumi"))
            .args(args)
            .env("RUMI_HOME", home.path())
            .env("RUMI_API_PORT", &port)
            .env("RUMI_API_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let out = cli(&["skill", "list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("notes"));
    let out = cli(&[
        "skill",
        "run",
        "notes",
        "--goal",
        "a note",
        "--expect",
        "build/note.md",
        "--budget",
        "tokens=50000",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let step_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(step_lines.len(), 4, "{stdout}");
    assert!(step_lines[0].contains("read_skill_md") && step_lines[0].contains("left:"));
    let json_start = stdout.find("\n{").map(|i| i + 1).unwrap_or(0);
    let result: Value = serde_json::from_str(&stdout[json_start..]).expect("the ActResult last");
    assert_eq!(result["exit_reason"], "validated");
    assert!(
        result["remaining_budgets"]["token_budget"]
            .as_u64()
            .unwrap()
            < 50_000
    );
    let id = result["run_id"].as_str().unwrap();
    let out = cli(&["skill", "status", id]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("validated") && table.contains("build/note.md"),
        "{table}"
    );
    let out = cli(&["--json", "skill", "status", id]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["run_id"], id);
    let out = cli(&["skill", "artifact", id, "build/note.md"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "# Note\n");
    let out = cli(&["skill", "artifact", id, "build/../result.json"]);
    assert!(!out.status.success());
    k.stop();
}

/// The README's first run: the shipped release-notes skill with the shipped recorded exchange,
/// no key and no network; the ActResult says it was a replay.
#[tokio::test]
async fn the_shipped_replay_runs_the_shipped_skill_end_to_end() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(
        &repo.join("user_data/skills"),
        &home.path().join("user_data/skills"),
    );
    copy_dir(
        &repo.join("user_data/replays"),
        &home.path().join("user_data/replays"),
    );
    let k = Kernel::start(
        home.path(),
        &[
            ("RUMI_LLM_PROVIDER", "replay"),
            ("RUMI_LLM_REPLAY", "user_data/replays/release-notes.json"),
        ],
    );
    let (s, list) = k.get("/api/skills").await;
    assert_eq!(s, 200);
    for skill in list["data"].as_array().unwrap() {
        assert_eq!(
            skill["warnings"],
            json!([]),
            "the shipped skills load cleanly: {skill}"
        );
    }
    let (status, r) = run(
        &k,
        json!({
            "skill_id": "release-notes",
            "goal": "Release notes for 0.14.0",
            "inputs": {"version": "0.14.0", "date": "2026-11-30"},
            "expected_outputs": [{"path": "build/RELEASE_NOTES.md", "kind": "markdown", "must_contain": ["# Rumi 0.14.0"]}],
        }),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    assert_eq!(r["model"]["provider"], "replay");
    assert_eq!(r["model"]["replay"], true);
    let id = r["run_id"].as_str().unwrap();
    let notes = std::fs::read_to_string(
        home.path()
            .join("user_data/skill_runs")
            .join(id)
            .join("build/RELEASE_NOTES.md"),
    )
    .unwrap();
    assert!(notes.starts_with("# Rumi 0.14.0\n"), "{notes}");
    assert!(
        notes.contains("- **Fixed**: The YAML depth pre-scan"),
        "{notes}"
    );
    k.stop();
}

/// A kernel killed while a run runs: at the next start the run is failed, never `running`
/// forever; and the cap on concurrent runs refuses the run past it, then frees its slots.
#[tokio::test]
async fn a_run_cut_by_kill_9_is_failed_at_the_next_start_and_the_run_cap_holds() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: vec![calls(&[("read_skill_md", json!({}))])],
            delay: Duration::from_secs(3),
            ..Policy::default()
        },
    );
    let mut k = kernel_with(
        home.path(),
        &model,
        "openai",
        &[("RUMI_MAX_SKILL_RUNS", "2")],
    );
    let slow = note_input(json!({"budgets": {"time_budget_ms": 4000}}));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, v) = k.post("/api/skills/run?async=true", slow.clone()).await;
        assert_eq!(s, 202, "{v}");
        ids.push(v["data"]["run_id"].as_str().unwrap().to_string());
    }
    let (s, v) = k.post("/api/skills/run?async=true", slow.clone()).await;
    assert_eq!(s, 429, "the third concurrent run is refused: {v}");
    assert!(v["error"].as_str().unwrap().contains("RUMI_MAX_SKILL_RUNS"));
    // Both end at their time budget; their slots come back.
    for id in &ids {
        until(30, "a capped run to end", || {
            let path = format!("/api/skills/runs/{id}");
            let k = &k;
            async move { (!k.get(&path).await.1["data"]["exit_reason"].is_null()).then_some(()) }
        })
        .await;
    }
    let (s, v) = k.post("/api/skills/run?async=true", slow.clone()).await;
    assert_eq!(s, 202, "{v}");
    let cut = v["data"]["run_id"].as_str().unwrap().to_string();
    let record = home
        .path()
        .join("user_data/skill_runs")
        .join(&cut)
        .join("result.json");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(
        on_disk["status"], "running",
        "the run is recorded as running when it starts"
    );
    k.child.kill().unwrap(); // SIGKILL
    k.child.wait().unwrap();
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (s, v) = k.get(&format!("/api/skills/runs/{cut}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["status"], "failed", "{v}");
    assert_eq!(v["data"]["exit_reason"], "no_progress");
    assert!(
        v["data"]["unmet"].to_string().contains("kernel stopped"),
        "{v}"
    );
    k.stop();
}

/// The key from the secrets store, named in `user_data/settings/llm.json`: sent to the model,
/// and nowhere else.
#[tokio::test]
async fn the_key_can_come_from_a_secret_named_in_llm_json() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let model = ScriptedModel::start(
        Flavor::Anthropic,
        policy(vec![
            calls(&[(
                "write_artifact",
                json!({"path": "note.md", "content": "# Note\n"}),
            )]),
            calls(&[("validate", json!({}))]),
            calls(&[("finish", json!({"summary": "ok"}))]),
        ]),
    );
    write(
        home.path(),
        "user_data/settings/llm.json",
        &json!({"provider": "anthropic", "base_url": model.base_url(), "model": "scripted", "api_key_secret": "LLM_KEY"}).to_string(),
    );
    let k = Kernel::start(home.path(), &[]);
    let secret = "sk-ant-FROM-THE-STORE-77";
    let (s, v) = k
        .post(
            "/api/secrets/set",
            json!({"key": "LLM_KEY", "value": secret}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    assert!(model
        .requests()
        .iter()
        .all(|q| q.header("x-api-key") == Some(secret)));
    k.stop();
    assert!(!everything_written(home.path()).contains(secret));
}
