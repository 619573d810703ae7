//! Secrets (contract §8): write-only values under `user_data/secrets/`, encrypted at rest, read
//! back only by the `secrets.get` built-in.
//!
//! * One file per key, `<KEY>.secret` (0600 from the first byte, `write_atomic`): JSON with the
//!   times and the XChaCha20-Poly1305 ciphertext of the value under a random 24-byte nonce per
//!   write; the key's name is the associated data, so a file renamed or copied to another key
//!   fails to decrypt instead of answering for it.
//! * The encryption key is `user_data/keys/secrets.key` (32 random bytes, 0600, created once),
//!   never beside the ciphertext: a copy of `secrets/` alone (a backup, a support bundle, a pack
//!   that could read it) reveals nothing. It does not protect against someone who can read the
//!   whole home as the kernel's user: they have the key too (see the README's threat model).
//! * Delete replaces the file by a tombstone (times, `deleted: true`, no ciphertext): the value
//!   is gone from the file system's view at once.
//! * `journal.jsonl`: one `{ts, action: set|delete, key}` line per change, fsynced; never a value.
//! * [`SecretValue`] prints and serializes as `[redacted]` and is zeroed on drop, so a value
//!   cannot reach a log, an audit line, an error or an API answer by accident (invariant 5).
//! * A corrupt or undecryptable file reads as absent; the log names the key, never the content.

use crate::fsutil;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use zeroize::{Zeroize, Zeroizing};

/// Largest secret value, in bytes (64 KiB).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// The key file's name in `user_data/keys/`.
pub const KEY_FILE: &str = "secrets.key";
/// The journal's name in `user_data/secrets/`.
pub const JOURNAL: &str = "journal.jsonl";
/// Domain separation of the associated data (a format change gets a new label).
const AD_LABEL: &[u8] = b"rumi.secret.v1\0";
const NONCE_LEN: usize = 24;

/// A secret's value: prints nothing, serializes to nothing, zeroed on drop.
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a plaintext (the API's `set`, before it is written).
    pub fn new(value: String) -> Self {
        SecretValue(value)
    }

    /// The plaintext, for the one reader (`secrets.get`'s reply).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for SecretValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// A secret as `GET /api/secrets` lists it: never its value.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub key: String,
    /// RFC 3339 UTC of the first set.
    pub created_at: String,
    /// RFC 3339 UTC of the last set or delete.
    pub updated_at: String,
    pub deleted: bool,
}

/// Why a secret could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("key must be 1–64 characters of A–Z, 0–9 and '_' (e.g. \"API_KEY\")")]
    InvalidKey,
    #[error("the value is {0} bytes; a secret may hold at most 65536 bytes (64 KiB)")]
    TooLarge(usize),
    #[error("no secret {0:?} is set")]
    NotFound(String),
    #[error(
        "the most secrets the kernel holds are set already; delete one before setting a new key"
    )]
    TooMany,
    #[error("the secret could not be recorded; nothing was changed")]
    Storage,
}

/// One secret's file.
#[derive(Serialize, Deserialize)]
struct SecretFile {
    v: u32,
    created_at: String,
    updated_at: String,
    deleted: bool,
    /// Hex of the 24-byte nonce (absent in a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    /// Hex of the ciphertext and its tag (absent in a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
}

/// Most secrets held at once (see [`SecretStore::set`]).
pub const MAX_SECRETS: usize = 1000;

/// The secrets directory.
pub struct SecretStore {
    dir: PathBuf,
    cipher: XChaCha20Poly1305,
    /// The journal, open for appending; its lock also serialises every change.
    journal: Mutex<File>,
    /// Told every value held, so what the kernel keeps about runs is scrubbed of it.
    redactor: std::sync::Arc<super::redact::Redactor>,
    /// Keys set and not deleted (changed under the journal's lock).
    live: AtomicUsize,
    max_secrets: usize,
}

