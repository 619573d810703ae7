//! pip dependencies of packs (contract §9 "pip", §16 "pip"), end to end over real HTTP with real
//! pip and real Python: every refused form of a `requirements.lock` line through the scan (and
//! the diagnostics); the review workflow (reject ×3 → blocked, approve blocked → 409, unblock,
//! unapproved pack → 409, index URLs in every internal spelling → 400); an offline install from
//! a local wheel directory (`RUMI_PIP_FIND_LINKS`) followed by a block importing the package, in
//! permissive mode and in strict mode (a real builder container; skipped locally with the reason
//! when Docker or the image is missing, a failure under CI=true); a malicious wheel refused
//! without a byte written outside the target.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Builds `<name>-<version>-py3-none-any.whl` in `dir` with Python's zipfile: `entries` are
/// (archive name, text); the dist-info METADATA/WHEEL/RECORD are added.
fn build_wheel(dir: &Path, name: &str, version: &str, entries: &[(&str, &str)]) {
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

fn enc(s: &str) -> String {
    s.replace(':', "%3A").replace('/', "%2F")
}

/// A pack whose block imports `module` and answers its `VALUE`, and a shared flow calling it.
fn importing_pack(home: &Path, pack: &str, module: &str, lock: &str) {
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

async fn scan(k: &Kernel) -> Value {
    let (s, v) = k.post("/api/pip/candidates/scan", json!({})).await;
    assert_eq!(s, 200, "{v}");
    v["data"].clone()
}

fn candidate_of(report: &Value, pack: &str) -> Value {
    report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pack_id"] == pack)
        .cloned()
        .unwrap_or_else(|| panic!("no candidate of {pack}: {report}"))
}

#[tokio::test]
async fn every_forbidden_lock_line_is_refused_by_the_scan_and_in_the_diagnostics() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    let bad: &[(&str, &str)] = &[
        ("-e git+https://github.com/a/b#egg=b", "editable"),
        ("git+https://github.com/a/b", "VCS"),
        ("https://files.example/pkg-1.0-py3-none-any.whl", "URLs"),
        ("file:///tmp/pkg.whl", "file:"),
        ("../other_pack/pkg", "relative"),
        ("/opt/wheels/pkg.whl", "absolute"),
        ("--index-url https://evil.example/simple", "option lines"),
        ("-r other.txt", "option lines"),
        ("pkg @ https://evil.example/pkg.whl", "direct references"),
        ("six==1.16.0  # pinned for py2", "inline comments"),
        ("requests>=2.0", "exact pins"),
        ("six==1.16.0; python_version < \"3\"", "markers"),
        ("just-a-name", "NAME==VERSION"),
    ];
    let mut text = String::from("# a comment line is fine\n\nsix==1.16.0\n");
    for (line, _) in bad {
        text.push_str(line);
        text.push('\n');
    }
    make_pack(
        h,
        "pip_bad",
        &[("b.py", "def run(i, context=None):\n    return {}\n")],
    );
    write(h, "ecosystem/pip_bad/backend/requirements.lock", &text);
    // A valid lock at the pack directory itself (beside backend/), and one that is a symlink.
    make_pack(
        h,
        "pip_good",
        &[("b.py", "def run(i, context=None):\n    return {}\n")],
    );
    write(
        h,
        "ecosystem/pip_good/requirements.lock",
        "# pins\nsix==1.16.0\nuvicorn[standard]==0.23.2\n",
    );
    make_pack(
        h,
        "pip_link",
        &[("b.py", "def run(i, context=None):\n    return {}\n")],
    );
    std::os::unix::fs::symlink(
        h.join("ecosystem/pip_good/requirements.lock"),
        h.join("ecosystem/pip_link/backend/requirements.lock"),
    )
    .unwrap();
    // Too large, and a FIFO (a read would block): refused as files (line 0), before any parse.
    make_pack(
        h,
        "pip_huge",
        &[("b.py", "def run(i, context=None):\n    return {}\n")],
    );
    write(
        h,
        "ecosystem/pip_huge/requirements.lock",
        &"six==1.16.0\n".repeat(20_000),
    );
    make_pack(
        h,
        "pip_fifo",
        &[("b.py", "def run(i, context=None):\n    return {}\n")],
    );
    let fifo = h.join("ecosystem/pip_fifo/backend/requirements.lock");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let k = Kernel::start(h, &[]);
    let report = scan(&k).await;

    let invalid = report["invalid"].as_array().unwrap();
    for (pack, says) in [("pip_huge", "limit"), ("pip_fifo", "not a regular file")] {
        let e = invalid
            .iter()
            .find(|e| e["pack_id"] == pack)
            .unwrap_or_else(|| panic!("{pack}: {report}"));
        assert_eq!(e["line"], 0, "{e}");
        assert!(e["reason"].as_str().unwrap().contains(says), "{e}");
    }
    for (i, (line, rule)) in bad.iter().enumerate() {
        let n = i + 4;
        let entry = invalid
            .iter()
            .find(|e| e["pack_id"] == "pip_bad" && e["line"] == n)
            .unwrap_or_else(|| panic!("line {n} ({line:?}) is not refused: {report}"));
        assert_eq!(entry["relpath"], "backend/requirements.lock");
        let reason = entry["reason"].as_str().unwrap();
        assert!(
            reason.contains(rule),
            "line {n} {line:?}: {reason:?} should name {rule:?}"
        );
    }
    assert_eq!(
        invalid.iter().filter(|e| e["pack_id"] == "pip_bad").count(),
        bad.len(),
        "only the bad lines are refused: {report}"
    );
    let link = invalid
        .iter()
        .find(|e| e["pack_id"] == "pip_link")
        .expect("the symlink is refused");
    assert_eq!(link["line"], 0);
    assert!(
        link["reason"].as_str().unwrap().contains("symlink"),
        "{link}"
    );
    // A lock with a refused line is not a candidate; the valid one is, pending, with its pins.
    let cands = report["candidates"].as_array().unwrap();
    assert!(cands
        .iter()
        .all(|c| c["pack_id"] != "pip_bad" && c["pack_id"] != "pip_link"));
    let good = candidate_of(&report, "pip_good");
    assert_eq!(good["relpath"], "requirements.lock");
    assert_eq!(good["status"], "pending");
    assert_eq!(good["reject_count"], 0);
    assert_eq!(good["cooldown_until"], Value::Null);
    assert_eq!(
        good["packages"][1],
        json!({"name": "uvicorn", "version": "0.23.2", "extras": ["standard"]})
    );
    let sha = good["sha256"].as_str().unwrap();
    assert_eq!(
        good["candidate_key"],
        format!("pip_good:requirements.lock:{sha}")
    );

    let (s, d) = k.get("/api/diagnostics").await;
    assert_eq!(s, 200);
    let listed = d["data"]["pip_invalid"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e["pack_id"] == "pip_bad" && e["line"] == 4),
        "{listed:?}"
    );
    k.stop();
}

