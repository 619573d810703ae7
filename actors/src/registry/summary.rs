//! The pending export (contract §2.5): `user_data/pending/summary.json`, rewritten at start-up
//! and whenever a pack's approval state or a candidate's state changes, so tools outside the
//! kernel can show what waits for a person without asking the API.

use super::Registry;
use crate::view::PackState;
use actix::prelude::*;
use serde_json::{json, Value};

/// Rewrites the pending summary now (sent after a capability or pip candidate decision).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RefreshSummary;

impl Registry {
    /// The summary as written: `{ts, version: "1.0", packs, capability, pip}`. A section that
    /// cannot be computed holds `{"error": "..."}`.
    pub(super) fn pending_summary(&self) -> Value {
        let ids = |s: PackState| -> Vec<&str> {
            self.packs
                .iter()
                .filter(|(_, e)| e.state == s)
                .map(|(k, _)| k.as_str())
                .collect()
        };
        let pending: Vec<&str> = ids(PackState::Installed);
        let modified = ids(PackState::Modified);
        let blocked = ids(PackState::Blocked);
        let capability = serde_json::to_value(self.sandbox.capabilities.handlers.status_counts())
            .unwrap_or_else(|e| json!({"error": e.to_string()}));
        let pip = crate::pip::pending_summary(&self.layout);
        json!({
            "ts": crate::clock::now_rfc3339(),
            "version": "1.0",
            "packs": {
                "pending_count": pending.len(), "pending_ids": pending,
                "modified_count": modified.len(), "modified_ids": modified,
                "blocked_count": blocked.len(), "blocked_ids": blocked,
            },
            "capability": capability,
            "pip": pip,
        })
    }

    /// Writes the summary atomically (a reader never sees half a file).
    pub(super) fn write_pending_summary(&self) {
        let bytes = serde_json::to_vec_pretty(&self.pending_summary()).unwrap_or_default();
        if let Err(e) = crate::fsutil::write_atomic(&self.layout.pending_summary(), &bytes, 0o600) {
            tracing::warn!(error = %e, "could not write the pending summary");
        }
    }
}

impl Handler<RefreshSummary> for Registry {
    type Result = ();

    fn handle(&mut self, _: RefreshSummary, _: &mut Self::Context) {
        self.write_pending_summary();
    }
}
