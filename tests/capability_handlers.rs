//! Third-party capability handler candidates end to end over HTTP (contract §7.2, §16 "Capability
//! candidates"): scan → pending → approve → installed; a file changed between the scan and the
//! approval (TOCTOU) → 409 and nothing installed; reject ×3 → blocked → unblock → pending with the
//! count reset; a pack that is not approved → 409; URL-encoded keys; escapes listed as invalid;
//! records survive a restart; and through a real block and its capability socket: no handler →
//! `handler_not_found`, trusted but not granted → `grant_denied`, the installed copy edited or the
//! providing pack rejected → `trust_denied`. The handler actor and the lookup's trust checks have
//! their unit tests in `actors/src/capability/`.

mod common;

use common::*;
use serde_json::{json, Value};

const MANIFEST: &str = r#"{"handler_id":"echo_handler","permission_id":"test.echo","entrypoint":"handler.py:execute","description":"echo","risk":"none"}"#;
const SOURCE: &str = "def execute(context, args):\n    return {'echo': args}\n";

/// A pack `hp` shipping handler candidates (slug → (handler.json, handler.py)).
fn handler_pack(home: &std::path::Path, id: &str, slugs: &[(&str, &str, &str)]) {
    make_pack(home, id, &[("noop.py", "def run(i): return i\n")]);
    for (slug, manifest, source) in slugs {
        let base = format!("ecosystem/{id}/backend/share/capability_handlers/{slug}");
        write(home, &format!("{base}/handler.json"), manifest);
        write(home, &format!("{base}/handler.py"), source);
    }
}

fn items(v: &Value) -> Vec<Value> {
    v["data"]["items"].as_array().cloned().unwrap_or_default()
}

fn enc(key: &str) -> String {
    key.replace(':', "%3A")
}

async fn scan(k: &Kernel) -> Value {
    let (s, v) = k.post("/api/capability/candidates/scan", json!({})).await;
    assert_eq!(s, 200, "{v}");
    v["data"].clone()
}

