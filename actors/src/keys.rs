//! The signing key for state records, kept apart from the records it signs (`user_data/keys/`),
//! created 0600 from the first byte, 32 random bytes; and [`SignedRecords`], the one way those
//! records (approvals, network grants) are written and read back.

use crate::fsutil;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// An HMAC key. Never printed: `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Loads the key from `dir/hmac.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> io::Result<SigningKey> {
        let path = dir.join("hmac.key");
        match fs::read(&path) {
            Ok(bytes) if bytes.len() >= 32 => return Ok(SigningKey(bytes)),
            Ok(_) => return Err(io::Error::other("the signing key file is too short; restore it from a backup or remove it to re-approve every pack")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fsutil::ensure_dir(dir, 0o700)?;
        let mut key = vec![0u8; 32];
        getrandom::getrandom(&mut key).map_err(io::Error::other)?;
        fsutil::write_atomic(&path, &key, 0o600)?;
        Ok(SigningKey(key))
    }

    /// A key from bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> SigningKey {
        SigningKey(bytes.to_vec())
    }

    pub fn sign(&self, message: &[u8]) -> String {
        rumi_domain::manifest::sign(&self.0, message)
    }

    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        rumi_domain::manifest::verify(&self.0, message, signature)
    }
}

/// What [`SignedRecords::load`] found for a pack.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored<T> {
    None,
    Valid(T),
    /// The file exists but its signature, shape or content check fails: it grants nothing.
    Tampered,
}

/// A record file: the record and the HMAC of its JSON.
#[derive(Serialize, Deserialize)]
struct Signed<T> {
    record: T,
    signature: String,
}

/// Signed JSON records, one file per pack (`<dir>/<pack_id>.json`, 0600, written atomically). A
/// file edited by hand, or copied from another pack, fails its check and reads as
/// [`Stored::Tampered`].
#[derive(Debug, Clone)]
pub struct SignedRecords {
    dir: PathBuf,
    key: SigningKey,
}

impl SignedRecords {
    pub fn new(dir: PathBuf, key: SigningKey) -> Self {
        SignedRecords { dir, key }
    }

    fn path(&self, pack_id: &str) -> PathBuf {
        self.dir.join(format!("{pack_id}.json"))
    }

    /// Reads and checks a pack's record; `sound` is the record's own check (its pack id, ...).
    pub fn load<T: Serialize + DeserializeOwned>(
        &self,
        pack_id: &str,
        sound: impl FnOnce(&T) -> bool,
    ) -> Stored<T> {
        let bytes = match fs::read(self.path(pack_id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Stored::None,
            Err(_) => return Stored::Tampered,
        };
        let Ok(signed) = serde_json::from_slice::<Signed<T>>(&bytes) else {
            return Stored::Tampered;
        };
        let Ok(message) = serde_json::to_vec(&signed.record) else {
            return Stored::Tampered;
        };
        if !self.key.verify(&message, &signed.signature) || !sound(&signed.record) {
            return Stored::Tampered;
        }
        Stored::Valid(signed.record)
    }

    /// Signs and durably writes a pack's record.
    pub fn save<T: Serialize>(&self, pack_id: &str, record: &T) -> io::Result<()> {
        let message = serde_json::to_vec(record).map_err(io::Error::other)?;
        let signed = Signed {
            record,
            signature: self.key.sign(&message),
        };
        let bytes = serde_json::to_vec_pretty(&signed).map_err(io::Error::other)?;
        fsutil::ensure_dir(&self.dir, 0o700)?;
        fsutil::write_atomic(&self.path(pack_id), &bytes, 0o600)
    }

    /// Removes a pack's record (absent is fine).
    pub fn remove(&self, pack_id: &str) -> io::Result<()> {
        crate::fsutil::remove_durably(&self.path(pack_id)).map(drop)
    }

    /// The pack ids that have a record file.
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".json")?;
                (!id.starts_with('.')).then(|| id.to_string())
            })
            .collect()
    }
}
