//! Third-party handler candidates and trust (contract §7.2). STUB: signatures fixed.

use super::handler::CapabilityHandler;
use actix::Addr;
use std::path::PathBuf;

/// What the broker's "handler exists" and "trust" steps found for a permission id.
pub enum Lookup {
    /// No built-in and no installed handler provides it (`handler_not_found`).
    NotFound,
    /// A handler is installed but not trusted now: its file changed since approval, its pack is
    /// not approved, its trust record is tampered (`trust_denied`); the reason is for the audit.
    Untrusted { handler_id: String, reason: String },
    /// Trusted: the handler's actor.
    Ready {
        handler_id: String,
        actor: Addr<CapabilityHandler>,
    },
}

/// The installed third-party handlers, by permission id.
pub struct HandlerTable {
    _dir: PathBuf,
}

impl HandlerTable {
    pub fn empty(dir: PathBuf) -> Self {
        HandlerTable { _dir: dir }
    }

    /// The "handler exists" and "trust" steps for `permission_id` (not a built-in).
    pub fn lookup(&self, _permission_id: &str) -> Lookup {
        Lookup::NotFound
    }
}
