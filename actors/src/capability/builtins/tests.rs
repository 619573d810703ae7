use super::*;
use crate::keys::SigningKey;
use crate::layout::Layout;
use crate::view::KernelView;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    caps: Capabilities,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().canonicalize().unwrap());
    let (caps, report) = Capabilities::open(
        &layout,
        SigningKey::from_bytes(&[3; 32]),
        Arc::new(KernelView::default()),
        Arc::default(),
    )
    .unwrap();
    assert!(report.tampered_grants.is_empty());
    caps.stores
        .create("notes", "user_data/stores/notes")
        .unwrap();
    caps.stores
        .create("other", "user_data/stores/other")
        .unwrap();
    caps.secrets.set("API_KEY", "v4lue").unwrap();
    caps.secrets.set("GONE", "x").unwrap();
    caps.secrets.delete("GONE").unwrap();
    Fixture { _dir: dir, caps }
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn run(f: &Fixture, perm: &str, a: Value, config: Value) -> Value {
    match execute(&f.caps, "p", perm, &args(a), &config) {
        BuiltinOutcome::Output(v) => v,
        BuiltinOutcome::SecretDenied => json!("SECRET_DENIED"),
    }
}

fn error_type(v: &Value) -> &str {
    assert_eq!(v["success"], json!(false), "{v}");
    v["error_type"].as_str().unwrap()
}

#[test]
fn store_set_get_delete_list_rows() {
    let f = fixture();
    let any = json!({});
    assert_eq!(
        run(
            &f,
            "store.set",
            json!({"store_id": "notes", "key": "a/b", "value": {"x": [1]}}),
            any.clone()
        ),
        json!({"success": true})
    );
    run(
        &f,
        "store.set",
        json!({"store_id": "notes", "key": "a/c", "value": null}),
        any.clone(),
    );
    run(
        &f,
        "store.set",
        json!({"store_id": "notes", "key": "z", "value": 3}),
        any.clone(),
    );
    assert_eq!(
        run(
            &f,
            "store.get",
            json!({"store_id": "notes", "key": "a/b"}),
            any.clone()
        ),
        json!({"success": true, "value": {"x": [1]}})
    );
    assert_eq!(
        run(
            &f,
            "store.get",
            json!({"store_id": "notes", "key": "a/c"}),
            any.clone()
        ),
        json!({"success": true, "value": null})
    );
    assert_eq!(
        run(&f, "store.list", json!({"store_id": "notes"}), any.clone()),
        json!({"success": true, "keys": ["a/b", "a/c", "z"], "truncated": false})
    );
    assert_eq!(
        run(
            &f,
            "store.list",
            json!({"store_id": "notes", "prefix": "a/"}),
            any.clone()
        )["keys"],
        json!(["a/b", "a/c"])
    );
    assert_eq!(
        run(
            &f,
            "store.delete",
            json!({"store_id": "notes", "key": "a/b"}),
            any.clone()
        ),
        json!({"success": true})
    );
    let v = run(
        &f,
        "store.get",
        json!({"store_id": "notes", "key": "a/b"}),
        any.clone(),
    );
    assert_eq!(error_type(&v), "key_not_found");
    assert!(v["error"].as_str().unwrap().contains("a/b"));
    let v = run(
        &f,
        "store.delete",
        json!({"store_id": "notes", "key": "a/b"}),
        any.clone(),
    );
    assert_eq!(error_type(&v), "key_not_found");
    for perm in ["store.get", "store.set", "store.delete", "store.list"] {
        let v = run(
            &f,
            perm,
            json!({"store_id": "ghost", "key": "k", "value": 1}),
            any.clone(),
        );
        assert_eq!(error_type(&v), "store_not_found", "{perm}");
    }
}

#[test]
fn args_are_checked_with_clear_validation_errors() {
    let f = fixture();
    let any = json!({});
    for (perm, a, says) in [
        (
            "store.get",
            json!({"key": "k"}),
            "args.store_id is required",
        ),
        (
            "store.get",
            json!({"store_id": 5, "key": "k"}),
            "args.store_id must be a string",
        ),
        (
            "store.get",
            json!({"store_id": "Bad!", "key": "k"}),
            "args.store_id must be",
        ),
        (
            "store.get",
            json!({"store_id": "notes"}),
            "args.key is required",
        ),
        (
            "store.get",
            json!({"store_id": "notes", "key": "../x"}),
            "\"..\"",
        ),
        (
            "store.get",
            json!({"store_id": "notes", "key": "/x"}),
            "starts or ends",
        ),
        (
            "store.get",
            json!({"store_id": "notes", "key": "a\\b"}),
            "'\\\\'",
        ),
        (
            "store.get",
            json!({"store_id": "notes", "key": "a\u{0}b"}),
            "U+0000",
        ),
        (
            "store.get",
            json!({"store_id": "notes", "key": "k".repeat(513)}),
            "513",
        ),
        (
            "store.set",
            json!({"store_id": "notes", "key": "k"}),
            "args.value is required",
        ),
        (
            "store.list",
            json!({"store_id": "notes", "prefix": 3}),
            "args.prefix must be",
        ),
        (
            "store.delete",
            json!({"store_id": "notes", "key": ""}),
            "empty",
        ),
    ] {
        let v = run(&f, perm, a.clone(), any.clone());
        assert_eq!(error_type(&v), "validation_error", "{perm} {a}");
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{perm} {a}: {v}"
        );
    }
    let v = run(
        &f,
        "store.set",
        json!({"store_id": "notes", "key": "k".repeat(512), "value": 1}),
        any,
    );
    assert_eq!(v, json!({"success": true}), "512 characters are accepted");
}

