//! The files of one skill run (contract §8, §15 "Reads"): the skill's directory, read-only, and
//! the run's workspace `user_data/skill_runs/<run_id>/` whose `build/` is the only place a run
//! writes. The Sub Agents reach files only through this type.
//!
//! Paths come from a model, which is assumed hostile (it reads whatever a skill or an input
//! told it). The lexical rules (no absolute path, no `..`, no control characters) are the
//! domain's ([`rumi_domain::skill::paths`]); here the file system's own tricks are stopped:
//! * every path is walked component by component without following links, then the final
//!   path is canonicalized and must still be inside its area's root — a link inside a skill
//!   that points at `/etc/passwd` or at another skill is `path_rejected`, never read;
//! * a write creates its parent directories one by one, refusing any component that is a
//!   link (a script could have planted `build/out -> /home/...`), and lands by rename, so it
//!   replaces a planted link instead of writing through it;
//! * walks (listings, snapshots) never follow links and stop at a cap.

use super::fsat;
use rumi_domain::skill::memo::{TreeEntry, TreeWhat};
use rumi_domain::skill::paths::{Area, ToolPath};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most entries a listing or a snapshot walks.
pub const MAX_WALK_ENTRIES: usize = 20_000;
/// Deepest directory a walk descends into.
pub const MAX_WALK_DEPTH: usize = 16;
/// Most files `build/` may hold.
pub const MAX_BUILD_FILES: usize = 2000;

/// Where a tool path led.
#[derive(Debug)]
pub enum Resolve {
    Found(Resolved),
    /// Nothing there (with the path as the model wrote it).
    NotFound,
    /// The path leaves the skill root and `build/` (through a link); the reason, for the model.
    Rejected(String),
}

/// An existing file or directory inside an area.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The area's root (canonical) and the file's real path beneath it: every open walks
    /// these with `openat` and no link followed ([`super::fsat`]), so a link planted after
    /// this check makes the open fail instead of leading out.
    pub root: PathBuf,
    pub rel_real: String,
    /// The path as the run shows it: `build/x.md` or `references/a.md`, in the file's own case.
    pub shown: String,
    /// True when an exact match failed and a case-insensitive one was used.
    pub case_resolved: bool,
    pub is_dir: bool,
}

/// A file's identity for change detection: size, modification and change times, inode. The
/// change time cannot be set back by a process (utime sets mtime, and moves ctime to now), so
/// a rewrite that restores size and mtime is still seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
}

/// What a walk saw: relative path → stamp (files and links; directories are implied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub files: BTreeMap<String, Stamp>,
    /// The directories seen (for digests of a state: an empty directory is part of it).
    pub dirs: std::collections::BTreeSet<String>,
    /// The walk stopped at a cap (a change beyond it may go unseen: callers treat it as one).
    pub truncated: bool,
}

impl Snapshot {
    /// Paths new or changed in `after` compared with `self`, and paths gone.
    pub fn changes(&self, after: &Snapshot) -> (Vec<String>, Vec<String>) {
        let changed = after
            .files
            .iter()
            .filter(|(p, s)| self.files.get(*p) != Some(s))
            .map(|(p, _)| p.clone())
            .collect();
        let gone = self
            .files
            .keys()
            .filter(|p| !after.files.contains_key(*p))
            .cloned()
            .collect();
        (changed, gone)
    }
}

/// The run's two areas on disk.
#[derive(Debug, Clone)]
pub struct RunFiles {
    skill_root: PathBuf,
    run_dir: PathBuf,
    build: PathBuf,
}

impl RunFiles {
    /// Creates the workspace `<runs_root>/<run_id>/` with `build/`, `versions/` and `io/`.
    /// `skill_root` must be the skill's canonical directory.
    pub fn create(skill_root: PathBuf, runs_root: &Path, run_id: &str) -> io::Result<RunFiles> {
        crate::fsutil::ensure_dir(runs_root, 0o700)?;
        let run_dir = runs_root.join(run_id);
        fs::create_dir(&run_dir)?;
        for sub in ["build", "versions", "io"] {
            fs::create_dir(run_dir.join(sub))?;
        }
        let build = fs::canonicalize(run_dir.join("build"))?;
        Ok(RunFiles {
            skill_root,
            run_dir,
            build,
        })
    }

