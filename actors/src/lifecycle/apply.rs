//! Apply (contract §2.4): a staged import replaces the pack of the same id, or installs a new one.
//!
//! The swap is two renames on one filesystem, announced by a journal
//! (`pack_staging/.apply-<staging_id>.json`, written atomically first):
//! 1. the installed pack directory is renamed onto a fresh empty
//!    `user_data/pack_backups/<id>/<timestamp>/` (rename(2) replaces an empty directory, and a
//!    non-empty one cannot be replaced, hence no "rename over");
//! 2. the staged tree is renamed to the pack's place.
//!
//! At every instant the old tree is at its place or in its backup, and the new one staged or in
//! place: a kill -9 never loses both. At boot [`recover`] reads a leftover journal: if the pack's
//! place is empty the swap is finished (step 2), else it never started and the empty backup is
//! removed (the staged import stays, to apply again). The caller (the Registry) runs one apply at
//! a time, so two applies never interleave.

use super::import::{read_meta, ImportError};
use super::{backups_root, staging_root};
use crate::layout::Layout;
use rumi_domain::archive::{backup_name, backup_name_retry, valid_staging_id};
use rumi_domain::pack::valid_pack_id;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why an apply was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// 400
    #[error("{0}")]
    BadId(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409: a `pack_identity mismatch`, or a pack that cannot be replaced.
    #[error("{0}")]
    Conflict(String),
    /// 500: the disk failed (logged; the answer is generic).
    #[error("the apply could not be completed: {0}")]
    Storage(String),
}

fn storage(e: io::Error) -> ApplyError {
    ApplyError::Storage(e.to_string())
}

/// What an apply did (paths relative to the home).
#[derive(Debug, Clone)]
pub struct Applied {
    pub pack_id: String,
    pub path: String,
    /// The old pack's backup, when there was an old pack.
    pub backup: Option<String>,
    pub replaced: bool,
}

/// The journal of a swap in progress.
#[derive(Serialize, Deserialize)]
struct Journal {
    staging_id: String,
    pack_id: String,
    legacy: bool,
    backup: String,
}

fn journal_path(layout: &Layout, staging_id: &str) -> PathBuf {
    staging_root(layout).join(format!(".apply-{staging_id}.json"))
}

fn pack_place(layout: &Layout, pack_id: &str, legacy: bool) -> PathBuf {
    if legacy {
        layout.ecosystem().join("packs").join(pack_id)
    } else {
        layout.ecosystem().join(pack_id)
    }
}

