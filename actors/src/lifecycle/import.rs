//! Import (contract §2.4): a folder or a zip archive on the kernel's machine, or an archive
//! uploaded as a request body, becomes `user_data/pack_staging/<staging_id>/` — the pack's
//! directory as it would sit at `ecosystem/<pack_id>/`. Nothing of it runs.
//!
//! An import is built in `pack_staging/.partial-<id>/` and renamed to `<id>/` only once whole,
//! checked and flushed: a refused import removes its partial directory (and its upload), so
//! nothing is left behind, and a crash leaves only `.partial-*`/`.upload-*` names, which boot
//! removes. At most [`MAX_STAGED`] imports wait for an apply; a new one evicts the oldest.

use super::writer::Writer;
use super::{archive, staging_root};
use crate::layout::Layout;
use rumi_domain::archive::{entry_path, valid_staging_id, MAX_DEPTH, MAX_FILES};
use rumi_domain::pack::{self, PackMeta};
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Staged imports kept at once; a new import removes the oldest beyond this.
pub const MAX_STAGED: usize = 16;
/// Staged imports older than this are removed at boot.
pub const STAGED_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const PARTIAL: &str = ".partial-";
const UPLOAD: &str = ".upload-";

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Bad input: the rule broken and the entry (400).
    #[error("{0}")]
    Refused(String),
    /// Over a size cap (413).
    #[error("{0}")]
    TooLarge(String),
    /// The kernel's disk failed (500; the detail is logged, never answered).
    #[error("the import could not be written: {0}")]
    Storage(String),
}

impl ImportError {
    pub(super) fn storage(e: io::Error) -> Self {
        ImportError::Storage(e.to_string())
    }
}

/// A staged import: the answer of `POST /api/packs/import`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Staged {
    /// 16 lowercase hex digits: what `POST /api/packs/apply` takes.
    pub staging_id: String,
    pub pack_id: String,
    pub pack_identity: String,
    pub version: Option<String>,
    /// Every staged file, relative to the pack directory, sorted.
    pub files: Vec<String>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// What a folder import did not copy, and why (symlinks and special files).
    pub skipped: Vec<Skipped>,
}

/// A path of an imported folder that was not copied.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// A partial staging directory, removed on drop unless [`Partial::commit`]ted: whatever refuses
/// an import (an error return, a panic) leaves nothing behind.
struct Partial {
    dir: PathBuf,
    id: String,
    done: bool,
}

impl Partial {
    fn create(layout: &Layout) -> Result<Partial, ImportError> {
        let root = staging_root(layout);
        crate::fsutil::ensure_dir(&root, 0o700).map_err(ImportError::storage)?;
        evict_oldest(&root);
        for _ in 0..8 {
            let id = random_id()?;
            let dir = root.join(format!("{PARTIAL}{id}"));
            if root.join(&id).exists() {
                continue;
            }
            match fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Partial {
                        dir,
                        id,
                        done: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ImportError::storage(e)),
            }
        }
        Err(ImportError::Storage("no free staging id".into()))
    }

    /// Flushes the staged files and renames the directory to its staging id.
    fn commit(mut self) -> Result<String, ImportError> {
        let root = staging_root_of(&self.dir);
        sync_filesystem(&self.dir).map_err(ImportError::storage)?;
        fs::rename(&self.dir, root.join(&self.id)).map_err(ImportError::storage)?;
        File::open(&root)
            .and_then(|d| d.sync_all())
            .map_err(ImportError::storage)?;
        self.done = true;
        Ok(self.id.clone())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                tracing::warn!(error = %e, "could not remove a refused import's staging directory");
            }
        }
    }
}

fn staging_root_of(dir: &Path) -> PathBuf {
    dir.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// One `syncfs` for every staged file (cheaper than an fsync per file of up to 2000).
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir)?;
    // SAFETY: a valid descriptor owned by `d` for the duration of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn random_id() -> Result<String, ImportError> {
    let mut raw = [0u8; 8];
    getrandom::getrandom(&mut raw).map_err(|e| ImportError::Storage(e.to_string()))?;
    Ok(hex::encode(raw))
}

/// An upload's temporary file, `pack_staging/.upload-<random>`, removed on drop.
pub struct UploadFile {
    pub path: PathBuf,
}

impl UploadFile {
    /// Creates the file (mode 0600) for an archive arriving as a request body.
    pub fn create(layout: &Layout) -> Result<(UploadFile, File), ImportError> {
        let root = staging_root(layout);
        crate::fsutil::ensure_dir(&root, 0o700).map_err(ImportError::storage)?;
        let path = root.join(format!("{UPLOAD}{}", random_id()?));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(ImportError::storage)?;
        Ok((UploadFile { path }, f))
    }
}

impl Drop for UploadFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Imports an uploaded archive (then removes the upload).
pub fn import_upload(layout: &Layout, upload: UploadFile) -> Result<Staged, ImportError> {
    let staged = import_archive(layout, &upload.path);
    drop(upload);
    staged
}

