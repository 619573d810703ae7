//! Reading third-party handler candidates out of packs (contract §7.2):
//! `<pack subdir>/share/capability_handlers/<slug>/{handler.json, handler.py}`.
//!
//! Attacks stopped here: a symlink anywhere on the way (`share`, `capability_handlers`, the slug
//! directory, either file) pointing at another pack's handler or at `/etc/...` — every step is
//! opened relative to the previous one with `O_NOFOLLOW`, so a link is refused, and a swap after
//! a check changes nothing; a FIFO or device named `handler.py` (not a regular file: refused
//! before any read, opened non-blocking); a huge file or thousands of slugs (bounded:
//! [`MAX_MANIFEST_BYTES`], [`MAX_SOURCE_BYTES`], [`MAX_SLUGS`]); a `handler.json` claiming a
//! built-in permission or naming another entrypoint file (refused by the domain's parser and
//! [`super::builtins::is_builtin`]).

use rumi_domain::capability::candidate::{
    self, parse_manifest, HandlerManifest, HANDLER_FILE, MANIFEST_FILE,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Largest `handler.json` read.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Largest `handler.py` read.
pub const MAX_SOURCE_BYTES: u64 = 1024 * 1024;
/// Most slugs looked at per pack.
pub const MAX_SLUGS: usize = 100;
/// Most directory entries whose names are held while choosing the slugs to read.
const MAX_LISTED: usize = 4096;
/// Where candidates live under a pack subdir.
pub const CANDIDATES_DIR: [&str; 2] = ["share", "capability_handlers"];

/// A valid candidate, with the bytes that were hashed.
#[derive(Debug, Clone)]
pub struct Found {
    pub pack_id: String,
    pub slug: String,
    pub manifest: HandlerManifest,
    pub manifest_bytes: Vec<u8>,
    /// `handler.py`, UTF-8.
    pub source: String,
    /// SHA-256 of `handler.py`, lowercase hex.
    pub sha256: String,
}

impl Found {
    pub fn candidate_key(&self) -> String {
        candidate::candidate_key(
            &self.pack_id,
            &self.slug,
            &self.manifest.handler_id,
            &self.sha256,
        )
    }
}

/// A candidate that cannot be offered, and why (listed by the scan under `invalid`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Invalid {
    pub pack_id: String,
    pub slug: String,
    pub reason: String,
}

/// Every pack directory with its subdir (where `ecosystem.json` is): `ecosystem/<id>/` first,
/// then the legacy `ecosystem/packs/<id>/` (the first wins, as in the Registry's scan).
pub fn pack_subdirs(ecosystem: &Path) -> Vec<(String, PathBuf)> {
    let mut found: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for (base, legacy) in [
        (ecosystem.to_path_buf(), false),
        (ecosystem.join("packs"), true),
    ] {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        let mut names: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        names.sort();
        for (name, path) in names {
            if !legacy
                && name == "packs"
                && !path.join("ecosystem.json").exists()
                && !path.join("backend/ecosystem.json").exists()
            {
                continue;
            }
            if rumi_domain::pack::valid_pack_id(&name) && !found.contains_key(&name) {
                found.insert(name, path);
            }
        }
    }
    found
        .into_iter()
        .filter_map(|(id, dir)| Some((id, crate::layout::Layout::pack_subdir(&dir).ok()?)))
        .collect()
}

