//! Capability grants, secrets and stores end to end (contract §7.3, §8, §16): a real permissive
//! kernel over HTTP and the real `rumi` binary. Shapes, statuses, the audit, a tampered grant
//! file after a restart, a secret's value in no answer, log or plaintext file, store roots
//! escaping by `..` and by a link. (Calls through a pack's capability socket — the broker — are
//! tested with the broker.)

mod common;

use common::cli::{fails, ok, rumi};
use common::{fresh_home, Kernel};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

async fn permission_audit(k: &Kernel) -> Vec<Value> {
    let (s, v) = k.get("/api/audit?category=permission&limit=1000").await;
    assert_eq!(s, 200, "{v}");
    v["data"].as_array().cloned().unwrap_or_default()
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| e["action"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn grants_are_granted_listed_revoked_and_audited() {
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, v) = k.get("/api/capability/grants").await;
    assert_eq!((s, &v["data"]), (200, &json!({"grants": []})));

    let (s, v) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": "my_pack", "permission_id": "store.get",
                   "config": {"allowed_store_ids": ["notes"]}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let g = &v["data"];
    assert_eq!(g["principal_id"], "my_pack");
    assert_eq!(g["permission_id"], "store.get");
    assert_eq!(g["config"], json!({"allowed_store_ids": ["notes"]}));
    assert_eq!(g["enabled"], true);
    assert!(g["granted_at"].as_str().unwrap().ends_with('Z'));
    k.post(
        "/api/capability/grants/grant",
        json!({"principal_id": "my_pack__child", "permission_id": "secrets.get",
               "config": {"allowed_keys": ["API_KEY"]}}),
    )
    .await;

    let (_, all) = k.get("/api/capability/grants").await;
    assert_eq!(all["data"]["grants"].as_array().unwrap().len(), 2);
    let (_, mine) = k.get("/api/capability/grants?principal_id=my_pack").await;
    let mine = mine["data"]["grants"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1);
    let keys: Vec<&String> = mine[0].as_object().unwrap().keys().collect();
    for field in [
        "principal_id",
        "permission_id",
        "config",
        "enabled",
        "granted_at",
    ] {
        assert!(keys.iter().any(|k| *k == field), "{field} in {keys:?}");
    }
    let (_, none) = k.get("/api/capability/grants?principal_id=nobody").await;
    assert_eq!(none["data"], json!({"grants": []}));

    let (s, v) = k
        .post(
            "/api/capability/grants/revoke",
            json!({"principal_id": "my_pack", "permission_id": "store.get"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, mine) = k.get("/api/capability/grants?principal_id=my_pack").await;
    assert_eq!(
        mine["data"],
        json!({"grants": []}),
        "revoked grants are absent"
    );
    let (s, v) = k
        .post(
            "/api/capability/grants/revoke",
            json!({"principal_id": "my_pack", "permission_id": "store.get"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");

    let audit = permission_audit(&k).await;
    let acts = actions(&audit);
    assert_eq!(
        acts.iter().filter(|a| *a == "capability_grant").count(),
        2,
        "{acts:?}"
    );
    assert!(acts.contains(&"capability_revoke".to_string()));
    let revoke = audit
        .iter()
        .find(|e| e["action"] == "capability_revoke")
        .unwrap();
    // Contract §16: permission lines carry principal_id and permission_id at the top level.
    assert_eq!(revoke["principal_id"], "my_pack");
    assert_eq!(revoke["permission_id"], "store.get");
}

#[tokio::test]
async fn bad_grants_are_refused_with_the_fix() {
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    for (body, says) in [
        (
            json!({"principal_id": "p", "permission_id": "secrets.get"}),
            "allowed_keys",
        ),
        (
            json!({"principal_id": "p", "permission_id": "secrets.get", "config": {"allowed_keys": []}}),
            "allowed_keys",
        ),
        (
            json!({"principal_id": "../p", "permission_id": "store.get"}),
            "principal_id",
        ),
        (
            json!({"principal_id": "p", "permission_id": "a/b"}),
            "permission_id",
        ),
        (
            json!({"principal_id": "p", "permission_id": "store.get", "config": [1]}),
            "object",
        ),
        (json!({"permission_id": "store.get"}), "principal_id"),
        (
            json!({"principal_id": "p", "permission_id": "x", "config": {"b": "x".repeat(70_000)}}),
            "64 KiB",
        ),
    ] {
        let (s, v) = k.post("/api/capability/grants/grant", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    let (s, _) = k.get("/api/capability/grants?principal_id=bad%20id").await;
    assert_eq!(s, 400);
    let (_, all) = k.get("/api/capability/grants").await;
    assert_eq!(all["data"]["grants"], json!([]), "nothing changed");
}

/// Invariant 6: an edited grant file denies its principal (it lists nothing, and the broker's
/// grant step answers `Tampered`) and raises a `security` audit entry naming the grant.
#[tokio::test]
async fn a_tampered_grant_file_is_denied_and_reported_after_restart() {
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    for p in ["my_pack", "other"] {
        let (s, _) = k
            .post(
                "/api/capability/grants/grant",
                json!({"principal_id": p, "permission_id": "store.get",
                       "config": {"allowed_store_ids": ["notes"]}}),
            )
            .await;
        assert_eq!(s, 200);
    }
    k.stop();
    let file = home
        .path()
        .join("user_data/permissions/capabilities/my_pack.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"notes\""));
    std::fs::write(&file, text.replace("\"notes\"", "\"everything\"")).unwrap();

    let k = Kernel::start(home.path(), &[]);
    let (_, mine) = k.get("/api/capability/grants?principal_id=my_pack").await;
    assert_eq!(
        mine["data"]["grants"],
        json!([]),
        "a tampered file grants nothing"
    );
    let (_, other) = k.get("/api/capability/grants?principal_id=other").await;
    assert_eq!(other["data"]["grants"].as_array().unwrap().len(), 1);
    let (_, sec) = k.get("/api/audit?category=security&limit=100").await;
    let entry = sec["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "capability_grant_tampered")
        .cloned()
        .unwrap_or_else(|| panic!("no security entry: {sec}"));
    assert_eq!(entry["owner_pack"], "my_pack");
    assert_eq!(entry["error_type"], "grant_tampered");
    // The operator grants afresh: a new signed file, the tampered grants dropped.
    let (s, _) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": "my_pack", "permission_id": "store.set"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, mine) = k.get("/api/capability/grants?principal_id=my_pack").await;
    let perms: Vec<&Value> = mine["data"]["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["permission_id"])
        .collect();
    assert_eq!(perms, vec!["store.set"]);
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Invariant 5 for the API: a secret's value is in no answer, no audit line, no log line and no
/// plaintext file; the file is 0600.
#[tokio::test]
async fn a_secret_value_appears_in_no_answer_log_or_plaintext_file() {
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    let mut rnd = [0u8; 12];
    getrandom(&mut rnd);
    let value = format!("leak-canary-{}", hex(&rnd));
    let mut answers = Vec::new();
    let mut call = |s: u16, v: Value| {
        answers.push(v.to_string());
        s
    };
    let (s, v) = k
        .post(
            "/api/secrets/set",
            json!({"key": "API_KEY", "value": value}),
        )
        .await;
    assert_eq!(call(s, v.clone()), 200, "{v}");
    assert_eq!(v["data"]["key"], "API_KEY");
    assert_eq!(v["data"]["deleted"], false);
    for field in ["created_at", "updated_at"] {
        assert!(v["data"][field].is_string());
    }
    let (s, v) = k
        .post("/api/secrets/set", json!({"key": "OTHER", "value": value}))
        .await;
    call(s, v);
    let (s, v) = k.get("/api/secrets").await;
    assert_eq!(call(s, v.clone()), 200);
    let listed = v["data"]["secrets"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
            .len(),
        4,
        "{{key, created_at, updated_at, deleted}}: {}",
        listed[0]
    );
    // Refusals that carry the value in the request.
    for body in [
        json!({"key": "bad key", "value": value}),
        json!({"key": "API_KEY", "value": [value]}),
        json!({"key": "BIG", "value": format!("{value}{}", "x".repeat(70_000))}),
    ] {
        let (s, v) = k.post("/api/secrets/set", body).await;
        assert_eq!(call(s, v), 400);
    }
    let (s, v) = k
        .post("/api/secrets/delete", json!({"key": "API_KEY"}))
        .await;
    assert_eq!(call(s, v.clone()), 200);
    assert_eq!(v["data"]["deleted"], true);
    let (s, v) = k
        .post("/api/secrets/delete", json!({"key": "API_KEY"}))
        .await;
    assert_eq!(call(s, v), 404);
    let (s, v) = k.post("/api/secrets/delete", json!({"key": "../x"})).await;
    assert_eq!(call(s, v), 400);
    for path in ["/api/audit?limit=1000", "/api/diagnostics", "/api/secrets"] {
        let (s, v) = k.get(path).await;
        call(s, v);
    }
    let (s, v) = k.get("/api/audit?category=permission&limit=100").await;
    call(s, v.clone());
    let acts = actions(v["data"].as_array().unwrap());
    assert!(
        acts.contains(&"secret_set".to_string()) && acts.contains(&"secret_delete".to_string())
    );
    for a in &answers {
        assert!(!a.contains(&value), "an answer holds the value: {a}");
    }
    k.stop();

    let secret = home.path().join("user_data/secrets/OTHER.secret");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut files = Vec::new();
    files_under(home.path(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("kernel-stderr.log")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{} holds the value in plaintext",
            f.display()
        );
    }
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Invariant 7 for store roots, and the statuses of §16 "Stores".
#[tokio::test]
async fn store_roots_stay_inside_and_duplicates_conflict() {
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, v) = k.get("/api/stores").await;
    assert_eq!((s, &v["data"]), (200, &json!({"stores": []})));
    let (s, v) = k
        .post(
            "/api/stores/create",
            json!({"store_id": "notes", "root_path": "user_data/stores/notes"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["store_id"], "notes");
    assert_eq!(v["data"]["root_path"], "user_data/stores/notes");
    assert!(home.path().join("user_data/stores/notes").is_dir());
    let abs = home.path().join("user_data/stores/abs");
    let (s, v) = k
        .post(
            "/api/stores/create",
            json!({"store_id": "abs", "root_path": abs.to_str().unwrap()}),
        )
        .await;
    assert_eq!(s, 200, "absolute inside is fine: {v}");

    let outside = home.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, home.path().join("user_data/stores/link")).unwrap();
    for root in [
        "user_data/stores/../../outside",
        "user_data/stores/../outside_new",
        "outside",
        "/etc",
        "user_data/stores",
        "user_data/stores/link",
        "user_data/stores/link/sub",
        "user_data/stores/notes/inner",
    ] {
        let (s, v) = k
            .post(
                "/api/stores/create",
                json!({"store_id": "esc", "root_path": root}),
            )
            .await;
        assert_eq!(s, 400, "{root}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("user_data/stores/"), "{msg}");
        assert!(
            !msg.contains(home.path().to_str().unwrap()),
            "no host path: {msg}"
        );
    }
    assert!(!outside.join("sub").exists());
    assert!(!home.path().join("user_data/outside_new").exists());
    for root in ["user_data/stores/notes", "user_data/stores/elsewhere"] {
        let (s, v) = k
            .post(
                "/api/stores/create",
                json!({"store_id": "notes", "root_path": root}),
            )
            .await;
        assert_eq!(s, 409, "a duplicate id conflicts whatever the root: {v}");
    }
    for id in ["", "Notes", "-x", "a/b", "a b", &"a".repeat(65)] {
        let (s, v) = k
            .post(
                "/api/stores/create",
                json!({"store_id": id, "root_path": "user_data/stores/x"}),
            )
            .await;
        assert_eq!(s, 400, "{id}: {v}");
    }
    let (s, v) = k
        .post("/api/stores/create", json!({"root_path": "x"}))
        .await;
    assert_eq!(s, 400, "{v}");
    let (_, v) = k.get("/api/stores").await;
    let ids: Vec<&Value> = v["data"]["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["store_id"])
        .collect();
    assert_eq!(ids, vec!["abs", "notes"]);
    let acts = actions(&permission_audit(&k).await);
    assert_eq!(acts.iter().filter(|a| *a == "store_create").count(), 2);

    // The index survives a restart.
    k.stop();
    let k = Kernel::start(home.path(), &[]);
    let (_, v) = k.get("/api/stores").await;
    assert_eq!(v["data"]["stores"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"]["stores"][1]["available"], true);
}

#[tokio::test]
async fn the_cli_grants_sets_secrets_and_creates_stores() {
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    let out = ok(
        rumi(&k),
        &[
            "capability",
            "grant",
            "my_pack",
            "secrets.get",
            "--config",
            r#"{"allowed_keys": ["API_KEY"]}"#,
        ],
    );
    assert!(out.stdout.contains("granted"), "{}", out.stdout);
    let out = ok(
        rumi(&k),
        &["--json", "capability", "grants", "--principal", "my_pack"],
    );
    assert_eq!(
        out.json()["grants"][0]["config"]["allowed_keys"][0],
        "API_KEY"
    );
    let out = ok(rumi(&k), &["capability", "grants"]);
    assert!(out.stdout.contains("PRINCIPAL") && out.stdout.contains("secrets.get"));
    let out = fails(rumi(&k), &["capability", "grant", "my_pack", "secrets.get"]);
    assert!(out.stderr.contains("allowed_keys"), "{}", out.stderr);
    fails(
        rumi(&k),
        &[
            "capability",
            "grant",
            "my_pack",
            "x",
            "--config",
            "{not json",
        ],
    );
    ok(
        rumi(&k),
        &["capability", "revoke", "my_pack", "secrets.get"],
    );
    fails(
        rumi(&k),
        &["capability", "revoke", "my_pack", "secrets.get"],
    );
    let out = ok(rumi(&k), &["capability", "grants"]);
    assert!(out.stdout.contains("no capability grants"));

    let value = "cli-canary-5d1e9a";
    let mut cmd = rumi(&k);
    cmd.write_stdin(format!("{value}\n"));
    let out = ok(cmd, &["secrets", "set", "API_KEY"]);
    assert!(!out.stdout.contains(value) && !out.stderr.contains(value));
    let out = ok(rumi(&k), &["secrets", "set", "TOKEN", "--value", value]);
    assert!(!out.stdout.contains(value));
    let out = ok(rumi(&k), &["--json", "secrets", "list"]);
    assert!(!out.stdout.contains(value));
    let listed = out.json();
    let keys: Vec<&str> = listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["API_KEY", "TOKEN"]);
    ok(rumi(&k), &["secrets", "delete", "TOKEN"]);
    let out = ok(rumi(&k), &["secrets", "list"]);
    assert!(out.stdout.contains("deleted") && !out.stdout.contains(value));
    fails(rumi(&k), &["secrets", "delete", "TOKEN"]);
    fails(rumi(&k), &["secrets", "set", "bad-key", "--value", "v"]);
    let mut empty = rumi(&k);
    empty.write_stdin("");
    let out = fails(empty, &["secrets", "set", "EMPTY"]);
    assert!(out.stderr.contains("no value"), "{}", out.stderr);

    let out = ok(
        rumi(&k),
        &["stores", "create", "notes", "user_data/stores/notes"],
    );
    assert!(
        out.stdout.contains("user_data/stores/notes"),
        "{}",
        out.stdout
    );
    ok(rumi(&k), &["stores", "create", "cache"]);
    let out = fails(
        rumi(&k),
        &["stores", "create", "notes", "user_data/stores/x"],
    );
    assert!(out.stderr.contains("exists"), "{}", out.stderr);
    let out = fails(
        rumi(&k),
        &["stores", "create", "esc", "user_data/stores/../.."],
    );
    assert!(out.stderr.contains("user_data/stores/"), "{}", out.stderr);
    let out = ok(rumi(&k), &["--json", "stores", "list"]);
    assert_eq!(out.json()["stores"].as_array().unwrap().len(), 2);
    let out = ok(rumi(&k), &["stores", "list"]);
    assert!(out.stdout.contains("STORE") && out.stdout.contains("cache"));
}
