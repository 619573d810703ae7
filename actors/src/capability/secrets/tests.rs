use super::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

fn open(home: &Path) -> SecretStore {
    SecretStore::open(home.join("secrets"), home.join("keys")).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const VALUE: &str = "s3cr3t-value-8c1f0e";

#[test]
fn set_get_delete_list_and_restart() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    assert!(s.get("API_KEY").is_none());
    let info = s.set("API_KEY", VALUE).unwrap();
    assert!(!info.deleted && info.created_at == info.updated_at);
    assert_eq!(s.get("API_KEY").unwrap().expose(), VALUE);
    let again = s.set("API_KEY", "second").unwrap();
    assert_eq!(again.created_at, info.created_at, "created once");

    let s2 = open(d.path());
    assert_eq!(
        s2.get("API_KEY").unwrap().expose(),
        "second",
        "survives restart"
    );
    s2.delete("API_KEY").unwrap();
    assert!(s2.get("API_KEY").is_none());
    assert!(matches!(
        s2.delete("API_KEY"),
        Err(SecretError::NotFound(_))
    ));
    assert!(matches!(s2.delete("NEVER"), Err(SecretError::NotFound(_))));
    s2.set("OTHER", "x").unwrap();
    let listed = s2.list();
    assert_eq!(
        listed
            .iter()
            .map(|i| (i.key.as_str(), i.deleted))
            .collect::<Vec<_>>(),
        vec![("API_KEY", true), ("OTHER", false)]
    );
    assert_eq!(listed[0].created_at, info.created_at);
}

#[test]
fn nothing_on_disk_holds_the_value_and_files_are_private() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.set("API_KEY", VALUE).unwrap();
    s.delete("API_KEY").unwrap();
    s.set("TOKEN", VALUE).unwrap();
    let mut files = Vec::new();
    let mut stack = vec![d.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    for f in &files {
        let bytes = fs::read(f).unwrap();
        assert!(
            !bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
            "{} holds the value in plaintext",
            f.display()
        );
        assert!(
            !hex::encode(&bytes).contains(&hex::encode(VALUE)),
            "{}",
            f.display()
        );
    }
    assert_eq!(mode(&d.path().join("secrets/TOKEN.secret")), 0o600);
    assert_eq!(mode(&d.path().join("secrets/API_KEY.secret")), 0o600);
    assert_eq!(mode(&d.path().join("keys/secrets.key")), 0o600);
    assert_eq!(mode(&d.path().join("secrets/journal.jsonl")), 0o600);
    assert_eq!(mode(&d.path().join("secrets")), 0o700);
    let tomb = fs::read_to_string(d.path().join("secrets/API_KEY.secret")).unwrap();
    assert!(
        !tomb.contains("ciphertext"),
        "a tombstone keeps no ciphertext: {tomb}"
    );
    let journal = fs::read_to_string(d.path().join("secrets/journal.jsonl")).unwrap();
    let actions: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(actions.len(), 3);
    assert_eq!(actions[1]["action"], "delete");
    assert_eq!(actions[2]["key"], "TOKEN");
    assert!(actions.iter().all(|a| a.as_object().unwrap().len() == 3));
}

use serde_json::Value;

#[test]
fn the_value_type_prints_and_serializes_nothing() {
    let v = SecretValue::new(VALUE.to_string());
    assert_eq!(format!("{v:?}"), "[redacted]");
    assert_eq!(format!("{v}"), "[redacted]");
    assert_eq!(serde_json::to_string(&v).unwrap(), "\"[redacted]\"");
    assert_eq!(format!("{:?}", Some(&v)), "Some([redacted])");
}

