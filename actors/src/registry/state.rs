//! The state of a pack found on disk, for the [`Registry`](super::Registry): from its signed
//! approval record and its files now (`installed`, `approved`, `modified`, `blocked`, `error`), with
//! what changed since approval for a modified pack.

use super::Registry;
use crate::approval::{ApprovalRecord, Decision, ManifestVerifier, StoredApproval, VerifyFailure};
use crate::audit::{AuditEntry, Category, Record, Severity};
use crate::view::PackState;
use rumi_domain::manifest::ManifestDiff;
use serde_json::json;
use std::path::Path;

impl Registry {
    /// The state a pack is in given its record and its files now.
    pub(super) fn decide_state(
        &mut self,
        id: &str,
        dir: &Path,
        broken: bool,
    ) -> (
        PackState,
        Option<ApprovalRecord>,
        Option<ManifestDiff>,
        Option<ManifestVerifier>,
    ) {
        let decided = match self.approvals.load(id) {
            StoredApproval::None => (
                if broken {
                    PackState::Error
                } else {
                    PackState::Installed
                },
                None,
                None,
                None,
            ),
            StoredApproval::Tampered => {
                self.audit.do_send(Record(
                    AuditEntry::new(Category::Security, "approval_record_invalid", false)
                        .severity(Severity::Critical)
                        .pack(id)
                        .error("the approval record failed its signature check; the pack is treated as modified", None),
                ));
                self.event(json!({"pack_id": id, "event": "approval_record_invalid"}));
                (PackState::Modified, None, None, None)
            }
            StoredApproval::Valid(rec) => match rec.decision {
                Decision::Blocked => (PackState::Blocked, Some(rec), None, None),
                Decision::Modified => {
                    // What changed is recomputed from the approved manifest the record keeps, so
                    // `rumi pack diff` still answers after a restart or another scan.
                    let verifier = self
                        .modified_verifiers
                        .entry(id.to_string())
                        .or_insert_with(|| {
                            ManifestVerifier::new(dir.to_path_buf(), rec.manifest.clone())
                        });
                    if verifier.manifest() != &rec.manifest {
                        *verifier = ManifestVerifier::new(dir.to_path_buf(), rec.manifest.clone());
                    }
                    let diff = match verifier.verify() {
                        Err(VerifyFailure::Changed(diff)) => Some(diff),
                        Ok(()) => Some(ManifestDiff::default()),
                        Err(VerifyFailure::Unreadable(_)) => None,
                    };
                    (PackState::Modified, Some(rec), diff, None)
                }
                Decision::Approved => {
                    // A full check now (files may have changed while the kernel was down); the
                    // verifier that did it goes to the sandbox, warm.
                    let mut verifier =
                        ManifestVerifier::new(dir.to_path_buf(), rec.manifest.clone());
                    match verifier.verify() {
                        Ok(()) => (PackState::Approved, Some(rec), None, Some(verifier)),
                        Err(VerifyFailure::Changed(diff)) => {
                            let rec = self.persist_modified(id, rec, &diff, "scan");
                            (PackState::Modified, Some(rec), Some(diff), None)
                        }
                        Err(VerifyFailure::Unreadable(why)) => {
                            self.pack_problems
                                .push(format!("pack {id:?} could not be verified: {why}"));
                            (PackState::Error, Some(rec), None, None)
                        }
                    }
                }
            },
        };
        if decided.0 != PackState::Modified {
            self.modified_verifiers.remove(id);
        }
        decided
    }
}
