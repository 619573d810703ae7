//! pip dependencies of packs (contract §9 "pip", §16 "pip"), end to end over real HTTP: every
//! refused form of a `requirements.lock` line through the scan (and the diagnostics); the review
//! workflow (reject ×3 → blocked, approve blocked → 409, unblock, unapproved pack → 409, index
//! URLs in every internal spelling → 400); the CLI over the whole workflow. Installs are in
//! `tests/pip_install.rs`.

mod common;

use common::pip::*;
use common::*;
use serde_json::{json, Value};
use std::process::Command;

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
