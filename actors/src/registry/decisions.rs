//! Decisions about a pack, for the [`Registry`](super::Registry): a person approves or rejects it
//! (`Approve`, `Reject`), or the kernel finds an approved pack's files changed (a block call's
//! check sends `PackModified`; a flow load or a scan finds it itself). Each decision is recorded
//! signed, audited, and followed by the pack's sandbox, its egress socket and the flow table.
//!
//! An approval or a rejection is answered only once its audit entry is on disk and the flows it
//! changed are published, so a client that reads the flows right after sees them.

use super::{FlowsReloaded, PackInfo, Registry, RegistryError, MAX_LISTED_PROBLEMS};
use crate::approval::{ApprovalRecord, Decision, ManifestVerifier};
use crate::audit::{AuditEntry, Category, Record, RecordDurable, Severity};
use crate::pack_container::{self, PackModified};
use crate::view::PackState;
use actix::prelude::*;
use rumi_domain::manifest::{Manifest, ManifestDiff};
use rumi_domain::sources::{FlowProblem, FlowTable};
use serde::Serialize;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long an approval or a rejection waits for the flow load it started to be published
/// before it answers anyway (the load itself is given up only after `flows::LOAD_DEADLINE`).
pub const DECISION_FLOWS_DEADLINE: Duration = Duration::from_secs(30);

// ---- messages ---------------------------------------------------------------------------------

/// Approves a pack: records the manifest of every file, signed.
#[derive(Message)]
#[rtype(result = "Result<ApprovedPack, RegistryError>")]
pub struct Approve {
    pub pack_id: String,
}

/// The answer to [`Approve`]: the pack (its fields, flattened) and `warnings`: one
/// `file:line: what was wrong — how to fix it` for each of its flow files that did not load once
/// the approval's flow load was published (a load error, a clash, a flow a higher rank shadows).
/// The approval stands either way: a broken flow file does not make the rest of the pack wrong.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ApprovedPack {
    #[serde(flatten)]
    pub pack: PackInfo,
    pub warnings: Vec<String>,
}

/// Rejects a pack (`blocked`).
#[derive(Message)]
#[rtype(result = "Result<PackInfo, RegistryError>")]
pub struct Reject {
    pub pack_id: String,
    pub reason: Option<String>,
}

// ---- the Registry's side -------------------------------------------------------------------------

impl Registry {
    /// Records that an approved pack's files changed (`found_by`: what noticed it), audited.
    pub(super) fn persist_modified(
        &mut self,
        id: &str,
        mut rec: ApprovalRecord,
        diff: &ManifestDiff,
        found_by: &'static str,
    ) -> ApprovalRecord {
        rec.decision = Decision::Modified;
        rec.decided_at = crate::clock::now_rfc3339();
        rec.reason = Some("files changed after approval".into());
        if let Err(e) = self.approvals.save(&rec) {
            tracing::error!(pack_id = id, error = %e, "could not persist the modified state");
        }
        self.audit.do_send(Record(
            AuditEntry::new(Category::Security, "pack_modified", false)
                .severity(Severity::Warning)
                .pack(id)
                .details(json!({
                    "added": diff.added, "removed": diff.removed, "changed": diff.changed,
                    "found_by": found_by,
                }))
                .error(
                    "files changed after approval; approve the pack again to load and run it",
                    None,
                ),
        ));
        self.event(
            json!({"pack_id": id, "event": "pack_modified", "changes": diff, "found_by": found_by}),
        );
        rec
    }

