//! The second run's cost (issue 15 "Benchmarks", contract §10): each example skill of
//! `user_data/skills/` is run twice with the same goal and inputs against the scripted model
//! server, playing a model that reads what it is told (after a skill memory it validates and
//! finishes; otherwise it follows the skill's instructions). The ratios run 2 / run 1 are of
//! the model input tokens (the server reports request bytes / 4 as usage, so they are the
//! server's own measure) and of the executed tool calls (admitted calls the memo did not
//! answer). Then one reference byte changes and run 3 / run 1 shows the cost back.
//!
//! `cargo bench --bench skill_cache`; figures in the README.

#[path = "../tests/common/llm_server.rs"]
mod llm_server;
mod support;

use llm_server::{Flavor, Move, Policy, ScriptedModel, Turn};
use serde_json::{json, Value};
use std::path::Path;
use support::Summary;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn finish_turn() -> Turn {
    Turn::calls(&[
        ("validate", json!({})),
        ("finish", json!({"summary": "done"})),
    ])
}

/// read_skill_md; then, told a memory, validate + finish; else `work` turns and validate + finish.
fn reading_model(first: Turn, rest: Vec<Turn>) -> Vec<Move> {
    let mut moves = vec![
        Move::Turn(Turn::calls(&[("read_skill_md", json!({}))])),
        Move::IfLastHas {
            key: "memory".into(),
            then: finish_turn(),
            otherwise: first,
        },
    ];
    moves.extend(rest.into_iter().map(Move::Turn));
    moves.push(Move::Turn(finish_turn()));
    moves
}

struct Case {
    skill: &'static str,
    /// A file whose content changes before run 3.
    touched: &'static str,
    input: Value,
    plan: Vec<Move>,
}

fn cases(repo: &Path) -> Vec<Case> {
    let sample: Value = serde_json::from_slice(
        &std::fs::read(repo.join("user_data/skills/pack-review/assets/sample-manifest.json"))
            .unwrap(),
    )
    .unwrap();
    let changes = json!([
        {"kind": "Added", "text": "Skill dependency environments"},
        {"kind": "Changed", "text": "A second run of a skill costs less"},
    ]);
    vec![
        Case {
            skill: "commit-message",
            touched: "SKILL.md",
            input: json!({
                "skill_id": "commit-message",
                "goal": "Write the commit message for the change",
                "inputs": {"summary": "cap the L2 body of SKILL.md at 20000 bytes",
                           "details": "a huge SKILL.md filled the model context; the cut is marked in-band"},
                "expected_outputs": [{"path": "build/COMMIT_MSG.txt", "kind": "text", "must_contain": ["feat(skills)"]}],
            }),
            plan: reading_model(
                Turn::calls(&[(
                    "write_artifact",
                    json!({"path": "COMMIT_MSG.txt", "content": "feat(skills): cap the SKILL.md body at 20000 bytes\n\nA huge SKILL.md filled the model context; the cut is now marked\nin-band.\n"}),
                )]),
                vec![],
            ),
        },
        Case {
            skill: "pack-review",
            touched: "references/checklist.md",
            input: json!({
                "skill_id": "pack-review",
                "goal": "Review the sample pack",
                "expected_outputs": [
                    {"path": "build/findings.json", "kind": "json"},
                    {"path": "build/review.md", "kind": "markdown", "must_contain": ["Verdict"]},
                ],
            }),
            plan: reading_model(
                Turn::calls(&[("read_ref", json!({"path": "references/checklist.md"}))]),
                vec![
                    Turn::calls(&[(
                        "run_script",
                        json!({"path": "scripts/inspect_manifest.py", "args": {
                            "manifest": sample["manifest"], "files": sample.get("files").cloned().unwrap_or(json!([])),
                            "dir_name": sample["dir_name"], "contents": sample.get("contents").cloned().unwrap_or(json!({}))}}),
                    )]),
                    Turn::calls(&[
                        (
                            "write_artifact",
                            json!({"path": "findings.json", "content": "{\"verdict\": \"reject\", \"findings\": []}"}),
                        ),
                        (
                            "write_artifact",
                            json!({"path": "review.md", "content": "# Pack review: text_tools 1.0.0\n\n**Verdict: reject**\n"}),
                        ),
                    ]),
                ],
            ),
        },
        Case {
            skill: "release-notes",
            touched: "templates/release-notes.md",
            input: json!({
                "skill_id": "release-notes",
                "goal": "Release notes for 0.15.0",
                "inputs": {"version": "0.15.0", "date": "2026-11-30", "changes": changes},
                "expected_outputs": [{"path": "build/RELEASE_NOTES.md", "kind": "markdown", "must_contain": ["0.15.0"]}],
            }),
            plan: reading_model(
                Turn::calls(&[("read_ref", json!({"path": "templates/release-notes.md"}))]),
                vec![Turn::calls(&[(
                    "template_expand",
                    json!({"template_path": "templates/release-notes.md",
                           "data": {"version": "0.15.0", "date": "2026-11-30", "changes": changes},
                           "out_path": "RELEASE_NOTES.md"}),
                )])],
            ),
        },
    ]
}

