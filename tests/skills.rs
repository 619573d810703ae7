//! The SkillRuntime end to end (issue: SkillRuntime): the real binary, real HTTP, real Python
//! scripts, and the scripted model server of `tests/common/llm_server.rs` standing in for the
//! model (it answers by the requests it receives and records them, so each test can check what
//! the runtime really sent).

mod common;
#[path = "common/llm_server.rs"]
mod llm_server;

use common::*;
use llm_server::{Flavor, Move, Policy, Recorded, ScriptedModel, Turn};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const KEY: &str = "sk-test-SECRET-4242";

/// A test skill: SKILL.md that names a reference in another letter case and a missing one,
/// scripts that count, fail, sleep, write into build/ and write into the skill itself.
fn notes_skill(home: &Path) {
    write(
        home,
        "user_data/skills/notes/SKILL.md",
        "---\nname: notes\ndescription: Writes a short note from the inputs. Use it in tests.\n---\n\
         # Notes\n\nRead [the style guide](references/style.md) and `references/Extra.md`.\n\
         Count words with `scripts/count.py`.\nWrite the note to build/note.md.\n",
    );
    write(
        home,
        "user_data/skills/notes/references/style.md",
        "STYLE-CONTENT: use headings.\n",
    );
    write(
        home,
        "user_data/skills/notes/references/extra.md",
        "EXTRA-CONTENT\n",
    );
    write(
        home,
        "user_data/skills/notes/scripts/count.py",
        "import json, sys\nargs = json.load(sys.stdin)\nif sys.argv[1:] == ['fail']:\n    print('boom', file=sys.stderr)\n    sys.exit(3)\n\
         print(json.dumps({'words': len(args.get('text', '').split()), 'argv': sys.argv[1:]}))\n",
    );
    write(
        home,
        "user_data/skills/notes/scripts/emit.py",
        "import os\nos.makedirs('build/out', exist_ok=True)\nopen('build/out/data.txt', 'w').write('emitted')\nprint('plain text out')\n",
    );
    write(
        home,
        "user_data/skills/notes/scripts/tamper.py",
        "open('SKILL.md', 'a').write('\\ntampered')\n",
    );
    write(
        home,
        "user_data/skills/notes/scripts/sleep.py",
        "import time\ntime.sleep(60)\n",
    );
    write(home, "outside-secret.txt", "TOP-SECRET-OUTSIDE");
    std::os::unix::fs::symlink(
        home.join("outside-secret.txt"),
        home.join("user_data/skills/notes/leak.md"),
    )
    .unwrap();
}

/// Starts a kernel whose model is `model`.
fn kernel_with(home: &Path, model: &ScriptedModel, flavor: &str, extra: &[(&str, &str)]) -> Kernel {
    let base = model.base_url();
    let mut env = vec![
        ("RUMI_LLM_PROVIDER", flavor),
        ("RUMI_LLM_BASE_URL", base.as_str()),
        ("RUMI_LLM_MODEL", "scripted"),
        ("RUMI_LLM_API_KEY", KEY),
    ];
    env.extend_from_slice(extra);
    Kernel::start(home, &env)
}

fn calls(list: &[(&str, Value)]) -> Move {
    Move::Turn(Turn::calls(list))
}

fn policy(moves: Vec<Move>) -> Policy {
    Policy {
        supervisor: moves,
        ..Policy::default()
    }
}

async fn run(k: &Kernel, input: Value) -> (u16, Value) {
    let (status, body) = k.post("/api/skills/run", input).await;
    (status, body["data"].clone())
}

fn note_input(extra: Value) -> Value {
    let mut v = json!({
        "skill_id": "notes",
        "goal": "Write a short note about headings.",
        "inputs": {"topic": "headings"},
        "expected_outputs": [{"path": "build/note.md", "kind": "markdown", "must_contain": ["Note"]}],
    });
    if let Value::Object(m) = extra {
        for (k, x) in m {
            v[k] = x;
        }
    }
    v
}

/// The tool result the model got for the `n`-th tool call (0-based) of the supervisor's
/// conversation, from the last supervisor request.
fn supervisor_results(reqs: &[Recorded]) -> Vec<Value> {
    reqs.iter()
        .rfind(|r| !r.is_sub_agent() && !r.tool_names().is_empty())
        .map(|r| r.tool_results())
        .unwrap_or_default()
}

/// Everything the kernel wrote under its home and printed, as one string (for leak checks).
fn everything_written(home: &Path) -> String {
    let mut all = String::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                all.push_str(&String::from_utf8_lossy(
                    &std::fs::read(e.path()).unwrap_or_default(),
                ));
            }
        }
    }
    all
}

fn the_happy_plan() -> Vec<Move> {
    vec![
        calls(&[("read_skill_md", json!({}))]),
        calls(&[
            ("read_ref", json!({"path": "references/style.md"})),
            ("read_ref", json!({"path": "references/Extra.md"})),
        ]),
        calls(&[(
            "run_script",
            json!({"path": "scripts/count.py", "args": {"text": "a b c"}, "argv": ["--mode=fast"]}),
        )]),
        calls(&[(
            "write_artifact",
            json!({"path": "note.md", "content": "# Note\n\nHeadings help.\n"}),
        )]),
        calls(&[("finish", json!({"summary": "early"}))]),
        calls(&[("validate", json!({}))]),
        calls(&[("finish", json!({"summary": "a note"}))]),
    ]
}

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
