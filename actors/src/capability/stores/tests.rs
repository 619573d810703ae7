use super::*;
use serde_json::json;
use std::fs;
use std::os::unix::fs::symlink;

struct Home {
    _dir: tempfile::TempDir,
    home: PathBuf,
}

fn home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().canonicalize().unwrap();
    Home { _dir: dir, home }
}

fn open(h: &Home) -> Stores {
    Stores::open(h.home.join("user_data/stores"), h.home.clone()).unwrap()
}

fn kind(e: StoreError) -> &'static str {
    e.error_type()
}

#[test]
fn create_set_get_list_delete_and_restart() {
    let h = home();
    let s = open(&h);
    let info = s.create("notes", "user_data/stores/notes").unwrap();
    assert_eq!(info.root_path, "user_data/stores/notes");
    assert!(info.available);
    s.set("notes", "a", &json!({"x": 1}), DEFAULT_MAX_VALUE_BYTES)
        .unwrap();
    s.set("notes", "users/alice/profile", &json!("hi"), 100)
        .unwrap();
    s.set("notes", "users/bob", &json!([1, 2]), 100).unwrap();
    assert_eq!(s.get("notes", "a").unwrap(), json!({"x": 1}));
    assert_eq!(s.get("notes", "users/alice/profile").unwrap(), json!("hi"));
    assert_eq!(
        s.list_keys("notes", None).unwrap(),
        (
            vec![
                "a".to_string(),
                "users/alice/profile".into(),
                "users/bob".into()
            ],
            false
        )
    );
    assert_eq!(
        s.list_keys("notes", Some("users/a")).unwrap().0,
        vec!["users/alice/profile"]
    );
    assert!(s.list_keys("notes", Some("zzz")).unwrap().0.is_empty());
    assert!(h
        .home
        .join("user_data/stores/notes/users/bob.json")
        .is_file());

    let s2 = open(&h);
    assert_eq!(s2.list(), s.list());
    assert_eq!(s2.get("notes", "users/bob").unwrap(), json!([1, 2]));
    s2.delete("notes", "users/bob").unwrap();
    assert_eq!(
        kind(s2.get("notes", "users/bob").unwrap_err()),
        "key_not_found"
    );
    assert_eq!(
        kind(s2.delete("notes", "users/bob").unwrap_err()),
        "key_not_found"
    );
    assert_eq!(
        kind(s2.delete("notes", "nope/x").unwrap_err()),
        "key_not_found"
    );
    assert_eq!(kind(s2.get("ghost", "a").unwrap_err()), "store_not_found");
    assert_eq!(
        kind(s2.set("ghost", "a", &json!(1), 10).unwrap_err()),
        "store_not_found"
    );
    assert_eq!(
        kind(s2.list_keys("ghost", None).unwrap_err()),
        "store_not_found"
    );
}

#[test]
fn values_over_the_limit_and_bad_keys_are_refused() {
    let h = home();
    let s = open(&h);
    s.create("s", "user_data/stores/s").unwrap();
    let e = s.set("s", "k", &json!("x".repeat(100)), 50).unwrap_err();
    assert_eq!(kind(e), "payload_too_large");
    assert!(
        s.set("s", "k", &json!("x".repeat(48)), 50).is_ok(),
        "50 bytes fit"
    );
    for bad in ["", "../x", "/a", "a/", "a\\b", "a\0b", "a/../b", "a//b"] {
        assert_eq!(
            kind(s.get("s", bad).unwrap_err()),
            "validation_error",
            "{bad:?}"
        );
        assert_eq!(
            kind(s.set("s", bad, &json!(1), 10).unwrap_err()),
            "validation_error"
        );
    }
    // 512 characters in one segment, or in several, are accepted (cut into pieces on disk).
    let long = "k".repeat(512);
    let split = format!("{}/{}", "a".repeat(300), "b".repeat(211));
    let exact = "p".repeat(PIECE);
    for key in [&long, &split, &exact] {
        s.set("s", key, &json!(key.len()), 10).unwrap();
        assert_eq!(s.get("s", key).unwrap(), json!(key.len()));
    }
    let (mut listed, _) = s.list_keys("s", None).unwrap();
    listed.retain(|k| k.len() >= PIECE);
    let mut want = vec![long.clone(), split.clone(), exact.clone()];
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(
        s.list_keys("s", Some(&"k".repeat(300))).unwrap().0,
        vec![long.clone()]
    );
    s.delete("s", &long).unwrap();
    assert_eq!(kind(s.get("s", &long).unwrap_err()), "key_not_found");
    assert_eq!(
        kind(s.set("s", &"k".repeat(513), &json!(1), 10).unwrap_err()),
        "validation_error"
    );
    assert_eq!(
        kind(s.list_keys("s", Some("..\\")).unwrap_err()),
        "validation_error"
    );
    // A key whose directory is a value file already.
    s.set("s", "leaf", &json!(1), 10).unwrap();
    fs::write(h.home.join("user_data/stores/s/plain"), b"x").unwrap();
    assert_eq!(
        kind(s.set("s", "plain/x", &json!(1), 10).unwrap_err()),
        "validation_error"
    );
}