    /// An existing run's files, to serve its artifacts (`build` canonical; `skill_root` may
    /// be `build` itself when only `build/` is read).
    pub fn existing(skill_root: PathBuf, build: PathBuf) -> RunFiles {
        let run_dir = build
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| build.clone());
        RunFiles {
            skill_root,
            run_dir,
            build,
        }
    }

    /// The skill's directory (canonical).
    pub fn skill_root(&self) -> &Path {
        &self.skill_root
    }

    /// The run's workspace directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The run's `build/` (canonical).
    pub fn build(&self) -> &Path {
        &self.build
    }

    fn root(&self, area: Area) -> &Path {
        match area {
            Area::Skill => &self.skill_root,
            Area::Build => &self.build,
        }
    }

    /// Finds `p` inside its area: exactly, or (with `case_insensitive`) component by component
    /// ignoring letter case where the exact name is missing and exactly one entry matches.
    pub fn resolve(&self, p: &ToolPath, case_insensitive: bool) -> Resolve {
        let root = self.root(p.area);
        let mut cur = root.to_path_buf();
        let mut shown: Vec<String> = Vec::new();
        let mut case_resolved = false;
        for comp in p.rel.split('/').filter(|c| !c.is_empty()) {
            // The skill's own `build` (if it has one) is hidden by the run's.
            if p.area == Area::Skill && shown.is_empty() && comp.eq_ignore_ascii_case("build") {
                return Resolve::NotFound;
            }
            let next = cur.join(comp);
            match fs::symlink_metadata(&next) {
                Ok(_) => {
                    cur = next;
                    shown.push(comp.to_string());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && case_insensitive => {
                    match unique_case_match(&cur, comp) {
                        Some(name) => {
                            case_resolved = true;
                            cur = cur.join(&name);
                            shown.push(name);
                        }
                        None => return outside_or_missing(&cur, root),
                    }
                }
                Err(_) => return outside_or_missing(&cur, root),
            }
        }
        let real = match fs::canonicalize(&cur) {
            Ok(r) => r,
            Err(_) => {
                return if fs::symlink_metadata(&cur).is_ok() {
                    Resolve::Rejected(
                        "the path is a symbolic link that leads nowhere inside the skill root or build/".into(),
                    )
                } else {
                    Resolve::NotFound
                };
            }
        };
        let Ok(rel_real) = real
            .strip_prefix(root)
            .map(|r| r.to_string_lossy().into_owned())
        else {
            return Resolve::Rejected(
                "the path leads outside the skill root and build/ (through a symbolic link); only the skill's own files and build/ can be read".into(),
            );
        };
        let is_dir = real.is_dir();
        let root = root.to_path_buf();
        let mut text = shown.join("/");
        if p.area == Area::Build {
            text = if text.is_empty() {
                "build".into()
            } else {
                format!("build/{text}")
            };
        }
        Resolve::Found(Resolved {
            root,
            rel_real,
            shown: text,
            case_resolved,
            is_dir,
        })
    }

    /// Reads at most `cap` bytes of a resolved regular file; returns them and the file's size.
    pub fn read(&self, r: &Resolved, cap: usize) -> io::Result<(Vec<u8>, u64)> {
        let f = fsat::open_file(&r.root, &r.rel_real)?;
        let meta = f.metadata()?;
        let mut buf = Vec::with_capacity((meta.len() as usize).min(cap));
        f.take(cap as u64).read_to_end(&mut buf)?;
        Ok((buf, meta.len()))
    }

    /// Every file of the skill (not its own `build/`) and of the run's `build/` (prefixed
    /// `build/`), sorted, links never followed, at most [`MAX_WALK_ENTRIES`].
    pub fn list(&self) -> (Vec<String>, bool) {
        let skill = walk(&self.skill_root, true);
        let build = walk(&self.build, false);
        let mut files: Vec<String> = skill.files.into_keys().collect();
        files.extend(build.files.into_keys().map(|p| format!("build/{p}")));
        files.sort();
        (files, skill.truncated || build.truncated)
    }

    /// The files of `build/`.
    pub fn snapshot_build(&self) -> Snapshot {
        walk(&self.build, false)
    }

    /// Removes `build/<rel>` (never through a link: the walk to it is by descriptor).
    pub fn remove_build_file(&self, rel: &str) {
        if let Ok((dir, name)) = fsat::parent_of(&self.build, rel) {
            fsat::unlink_at(&dir, name);
        }
    }

    /// Empties `io/` (removal never follows a link planted there).
    pub fn clear_io(&self) {
        let io = self.run_dir.join("io");
        let _ = fs::remove_dir_all(&io);
        let _ = fs::create_dir(&io);
    }

    /// The bytes a script can have written: `build/` and `io/` (its HOME and TMPDIR), and
    /// whether a walk stopped at its cap (more than [`MAX_WALK_ENTRIES`] entries).
    pub fn written_bytes(&self) -> (u64, bool) {
        let (b, i) = (
            walk(&self.build, false),
            walk(&self.run_dir.join("io"), false),
        );
        let sum = |s: &Snapshot| s.files.values().map(|f| f.size).sum::<u64>();
        (sum(&b) + sum(&i), b.truncated || i.truncated)
    }

    /// The files of the skill's directory (for detecting a host script that wrote into it).
    pub fn snapshot_skill(&self) -> Snapshot {
        walk(&self.skill_root, false)
    }

    /// Writes `bytes` to `build/<rel>` (`rel` already checked by the domain's `build_path`),
    /// creating parent directories, never through a link: the walk holds each directory's
    /// descriptor, so a directory swapped for a link mid-way fails the write.
    pub fn write_build(&self, rel: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let parts: Vec<&str> = rel.split('/').collect();
        let Some((name, parents)) = parts.split_last() else {
            return Err(WriteError::Rejected("empty path".into()));
        };
        let mut dir = fsat::open_dir(&self.build)?;
        let mut walked = String::from("build");
        for part in parents {
            walked.push('/');
            walked.push_str(part);
            dir = fsat::make_subdir(&dir, part, 0o755).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EEXIST) => {
                    WriteError::Rejected(format!("{walked} exists and is not a directory"))
                }
                _ => WriteError::Io(e),
            })?;
        }
        if fsat::is_dir_at(&dir, name) {
            return Err(WriteError::Rejected(format!("build/{rel} is a directory")));
        }
        if walk(&self.build, false).files.len() >= MAX_BUILD_FILES {
            return Err(WriteError::Rejected(format!(
                "build/ holds {MAX_BUILD_FILES} files already; write fewer, larger artifacts"
            )));
        }
        let tmp = format!(".rumi-tmp-{}", crate::fsutil::unique_stamp());
        // No fsync: an artifact lives as long as its run, and a run a crash cuts is failed at
        // the next start anyway; the rename alone keeps readers from a half-written file.
        fsat::write_replace(&dir, &tmp, name, bytes, 0o644).map_err(WriteError::Io)
    }

    /// Keeps a copy of `build/<rel>` as version `name` under `versions/` (for `diff`).
    pub fn keep_version(&self, rel: &str, name: &str) -> io::Result<u64> {
        let src = match self.resolve(
            &ToolPath {
                area: Area::Build,
                rel: rel.to_string(),
            },
            false,
        ) {
            Resolve::Found(r) if !r.is_dir => r,
            _ => return Err(io::Error::new(io::ErrorKind::NotFound, "no such artifact")),
        };
        let (bytes, _) = self.read(&src, crate::skills::MAX_ARTIFACT_BYTES)?;
        // Like the artifact itself, unsynced: a version lives as long as its run.
        let dir = fsat::open_dir(&self.run_dir.join("versions"))?;
        let tmp = format!(".rumi-tmp-{}", crate::fsutil::unique_stamp());
        fsat::write_replace(&dir, &tmp, name, &bytes, 0o600)?;
        Ok(bytes.len() as u64)
    }

    /// The bytes of a kept version, if it exists.
    pub fn version(&self, name: &str) -> Option<Vec<u8>> {
        if name.contains('/') || name.starts_with('.') {
            return None;
        }
        let f = fsat::open_file(&self.run_dir.join("versions"), name).ok()?;
        let mut buf = Vec::new();
        f.take(crate::skills::MAX_ARTIFACT_BYTES as u64)
            .read_to_end(&mut buf)
            .ok()?;
        Some(buf)
    }
}

