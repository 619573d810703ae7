//! The approval gate's state and checks (contract §2.2): signed approval records, manifests of
//! every file of a pack, and the stat-cached verifier that runs before every block call.
//!
//! Attacks stopped here:
//! * editing, adding or removing any file after approval (no exclusions: the original skipped
//!   `.git` and `.pyc` paths, so code could change undetected) — the verifier walks the whole pack;
//! * forging or editing an approval record to approve a pack — records are HMAC-signed and a
//!   record that fails its check counts as not approved;
//! * a FIFO or device planted in a pack to hang the hasher — only regular files are opened; other
//!   entries are recorded by type (symlinks by their target text) and never followed.

use crate::keys::{SignedRecords, SigningKey, Stored};
use rumi_domain::manifest::{Manifest, ManifestDiff};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory's entries: (name, is a directory).
type Listing = Arc<[(String, bool)]>;

/// Most files one pack may hold.
pub const MAX_PACK_FILES: usize = 20_000;
/// Deepest directory nesting inside a pack.
pub const MAX_PACK_DEPTH: usize = 32;

/// A decided state, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Blocked,
    /// Approved once; its files changed since (persisted so that changing them back does not
    /// silently re-approve).
    Modified,
}

/// The signed content of an approval record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub pack_id: String,
    pub decision: Decision,
    pub manifest: Manifest,
    pub manifest_hash: String,
    pub decided_at: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What the store found for a pack.
pub type StoredApproval = Stored<ApprovalRecord>;

/// Signed approval records under `user_data/permissions/approvals/<pack_id>.json`.
#[derive(Debug, Clone)]
pub struct ApprovalStore(SignedRecords);

impl ApprovalStore {
    pub fn new(dir: PathBuf, key: SigningKey) -> Self {
        ApprovalStore(SignedRecords::new(dir, key))
    }

    /// Loads and checks a pack's record (its own pack id, its manifest's hash).
    pub fn load(&self, pack_id: &str) -> StoredApproval {
        self.0.load(pack_id, |r: &ApprovalRecord| {
            r.pack_id == pack_id && r.manifest.hash() == r.manifest_hash
        })
    }

    /// Signs and durably writes a record.
    pub fn save(&self, record: &ApprovalRecord) -> io::Result<()> {
        self.0.save(&record.pack_id, record)
    }

    /// Removes a pack's record (uninstall).
    pub fn remove(&self, pack_id: &str) -> io::Result<()> {
        self.0.remove(pack_id)
    }
}

/// What identifies a file's content cheaply. `ctime` cannot be set by a writer, so a content
/// change that restores size and mtime is still seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
    /// The mount the entry was reached through (0 where the system cannot tell).
    mnt: u64,
}

/// A stat younger than this is never trusted: file timestamps are coarse (a clock tick of a few
/// milliseconds), so a change made in the same tick as the cached stat would not show. Git calls
/// this the "racily clean" problem; like git, we re-check such entries until they are old enough.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

impl FileStat {
    /// True when the stat is older than `window_ns` and so can be trusted as a cache key.
    fn settled(&self, window_ns: i128) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        now - self.ctime_ns.max(self.mtime_ns) > window_ns
    }

    fn of_statx(st: &libc::statx) -> FileStat {
        let ns = |t: &libc::statx_timestamp| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        FileStat {
            size: st.stx_size,
            mtime_ns: ns(&st.stx_mtime),
            ctime_ns: ns(&st.stx_ctime),
            ino: st.stx_ino,
            dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            mnt: st.stx_mnt_id,
        }
    }

    /// True when `other` is the same inode reached through the same mount (while a descriptor
    /// of it is held, no other file can take its number; a bind mount of it over itself is
    /// another mount, under which other files may be mounted).
    fn same_inode(&self, other: &FileStat) -> bool {
        self.ino == other.ino && self.dev == other.dev && self.mnt == other.mnt
    }
}

/// What kind of entry a walk found (never following a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Device,
}

impl Kind {
    fn of_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::Device,
        }
    }
}

