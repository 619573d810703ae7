//! The SkillRuntime's caches (contract §10, §15 "Memo across runs") through the real binary and
//! the scripted model server: the second run of the same skill, goal and inputs costs less —
//! measured by the server from the requests it received — and validates the same; touching a
//! file's time changes nothing; changing a file's content brings the cost back; a memo hit of a
//! script restores the files it wrote; failures are kept with their reason; an identical read in
//! a run is answered from the memo.

mod common;

use common::llm_server::{Move, Recorded, ScriptedModel, Turn};
use common::skills::*;
use common::*;
use serde_json::{json, Value};

/// What one run cost, as the scripted server measured it (its supervisor requests: count and
/// bytes) and as the run reported it.
#[derive(Debug)]
struct Cost {
    requests: usize,
    input_bytes: usize,
    executed: u64,
    from_memo: u64,
}

fn supervisor(reqs: &[Recorded]) -> Vec<&Recorded> {
    reqs.iter()
        .filter(|r| !r.is_sub_agent() && !r.tool_names().is_empty())
        .collect()
}

fn cost(reqs: &[Recorded], r: &Value) -> Cost {
    let sup = supervisor(reqs);
    Cost {
        requests: sup.len(),
        input_bytes: sup.iter().map(|r| r.input_bytes()).sum(),
        executed: r["metrics"]["tool_calls_executed"].as_u64().unwrap(),
        from_memo: r["metrics"]["tool_calls_from_memo"].as_u64().unwrap(),
    }
}

/// Runs `input` and answers the result with the requests this run sent.
async fn run_measured(k: &Kernel, model: &ScriptedModel, input: Value) -> (Value, Vec<Recorded>) {
    let before = model.requests().len();
    let (status, r) = run(k, input).await;
    assert_eq!(status, 200, "{r}");
    let reqs = model.requests()[before..].to_vec();
    (r, reqs)
}

fn artifact(home: &std::path::Path, r: &Value, rel: &str) -> String {
    let run_id = r["run_id"].as_str().unwrap();
    std::fs::read_to_string(home.join(format!("user_data/skill_runs/{run_id}/build/{rel}")))
        .unwrap_or_else(|e| panic!("build/{rel} of {run_id}: {e}"))
}

fn validated(r: &Value) {
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    for gate in ["completeness", "compliance", "quality"] {
        assert_eq!(r["validation"][gate], true, "{gate}: {r:#}");
    }
}

