use super::*;
use serde_json::json;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier};

fn open(dir: &Path) -> (CapabilityGrants, Vec<String>) {
    CapabilityGrants::load(dir.to_path_buf(), SigningKey::from_bytes(&[9; 32]))
}

fn granted(c: GrantCheck) -> Value {
    match c {
        GrantCheck::Granted(v) => v,
        other => panic!("not granted: {other:?}"),
    }
}

#[test]
fn a_grant_is_checked_listed_revoked_and_survives_restart() {
    let d = tempfile::tempdir().unwrap();
    let (g, tampered) = open(d.path());
    assert!(tampered.is_empty());
    assert!(matches!(g.check("a", "store.get"), GrantCheck::Denied(_)));
    let r = g
        .grant("a", "store.get", json!({"allowed_store_ids": ["notes"]}))
        .unwrap();
    assert!(r.enabled && r.principal_id == "a" && r.permission_id == "store.get");
    g.grant("a", "secrets.get", json!({"allowed_keys": ["API_KEY"]}))
        .unwrap();
    assert_eq!(
        granted(g.check("a", "store.get")),
        json!({"allowed_store_ids": ["notes"]})
    );
    assert!(matches!(g.check("a", "store.set"), GrantCheck::Denied(_)));
    assert!(matches!(g.check("b", "store.get"), GrantCheck::Denied(_)));

    let (g2, tampered) = open(d.path());
    assert!(tampered.is_empty());
    assert_eq!(g2.list(Some("a")), g.list(Some("a")));
    assert_eq!(g2.list(None).len(), 2);
    assert!(g2.list(Some("zzz")).is_empty());

    assert!(g2.revoke("a", "store.get").unwrap());
    assert!(
        !g2.revoke("a", "store.get").unwrap(),
        "nothing left to revoke"
    );
    assert!(matches!(g2.check("a", "store.get"), GrantCheck::Denied(_)));
    let (g3, _) = open(d.path());
    let listed: Vec<String> = g3.list(None).into_iter().map(|r| r.permission_id).collect();
    assert_eq!(listed, vec!["secrets.get"], "revoked grants are absent");
    assert!(g3.revoke("a", "secrets.get").unwrap());
    assert!(
        !d.path().join("a.json").exists(),
        "an empty principal leaves no file"
    );
}

#[test]
fn every_level_needs_the_grant_and_the_configs_meet() {
    let d = tempfile::tempdir().unwrap();
    let (g, _) = open(d.path());
    g.grant(
        "a__b",
        "store.set",
        json!({"allowed_store_ids": ["notes", "cache"], "max_value_bytes": 4096}),
    )
    .unwrap();
    match g.check("a__b", "store.set") {
        GrantCheck::Denied(reason) => assert!(reason.contains("a holds no grant"), "{reason}"),
        other => panic!("{other:?}"),
    }
    g.grant(
        "a",
        "store.set",
        json!({"allowed_store_ids": ["notes"], "max_value_bytes": 100000}),
    )
    .unwrap();
    assert_eq!(
        granted(g.check("a__b", "store.set")),
        json!({"allowed_store_ids": ["notes"], "max_value_bytes": 4096})
    );
    // The parent's restriction stays when the child says nothing of it.
    g.grant("a__c", "store.set", json!({})).unwrap();
    assert_eq!(
        granted(g.check("a__c", "store.set")),
        json!({"allowed_store_ids": ["notes"], "max_value_bytes": 100000})
    );
}

#[test]
fn an_empty_store_list_means_any_and_never_widens_another_level() {
    let d = tempfile::tempdir().unwrap();
    let (g, _) = open(d.path());
    g.grant("a", "store.get", json!({"allowed_store_ids": []}))
        .unwrap();
    assert_eq!(granted(g.check("a", "store.get")), json!({}));
    g.grant("a__b", "store.get", json!({"allowed_store_ids": ["x"]}))
        .unwrap();
    assert_eq!(
        granted(g.check("a__b", "store.get")),
        json!({"allowed_store_ids": ["x"]}),
        "[] at the parent does not erase the child's restriction"
    );
    g.grant("a", "store.get", json!({"allowed_store_ids": ["y"]}))
        .unwrap();
    assert!(
        matches!(g.check("a__b", "store.get"), GrantCheck::Denied(r) if r.contains("share no")),
        "disjoint lists deny instead of meeting at [] (= any)"
    );
}

#[test]
fn tampering_denies_the_principal_and_its_children() {
    let d = tempfile::tempdir().unwrap();
    let (g, _) = open(d.path());
    g.grant("a", "store.get", json!({"allowed_store_ids": ["notes"]}))
        .unwrap();
    g.grant("a__b", "store.get", json!({})).unwrap();
    g.grant("other", "store.get", json!({})).unwrap();
    let file = d.path().join("a.json");
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, text.replace("\"notes\"", "\"secret\"")).unwrap();

    let (g2, tampered) = open(d.path());
    assert_eq!(tampered, vec!["a".to_string()]);
    assert_eq!(g2.tampered(), vec!["a".to_string()]);
    for p in ["a", "a__b"] {
        assert_eq!(
            g2.check(p, "store.get"),
            GrantCheck::Tampered {
                principal_id: "a".into()
            },
            "{p}"
        );
    }
    assert!(matches!(
        g2.check("a", "store.set"),
        GrantCheck::Tampered { .. }
    ));
    assert!(matches!(
        g2.check("other", "store.get"),
        GrantCheck::Granted(_)
    ));
    assert!(g2.list(Some("a")).is_empty());
    // An operator's revoke clears the tampered file: still denied, no longer tampered.
    assert!(g2.revoke("a", "store.get").unwrap());
    assert!(matches!(g2.check("a", "store.get"), GrantCheck::Denied(_)));
    assert!(g2.tampered().is_empty());
}