/// Most bytes hashed for one digest of a tree (the skill's files, or `build/`): past it there
/// is no digest, and the caches stay out of the run.
pub const MAX_DIGEST_BYTES: u64 = 256 * 1024 * 1024;

impl RunFiles {
    /// The skill's tree as the caches key it: each file by path and content digest, a link by
    /// its target (never followed). `None` when a walk or the byte cap stops it.
    pub fn skill_tree(&self) -> Option<Vec<TreeEntry>> {
        tree_of(&self.skill_root, true)
    }

    /// A digest of `build/` (paths and contents): the state a script starts from. `None` past
    /// the caps.
    pub fn build_digest(&self) -> Option<String> {
        tree_of(&self.build, false).map(|t| rumi_domain::skill::memo::tree_hash(&t))
    }

    /// The content of `build/<rel>` (a regular file, no link followed), up to the artifact cap.
    pub fn read_build(&self, rel: &str) -> io::Result<Vec<u8>> {
        let f = fsat::open_file(&self.build, rel)?;
        let mut buf = Vec::new();
        f.take(crate::skills::MAX_ARTIFACT_BYTES as u64 + 1)
            .read_to_end(&mut buf)?;
        if buf.len() > crate::skills::MAX_ARTIFACT_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
        }
        Ok(buf)
    }
}

