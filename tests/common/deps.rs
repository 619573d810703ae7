//! Fixtures of the skill dependency tests (`tests/skills_deps.rs`): wheels with dependencies, npm
//! tarballs made with `tar czf` of a `package/` directory, and skills whose scripts import them.
#![allow(dead_code)]

use super::llm_server::{Move, ScriptedModel};
use super::skills::calls;
use super::write;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Builds `<name>-<version>-py3-none-any.whl` in `dir` whose METADATA requires `requires`.
pub fn wheel(dir: &Path, name: &str, version: &str, requires: &[&str], files: &[(&str, &str)]) {
    let script = r#"
import json, sys, zipfile
dir, name, version, requires, entries = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
di = f"{name}-{version}.dist-info"
meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
with zipfile.ZipFile(f"{dir}/{name}-{version}-py3-none-any.whl", "w") as z:
    for arc, text in entries:
        z.writestr(zipfile.ZipInfo(arc), text)
    z.writestr(f"{di}/METADATA", meta)
    z.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(f"{di}/RECORD", "")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(name)
        .arg(version)
        .arg(serde_json::to_string(requires).unwrap())
        .arg(serde_json::to_string(files).unwrap())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test wheels: `tinypkg` (needs `tinydep`), `tinydep`, `hdrpkg`, `reqpkg`.
pub fn wheels(dir: &Path) {
    wheel(
        dir,
        "tinypkg",
        "1.0",
        &["tinydep>=1"],
        &[("tinypkg/__init__.py", "from tinydep import X\nVALUE = 42\n")],
    );
    wheel(
        dir,
        "tinydep",
        "1.0",
        &[],
        &[("tinydep/__init__.py", "X = 7\n")],
    );
    wheel(
        dir,
        "hdrpkg",
        "2.0",
        &[],
        &[("hdrpkg/__init__.py", "VALUE = 'from-header'\n")],
    );
    wheel(
        dir,
        "reqpkg",
        "3.0",
        &[],
        &[("reqpkg/__init__.py", "VALUE = 'from-requirements'\n")],
    );
}

/// `<dir>/<file>`: a tarball of a `package/` directory holding `files`, as `npm pack` makes it.
pub fn tarball(dir: &Path, file: &str, files: &[(&str, &str)]) {
    let src = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = src.path().join("package").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let ok = Command::new("tar")
        .arg("czf")
        .arg(dir.join(file))
        .arg("-C")
        .arg(src.path())
        .arg("package")
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The test tarballs: `left-pad` 1.1.0 and 1.3.0 (needs `@t/util@~2.0.0`), `@t/util` 2.0.1 and
/// 3.0.0, `padder` 1.0.0.
/// A `postinstall` script in `left-pad` would create `marker`: npm lifecycle scripts never run.
pub fn tarballs(dir: &Path, marker: &Path) {
    for v in ["1.1.0", "1.3.0"] {
        tarball(
            dir,
            &format!("left-pad-{v}.tgz"),
            &[
                (
                    "package.json",
                    &format!(
                        r#"{{"name":"left-pad","version":"{v}","main":"index.js","dependencies":{{"@t/util":"~2.0.0"}},"scripts":{{"postinstall":"touch {}"}}}}"#,
                        marker.display()
                    ),
                ),
                (
                    "index.js",
                    "const u = require('@t/util');\nmodule.exports = s => u.prefix + s;\n",
                ),
            ],
        );
    }
    for v in ["2.0.1", "3.0.0"] {
        tarball(
            dir,
            &format!("t-util-{v}.tgz"),
            &[
                (
                    "package.json",
                    &format!(r#"{{"name":"@t/util","version":"{v}"}}"#),
                ),
                (
                    "index.js",
                    &format!("module.exports = {{prefix: 'PAD{}-'}};\n", &v[..1]),
                ),
            ],
        );
    }
    tarball(
        dir,
        "padder-1.0.0.tgz",
        &[
            ("package.json", r#"{"name":"padder","version":"1.0.0"}"#),
            ("index.js", "module.exports = 'padder-ok';\n"),
        ],
    );
}

pub const USE_PY: &str = r#"import json, os, sys
import tinypkg
out = {"value": tinypkg.VALUE, "x": __import__("tinydep").X}
for mod in ("hdrpkg", "reqpkg"):
    try:
        out[mod] = __import__(mod).VALUE
    except ImportError:
        pass
d = os.path.dirname(tinypkg.__file__)
out["env_in_container"] = d.startswith("/env/python")
if out["env_in_container"]:
    try:
        open(os.path.join(d, "w.txt"), "w").write("x")
        out["env_write"] = "ok"
    except OSError as e:
        out["env_write"] = type(e).__name__
open("build/py.txt", "w").write(json.dumps(out))
print(json.dumps(out))
"#;

pub const USE_JS: &str = r#"const fs = require('fs');
const pad = require('left-pad');
const out = {out: pad('x'), version: require('left-pad/package.json').version};
try { out.padder = require('padder'); } catch (e) {}
fs.writeFileSync('build/js.txt', JSON.stringify(out));
console.log(JSON.stringify(out));
"#;

/// A skill `id` with `scripts/use.py` and `scripts/use.js`, plus `extra` files (relative to it).
pub fn skill(home: &Path, id: &str, py: &str, extra: &[(&str, &str)]) {
    let base = format!("user_data/skills/{id}");
    write(
        home,
        &format!("{base}/SKILL.md"),
        &format!("---\nname: {id}\ndescription: Uses packages in its scripts.\n---\nRun `scripts/use.py` and `scripts/use.js`.\n"),
    );
    write(home, &format!("{base}/scripts/use.py"), py);
    write(home, &format!("{base}/scripts/use.js"), USE_JS);
    for (rel, text) in extra {
        write(home, &format!("{base}/{rel}"), text);
    }
}

/// The plan every run follows: both scripts with their dependencies, validate, finish.
pub fn plan() -> Vec<Move> {
    vec![
        calls(&[
            (
                "run_script",
                json!({"path": "scripts/use.py", "dependencies": {"pip": ["tinypkg==1.0"]}}),
            ),
            (
                "run_script",
                json!({"path": "scripts/use.js", "dependencies": {"npm": ["left-pad@^1.0.0"]}}),
            ),
        ]),
        calls(&[("validate", json!({}))]),
        calls(&[("finish", json!({"summary": "used the packages"}))]),
    ]
}

/// The ActInput of a run of `skill` (the goal names the run, to find its requests).
pub fn input(skill: &str, goal: &str) -> Value {
    json!({
        "skill_id": skill,
        "goal": goal,
        "expected_outputs": [
            {"path": "build/py.txt", "kind": "text", "must_contain": ["42"]},
            {"path": "build/js.txt", "kind": "text", "must_contain": ["PAD2-x"]},
        ],
    })
}

/// The tool results of the run whose goal is `goal` (from its last supervisor request).
pub fn results_of(model: &ScriptedModel, goal: &str) -> Vec<Value> {
    model
        .requests()
        .iter()
        .rfind(|r| {
            !r.is_sub_agent() && !r.tool_names().is_empty() && r.system_prompt().contains(goal)
        })
        .map(|r| r.tool_results())
        .unwrap_or_default()
}

/// The environment builds recorded (`user_data/skill_envs/builds.jsonl`).
pub fn builds(home: &Path) -> Vec<Value> {
    std::fs::read_to_string(home.join("user_data/skill_envs/builds.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A package index that accepts connections and never answers; counts those held open.
pub struct SilentIndex {
    pub port: u16,
    /// Connections held open now.
    pub open: Arc<AtomicUsize>,
    /// The request line of each connection.
    pub names: Arc<std::sync::Mutex<Vec<String>>>,
}

impl SilentIndex {
    pub fn start() -> SilentIndex {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, n) = (Arc::clone(&open), Arc::clone(&names));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (o, n) = (Arc::clone(&o), Arc::clone(&n));
                std::thread::spawn(move || {
                    o.fetch_add(1, Ordering::SeqCst);
                    let mut reader = BufReader::new(conn);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_ok() {
                        n.lock().unwrap().push(line.trim().to_string());
                    }
                    // Hold it until the client goes.
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut reader, &mut sink);
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        SilentIndex { port, open, names }
    }
}
