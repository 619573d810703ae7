//! Capabilities (contract §7, §8): the trusted door from pack code to the host.
//!
//! * [`broker`] — one [`broker::CapabilityBroker`] per approved pack on its socket
//!   `<sockets>/<pack>/capability.sock` (the egress listener's mechanism, [`crate::socket_server`],
//!   generalised), running the check order of §7 on every call: shape → rate limit → handler
//!   exists → trust → grant → execute → audit.
//! * [`builtins`] — `store.get|set|delete|list` and `secrets.get`, native Rust, no process per call.
//! * [`grants`] — capability grants: HMAC-signed files per principal, hierarchical principals.
//! * [`secrets`] — write-only secrets, encrypted at rest.
//! * [`stores`] — key-value stores under `user_data/stores/`.
//! * [`trust`] — third-party handler candidates: scan, approve, reject, block, unblock.
//! * [`candidates`] — reading handler candidates out of packs, bounded and without symlinks.
//! * [`workflow`] — the candidates' trust workflow (scan, approve, reject, block, unblock).
//! * [`handler`] — one [`handler::CapabilityHandler`] actor per trusted third-party handler,
//!   owning its warm host worker.
//! * [`rate`] — per-pack rate windows.
//!
//! The socket is the caller's identity: nothing in a payload names the principal.

pub mod broker;
pub mod builtins;
pub mod candidates;
pub mod grants;
pub mod handler;
pub mod peers;
pub mod rate;
pub mod redact;
pub mod secrets;
pub mod stores;
pub mod trust;
pub mod workflow;

use crate::keys::SigningKey;
use crate::layout::Layout;
use crate::view::KernelView;
use std::io;
use std::sync::Arc;

/// The socket's file name in a pack's socket directory (`/run/rumi/capability.sock` in containers).
pub const SOCKET_NAME: &str = "capability.sock";

/// Capability settings (contract §14).
#[derive(Debug, Clone)]
pub struct CapabilitySettings {
    /// `RUMI_SECRET_GET_RATE_LIMIT`: `secrets.get` calls a minute per pack.
    pub secret_get_rate_limit: u32,
    /// Open connections one pack may hold on its capability socket; more are told `busy`.
    pub max_connections: usize,
    /// Deadline for a whole request frame, and for an idle connection.
    pub read_timeout: std::time::Duration,
    /// `RUMI_CAPABILITY_SOCK_DIR`: where the per-pack capability socket directories live when
    /// apart from the egress sockets (`None`: beside them, in the pack's socket directory).
    pub sock_dir: Option<std::path::PathBuf>,
    /// `RUMI_CAPABILITY_SOCKET_GID` (permissive mode; strict mode uses the container's group).
    pub socket_gid: Option<u32>,
    /// `RUMI_CAPABILITY_SOCKET_MODE` (0660 by default).
    pub socket_mode: Option<u32>,
}

impl Default for CapabilitySettings {
    fn default() -> Self {
        CapabilitySettings {
            secret_get_rate_limit: 60,
            max_connections: 64,
            read_timeout: std::time::Duration::from_secs(10),
            sock_dir: None,
            socket_gid: None,
            socket_mode: None,
        }
    }
}

/// The capability services every pack's broker and the HTTP API share.
pub struct Capabilities {
    pub grants: Arc<grants::CapabilityGrants>,
    pub secrets: Arc<secrets::SecretStore>,
    pub stores: Arc<stores::Stores>,
    pub handlers: Arc<trust::HandlerTable>,
    /// Every secret value, to scrub from what the kernel keeps about runs.
    pub redactor: Arc<redact::Redactor>,
}

/// What opening the capability services found wrong (for the `security` audit at boot).
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Principals whose grant file failed its signature check.
    pub tampered_grants: Vec<String>,
}

impl Capabilities {
    /// Opens every service from the home's files.
    pub fn open(
        layout: &Layout,
        key: SigningKey,
        view: Arc<KernelView>,
        redactor: Arc<redact::Redactor>,
    ) -> io::Result<(Capabilities, OpenReport)> {
        let _ = &view;
        let (grants, tampered_grants) =
            grants::CapabilityGrants::load(layout.capability_grants(), key);
        let secrets = secrets::SecretStore::open(layout.secrets(), layout.keys())?
            .with_redactor(Arc::clone(&redactor));
        let caps = Capabilities {
            grants: Arc::new(grants),
            secrets: Arc::new(secrets),
            stores: Arc::new(stores::Stores::open(
                layout.stores(),
                layout.home().to_path_buf(),
            )?),
            handlers: Arc::new(trust::HandlerTable::open(layout, Arc::clone(&view))?),
            redactor,
        };
        Ok((caps, OpenReport { tampered_grants }))
    }
}