/// One entry of a walk: its stat and kind.
#[derive(Debug, Clone, Copy)]
struct Entry {
    stat: FileStat,
    kind: Kind,
}

impl Entry {
    fn of(st: &libc::statx) -> Entry {
        Entry {
            stat: FileStat::of_statx(st),
            kind: Kind::of_mode(u32::from(st.stx_mode)),
        }
    }
}

/// How many directory descriptors a verifier that holds them ([`ManifestVerifier::holding_dirs`])
/// keeps open; deeper or further directories are statted by path.
const MAX_HELD_DIRS: usize = 8;

/// Why a manifest could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the pack has more than {MAX_PACK_FILES} files")]
    TooManyFiles,
    #[error("the pack nests directories deeper than {MAX_PACK_DEPTH}")]
    TooDeep,
    #[error("a pack file could not be read: {0}")]
    Io(String),
}

/// The content hash of one entry: regular files by their bytes, symlinks by their target text,
/// anything else by its type (never opened: a FIFO would block the hasher forever).
fn hash_entry(path: &Path, kind: Kind) -> Result<String, ManifestError> {
    if kind == Kind::File {
        let mut f = File::open(path).map_err(|e| ManifestError::Io(e.kind().to_string()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| ManifestError::Io(e.kind().to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    } else if kind == Kind::Symlink {
        let target = fs::read_link(path).map_err(|e| ManifestError::Io(e.kind().to_string()))?;
        Ok(rumi_domain::manifest::sha256_hex(
            format!("symlink:{}", target.to_string_lossy()).as_bytes(),
        ))
    } else {
        let kind = match kind {
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            _ => "device",
        };
        Ok(rumi_domain::manifest::sha256_hex(
            format!("special:{kind}").as_bytes(),
        ))
    }
}

/// Computes the manifest of every file under `root` (see [`ManifestVerifier::snapshot`]).
pub fn compute_manifest(root: &Path) -> Result<Manifest, ManifestError> {
    ManifestVerifier::snapshot(root.to_path_buf()).map(|v| v.manifest)
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyFailure {
    /// Files were added, removed or changed.
    Changed(ManifestDiff),
    /// The pack could not be read.
    Unreadable(String),
}

/// Checks a pack against its approved manifest before every block call, cheaply: only files whose
/// stat changed since they were last found good are hashed again.
#[derive(Debug)]
pub struct ManifestVerifier {
    root: PathBuf,
    manifest: Manifest,
    known_good: HashMap<String, FileStat>,
    /// Files found to differ from the manifest, by their stat then: while the stat is the same
    /// the file is still changed, and is not hashed again (a `modified` pack is verified at every
    /// scan; a huge changed file must not be hashed each time).
    known_changed: HashMap<String, FileStat>,
    /// Directory listings, valid while the directory's own stat is unchanged (adding, removing or
    /// renaming an entry changes the directory's mtime and ctime).
    /// (Shared, so a walk takes a listing without copying its names.)
    listings: HashMap<String, (FileStat, Listing)>,
    /// Open descriptors of the pack's first directories, with the stat they were opened at,
    /// when this verifier holds them (the one that runs before every block call): each entry is
    /// then statted with one lookup relative to its directory instead of a walk from `/`. A
    /// descriptor is used only while the directory's path still names its inode.
    dir_fds: HashMap<String, (OwnedFd, FileStat)>,
    hold_dirs: bool,
    /// Full hashes done (observable: tests and snapshots show the cache works).
    pub rehashed: u64,
    /// Directories read (observable, as above).
    pub dirs_read: u64,
    racy_window_ns: i128,
}

impl ManifestVerifier {
    pub fn new(root: PathBuf, manifest: Manifest) -> Self {
        ManifestVerifier {
            root,
            manifest,
            known_good: HashMap::new(),
            known_changed: HashMap::new(),
            listings: HashMap::new(),
            dir_fds: HashMap::new(),
            hold_dirs: false,
            rehashed: 0,
            dirs_read: 0,
            racy_window_ns: RACY_WINDOW_NS,
        }
    }

    /// Makes this verifier hold its first directories open (see `dir_fds`): for the verifier
    /// that runs before every block call, not for the many short-lived ones of scans.
    pub fn holding_dirs(mut self) -> Self {
        self.hold_dirs = true;
        self
    }

    /// The held descriptor of `rel_dir` when it still is the directory `stat` names (opened
    /// now if there is room), or None: the walk then stats this directory's entries by path.
    fn dir_fd(
        &mut self,
        rel_dir: &str,
        path: &Path,
        stat: &FileStat,
    ) -> Option<(OwnedFd, FileStat)> {
        if !self.hold_dirs {
            return None;
        }
        if let Some((fd, at)) = self.dir_fds.remove(rel_dir) {
            if at.same_inode(stat) {
                return Some((fd, at));
            }
        }
        if self.dir_fds.len() >= MAX_HELD_DIRS {
            return None;
        }
        // The path's last component must not be a link; the descriptor must be the directory
        // that was statted (not one swapped in since).
        let fd = crate::fsat::open_dir(path).ok()?;
        let at = FileStat::of_statx(&crate::fsat::statx_at(Some(&fd), "".as_ref()).ok()?);
        at.same_inode(stat).then_some((fd, at))
    }

    /// The racy window in tests, where waiting for real seconds is not allowed.
    #[cfg(test)]
    fn with_racy_window(mut self, ns: i128) -> Self {
        self.racy_window_ns = ns;
        self
    }

    /// Hashes every file under `root` now: the manifest to approve, and a verifier that is
    /// already warm for it (its next `verify` re-hashes only what changed since).
    pub fn snapshot(root: PathBuf) -> Result<Self, ManifestError> {
        ManifestVerifier::new(root, Manifest::default()).fill()
    }

    /// Hashes every entry into the (empty) manifest, recording settled stats.
    fn fill(self) -> Result<Self, ManifestError> {
        let mut v = self;
        for (rel, entry) in v.walk(false)? {
            let sha = hash_entry(&v.root.join(&rel), entry.kind)?;
            let stat = entry.stat;
            if stat.settled(v.racy_window_ns) {
                v.known_good.insert(rel.clone(), stat);
            }
            v.manifest.files.insert(rel, sha);
        }
        Ok(v)
    }

    /// The manifest this verifier checks against.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Lists every entry under the root with its stat (no hashing), depth-first, never following
    /// links; a directory whose stat is unchanged (and settled) is not read again. When a listed
    /// file vanished in between, the walk starts over once from fresh listings.
    fn walk(&mut self, retried: bool) -> Result<Vec<(String, Entry)>, ManifestError> {
        let mut out = Vec::new();
        // (directory, depth, its stat when its parent's descriptor already gave it)
        let mut stack: Vec<(String, usize, Option<FileStat>)> = vec![(String::new(), 0, None)];
        while let Some((rel_dir, depth, known)) = stack.pop() {
            if depth > MAX_PACK_DEPTH {
                return Err(ManifestError::TooDeep);
            }
            let dir_path = if rel_dir.is_empty() {
                self.root.clone()
            } else {
                self.root.join(&rel_dir)
            };
            let io = |e: io::Error| ManifestError::Io(format!("{rel_dir}: {}", e.kind()));
            let dir_stat = match known {
                Some(stat) => stat,
                None => FileStat::of_statx(
                    &crate::fsat::statx_at(None, dir_path.as_os_str()).map_err(io)?,
                ),
            };
            let children = match self.listings.get(&rel_dir) {
                Some((cached, children)) if *cached == dir_stat => Arc::clone(children),
                _ => {
                    self.dirs_read += 1;
                    let mut children = Vec::new();
                    for entry in fs::read_dir(&dir_path).map_err(io)? {
                        let entry = entry.map_err(io)?;
                        // d_type: no extra stat, and a symlink to a directory is not a directory.
                        let is_dir = entry.file_type().map_err(io)?.is_dir();
                        children.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
                    }
                    let children: Listing = children.into();
                    if dir_stat.settled(self.racy_window_ns) {
                        self.listings
                            .insert(rel_dir.clone(), (dir_stat, Arc::clone(&children)));
                    } else {
                        self.listings.remove(&rel_dir);
                    }
                    children
                }
            };
            let held = self.dir_fd(&rel_dir, &dir_path, &dir_stat);
            for (name, is_dir) in children.iter() {
                let is_dir = *is_dir;
                // Through the held descriptor when there is one, else by the whole path.
                let found = match &held {
                    Some((fd, _)) => crate::fsat::statx_at(Some(fd), name.as_ref()),
                    None => crate::fsat::statx_at(None, dir_path.join(name).as_os_str()),
                }
                .map(|st| Entry::of(&st));
                let rel = if rel_dir.is_empty() {
                    name.clone()
                } else {
                    format!("{rel_dir}/{name}")
                };
                // A directory that is no longer one: the listing is stale, as below.
                let found = found.and_then(|entry| match (is_dir, entry.kind) {
                    (true, kind) if kind != Kind::Dir => Err(io::ErrorKind::NotFound.into()),
                    _ => Ok(entry),
                });
                let entry = match found {
                    Ok(entry) => entry,
                    // Gone since the listing was read: the pack is changing; read everything again.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && !retried => {
                        self.listings.clear();
                        return self.walk(true);
                    }
                    Err(e) => return Err(ManifestError::Io(format!("{rel}: {}", e.kind()))),
                };
                if is_dir {
                    // A directory is walked on its stat of now (what replaced it, if anything).
                    stack.push((rel, depth + 1, Some(entry.stat)));
                    continue;
                }
                out.push((rel, entry));
                if out.len() > MAX_PACK_FILES {
                    return Err(ManifestError::TooManyFiles);
                }
            }
            if let Some(held) = held {
                self.dir_fds.insert(rel_dir, held);
            }
        }
        Ok(out)
    }

    /// Verifies the pack. `Ok` means every file is exactly as approved.
    pub fn verify(&mut self) -> Result<(), VerifyFailure> {
        let entries = self
            .walk(false)
            .map_err(|e| VerifyFailure::Unreadable(e.to_string()))?;
        let mut diff = ManifestDiff::default();
        let mut seen = 0usize;
        for (rel, entry) in &entries {
            let Some(expected) = self.manifest.files.get(rel) else {
                diff.added.push(rel.clone());
                continue;
            };
            seen += 1;
            let stat = entry.stat;
            if self.known_good.get(rel) == Some(&stat) {
                continue;
            }
            if self.known_changed.get(rel) == Some(&stat) {
                diff.changed.push(rel.clone());
                continue;
            }
            self.rehashed += 1;
            match hash_entry(&self.root.join(rel), entry.kind) {
                Ok(sha) if &sha == expected => {
                    self.known_changed.remove(rel);
                    // A stat from the last clock tick or two is not a safe key (see RACY_WINDOW_NS).
                    if stat.settled(self.racy_window_ns) {
                        self.known_good.insert(rel.clone(), stat);
                    }
                }
                Ok(_) => {
                    self.known_good.remove(rel);
                    if stat.settled(self.racy_window_ns) {
                        self.known_changed.insert(rel.clone(), stat);
                    } else {
                        self.known_changed.remove(rel);
                    }
                    diff.changed.push(rel.clone());
                }
                Err(e) => return Err(VerifyFailure::Unreadable(e.to_string())),
            }
        }
        if seen != self.manifest.files.len() {
            let present: std::collections::HashSet<&str> =
                entries.iter().map(|(r, _)| r.as_str()).collect();
            diff.removed = self
                .manifest
                .files
                .keys()
                .filter(|k| !present.contains(k.as_str()))
                .cloned()
                .collect();
        }
        if diff.is_empty() {
            Ok(())
        } else {
            diff.added.sort();
            diff.changed.sort();
            Err(VerifyFailure::Changed(diff))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("blocks")).unwrap();
        fs::write(d.path().join("ecosystem.json"), "{}").unwrap();
        fs::write(d.path().join("blocks/a.py"), "def run(i): return 1\n").unwrap();
        d
    }

    #[test]
    fn verifier_detects_edit_add_remove_and_caches() {
        let d = pack();
        let m = compute_manifest(d.path()).unwrap();
        assert_eq!(m.files.len(), 2);
        let mut v = ManifestVerifier::new(d.path().to_path_buf(), m.clone());
        v.verify().unwrap();
        v.verify().unwrap();
        assert_eq!(
            v.rehashed, 4,
            "files changed in the last two seconds are never trusted from cache"
        );

        fs::write(d.path().join("blocks/a.py"), "def run(i): return 2\n").unwrap();
        assert!(
            matches!(v.verify(), Err(VerifyFailure::Changed(ref x)) if x.changed == ["blocks/a.py"])
        );

        let d = pack();
        let mut v =
            ManifestVerifier::new(d.path().to_path_buf(), compute_manifest(d.path()).unwrap());
        fs::write(d.path().join("blocks/.hidden.pyc"), "x").unwrap();
        assert!(
            matches!(v.verify(), Err(VerifyFailure::Changed(ref x)) if x.added == ["blocks/.hidden.pyc"])
        );

        let d = pack();
        let mut v =
            ManifestVerifier::new(d.path().to_path_buf(), compute_manifest(d.path()).unwrap());
        fs::remove_file(d.path().join("blocks/a.py")).unwrap();
        assert!(
            matches!(v.verify(), Err(VerifyFailure::Changed(ref x)) if x.removed == ["blocks/a.py"])
        );
    }

    #[test]
    fn settled_entries_are_cached_and_directories_not_reread() {
        let d = pack();
        let m = compute_manifest(d.path()).unwrap();
        // A window of -1 ns: every stat counts as settled (timestamps may equal "now").
        let mut v = ManifestVerifier::new(d.path().to_path_buf(), m).with_racy_window(-1);
        v.verify().unwrap();
        let (hashed, read) = (v.rehashed, v.dirs_read);
        for _ in 0..5 {
            v.verify().unwrap();
        }
        assert_eq!(v.rehashed, hashed, "settled files are not hashed again");
        assert_eq!(
            v.dirs_read, read,
            "unchanged directories are not read again"
        );
        // Adding a file changes its directory's stat: the listing is read again and the file seen.
        fs::write(d.path().join("blocks/new.py"), "x").unwrap();
        assert!(
            matches!(v.verify(), Err(VerifyFailure::Changed(ref x)) if x.added == ["blocks/new.py"])
        );
    }

    #[test]
    fn a_changed_file_is_not_hashed_again_until_it_changes_again() {
        let d = pack();
        let m = compute_manifest(d.path()).unwrap();
        let mut v = ManifestVerifier::new(d.path().to_path_buf(), m).with_racy_window(-1);
        v.verify().unwrap();
        fs::write(d.path().join("blocks/a.py"), "def run(i): return 2\n").unwrap();
        let changed = |v: &mut ManifestVerifier| matches!(v.verify(), Err(VerifyFailure::Changed(ref x)) if x.changed == ["blocks/a.py"]);
        assert!(changed(&mut v));
        let hashed = v.rehashed;
        for _ in 0..5 {
            assert!(changed(&mut v), "still reported as changed");
        }
        assert_eq!(
            v.rehashed, hashed,
            "a changed file with the same stat is not hashed again"
        );
        // Written back as approved: its stat changes, it is hashed, and the pack verifies.
        fs::write(d.path().join("blocks/a.py"), "def run(i): return 1\n").unwrap();
        v.verify().unwrap();
        assert_eq!(v.rehashed, hashed + 1);
    }

    #[test]
    fn a_snapshot_is_the_manifest_and_a_warm_verifier() {
        let d = pack();
        let mut v = ManifestVerifier::new(d.path().to_path_buf(), Manifest::default())
            .with_racy_window(-1)
            .fill()
            .unwrap();
        assert_eq!(v.manifest(), &compute_manifest(d.path()).unwrap());
        let hashed_by_snapshot = v.rehashed;
        v.verify().unwrap();
        assert_eq!(v.rehashed, hashed_by_snapshot, "nothing is hashed twice");
        fs::write(d.path().join("blocks/a.py"), "def run(i): return 3\n").unwrap();
        assert!(
            matches!(v.verify(), Err(VerifyFailure::Changed(ref x)) if x.changed == ["blocks/a.py"])
        );
    }

    /// The verifier that runs before every call holds its directories open: swapping a held
    /// directory for another one (by rename, so no descriptor sees it), for a link, or editing a
    /// file under it is still found, and an unchanged pack still verifies from the cache.
    #[test]
    fn a_verifier_holding_directories_sees_them_swapped() {
        let d = pack();
        fs::create_dir_all(d.path().join("blocks/deep/er")).unwrap();
        fs::write(d.path().join("blocks/deep/er/b.py"), "B = 1\n").unwrap();
        let m = compute_manifest(d.path()).unwrap();
        let fresh = || {
            ManifestVerifier::new(d.path().to_path_buf(), m.clone())
                .with_racy_window(-1)
                .holding_dirs()
        };
        let mut v = fresh();
        v.verify().unwrap();
        assert_eq!(v.dir_fds.len(), 4, "the root, blocks, deep and er are held");
        let (hashed, read) = (v.rehashed, v.dirs_read);
        for _ in 0..5 {
            v.verify().unwrap();
        }
        assert_eq!(
            (v.rehashed, v.dirs_read),
            (hashed, read),
            "all from the cache"
        );

        // A file edited under a held directory.
        fs::write(d.path().join("blocks/deep/er/b.py"), "B = 2\n").unwrap();
        assert!(
            matches!(v.verify(), Err(VerifyFailure::Changed(ref x)) if x.changed == ["blocks/deep/er/b.py"])
        );
        fs::write(d.path().join("blocks/deep/er/b.py"), "B = 1\n").unwrap();
        v.verify().unwrap();

        // A held directory renamed away and a look-alike renamed into its place.
        let blocks = d.path().join("blocks");
        let other = d.path().join("other");
        fs::create_dir_all(other.join("deep/er")).unwrap();
        fs::write(other.join("a.py"), "def run(i): return 666\n").unwrap();
        fs::write(other.join("deep/er/b.py"), "B = 1\n").unwrap();
        fs::rename(&blocks, d.path().join("old")).unwrap();
        fs::rename(&other, &blocks).unwrap();
        fs::remove_dir_all(d.path().join("old")).unwrap();
        assert!(
            matches!(v.verify(), Err(VerifyFailure::Changed(ref x)) if x.changed == ["blocks/a.py"]),
            "the new directory's files are the ones checked"
        );
        fs::write(blocks.join("a.py"), "def run(i): return 1\n").unwrap();
        v.verify().unwrap();

        // A held subdirectory swapped for a link to a copy of itself: a link is never followed.
        let copy = tempfile::tempdir().unwrap();
        fs::create_dir_all(copy.path().join("er")).unwrap();
        fs::write(copy.path().join("er/b.py"), "B = 1\n").unwrap();
        fs::remove_dir_all(blocks.join("deep")).unwrap();
        std::os::unix::fs::symlink(copy.path(), blocks.join("deep")).unwrap();
        let failure = v.verify().unwrap_err();
        assert!(
            matches!(failure, VerifyFailure::Changed(ref x)
                if x.added == ["blocks/deep"] && x.removed == ["blocks/deep/er/b.py"]),
            "{failure:?}"
        );
        let mut cold = fresh();
        assert_eq!(
            cold.verify().unwrap_err(),
            failure,
            "as a verifier holding nothing finds"
        );
    }

    /// Review finding: a held directory descriptor stays on the mount it was opened on.
    /// Bind-mounting `blocks` onto itself keeps its inode and device, and a file bind-mounted
    /// over `blocks/a.py` inside that new mount is what the block host executes by path, while a
    /// lookup through the old descriptor still saw the original `a.py`: the modified pack
    /// verified. The mount id is now part of "the directory the path names". Needs root
    /// (mount); skipped otherwise.
    #[test]
    fn a_held_directory_does_not_hide_a_file_mounted_over_inside_a_bind_mount() {
        use std::process::Command;
        let d = pack();
        let m = compute_manifest(d.path()).unwrap();
        let mut v = ManifestVerifier::new(d.path().to_path_buf(), m.clone())
            .with_racy_window(-1)
            .holding_dirs();
        v.verify().unwrap();
        v.verify().unwrap();
        assert!(v.dir_fds.contains_key("blocks"));
        let evil_dir = tempfile::tempdir().unwrap();
        let evil = evil_dir.path().join("evil.py");
        fs::write(&evil, "def run(i): return 666\n").unwrap();
        let blocks = d.path().join("blocks");
        let a = blocks.join("a.py");
        let mount = |src: &Path, dst: &Path| {
            Command::new("mount")
                .arg("--bind")
                .arg(src)
                .arg(dst)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        // In a mount namespace of this test's thread alone (the mount commands are its children):
        // whatever happens, the mounts end with the thread, never on the machine.
        // SAFETY: unshare has no memory preconditions; it changes only this thread's namespace.
        let private = unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0
            && Command::new("mount")
                .args(["--make-rprivate", "/"])
                .status()
                .is_ok_and(|s| s.success());
        if !private || !mount(&blocks, &blocks) {
            // CI runs as root (its Docker tests need it): there, no mount rights is a failure.
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "mount rights are required in CI"
            );
            println!("SKIPPED: needs mount rights (root)");
            return;
        }
        let mounted_file = mount(&evil, &a);
        let held = v.verify();
        let cold = ManifestVerifier::new(d.path().to_path_buf(), m.clone())
            .with_racy_window(-1)
            .verify();
        let executed = fs::read_to_string(&a).unwrap_or_default();
        if mounted_file {
            let _ = Command::new("umount").arg(&a).status();
        }
        let _ = Command::new("umount").arg(&blocks).status();
        assert!(mounted_file, "the file bind mount failed");
        assert!(
            executed.contains("666"),
            "the path now names the other file"
        );
        assert!(
            matches!(cold, Err(VerifyFailure::Changed(ref x)) if x.changed == ["blocks/a.py"]),
            "a verifier holding nothing sees the change: {cold:?}"
        );
        assert!(
            matches!(held, Err(VerifyFailure::Changed(ref x)) if x.changed == ["blocks/a.py"]),
            "the verifier holding directories passed a pack whose blocks/a.py is another file: {held:?}"
        );
    }

    #[test]
    fn fifo_and_symlinks_are_recorded_not_followed() {
        let d = pack();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let fifo = d.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let m = compute_manifest(d.path()).unwrap();
        assert!(m.files.contains_key("link") && m.files.contains_key("pipe"));
    }

    #[test]
    fn records_are_signed() {
        let d = tempfile::tempdir().unwrap();
        let store = ApprovalStore::new(d.path().to_path_buf(), SigningKey::from_bytes(&[7u8; 32]));
        assert_eq!(store.load("p"), StoredApproval::None);
        let manifest = Manifest::default();
        let rec = ApprovalRecord {
            pack_id: "p".into(),
            decision: Decision::Approved,
            manifest_hash: manifest.hash(),
            manifest,
            decided_at: "now".into(),
            reason: None,
        };
        store.save(&rec).unwrap();
        assert_eq!(store.load("p"), StoredApproval::Valid(rec));
        let path = d.path().join("p.json");
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("approved", "blocked");
        fs::write(&path, text).unwrap();
        assert_eq!(store.load("p"), StoredApproval::Tampered);
        fs::write(&path, "not json").unwrap();
        assert_eq!(store.load("p"), StoredApproval::Tampered);
        let other = ApprovalStore::new(d.path().to_path_buf(), SigningKey::from_bytes(&[8u8; 32]));
        store
            .save(&ApprovalRecord {
                pack_id: "p".into(),
                decision: Decision::Approved,
                manifest: Manifest::default(),
                manifest_hash: Manifest::default().hash(),
                decided_at: "x".into(),
                reason: None,
            })
            .unwrap();
        assert_eq!(
            other.load("p"),
            StoredApproval::Tampered,
            "another key's signature is not valid"
        );
    }
}
