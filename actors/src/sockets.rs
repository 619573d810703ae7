//! The pack socket directories (`user_data/sockets/<pack>/`, `/run/rumi` in containers) and the
//! Unix sockets in them: the block host's channel, the egress socket and (later) the capability
//! socket. One place decides their modes and group, so no socket is ever left 0666 by accident.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

/// The longest Unix socket path the kernel accepts (`sun_path` holds 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Who may connect to a pack's sockets besides the kernel's own user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// The group given the directory and its sockets (the container's user is in it); `None`
    /// leaves the kernel's own group (permissive mode without `RUMI_EGRESS_SOCKET_GID`).
    pub gid: Option<u32>,
    /// The sockets' mode (0660 by default).
    pub mode: u32,
}

impl SocketAccess {
    /// Gives `path` the group (when there is one) and `mode`.
    fn apply(self, path: &Path, mode: u32) -> Result<(), String> {
        match self.gid {
            Some(gid) => set_group(path, gid, mode),
            None => set_mode(path, mode),
        }
    }
}

/// The socket file a [`bind_pack_socket`] call made; [`BoundSocket::remove`] removes that file
/// only, never a successor bound at the same path since.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    /// (device, inode) of the bound file.
    id: Option<(u64, u64)>,
}

impl BoundSocket {
    pub fn remove(&self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Creates the pack's socket directory when missing (0750, or 0700 without a group; given the
/// group), then binds `name` in it (replacing a stale socket file) with the group and mode.
pub fn bind_pack_socket(
    dir: &Path,
    name: &str,
    access: SocketAccess,
) -> Result<(UnixListener, BoundSocket), String> {
    let dir_mode = if access.gid.is_some() { 0o750 } else { 0o700 };
    crate::fsutil::ensure_dir(dir, dir_mode).map_err(|e| {
        format!(
            "the pack's socket directory cannot be created ({})",
            e.kind()
        )
    })?;
    access.apply(dir, dir_mode)?;
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let listener = bind_unix(dir, name)
        .map_err(|e| format!("the pack's {name} socket cannot be bound ({})", e.kind()))?;
    access.apply(&path, access.mode)?;
    let id = file_id(&path);
    Ok((listener, BoundSocket { path, id }))
}

/// Binds a Unix socket `name` in `dir`. A path longer than `sun_path` holds (a deep `RUMI_HOME`, a
/// long pack id) is bound through `/proc/self/fd/<dir>/name`, which names the same directory in a
/// few bytes.
pub fn bind_unix(dir: &Path, name: &str) -> std::io::Result<UnixListener> {
    let path = dir.join(name);
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return UnixListener::bind(&path);
    }
    let dir_fd = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    let short = format!("/proc/self/fd/{}/{name}", dir_fd.as_raw_fd());
    let listener = UnixListener::bind(&short);
    drop(dir_fd);
    listener
}

/// Gives `path` to group `gid` with `mode` (the container's user is in that group).
pub fn set_group(path: &Path, gid: u32, mode: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
        format!(
            "the pack's sockets cannot be given to group {gid} ({}); run the kernel as root or set RUMI_EGRESS_SOCKET_GID to a group it belongs to",
            e.kind()
        )
    })?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        format!(
            "setting the mode of the pack's sockets failed ({})",
            e.kind()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_bind_in_directories_deeper_than_sun_path_allows() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        assert!(deep.join("host.sock").as_os_str().len() > MAX_SOCKET_PATH);
        assert!(
            UnixListener::bind(deep.join("host.sock")).is_err(),
            "the plain path is too long"
        );
        let listener = bind_unix(&deep, "host.sock").unwrap();
        let meta = std::fs::symlink_metadata(deep.join("host.sock")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(
            meta.file_type().is_socket(),
            "the socket is in the deep directory"
        );
        // Reachable: connect through the same short alias.
        let dir = std::fs::File::open(&deep).unwrap();
        use std::os::fd::AsRawFd;
        let alias = format!("/proc/self/fd/{}/host.sock", dir.as_raw_fd());
        let client = tokio::net::UnixStream::connect(&alias);
        let (accepted, connected) = tokio::join!(listener.accept(), client);
        assert!(accepted.is_ok() && connected.is_ok());
    }

    #[test]
    fn pack_sockets_get_their_mode_and_never_more() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("p");
        let access = SocketAccess {
            gid: None,
            mode: 0o660,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let (_l, bound) = rt
            .block_on(async { bind_pack_socket(&dir, "egress.sock", access) })
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("egress.sock")), 0o660);
        // A successor bound at the same path is not removed by the first binding's owner.
        let (_l2, successor) = rt
            .block_on(async { bind_pack_socket(&dir, "egress.sock", access) })
            .unwrap();
        bound.remove();
        assert!(
            dir.join("egress.sock").exists(),
            "the successor's socket stays"
        );
        successor.remove();
        assert!(!dir.join("egress.sock").exists());
    }
}
