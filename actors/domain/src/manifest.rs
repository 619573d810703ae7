//! Pack manifests and record signatures (contract §2.2, invariant 6).
//!
//! A manifest maps every file of a pack (relative path, `/`-separated) to its SHA-256. Its own hash
//! is the SHA-256 of a canonical listing, so two manifests are equal exactly when their hashes are.
//! Records that grant something (approvals, later grants) are signed with HMAC-SHA256 under a key
//! kept outside the records; [`verify`] compares in constant time.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;

/// Every file of a pack and its SHA-256 (hex). Symlinks are recorded by their target text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest's own hash: SHA-256 over `path NUL sha256 LF` for every file in order.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (path, sha) in &self.files {
            h.update(path.as_bytes());
            h.update([0]);
            h.update(sha.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }

    /// How `bytes`, read now from the file at `path`, compare with the approval: `None` when they
    /// are exactly what was approved, else the difference (`added` for a file the manifest does
    /// not list, `changed` for other content). A caller that goes on to use the file uses these
    /// same bytes, so nothing can change between the check and the use.
    pub fn check_file(&self, path: &str, bytes: &[u8]) -> Option<ManifestDiff> {
        let mut diff = ManifestDiff::default();
        match self.files.get(path) {
            None => diff.added.push(path.to_string()),
            Some(sha) if *sha != sha256_hex(bytes) => diff.changed.push(path.to_string()),
            Some(_) => return None,
        }
        Some(diff)
    }

    /// What differs from `other` (added, removed, changed paths), for messages and audit.
    pub fn diff(&self, newer: &Manifest) -> ManifestDiff {
        let mut d = ManifestDiff::default();
        for (path, sha) in &newer.files {
            match self.files.get(path) {
                None => d.added.push(path.clone()),
                Some(old) if old != sha => d.changed.push(path.clone()),
                _ => {}
            }
        }
        for path in self.files.keys() {
            if !newer.files.contains_key(path) {
                d.removed.push(path.clone());
            }
        }
        d
    }
}

/// The difference between two manifests.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ManifestDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl ManifestDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// HMAC-SHA256 of `message` under `key`, hex.
pub fn sign(key: &[u8], message: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a hex signature in constant time. Malformed hex is simply not valid.
pub fn verify(key: &[u8], message: &[u8], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(files: &[(&str, &str)]) -> Manifest {
        Manifest {
            files: files
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn hash_depends_on_every_entry() {
        let a = m(&[("a.py", "11"), ("b.py", "22")]);
        assert_eq!(a.hash(), m(&[("b.py", "22"), ("a.py", "11")]).hash());
        assert_ne!(a.hash(), m(&[("a.py", "11")]).hash());
        assert_ne!(a.hash(), m(&[("a.py", "11"), ("b.py", "23")]).hash());
        assert_ne!(a.hash(), m(&[("a.py", "11"), ("c.py", "22")]).hash());
    }

    #[test]
    fn diff_lists_changes() {
        let d = m(&[("a", "1"), ("b", "2")]).diff(&m(&[("b", "3"), ("c", "4")]));
        assert_eq!(d.added, ["c"]);
        assert_eq!(d.removed, ["a"]);
        assert_eq!(d.changed, ["b"]);
    }

    #[test]
    fn a_file_is_checked_against_its_approved_hash() {
        let approved = m(&[("flows/a.flow.yaml", &sha256_hex(b"flow_id: a\n"))]);
        assert_eq!(
            approved.check_file("flows/a.flow.yaml", b"flow_id: a\n"),
            None
        );
        let edited = approved
            .check_file("flows/a.flow.yaml", b"flow_id: b\n")
            .unwrap();
        assert_eq!(edited.changed, ["flows/a.flow.yaml"]);
        let added = approved.check_file("flows/evil.flow.yaml", b"").unwrap();
        assert_eq!(added.added, ["flows/evil.flow.yaml"]);
    }

    #[test]
    fn signatures() {
        let s = sign(b"key", b"msg");
        assert!(verify(b"key", b"msg", &s));
        assert!(!verify(b"key", b"msg2", &s));
        assert!(!verify(b"other", b"msg", &s));
        assert!(!verify(b"key", b"msg", "zz"));
        assert!(!verify(b"key", b"msg", ""));
    }

    proptest! {
        /// Any change of one bit of an approved file is seen.
        #[test]
        fn any_edit_of_an_approved_file_is_seen(bytes in prop::collection::vec(any::<u8>(), 1..256), i in any::<prop::sample::Index>(), bit in 0u8..8) {
            let approved = m(&[("f", &sha256_hex(&bytes))]);
            prop_assert_eq!(approved.check_file("f", &bytes), None);
            let mut edited = bytes.clone();
            let idx = i.index(edited.len());
            edited[idx] ^= 1 << bit;
            prop_assert!(approved.check_file("f", &edited).is_some());
        }

        /// Any change of one bit of the message breaks the signature.
        #[test]
        fn tamper_detected(msg in prop::collection::vec(any::<u8>(), 1..64), i in any::<prop::sample::Index>(), bit in 0u8..8) {
            let s = sign(b"k", &msg);
            let mut t = msg.clone();
            let idx = i.index(t.len());
            t[idx] ^= 1 << bit;
            prop_assert!(!verify(b"k", &t, &s));
        }
    }
}