impl SecretStore {
    /// Opens `user_data/secrets/` with the encryption key in `keys_dir` (created on first use).
    pub fn open(dir: PathBuf, keys_dir: PathBuf) -> io::Result<Self> {
        let key = load_or_create_key(&keys_dir)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key[..])
            .map_err(|_| io::Error::other("the secrets key has the wrong length"))?;
        fsutil::ensure_dir(&dir, 0o700)?;
        let (journal, repaired) = fsutil::open_log(&dir.join(JOURNAL), 0o600)?;
        if repaired {
            tracing::warn!("the secrets journal's last line was cut by a crash; it is skipped");
        }
        let store = SecretStore {
            dir,
            cipher,
            journal: Mutex::new(journal),
            redactor: std::sync::Arc::default(),
            live: AtomicUsize::new(0),
            max_secrets: MAX_SECRETS,
        };
        let live = store.list().iter().filter(|i| !i.deleted).count();
        store.live.store(live, Ordering::Relaxed);
        Ok(store)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.secret"))
    }

    /// The value of `key`, when set and not deleted. One file read and one decryption.
    pub fn get(&self, key: &str) -> Option<SecretValue> {
        if !rumi_domain::capability::keys::valid_secret_key(key) {
            return None;
        }
        let bytes = match fs::read(self.path(key)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(key, error = %e.kind(), "a secret file could not be read");
                return None;
            }
        };
        let file = self.parse(key, &bytes)?;
        if file.deleted {
            return None;
        }
        let (Some(nonce), Some(ct)) = (file.nonce, file.ciphertext) else {
            tracing::warn!(key, "a secret file has no ciphertext; it reads as absent");
            return None;
        };
        let (Ok(nonce), Ok(ct)) = (hex::decode(nonce), hex::decode(ct)) else {
            tracing::warn!(key, "a secret file is damaged; it reads as absent");
            return None;
        };
        if nonce.len() != NONCE_LEN {
            tracing::warn!(key, "a secret file is damaged; it reads as absent");
            return None;
        }
        let ad = associated_data(key);
        let plain = match self
            .cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad: &ad })
        {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(
                    key,
                    "a secret file fails its authentication (damaged, renamed, or written with \
                     another key); it reads as absent"
                );
                return None;
            }
        };
        match String::from_utf8(plain) {
            Ok(s) => Some(SecretValue(s)),
            Err(e) => {
                let _ = Zeroizing::new(e.into_bytes());
                tracing::warn!(key, "a secret's value is not UTF-8; it reads as absent");
                None
            }
        }
    }

    /// A smaller cap on the secrets held (tests).
    #[cfg(test)]
    pub fn with_max_secrets(mut self, n: usize) -> Self {
        self.max_secrets = n;
        self
    }

    /// Hands every value held to `redactor` and keeps it informed of each change.
    pub fn with_redactor(mut self, redactor: std::sync::Arc<super::redact::Redactor>) -> Self {
        for info in self.list() {
            if let Some(v) = self.get(&info.key) {
                redactor.add(v.expose());
            }
        }
        self.redactor = redactor;
        self
    }

    /// Sets `key` to `value` (encrypted, 0600, durable, journalled) before it returns.
    pub fn set(&self, key: &str, value: &str) -> Result<SecretInfo, SecretError> {
        if !rumi_domain::capability::keys::valid_secret_key(key) {
            return Err(SecretError::InvalidKey);
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge(value.len()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| SecretError::Storage)?;
        let ad = associated_data(key);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &ad,
                },
            )
            .map_err(|_| SecretError::Storage)?;
        let mut journal = self.journal.lock();
        // Every held value is scrubbed from every record and log line: their number is capped so
        // that scrub stays cheap (a replacement of an existing key is always allowed).
        let new_key = self.metadata(key).is_none_or(|f| f.deleted);
        if new_key && self.live.load(Ordering::Relaxed) >= self.max_secrets {
            return Err(SecretError::TooMany);
        }
        let now = crate::clock::now_rfc3339();
        let created_at = self
            .metadata(key)
            .map(|f| f.created_at)
            .unwrap_or_else(|| now.clone());
        let file = SecretFile {
            v: 1,
            created_at,
            updated_at: now,
            deleted: false,
            nonce: Some(hex::encode(nonce)),
            ciphertext: Some(hex::encode(ct)),
        };
        // Scrubbed from the moment it can be handed out; the replaced value stops being scrubbed
        // (the redactor holds one value per live key, so it never grows with writes).
        let old = self.get(key);
        let same = old.as_ref().is_some_and(|o| o.expose() == value);
        if !same {
            self.redactor.add(value);
        }
        self.write(key, &file, &mut journal, "set")?;
        if new_key {
            self.live.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(old) = old.filter(|_| !same) {
            self.redactor.remove(old.expose());
        }
        Ok(info(key, &file))
    }

    /// Deletes `key`: its file becomes a tombstone (no ciphertext), journalled. A key never set,
    /// or already deleted, is [`SecretError::NotFound`].
    pub fn delete(&self, key: &str) -> Result<SecretInfo, SecretError> {
        if !rumi_domain::capability::keys::valid_secret_key(key) {
            return Err(SecretError::InvalidKey);
        }
        let mut journal = self.journal.lock();
        let existing = match self.metadata(key) {
            Some(f) if !f.deleted => f,
            _ => return Err(SecretError::NotFound(key.to_string())),
        };
        let file = SecretFile {
            v: 1,
            created_at: existing.created_at,
            updated_at: crate::clock::now_rfc3339(),
            deleted: true,
            nonce: None,
            ciphertext: None,
        };
        let old = self.get(key);
        self.write(key, &file, &mut journal, "delete")?;
        self.live.fetch_sub(1, Ordering::Relaxed);
        if let Some(old) = old {
            self.redactor.remove(old.expose());
        }
        Ok(info(key, &file))
    }

    /// Every key with its times, sorted; never a value. Damaged files are left out (logged).
    pub fn list(&self) -> Vec<SecretInfo> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<SecretInfo> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = name.strip_suffix(".secret")?.to_string();
                if !rumi_domain::capability::keys::valid_secret_key(&key) {
                    return None;
                }
                let f = self.metadata(&key)?;
                Some(info(&key, &f))
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The key's file without decrypting it (times and state).
    fn metadata(&self, key: &str) -> Option<SecretFile> {
        let bytes = fs::read(self.path(key)).ok()?;
        self.parse(key, &bytes)
    }

    fn parse(&self, key: &str, bytes: &[u8]) -> Option<SecretFile> {
        match serde_json::from_slice::<SecretFile>(bytes) {
            Ok(f) if f.v == 1 => Some(f),
            _ => {
                tracing::warn!(key, "a secret file is damaged; it reads as absent");
                None
            }
        }
    }

    /// Writes the file durably, then the journal line (fsynced); the caller holds the journal.
    fn write(
        &self,
        key: &str,
        file: &SecretFile,
        journal: &mut File,
        action: &str,
    ) -> Result<(), SecretError> {
        let bytes = serde_json::to_vec(file).map_err(|_| SecretError::Storage)?;
        fsutil::write_atomic(&self.path(key), &bytes, 0o600).map_err(|e| {
            tracing::error!(key, error = %e, "a secret file could not be written");
            SecretError::Storage
        })?;
        let mut line = serde_json::to_vec(&serde_json::json!({
            "ts": file.updated_at, "action": action, "key": key,
        }))
        .map_err(|_| SecretError::Storage)?;
        line.push(b'\n');
        // The value is on disk already; a journal failure is logged, not a lost write.
        if let Err(e) = journal.write_all(&line).and_then(|_| journal.sync_data()) {
            tracing::error!(key, error = %e, "the secrets journal could not be written");
        }
        Ok(())
    }
}

