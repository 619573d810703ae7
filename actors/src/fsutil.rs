//! Durable file writes (invariant 9): write a temporary file beside the target, fsync it, rename
//! it over the target, fsync the directory. An acknowledged write survives a crash, and a reader
//! never sees half a file. And the repairs a crash needs: temporary files it left behind are
//! removed at boot ([`remove_interrupted_writes`]), and a jsonl log whose last line it cut is
//! given its newline before anything is appended ([`open_log`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Length of the random part of a temporary file's name, in hex digits (6 random bytes).
const TEMP_RANDOM_HEX: usize = 12;

/// Atomically replaces `path` with `bytes`, created with `mode` from the first byte (a secret file
/// is never briefly world-readable).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent"))?;
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let mut rnd = [0u8; TEMP_RANDOM_HEX / 2];
    getrandom::getrandom(&mut rnd).map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(rnd)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `path` durably (its directory is synced, so a crash cannot bring it back); answers
/// whether it existed.
pub fn remove_durably(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A name that differs from every other this process makes, even within one nanosecond:
/// `<UTC time to the nanosecond>-<counter>` (sorts by time).
pub fn unique_stamp() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ"))
}

/// Whether `name` is one of [`write_atomic`]'s temporary files: `.<target name>.<12 hex>.tmp`.
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((target, random)) = rest.rsplit_once('.') else {
        return false;
    };
    !target.is_empty()
        && random.len() == TEMP_RANDOM_HEX
        && random
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Removes the temporary files of atomic writes a crash interrupted (between creating the file
/// and renaming it) from each of `dirs`. Only regular files whose name matches [`is_temp_name`]
/// are removed, never followed through a symlink; missing directories are fine. Must run before
/// anything writes in these directories, or it could remove a write in progress. Answers how many
/// were removed.
pub fn remove_interrupted_writes(dirs: &[std::path::PathBuf]) -> io::Result<usize> {
    let mut removed = 0;
    for dir in dirs {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(is_temp_name) {
                continue;
            }
            // `file_type` does not follow symlinks: a planted link is left alone.
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Opens a jsonl log for appending (created with `mode`). When a crash cut the last line (the
/// file does not end with a newline), a newline is written first: the torn line stays a line of
/// its own, which readers skip, instead of swallowing the next entry. Answers whether it did.
pub fn open_log(path: &Path, mode: u32) -> io::Result<(File, bool)> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(mode)
        .open(path)?;
    let repaired = terminate_last_line(&mut f)?;
    Ok((f, repaired))
}

/// Writes a newline at the end of `f` (opened for appending and reading) unless it is empty or
/// already ends with one. Answers whether it wrote.
pub fn terminate_last_line(f: &mut File) -> io::Result<bool> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(false);
    }
    f.write_all(b"\n")?;
    Ok(true)
}

/// Creates `dir` (and parents) with `mode` when missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("f.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files are left behind");
    }

    #[test]
    fn temp_names_match_only_the_atomic_write_pattern() {
        for yes in [
            ".a.json.0123456789ab.tmp",
            ".api_token.abcdef012345.tmp",
            ".x.y.z.000000000000.tmp",
        ] {
            assert!(is_temp_name(yes), "{yes}");
        }
        for no in [
            "a.json",
            "a.json.0123456789ab.tmp",
            ".a.json.tmp",
            "..0123456789ab.tmp",
            ".a.json.0123456789AB.tmp",
            ".a.json.0123456789abc.tmp",
            ".a.json.0123456789xy.tmp",
            ".a.json.0123456789ab.tmp.bak",
        ] {
            assert!(!is_temp_name(no), "{no}");
        }
    }

    #[test]
    fn interrupted_writes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(".a.json.0123456789ab.tmp"), "half").unwrap();
        fs::write(d.join("a.json"), "whole").unwrap();
        fs::write(d.join("notes.tmp"), "mine").unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("target"), "keep").unwrap();
        // A link named like a temporary file: removing it is not our business, nor its target.
        std::os::unix::fs::symlink(
            outside.path().join("target"),
            d.join(".b.json.0123456789ab.tmp"),
        )
        .unwrap();
        let n = remove_interrupted_writes(&[d.to_path_buf(), d.join("missing")]).unwrap();
        assert_eq!(n, 1);
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![".b.json.0123456789ab.tmp", "a.json", "notes.tmp"]
        );
        assert!(outside.path().join("target").exists());
    }

    #[test]
    fn a_torn_last_line_gets_its_newline_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        fs::write(&p, b"{\"a\":1}\n{\"b\":").unwrap();
        let (mut f, repaired) = open_log(&p, 0o600).unwrap();
        assert!(repaired);
        f.write_all(b"{\"c\":3}\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{\"a\":1}\n{\"b\":\n{\"c\":3}\n");
        drop(f);
        let (_, repaired) = open_log(&p, 0o600).unwrap();
        assert!(!repaired, "a whole file is left as it is");
        let (_, repaired) = open_log(&dir.path().join("new.jsonl"), 0o600).unwrap();
        assert!(!repaired);
    }
}