/// The notes skill with SKILL.md at a realistic size (the example skills' are 3–5 KB).
fn realistic_notes(home: &std::path::Path) {
    notes_skill(home);
    let mut body = String::from(
        "---\nname: notes\ndescription: Writes a short note from the inputs. Use it in tests.\n---\n\
         # Notes\n\nRead [the style guide](references/style.md) first.\n\
         Count words with `scripts/count.py` (args: {\"text\": ...}).\nWrite the note to build/note.md.\n\n## Rules\n",
    );
    for i in 1..=20 {
        body.push_str(&format!(
            "{i}. A rule of the house style, spelled out the way real skills spell out theirs.\n"
        ));
    }
    write(home, "user_data/skills/notes/SKILL.md", &body);
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

/// A model that reads what it is told: after a skill memory it validates and finishes; else it
/// reads the style guide, counts words, writes the note, validates and finishes.
fn reading_model() -> Vec<Move> {
    let finish = Turn::calls(&[
        ("validate", json!({})),
        ("finish", json!({"summary": "note written"})),
    ]);
    vec![
        calls(&[("read_skill_md", json!({}))]),
        Move::IfLastHas {
            key: "memory".into(),
            then: finish.clone(),
            otherwise: Turn::calls(&[("read_ref", json!({"path": "references/style.md"}))]),
        },
        calls(&[(
            "run_script",
            json!({"path": "scripts/count.py", "args": {"text": "use headings"}}),
        )]),
        calls(&[(
            "write_artifact",
            json!({"path": "note.md", "content": "# Note\n\nUse headings (2 words counted).\n"}),
        )]),
        Move::Turn(finish),
    ]
}

#[tokio::test]
async fn the_second_run_costs_less_and_a_changed_skill_file_brings_the_cost_back() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    realistic_notes(home.path());
    let model = ScriptedModel::start(common::llm_server::Flavor::OpenAi, policy(reading_model()));
    let k = kernel_with(home.path(), &model, "openai", &[]);

    let (r1, q1) = run_measured(&k, &model, note_input(json!({}))).await;
    validated(&r1);
    let c1 = cost(&q1, &r1);
    assert_eq!(c1.from_memo, 0, "{c1:?}");

    // A touch (the modification time alone) is no change (§15).
    let skill_md = home.path().join("user_data/skills/notes/SKILL.md");
    let f = std::fs::File::options()
        .write(true)
        .open(&skill_md)
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
    drop(f);

    let (r2, q2) = run_measured(&k, &model, note_input(json!({}))).await;
    validated(&r2);
    let c2 = cost(&q2, &r2);
    let results = supervisor_results(&q2);
    assert_eq!(results[0]["already_loaded"], true, "{:#}", results[0]);
    assert!(results[0]["memory"]
        .as_str()
        .is_some_and(|m| m.contains("build/note.md")));
    let steps = r2["evidence_summary"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s["tool"] == "validate"
            && s["diff_summary"]
                .as_str()
                .is_some_and(|d| d.contains("restored") && d.contains("build/note.md"))),
        "validate filled in the kept note: {r2:#}"
    );
    assert_eq!(
        artifact(home.path(), &r2, "note.md"),
        artifact(home.path(), &r1, "note.md"),
        "the same validated note"
    );
    let calls_ratio = ratio(c2.executed as f64, c1.executed as f64);
    let bytes_ratio = ratio(c2.input_bytes as f64, c1.input_bytes as f64);
    println!(
        "run 1: {c1:?}\nrun 2: {c2:?}\nexecuted calls ratio {calls_ratio:.2}, input bytes ratio {bytes_ratio:.2}"
    );
    assert!(c2.executed < c1.executed, "{c1:?} {c2:?}");
    assert!(
        c2.requests < c1.requests,
        "fewer model turns: {c1:?} {c2:?}"
    );
    assert!(c2.input_bytes < c1.input_bytes, "{c1:?} {c2:?}");
    assert!(calls_ratio <= 0.5 && bytes_ratio <= 0.5, "{c1:?} {c2:?}");
    let t1 = r1["metrics"]["input_tokens"].as_u64().unwrap();
    let t2 = r2["metrics"]["input_tokens"].as_u64().unwrap();
    assert!(t2 < t1, "input tokens {t1} → {t2}");

    // One byte more in a reference: the skill tree hash changes, nothing is reused.
    let style = home
        .path()
        .join("user_data/skills/notes/references/style.md");
    let mut text = std::fs::read_to_string(&style).unwrap();
    text.push_str("Keep them short.\n");
    std::fs::write(&style, text).unwrap();
    let (r3, q3) = run_measured(&k, &model, note_input(json!({}))).await;
    validated(&r3);
    let c3 = cost(&q3, &r3);
    println!("run 3 (a reference changed): {c3:?}");
    assert_eq!(c3.from_memo, 0, "{c3:?}");
    assert_eq!(c3.executed, c1.executed, "{c1:?} {c3:?}");
    let back = ratio(c3.input_bytes as f64, c1.input_bytes as f64);
    assert!(
        (0.8..=1.2).contains(&back),
        "run 3 / run 1 input bytes {back:.2}"
    );
    // The cache lives under user_data/skill_cache/.
    assert!(home.path().join("user_data/skill_cache").is_dir());
    k.stop();
}

