//! The SkillRuntime held to the letter of its contract (the exact shapes and rules black-box
//! tests rely on), one test per place a conformance review found it differing; each states the
//! contract's rule. The fixtures are those of `tests/skills.rs`.

mod common;

use common::llm_server::{Flavor, Move, ScriptedModel, Turn};
use common::skills::*;
use common::*;
use serde_json::json;

/// "A run that ends unvalidated after a `not_found` read exits `missing_refs` (not
/// `no_progress`), with the missing paths in `unmet`." Here the run ends through the stall rule
/// (three steps without progress), not through a tool-less reply.
#[tokio::test]
async fn a_stalled_run_after_a_missing_read_exits_missing_refs() {
    let home = fresh_home();
    write(
        home.path(),
        "user_data/skills/gaps/SKILL.md",
        "---\nname: gaps\ndescription: Names a file it does not ship.\n---\nRead `references/missing.md` first.\n",
    );
    let plan = vec![
        calls(&[("read_skill_md", json!({}))]),
        calls(&[("read_ref", json!({"path": "references/missing.md"}))]),
        calls(&[("validate", json!({}))]),
        calls(&[("validate", json!({}))]),
        calls(&[("validate", json!({}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(
        &k,
        json!({"skill_id": "gaps", "goal": "use the missing file", "expected_outputs": [{"path": "build/out.md"}]}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_reason"], "missing_refs", "{r:#}");
    assert!(
        r["unmet"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["item"] == "references/missing.md"),
        "{r:#}"
    );
    k.stop();
}

/// "Every argv item that resolves outside the skill root and `build/` is refused with
/// `path_rejected` before the script runs." `leak.md` is a link in the skill that resolves to a
/// file outside it; the check looks at the spelling only.
#[tokio::test]
async fn an_argv_item_that_resolves_outside_through_a_link_is_path_rejected() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let plan = vec![
        calls(&[(
            "run_script",
            json!({"path": "scripts/count.py", "argv": ["leak.md"]}),
        )]),
        calls(&[("read_skill_md", json!({}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200, "{r}");
    let results = supervisor_results(&model.requests());
    assert_eq!(results[0]["ok"], false, "{:#}", results[0]);
    assert_eq!(
        results[0]["error_type"], "path_rejected",
        "{:#}",
        results[0]
    );
    assert_eq!(
        r["metrics"]["script_runs"], 0,
        "refused before the script runs"
    );
    k.stop();
}

/// "Binary = a NUL byte in the first 8 KiB or not UTF-8." A long reference that is valid UTF-8
/// with no NUL is text (inlined, cut at the L3 cap with the in-band marker); the code decides on
/// a prefix read at a byte cap, which can end inside a multi-byte character.
#[tokio::test]
async fn a_long_utf8_reference_is_text_not_binary() {
    let home = fresh_home();
    notes_skill(home.path());
    // 'a' then three-byte characters: the prefix read (100 000 + 8192 bytes) ends mid-character.
    let big = format!("a{}", "€".repeat(50_000));
    write(
        home.path(),
        "user_data/skills/notes/references/big.md",
        &big,
    );
    let plan = vec![
        calls(&[("read_ref", json!({"path": "references/big.md"}))]),
        calls(&[("read_skill_md", json!({}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200, "{r}");
    let results = supervisor_results(&model.requests());
    let first = &results[0];
    assert_eq!(first["ok"], true, "{first}");
    assert!(first.get("mime").is_none(), "answered as binary: {first}");
    let content = first["content"].as_str().expect("the text is inlined");
    assert!(content.starts_with("a€€"));
    assert!(content.contains("[truncated: "), "cut with the marker");
    k.stop();
}

/// "`GET /api/skills/runs/{id}/artifacts/{path}` takes `artifacts[].path` verbatim and answers
/// the raw bytes." A script may write an artifact larger than the cap the endpoint reads at
/// (8 MiB, well under the 50 MB disk budget); the endpoint answers 200 with the first 8 MiB,
/// and `artifacts[]` gives `bytes` and `sha256` of that cut, not of the file.
#[tokio::test]
async fn a_large_artifact_is_served_whole() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "user_data/skills/bigout/SKILL.md",
        "---\nname: bigout\ndescription: Writes a big file.\n---\nRun `scripts/big.py`.\n",
    );
    write(
        home.path(),
        "user_data/skills/bigout/scripts/big.py",
        "import os\nos.makedirs('build', exist_ok=True)\nopen('build/big.txt', 'w').write('x' * 9000000)\nprint('{}')\n",
    );
    let plan = vec![
        calls(&[("run_script", json!({"path": "scripts/big.py"}))]),
        Move::Turn(Turn::text("done")),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(
        &k,
        json!({"skill_id": "bigout", "goal": "write it", "expected_outputs": [{"path": "build/big.txt", "kind": "text"}]}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let a = r["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "build/big.txt")
        .unwrap_or_else(|| panic!("no artifact build/big.txt: {r:#}"))
        .clone();
    let resp = k
        .http
        .get(k.url(&format!(
            "/api/skills/runs/{}/artifacts/build/big.txt",
            r["run_id"].as_str().unwrap()
        )))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len(), 9_000_000, "the whole file (artifact {a})");
    k.stop();
}

/// §10: "a repeated identical script run or read is served from the memo"; §7/§14: the result
/// says `from_memo` and `metrics.tool_calls_from_memo` counts it: the script runs once.
#[tokio::test]
async fn a_repeated_identical_script_run_is_served_from_the_memo() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    notes_skill(home.path());
    let call = json!({"path": "scripts/count.py", "args": {"text": "a b"}});
    let plan = vec![
        calls(&[("run_script", call.clone())]),
        calls(&[("run_script", call)]),
        calls(&[("read_skill_md", json!({}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200, "{r}");
    let results = supervisor_results(&model.requests());
    assert_eq!(results[0]["from_memo"], false);
    assert_eq!(results[1]["stdout_json"]["words"], 2);
    assert_eq!(results[1]["from_memo"], true, "{:#}", results[1]);
    assert_eq!(r["metrics"]["tool_calls_from_memo"], 1, "{r:#}");
    assert_eq!(r["metrics"]["script_runs"], 1, "the script ran once");
    k.stop();
}

/// §15: "A read outside the skill root and `build/` → `path_rejected` (never `not_found`) and the
/// run goes on." Through a directory link that leaves the skill, a file that exists outside is
/// `path_rejected` but a missing one is `not_found` (and counted as a missing reference), so the
/// answer tells which files exist outside the skill.
#[tokio::test]
async fn a_missing_file_behind_a_link_out_of_the_skill_is_path_rejected() {
    let home = fresh_home();
    notes_skill(home.path());
    write(home.path(), "outside-dir/present.md", "OUTSIDE");
    std::os::unix::fs::symlink(
        home.path().join("outside-dir"),
        home.path().join("user_data/skills/notes/outdir"),
    )
    .unwrap();
    let plan = vec![
        calls(&[
            ("read_ref", json!({"path": "outdir/present.md"})),
            ("read_ref", json!({"path": "outdir/absent.md"})),
        ]),
        calls(&[("read_skill_md", json!({}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200, "{r}");
    let results = supervisor_results(&model.requests());
    assert_eq!(
        results[0]["error_type"], "path_rejected",
        "{:#}",
        results[0]
    );
    assert_eq!(
        results[1]["error_type"], "path_rejected",
        "{:#}",
        results[1]
    );
    assert_ne!(r["exit_reason"], "missing_refs", "{r:#}");
    k.stop();
}

/// §14: `read_ref` answers `{ok, path, resolved_path, content}`. A reference under the L3 read
/// cap whose JSON escaping passes the 128 KiB tool-result cap (here: quotes, each escaped to two
/// bytes) reaches the model as `{ok, truncated, bytes, preview}` — no `content`, no `path`.
#[tokio::test]
async fn a_large_escaped_reference_keeps_the_read_ref_shape() {
    let home = fresh_home();
    notes_skill(home.path());
    let quoted = "\"x".repeat(45_000); // 90 000 bytes, ~135 000 as a JSON string
    write(
        home.path(),
        "user_data/skills/notes/references/q.json",
        &quoted,
    );
    let plan = vec![
        calls(&[("read_ref", json!({"path": "references/q.json"}))]),
        calls(&[("read_skill_md", json!({}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, note_input(json!({}))).await;
    assert_eq!(status, 200, "{r}");
    let results = supervisor_results(&model.requests());
    let first = &results[0];
    assert_eq!(first["ok"], true);
    assert_eq!(first["path"], "references/q.json", "shape lost");
    assert_eq!(first["resolved_path"], "references/q.json");
    assert!(first["content"].is_string(), "no content");
    k.stop();
}
