//! Stores (contract §8): named key-value stores whose values are JSON files
//! `<root>/<key>.json`, written atomically; the index `user_data/stores/index.json` (written
//! atomically) names each store and its root. The built-ins `store.get|set|delete|list` call
//! [`Stores::get`], [`Stores::set`], [`Stores::delete`] and [`Stores::list_keys`].
//!
//! Attacks stopped here:
//! * a store root outside `user_data/stores/` (the original accepted any path): `root_path` is
//!   resolved — every existing component's symlinks followed (the longest existing prefix is
//!   canonicalized), the rest refused if it holds `..` — and must land strictly *inside*
//!   `user_data/stores/` (equal is refused: the root would hold `index.json`, and every other
//!   store); escapes by `..` or by a symlink are refused;
//! * one store reading another's values: roots may not nest (a root inside another store's root,
//!   or holding one, is refused), so no key of one store names a file of another;
//! * a key climbing out of its root: keys are checked by
//!   [`rumi_domain::capability::keys::check_store_key`], and the file is reached from the root's
//!   cached descriptor without following any symlink planted inside the root ([`dirfd`]);
//! * slow calls: the resolved root is opened once (at creation or start) and kept; a `get` is one
//!   `openat` + read + parse for a flat key, with no index read, no walk and no canonicalize.

mod dirfd;

use crate::fsutil;
use parking_lot::{Mutex, RwLock};
use rumi_domain::capability::keys::{check_store_key, valid_store_id, MAX_STORE_KEY};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The most keys `store.list` answers (then `truncated: true`).
pub const MAX_LIST_KEYS: usize = 10_000;
/// `max_value_bytes` when the grant does not set it (1 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1024 * 1024;
/// The index's file name in `user_data/stores/`.
pub const INDEX: &str = "index.json";
/// The suffix of a value file.
const SUFFIX: &str = ".json";

/// Why a store operation failed; [`StoreError::error_type`] is the §7.1 `error_type`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bad input (an id, a key, a root path, a value): 400 / `validation_error`.
    #[error("{0}")]
    Validation(String),
    #[error("no store {0:?} exists (create it with POST /api/stores/create)")]
    StoreNotFound(String),
    #[error("store {store:?} has no key {key:?}")]
    KeyNotFound { store: String, key: String },
    #[error("the value is {size} bytes; this grant allows at most {max} bytes (max_value_bytes)")]
    TooLarge { size: usize, max: u64 },
    /// A store with this id exists (409).
    #[error("a store {0:?} exists already; choose another store_id")]
    Conflict(String),
    #[error("the store could not be read or written; see the kernel log")]
    Storage,
}

impl StoreError {
    /// The `error_type` a built-in answers with.
    pub fn error_type(&self) -> &'static str {
        match self {
            StoreError::Validation(_) => "validation_error",
            StoreError::StoreNotFound(_) => "store_not_found",
            StoreError::KeyNotFound { .. } => "key_not_found",
            StoreError::TooLarge { .. } => "payload_too_large",
            StoreError::Conflict(_) => "conflict",
            StoreError::Storage => "storage_error",
        }
    }
}

/// A store as `GET /api/stores` lists it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreInfo {
    pub store_id: String,
    /// The resolved root, relative to the home (e.g. `user_data/stores/notes`).
    pub root_path: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// False when the root could not be opened inside `user_data/stores/` at start (moved,
    /// replaced by a symlink): the store answers `store_not_found` until it is repaired.
    pub available: bool,
}

/// The index file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    stores: Vec<IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    store_id: String,
    /// The resolved root relative to `user_data/stores/` (never absolute, never `..`).
    root: String,
    created_at: String,
}

/// An open store: its root's descriptor, opened once.
struct Open {
    entry: IndexEntry,
    root: Option<OwnedFd>,
}

/// The stores: an index (`user_data/stores/index.json`) and each store's root.
pub struct Stores {
    /// `user_data/stores/`, canonical.
    dir: PathBuf,
    /// The home, canonical (for showing roots relative to it).
    home: PathBuf,
    stores: RwLock<HashMap<String, Arc<Open>>>,
    /// Serialises creations (the index's read-modify-write).
    writes: Mutex<()>,
}