#[test]
fn allowed_store_ids_empty_or_absent_is_any_otherwise_listed_only() {
    let f = fixture();
    let a = json!({"store_id": "other", "key": "k", "value": 1});
    for config in [
        json!({}),
        json!({"allowed_store_ids": []}),
        json!({"allowed_store_ids": null}),
    ] {
        assert_eq!(
            run(&f, "store.set", a.clone(), config.clone()),
            json!({"success": true}),
            "{config}"
        );
    }
    let v = run(
        &f,
        "store.set",
        a.clone(),
        json!({"allowed_store_ids": ["notes"]}),
    );
    assert_eq!(error_type(&v), "grant_denied");
    assert!(v["error"].as_str().unwrap().contains("other"));
    let ok = run(
        &f,
        "store.get",
        json!({"store_id": "notes", "key": "k"}),
        json!({"allowed_store_ids": ["notes"]}),
    );
    assert_eq!(error_type(&ok), "key_not_found", "allowed, then looked up");
    // A config the intersection made malformed denies.
    for bad in [
        json!({"allowed_store_ids": false}),
        json!({"allowed_store_ids": "other"}),
        json!({"allowed_store_ids": [1]}),
    ] {
        assert_eq!(
            error_type(&run(&f, "store.get", a.clone(), bad.clone())),
            "grant_denied",
            "{bad}"
        );
    }
}

#[test]
fn max_value_bytes_from_the_grant_default_one_mib() {
    let f = fixture();
    let set = |value: Value, config: Value| {
        run(
            &f,
            "store.set",
            json!({"store_id": "notes", "key": "big", "value": value}),
            config,
        )
    };
    let v = set(json!("x".repeat(20)), json!({"max_value_bytes": 10}));
    assert_eq!(error_type(&v), "payload_too_large");
    assert!(v["error"].as_str().unwrap().contains("10 bytes"), "{v}");
    assert_eq!(
        set(json!("x".repeat(8)), json!({"max_value_bytes": 10})),
        json!({"success": true})
    );
    let mib = DEFAULT_MAX_VALUE_BYTES as usize;
    assert_eq!(
        error_type(&set(json!("x".repeat(mib)), json!({}))),
        "payload_too_large"
    );
    assert_eq!(
        set(json!("x".repeat(mib - 2)), json!({})),
        json!({"success": true})
    );
    assert_eq!(
        error_type(&set(json!(1), json!({"max_value_bytes": false}))),
        "grant_denied"
    );
}

#[test]
fn secrets_get_answers_the_value_or_the_one_denial() {
    let f = fixture();
    let allowed = json!({"allowed_keys": ["API_KEY", "GONE", "MISSING"]});
    assert_eq!(
        run(
            &f,
            "secrets.get",
            json!({"key": "API_KEY"}),
            allowed.clone()
        ),
        json!({"success": true, "value": "v4lue"})
    );
    for (a, config) in [
        (
            json!({"key": "API_KEY"}),
            json!({"allowed_keys": ["OTHER"]}),
        ),
        (json!({"key": "API_KEY"}), json!({})),
        (json!({"key": "API_KEY"}), json!({"allowed_keys": false})),
        (json!({"key": "GONE"}), allowed.clone()),
        (json!({"key": "MISSING"}), allowed.clone()),
        (json!({"key": 5}), allowed.clone()),
        (json!({}), allowed.clone()),
        (
            json!({"key": "../API_KEY"}),
            json!({"allowed_keys": ["../API_KEY"]}),
        ),
    ] {
        assert_eq!(
            run(&f, "secrets.get", a.clone(), config.clone()),
            json!("SECRET_DENIED"),
            "{a} {config}"
        );
    }
}

#[test]
fn an_unknown_permission_is_a_validation_error() {
    let f = fixture();
    assert_eq!(
        error_type(&run(&f, "fs.read", json!({}), json!({}))),
        "validation_error"
    );
    assert!(is_builtin("store.get") && !is_builtin("fs.read"));
}