/// A link in a tree: by its target when that stays inside `root` (the target is an entry of the
/// tree itself), else by its target and the content it leads to — a host script follows it, so a
/// change there must change the tree. `None` (no digest: the caches stay off) when it leads to
/// anything but a regular file, or nowhere.
fn link_entry(root: &Path, rel: &str, total: &mut u64) -> Option<TreeWhat> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::OpenOptionsExt;
    let at = root.join(rel);
    let target = fs::read_link(&at).ok()?.to_string_lossy().into_owned();
    let real = fs::canonicalize(&at).ok()?;
    if real.starts_with(root) {
        return Some(TreeWhat::Link(target));
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&real)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    *total += meta.len();
    if *total > MAX_DIGEST_BYTES {
        return None;
    }
    let mut h = Sha256::new();
    io::copy(&mut (&mut f).take(meta.len()), &mut h).ok()?;
    Some(TreeWhat::Link(format!(
        "{target} -> {}",
        hex::encode(h.finalize())
    )))
}

fn tree_of(root: &Path, hide_build: bool) -> Option<Vec<TreeEntry>> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let snap = walk(root, hide_build);
    if snap.truncated {
        return None;
    }
    let mut total = 0u64;
    let mut out = Vec::with_capacity(snap.files.len() + snap.dirs.len());
    for d in snap.dirs {
        out.push(TreeEntry {
            path: d,
            what: TreeWhat::Dir,
        });
    }
    for (rel, stamp) in snap.files {
        total += stamp.size;
        if total > MAX_DIGEST_BYTES {
            return None;
        }
        let what = match fsat::open_file(root, &rel) {
            Ok(mut f) => {
                let mode = f.metadata().ok()?.permissions().mode() & 0o7777;
                let mut h = Sha256::new();
                io::copy(&mut f, &mut h).ok()?;
                TreeWhat::File(h.finalize().into(), mode)
            }
            Err(_) => link_entry(root, &rel, &mut total)?,
        };
        out.push(TreeEntry { path: rel, what });
    }
    Some(out)
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a lookup that stopped at `reached` (the deepest existing prefix) means: if a link on
/// the way already left the area, the path is `Rejected` — whether something exists outside
/// is none of the model's business (§15) — else it is simply not there.
fn outside_or_missing(reached: &Path, root: &Path) -> Resolve {
    match fs::canonicalize(reached) {
        Ok(real) if real.starts_with(root) => Resolve::NotFound,
        Ok(_) => Resolve::Rejected(
            "the path leads outside the skill root and build/ (through a symbolic link); only the skill's own files and build/ can be read".into(),
        ),
        Err(_) => Resolve::NotFound,
    }
}

/// The one entry of `dir` whose name equals `name` ignoring case (Unicode lower case), if
/// exactly one does.
fn unique_case_match(dir: &Path, name: &str) -> Option<String> {
    let want = name.to_lowercase();
    let mut found = None;
    for (i, entry) in fs::read_dir(dir).ok()?.enumerate() {
        if i >= MAX_WALK_ENTRIES {
            return None;
        }
        let entry = entry.ok()?;
        let Some(n) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if n.to_lowercase() == want {
            if found.is_some() {
                return None; // ambiguous: README.md and readme.MD both exist
            }
            found = Some(n);
        }
    }
    found
}