impl Stores {
    /// Opens `user_data/stores/` (the store roots must resolve inside it).
    pub fn open(dir: PathBuf, home: PathBuf) -> io::Result<Self> {
        fsutil::ensure_dir(&dir, 0o700)?;
        let dir = dir.canonicalize()?;
        let home = home.canonicalize().unwrap_or(home);
        let index: Index = match std::fs::read(dir.join(INDEX)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
                io::Error::other(
                    "user_data/stores/index.json is damaged; restore it from a backup (the \
                     values under each store root are intact)",
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(e),
        };
        let mut stores = HashMap::new();
        for entry in index.stores {
            let root = open_existing_root(&dir, &entry.root);
            if root.is_none() {
                tracing::warn!(store_id = %entry.store_id, "a store's root is missing or no longer inside user_data/stores/; the store is unavailable");
            }
            stores.insert(entry.store_id.clone(), Arc::new(Open { entry, root }));
        }
        Ok(Stores {
            dir,
            home,
            stores: RwLock::new(stores),
            writes: Mutex::new(()),
        })
    }

    /// Creates store `store_id` at `root_path` (relative to the home, or absolute), which must
    /// resolve strictly inside `user_data/stores/` and not overlap another store's root. The
    /// root is created (0700) when missing. Durable before it returns.
    pub fn create(&self, store_id: &str, root_path: &str) -> Result<StoreInfo, StoreError> {
        if !valid_store_id(store_id) {
            return Err(StoreError::Validation(
                "store_id must be 1–64 characters of a–z, 0–9, '_', '.', '-', starting with a \
                 letter or digit (e.g. \"notes\")"
                    .into(),
            ));
        }
        let _w = self.writes.lock();
        if self.stores.read().contains_key(store_id) {
            return Err(StoreError::Conflict(store_id.to_string()));
        }
        let rel = self.resolve_new_root(root_path)?;
        {
            let stores = self.stores.read();
            for other in stores.values() {
                if overlaps(&rel, Path::new(&other.entry.root)) {
                    return Err(StoreError::Validation(format!(
                        "root_path overlaps the root of store {:?}; give each store a \
                         directory of its own (e.g. user_data/stores/{store_id})",
                        other.entry.store_id
                    )));
                }
            }
        }
        let root = self.make_root(&rel)?;
        let entry = IndexEntry {
            store_id: store_id.to_string(),
            root: rel.to_string_lossy().into_owned(),
            created_at: crate::clock::now_rfc3339(),
        };
        let mut index = Index {
            stores: self
                .stores
                .read()
                .values()
                .map(|o| o.entry.clone())
                .collect(),
        };
        index.stores.push(entry.clone());
        index.stores.sort_by(|a, b| a.store_id.cmp(&b.store_id));
        let bytes = serde_json::to_vec_pretty(&index).map_err(|_| StoreError::Storage)?;
        fsutil::write_atomic(&self.dir.join(INDEX), &bytes, 0o600).map_err(|e| {
            tracing::error!(error = %e, "the store index could not be written");
            StoreError::Storage
        })?;
        let open = Arc::new(Open {
            entry,
            root: Some(root),
        });
        let info = self.info(&open);
        self.stores.write().insert(store_id.to_string(), open);
        Ok(info)
    }

    /// Every store, sorted by id.
    pub fn list(&self) -> Vec<StoreInfo> {
        let mut out: Vec<StoreInfo> = self.stores.read().values().map(|o| self.info(o)).collect();
        out.sort_by(|a, b| a.store_id.cmp(&b.store_id));
        out
    }

    /// Whether `store_id` exists.
    pub fn exists(&self, store_id: &str) -> bool {
        self.stores.read().contains_key(store_id)
    }

    /// The value at `key`.
    pub fn get(&self, store_id: &str, key: &str) -> Result<Value, StoreError> {
        let store = self.store(store_id)?;
        let (dirs, file) = split_key(key)?;
        let root = store.root.as_ref().ok_or_else(|| not_found(store_id))?;
        let missing = || StoreError::KeyNotFound {
            store: store_id.to_string(),
            key: key.to_string(),
        };
        let read = |dir: std::os::fd::BorrowedFd<'_>| dirfd::read_file_at(dir, &file);
        let bytes = if dirs.is_empty() {
            read(root.as_fd())
        } else {
            walk(root, &dirs, false).and_then(|d| read(d.as_fd()))
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => missing(),
            _ if dirfd::is_link_refusal(&e) => missing(),
            _ => storage(store_id, &e),
        })?;
        serde_json::from_slice(&bytes).map_err(|_| {
            tracing::error!(store_id, "a store value file is not JSON");
            StoreError::Storage
        })
    }

