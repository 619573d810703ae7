//! Skill scripts in strict mode (SkillRuntime contract §8): each runs in a network-less,
//! hardened container of the pack runtime image with the skill read-only and only `build/`
//! writable; `.py`, `.sh` and `.js` all run there. Needs Docker and the image (`rumi image
//! build`): skipped locally without them, a failure in CI.

mod common;

use common::llm_server::{Flavor, Move, Policy, ScriptedModel, Turn};
use common::*;
use serde_json::{json, Value};

const PROBE: &str = r#"
import json, os, socket, sys
def attempt(fn):
    try:
        fn()
        return "ok"
    except Exception as e:
        return type(e).__name__
def write(path):
    def w():
        with open(path, "w") as f:
            f.write("x")
    return w
def connect(host):
    def c():
        s = socket.create_connection((host, 80), timeout=2)
        s.close()
    return c
args = json.load(sys.stdin)
print(json.dumps({
    "cwd": os.getcwd(),
    "args": args,
    "skill_md": attempt(write("SKILL.md")),
    "reference": attempt(write("references/new.md")),
    "build": attempt(write("build/probe.txt")),
    "tmp": attempt(write("/tmp/x")),
    "root": attempt(write("/etc/x")),
    "net_ip": attempt(connect("1.1.1.1")),
    "net_host": attempt(connect("127.0.0.1")),
    "uid": os.getuid(),
}))
"#;

fn calls(list: &[(&str, Value)]) -> Move {
    Move::Turn(Turn::calls(list))
}

fn skill_script_containers() -> Vec<String> {
    container_names(&["label=rumi.role=skill-script"])
}

#[tokio::test]
async fn scripts_run_in_a_network_less_container_that_can_write_only_build() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "user_data/skills/probe/SKILL.md",
        "---\nname: probe\ndescription: Probes its sandbox.\n---\nRun `scripts/probe.py`.\n",
    );
    write(
        home.path(),
        "user_data/skills/probe/scripts/probe.py",
        PROBE,
    );
    write(
        home.path(),
        "user_data/skills/probe/references/r.md",
        "ref\n",
    );
    write(
        home.path(),
        "user_data/skills/probe/scripts/hello.js",
        "let data = '';\nprocess.stdin.on('data', c => data += c);\nprocess.stdin.on('end', () => console.log(JSON.stringify({node: process.version, got: JSON.parse(data)})));\n",
    );
    write(
        home.path(),
        "user_data/skills/probe/scripts/hello.sh",
        "#!/bin/sh\necho \"shell $1\" > build/shell.txt\ncat\n",
    );
    let plan = vec![
        calls(&[(
            "run_script",
            json!({"path": "scripts/probe.py", "args": {"k": 1}}),
        )]),
        calls(&[(
            "run_script",
            json!({"path": "scripts/hello.js", "args": {"x": [1, 2]}}),
        )]),
        calls(&[(
            "run_script",
            json!({"path": "scripts/hello.sh", "argv": ["arg1"], "args": {"s": true}}),
        )]),
        calls(&[("validate", json!({}))]),
        calls(&[("finish", json!({"summary": "probed"}))]),
    ];
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: plan,
            ..Policy::default()
        },
    );
    let base = model.base_url();
    let k = Kernel::start_mode(
        home.path(),
        &[
            ("RUMI_LLM_PROVIDER", "openai"),
            ("RUMI_LLM_BASE_URL", &base),
            ("RUMI_LLM_MODEL", "scripted"),
        ],
        false,
    );
    let (status, body) = k
        .post(
            "/api/skills/run",
            json!({"skill_id": "probe", "goal": "probe", "expected_outputs": [{"path": "build/shell.txt", "kind": "text"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let r = &body["data"];
    assert_eq!(r["isolation"], "container");
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    let reqs = model.requests();
    let results = reqs
        .iter()
        .rev()
        .find(|q| !q.tool_names().is_empty())
        .unwrap()
        .tool_results();
    let probe = &results[0]["stdout_json"];
    assert_eq!(results[0]["isolation"], "container");
    assert_eq!(probe["cwd"], "/skill");
    assert_eq!(probe["args"], json!({"k": 1}));
    assert_ne!(probe["skill_md"], "ok", "{probe}");
    assert_ne!(probe["reference"], "ok", "{probe}");
    assert_eq!(probe["build"], "ok", "{probe}");
    assert_ne!(probe["root"], "ok", "{probe}");
    assert_ne!(probe["net_ip"], "ok", "{probe}");
    assert_ne!(probe["net_host"], "ok", "{probe}");
    assert_ne!(probe["uid"], 0, "{probe}");
    assert_eq!(results[0]["files_written"], json!(["build/probe.txt"]));
    assert!(
        results[1]["stdout_json"]["node"]
            .as_str()
            .unwrap()
            .starts_with('v'),
        "{}",
        results[1]
    );
    assert_eq!(results[1]["stdout_json"]["got"], json!({"x": [1, 2]}));
    assert_eq!(results[2]["stdout_json"], json!({"s": true}));
    let run_id = r["run_id"].as_str().unwrap();
    let shell = std::fs::read_to_string(
        home.path()
            .join("user_data/skill_runs")
            .join(run_id)
            .join("build/shell.txt"),
    )
    .unwrap();
    assert_eq!(shell, "shell arg1\n");
    // The skill is untouched: no build/ mount point, no new file, SKILL.md as written.
    let skill = home.path().join("user_data/skills/probe");
    assert!(!skill.join("build").exists());
    assert!(!skill.join("references/new.md").exists());
    assert!(std::fs::read_to_string(skill.join("SKILL.md"))
        .unwrap()
        .ends_with("Run `scripts/probe.py`.\n"));
    // Every script container is gone.
    until(30, "the script containers to be removed", || async {
        skill_script_containers().is_empty().then_some(())
    })
    .await;
    k.stop();
}
