//! Capability grants (contract §7.3). STUB: signatures fixed, bodies to be written.

use crate::keys::SigningKey;
use serde_json::Value;
use std::path::PathBuf;

/// What the grant step decided for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantCheck {
    /// Every level of the principal holds an enabled grant; the effective (intersected) config.
    Granted(Value),
    /// No grant (at some level); the reason is for the audit, not the pack.
    Denied(String),
    /// A grant file of the principal (or an ancestor, named) failed its signature check: every
    /// call of the principal is denied and a `security` audit entry is due.
    Tampered { principal_id: String },
}

/// The grants: signed files under `user_data/permissions/capabilities/`, held in memory.
pub struct CapabilityGrants {
    _dir: PathBuf,
    _key: SigningKey,
}

impl CapabilityGrants {
    /// Loads every grant file; answers the principals whose file failed its check.
    pub fn load(dir: PathBuf, key: SigningKey) -> (Self, Vec<String>) {
        (
            CapabilityGrants {
                _dir: dir,
                _key: key,
            },
            Vec::new(),
        )
    }

    /// The grant step for `principal` (a pack id, possibly `a__b`) and `permission_id`.
    pub fn check(&self, _principal: &str, _permission_id: &str) -> GrantCheck {
        GrantCheck::Denied("no grant".into())
    }
}

/// The `security` audit entry for a grant file that failed its signature check (the action
/// names the grant).
pub fn tampered_entry(principal_id: &str) -> crate::audit::AuditEntry {
    use crate::audit::{AuditEntry, Category, Severity};
    AuditEntry::new(Category::Security, "capability_grant_tampered", false)
        .severity(Severity::Error)
        .pack(principal_id)
        .error(
            "the principal's capability grant file failed its signature check; its capability calls are denied",
            Some("grant_tampered"),
        )
}