#[test]
fn a_file_copied_to_another_principal_or_garbage_is_tampered() {
    let d = tempfile::tempdir().unwrap();
    let (g, _) = open(d.path());
    g.grant("a", "store.get", json!({})).unwrap();
    fs::copy(d.path().join("a.json"), d.path().join("b.json")).unwrap();
    fs::write(d.path().join("c.json"), b"{not json").unwrap();
    fs::write(d.path().join("not a principal!.json"), b"x").unwrap();
    let (g2, tampered) = open(d.path());
    assert_eq!(tampered, vec!["b".to_string(), "c".to_string()]);
    assert!(matches!(
        g2.check("b", "store.get"),
        GrantCheck::Tampered { .. }
    ));
    // Another key signs nothing this one accepts.
    let (g3, tampered) =
        CapabilityGrants::load(d.path().to_path_buf(), SigningKey::from_bytes(&[1; 32]));
    assert_eq!(tampered.len(), 3);
    assert!(matches!(
        g3.check("a", "store.get"),
        GrantCheck::Tampered { .. }
    ));
}

#[test]
fn bad_input_is_refused_with_the_fix_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (g, _) = open(d.path());
    for (principal, perm, config, says) in [
        ("../x", "store.get", json!({}), "principal_id"),
        ("", "store.get", json!({}), "principal_id"),
        ("a", "../etc", json!({}), "permission_id"),
        ("a", "store.get", json!([1]), "JSON object"),
        ("a", "secrets.get", json!({}), "allowed_keys"),
        (
            "a",
            "secrets.get",
            json!({"allowed_keys": []}),
            "allowed_keys",
        ),
        (
            "a",
            "secrets.get",
            json!({"allowed_keys": ["lower"]}),
            "allowed_keys",
        ),
        (
            "a",
            "store.get",
            json!({"allowed_store_ids": "notes"}),
            "allowed_store_ids",
        ),
        (
            "a",
            "store.set",
            json!({"max_value_bytes": -1}),
            "max_value_bytes",
        ),
        (
            "a",
            "fs.read",
            json!({"blob": "x".repeat(70_000)}),
            "64 KiB",
        ),
    ] {
        let e = g.grant(principal, perm, config).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(says), "{principal} {perm}: {e}");
    }
    assert!(g.list(None).is_empty());
    assert!(fs::read_dir(d.path()).map(|r| r.count()).unwrap_or(0) == 0);
    // A third-party permission takes any object; null is {}.
    assert_eq!(
        g.grant("a", "fs.read", Value::Null).unwrap().config,
        json!({})
    );
}

#[test]
fn remove_principal_removes_exactly_that_principal_durably() {
    let d = tempfile::tempdir().unwrap();
    let (g, _) = open(d.path());
    for p in ["a", "a__b", "ab", "b"] {
        g.grant(p, "store.get", json!({})).unwrap();
    }
    assert!(g.remove_principal("a").unwrap());
    assert_eq!(g.principals(), ["a__b", "ab", "b"]);
    let (g2, _) = open(d.path());
    assert_eq!(g2.principals(), ["a__b", "ab", "b"]);
    assert!(!g.remove_principal("a").unwrap());
    assert!(matches!(g.check("a", "store.get"), GrantCheck::Denied(_)));
}

/// Concurrent grants and revokes to one principal (seeded, replayable): every acknowledged
/// grant that was not revoked afterwards is in memory and on disk, nothing is lost to a
/// read-modify-write race.
#[test]
fn concurrent_grants_to_one_principal_never_lose_one() {
    let d = tempfile::tempdir().unwrap();
    let (g, _) = open(d.path());
    let g = Arc::new(g);
    let threads = 8;
    let per_thread = 12;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (g, b) = (Arc::clone(&g), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // xorshift seeded by the thread: the interleaving varies, the work does not.
                let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let mut kept = Vec::new();
                b.wait();
                for i in 0..per_thread {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let perm = format!("p{t}.n{i}");
                    g.grant("shared", &perm, json!({"n": i})).unwrap();
                    if s % 4 == 0 {
                        assert!(g.revoke("shared", &perm).unwrap());
                    } else {
                        kept.push(perm);
                    }
                }
                kept
            })
        })
        .collect();
    let mut expected: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    expected.sort();
    let in_memory: Vec<String> = g
        .list(Some("shared"))
        .into_iter()
        .map(|r| r.permission_id)
        .collect();
    assert_eq!(in_memory, expected);
    let (reloaded, tampered) = open(d.path());
    assert!(tampered.is_empty());
    let on_disk: Vec<String> = reloaded
        .list(Some("shared"))
        .into_iter()
        .map(|r| r.permission_id)
        .collect();
    assert_eq!(on_disk, expected);
    for p in &expected {
        assert!(matches!(
            reloaded.check("shared", p),
            GrantCheck::Granted(_)
        ));
    }
}

#[test]
fn the_chain_matches_the_domain_s() {
    for p in ["a", "a__b", "a__b__c", "a_b", "a___b"] {
        let ours: Vec<String> = chain(p).into_iter().map(String::from).collect();
        assert_eq!(ours, rumi_domain::capability::grant::principal_chain(p));
    }
}
