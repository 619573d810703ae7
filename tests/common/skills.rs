//! Fixtures of the SkillRuntime's end-to-end tests (`tests/skills.rs`, `tests/skills_api.rs`): a
//! test skill with references and scripts, a kernel pointed at the scripted model server, and the
//! helpers that read what the model was sent.
#![allow(dead_code)]

use super::llm_server::{Move, Policy, Recorded, ScriptedModel, Turn};
use super::{write, Kernel};
use serde_json::{json, Value};
use std::path::Path;

pub const KEY: &str = "sk-test-SECRET-4242";

/// A test skill: SKILL.md that names a reference in another letter case and a missing one,
/// scripts that count, fail, sleep, write into build/ and write into the skill itself.
pub fn notes_skill(home: &Path) {
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
pub fn kernel_with(
    home: &Path,
    model: &ScriptedModel,
    flavor: &str,
    extra: &[(&str, &str)],
) -> Kernel {
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

pub fn calls(list: &[(&str, Value)]) -> Move {
    Move::Turn(Turn::calls(list))
}

pub fn policy(moves: Vec<Move>) -> Policy {
    Policy {
        supervisor: moves,
        ..Policy::default()
    }
}

pub async fn run(k: &Kernel, input: Value) -> (u16, Value) {
    let (status, body) = k.post("/api/skills/run", input).await;
    (status, body["data"].clone())
}

pub fn note_input(extra: Value) -> Value {
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
pub fn supervisor_results(reqs: &[Recorded]) -> Vec<Value> {
    reqs.iter()
        .rfind(|r| !r.is_sub_agent() && !r.tool_names().is_empty())
        .map(|r| r.tool_results())
        .unwrap_or_default()
}

/// Everything the kernel wrote under its home and printed, as one string (for leak checks).
pub fn everything_written(home: &Path) -> String {
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

pub fn the_happy_plan() -> Vec<Move> {
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

/// Waits (30 s deadline) until the run `run_id` has ended; its ActResult.
pub async fn await_run(k: &Kernel, run_id: &str) -> Value {
    super::until(30, "the skill run to end", || async {
        let (_, v) = k.get(&format!("/api/skills/runs/{run_id}")).await;
        (!v["data"]["exit_reason"].is_null()).then(|| v["data"].clone())
    })
    .await
}

/// Everything the model was sent, as one string (for leak checks).
pub fn sent_to_model(model: &ScriptedModel) -> String {
    model
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect()
}