fn info(key: &str, f: &SecretFile) -> SecretInfo {
    SecretInfo {
        key: key.to_string(),
        created_at: f.created_at.clone(),
        updated_at: f.updated_at.clone(),
        deleted: f.deleted,
    }
}

fn associated_data(key: &str) -> Vec<u8> {
    let mut ad = AD_LABEL.to_vec();
    ad.extend_from_slice(key.as_bytes());
    ad
}

/// Reads `keys_dir/secrets.key`, creating it (32 random bytes, 0600, atomically) on first use.
/// The home lock makes the kernel its only writer. A damaged key file stops the start: making a
/// new one would silently lose every secret.
fn load_or_create_key(keys_dir: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let path = keys_dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => return Ok(Zeroizing::new(bytes)),
        Ok(_) => {
            return Err(io::Error::other(
                "user_data/keys/secrets.key is damaged (not 32 bytes); restore it from a backup, \
                 or remove it and set every secret again",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fsutil::ensure_dir(keys_dir, 0o700)?;
    let mut key = Zeroizing::new(vec![0u8; 32]);
    getrandom::getrandom(&mut key[..]).map_err(io::Error::other)?;
    fsutil::write_atomic(&path, &key, 0o600)?;
    Ok(key)
}

#[cfg(test)]
mod tests;