/// Walks `root` without following links (a link is listed as a file, never entered), through
/// directory descriptors (see [`fsat::entries`]).
fn walk(root: &Path, hide_build: bool) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut seen = 0usize;
    if let Ok(dir) = fsat::open_dir(root) {
        walk_fd(&dir, "", 0, hide_build, &mut seen, &mut snap);
    }
    snap
}

fn walk_fd(
    dir: &std::os::fd::OwnedFd,
    prefix: &str,
    depth: usize,
    hide_build: bool,
    seen: &mut usize,
    snap: &mut Snapshot,
) {
    let Ok(mut list) = fsat::entries(dir) else {
        return;
    };
    list.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, is_dir, m) in list {
        *seen += 1;
        if *seen > MAX_WALK_ENTRIES {
            snap.truncated = true;
            return;
        }
        if hide_build && prefix.is_empty() && name == "build" {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if is_dir {
            if depth + 1 >= MAX_WALK_DEPTH {
                snap.truncated = true;
                continue;
            }
            if let Ok(sub) = fsat::open_subdir(dir, &name) {
                snap.dirs.insert(rel.clone());
                walk_fd(&sub, &rel, depth + 1, hide_build, seen, snap);
            }
        } else {
            snap.files.insert(
                rel,
                Stamp {
                    size: m.len(),
                    mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                    ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
                    ino: m.ino(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumi_domain::skill::paths::read_path;

    fn setup() -> (tempfile::TempDir, RunFiles) {
        let t = tempfile::tempdir().unwrap();
        let skill = t.path().join("skill");
        fs::create_dir_all(skill.join("references")).unwrap();
        fs::write(
            skill.join("SKILL.md"),
            "---\nname: s\ndescription: d\n---\nbody",
        )
        .unwrap();
        fs::write(skill.join("references/Guide.md"), "guide").unwrap();
        fs::write(t.path().join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret.txt"), skill.join("leak.md")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", skill.join("dangling.md")).unwrap();
        let files = RunFiles::create(
            fs::canonicalize(&skill).unwrap(),
            &t.path().join("runs"),
            "r1",
        )
        .unwrap();
        (t, files)
    }

    #[test]
    fn resolves_exactly_then_ignoring_case() {
        let (_t, f) = setup();
        let p = read_path("references/guide.md").unwrap();
        assert!(matches!(f.resolve(&p, false), Resolve::NotFound));
        match f.resolve(&p, true) {
            Resolve::Found(r) => {
                assert!(r.case_resolved);
                assert_eq!(r.shown, "references/Guide.md");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn links_out_are_rejected_never_read() {
        let (_t, f) = setup();
        for p in ["leak.md", "dangling.md"] {
            let r = f.resolve(&read_path(p).unwrap(), true);
            assert!(matches!(r, Resolve::Rejected(_)), "{p}: {r:?}");
        }
    }

    #[test]
    fn writes_never_follow_a_planted_link() {
        let (t, f) = setup();
        let outside = t.path().join("outside-dir");
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, f.build().join("out")).unwrap();
        assert!(matches!(
            f.write_build("out/x.txt", b"x"),
            Err(WriteError::Rejected(_))
        ));
        assert!(!outside.join("x.txt").exists());
        // A link planted as the file itself is replaced, its target untouched.
        std::os::unix::fs::symlink(t.path().join("secret.txt"), f.build().join("a.txt")).unwrap();
        f.write_build("a.txt", b"new").unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("secret.txt")).unwrap(),
            "outside"
        );
        assert_eq!(fs::read_to_string(f.build().join("a.txt")).unwrap(), "new");
        f.write_build("deep/er/b.md", b"b").unwrap();
        let (list, _) = f.list();
        assert!(list.contains(&"build/deep/er/b.md".to_string()), "{list:?}");
        assert!(list.contains(&"references/Guide.md".to_string()));
    }

    #[test]
    fn snapshots_see_changes() {
        let (_t, f) = setup();
        let before = f.snapshot_build();
        f.write_build("n.txt", b"1").unwrap();
        let after = f.snapshot_build();
        let (changed, gone) = before.changes(&after);
        assert_eq!(changed, vec!["n.txt".to_string()]);
        assert!(gone.is_empty());
    }
}