#[test]
fn roots_must_resolve_strictly_inside_the_stores_dir() {
    let h = home();
    let s = open(&h);
    let outside = h.home.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(h.home.join("user_data/stores/real")).unwrap();
    symlink(&outside, h.home.join("user_data/stores/link")).unwrap();
    symlink(
        h.home.join("nowhere"),
        h.home.join("user_data/stores/dangling"),
    )
    .unwrap();
    for bad in [
        "outside",
        "user_data/stores/../../outside",
        "user_data/stores/..",
        "user_data/stores",
        "user_data/stores/",
        "user_data/stores/.",
        "user_data/stores/new/..",
        "user_data/stores/new/../x",
        "user_data/stores/link",
        "user_data/stores/link/sub",
        "user_data/stores/dangling",
        "user_data/stores/dangling/sub",
        "user_data/stores/real/../../../outside",
        "user_data/stores/index.json",
        "/etc",
        "/tmp",
        "",
        "user_data/stores/a\0b",
    ] {
        let e = s.create("x", bad).unwrap_err();
        assert_eq!(kind(e), "validation_error", "{bad:?}");
    }
    let e = s.create("x", "../outside").unwrap_err().to_string();
    assert!(
        !e.contains(&h.home.display().to_string()),
        "no host path: {e}"
    );
    assert!(s.list().is_empty());
    assert!(!outside.join("sub").exists());
    // Absolute inside is fine, and a symlink that stays inside is followed before the check.
    let abs = h.home.join("user_data/stores/abs");
    s.create("abs", abs.to_str().unwrap()).unwrap();
    symlink(
        h.home.join("user_data/stores/real"),
        h.home.join("user_data/stores/alias"),
    )
    .unwrap();
    let info = s.create("aliased", "user_data/stores/alias").unwrap();
    assert_eq!(info.root_path, "user_data/stores/real");
    s.create("deep", "user_data/stores/group/./deep/er")
        .unwrap();
}

#[test]
fn duplicates_conflict_and_roots_may_not_nest() {
    let h = home();
    let s = open(&h);
    s.create("a", "user_data/stores/a").unwrap();
    for root in ["user_data/stores/a", "user_data/stores/other"] {
        assert_eq!(kind(s.create("a", root).unwrap_err()), "conflict");
    }
    for root in ["user_data/stores/a", "user_data/stores/a/inner"] {
        assert_eq!(
            kind(s.create("b", root).unwrap_err()),
            "validation_error",
            "{root}"
        );
    }
    s.create("c", "user_data/stores/c/inner").unwrap();
    assert_eq!(
        kind(s.create("d", "user_data/stores/c").unwrap_err()),
        "validation_error"
    );
    for bad in ["", "A", "-x", "a/b", &"a".repeat(65)] {
        assert_eq!(
            kind(s.create(bad, "user_data/stores/z").unwrap_err()),
            "validation_error"
        );
    }
    assert_eq!(s.list().len(), 2);
}

