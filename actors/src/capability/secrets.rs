//! Secrets (contract §8). STUB: signatures fixed, bodies to be written.

use std::path::PathBuf;

/// A secret's value: prints nothing, serializes to nothing, zeroed on drop.
pub struct SecretValue(String);

impl SecretValue {
    /// The plaintext, for the one reader (`secrets.get`'s reply).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The secrets directory.
pub struct SecretStore {
    _dir: PathBuf,
}

impl SecretStore {
    /// Opens `user_data/secrets/` with the encryption key in `keys_dir`.
    pub fn open(dir: PathBuf, _keys_dir: PathBuf) -> std::io::Result<Self> {
        Ok(SecretStore { _dir: dir })
    }

    /// The value of `key`, when set and not deleted.
    pub fn get(&self, _key: &str) -> Option<SecretValue> {
        None
    }
}