/// Imports `path`, absolute, on the kernel's machine: a folder, or a `.zip`/`.rumipack` file.
pub fn import_path(layout: &Layout, path: &str) -> Result<Staged, ImportError> {
    let given = Path::new(path);
    if path.is_empty() || !given.is_absolute() || path.contains('\0') {
        return Err(ImportError::Refused(
            "path must be an absolute path on the kernel's machine".into(),
        ));
    }
    // The user named this path: following links in it is theirs to decide. Inside it, nothing is.
    let real = fs::canonicalize(given).map_err(|_| {
        ImportError::Refused("path does not exist or cannot be read by the kernel".into())
    })?;
    // The home's user_data holds keys, secrets and tokens: never a source.
    let user_data = fs::canonicalize(layout.user_data()).unwrap_or_else(|_| layout.user_data());
    if real.starts_with(&user_data) {
        return Err(ImportError::Refused(
            "path is inside the kernel's user_data/, which is never imported".into(),
        ));
    }
    let meta = fs::metadata(&real).map_err(ImportError::storage)?;
    if meta.is_dir() {
        return import_folder(layout, &real);
    }
    let ext = real.extension().and_then(|e| e.to_str()).unwrap_or("");
    if meta.is_file() && (ext == "zip" || ext == "rumipack") {
        return import_archive(layout, &real);
    }
    Err(ImportError::Refused(
        "path must be a folder, a .zip or a .rumipack file".into(),
    ))
}

fn import_archive(layout: &Layout, file: &Path) -> Result<Staged, ImportError> {
    let partial = Partial::create(layout)?;
    let mut w = Writer::new(partial.dir.clone());
    let top = archive::extract(file, &mut w)?;
    finish(partial, w, &top, Vec::new())
}

/// Copies a folder: regular files and directories only. A symlink is never copied (whether it
/// points inside the folder or out: a link out would read a host file into the pack; one in would
/// change meaning once moved), nor a fifo, socket or device (opening a fifo would hang the
/// import); each is listed in `skipped` with the reason.
///
/// The walk goes through open directory descriptors (`/proc/self/fd/<fd>/<name>`, each
/// directory opened `O_DIRECTORY | O_NOFOLLOW`, each file `O_NOFOLLOW | O_NONBLOCK` and checked
/// to be regular): a directory swapped for a symlink to `/etc` while the import runs is refused,
/// never followed, because no path is resolved by name again after its check.
fn import_folder(layout: &Layout, src: &Path) -> Result<Staged, ImportError> {
    let top = src
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ImportError::Refused("the folder's name is not UTF-8".into()))?
        .to_string();
    let root = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(src)
        .map_err(|_| ImportError::Refused("the folder cannot be read by the kernel".into()))?;
    let partial = Partial::create(layout)?;
    let mut w = Writer::new(partial.dir.clone());
    let mut walk = Walk {
        skipped: Vec::new(),
        seen: 0,
    };
    walk.copy(&root, &mut Vec::new(), &mut w)?;
    finish(partial, w, &top, walk.skipped)
}

/// Most entries (files, directories, skipped ones) a folder import looks at.
const MAX_FOLDER_ENTRIES: usize = 4 * MAX_FILES;

struct Walk {
    skipped: Vec<Skipped>,
    seen: usize,
}

/// `name` inside the directory open as `dir`, by its descriptor.
fn at(dir: &File, name: &str) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

impl Walk {
    fn copy(
        &mut self,
        dir: &File,
        rel: &mut Vec<String>,
        w: &mut Writer,
    ) -> Result<(), ImportError> {
        if rel.len() > MAX_DEPTH {
            return Err(ImportError::Refused(format!(
                "{:?} is nested deeper than {MAX_DEPTH} directories",
                rel.join("/")
            )));
        }
        let mut entries: Vec<_> = Vec::new();
        for e in fs::read_dir(at(dir, "")).map_err(ImportError::storage)? {
            entries.push(e.map_err(|_| {
                ImportError::Refused(format!("{:?} changed while it was imported", rel.join("/")))
            })?);
            self.seen += 1;
            // A folder of millions of entries is refused before it is all listed.
            if self.seen > MAX_FOLDER_ENTRIES {
                return Err(ImportError::Refused(format!(
                    "the folder holds more than {MAX_FOLDER_ENTRIES} entries; a pack may hold at \
                     most {MAX_FILES} files"
                )));
            }
        }
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                let shown = format!("{}/{}", rel.join("/"), name.to_string_lossy());
                return Err(ImportError::Refused(format!(
                    "{shown:?}: the name is not UTF-8"
                )));
            };
            rel.push(name.to_string());
            let shown = rel.join("/");
            entry_path(shown.as_bytes()).map_err(ImportError::Refused)?;
            let changed =
                || ImportError::Refused(format!("{shown:?} changed while it was imported"));
            // `file_type` does not follow a symlink.
            let kind = e.file_type().map_err(|_| changed())?;
            if kind.is_dir() {
                let sub = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                    .open(at(dir, name))
                    .map_err(|_| changed())?;
                w.dir(rel, &shown)?;
                self.copy(&sub, rel, w)?;
            } else if kind.is_file() {
                let mut f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(at(dir, name))
                    .map_err(|_| changed())?;
                if !f.metadata().map_err(ImportError::storage)?.is_file() {
                    return Err(changed());
                }
                w.file(rel, &mut f, None, &shown)?;
            } else {
                let reason = if kind.is_symlink() {
                    "a symlink: never copied (copy the file it points to into the pack instead)"
                } else {
                    "not a regular file or directory (fifo, socket or device): never copied"
                };
                self.skipped.push(Skipped {
                    path: shown,
                    reason: reason.into(),
                });
            }
            rel.pop();
        }
        Ok(())
    }
}

