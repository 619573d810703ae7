//! Helpers of the pip end-to-end tests (`tests/pip.rs`, `tests/pip_install.rs`): wheels built
//! with Python's zipfile, packs whose block imports a package, the scan, Docker's readiness.

use super::{make_pack, until, write, Kernel, TOKEN};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Builds `<name>-<version>-py3-none-any.whl` in `dir` with Python's zipfile: `entries` are
/// (archive name, text); the dist-info METADATA/WHEEL/RECORD are added.
pub fn build_wheel(dir: &Path, name: &str, version: &str, entries: &[(&str, &str)]) {
    let script = r#"
import json, sys, zipfile
dir, name, version, entries = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
di = f"{name}-{version}.dist-info"
path = f"{dir}/{name}-{version}-py3-none-any.whl"
with zipfile.ZipFile(path, "w") as z:
    for arc, text in entries:
        z.writestr(zipfile.ZipInfo(arc), text)
    z.writestr(f"{di}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    z.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(f"{di}/RECORD", "")
"#;
    let entries: Vec<(&str, &str)> = entries.to_vec();
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(name)
        .arg(version)
        .arg(serde_json::to_string(&entries).unwrap())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn enc(s: &str) -> String {
    s.replace(':', "%3A").replace('/', "%2F")
}

/// A pack whose block imports `module` and answers its `VALUE`, and a shared flow calling it.
pub fn importing_pack(home: &Path, pack: &str, module: &str, lock: &str) {
    make_pack(
        home,
        pack,
        &[(
            "use.py",
            &format!("import {module}\n\ndef run(input_data, context=None):\n    return {{\"value\": {module}.VALUE, \"file\": {module}.__file__}}\n"),
        )],
    );
    write(
        home,
        &format!("ecosystem/{pack}/backend/requirements.lock"),
        lock,
    );
    write(
        home,
        &format!("user_data/shared/flows/{pack}_use.flow.yaml"),
        &format!(
            "flow_id: {pack}_use\nphases: [main]\nsteps:\n  - id: call\n    phase: main\n    type: python_file_call\n    owner_pack: {pack}\n    file: blocks/use.py\n    output: got\noutputs:\n  got: object\n"
        ),
    );
}

pub async fn scan(k: &Kernel) -> Value {
    let (s, v) = k.post("/api/pip/candidates/scan", json!({})).await;
    assert_eq!(s, 200, "{v}");
    v["data"].clone()
}

pub fn candidate_of(report: &Value, pack: &str) -> Value {
    report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pack_id"] == pack)
        .cloned()
        .unwrap_or_else(|| panic!("no candidate of {pack}: {report}"))
}

/// A wheel directory with `tinypkg-1.0` (module `tinypkg`, `VALUE = 42`).
pub fn wheel_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_wheel(
        dir.path(),
        "tinypkg",
        "1.0",
        &[("tinypkg/__init__.py", "VALUE = 42\n")],
    );
    dir
}

pub async fn install_and_import(k: &Kernel, pack: &str) {
    let home = k.home.clone();
    // Before the install the block cannot import the package.
    let (s, run) = k.run(&format!("{pack}_use"), json!({})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(
        run["steps"][0]["status"], "failed",
        "tinypkg is not installed yet: {run}"
    );
    assert!(
        run["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("No module named 'tinypkg'"),
        "{run}"
    );

    let key = candidate_of(&scan(k).await, pack)["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = k
        .post(
            &format!("/api/pip/requests/{}/approve", enc(&key)),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "installed", "{v}");
    assert_eq!(
        v["data"]["installed"],
        json!([{"name": "tinypkg", "version": "1.0"}])
    );
    let site = home.join(format!("user_data/packs/{pack}/python/site-packages"));
    assert_eq!(
        std::fs::read_to_string(site.join("tinypkg/__init__.py")).unwrap(),
        "VALUE = 42\n"
    );
    assert_eq!(
        std::fs::read_to_string(site.join("tinypkg-1.0.dist-info/INSTALLER")).unwrap(),
        "rumi\n"
    );
    let record = std::fs::read_to_string(site.join("tinypkg-1.0.dist-info/RECORD")).unwrap();
    assert!(record.contains("tinypkg/__init__.py,sha256="), "{record}");

    // The block imports it now (the sandbox was restarted to see it).
    let run = until(30, "the block importing tinypkg", || async {
        let (_, run) = k.run(&format!("{pack}_use"), json!({})).await;
        (run["steps"][0]["status"] == "succeeded").then_some(run)
    })
    .await;
    assert_eq!(run["result"]["got"]["value"], 42, "{run}");
    let (_, list) = k.get("/api/pip/requests?status=installed").await;
    assert_eq!(list["data"]["items"][0]["candidate_key"], key.as_str());
}

/// Sends `n` approvals at once.
pub async fn futures_like_join(k: &Kernel, url: &str, n: usize) -> Vec<(u16, Value)> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (http, full) = (k.http.clone(), k.url(url));
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(full)
                .bearer_auth(TOKEN)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

pub fn remove_containers(pack: &str) {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=rumi.pack_id={pack}"),
        ])
        .output();
    if let Ok(o) = out {
        let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}
