//! File operations relative to an open directory, never following a symlink: every directory
//! of a key is opened with `openat(…, O_NOFOLLOW | O_DIRECTORY)` from the store root's cached
//! descriptor, and the value file with `O_NOFOLLOW`. Attack stopped: a symlink planted inside a
//! store root (`notes/users -> /etc`) cannot turn `store.get notes users/passwd` into a read
//! outside the root, nor a `store.set` into a write there; and no path is re-resolved by name
//! between a check and the use (the descriptor is the check).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A symlink (or something else) where a directory or file of a key was expected.
pub fn is_link_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

/// Opens a directory by its (already resolved) path.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(f))
}

/// Opens the directory `name` of `parent` without following a symlink; with `create`, makes it
/// first (0700) when missing, and fsyncs `parent` so the new entry survives a crash.
pub fn open_dir_at(parent: BorrowedFd<'_>, name: &str, create: bool) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    if create {
        // SAFETY: a valid descriptor and a NUL-terminated name.
        let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o700) };
        if rc == 0 {
            sync_dir(parent)?;
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
    }
    // SAFETY: as above; the returned descriptor is owned below.
    let fd = check(unsafe {
        libc::openat(
            parent.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the regular file `name` of `dir` (a symlink, FIFO or device is refused: `O_NONBLOCK`
/// so a planted FIFO cannot hang the reader, then a type check).
pub fn read_file_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name; the result is owned below.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    })?;
    // SAFETY: a fresh descriptor nobody else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Atomically replaces `name` in `dir` with `bytes` (0600): a temporary file created
/// exclusively, written, fsynced, renamed over `name`, then the directory fsynced.
pub fn write_file_at(dir: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut rnd = [0u8; 6];
    getrandom::getrandom(&mut rnd).map_err(io::Error::other)?;
    let tmp = format!(".{name}.{}.tmp", hex::encode(rnd));
    let (c_tmp, c_name) = (cstr(&tmp)?, cstr(name)?);
    // SAFETY: a valid descriptor and NUL-terminated names; the result is owned below.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c_tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    let result = (|| {
        // SAFETY: a fresh descriptor nobody else owns.
        let mut f = unsafe { File::from_raw_fd(fd) };
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        // SAFETY: valid descriptors and names.
        check(unsafe {
            libc::renameat(
                dir.as_raw_fd(),
                c_tmp.as_ptr(),
                dir.as_raw_fd(),
                c_name.as_ptr(),
            )
        })?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // SAFETY: valid descriptor and name; failure to remove is harmless.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c_tmp.as_ptr(), 0) };
    }
    result
}

/// Removes the file `name` of `dir` (a directory is refused), then fsyncs `dir`.
pub fn remove_file_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })?;
    sync_dir(dir)
}

fn sync_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    check(unsafe { libc::fsync(dir.as_raw_fd()) }).map(|_| ())
}

/// What a directory entry is (symlinks are neither files nor directories here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Other,
}

/// The entries of `dir` (without `.` and `..`), each with its kind, not following symlinks.
pub fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<(String, Kind)>> {
    // A fresh open of "." (not a dup: a duplicate shares the file offset with the cached root
    // descriptor, and two listings of one store at once would skip each other's entries).
    let fresh = open_dir_at(dir, ".", false)?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fresh);
    // SAFETY: `raw` is a directory descriptor we own; on success the stream owns it.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: still ours when fdopendir failed.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: `stream` is open; readdir's entry is valid until the next call.
        let ent = unsafe { libc::readdir(stream) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        let Ok(name) = name.to_str() else { continue };
        if name == "." || name == ".." {
            continue;
        }
        // SAFETY: `ent` is valid (see above).
        let kind = match unsafe { (*ent).d_type } {
            libc::DT_REG => Kind::File,
            libc::DT_DIR => Kind::Dir,
            libc::DT_UNKNOWN => stat_kind(dir, name),
            _ => Kind::Other,
        };
        out.push((name.to_string(), kind));
    }
    // SAFETY: closes the stream and its descriptor, once.
    unsafe { libc::closedir(stream) };
    Ok(out)
}

/// The kind of `name` in `dir` by `fstatat(AT_SYMLINK_NOFOLLOW)` (file systems without d_type).
fn stat_kind(dir: BorrowedFd<'_>, name: &str) -> Kind {
    let Ok(c) = cstr(name) else {
        return Kind::Other;
    };
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, name and out-pointer.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Kind::Other;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        _ => Kind::Other,
    }
}