#[tokio::test]
async fn the_review_workflow_blocks_unblocks_and_refuses_what_it_must() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    make_pack(
        h,
        "pip_flow",
        &[("b.py", "def run(i, context=None):\n    return {}\n")],
    );
    write(
        h,
        "ecosystem/pip_flow/backend/requirements.lock",
        "six==1.16.0\n",
    );
    let k = Kernel::start(h, &[]);
    let c = candidate_of(&scan(&k).await, "pip_flow");
    let key = c["candidate_key"].as_str().unwrap().to_string();
    let approve = format!("/api/pip/requests/{}/approve", enc(&key));

    // The pack is not approved: 409, nothing changed.
    let (s, v) = k.post(&approve, json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("approve the pack first"),
        "{v}"
    );
    let (_, list) = k.get("/api/pip/requests?status=pending").await;
    assert_eq!(list["data"]["count"], 1);

    // The pending summary counts it once the Registry rewrites the summary (a pack decision).
    k.approve("pip_flow").await;
    let summary = until(10, "the pip section of the pending summary", || async {
        let text = std::fs::read_to_string(h.join("user_data/pending/summary.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["pip"]["pending_count"] == 1).then_some(v)
    })
    .await;
    assert_eq!(summary["pip"]["blocked_count"], 0);

    // Internal or non-https index URLs, in every spelling: 400, nothing changed.
    for bad in [
        "http://pypi.org/simple",
        "https://localhost/simple",
        "https://foo.localhost/simple",
        "https://127.0.0.1/simple",
        "https://2130706433/simple",
        "https://0177.0.0.1/simple",
        "https://0x7f.0.0.1/simple",
        "https://[::1]/simple",
        "https://[::ffff:127.0.0.1]/simple",
        "https://[::ffff:10.0.0.1]/simple",
        "https://10.1.2.3/simple",
        "https://192.168.0.1/simple",
        "https://169.254.169.254/simple",
        "https://0.0.0.0/simple",
        "https://user:pw@pypi.org/simple",
        "ftp://pypi.org/simple",
        "not a url",
    ] {
        let (s, v) = k.post(&approve, json!({"index_url": bad})).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("index_url"),
            "{bad}: {v}"
        );
    }
    let (s, v) = k.post(&approve, json!({"allow_sdist": true})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("setup.py"), "{v}");
    let (s, _) = k.post(&approve, json!({"index_url": 3})).await;
    assert_eq!(s, 400);
    let (s, _) = k.post(&approve, json!({"surprise": 1})).await;
    assert_eq!(s, 400);

    // Keys: malformed → 400, unknown → 404.
    for bad in [
        "nope",
        "pip_flow:x.lock:abc",
        "pip_flow%3Arequirements.lock%3Azz",
        "pip_flow:..%2Frequirements.lock:abc",
    ] {
        let (s, v) = k
            .post(&format!("/api/pip/requests/{bad}/reject"), json!({}))
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let unknown = format!("pip_flow:requirements.lock:{}", "0".repeat(64));
    let (s, _) = k
        .post(
            &format!("/api/pip/requests/{}/approve", enc(&unknown)),
            json!({}),
        )
        .await;
    assert_eq!(s, 404);

    // Reject: rejected with a cooldown; rejecting a rejected one counts; the third blocks.
    let reject = format!("/api/pip/requests/{}/reject", enc(&key));
    let (s, v) = k.post(&reject, json!({"reason": "not now"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "rejected");
    assert!(v["data"]["cooldown_until"].is_string());
    let (s, v) = k.post(&reject, json!({"reason": "still no"})).await;
    assert_eq!((s, &v["data"]["reject_count"]), (200, &json!(2)));
    // Within the cooldown a scan leaves it rejected.
    assert_eq!(
        candidate_of(&scan(&k).await, "pip_flow")["status"],
        "rejected"
    );
    let (s, v) = k.post(&reject, json!({"reason": "never"})).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["status"], "blocked");
    assert_eq!(v["data"]["cooldown_until"], Value::Null);
    let (s, v) = k.post(&reject, json!({})).await;
    assert_eq!(s, 409, "a blocked one is not rejected again: {v}");

    // Approving a blocked candidate: 409 naming the way out.
    let (s, v) = k.post(&approve, json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unblock"), "{v}");
    let (_, blocked) = k.get("/api/pip/blocked").await;
    assert_eq!(blocked["data"]["items"][0]["candidate_key"], key.as_str());
    // A scan never unblocks.
    assert_eq!(
        candidate_of(&scan(&k).await, "pip_flow")["status"],
        "blocked"
    );

    let unblock = format!("/api/pip/blocked/{}/unblock", enc(&key));
    let (s, v) = k.post(&unblock, json!({"reason": "reviewed"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "pending");
    assert_eq!(v["data"]["reject_count"], 0);
    let (s, _) = k.post(&unblock, json!({})).await;
    assert_eq!(s, 409, "only a blocked one is unblocked");
    let (s, _) = k.get("/api/pip/requests?status=sideways").await;
    assert_eq!(s, 400);

    // The decisions are audited.
    let (_, audit) = k.get("/api/audit?category=approval&limit=1000").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "pip_candidates_scanned",
        "pip_request_rejected",
        "pip_request_unblocked",
        "pip_request_approve_refused",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }

    // The lock changes after the scan: the approval re-hashes and refuses.
    write(
        h,
        "ecosystem/pip_flow/backend/requirements.lock",
        "six==1.15.0\n",
    );
    let (s, v) = k.post(&approve, json!({})).await;
    assert_eq!(s, 409, "{v}");
    k.stop();
}

/// A wheel directory with `tinypkg-1.0` (module `tinypkg`, `VALUE = 42`).
fn wheel_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_wheel(
        dir.path(),
        "tinypkg",
        "1.0",
        &[("tinypkg/__init__.py", "VALUE = 42\n")],
    );
    dir
}

async fn install_and_import(k: &Kernel, pack: &str) {
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

#[tokio::test]
async fn an_offline_install_is_imported_by_a_block_in_permissive_mode() {
    if !python_available() {
        return;
    }
    let wheels = wheel_dir();
    let home = fresh_home();
    importing_pack(home.path(), "pip_perm", "tinypkg", "tinypkg==1.0\n");
    let k = Kernel::start(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
    );
    k.approve("pip_perm").await;
    install_and_import(&k, "pip_perm").await;
    let (_, run) = k.run("pip_perm_use", json!({})).await;
    assert!(
        run["result"]["got"]["file"]
            .as_str()
            .unwrap()
            .contains("/python/site-packages/tinypkg/"),
        "{run}"
    );

    // With RUMI_PIP_FIND_LINKS an index_url is refused (the kernel installs only from there).
    let key = candidate_of(&scan(&k).await, "pip_perm")["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = k
        .post(
            &format!("/api/pip/requests/{}/approve", enc(&key)),
            json!({"index_url": "https://pypi.org/simple"}),
        )
        .await;
    assert_eq!(s, 400);

    // A pin the directory does not hold: the approval answers `failed` with pip's reason, and the
    // packages installed before stay.
    write(
        home.path(),
        "ecosystem/pip_perm/backend/requirements.lock",
        "tinypkg==2.0\n",
    );
    k.approve("pip_perm").await;
    let key = candidate_of(&scan(&k).await, "pip_perm")["candidate_key"]
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
    assert_eq!(v["data"]["status"], "failed", "{v}");
    let reason = v["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("pip download failed"), "{reason}");
    assert!(
        !reason.contains(wheels.path().to_str().unwrap()),
        "no host path: {reason}"
    );
    let site = home
        .path()
        .join("user_data/packs/pip_perm/python/site-packages");
    assert!(
        site.join("tinypkg/__init__.py").exists(),
        "the old tree is kept"
    );
    // A failed candidate is offered again by the next scan.
    assert_eq!(
        candidate_of(&scan(&k).await, "pip_perm")["status"],
        "pending"
    );
    // No download or half tree is left behind.
    assert!(
        !home.path().join("user_data/pip/work").exists()
            || std::fs::read_dir(home.path().join("user_data/pip/work"))
                .unwrap()
                .next()
                .is_none()
    );
    k.stop();
}

#[tokio::test]
async fn concurrent_approvals_install_once_and_leftovers_of_a_crash_are_removed_at_start() {
    if !python_available() {
        return;
    }
    let wheels = wheel_dir();
    let home = fresh_home();
    importing_pack(home.path(), "pip_race", "tinypkg", "tinypkg==1.0\n");
    // What a kill -9 in the middle of an install leaves: a download and a half-filled tree.
    write(
        home.path(),
        "user_data/pip/work/pip_race-0123/wheels/x.whl",
        "partial",
    );
    write(
        home.path(),
        "user_data/packs/pip_race/python/site-packages.new-0123/half.py",
        "",
    );
    let k = Kernel::start(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
    );
    assert!(!home
        .path()
        .join("user_data/pip/work/pip_race-0123")
        .exists());
    assert!(!home
        .path()
        .join("user_data/packs/pip_race/python/site-packages.new-0123")
        .exists());
    k.approve("pip_race").await;
    let key = candidate_of(&scan(&k).await, "pip_race")["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("/api/pip/requests/{}/approve", enc(&key));
    let answers = futures_like_join(&k, &url, 6).await;
    let installed = answers
        .iter()
        .filter(|(s, v)| *s == 200 && v["data"]["status"] == "installed")
        .count();
    assert_eq!(installed, 1, "exactly one approval installs: {answers:?}");
    for (s, v) in &answers {
        assert!(*s == 200 || *s == 409, "the others are refused, 409: {v}");
    }
    k.stop();
}

/// Sends `n` approvals at once.
async fn futures_like_join(k: &Kernel, url: &str, n: usize) -> Vec<(u16, Value)> {
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

#[tokio::test]
async fn a_malicious_wheel_is_refused_and_writes_nothing_outside() {
    if !python_available() {
        return;
    }
    let wheels = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let abs = outside.path().join("abs_escape.py");
    build_wheel(
        wheels.path(),
        "evilpkg",
        "1.0",
        &[
            ("evilpkg/__init__.py", "VALUE = 1\n"),
            ("../../escape_rel.py", "pwned\n"),
            (abs.to_str().unwrap(), "pwned\n"),
        ],
    );
    build_wheel(
        wheels.path(),
        "sneaky",
        "1.0",
        &[
            ("sneaky/__init__.py", "VALUE = 2\n"),
            ("sneaky.data/purelib/../../../escape_data.py", "pwned\n"),
        ],
    );
    let home = fresh_home();
    importing_pack(home.path(), "pip_evil", "evilpkg", "evilpkg==1.0\n");
    importing_pack(home.path(), "pip_sneak", "sneaky", "sneaky==1.0\n");
    let k = Kernel::start(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
    );
    for pack in ["pip_evil", "pip_sneak"] {
        k.approve(pack).await;
        let key = candidate_of(&scan(&k).await, pack)["candidate_key"]
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
        assert_eq!(v["data"]["status"], "failed", "{v}");
        let reason = v["data"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("escapes the target") || reason.contains("absolute"),
            "{reason}"
        );
        let data = home.path().join(format!("user_data/packs/{pack}"));
        assert!(
            !data.join("python/site-packages").exists(),
            "nothing installed"
        );
        // Nothing beside the target either.
        let left: Vec<_> = walk(&data).into_iter().filter(|p| p.is_file()).collect();
        assert!(left.is_empty(), "files left: {left:?}");
    }
    for name in ["escape_rel.py", "escape_data.py"] {
        assert!(
            walk(home.path()).iter().all(|p| !p.ends_with(name)),
            "{name} was written"
        );
    }
    assert!(!abs.exists());
    k.stop();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
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

/// Docker and the image are there; in CI their absence is a failure.
fn docker_ready() -> bool {
    let docker = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let image = docker
        && Command::new(env!("CARGO_BIN_EXE_rumi"))
            .args(["image", "show"])
            .env("RUMI_HOME", tempfile::tempdir().unwrap().path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !(docker && image) {
        let why = if docker {
            "the pack runtime image is missing (run `rumi image build`)"
        } else {
            "no Docker daemon is reachable"
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("strict-mode pip tests need Docker and the image in CI: {why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    docker && image
}

fn remove_containers(pack: &str) {
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

#[tokio::test]
async fn strict_mode_installs_in_a_network_less_builder_and_a_block_imports_it() {
    if !python_available() || !docker_ready() {
        return;
    }
    let pack = "pip_strict_t1";
    remove_containers(pack);
    let wheels = wheel_dir();
    let home = fresh_home();
    importing_pack(home.path(), pack, "tinypkg", "tinypkg==1.0\n");
    let k = Kernel::start_mode(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
        false,
    );
    k.approve(pack).await;
    install_and_import(&k, pack).await;
    let (_, run) = k.run(&format!("{pack}_use"), json!({})).await;
    assert!(
        run["result"]["got"]["file"]
            .as_str()
            .unwrap()
            .starts_with("/pip-packages/tinypkg/"),
        "the container imports it from /pip-packages: {run}"
    );
    // A malicious wheel through the builder container: refused, nothing installed.
    let evil = "pip_strict_t2";
    remove_containers(evil);
    build_wheel(
        wheels.path(),
        "evilpkg",
        "1.0",
        &[
            ("evilpkg/__init__.py", ""),
            ("../../escape_strict.py", "pwned\n"),
        ],
    );
    importing_pack(home.path(), evil, "evilpkg", "evilpkg==1.0\n");
    let (s, _) = k.post("/api/packs/scan", json!({})).await;
    assert_eq!(s, 200);
    k.approve(evil).await;
    let key = candidate_of(&scan(&k).await, evil)["candidate_key"]
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
    assert_eq!(v["data"]["status"], "failed", "{v}");
    assert!(
        v["data"]["reason"].as_str().unwrap().contains("escapes"),
        "{v}"
    );
    assert!(walk(home.path())
        .iter()
        .all(|p| !p.ends_with("escape_strict.py")));
    assert!(!home
        .path()
        .join(format!("user_data/packs/{evil}/python/site-packages"))
        .exists());
    // The builder container is gone.
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name=rumi-pip-{pack}")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    k.stop();
    remove_containers(pack);
    remove_containers(evil);
}

#[tokio::test]
async fn the_cli_drives_the_whole_workflow() {
    use common::cli::{fails, ok, rumi};
    if !python_available() {
        return;
    }
    let wheels = wheel_dir();
    let home = fresh_home();
    importing_pack(home.path(), "pip_cli", "tinypkg", "tinypkg==1.0\n");
    make_pack(
        home.path(),
        "pip_cli_bad",
        &[("b.py", "def run(i, context=None):\n    return {}\n")],
    );
    write(
        home.path(),
        "ecosystem/pip_cli_bad/requirements.lock",
        "-r other.txt\n",
    );
    let k = Kernel::start(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
    );
    k.approve("pip_cli").await;
    let o = ok(rumi(&k), &["pip", "scan"]);
    assert!(
        o.stdout.contains("pip_cli") && o.stdout.contains("option lines"),
        "{}",
        o.stdout
    );
    let report = ok(rumi(&k), &["pip", "scan", "--json"]).json();
    let key = candidate_of(&report, "pip_cli")["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let o = ok(rumi(&k), &["pip", "list", "--status", "pending"]);
    assert!(
        o.stdout.contains("tinypkg==1.0") && o.stdout.contains("pending"),
        "{}",
        o.stdout
    );
    fails(rumi(&k), &["pip", "list", "--status", "nope"]);
    for _ in 0..3 {
        ok(rumi(&k), &["pip", "reject", &key, "--reason", "no"]);
    }
    assert_eq!(
        ok(rumi(&k), &["pip", "blocked", "--json"]).json()["count"],
        1
    );
    let o = fails(rumi(&k), &["pip", "approve", &key]);
    assert!(o.stderr.contains("blocked"), "{}", o.stderr);
    let o = fails(rumi(&k), &["pip", "approve", &key, "--allow-sdist"]);
    assert!(o.stderr.contains("setup.py"), "{}", o.stderr);
    let item = ok(
        rumi(&k),
        &["pip", "unblock", &key, "--reason", "ok", "--json"],
    )
    .json();
    assert_eq!(item["status"], "pending");
    let o = ok(rumi(&k), &["pip", "approve", &key]);
    assert!(o.stdout.contains("installed tinypkg==1.0"), "{}", o.stdout);
    let list = ok(rumi(&k), &["pip", "list", "--json"]).json();
    assert_eq!(list["items"][0]["status"], "installed");
    k.stop();
}