    /// Sets `key` to `value` (at most `max_bytes` of JSON), durably, creating the key's
    /// directories.
    pub fn set(
        &self,
        store_id: &str,
        key: &str,
        value: &Value,
        max_bytes: u64,
    ) -> Result<(), StoreError> {
        let store = self.store(store_id)?;
        let (dirs, file) = split_key(key)?;
        let bytes = serde_json::to_vec(value).map_err(|_| StoreError::Storage)?;
        if bytes.len() as u64 > max_bytes {
            return Err(StoreError::TooLarge {
                size: bytes.len(),
                max: max_bytes,
            });
        }
        let root = store.root.as_ref().ok_or_else(|| not_found(store_id))?;
        let result = if dirs.is_empty() {
            dirfd::write_file_at(root.as_fd(), &file, &bytes)
        } else {
            walk(root, &dirs, true).and_then(|d| dirfd::write_file_at(d.as_fd(), &file, &bytes))
        };
        result.map_err(|e| {
            if dirfd::is_link_refusal(&e) {
                StoreError::Validation(format!(
                    "a part of key {key:?} is not a directory in the store (a value or a link is \
                     in the way)"
                ))
            } else {
                storage(store_id, &e)
            }
        })
    }

    /// Removes `key` (absent → [`StoreError::KeyNotFound`]), durably.
    pub fn delete(&self, store_id: &str, key: &str) -> Result<(), StoreError> {
        let store = self.store(store_id)?;
        let (dirs, file) = split_key(key)?;
        let root = store.root.as_ref().ok_or_else(|| not_found(store_id))?;
        let result = if dirs.is_empty() {
            dirfd::remove_file_at(root.as_fd(), &file)
        } else {
            walk(root, &dirs, false).and_then(|d| dirfd::remove_file_at(d.as_fd(), &file))
        };
        result.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EISDIR) => {
                StoreError::KeyNotFound {
                    store: store_id.to_string(),
                    key: key.to_string(),
                }
            }
            _ => storage(store_id, &e),
        })
    }

    /// The keys starting with `prefix`, sorted, at most [`MAX_LIST_KEYS`]; the flag says whether
    /// more were left out. Symlinks and files that are not values are skipped.
    pub fn list_keys(
        &self,
        store_id: &str,
        prefix: Option<&str>,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let store = self.store(store_id)?;
        let prefix = prefix.unwrap_or("");
        if prefix.len() > MAX_STORE_KEY
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
        {
            return Err(StoreError::Validation(
                "prefix must be at most 512 characters of letters, digits, '_', '.', '-' and '/'"
                    .into(),
            ));
        }
        let root = store.root.as_ref().ok_or_else(|| not_found(store_id))?;
        let root = root.try_clone().map_err(|e| storage(store_id, &e))?;
        let mut keys = Vec::new();
        // Depth-first over directories by descriptor; a directory is entered only when a key
        // under it could start with the prefix.
        let mut stack: Vec<(OwnedFd, String)> = vec![(root, String::new())];
        while let Some((dir, at)) = stack.pop() {
            let entries = dirfd::entries(dir.as_fd()).map_err(|e| storage(store_id, &e))?;
            for (name, kind) in entries {
                match kind {
                    dirfd::Kind::File => {
                        let Some(stem) = name.strip_suffix(SUFFIX) else {
                            continue;
                        };
                        let key = format!("{at}{stem}");
                        if key.starts_with(prefix) && check_store_key(&key).is_ok() {
                            keys.push(key);
                        }
                    }
                    dirfd::Kind::Dir => {
                        // `<piece>+` continues the segment; any other directory ends it.
                        let sub = match name.strip_suffix(CONTINUES) {
                            Some(piece) if piece.len() == PIECE => format!("{at}{piece}"),
                            Some(_) => continue,
                            None => format!("{at}{name}/"),
                        };
                        let could = sub.starts_with(prefix) || prefix.starts_with(&sub);
                        let plain = name.trim_end_matches(CONTINUES);
                        if could && sub.len() <= MAX_STORE_KEY && check_store_key(plain).is_ok() {
                            match dirfd::open_dir_at(dir.as_fd(), &name, false) {
                                Ok(fd) => stack.push((fd, sub)),
                                Err(e) if dirfd::is_link_refusal(&e) => {}
                                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                                Err(e) => return Err(storage(store_id, &e)),
                            }
                        }
                    }
                    dirfd::Kind::Other => {}
                }
            }
        }
        keys.sort();
        let truncated = keys.len() > MAX_LIST_KEYS;
        keys.truncate(MAX_LIST_KEYS);
        Ok((keys, truncated))
    }

    fn store(&self, store_id: &str) -> Result<Arc<Open>, StoreError> {
        self.stores
            .read()
            .get(store_id)
            .cloned()
            .ok_or_else(|| not_found(store_id))
    }

    fn info(&self, open: &Open) -> StoreInfo {
        let abs = self.dir.join(&open.entry.root);
        let shown = abs
            .strip_prefix(&self.home)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("user_data/stores/{}", open.entry.root));
        StoreInfo {
            store_id: open.entry.store_id.clone(),
            root_path: shown,
            created_at: open.entry.created_at.clone(),
            available: open.root.is_some(),
        }
    }

    /// Resolves a new root to a path relative to `user_data/stores/` (see the module docs).
    fn resolve_new_root(&self, root_path: &str) -> Result<PathBuf, StoreError> {
        let refuse = |why: &str| {
            StoreError::Validation(format!(
                "root_path {why}; it must resolve to a directory inside user_data/stores/ \
                 (e.g. \"user_data/stores/notes\")"
            ))
        };
        if root_path.is_empty() || root_path.len() > 4096 || root_path.contains('\0') {
            return Err(refuse("is empty, too long or holds a NUL"));
        }
        let given = Path::new(root_path);
        let full = if given.is_absolute() {
            given.to_path_buf()
        } else {
            self.home.join(given)
        };
        // The longest prefix that exists (a dangling symlink exists too, and fails below).
        let mut existing = full.clone();
        let mut rest: Vec<std::ffi::OsString> = Vec::new();
        while std::fs::symlink_metadata(&existing).is_err() {
            match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                // `..` at the end of a missing path, or the root: nothing left to strip.
                _ => return Err(refuse("holds '..' in a part that does not exist")),
            }
        }
        // `file_name()` skips a trailing `..`/`.`: check the missing part by its components.
        let missing_part: PathBuf = rest.iter().rev().collect();
        if !missing_part
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
            || full.components().count() != existing.components().count() + rest.len()
        {
            return Err(refuse("holds '..' or '.' in a part that does not exist"));
        }
        let resolved = existing
            .canonicalize()
            .map_err(|_| refuse("could not be resolved (a dangling link?)"))?
            .join(&missing_part);
        match resolved.strip_prefix(&self.dir) {
            Ok(rel) if rel.as_os_str().is_empty() => {
                Err(refuse("is user_data/stores/ itself (it holds the index)"))
            }
            Ok(rel) => {
                if rel.components().next().is_some_and(|c| {
                    c.as_os_str()
                        .to_str()
                        .is_some_and(|s| s == INDEX || fsutil::is_temp_name(s))
                }) {
                    return Err(refuse("names the index"));
                }
                Ok(rel.to_path_buf())
            }
            Err(_) => Err(refuse(
                "resolves outside user_data/stores/ (by '..' or a link)",
            )),
        }
    }

    /// Creates the root's missing directories from `user_data/stores/` by descriptor (never
    /// following a link, so a link swapped in after the check cannot redirect it) and opens it.
    fn make_root(&self, rel: &Path) -> Result<OwnedFd, StoreError> {
        let refuse = || {
            StoreError::Validation(
                "root_path must be a directory inside user_data/stores/ (a file or a link is in \
                 the way)"
                    .into(),
            )
        };
        let mut fd = dirfd::open_root(&self.dir).map_err(|e| {
            tracing::error!(error = %e, "user_data/stores/ could not be opened");
            StoreError::Storage
        })?;
        for c in rel.components() {
            let Some(name) = c.as_os_str().to_str() else {
                return Err(refuse());
            };
            fd = dirfd::open_dir_at(fd.as_fd(), name, true).map_err(|e| {
                if dirfd::is_link_refusal(&e) || e.raw_os_error() == Some(libc::EEXIST) {
                    refuse()
                } else {
                    tracing::error!(error = %e, "a store root could not be created");
                    StoreError::Storage
                }
            })?;
        }
        Ok(fd)
    }
}

