//! File access beneath a directory that no link can redirect (the defence of the skill
//! workspace, `skills/workspace.rs`, against check-then-use races): every path is walked one
//! component at a time with `openat` and `O_NOFOLLOW`, holding the parent directory's
//! descriptor, so a script that swaps a directory of `build/` for a link to a host directory
//! between the kernel's check and its open makes the open fail instead of leading outside.
//! Listings read a directory through its descriptor (`/proc/self/fd/<n>`), never by a path that
//! could have changed. The approval verifier (`approval.rs`) stats a pack's entries through held
//! directory descriptors ([`statx_at`]): one short lookup per entry instead of a walk from `/`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

fn cname(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a plain name",
        ));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn check(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Opens the directory `path` itself (its last component must not be a link).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    // SAFETY: a valid C string; the result is checked.
    check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Opens the subdirectory `name` of `dir`, refusing a link.
pub fn open_subdir(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let c = cname(name)?;
    // SAFETY: a valid descriptor and C string; the result is checked.
    check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// `statx` of `name` relative to `dir` (or, with `dir` None, of the path `name`), never following
/// a link at the last component; with `name` empty, of `dir` itself. The mount id is asked for
/// too (`stx_mnt_id`, 0 where the system cannot tell): a directory bind-mounted over itself has
/// the same inode and device but another mount.
pub fn statx_at(dir: Option<&OwnedFd>, name: &std::ffi::OsStr) -> io::Result<libc::statx> {
    // Relative to a directory, a plain name only: `a/b` would follow a link at `a`.
    let c = match dir {
        Some(_) if !name.is_empty() => cname(
            name.to_str()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a UTF-8 name"))?,
        )?,
        _ => CString::new(name.as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))?,
    };
    let (fd, flags) = match dir {
        Some(d) if name.is_empty() => (d.as_raw_fd(), libc::AT_EMPTY_PATH),
        Some(d) => (d.as_raw_fd(), libc::AT_SYMLINK_NOFOLLOW),
        None => (libc::AT_FDCWD, libc::AT_SYMLINK_NOFOLLOW),
    };
    // SAFETY: all-zero is a valid `statx`; statx fills it or fails.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor (or AT_FDCWD), C string and out pointer; the result is checked.
    let r = unsafe {
        libc::statx(
            fd,
            c.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        st.stx_mnt_id = 0;
    }
    Ok(st)
}

/// The directory that holds `rel` beneath `root`, and `rel`'s last component.
pub fn parent_of<'a>(root: &Path, rel: &'a str) -> io::Result<(OwnedFd, &'a str)> {
    let mut parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let last = parts
        .pop()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an empty path"))?;
    let mut dir = open_dir(root)?;
    for p in parts {
        dir = open_subdir(&dir, p)?;
    }
    Ok((dir, last))
}

/// Opens the regular file `rel` beneath `root` for reading, no link followed anywhere.
pub fn open_file(root: &Path, rel: &str) -> io::Result<File> {
    let (dir, name) = parent_of(root, rel)?;
    let c = cname(name)?;
    // SAFETY: a valid descriptor and C string; the result is checked.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    let f = File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Opens (creating when missing) the directory `name` in `dir`, refusing a link or a file.
pub fn make_subdir(dir: &OwnedFd, name: &str, mode: u32) -> io::Result<OwnedFd> {
    match open_subdir(dir, name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let c = cname(name)?;
            // SAFETY: a valid descriptor and C string; the result is checked.
            if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
            open_subdir(dir, name)
        }
        other => other,
    }
}

/// Whether `name` in `dir` is a directory (not following a link).
pub fn is_dir_at(dir: &OwnedFd, name: &str) -> bool {
    let Ok(c) = cname(name) else { return false };
    // SAFETY: zeroed stat is a valid out-parameter; descriptor and name are valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
}

/// Creates `tmp` in `dir` (exclusively, never through a link), writes `bytes`, and renames it
/// over `name` (a link there is replaced itself, its target untouched).
pub fn write_replace(
    dir: &OwnedFd,
    tmp: &str,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> io::Result<()> {
    use std::io::Write;
    let (ct, cn) = (cname(tmp)?, cname(name)?);
    // SAFETY: a valid descriptor and C string; the result is checked.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            ct.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    let mut f = File::from(fd);
    let written = f.write_all(bytes).and_then(|_| {
        // SAFETY: valid descriptors and C strings.
        if unsafe { libc::renameat(dir.as_raw_fd(), ct.as_ptr(), dir.as_raw_fd(), cn.as_ptr()) } < 0
        {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    });
    if written.is_err() {
        // SAFETY: valid descriptor and C string.
        unsafe { libc::unlinkat(dir.as_raw_fd(), ct.as_ptr(), 0) };
    }
    written
}

/// The entries of an open directory: (name, is_dir, metadata) — links reported as non-dirs.
pub fn entries(dir: &OwnedFd) -> io::Result<Vec<(String, bool, std::fs::Metadata)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(m) = e.metadata() else { continue };
        out.push((name, m.file_type().is_dir(), m));
    }
    Ok(out)
}

/// Removes the file (or link) `name` in `dir`; best effort.
pub fn unlink_at(dir: &OwnedFd, name: &str) {
    if let Ok(c) = cname(name) {
        // SAFETY: valid descriptor and C string.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    }
}

/// Changes the owner of `name` in `dir` without following a link.
pub fn chown_at(dir: &OwnedFd, name: &str, uid: u32) {
    if let Ok(c) = cname(name) {
        // SAFETY: valid descriptor and C string; failure is ignored (best effort).
        unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                c.as_ptr(),
                uid,
                uid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
    }
}

/// Changes the owner of the open directory itself.
pub fn chown_fd(dir: &OwnedFd, uid: u32) {
    // SAFETY: a valid descriptor; failure is ignored (best effort).
    unsafe { libc::fchown(dir.as_raw_fd(), uid, uid) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_anywhere_on_the_way_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f.txt"), "in").unwrap();
        std::fs::create_dir(t.path().join("outside")).unwrap();
        std::fs::write(t.path().join("outside/f.txt"), "out").unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), root.join("l")).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside/f.txt"), root.join("fl")).unwrap();
        assert!(open_file(&root, "d/f.txt").is_ok());
        assert!(open_file(&root, "l/f.txt").is_err());
        assert!(open_file(&root, "fl").is_err());
        let (dir, _) = parent_of(&root, "d/x").unwrap();
        write_replace(&dir, ".tmp", "x", b"1", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("d/x")).unwrap(), "1");
        let top = open_dir(&root).unwrap();
        assert!(
            make_subdir(&top, "l", 0o755).is_err(),
            "a link is not a directory to write in"
        );
        let names: Vec<String> = entries(&top).unwrap().into_iter().map(|e| e.0).collect();
        assert!(names.contains(&"d".to_string()) && names.contains(&"l".to_string()));
    }
}
