//! A pack's lifecycle outside approval (contract §2.4): **import** copies a folder or a zip
//! archive into `user_data/pack_staging/<staging_id>/` without running anything of it
//! (`import.rs`: staging and the folder copy; `archive.rs`: zip extraction; `writer.rs`: the one
//! place that creates staged files, with the caps), and **apply** swaps a staged tree in for the
//! pack, backing the old one up (`apply.rs`; the Registry serializes applies and rescans,
//! `registry/apply.rs`). `recover` runs at boot, before the Registry: it finishes or undoes an
//! apply a crash cut, and removes what interrupted imports left.
//!
//! The names an archive may hold and the caps are pure rules in `rumi_domain::archive`.

pub mod apply;
mod archive;
pub mod import;
mod writer;

pub use apply::{apply, Applied, ApplyError};
pub use import::{import_path, import_upload, ImportError, Staged, UploadFile};

use crate::layout::Layout;
use std::path::PathBuf;

/// `user_data/pack_staging/`: staged imports, one directory per staging id.
pub fn staging_root(layout: &Layout) -> PathBuf {
    layout.user_data().join("pack_staging")
}

/// `user_data/pack_backups/`: `<pack_id>/<timestamp>/`, one per apply over an existing pack.
pub fn backups_root(layout: &Layout) -> PathBuf {
    layout.user_data().join("pack_backups")
}

/// Boot-time repair, before the Registry scans: finishes (or undoes) applies a crash interrupted,
/// then removes interrupted imports and uploads and staged imports older than
/// [`import::STAGED_MAX_AGE`]. Answers what it did, for the log.
pub fn recover(layout: &Layout) -> std::io::Result<Vec<String>> {
    let mut done = apply::recover(layout)?;
    done.extend(import::remove_stale(layout)?);
    Ok(done)
}
