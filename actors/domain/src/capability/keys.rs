//! Names a pack or an operator gives: store ids, store keys, secret keys, permission ids
//! (contract §7.1, §8). Pure checks, property-tested.
//!
//! Attacks stopped here: a store key is joined under a store's root as `<root>/<key>.json`, so
//! a key that could climb out (`..`), start at the filesystem root (`/x`), use the other
//! separator (`\`), carry a NUL (cut by the C library) or an empty segment (`a//b`, the same file
//! as `a/b` under two names) is refused before any path is built; ids and secret keys become
//! file names, so they are drawn from small alphabets without separators.
//!
//! OWNER: the stores/secrets/grants work. The signatures are fixed (the broker uses them).

/// Longest store key, in bytes (contract §16 "Stores": 512 accepted, 513 refused).
pub const MAX_STORE_KEY: usize = 512;
/// Longest secret key.
pub const MAX_SECRET_KEY: usize = 64;

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`: what a `permission_id` may be.
pub fn valid_permission_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// `^[a-z0-9][a-z0-9_.-]{0,63}$`: what a `store_id` may be.
pub fn valid_store_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

/// `^[A-Z0-9_]{1,64}$`: what a secret's key may be.
pub fn valid_secret_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_SECRET_KEY
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// A store key: 1–512 characters of `[A-Za-z0-9_./-]`, segments split by `/`, none empty (so
/// no leading, trailing or doubled `/`), none `..` (climbing out of the root) and none `.` (one
/// file under two names). The error says what was wrong and what is allowed.
pub fn check_store_key(key: &str) -> Result<(), String> {
    const RULE: &str = "store keys are 1–512 characters of letters, digits, '_', '.', '-' and '/' \
                        between non-empty segments (e.g. \"users/alice.profile\")";
    if key.is_empty() {
        return Err(format!("the key is empty; {RULE}"));
    }
    if key.len() > MAX_STORE_KEY {
        return Err(format!(
            "the key is {} characters long; {RULE}",
            key.chars().count()
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        let shown = if c.is_control() {
            format!("U+{:04X}", c as u32)
        } else {
            format!("{c:?}")
        };
        return Err(format!("the key contains {shown}; {RULE}"));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(format!("the key starts or ends with '/'; {RULE}"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(format!("the key has an empty segment ('//'); {RULE}")),
            ".." | "." => {
                return Err(format!(
                    "the key has a {segment:?} segment, which is not allowed; {RULE}"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn store_ids() {
        for ok in ["a", "0", "my-store", "a.b_c-d", &"a".repeat(64)] {
            assert!(valid_store_id(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            ".a",
            "_a",
            "a/b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_store_id(bad), "{bad}");
        }
    }

    #[test]
    fn secret_keys() {
        for ok in ["A", "API_KEY", "_", "0", &"K".repeat(64)] {
            assert!(valid_secret_key(ok), "{ok}");
        }
        for bad in ["", "a", "API-KEY", "A.B", "../X", "A B", &"K".repeat(65)] {
            assert!(!valid_secret_key(bad), "{bad}");
        }
    }

    #[test]
    fn store_keys_accepted() {
        for ok in [
            "a",
            "users/alice",
            "a.b-c_d/e",
            ".hidden",
            "a..b",
            "...",
            &"k".repeat(512),
            &format!("{}/{}", "a".repeat(255), "b".repeat(256)),
        ] {
            assert_eq!(check_store_key(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn store_keys_refused_with_the_reason() {
        for (bad, says) in [
            ("", "empty"),
            ("../x", "\"..\""),
            ("a/../b", "\"..\""),
            ("..", "\"..\""),
            ("a/./b", "\".\""),
            ("/a", "starts or ends"),
            ("a/", "starts or ends"),
            ("a//b", "empty segment"),
            ("a\\b", "'\\\\'"),
            ("a\0b", "U+0000"),
            ("a b", "' '"),
            ("é", "'é'"),
        ] {
            let e = check_store_key(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains("512"), "the rule is named: {e}");
        }
        let e = check_store_key(&"k".repeat(513)).unwrap_err();
        assert!(e.contains("513"), "{e}");
    }

    proptest! {
        /// Whatever is accepted stays inside its root when joined: no segment climbs, and the key
        /// is relative.
        #[test]
        fn accepted_keys_never_climb(key in "[A-Za-z0-9_./\\\\-]{0,600}") {
            if check_store_key(&key).is_ok() {
                prop_assert!(key.len() <= MAX_STORE_KEY);
                prop_assert!(!key.starts_with('/') && !key.ends_with('/'));
                prop_assert!(!key.contains('\\'));
                let p = std::path::Path::new(&key);
                prop_assert!(p.is_relative());
                for c in p.components() {
                    prop_assert!(matches!(c, std::path::Component::Normal(_)), "{:?}", c);
                }
            }
        }

        #[test]
        fn store_key_check_never_panics(key in any::<String>()) {
            let _ = check_store_key(&key);
        }

        #[test]
        fn generated_ids_match_the_patterns(id in "[a-z0-9][a-z0-9_.-]{0,63}", key in "[A-Z0-9_]{1,64}") {
            prop_assert!(valid_store_id(&id));
            prop_assert!(valid_secret_key(&key));
        }
    }
}