/// A model that plays the same plan whatever it is told: the memo still answers the reference
/// and the script (restoring the file it wrote), so the second run executes and sends less —
/// and a SKILL.md shorter than the memory is read again as it is.
#[tokio::test]
async fn a_fixed_plan_is_answered_from_the_memo_and_the_script_files_come_back() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let plan = vec![
        calls(&[("read_skill_md", json!({}))]),
        calls(&[("read_ref", json!({"path": "references/style.md"}))]),
        calls(&[("run_script", json!({"path": "scripts/emit.py"}))]),
        calls(&[(
            "write_artifact",
            json!({"path": "note.md", "content": "# Note\n\nfixed\n"}),
        )]),
        calls(&[
            ("validate", json!({})),
            ("finish", json!({"summary": "done"})),
        ]),
    ];
    let model = ScriptedModel::start(common::llm_server::Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (r1, q1) = run_measured(&k, &model, note_input(json!({}))).await;
    validated(&r1);
    let (r2, q2) = run_measured(&k, &model, note_input(json!({}))).await;
    validated(&r2);
    let (c1, c2) = (cost(&q1, &r1), cost(&q2, &r2));
    println!("fixed plan: run 1 {c1:?}, run 2 {c2:?}");
    let results = supervisor_results(&q2);
    // This SKILL.md is shorter than the memory would be: it is simply read again.
    assert!(results[0]["content"].is_string(), "{:#}", results[0]);
    assert_eq!(results[1]["already_loaded"], true, "{:#}", results[1]);
    assert_eq!(results[2]["from_memo"], true, "{:#}", results[2]);
    assert_eq!(results[2]["files_written"], json!(["build/out/data.txt"]));
    assert_eq!(artifact(home.path(), &r2, "out/data.txt"), "emitted");
    assert_eq!(r2["metrics"]["script_runs"], 0, "{r2:#}");
    assert_eq!(c2.from_memo, 2, "{c2:?}");
    assert!(c2.executed < c1.executed && c2.input_bytes < c1.input_bytes);
    assert!(
        r2["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["path"] == "build/out/data.txt"),
        "{r2:#}"
    );

    // The script itself changes: its memo is gone, it runs.
    write(
        home.path(),
        "user_data/skills/notes/scripts/emit.py",
        "import os\nos.makedirs('build/out', exist_ok=True)\nopen('build/out/data.txt', 'w').write('emitted v2')\n",
    );
    let (r3, q3) = run_measured(&k, &model, note_input(json!({}))).await;
    validated(&r3);
    let results = supervisor_results(&q3);
    assert_eq!(results[2]["from_memo"], false, "{:#}", results[2]);
    assert_eq!(artifact(home.path(), &r3, "out/data.txt"), "emitted v2");
    assert_eq!(r3["metrics"]["tool_calls_from_memo"], 0, "{r3:#}");
    k.stop();
}

/// §10: failures are kept too, with their reason; and a repeated identical read in a run is
/// answered from the memo (another spelling of the same file is read, then `already_loaded`).
#[tokio::test]
async fn failures_are_kept_with_their_reason_and_repeated_reads_come_from_the_memo() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let fail = json!({"path": "scripts/count.py", "argv": ["fail"]});
    let plan = vec![
        calls(&[("run_script", fail.clone())]),
        calls(&[("run_script", fail)]),
        calls(&[("read_ref", json!({"path": "references/style.md"}))]),
        calls(&[("read_ref", json!({"path": "references/style.md"}))]),
        calls(&[("read_ref", json!({"path": "References/Style.md"}))]),
    ];
    let model = ScriptedModel::start(common::llm_server::Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200, "{r}");
    let results = supervisor_results(&model.requests());
    assert_eq!(results[0]["error_type"], "script_failed");
    assert_eq!(results[1]["from_memo"], true, "{:#}", results[1]);
    assert_eq!(results[1]["error_type"], "script_failed");
    assert!(results[1]["stderr_tail"]
        .as_str()
        .is_some_and(|t| t.contains("boom")));
    assert_eq!(r["metrics"]["script_runs"], 1, "{r:#}");
    assert!(results[2]["content"]
        .as_str()
        .is_some_and(|c| c.contains("STYLE-CONTENT")));
    assert_eq!(results[3]["already_loaded"], true, "{:#}", results[3]);
    assert!(results[3].get("content").is_none());
    assert_eq!(results[4]["already_loaded"], true, "{:#}", results[4]);
    assert_eq!(
        r["metrics"]["tool_calls_from_memo"], 2,
        "the repeated script and the identical read; another spelling is read: {r:#}"
    );
    k.stop();
}
