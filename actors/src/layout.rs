//! Every path the kernel uses, anchored at `RUMI_HOME` (contract §1). Nothing is resolved against
//! the process's working directory after start-up.

use std::path::{Path, PathBuf};

/// The installation's directory layout.
#[derive(Debug, Clone)]
pub struct Layout {
    home: PathBuf,
    /// `RUMI_EGRESS_SOCK_DIR`: where the per-pack socket directories live, when not under the home.
    sockets: Option<PathBuf>,
}

impl Layout {
    /// `home` should be absolute; the edge canonicalises it at start-up.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Layout {
            home: home.into(),
            sockets: None,
        }
    }
    /// Puts the per-pack socket directories under `dir` (`RUMI_EGRESS_SOCK_DIR`), e.g. a short
    /// path or a tmpfs; `None` keeps `user_data/sockets`.
    pub fn with_sockets(mut self, dir: Option<PathBuf>) -> Self {
        self.sockets = dir;
        self
    }
    pub fn home(&self) -> &Path {
        &self.home
    }
    /// Official flows, shipped with the kernel.
    pub fn official_flows(&self) -> PathBuf {
        self.home.join("flows")
    }
    pub fn ecosystem(&self) -> PathBuf {
        self.home.join("ecosystem")
    }
    pub fn user_data(&self) -> PathBuf {
        self.home.join("user_data")
    }
    pub fn shared_flows(&self) -> PathBuf {
        self.user_data().join("shared").join("flows")
    }
    pub fn approvals(&self) -> PathBuf {
        self.user_data().join("permissions").join("approvals")
    }
    /// Signed network grants, one file per pack.
    pub fn network_grants(&self) -> PathBuf {
        self.user_data().join("permissions").join("network")
    }
    /// Signed capability grants, one file per principal.
    pub fn capability_grants(&self) -> PathBuf {
        self.user_data().join("permissions").join("capabilities")
    }
    /// Third-party handlers: `handlers/<slug>/`, `trust/`, `requests/`.
    pub fn capabilities(&self) -> PathBuf {
        self.user_data().join("capabilities")
    }
    /// One encrypted file per secret key, and the journal.
    pub fn secrets(&self) -> PathBuf {
        self.user_data().join("secrets")
    }
    /// The store index and the default store roots.
    pub fn stores(&self) -> PathBuf {
        self.user_data().join("stores")
    }
    pub fn keys(&self) -> PathBuf {
        self.user_data().join("keys")
    }
    pub fn audit(&self) -> PathBuf {
        self.user_data().join("audit")
    }
    pub fn runs(&self) -> PathBuf {
        self.user_data().join("runs")
    }
    pub fn pending_summary(&self) -> PathBuf {
        self.user_data().join("pending").join("summary.json")
    }
    pub fn api_token(&self) -> PathBuf {
        self.user_data().join("api_token")
    }
    /// Per-pack writable data (`/data` in containers).
    pub fn pack_data(&self, pack_id: &str) -> PathBuf {
        self.user_data().join("packs").join(pack_id)
    }
    /// The pack's installed pip packages (`/pip-packages` in containers).
    pub fn pack_site_packages(&self, pack_id: &str) -> PathBuf {
        self.pack_data(pack_id).join("python").join("site-packages")
    }
    /// Per-pack socket directories (`/run/rumi` in containers): the block host's channel, and
    /// the egress and capability sockets.
    pub fn sockets(&self) -> PathBuf {
        self.sockets
            .clone()
            .unwrap_or_else(|| self.user_data().join("sockets"))
    }
    pub fn pack_sockets(&self, pack_id: &str) -> PathBuf {
        self.sockets().join(pack_id)
    }
    /// Where the embedded Python runtime files are written at start-up.
    pub fn runtime_python(&self) -> PathBuf {
        self.user_data().join("runtime").join("python")
    }
    /// Every directory the kernel writes with `fsutil::write_atomic` (the token, the signing
    /// key, approvals, network grants, the compacted run history, the pending summary, the
    /// embedded Python runtime): where a crash can leave a temporary file behind.
    pub fn atomic_write_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.user_data(),
            self.keys(),
            self.approvals(),
            self.network_grants(),
            self.capability_grants(),
            self.secrets(),
            self.stores(),
            self.capabilities(),
            self.runs(),
            self.user_data().join("pending"),
            self.runtime_python(),
        ]
    }
    /// A pack's subdir (contract §1): `<dir>/backend/` when it is a directory, else `<dir>`. A
    /// `backend` that is a symbolic link is refused: the manifest records a link by its target's
    /// name only, so everything behind it would run unhashed (and change unseen).
    pub fn pack_subdir(dir: &Path) -> Result<PathBuf, String> {
        let backend = dir.join("backend");
        match std::fs::symlink_metadata(&backend) {
            Ok(m) if m.file_type().is_symlink() => Err(
                "backend is a symbolic link: a pack's files must be inside its own directory (replace the link with the directory itself)".into(),
            ),
            Ok(m) if m.is_dir() => Ok(backend),
            _ => Ok(dir.to_path_buf()),
        }
    }
    /// Shows a path relative to the home, for messages (never a host path outside it).
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.home) {
            Ok(rel) => rel.to_string_lossy().into_owned(),
            Err(_) => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}