#[test]
fn a_file_renamed_to_another_key_or_damaged_reads_as_absent() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.set("A", "alpha").unwrap();
    s.set("B", "beta").unwrap();
    let dir = d.path().join("secrets");
    fs::copy(dir.join("A.secret"), dir.join("B.secret")).unwrap();
    assert!(s.get("B").is_none(), "A's ciphertext does not answer for B");
    assert_eq!(s.get("A").unwrap().expose(), "alpha");
    // Flip one hex digit of the ciphertext.
    let text = fs::read_to_string(dir.join("A.secret")).unwrap();
    let mut f: Value = serde_json::from_str(&text).unwrap();
    let ct = f["ciphertext"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if ct.starts_with('0') { "1" } else { "0" },
        &ct[1..]
    );
    f["ciphertext"] = Value::String(flipped);
    fs::write(dir.join("A.secret"), f.to_string()).unwrap();
    assert!(s.get("A").is_none());
    fs::write(dir.join("A.secret"), b"\0garbage").unwrap();
    assert!(s.get("A").is_none());
    assert!(
        s.list().iter().all(|i| i.key != "A"),
        "a damaged file is not listed"
    );
    // Another installation's key decrypts nothing.
    s.set("C", "gamma").unwrap();
    let other = tempfile::tempdir().unwrap();
    let foreign = SecretStore::open(dir.clone(), other.path().join("keys")).unwrap();
    assert!(foreign.get("C").is_none());
    assert!(s.get("../A").is_none() && s.get("").is_none());
}

#[test]
fn bad_input_is_refused_naming_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    for bad in ["", "lower", "A-B", "../X", &"K".repeat(65)] {
        assert!(
            matches!(s.set(bad, "v"), Err(SecretError::InvalidKey)),
            "{bad}"
        );
    }
    let big = "x".repeat(MAX_SECRET_BYTES + 1);
    let e = s.set("BIG", &big).unwrap_err();
    assert!(e.to_string().contains("65536"), "{e}");
    s.set("FITS", &"x".repeat(MAX_SECRET_BYTES)).unwrap();
    assert_eq!(s.get("FITS").unwrap().expose().len(), MAX_SECRET_BYTES);
    s.set("EMPTY", "").unwrap();
    assert_eq!(s.get("EMPTY").unwrap().expose(), "");
}

#[test]
fn a_damaged_key_file_stops_the_start() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("keys")).unwrap();
    fs::write(d.path().join("keys/secrets.key"), b"short").unwrap();
    let e = SecretStore::open(d.path().join("secrets"), d.path().join("keys"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("damaged"));
    assert!(!e.to_string().contains(&d.path().display().to_string()));
}

#[test]
fn concurrent_sets_and_deletes_leave_whole_files() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(open(d.path()));
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let key = format!("K{}", i % 5);
                    if (i + t) % 7 == 0 {
                        let _ = s.delete(&key);
                    } else {
                        s.set(&key, &format!("v{t}-{i}")).unwrap();
                    }
                    if let Some(v) = s.get(&key) {
                        assert!(v.expose().starts_with('v'));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let listed = s.list();
    assert_eq!(listed.len(), 5);
    for i in listed {
        assert_eq!(s.get(&i.key).is_some(), !i.deleted, "{}", i.key);
    }
    let journal = fs::read_to_string(d.path().join("secrets/journal.jsonl")).unwrap();
    assert!(journal
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
}

#[test]
fn the_number_of_secrets_is_capped_and_a_delete_frees_a_place() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path()).with_max_secrets(2);
    s.set("A_KEY", VALUE).unwrap();
    s.set("B_KEY", VALUE).unwrap();
    assert!(matches!(s.set("C_KEY", VALUE), Err(SecretError::TooMany)));
    s.set("A_KEY", "replaced-value").unwrap();
    s.delete("B_KEY").unwrap();
    s.set("C_KEY", VALUE).unwrap();
    assert!(matches!(s.set("B_KEY", VALUE), Err(SecretError::TooMany)));
    // The count is rebuilt from the files at open.
    drop(s);
    let s = open(d.path()).with_max_secrets(2);
    assert!(matches!(s.set("D_KEY", VALUE), Err(SecretError::TooMany)));
}
