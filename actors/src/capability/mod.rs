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
pub mod rate;
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

/// The capability services every pack's broker and the HTTP API share.
pub struct Capabilities {
    pub grants: Arc<grants::CapabilityGrants>,
    pub secrets: Arc<secrets::SecretStore>,
    pub stores: Arc<stores::Stores>,
    pub handlers: Arc<trust::HandlerTable>,
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
    ) -> io::Result<(Capabilities, OpenReport)> {
        let _ = &view;
        let (grants, tampered_grants) =
            grants::CapabilityGrants::load(layout.capability_grants(), key);
        let caps = Capabilities {
            grants: Arc::new(grants),
            secrets: Arc::new(secrets::SecretStore::open(layout.secrets(), layout.keys())?),
            stores: Arc::new(stores::Stores::open(
                layout.stores(),
                layout.home().to_path_buf(),
            )?),
            handlers: Arc::new(trust::HandlerTable::open(layout, Arc::clone(&view))?),
        };
        Ok((caps, OpenReport { tampered_grants }))
    }
}
