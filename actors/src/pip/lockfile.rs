//! Reading `requirements.lock` out of packs (contract §9 "pip"): `<pack>/requirements.lock` and
//! `<pack>/backend/requirements.lock`, opened step by step with `O_NOFOLLOW` (a symlink to another
//! pack's lock or to `/etc/...` is refused, a swap after a check changes nothing), regular files
//! only (a FIFO is refused before any read), at most [`MAX_LOCK_BYTES`] read.

use crate::capability::candidates::{open_at, open_path, pack_subdirs, read_file};
use rumi_domain::pip::{parse_lock, LineError, Pin, LOCK_FILE, MAX_LOCK_BYTES};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A lock whose every line is a pin.
#[derive(Debug, Clone)]
pub struct FoundLock {
    pub pack_id: String,
    /// `requirements.lock` or `backend/requirements.lock`.
    pub relpath: String,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    pub pins: Vec<Pin>,
}

/// A lock that cannot be a candidate: one entry per refused line (`line` 0: the file itself).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct InvalidLock {
    pub pack_id: String,
    pub relpath: String,
    pub line: usize,
    pub reason: String,
}

/// The pack directory (`ecosystem/<id>/`) of each pack, from its subdir.
pub fn pack_dirs(ecosystem: &Path) -> Vec<(String, PathBuf)> {
    pack_subdirs(ecosystem)
        .into_iter()
        .map(|(id, sub)| {
            let is_backend = sub.file_name().is_some_and(|n| n == "backend")
                && sub
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n.to_string_lossy() == id);
            let dir = if is_backend {
                sub.parent().map(Path::to_path_buf).unwrap_or(sub)
            } else {
                sub
            };
            (id, dir)
        })
        .collect()
}

/// The locks of one pack: valid ones, and every refused line of the others.
pub fn scan_pack(pack_id: &str, dir: &Path) -> (Vec<FoundLock>, Vec<InvalidLock>) {
    let mut found = Vec::new();
    let mut invalid = Vec::new();
    for relpath in [LOCK_FILE.to_string(), format!("backend/{LOCK_FILE}")] {
        match read_lock(pack_id, dir, &relpath) {
            Ok(Some(f)) => found.push(f),
            Ok(None) => {}
            Err(errors) => invalid.extend(errors),
        }
    }
    (found, invalid)
}

/// Reads one lock: `Ok(None)` when there is none, its refused lines when it is not valid.
pub fn read_lock(
    pack_id: &str,
    dir: &Path,
    relpath: &str,
) -> Result<Option<FoundLock>, Vec<InvalidLock>> {
    let refuse = |line: usize, reason: String| InvalidLock {
        pack_id: pack_id.to_string(),
        relpath: relpath.to_string(),
        line,
        reason,
    };
    let Ok(mut fd) = open_path(dir) else {
        return Ok(None);
    };
    let mut parts: Vec<&str> = relpath.split('/').collect();
    let file = parts.pop().unwrap_or(LOCK_FILE);
    for part in parts {
        match open_at(&fd, part, libc::O_DIRECTORY) {
            Ok(next) => fd = next,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(_) => {
                return Err(vec![refuse(
                    0,
                    format!("{part}/ is not a directory (a symlink is refused)"),
                )])
            }
        }
    }
    match open_at(&fd, file, libc::O_NONBLOCK) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        _ => {}
    }
    let bytes = read_file(&fd, file, MAX_LOCK_BYTES as u64).map_err(|why| vec![refuse(0, why)])?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    match parse_lock(&bytes) {
        Ok(pins) => Ok(Some(FoundLock {
            pack_id: pack_id.to_string(),
            relpath: relpath.to_string(),
            sha256,
            pins,
        })),
        Err(errors) => Err(errors
            .into_iter()
            .map(|LineError { line, reason }| refuse(line, reason))
            .collect()),
    }
}