struct Cost {
    tokens: f64,
    executed: f64,
}

async fn one(c: &reqwest::Client, base: &str, input: &Value) -> Cost {
    let v = support::post(c, &format!("{base}/api/skills/run"), input)
        .await
        .expect("run");
    let r = &v["data"];
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    Cost {
        tokens: r["metrics"]["input_tokens"].as_f64().unwrap(),
        executed: r["metrics"]["tool_calls_executed"].as_f64().unwrap(),
    }
}

fn verdict(ratio: f64) -> &'static str {
    if ratio <= 0.5 {
        "holds"
    } else {
        "does not hold"
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::new();
    let mut summary = Summary::default();
    for case in cases(repo) {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("user_data/skills").join(case.skill);
        copy_dir(&repo.join("user_data/skills").join(case.skill), &dir);
        let model = ScriptedModel::start(
            Flavor::OpenAi,
            Policy {
                supervisor: case.plan,
                ..Policy::default()
            },
        );
        let url = model.base_url();
        let (kernel, _) = support::start_with(
            home.path(),
            &["--permissive"],
            &[
                ("RUMI_LLM_PROVIDER", "openai"),
                ("RUMI_LLM_BASE_URL", &url),
                ("RUMI_LLM_MODEL", "scripted"),
            ],
            None,
        );
        let (r1, r2, r3) = rt.block_on(async {
            let r1 = one(&c, &kernel.base, &case.input).await;
            let r2 = one(&c, &kernel.base, &case.input).await;
            let touched = dir.join(case.touched);
            let mut text = std::fs::read_to_string(&touched).unwrap();
            text.push('\n');
            std::fs::write(&touched, text).unwrap();
            let r3 = one(&c, &kernel.base, &case.input).await;
            (r1, r2, r3)
        });
        let tokens = r2.tokens / r1.tokens;
        let calls = r2.executed / r1.executed;
        summary.add(
            &format!("{}: run 2 / run 1 input tokens", case.skill),
            format!(
                "{tokens:.2} ({} → {}; target <= 0.5: {})",
                r1.tokens,
                r2.tokens,
                verdict(tokens)
            ),
        );
        summary.add(
            &format!("{}: run 2 / run 1 executed calls", case.skill),
            format!(
                "{calls:.2} ({} → {}; target <= 0.5: {})",
                r1.executed,
                r2.executed,
                verdict(calls)
            ),
        );
        summary.add(
            &format!("{}: run 3 / run 1 after a file changed", case.skill),
            format!(
                "tokens {:.2}, executed calls {:.2}",
                r3.tokens / r1.tokens,
                r3.executed / r1.executed
            ),
        );
        drop(kernel);
    }
    support::finish(
        &summary,
        "Skill caches: the second run",
        "bench-skill-cache.json",
    );
}
