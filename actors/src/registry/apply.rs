//! Applying a staged import, for the [`Registry`](super::Registry): the swap itself is
//! `lifecycle::apply` (files only); the Registry runs it between two messages, so applies (and
//! scans) never interleave — two applies of one staging id: the second finds it gone (404); two
//! of one pack: one after the other, each with its own backup — and rescans at once: a new pack
//! is `installed`, a replaced one `modified` (its approval record stays, its files differ) until
//! a person approves it.

use super::{PackInfo, Registry};
use crate::audit::{AuditEntry, Category, Record};
use crate::lifecycle::{self, ApplyError};
use actix::prelude::*;
use serde::Serialize;
use serde_json::json;

/// Applies the staged import `staging_id` (contract §2.4).
#[derive(Message)]
#[rtype(result = "Result<AppliedPack, ApplyError>")]
pub struct ApplyStaged {
    pub staging_id: String,
}

/// The answer to [`ApplyStaged`]: the pack after the rescan, and where the old one went.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct AppliedPack {
    pub pack_id: String,
    /// Whether an installed pack was replaced (false: a new pack).
    pub replaced: bool,
    /// The old pack's copy, relative to the home (`user_data/pack_backups/<id>/<timestamp>`);
    /// null for a new pack.
    pub backup: Option<String>,
    /// The pack as `GET /api/packs/{id}` shows it: `installed` when new, `modified` when it
    /// replaced an approved pack.
    pub pack: Option<PackInfo>,
}

impl Handler<ApplyStaged> for Registry {
    type Result = ResponseFuture<Result<AppliedPack, ApplyError>>;

    /// Swaps the staged tree in, audits it, rescans, and answers once the flows are reloaded
    /// (or [`DECISION_FLOWS_DEADLINE`](super::DECISION_FLOWS_DEADLINE) passed).
    fn handle(&mut self, msg: ApplyStaged, _: &mut Self::Context) -> Self::Result {
        let applied = match lifecycle::apply(&self.layout, &msg.staging_id) {
            Ok(a) => a,
            Err(e) => {
                if let ApplyError::Storage(detail) = &e {
                    tracing::error!(staging_id = %msg.staging_id, %detail, "a pack apply failed");
                }
                return Box::pin(async move { Err(e) });
            }
        };
        self.audit.do_send(Record(
            AuditEntry::new(Category::Approval, "pack_applied", true)
                .pack(&applied.pack_id)
                .details(json!({
                    "staging_id": msg.staging_id,
                    "replaced": applied.replaced,
                    "backup": applied.backup,
                    "path": applied.path,
                })),
        ));
        let reloaded = self.scan();
        let answer = AppliedPack {
            pack: self.info(&applied.pack_id),
            pack_id: applied.pack_id,
            replaced: applied.replaced,
            backup: applied.backup,
        };
        // The answer waits for the flow load the rescan started, within the deadline approvals
        // use (the swap itself is done and answered either way).
        Box::pin(async move {
            let _ = tokio::time::timeout(super::DECISION_FLOWS_DEADLINE, reloaded).await;
            Ok(answer)
        })
    }
}
