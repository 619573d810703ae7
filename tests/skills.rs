//! The SkillRuntime end to end (issue: SkillRuntime): the real binary, real HTTP, real Python
//! scripts, and the scripted model server of `tests/common/llm_server.rs` standing in for the
//! model (it answers by the requests it receives and records them, so each test can check what
//! the runtime really sent). This file: runs — disclosure, delegation, budgets, missing
//! references, scripts, paths, validation; `tests/skills_api.rs`: the entrances around them.

mod common;

use common::llm_server::{Flavor, Move, Policy, Recorded, ScriptedModel, Turn};
use common::skills::*;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn a_direct_run_validates_with_every_disclosure_counted_and_nothing_leaked() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let model = ScriptedModel::start(Flavor::OpenAi, policy(the_happy_plan()));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["isolation"], "host");
    let m = &r["metrics"];
    for key in [
        "input_tokens",
        "output_tokens",
        "model_calls",
        "tool_calls",
        "tool_calls_executed",
        "tool_calls_from_memo",
        "tool_calls_by_name",
        "script_runs",
        "script_failures",
        "l1_tokens",
        "l2_loads",
        "l3_reads",
        "l3_exec",
        "cache_hits",
        "cache_misses",
        "bytes_truncated",
    ] {
        assert!(!m[key].is_null(), "metrics.{key} missing: {m}");
    }
    assert_eq!(m["l2_loads"], 1);
    assert_eq!(m["l3_reads"], 2);
    assert_eq!(m["l3_exec"], 1);
    assert_eq!(m["script_runs"], 1);
    assert_eq!(m["tool_calls"], 8);
    assert_eq!(
        m["tool_calls_executed"], 8,
        "no memo in this build: every admitted call ran"
    );
    assert_eq!(m["tool_calls_from_memo"], 0);
    assert_eq!(m["tool_calls_by_name"]["finish"], 2);
    assert_eq!(m["tool_calls_by_name"]["read_ref"], 2);
    // Seven turns and one micro-reflect (finish refused, then validate: two steps without
    // progress).
    assert_eq!(m["model_calls"], 8);
    // Tokens are what the scripted server counted: bytes/4 of what it received and sent.
    let reqs = model.requests();
    let sent: u64 = reqs.iter().map(|q| (q.body_len / 4) as u64).sum();
    assert_eq!(m["input_tokens"].as_u64().unwrap(), sent);
    let left = r["remaining_budgets"]["token_budget"].as_u64().unwrap();
    assert_eq!(
        left,
        60_000 - m["input_tokens"].as_u64().unwrap() - m["output_tokens"].as_u64().unwrap()
    );
    assert_eq!(r["remaining_budgets"]["max_tool_calls"], 24 - 8);
    // The artifact: listed with its version and hash, and served as raw bytes.
    let a = &r["artifacts"][0];
    assert_eq!(a["path"], "build/note.md");
    assert_eq!(a["name"], "act.note@1");
    assert_eq!(a["version"], 1);
    let bytes = k
        .http
        .get(k.url(&format!(
            "/api/skills/runs/{}/artifacts/build/note.md",
            r["run_id"].as_str().unwrap()
        )))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"# Note\n\nHeadings help.\n");
    // What the model saw: L2 and L3 in tool results, the case-insensitive resolution recorded,
    // finish refused before validate, the script's JSON parsed.
    let results = supervisor_results(&reqs);
    assert!(results[0]["content"]
        .as_str()
        .unwrap()
        .contains("Read [the style guide]"));
    assert_eq!(results[1]["content"], "STYLE-CONTENT: use headings.\n");
    assert_eq!(results[2]["resolved_path"], "references/extra.md");
    assert_eq!(results[2]["case_resolved"], true);
    assert_eq!(results[3]["stdout_json"]["words"], 3);
    assert_eq!(results[3]["stdout_json"]["argv"], json!(["--mode=fast"]));
    assert_eq!(results[3]["isolation"], "host");
    assert_eq!(results[4]["version"], 1);
    assert_eq!(results[5]["ok"], false);
    assert_eq!(results[5]["error_type"], "validation_failed");
    assert_eq!(results[6]["passed"], true);
    // L1 only in the system prompt: no loaded content there, ever; one seed per run.
    for q in &reqs {
        let sys = q.system_prompt();
        assert!(sys.contains("notes: Writes a short note"), "{sys}");
        assert!(!sys.contains("STYLE-CONTENT") && !sys.contains("Read [the style guide]"));
        assert_eq!(q.body["temperature"], 0);
        assert_eq!(q.body["seed"], reqs[0].body["seed"]);
        assert_eq!(
            q.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    // The evidence: one line per tool call with the keys of §15.
    let run_dir = home
        .path()
        .join("user_data/skill_runs")
        .join(r["run_id"].as_str().unwrap());
    let evidence = std::fs::read_to_string(run_dir.join("evidence.jsonl")).unwrap();
    let lines: Vec<Value> = evidence
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    for l in &lines {
        for key in [
            "tool",
            "reason_short",
            "inputs_digest",
            "cost",
            "diff_summary",
            "file_ids",
        ] {
            assert!(!l[key].is_null(), "{key} in {l}");
        }
    }
    // A second run of the same input: the system prompt is byte-identical.
    let first_prompt = reqs[0].system_prompt();
    let (_, r2) = run(&k, note_input(json!({}))).await;
    assert_eq!(r2["exit_reason"], "validated");
    let reqs2 = model.requests();
    assert_eq!(reqs2[reqs.len()].system_prompt(), first_prompt);
    // The skill directory was never written.
    assert!(!home.path().join("user_data/skills/notes/build").exists());
    // The key is nowhere: not in answers, the kernel's log, the audit, the run records.
    let (_, status_view) = k
        .get(&format!(
            "/api/skills/runs/{}",
            r["run_id"].as_str().unwrap()
        ))
        .await;
    assert!(!status_view.to_string().contains(KEY));
    assert!(!r.to_string().contains(KEY));
    k.stop();
    assert!(!everything_written(home.path()).contains(KEY));
}

#[tokio::test]
async fn the_anthropic_wire_runs_the_same_skill() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let model = ScriptedModel::start(Flavor::Anthropic, policy(the_happy_plan()));
    let k = kernel_with(home.path(), &model, "anthropic", &[]);
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    let reqs = model.requests();
    assert!(reqs.iter().all(|q| q.answered_status == 200));
    assert!(reqs.iter().all(|q| q.body.get("seed").is_none()));
    assert!(reqs.iter().all(|q| q.header("x-api-key") == Some(KEY)));
    assert_eq!(r["metrics"]["model_calls"], 8);
    k.stop();
}