/// Applies the staged import `staging_id` (see the module docs).
pub fn apply(layout: &Layout, staging_id: &str) -> Result<Applied, ApplyError> {
    if !valid_staging_id(staging_id) {
        return Err(ApplyError::BadId(
            "staging_id must be 16 lowercase hex digits (the staging_id POST /api/packs/import \
             answered)"
                .into(),
        ));
    }
    let staged = staging_root(layout).join(staging_id);
    if !fs::symlink_metadata(&staged)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Err(ApplyError::NotFound(format!(
            "no staged import {staging_id}: it was applied already, evicted (at most 16 are kept, \
             for a day), or never made; import the pack again"
        )));
    }
    let pack_id = staged_pack_id(&staged)?;
    let meta = read_meta(&staged, &pack_id).map_err(|e| match e {
        ImportError::Storage(s) => ApplyError::Storage(s),
        other => ApplyError::Conflict(format!("the staged import is not valid: {other}")),
    })?;
    let eco = layout.ecosystem();
    let is_dir = |p: &Path| fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false);
    if pack_id == "packs" && is_dir(&eco.join("packs")) {
        return Err(ApplyError::Conflict(
            "a pack cannot be named \"packs\" here: ecosystem/packs/ is the folder of legacy \
             packs"
                .into(),
        ));
    }
    let legacy = !is_dir(&eco.join(&pack_id)) && is_dir(&eco.join("packs").join(&pack_id));
    let place = pack_place(layout, &pack_id, legacy);
    let existing = fs::symlink_metadata(&place).is_ok();
    if existing {
        let installed = read_meta(&place, &pack_id).map_err(|e| {
            ApplyError::Conflict(format!(
                "the installed pack {pack_id:?} has no readable metadata ({e}); fix or remove \
                 {} first; nothing was changed",
                layout.display(&place)
            ))
        })?;
        if installed.pack_identity != meta.pack_identity {
            return Err(ApplyError::Conflict(format!(
                "pack_identity mismatch: the installed pack {pack_id:?} is {:?}, the staged one \
                 {:?}; a pack is only replaced by a later version of itself (uninstall it first \
                 to install another); nothing was changed",
                installed.pack_identity, meta.pack_identity
            )));
        }
    }
    let parent = place.parent().map(Path::to_path_buf).unwrap_or(eco.clone());
    crate::fsutil::ensure_dir(&parent, 0o755).map_err(storage)?;
    let backups = backups_root(layout).join(&pack_id);
    if existing {
        crate::fsutil::ensure_dir(&backups, 0o700).map_err(storage)?;
    }
    same_filesystem(&staged, &parent, existing.then_some(&backups))?;

    if !existing {
        fs::rename(&staged, &place).map_err(storage)?;
        sync_dirs(&[&parent, &staging_root(layout)]).map_err(storage)?;
        return Ok(Applied {
            pack_id,
            path: layout.display(&place),
            backup: None,
            replaced: false,
        });
    }

    let backup = fresh_backup_dir(&backups)?;
    let journal = Journal {
        staging_id: staging_id.to_string(),
        pack_id: pack_id.clone(),
        legacy,
        backup: backup
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let jpath = journal_path(layout, staging_id);
    let bytes = serde_json::to_vec(&journal).map_err(|e| ApplyError::Storage(e.to_string()))?;
    if let Err(e) = crate::fsutil::write_atomic(&jpath, &bytes, 0o600) {
        let _ = fs::remove_dir(&backup);
        return Err(storage(e));
    }
    // Step 1: the old tree to its backup (replacing the empty directory made for it).
    if let Err(e) = fs::rename(&place, &backup) {
        let _ = fs::remove_dir(&backup);
        let _ = fs::remove_file(&jpath);
        return Err(storage(e));
    }
    // Step 2: the new tree to the pack's place.
    if let Err(e) = fs::rename(&staged, &place) {
        // Put the old one back; the journal stays if even that fails, for boot to finish.
        if fs::rename(&backup, &place).is_ok() {
            let _ = fs::remove_file(&jpath);
        }
        return Err(storage(e));
    }
    sync_dirs(&[&parent, &backups, &staging_root(layout)]).map_err(storage)?;
    fs::remove_file(&jpath).map_err(storage)?;
    prune_backups(backups);
    Ok(Applied {
        pack_id,
        path: layout.display(&place),
        backup: Some(layout.display(&backup)),
        replaced: true,
    })
}

/// Most backups kept per pack: an apply beyond them deletes the oldest (each is a whole pack, up
/// to 500 MiB: unbounded, repeated applies would fill the disk).
pub const MAX_BACKUPS_PER_PACK: usize = 3;

/// Deletes a pack's backups beyond the newest [`MAX_BACKUPS_PER_PACK`] (their names sort by
/// time), on a background thread: a large tree is not deleted on the caller's thread.
fn prune_backups(backups: PathBuf) {
    let Ok(entries) = fs::read_dir(&backups) else {
        return;
    };
    let mut names: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    if names.len() <= MAX_BACKUPS_PER_PACK {
        return;
    }
    names.sort();
    names.truncate(names.len() - MAX_BACKUPS_PER_PACK);
    let _ = std::thread::Builder::new()
        .name("rumi-backups".into())
        .spawn(move || {
            for old in names {
                if let Err(e) = fs::remove_dir_all(&old) {
                    tracing::warn!(error = %e, "an old pack backup could not be deleted");
                }
            }
        });
}