/// Reads the staged `ecosystem.json` (at the top, or in `backend/` when that exists), checks the
/// pack id against the top-level name, and commits the staging directory.
fn finish(
    partial: Partial,
    w: Writer,
    top: &str,
    skipped: Vec<Skipped>,
) -> Result<Staged, ImportError> {
    let meta = read_meta(w.root(), top)?;
    let staging_id = partial.commit()?;
    let mut files = w.files;
    files.sort();
    Ok(Staged {
        staging_id,
        pack_id: meta.pack_id,
        pack_identity: meta.pack_identity,
        version: meta.version,
        files,
        bytes: w.bytes,
        skipped,
    })
}

/// The metadata of the pack directory `dir`, whose name must be the pack id `top`.
pub(super) fn read_meta(dir: &Path, top: &str) -> Result<PackMeta, ImportError> {
    let (sub, shown) = if fs::symlink_metadata(dir.join("backend"))
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        (dir.join("backend"), "backend/ecosystem.json")
    } else {
        (dir.to_path_buf(), "ecosystem.json")
    };
    let text = match fs::symlink_metadata(sub.join("ecosystem.json")) {
        Ok(m) if m.is_file() && m.len() <= 1 << 20 => {
            fs::read_to_string(sub.join("ecosystem.json"))
                .map_err(|_| ImportError::Refused(format!("{shown} is not UTF-8 text")))?
        }
        Ok(_) => {
            return Err(ImportError::Refused(format!(
                "{shown} is not a file of at most 1 MiB"
            )))
        }
        Err(_) => {
            return Err(ImportError::Refused(format!(
                "the pack has no {shown} (a pack's ecosystem.json sits at its top, or in backend/ \
                 when that folder exists)"
            )))
        }
    };
    if !pack::valid_pack_id(top) {
        return Err(ImportError::Refused(format!(
            "the top-level directory {top:?} is not a valid pack id; name it after the pack's \
             pack_id"
        )));
    }
    pack::parse_ecosystem_json(&text, top).map_err(|e| {
        ImportError::Refused(format!(
            "{shown}: {e} (the top-level directory must be named after pack_id)"
        ))
    })
}

/// Removes the oldest staged imports so that a new one makes at most [`MAX_STAGED`].
fn evict_oldest(root: &Path) {
    let mut staged: Vec<(i64, PathBuf)> = staged_dirs(root)
        .into_iter()
        .map(|(p, m)| (m.mtime(), p))
        .collect();
    if staged.len() < MAX_STAGED {
        return;
    }
    staged.sort();
    let excess = staged.len() + 1 - MAX_STAGED;
    for (_, p) in staged.into_iter().take(excess) {
        // Renamed away first, atomically: an apply renaming the same directory into the
        // ecosystem either wins (this rename fails and nothing is removed) or finds it gone (404)
        // — never a tree half removed under the pack's name.
        let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let doomed = root.join(format!("{PARTIAL}evicted-{name}"));
        if fs::rename(&p, &doomed).is_ok() {
            tracing::info!(staging_id = %name, "removed the oldest staged import (at most {MAX_STAGED} are kept)");
            let _ = fs::remove_dir_all(doomed);
        }
    }
}

fn staged_dirs(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(valid_staging_id))
        .filter_map(|e| {
            let m = fs::symlink_metadata(e.path()).ok()?;
            m.is_dir().then(|| (e.path(), m))
        })
        .collect()
}

/// Boot: removes partial imports and uploads (nothing is importing yet) and staged imports older
/// than [`STAGED_MAX_AGE`].
pub(super) fn remove_stale(layout: &Layout) -> io::Result<Vec<String>> {
    let root = staging_root(layout);
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(&root) else {
        return Ok(done);
    };
    let now = SystemTime::now();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(e.path())?;
        let interrupted = name.starts_with(PARTIAL) || name.starts_with(UPLOAD);
        let old = valid_staging_id(&name)
            && m.modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STAGED_MAX_AGE);
        if !(interrupted || old) {
            continue;
        }
        if m.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
        done.push(format!("removed user_data/pack_staging/{name}"));
    }
    Ok(done)
}