#[tokio::test]
async fn a_delegated_call_runs_the_agents_own_loop_and_answers_done_verbatim() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let mut agents = HashMap::new();
    agents.insert(
        "fs_read".to_string(),
        vec![
            calls(&[("fs_read", json!({"path": "references/STYLE.md"}))]),
            calls(&[("done", json!({"result": {"found": "headings", "n": 1}}))]),
        ],
    );
    agents.insert(
        "fs_write".to_string(),
        vec![
            calls(&[(
                "fs_write",
                json!({"path": "note.md", "content": "# Note\n\nfrom the agent\n"}),
            )]),
            calls(&[("done", json!({"result": "written"}))]),
        ],
    );
    let plan = vec![
        calls(&[(
            "read_ref",
            json!({"task": "find what the style guide asks for"}),
        )]),
        calls(&[("write_artifact", json!({"task": "write the note"}))]),
        calls(&[("validate", json!({}))]),
        calls(&[("finish", json!({"summary": "ok"}))]),
    ];
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: plan,
            agents,
            ..Policy::default()
        },
    );
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (_, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    let reqs = model.requests();
    let results = supervisor_results(&reqs);
    assert_eq!(results[0], json!({"found": "headings", "n": 1}));
    assert_eq!(results[1], json!("written"));
    let sub: Vec<&Recorded> = reqs.iter().filter(|q| q.is_sub_agent()).collect();
    assert!(!sub.is_empty());
    let reader = sub.iter().find(|q| q.tool_names()[0] == "fs_read").unwrap();
    assert_eq!(
        reader.tool_names(),
        [
            "fs_read",
            "fs_list",
            "blackboard_get",
            "blackboard_put",
            "done"
        ]
    );
    let writer = sub
        .iter()
        .find(|q| q.tool_names()[0] == "fs_write")
        .unwrap();
    assert_eq!(
        writer.tool_names(),
        ["fs_write", "blackboard_get", "blackboard_put", "done"]
    );
    // The task is the only user message of a sub agent's conversation.
    let users: Vec<&Value> = reader.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .collect();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["content"], "find what the style guide asks for");
    // Inside the loop the read resolved letter case too, and each inner call was admitted.
    let inner = reader.tool_results();
    assert_eq!(inner.len(), 0); // the first agent request has no results yet
    let by_name = &r["metrics"]["tool_calls_by_name"];
    assert_eq!(by_name["fs_read"], 1);
    assert_eq!(by_name["fs_write"], 1);
    assert_eq!(by_name["done"], 2);
    assert_eq!(r["metrics"]["l3_reads"], 1);
    k.stop();
}