    /// Answers a decision once its audit entry is on disk (an acknowledged approval or rejection
    /// is never lost to a buffer) and the flows it changed are published, or
    /// [`DECISION_FLOWS_DEADLINE`] has passed (the future says which: `true` when published).
    fn acknowledge(
        &self,
        id: String,
        entry: AuditEntry,
        reloaded: oneshot::Receiver<FlowsReloaded>,
    ) -> impl Future<Output = Result<(PackInfo, bool), RegistryError>> + 'static {
        let info = self.info(&id);
        let audit = self.audit.clone();
        async move {
            audit
                .send(RecordDurable(entry))
                .await
                .map_err(|_| RegistryError::Storage)?
                .map_err(|_| RegistryError::Storage)?;
            // A load that was given up still answers; a dropped sender means the Registry stopped.
            // The decision is recorded already: a load slower than the deadline (hostile files
            // elsewhere, a reload queued behind another) does not hold its answer back.
            let published = matches!(
                tokio::time::timeout(DECISION_FLOWS_DEADLINE, reloaded).await,
                Ok(Ok(_))
            );
            Ok((info.ok_or(RegistryError::NotFound(id))?, published))
        }
    }

    /// After a pack's state changed: its sandbox and egress follow, its flows leave the table at
    /// once if it is no longer approved, and the flows are reloaded (the receiver answers then).
    pub(super) fn after_decision(&mut self, id: &str) -> oneshot::Receiver<FlowsReloaded> {
        self.reconcile_container(id);
        self.publish_states();
        self.drop_unapproved_flows();
        let reloaded = self.request_reload();
        self.write_pending_summary();
        self.schedule_extras();
        reloaded
    }

    /// An approved pack's files differ from its manifest (found by a block call's check or by a
    /// flow load): persist `modified` and audit it, stop its sandbox and egress (its grant is
    /// suspended with the state), unload its flows. One path for both; a scan decides the state
    /// of each pack it finds in `decide_state`, which records a change the same way.
    pub(super) fn pack_changed(
        &mut self,
        id: &str,
        diff: ManifestDiff,
        found_by: &'static str,
    ) -> Option<oneshot::Receiver<FlowsReloaded>> {
        let entry = self.packs.get(id)?;
        if entry.state != PackState::Approved {
            return None;
        }
        let rec = entry.record.clone();
        let rec = rec.map(|r| self.persist_modified(id, r, &diff, found_by));
        let entry = self.packs.get_mut(id).expect("checked above");
        entry.state = PackState::Modified;
        entry.record = rec;
        entry.changes = Some(diff);
        Some(self.after_decision(id))
    }
}

impl Handler<Approve> for Registry {
    type Result = ResponseFuture<Result<ApprovedPack, RegistryError>>;

    /// Hashes every file, writes the signed record (fsynced), starts the pack's sandbox, loads its
    /// flows, and answers once the approval's audit entry is on disk and its flow load is
    /// published (within [`DECISION_FLOWS_DEADLINE`]), with the pack's flow files that failed to
    /// load as `warnings`.
    fn handle(&mut self, msg: Approve, _: &mut Self::Context) -> Self::Result {
        let id = msg.pack_id;
        let result = (|| {
            let entry = self
                .packs
                .get(&id)
                .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
            if let Some(e) = &entry.error {
                return Err(RegistryError::Invalid {
                    pack_id: id.clone(),
                    why: e.clone(),
                });
            }
            let warm = ManifestVerifier::snapshot(entry.dir.clone()).map_err(|e| {
                RegistryError::Invalid {
                    pack_id: id.clone(),
                    why: e.to_string(),
                }
            })?;
            let manifest: Manifest = warm.manifest().clone();
            let record = ApprovalRecord {
                pack_id: id.clone(),
                decision: Decision::Approved,
                manifest_hash: manifest.hash(),
                manifest,
                decided_at: crate::clock::now_rfc3339(),
                reason: None,
            };
            self.approvals.save(&record).map_err(|e| {
                tracing::error!(error = %e, "approval record write failed");
                RegistryError::Storage
            })?;
            let entry = self.packs.get_mut(&id).expect("checked above");
            // A re-approval replaces a running sandbox so it verifies against the new manifest.
            if let Some(c) = entry.container.take() {
                c.do_send(pack_container::Stop);
            }
            entry.state = PackState::Approved;
            entry.changes = None;
            entry.warm = Some(warm);
            let entry_audit = AuditEntry::new(Category::Approval, "pack_approved", true)
                .pack(&id)
                .details(json!({"manifest_hash": record.manifest_hash, "files": record.manifest.files.len()}));
            entry.record = Some(record);
            Ok(entry_audit)
        })();
        let audit_entry = match result {
            Ok(e) => e,
            Err(err) => return Box::pin(async move { Err(err) }),
        };
        let prefix = self
            .packs
            .get(&id)
            .map(|e| format!("{}/", self.layout.display(&e.dir)))
            .unwrap_or_default();
        let view = Arc::clone(&self.view);
        let reloaded = self.after_decision(&id);
        let acknowledged = self.acknowledge(id, audit_entry, reloaded);
        Box::pin(async move {
            let (pack, published) = acknowledged.await?;
            let warnings = if published {
                flow_warnings(&view.flows(), &prefix)
            } else {
                vec![format!(
                    "the flows were still loading {} s after the approval; `rumi diagnostics` will list any of this pack's flow files that fail to load",
                    DECISION_FLOWS_DEADLINE.as_secs()
                )]
            };
            Ok(ApprovedPack { pack, warnings })
        })
    }
}