#[test]
fn links_planted_inside_a_root_are_never_followed() {
    let h = home();
    let s = open(&h);
    s.create("s", "user_data/stores/s").unwrap();
    let outside = h.home.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("passwd.json"), b"\"secret\"").unwrap();
    fs::write(outside.join("v.json"), b"\"outside value\"").unwrap();
    let root = h.home.join("user_data/stores/s");
    symlink(&outside, root.join("dir")).unwrap();
    symlink(outside.join("v.json"), root.join("file.json")).unwrap();
    assert_eq!(kind(s.get("s", "dir/passwd").unwrap_err()), "key_not_found");
    assert_eq!(kind(s.get("s", "file").unwrap_err()), "key_not_found");
    assert!(s.set("s", "dir/new", &json!(1), 10).is_err());
    assert!(
        !outside.join("new.json").exists(),
        "nothing written through the link"
    );
    // Setting a key whose file is a link replaces the link, not its target.
    s.set("s", "file", &json!("mine"), 100).unwrap();
    assert_eq!(
        fs::read_to_string(outside.join("v.json")).unwrap(),
        "\"outside value\""
    );
    assert!(s.delete("s", "dir/passwd").is_err());
    assert!(outside.join("passwd.json").exists());
    assert_eq!(s.list_keys("s", None).unwrap().0, vec!["file"]);
    // A FIFO does not hang a reader.
    let fifo = std::ffi::CString::new(root.join("fifo.json").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert!(s.get("s", "fifo").is_err());
}

#[test]
fn a_root_replaced_by_a_link_before_start_is_unavailable() {
    let h = home();
    {
        let s = open(&h);
        s.create("s", "user_data/stores/s").unwrap();
        s.set("s", "k", &json!(1), 10).unwrap();
    }
    let outside = h.home.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::rename(h.home.join("user_data/stores/s"), h.home.join("moved")).unwrap();
    symlink(&outside, h.home.join("user_data/stores/s")).unwrap();
    let s = open(&h);
    assert!(!s.list()[0].available);
    assert_eq!(kind(s.get("s", "k").unwrap_err()), "store_not_found");
    assert!(s.set("s", "k", &json!(2), 10).is_err());
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
}

#[test]
fn listing_is_capped_and_sorted() {
    let h = home();
    let s = open(&h);
    s.create("s", "user_data/stores/s").unwrap();
    let root = h.home.join("user_data/stores/s");
    // Written directly: 10 001 values through `set` would fsync 10 001 times.
    fs::create_dir_all(root.join("d")).unwrap();
    for i in 0..(MAX_LIST_KEYS + 1) {
        fs::write(root.join(format!("d/k{i:05}.json")), b"1").unwrap();
    }
    fs::write(root.join("notes.txt"), b"ignored").unwrap();
    let (keys, truncated) = s.list_keys("s", None).unwrap();
    assert!(truncated);
    assert_eq!(keys.len(), MAX_LIST_KEYS);
    assert_eq!(keys[0], "d/k00000");
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let (keys, truncated) = s.list_keys("s", Some("d/k0000")).unwrap();
    assert!(!truncated);
    assert_eq!(keys.len(), 10);
}

/// Invariant 9 at the library level (`store.set` goes through the broker, so the kill -9 test
/// over HTTP covers grants, secrets and store creation): every acknowledged set is a whole
/// value after reopening, and concurrent sets of one key leave one of the written values.
#[test]
fn concurrent_sets_are_whole_and_durable() {
    let h = home();
    let s = Arc::new(open(&h));
    s.create("s", "user_data/stores/s").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..25 {
                    s.set("s", &format!("t{t}/k{i}"), &json!({"t": t, "i": i}), 1000)
                        .unwrap();
                    s.set("s", "shared", &json!({"t": t, "i": i}), 1000)
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s2 = open(&h);
    for t in 0..4 {
        for i in 0..25 {
            assert_eq!(
                s2.get("s", &format!("t{t}/k{i}")).unwrap(),
                json!({"t": t, "i": i})
            );
        }
    }
    assert_eq!(s2.get("s", "shared").unwrap()["i"], json!(24));
    assert_eq!(s2.list_keys("s", None).unwrap().0.len(), 101);
    let leftovers = fs::read_dir(h.home.join("user_data/stores/s"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn a_damaged_index_stops_the_start_without_a_host_path() {
    let h = home();
    fs::create_dir_all(h.home.join("user_data/stores")).unwrap();
    fs::write(h.home.join("user_data/stores/index.json"), b"{oops").unwrap();
    let e = Stores::open(h.home.join("user_data/stores"), h.home.clone())
        .err()
        .unwrap();
    assert!(e.to_string().contains("index.json is damaged"));
}