/// The `pack_id` a staged tree declares (checked against the rules by `read_meta` next).
fn staged_pack_id(staged: &Path) -> Result<String, ApplyError> {
    let file = if staged.join("backend").is_dir() {
        staged.join("backend/ecosystem.json")
    } else {
        staged.join("ecosystem.json")
    };
    let text = fs::read(&file)
        .ok()
        .filter(|b| b.len() <= 1 << 20)
        .ok_or_else(|| ApplyError::Conflict("the staged import has no ecosystem.json".into()))?;
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    match v.get("pack_id").and_then(|p| p.as_str()) {
        Some(id) if valid_pack_id(id) => Ok(id.to_string()),
        _ => Err(ApplyError::Conflict(
            "the staged import's ecosystem.json has no valid pack_id".into(),
        )),
    }
}

/// A new, empty, uniquely named backup directory: the UTC time with nanoseconds, `-1`, `-2`…
/// when taken (created exclusively, so two applies never share one).
fn fresh_backup_dir(backups: &Path) -> Result<PathBuf, ApplyError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let base = backup_name(nanos);
    for n in 0..1000 {
        let name = if n == 0 {
            base.clone()
        } else {
            backup_name_retry(&base, n)
        };
        let dir = backups.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(storage(e)),
        }
    }
    Err(ApplyError::Storage("no free backup name".into()))
}

/// The renames need one filesystem: refuse (nothing changed) rather than copy half a tree.
fn same_filesystem(
    staged: &Path,
    parent: &Path,
    backups: Option<&PathBuf>,
) -> Result<(), ApplyError> {
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).map_err(storage);
    let d = dev(staged)?;
    let mut others = vec![dev(parent)?];
    if let Some(b) = backups {
        others.push(dev(b)?);
    }
    if others.iter().any(|o| *o != d) {
        return Err(ApplyError::Conflict(
            "user_data/ and ecosystem/ are on different filesystems; apply renames the pack into \
             place and needs them on one (see the operator's guide); nothing was changed"
                .into(),
        ));
    }
    Ok(())
}

fn sync_dirs(dirs: &[&Path]) -> io::Result<()> {
    for d in dirs {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Boot: finishes or undoes each swap a crash interrupted (see the module docs).
pub(super) fn recover(layout: &Layout) -> io::Result<Vec<String>> {
    let root = staging_root(layout);
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(&root) else {
        return Ok(done);
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(".apply-") && name.ends_with(".json")) {
            continue;
        }
        let journal: Option<Journal> = fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|j: &Journal| {
                valid_staging_id(&j.staging_id)
                    && valid_pack_id(&j.pack_id)
                    && !j.backup.is_empty()
                    && !j.backup.contains('/')
                    && !j.backup.starts_with('.')
            });
        if let Some(j) = journal {
            let staged = root.join(&j.staging_id);
            let place = pack_place(layout, &j.pack_id, j.legacy);
            let backup = backups_root(layout).join(&j.pack_id).join(&j.backup);
            let staged_there = fs::symlink_metadata(&staged).is_ok();
            let place_there = fs::symlink_metadata(&place).is_ok();
            if staged_there && !place_there {
                fs::rename(&staged, &place)?;
                done.push(format!(
                    "finished applying staged import {} to {}",
                    j.staging_id,
                    layout.display(&place)
                ));
            } else if staged_there && place_there {
                // The swap never started: only the empty backup directory was made.
                let _ = fs::remove_dir(&backup);
                done.push(format!(
                    "undid an interrupted apply of {} (the pack was not touched)",
                    j.staging_id
                ));
            }
        }
        fs::remove_file(e.path())?;
    }
    if !done.is_empty() {
        File::open(&root)?.sync_all()?;
    }
    Ok(done)
}