/// The problems of the flow files under `prefix` (a pack's directory, relative to the home, with
/// a trailing `/`), as `file:line: …`, at most [`MAX_LISTED_PROBLEMS`] of them.
fn flow_warnings(table: &FlowTable, prefix: &str) -> Vec<String> {
    let mut mine = table
        .problems
        .iter()
        .flat_map(FlowProblem::per_file)
        .filter(|p| p.file.starts_with(prefix));
    let mut warnings: Vec<String> = mine
        .by_ref()
        .take(MAX_LISTED_PROBLEMS)
        .map(|p| p.to_string())
        .collect();
    let more = mine.count();
    if more > 0 {
        warnings.push(format!("… and {more} more; see `rumi diagnostics`"));
    }
    warnings
}

impl Handler<Reject> for Registry {
    type Result = ResponseFuture<Result<PackInfo, RegistryError>>;

    /// Records `blocked` (signed), stops the sandbox, unloads the pack's flows.
    fn handle(&mut self, msg: Reject, _: &mut Self::Context) -> Self::Result {
        let id = msg.pack_id;
        if !self.packs.contains_key(&id) {
            return Box::pin(async move { Err(RegistryError::NotFound(id)) });
        }
        let reason: Option<String> = msg.reason.map(|r| r.chars().take(500).collect());
        let manifest = Manifest::default();
        let record = ApprovalRecord {
            pack_id: id.clone(),
            decision: Decision::Blocked,
            manifest_hash: manifest.hash(),
            manifest,
            decided_at: crate::clock::now_rfc3339(),
            reason: reason.clone(),
        };
        if self.approvals.save(&record).is_err() {
            return Box::pin(async { Err(RegistryError::Storage) });
        }
        let entry = self.packs.get_mut(&id).expect("checked above");
        entry.state = PackState::Blocked;
        entry.record = Some(record);
        entry.changes = None;
        let reloaded = self.after_decision(&id);
        let mut audit_entry = AuditEntry::new(Category::Approval, "pack_rejected", true).pack(&id);
        if let Some(r) = &reason {
            audit_entry = audit_entry.rejection(r);
        }
        let acknowledged = self.acknowledge(id, audit_entry, reloaded);
        Box::pin(async move { acknowledged.await.map(|(pack, _)| pack) })
    }
}

impl Handler<PackModified> for Registry {
    type Result = ();

    /// A sandbox found its pack's files changed: persist `modified`, stop it, unload its flows
    /// (they leave the table before this answers; the reload that follows runs on its own).
    fn handle(&mut self, msg: PackModified, _: &mut Self::Context) {
        drop(self.pack_changed(&msg.pack_id, msg.diff, "block_call"));
    }
}