/// One run per budget: each ends `budget_exceeded:<which>` with what exists.
#[tokio::test]
async fn each_budget_ends_the_run_with_what_exists() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let reads: Vec<Move> = (0..6)
        .map(|i| {
            calls(&[(
                "write_artifact",
                json!({"path": format!("n{i}.md"), "content": format!("# {i}\n")}),
            )])
        })
        .collect();
    let model = ScriptedModel::start(Flavor::OpenAi, policy(reads));
    let k = kernel_with(home.path(), &model, "openai", &[]);

    let (status, r) = run(&k, note_input(json!({"budgets": {"max_tool_calls": 2}}))).await;
    assert_eq!(status, 200);
    assert_eq!(r["exit_reason"], "budget_exceeded:calls", "{r:#}");
    assert_eq!(r["status"], "failed");
    assert_eq!(r["metrics"]["tool_calls"], 2);
    assert_eq!(r["remaining_budgets"]["max_tool_calls"], 0);
    assert_eq!(
        r["artifacts"].as_array().unwrap().len(),
        2,
        "what exists is kept"
    );

    // A request the budget cannot pay for is not sent at all.
    let sent_before = model.requests().len();
    let (_, r) = run(&k, note_input(json!({"budgets": {"token_budget": 50}}))).await;
    assert_eq!(r["exit_reason"], "budget_exceeded:tokens", "{r:#}");
    assert_eq!(r["metrics"]["model_calls"], 0);
    assert_eq!(r["remaining_budgets"]["token_budget"], 50);
    assert_eq!(
        model.requests().len(),
        sent_before,
        "nothing went to the model"
    );
    // One the estimate admits but whose answer crosses the budget is charged, and its tool
    // calls are refused: the budget sits just under what the server counts for a first request.
    let first = model.requests()[0].body_len as u64 / 4;
    let (_, r) = run(
        &k,
        note_input(json!({"budgets": {"token_budget": first - 5}})),
    )
    .await;
    assert_eq!(r["exit_reason"], "budget_exceeded:tokens", "{r:#}");
    assert_eq!(r["metrics"]["model_calls"], 1);
    assert_eq!(r["metrics"]["tool_calls"], 0);
    assert_eq!(r["remaining_budgets"]["token_budget"], 0);

    // Disk: a write past the limit is refused before it happens.
    let big = "x".repeat(1_200_000);
    let model2 = ScriptedModel::start(
        Flavor::OpenAi,
        policy(vec![calls(&[(
            "write_artifact",
            json!({"path": "big.txt", "content": big}),
        )])]),
    );
    k.stop();
    let k = kernel_with(home.path(), &model2, "openai", &[]);
    let (_, r) = run(
        &k,
        note_input(json!({"budgets": {"disk_write_limit_mb": 1, "token_budget": 10_000_000}})),
    )
    .await;
    assert_eq!(r["exit_reason"], "budget_exceeded:disk", "{r:#}");
    assert!(r["artifacts"].as_array().unwrap().is_empty());
    k.stop();

    // Time: a model slower than the budget; the in-flight call is cancelled at the deadline.
    let slow = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: vec![calls(&[("read_skill_md", json!({}))])],
            delay: Duration::from_secs(20),
            ..Policy::default()
        },
    );
    let k = kernel_with(home.path(), &slow, "openai", &[]);
    let t = std::time::Instant::now();
    let (_, r) = run(&k, note_input(json!({"budgets": {"time_budget_ms": 1500}}))).await;
    assert_eq!(r["exit_reason"], "budget_exceeded:time", "{r:#}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the deadline cancels the model call"
    );
    k.stop();
}