/// Finds the candidates of one pack (at most [`MAX_SLUGS`] slugs, in name order).
pub fn scan_pack(pack_id: &str, subdir: &Path) -> (Vec<Found>, Vec<Invalid>) {
    let mut found = Vec::new();
    let mut invalid = Vec::new();
    let Ok(dir) = open_candidates_dir(subdir) else {
        return (found, invalid);
    };
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return (found, invalid);
    };
    // Names held are bounded too (a directory of a million entries is counted, not kept).
    let mut slugs: Vec<String> = Vec::new();
    let mut total = 0usize;
    for e in entries.filter_map(Result::ok) {
        total += 1;
        if slugs.len() < MAX_LISTED {
            slugs.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    slugs.sort();
    if total > MAX_SLUGS {
        invalid.push(Invalid {
            pack_id: pack_id.to_string(),
            slug: String::new(),
            reason: format!(
                "the pack ships {total} handler directories; only the first {MAX_SLUGS} are read"
            ),
        });
        slugs.truncate(MAX_SLUGS);
    }
    for slug in slugs {
        match read_in(&dir, pack_id, &slug) {
            Ok(f) => found.push(f),
            Err(reason) => invalid.push(Invalid {
                pack_id: pack_id.to_string(),
                slug: slug.chars().take(80).collect(),
                reason,
            }),
        }
    }
    (found, invalid)
}

/// Reads one candidate again (approve's re-hash).
pub fn read_candidate(pack_id: &str, subdir: &Path, slug: &str) -> Result<Found, String> {
    let dir = open_candidates_dir(subdir)
        .map_err(|_| "the pack no longer ships share/capability_handlers/".to_string())?;
    read_in(&dir, pack_id, slug)
}

fn open_candidates_dir(subdir: &Path) -> std::io::Result<OwnedFd> {
    let mut fd = open_path(subdir)?;
    for name in CANDIDATES_DIR {
        fd = open_at(&fd, name, libc::O_DIRECTORY)?;
    }
    Ok(fd)
}

fn read_in(dir: &OwnedFd, pack_id: &str, slug: &str) -> Result<Found, String> {
    if !candidate::valid_name(slug) {
        return Err(format!(
            "the directory name {:?} is not a valid slug (1–64 letters, digits, '_', '.', '-')",
            slug.chars().take(80).collect::<String>()
        ));
    }
    let slug_dir = open_at(dir, slug, libc::O_DIRECTORY)
        .map_err(|e| refusal(slug, e, "is not a directory (a symlink is refused)"))?;
    let manifest_bytes = read_file(&slug_dir, MANIFEST_FILE, MAX_MANIFEST_BYTES)?;
    let manifest = parse_manifest(&manifest_bytes)?;
    if super::builtins::is_builtin(&manifest.permission_id) {
        return Err(format!(
            "permission {:?} is built into the kernel; a pack's handler cannot provide it",
            manifest.permission_id
        ));
    }
    let source = read_file(&slug_dir, HANDLER_FILE, MAX_SOURCE_BYTES)?;
    let sha256 = hex::encode(Sha256::digest(&source));
    let source = String::from_utf8(source).map_err(|_| "handler.py is not UTF-8".to_string())?;
    Ok(Found {
        pack_id: pack_id.to_string(),
        slug: slug.to_string(),
        manifest,
        manifest_bytes,
        source,
        sha256,
    })
}

fn refusal(name: &str, e: std::io::Error, what: &str) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => format!("{name} is missing"),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => format!("{name} {what}"),
        _ => format!("{name} cannot be read"),
    }
}

