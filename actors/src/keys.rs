//! The signing key for state records (approvals now; grants later). Kept apart from the records
//! it signs (`user_data/keys/`), created 0600 from the first byte, 32 random bytes.

use crate::fsutil;
use std::fs;
use std::io;
use std::path::Path;

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