/// Opens an indexed root by descriptor from `dir` (no link followed), recreating it when it
/// was removed. `None` when it cannot be opened inside `dir`.
fn open_existing_root(dir: &Path, rel: &str) -> Option<OwnedFd> {
    let rel = Path::new(rel);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut fd = dirfd::open_root(dir).ok()?;
    for c in rel.components() {
        fd = dirfd::open_dir_at(fd.as_fd(), c.as_os_str().to_str()?, true).ok()?;
    }
    Some(fd)
}

/// Whether one root is the other or inside it.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Longest piece of a key segment on disk. A segment may be 512 characters but a file name at
/// most 255 bytes, and the atomic write's temporary name adds 24 to the value's name: longer
/// segments are cut into pieces, every piece but the last a directory named `<piece>+` (`+`
/// cannot appear in a key, so no other key maps to the same files).
const PIECE: usize = 200;
/// The mark of a directory that continues a segment.
const CONTINUES: char = '+';

/// A checked key's directories and its file name (`a/b/c` → `[a, b]`, `c.json`; long segments
/// cut into pieces, see [`PIECE`]).
fn split_key(key: &str) -> Result<(Vec<String>, String), StoreError> {
    check_store_key(key).map_err(StoreError::Validation)?;
    let mut dirs = Vec::new();
    let mut segments = key.split('/').peekable();
    let mut file = String::new();
    while let Some(seg) = segments.next() {
        // Keys are ASCII (checked above): cutting by bytes is cutting by characters.
        let mut rest = seg;
        while rest.len() > PIECE {
            let mut cut = PIECE;
            // Never leave a remainder that is `.` or `..`: as a directory name it would mean this
            // directory or its parent (the key `A…A../victim` would alias the key `victim`).
            if matches!(&rest[cut..], "." | "..") {
                cut -= 2;
            }
            dirs.push(format!("{}{CONTINUES}", &rest[..cut]));
            rest = &rest[cut..];
        }
        if segments.peek().is_some() {
            dirs.push(rest.to_string());
        } else {
            file = format!("{rest}{SUFFIX}");
        }
    }
    Ok((dirs, file))
}