/// Reads `name` in `dir`: a regular file (no symlink, no FIFO), at most `max` bytes.
pub(crate) fn read_file(dir: &OwnedFd, name: &str, max: u64) -> Result<Vec<u8>, String> {
    let fd = open_at(dir, name, libc::O_NONBLOCK)
        .map_err(|e| refusal(name, e, "is a symlink; it must be a regular file"))?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|_| format!("{name} cannot be read"))?;
    if !meta.is_file() {
        return Err(format!("{name} is not a regular file"));
    }
    if meta.len() > max {
        return Err(format!(
            "{name} is {} bytes; the limit is {max}",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| format!("{name} cannot be read"))?;
    if bytes.len() as u64 > max {
        return Err(format!("{name} is larger than {max} bytes"));
    }
    Ok(bytes)
}

pub(crate) fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a valid NUL-terminated path; the descriptor is owned at once.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | extra)`: `name` is one component, and a
/// symlink there fails with ELOOP (or ENOTDIR with `O_DIRECTORY`).
pub(crate) fn open_at(dir: &OwnedFd, name: &str, extra: i32) -> std::io::Result<OwnedFd> {
    if name.contains('/') || name == ".." || name == "." {
        return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
    }
    let c = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: a valid directory descriptor and a NUL-terminated single-component name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | extra,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const GOOD: &str =
        r#"{"handler_id":"h1","permission_id":"fs.read","entrypoint":"handler.py:execute"}"#;

    fn pack(root: &Path) -> PathBuf {
        let sub = root.join("ecosystem/p/backend");
        fs::create_dir_all(sub.join("share/capability_handlers")).unwrap();
        fs::write(sub.join("ecosystem.json"), "{}").unwrap();
        sub
    }

    fn slug(sub: &Path, name: &str, manifest: &str, source: &str) -> PathBuf {
        let d = sub.join("share/capability_handlers").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("handler.json"), manifest).unwrap();
        fs::write(d.join("handler.py"), source).unwrap();
        d
    }

    #[test]
    fn a_candidate_is_found_with_its_hash_and_key() {
        let home = tempfile::tempdir().unwrap();
        let sub = pack(home.path());
        slug(&sub, "reader", GOOD, "def execute(c, a): return 1\n");
        assert_eq!(
            pack_subdirs(&home.path().join("ecosystem")),
            vec![("p".to_string(), sub.clone())]
        );
        let (found, invalid) = scan_pack("p", &sub);
        assert!(invalid.is_empty(), "{invalid:?}");
        let f = &found[0];
        assert_eq!(
            f.sha256,
            hex::encode(Sha256::digest(b"def execute(c, a): return 1\n"))
        );
        assert_eq!(f.candidate_key(), format!("p:reader:h1:{}", f.sha256));
    }

    #[test]
    fn escapes_builtins_and_oversized_files_are_invalid() {
        let home = tempfile::tempdir().unwrap();
        let sub = pack(home.path());
        let outside = home.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("handler.py"), "import os\n").unwrap();
        fs::write(outside.join("handler.json"), GOOD).unwrap();
        // The attack: handler.py a symlink to another file (another pack's, /etc/...).
        let d = slug(&sub, "a_link_file", GOOD, "");
        fs::remove_file(d.join("handler.py")).unwrap();
        std::os::unix::fs::symlink(outside.join("handler.py"), d.join("handler.py")).unwrap();
        // The slug directory itself a symlink out.
        std::os::unix::fs::symlink(&outside, sub.join("share/capability_handlers/b_link_dir"))
            .unwrap();
        slug(
            &sub,
            "c_escape",
            r#"{"handler_id":"h","permission_id":"x.y","entrypoint":"/etc/passwd:execute"}"#,
            "",
        );
        slug(
            &sub,
            "d_builtin",
            r#"{"handler_id":"h","permission_id":"secrets.get","entrypoint":"handler.py:execute"}"#,
            "",
        );
        slug(
            &sub,
            "e_big",
            GOOD,
            &"#".repeat(MAX_SOURCE_BYTES as usize + 1),
        );
        let d = sub.join("share/capability_handlers/f_fifo");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("handler.json"), GOOD).unwrap();
        let c = CString::new(d.join("handler.py").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        slug(&sub, "g_not_utf8", GOOD, "");
        fs::write(
            sub.join("share/capability_handlers/g_not_utf8/handler.py"),
            [0xff, 0xfe],
        )
        .unwrap();
        slug(&sub, "h..", GOOD, "");

        let (found, invalid) = scan_pack("p", &sub);
        assert!(found.is_empty(), "{found:?}");
        let reasons: Vec<(&str, &str)> = invalid
            .iter()
            .map(|i| (i.slug.as_str(), i.reason.as_str()))
            .collect();
        assert_eq!(invalid.len(), 8, "{reasons:?}");
        for (slug, reason) in reasons {
            assert!(
                !reason.contains(home.path().to_str().unwrap()),
                "no host path: {reason}"
            );
            let want = match slug {
                "a_link_file" => "symlink",
                "b_link_dir" => "symlink",
                "c_escape" => "leaves the handler's directory",
                "d_builtin" => "built into the kernel",
                "e_big" => "the limit is",
                "f_fifo" => "not a regular file",
                "g_not_utf8" => "UTF-8",
                _ => "not a valid slug",
            };
            assert!(reason.contains(want), "{slug}: {reason}");
        }
    }

    #[test]
    fn a_symlinked_share_dir_is_not_followed() {
        let home = tempfile::tempdir().unwrap();
        let other = pack(home.path());
        slug(&other, "s", GOOD, "x = 1\n");
        let sub = home.path().join("ecosystem/q");
        fs::create_dir_all(&sub).unwrap();
        std::os::unix::fs::symlink(other.join("share"), sub.join("share")).unwrap();
        let (found, _) = scan_pack("q", &sub);
        assert!(
            found.is_empty(),
            "another pack's handler is not q's candidate"
        );
    }

    #[test]
    fn slugs_are_bounded() {
        let home = tempfile::tempdir().unwrap();
        let sub = pack(home.path());
        for i in 0..MAX_SLUGS + 5 {
            slug(&sub, &format!("s{i:03}"), GOOD, "x = 1\n");
        }
        let (found, invalid) = scan_pack("p", &sub);
        assert_eq!(found.len(), MAX_SLUGS);
        assert_eq!(invalid.len(), 1);
    }
}