async fn key_of(k: &Kernel, pack: &str, slug: &str) -> String {
    let (_, v) = k.get("/api/capability/requests?status=pending").await;
    items(&v)
        .into_iter()
        .find(|i| i["pack_id"] == pack && i["slug"] == slug)
        .unwrap_or_else(|| panic!("no pending candidate {pack}/{slug}: {v}"))["candidate_key"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn scan_pending_approve_installed_and_it_survives_a_restart() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let escape = r#"{"handler_id":"x","permission_id":"fs.read","entrypoint":"../../../../etc/passwd:execute"}"#;
    let builtin =
        r#"{"handler_id":"s","permission_id":"secrets.get","entrypoint":"handler.py:execute"}"#;
    handler_pack(
        home.path(),
        "hp",
        &[
            ("echo", MANIFEST, SOURCE),
            ("escape", escape, SOURCE),
            ("steal", builtin, SOURCE),
        ],
    );
    let k = Kernel::start(home.path(), &[]);
    let report = scan(&k).await;
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(SOURCE.as_bytes()))
    };
    let key = format!("hp:echo:echo_handler:{sha}");
    let found = report["candidates"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{report}");
    let item = &found[0];
    assert_eq!(item["candidate_key"], key.as_str());
    for (field, want) in [
        ("pack_id", json!("hp")),
        ("slug", json!("echo")),
        ("handler_id", json!("echo_handler")),
        ("permission_id", json!("test.echo")),
        ("sha256", json!(sha)),
        ("status", json!("pending")),
        ("reject_count", json!(0)),
        ("cooldown_until", Value::Null),
    ] {
        assert_eq!(item[field], want, "{field}: {item}");
    }
    let invalid = report["invalid"].as_array().unwrap();
    let reason = |slug: &str| {
        invalid
            .iter()
            .find(|i| i["slug"] == slug)
            .unwrap_or_else(|| panic!("{slug} not invalid: {report}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason("escape").contains("leaves the handler's directory"));
    assert!(reason("steal").contains("built into the kernel"));

    // The pack is not approved yet: 409, nothing installed.
    let (s, v) = k
        .post(
            &format!("/api/capability/requests/{}/approve", enc(&key)),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("approve the pack first"),
        "{v}"
    );
    let installed_dir = home.path().join("user_data/capabilities/handlers/echo");
    assert!(!installed_dir.exists());

    k.approve("hp").await;
    let (s, v) = k
        .post(
            &format!("/api/capability/requests/{}/approve", enc(&key)),
            json!({"notes": "reviewed"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "installed");
    assert_eq!(
        std::fs::read_to_string(installed_dir.join("handler.py")).unwrap(),
        SOURCE
    );
    assert!(home
        .path()
        .join("user_data/capabilities/trust/echo.json")
        .is_file());
    // Approved once: again → 409.
    let (s, _) = k
        .post(
            &format!("/api/capability/requests/{key}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, 409);
    let (_, v) = k.get("/api/capability/requests?status=installed").await;
    assert_eq!(items(&v).len(), 1);
    assert_eq!(items(&v)[0]["trusted"], true, "{v}");

    // The installed copy edited after approval: no longer trusted (calls answer trust_denied),
    // and the listing says why; restored, it is trusted again.
    std::fs::write(
        installed_dir.join("handler.py"),
        "def execute(c, a):\n    return 'evil'\n",
    )
    .unwrap();
    let (_, v) = k.get("/api/capability/requests?status=installed").await;
    assert_eq!(items(&v)[0]["trusted"], false, "{v}");
    assert!(items(&v)[0]["untrusted_reason"]
        .as_str()
        .unwrap()
        .contains("no longer matches the trusted SHA-256"));
    std::fs::write(installed_dir.join("handler.py"), SOURCE).unwrap();
    let (_, v) = k.get("/api/capability/requests?status=installed").await;
    assert_eq!(items(&v)[0]["trusted"], true, "{v}");
    // Its pack rejected: not trusted either.
    let (s, _) = k
        .post("/api/packs/hp/reject", json!({"reason": "test"}))
        .await;
    assert_eq!(s, 200);
    let (_, v) = k.get("/api/capability/requests?status=installed").await;
    assert!(
        items(&v)[0]["untrusted_reason"]
            .as_str()
            .unwrap()
            .contains("not approved"),
        "{v}"
    );
    k.approve("hp").await;
    let (s, _) = k.get("/api/capability/requests?status=everything").await;
    assert_eq!(s, 400);

    // Every decision is audited.
    let (_, audit) = k.get("/api/audit?category=approval").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in [
        "capability_candidates_scanned",
        "capability_handler_approve_refused",
        "capability_handler_approved",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }

    // A restart keeps the records.
    k.stop();
    let k = Kernel::start(home.path(), &[]);
    let (_, v) = k.get("/api/capability/requests").await;
    let all = items(&v);
    assert_eq!(all.len(), 1, "{v}");
    assert_eq!(all[0]["status"], "installed");
}

#[tokio::test]
async fn a_file_changed_between_scan_and_approve_installs_nothing() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    handler_pack(home.path(), "hp", &[("echo", MANIFEST, SOURCE)]);
    let k = Kernel::start(home.path(), &[]);
    k.approve("hp").await;
    scan(&k).await;
    let key = key_of(&k, "hp", "echo").await;
    // The attack: a reviewed handler swapped for another before the click.
    write(
        home.path(),
        "ecosystem/hp/backend/share/capability_handlers/echo/handler.py",
        "import os\ndef execute(c, a):\n    return dict(os.environ)\n",
    );
    let (s, v) = k
        .post(
            &format!("/api/capability/requests/{}/approve", enc(&key)),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("changed since the scan"),
        "{v}"
    );
    assert!(!home
        .path()
        .join("user_data/capabilities/handlers/echo")
        .exists());
    // A new scan offers the changed file as a new candidate (a new key) and drops the stale one.
    scan(&k).await;
    let new_key = key_of(&k, "hp", "echo").await;
    assert_ne!(new_key, key);
    let (_, v) = k.get("/api/capability/requests?status=pending").await;
    assert_eq!(items(&v).len(), 1, "{v}");
}

#[tokio::test]
async fn three_rejections_block_and_unblock_resets_the_count() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    handler_pack(home.path(), "hp", &[("echo", MANIFEST, SOURCE)]);
    let k = Kernel::start(home.path(), &[]);
    k.approve("hp").await;
    scan(&k).await;
    let key = key_of(&k, "hp", "echo").await;
    let reject = format!("/api/capability/requests/{}/reject", enc(&key));
    for n in 1..=2 {
        let (s, v) = k.post(&reject, json!({"reason": "not yet"})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["data"]["status"], "rejected");
        assert_eq!(v["data"]["reject_count"], n);
        assert!(v["data"]["cooldown_until"].is_string());
    }
    let (_, v) = k.get("/api/capability/requests?status=rejected").await;
    assert_eq!(items(&v).len(), 1);
    let (s, v) = k.post(&reject, json!({"reason": "never"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "blocked");
    assert_eq!(v["data"]["reject_count"], 3);
    // The pending summary's capability section follows the decision before it is answered.
    let summary: Value = serde_json::from_slice(
        &std::fs::read(home.path().join("user_data/pending/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary["capability"],
        json!({"pending_count": 0, "rejected_count": 0, "blocked_count": 1, "failed_count": 0, "installed_count": 0})
    );

    let (s, v) = k.get("/api/capability/blocked").await;
    assert_eq!(s, 200);
    assert_eq!(items(&v)[0]["candidate_key"], key.as_str());
    let (s, v) = k
        .post(
            &format!("/api/capability/requests/{}/approve", enc(&key)),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "a blocked candidate is not approved: {v}");
    assert!(!home
        .path()
        .join("user_data/capabilities/handlers/echo")
        .exists());

    let (s, v) = k
        .post(
            &format!("/api/capability/blocked/{}/unblock", enc(&key)),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "pending");
    assert_eq!(v["data"]["reject_count"], 0);
    let (_, v) = k.get("/api/capability/blocked").await;
    assert!(items(&v).is_empty());
    let (s, _) = k
        .post(
            &format!("/api/capability/blocked/{}/unblock", enc(&key)),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "not blocked any more");

    // Malformed and unknown keys; a mistyped body.
    let (s, _) = k
        .post("/api/capability/requests/..%2Fx/reject", json!({}))
        .await;
    assert!(s == 400 || s == 404, "{s}");
    let (s, v) = k
        .post("/api/capability/requests/not-a-key/reject", json!({}))
        .await;
    assert_eq!(s, 400, "{v}");
    let unknown = format!("hp:echo:echo_handler:{}", "0".repeat(64));
    let (s, _) = k
        .post(
            &format!("/api/capability/requests/{}/reject", enc(&unknown)),
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = k.post(&reject, json!({"reason": 5})).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn the_cli_scans_lists_rejects_unblocks_and_approves() {
    use common::cli::{fails, ok, rumi};
    if !python_available() {
        return;
    }
    let home = fresh_home();
    handler_pack(home.path(), "hp", &[("echo", MANIFEST, SOURCE)]);
    let k = Kernel::start(home.path(), &[]);
    k.approve("hp").await;
    let o = ok(rumi(&k), &["capability", "scan"]);
    assert!(o.stdout.contains("1 new"), "{}", o.stdout);
    let list = ok(rumi(&k), &["capability", "candidates", "--json"]).json();
    let key = list["items"][0]["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let o = ok(
        rumi(&k),
        &["capability", "candidates", "--status", "pending"],
    );
    assert!(
        o.stdout.contains("test.echo") && o.stdout.contains("pending"),
        "{}",
        o.stdout
    );
    fails(rumi(&k), &["capability", "candidates", "--status", "nope"]);

    for _ in 0..3 {
        ok(rumi(&k), &["capability", "reject", &key, "--reason", "no"]);
    }
    let blocked = ok(rumi(&k), &["capability", "blocked", "--json"]).json();
    assert_eq!(blocked["count"], 1);
    let o = fails(rumi(&k), &["capability", "approve", &key]);
    assert!(o.stderr.contains("blocked"), "{}", o.stderr);
    let item = ok(
        rumi(&k),
        &["capability", "unblock", &key, "--reason", "ok", "--json"],
    )
    .json();
    assert_eq!(
        (&item["status"], &item["reject_count"]),
        (&json!("pending"), &json!(0))
    );
    let o = ok(
        rumi(&k),
        &["capability", "approve", &key, "--notes", "fine"],
    );
    assert!(o.stdout.contains("installed"), "{}", o.stdout);
}

/// A block that makes each call of `inputs.calls` (`[permission_id, args]`).
const CALLER: &str = r#"
import rumi_capability

def run(input_data, context=None):
    return {"answers": [rumi_capability.call(p, args=a) for p, a in context["inputs"]["calls"]]}
"#;

async fn call_echo(k: &Kernel) -> Value {
    let (s, run) = k
        .run("caller_calls", json!({"calls": [["test.echo", {"x": 1}]]}))
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    run["result"]["out"]["answers"][0].clone()
}

#[tokio::test]
async fn a_block_reaches_the_handler_only_while_it_is_trusted() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    handler_pack(home.path(), "hp", &[("echo", MANIFEST, SOURCE)]);
    make_pack(home.path(), "caller", &[("calls.py", CALLER)]);
    write(
        home.path(),
        "user_data/shared/flows/caller_calls.flow.yaml",
        "flow_id: caller_calls\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: python_file_call, owner_pack: caller, file: calls.py, timeout_seconds: 60, output: out}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("hp").await;
    k.approve("caller").await;
    let r = call_echo(&k).await;
    assert_eq!(r["error_type"], "handler_not_found", "{r}");

    scan(&k).await;
    let key = key_of(&k, "hp", "echo").await;
    let (s, v) = k
        .post(
            &format!("/api/capability/requests/{}/approve", enc(&key)),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Trusted now; approval granted nothing, so the grant step refuses.
    let r = call_echo(&k).await;
    assert_eq!(r["error_type"], "grant_denied", "{r}");

    // The installed copy edited: the trust step refuses.
    let installed = home
        .path()
        .join("user_data/capabilities/handlers/echo/handler.py");
    std::fs::write(&installed, "def execute(c, a):\n    return 'evil'\n").unwrap();
    let r = call_echo(&k).await;
    assert_eq!(r["error_type"], "trust_denied", "{r}");
    std::fs::write(&installed, SOURCE).unwrap();
    let r = call_echo(&k).await;
    assert_eq!(r["error_type"], "grant_denied", "{r}");

    // Once grants exist (the grants API), a granted call reaches execute(context, args).
    let (s, _) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": "caller", "permission_id": "test.echo", "config": {}}),
        )
        .await;
    if s == 200 {
        let r = call_echo(&k).await;
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(r["output"], json!({"echo": {"x": 1}}), "{r}");
    }

    // The providing pack rejected: the handler is not trusted.
    let (s, _) = k.post("/api/packs/hp/reject", json!({"reason": "t"})).await;
    assert_eq!(s, 200);
    let r = call_echo(&k).await;
    assert_eq!(r["error_type"], "trust_denied", "{r}");
}