/// Opens the key's directories below `root`, one `openat(O_NOFOLLOW)` each.
fn walk(root: &OwnedFd, dirs: &[String], create: bool) -> io::Result<OwnedFd> {
    let mut fd = dirfd::open_dir_at(root.as_fd(), &dirs[0], create)?;
    for d in &dirs[1..] {
        fd = dirfd::open_dir_at(fd.as_fd(), d, create)?;
    }
    Ok(fd)
}

#[cfg(test)]
#[test]
fn a_cut_never_leaves_a_dot_directory() {
    for tail in [".", ".."] {
        let key = format!("{}{tail}/victim", "A".repeat(PIECE));
        let (dirs, file) = split_key(&key).unwrap();
        assert!(dirs.iter().all(|d| d != "." && d != ".."), "{dirs:?}");
        assert_eq!(file, format!("victim{SUFFIX}"));
        assert_eq!(
            dirs.concat().replace(CONTINUES, ""),
            format!("{}{tail}", "A".repeat(PIECE))
        );
    }
}

fn not_found(store_id: &str) -> StoreError {
    StoreError::StoreNotFound(store_id.to_string())
}

fn storage(store_id: &str, e: &io::Error) -> StoreError {
    tracing::error!(store_id, error = %e, "a store operation failed");
    StoreError::Storage
}

#[cfg(test)]
mod tests;