#[tokio::test]
async fn a_missing_reference_gets_one_substitute_attempt_then_unmet() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    write(
        home.path(),
        "user_data/skills/gaps/SKILL.md",
        "---\nname: gaps\ndescription: Names a file it does not ship.\n---\nRead `references/missing.md` first.\n",
    );
    let plan = vec![
        calls(&[("read_skill_md", json!({}))]),
        calls(&[("read_ref", json!({"path": "references/missing.md"}))]),
        Move::IfLastError {
            error_type: "not_found".into(),
            then: Turn::text("I cannot find it."),
            otherwise: Turn::calls(&[("validate", json!({}))]),
        },
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(
        &k,
        json!({"skill_id": "gaps", "goal": "use the missing file", "expected_outputs": [{"path": "build/out.md"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(r["exit_reason"], "missing_refs", "{r:#}");
    let items: Vec<&str> = r["unmet"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["item"].as_str())
        .collect();
    assert!(items.contains(&"references/missing.md"), "{items:?}");
    let results = supervisor_results(&model.requests());
    // Detected at once: read_skill_md names it missing before anything asks for it.
    assert_eq!(
        results[0]["missing_references"],
        json!(["references/missing.md"])
    );
    assert_eq!(results[1]["error_type"], "not_found");
    k.stop();
}

#[tokio::test]
async fn scripts_fail_escape_and_are_refused_as_the_contract_says() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    // A failing script, then argv that leaves the skill, then a script that writes files, then
    // nothing more: script_failed only if the outputs stay unmet.
    let plan = vec![
        calls(&[("run_script", json!({"path": "scripts/emit.py"}))]),
        calls(&[(
            "run_script",
            json!({"path": "scripts/count.py", "argv": ["../../outside-secret.txt"]}),
        )]),
        calls(&[(
            "run_script",
            json!({"path": "scripts/count.py", "argv": ["fail"]}),
        )]),
        Move::Turn(Turn::text("giving up")),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (_, r) = run(&k, note_input(json!({}))).await;
    let results = supervisor_results(&model.requests());
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["stdout_text"], "plain text out\n");
    assert_eq!(results[0]["files_written"], json!(["build/out/data.txt"]));
    assert_eq!(results[1]["error_type"], "path_rejected");
    assert_eq!(results[2]["ok"], false);
    assert_eq!(results[2]["error_type"], "script_failed");
    assert_eq!(results[2]["exit_code"], 3);
    assert!(results[2]["stderr_tail"].as_str().unwrap().contains("boom"));
    assert_eq!(r["exit_reason"], "script_failed", "{r:#}");
    assert_eq!(r["metrics"]["script_failures"], 1);
    assert_eq!(r["metrics"]["script_retries"], 0);
    assert!(r["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["path"] == "build/out/data.txt"));
    k.stop();

    // A script that writes into the skill itself ends the run at once (permissive: detected by
    // diffing); so does a refused extension.
    for (path, why) in [
        ("scripts/tamper.py", "changed the skill"),
        ("references/style.md", "only .py, .sh and .js"),
    ] {
        let model = ScriptedModel::start(
            Flavor::OpenAi,
            policy(vec![
                calls(&[("run_script", json!({"path": path}))]),
                calls(&[("read_skill_md", json!({}))]),
            ]),
        );
        let k = kernel_with(home.path(), &model, "openai", &[]);
        let (_, r) = run(&k, note_input(json!({}))).await;
        assert_eq!(r["exit_reason"], "sandbox_violation", "{path}: {r:#}");
        assert_eq!(r["metrics"]["tool_calls"], 1, "the run ended at once");
        let results = supervisor_results(&model.requests());
        assert!(results.is_empty() || results[0]["error"].as_str().unwrap_or("").contains(why));
        k.stop();
    }
}

#[tokio::test]
async fn every_path_that_leaves_the_skill_is_rejected_and_the_run_goes_on() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let bad = [
        "../../outside-secret.txt",
        "/etc/passwd",
        "leak.md",
        "build/../SKILL.md",
        "references/../../x",
    ];
    let mut attempts: Vec<(&str, Value)> = bad
        .iter()
        .map(|p| ("read_ref", json!({"path": p})))
        .collect();
    attempts.push((
        "write_artifact",
        json!({"path": "../escape.md", "content": "x"}),
    ));
    attempts.push((
        "write_artifact",
        json!({"path": "/tmp/escape.md", "content": "x"}),
    ));
    attempts.push((
        "template_expand",
        json!({"template_path": "leak.md", "data": {}, "out_path": "t.md"}),
    ));
    attempts.push((
        "diff",
        json!({"a": "/etc/passwd", "b": "references/style.md"}),
    ));
    attempts.push(("list_files", json!({"glob": "../**"})));
    // Each refused call shares its turn with a write that makes progress, so the run goes on.
    let plan: Vec<Move> = attempts
        .into_iter()
        .enumerate()
        .map(|(i, (tool, args))| {
            calls(&[
                (tool, args),
                (
                    "write_artifact",
                    json!({"path": format!("ok{i}.md"), "content": format!("# {i}\n")}),
                ),
            ])
        })
        .collect();
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: plan,
            ..Policy::default()
        },
    );
    let k = kernel_with(home.path(), &model, "openai", &[("RUMI_LOG", "warn")]);
    let (_, r) = run(&k, note_input(json!({"budgets": {"max_tool_calls": 40}}))).await;
    let results = supervisor_results(&model.requests());
    let rejected: Vec<&Value> = results
        .iter()
        .filter(|x| x["error_type"] == "path_rejected")
        .collect();
    assert_eq!(rejected.len(), 9, "{results:#?}");
    assert_eq!(
        r["metrics"]["tool_calls"], 20,
        "every refused call was answered and the run went on"
    );
    assert!(
        results.iter().all(|x| x["error_type"] != "not_found"),
        "{results:#?}"
    );
    assert!(!results
        .iter()
        .any(|x| x.to_string().contains("TOP-SECRET-OUTSIDE")));
    assert!(!home.path().join("user_data/skill_runs/escape.md").exists());
    assert!(
        !Path::new("/tmp/escape.md").exists()
            || std::fs::read_to_string("/tmp/escape.md").unwrap_or_default() != "x"
    );
    assert_ne!(r["exit_reason"], "sandbox_violation");
    k.stop();
}

#[tokio::test]
async fn validation_gates_fail_one_by_one_and_finish_waits_for_a_pass() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let expected = json!([
        {"path": "build/a.md", "kind": "markdown", "must_contain": ["#0055ff"]},
        {"path": "build/b.json", "kind": "json", "schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}},
        {"path": "build/c.md", "kind": "markdown"},
    ]);
    let plan = vec![
        calls(&[("validate", json!({}))]),
        calls(&[
            (
                "write_artifact",
                json!({"path": "a.md", "content": "# A\nno colour\n"}),
            ),
            (
                "write_artifact",
                json!({"path": "b.json", "content": "{\"n\": \"one\"}"}),
            ),
            (
                "write_artifact",
                json!({"path": "c.md", "content": "# C\nTODO write this\n[x](missing.md)\n"}),
            ),
        ]),
        calls(&[("validate", json!({}))]),
        calls(&[
            (
                "write_artifact",
                json!({"path": "a.md", "content": "# A\ncolour #0055ff\n"}),
            ),
            (
                "write_artifact",
                json!({"path": "b.json", "content": "{\"n\": 1}"}),
            ),
            (
                "write_artifact",
                json!({"path": "c.md", "content": "# C\ndone, see [a](a.md)\n"}),
            ),
        ]),
        calls(&[("diff", json!({"a": "act.c@1", "b": "act.c@2"}))]),
        calls(&[("validate", json!({}))]),
        calls(&[("finish", json!({"summary": "all good"}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (_, r) = run(&k, note_input(json!({"expected_outputs": expected}))).await;
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    let results = supervisor_results(&model.requests());
    assert_eq!(results[0]["completeness"], false);
    let second = &results[4];
    assert_eq!(second["completeness"], true);
    assert_eq!(second["compliance"], false, "{second:#}");
    assert_eq!(second["quality"], false, "{second:#}");
    let problems = second["details"].to_string();
    assert!(
        problems.contains("#0055ff") && problems.contains("b.json") && problems.contains("TODO"),
        "{problems}"
    );
    assert_eq!(results[9]["passed"], true);
    let diff = results[8]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-TODO write this")
            || diff.contains("- TODO write this")
            || diff.contains("TODO"),
        "{diff}"
    );
    let names: Vec<&str> = r["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"act.c@2"), "{names:?}");
    k.stop();
}

/// A run the third step without progress ends, after a `not_found` read, exits `missing_refs`
/// too (§15: not `no_progress`); every `run_script` answer says where it ran, refusals included.
#[tokio::test]
async fn a_stalled_run_after_a_missing_read_is_missing_refs() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        policy(vec![
            calls(&[("read_ref", json!({"path": "references/nope.md"}))]),
            calls(&[("run_script", json!({"path": "scripts/none.py"}))]),
            calls(&[("list_files", json!({}))]),
            calls(&[("list_files", json!({}))]),
        ]),
    );
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (_, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(r["exit_reason"], "missing_refs", "{r:#}");
    let results = supervisor_results(&model.requests());
    assert_eq!(results[1]["error_type"], "not_found");
    assert_eq!(results[1]["isolation"], "host");
    k.stop();
}
