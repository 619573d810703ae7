//! Stores (contract §8). STUB: signatures fixed, bodies to be written.

use std::path::PathBuf;

/// The stores: an index (`user_data/stores/index.json`) and each store's root.
pub struct Stores {
    _dir: PathBuf,
}

impl Stores {
    /// Opens `user_data/stores/` (the store roots must resolve inside it).
    pub fn open(dir: PathBuf, _home: PathBuf) -> std::io::Result<Self> {
        Ok(Stores { _dir: dir })
    }
}
