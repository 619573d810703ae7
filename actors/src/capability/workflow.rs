//! The trust workflow of third-party handler candidates (contract §7.2, §16): scan → `pending`;
//! approve (the pack approved, a re-hash, a copy, a signed trust record); reject with a 1 h
//! cooldown, the third rejection → `blocked`; unblock → `pending`. The state machine is the
//! domain's ([`rumi_domain::capability::candidate`]); this module reads the files, keeps the
//! records (`user_data/capabilities/requests/requests.json`, written atomically) and installs.
//! Every method does blocking file I/O: the API calls them off its threads.
//!
//! Attacks stopped here: a `handler.py` changed between the scan and the approval (TOCTOU: the
//! approval re-reads and re-hashes, and installs the bytes it hashed, never a second read of the
//! file); an approval that would overwrite a different handler at the same slug, or give one
//! permission two providers; approving a candidate of a pack that is not approved, or a blocked
//! one; a candidate key from a URL reaching the disk (it is checked, then only looked up).

use super::candidates::{self, Found, Invalid};
use super::trust::{HandlerTable, Installed, TrustRecord};
use crate::audit::{AuditEntry, Category};
use crate::view::PackState;
use rumi_domain::capability::candidate::{valid_candidate_key, CandidateRecord, CandidateStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The candidates' records.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Book {
    candidates: BTreeMap<String, CandidateRecord>,
}

impl Book {
    /// Reads the records; a missing file is an empty book, an unreadable one is logged (the
    /// trust records, which are signed, still say what is installed).
    pub fn load(path: &Path) -> Book {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the capability candidates' records cannot be read; starting with none (scan again)");
                Book::default()
            }),
            Err(_) => Book::default(),
        }
    }

    fn save(&self, path: &Path) -> Result<(), WorkflowError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|_| WorkflowError::Storage)?;
        if let Some(dir) = path.parent() {
            crate::fsutil::ensure_dir(dir, 0o700).map_err(|_| WorkflowError::Storage)?;
        }
        crate::fsutil::write_atomic(path, &bytes, 0o600).map_err(|e| {
            tracing::error!(error = %e, "cannot write the capability candidates' records");
            WorkflowError::Storage
        })
    }
}

/// One candidate as the API lists it (§16 "Capability candidates").
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CandidateItem {
    /// `pack_id:slug:handler_id:<sha256 of handler.py>`.
    pub candidate_key: String,
    pub pack_id: String,
    pub slug: String,
    pub handler_id: String,
    pub permission_id: String,
    pub sha256: String,
    pub status: CandidateStatus,
    pub reject_count: u32,
    /// RFC 3339 UTC: until when a rejected candidate stays rejected (null otherwise).
    pub cooldown_until: Option<String>,
    /// The last decision's reason or notes.
    pub reason: String,
    /// RFC 3339 UTC of the last change.
    pub updated_at: String,
    /// For an installed candidate: whether its handler is trusted now (its pack approved, its
    /// installed copy and signed trust record intact); null otherwise.
    pub trusted: Option<bool>,
    /// Why an installed candidate's handler is not trusted now (calls answer `trust_denied`).
    pub untrusted_reason: Option<String>,
}

impl From<&CandidateRecord> for CandidateItem {
    fn from(r: &CandidateRecord) -> Self {
        CandidateItem {
            candidate_key: r.candidate_key.clone(),
            pack_id: r.pack_id.clone(),
            slug: r.slug.clone(),
            handler_id: r.handler_id.clone(),
            permission_id: r.permission_id.clone(),
            sha256: r.sha256.clone(),
            status: r.status,
            reject_count: r.reject_count,
            cooldown_until: r.cooldown_until.map(rfc3339),
            reason: r.last_reason.clone(),
            updated_at: rfc3339(r.updated_at),
            trusted: None,
            untrusted_reason: None,
        }
    }
}

/// `GET /api/capability/requests` and `GET /api/capability/blocked`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct CandidateList {
    pub items: Vec<CandidateItem>,
    pub count: usize,
}

/// `POST /api/capability/candidates/scan`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    /// Packs looked at.
    pub packs: usize,
    /// Every valid candidate found, with its status (new ones `pending`).
    pub candidates: Vec<CandidateItem>,
    /// How many were seen for the first time.
    pub new: usize,
    /// Candidates that cannot be offered, and why.
    pub invalid: Vec<Invalid>,
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("{0}")]
    BadKey(String),
    #[error("no candidate {0:?}; run POST /api/capability/candidates/scan (rumi capability scan) and use a key it lists")]
    NotFound(String),
    /// The candidate's state, its pack or its files do not allow it (409).
    #[error("{0}")]
    Conflict(String),
    #[error("the decision could not be recorded; the kernel log says why")]
    Storage,
}

/// A decision taken: the candidate now, and the audit entry to write.
pub struct Decision {
    pub item: CandidateItem,
    pub audit: AuditEntry,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn check_key(key: &str) -> Result<(), WorkflowError> {
    if valid_candidate_key(key) {
        Ok(())
    } else {
        Err(WorkflowError::BadKey(
            "a candidate key is pack_id:slug:handler_id:<64 hex sha256> (URL-encoded in a path)"
                .into(),
        ))
    }
}

impl HandlerTable {
    /// Finds the candidates of every pack and records the new ones `pending`. A rejected
    /// candidate whose cooldown passed is `pending` again; pending ones no longer shipped are
    /// dropped (installed, rejected and blocked ones are kept: they carry decisions).
    pub fn scan(&self) -> Result<(ScanReport, AuditEntry), WorkflowError> {
        let packs = candidates::pack_subdirs(&self.ecosystem);
        let mut found: Vec<Found> = Vec::new();
        let mut invalid = Vec::new();
        for (pack_id, subdir) in &packs {
            let (f, i) = candidates::scan_pack(pack_id, subdir);
            found.extend(f);
            invalid.extend(i);
        }
        let t = now();
        let mut book = self.book.lock();
        let mut new = 0;
        let keys: std::collections::HashSet<String> =
            found.iter().map(Found::candidate_key).collect();
        book.candidates.retain(|k, r| {
            keys.contains(k)
                || !matches!(r.status, CandidateStatus::Pending | CandidateStatus::Failed)
        });
        let mut items = Vec::new();
        for f in &found {
            let key = f.candidate_key();
            let record = book.candidates.entry(key).or_insert_with(|| {
                new += 1;
                CandidateRecord::found(&f.pack_id, &f.slug, &f.manifest, &f.sha256, t)
            });
            record.rescanned(t);
            items.push(CandidateItem::from(&*record));
        }
        book.save(&self.requests_file)?;
        for i in &invalid {
            tracing::warn!(pack_id = %i.pack_id, slug = %i.slug, reason = %i.reason, "an invalid capability handler candidate");
        }
        let audit = AuditEntry::new(Category::Approval, "capability_candidates_scanned", true)
            .details(
                json!({"packs": packs.len(), "found": items.len(), "new": new, "invalid": invalid}),
            );
        Ok((
            ScanReport {
                packs: packs.len(),
                candidates: items,
                new,
                invalid,
            },
            audit,
        ))
    }

    /// Forgets everything of `pack_id` (its uninstall): its installed handlers lose their trust
    /// record first (durably: from then on nothing of them is trusted), their warm workers and
    /// installed copies go, and its candidates are dropped, so a pack installed again under the
    /// id, whoever wrote it, starts with no trusted handler and no decision. Answers how many
    /// handlers were removed.
    pub fn forget_pack(&self, pack_id: &str) -> std::io::Result<usize> {
        let mut book = self.book.lock();
        let theirs: Vec<Arc<Installed>> = self
            .installed
            .read()
            .values()
            .filter(|e| e.record.pack_id == pack_id)
            .cloned()
            .collect();
        for e in &theirs {
            self.trust.remove(&e.record.slug)?;
            e.stop_actor();
            self.installed.write().remove(&e.record.permission_id);
            for dir in [
                self.handlers_dir.join(&e.record.slug),
                self.homes_dir.join(&e.record.slug),
            ] {
                if let Err(err) = std::fs::remove_dir_all(&dir) {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(error = %err, "uninstall: a handler's files could not be removed");
                    }
                }
            }
        }
        let before = book.candidates.len();
        book.candidates.retain(|_, r| r.pack_id != pack_id);
        if book.candidates.len() != before {
            book.save(&self.requests_file)
                .map_err(|_| std::io::Error::other("the candidates' records cannot be written"))?;
        }
        Ok(theirs.len())
    }

    /// How many candidates are in each state (the pending summary).
    pub fn status_counts(&self) -> rumi_domain::capability::candidate::StatusCounts {
        let book = self.book.lock();
        rumi_domain::capability::candidate::StatusCounts::of(
            book.candidates.values().map(|r| r.status),
        )
    }

    /// The candidates with `status` (all when `None`), by key.
    pub fn list(&self, status: Option<CandidateStatus>) -> CandidateList {
        let book = self.book.lock();
        let items: Vec<CandidateItem> = book
            .candidates
            .values()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .map(|r| self.item(r))
            .collect();
        CandidateList {
            count: items.len(),
            items,
        }
    }

    /// A record as the API lists it, with the trust of an installed one checked now.
    fn item(&self, r: &CandidateRecord) -> CandidateItem {
        let mut item = CandidateItem::from(r);
        if r.status == CandidateStatus::Installed {
            let verdict = match self.at_slug(&r.slug) {
                Some(e) if e.tampered.is_some() || e.record.candidate_key == r.candidate_key => {
                    self.trusted(&e).map(|_| ())
                }
                _ => Err("it is not installed any more".to_string()),
            };
            item.trusted = Some(verdict.is_ok());
            item.untrusted_reason = verdict.err();
        }
        item
    }

    /// Approves a candidate: its pack must be approved, its files must hash as they did at the
    /// scan, its slug must be free (or hold an older version of the same handler), and its
    /// permission must have no other provider. Installs the hashed bytes, signs the trust
    /// record, and answers the permission id (the caller warms its actor with
    /// [`HandlerTable::lookup`]). Grants nothing.
    pub fn approve(&self, key: &str, notes: &str) -> Result<(Decision, String), WorkflowError> {
        check_key(key)?;
        let mut book = self.book.lock();
        let record = book
            .candidates
            .get(key)
            .cloned()
            .ok_or_else(|| WorkflowError::NotFound(key.to_string()))?;
        record
            .may_approve()
            .map_err(|r| WorkflowError::Conflict(r.0))?;
        match self.view.pack_state(&record.pack_id) {
            Some(PackState::Approved) => {}
            state => {
                return Err(WorkflowError::Conflict(format!(
                    "pack {:?} is {}; a handler is trusted only from an approved pack: approve the pack first (rumi pack approve {})",
                    record.pack_id,
                    state.map_or("not installed", PackState::as_str),
                    record.pack_id
                )))
            }
        }
        let subdir = candidates::pack_subdirs(&self.ecosystem)
            .into_iter()
            .find(|(id, _)| *id == record.pack_id)
            .map(|(_, d)| d)
            .ok_or_else(|| {
                WorkflowError::Conflict(format!("pack {:?} is no longer installed", record.pack_id))
            })?;
        let found =
            candidates::read_candidate(&record.pack_id, &subdir, &record.slug).map_err(|why| {
                WorkflowError::Conflict(format!(
                    "the candidate cannot be read now ({why}); nothing was installed"
                ))
            })?;
        if found.candidate_key() != record.candidate_key
            || found.manifest.permission_id != record.permission_id
        {
            return Err(WorkflowError::Conflict(
                "the handler's files changed since the scan; nothing was installed: scan again and review the new candidate".into(),
            ));
        }
        if let Some(other) = self.at_slug(&record.slug) {
            if other.tampered.is_some() {
                return Err(WorkflowError::Conflict(format!(
                    "slug {:?} holds a handler whose trust record failed its signature check; remove user_data/capabilities/handlers/{} and user_data/capabilities/trust/{}.json, restart, then approve again",
                    record.slug, record.slug, record.slug
                )));
            }
            if other.record.pack_id != record.pack_id
                || other.record.handler_id != record.handler_id
            {
                return Err(WorkflowError::Conflict(format!(
                    "slug {:?} already holds a different handler ({:?} of pack {:?}); it is never overwritten",
                    record.slug, other.record.handler_id, other.record.pack_id
                )));
            }
        } else if self.handlers_dir.join(&record.slug).exists() {
            return Err(WorkflowError::Conflict(format!(
                "slug {:?} holds files the kernel did not install; remove user_data/capabilities/handlers/{} first",
                record.slug, record.slug
            )));
        }
        if let Some(other) = self.installed.read().get(&record.permission_id) {
            if other.record.slug != record.slug {
                return Err(WorkflowError::Conflict(format!(
                    "permission {:?} is already provided by handler {:?} (slug {:?})",
                    record.permission_id, other.record.handler_id, other.record.slug
                )));
            }
        }
        let t = now();
        let trust = TrustRecord {
            slug: record.slug.clone(),
            pack_id: record.pack_id.clone(),
            handler_id: record.handler_id.clone(),
            permission_id: record.permission_id.clone(),
            function: found.manifest.function.clone(),
            sha256: found.sha256.clone(),
            candidate_key: record.candidate_key.clone(),
            approved_at: rfc3339(t),
            notes: notes.chars().take(500).collect(),
        };
        if let Err(e) = self.install(&found, &trust) {
            tracing::error!(error = %e, slug = %record.slug, "cannot install a capability handler");
            if let Some(r) = book.candidates.get_mut(key) {
                r.failed("the handler could not be installed", t);
            }
            let _ = book.save(&self.requests_file);
            return Err(WorkflowError::Storage);
        }
        // The older version of the same handler at this slug, if any, is superseded.
        book.candidates.retain(|k, r| {
            k == key || !(r.slug == record.slug && r.status == CandidateStatus::Installed)
        });
        let r = book
            .candidates
            .get_mut(key)
            .ok_or_else(|| WorkflowError::NotFound(key.to_string()))?;
        r.approved(notes, t);
        let mut item = CandidateItem::from(&*r);
        item.trusted = Some(true);
        book.save(&self.requests_file)?;
        {
            let mut installed = self.installed.write();
            installed.retain(|_, e| {
                let keep = e.record.slug != trust.slug;
                if !keep {
                    e.stop_actor();
                }
                keep
            });
            installed.insert(
                trust.permission_id.clone(),
                Arc::new(Installed::new(trust.clone(), None)),
            );
        }
        let audit = AuditEntry::new(Category::Approval, "capability_handler_approved", true)
            .pack(&record.pack_id)
            .details(json!({
                "candidate_key": key, "slug": record.slug, "handler_id": record.handler_id,
                "permission_id": record.permission_id, "sha256": record.sha256, "notes": item.reason,
            }));
        Ok((Decision { item, audit }, trust.permission_id))
    }

    /// Copies the hashed bytes to `handlers/<slug>/` and signs the trust record.
    fn install(&self, found: &Found, trust: &TrustRecord) -> std::io::Result<()> {
        let dir = self.handlers_dir.join(&trust.slug);
        crate::fsutil::ensure_dir(&dir, 0o700)?;
        crate::fsutil::write_atomic(&dir.join("handler.json"), &found.manifest_bytes, 0o644)?;
        crate::fsutil::write_atomic(&dir.join("handler.py"), found.source.as_bytes(), 0o644)?;
        self.trust.save(&trust.slug, trust)
    }

    /// Rejects a candidate: `rejected` for an hour, `blocked` at the third rejection.
    pub fn reject(&self, key: &str, reason: &str) -> Result<Decision, WorkflowError> {
        self.decide(key, "capability_handler_rejected", |r, t| {
            r.reject(reason, t)
        })
    }

    /// Unblocks a candidate: `pending`, its count reset.
    pub fn unblock(&self, key: &str, reason: &str) -> Result<Decision, WorkflowError> {
        self.decide(key, "capability_handler_unblocked", |r, t| {
            r.unblock(reason, t)
        })
    }

    fn decide(
        &self,
        key: &str,
        action: &str,
        change: impl FnOnce(
            &mut CandidateRecord,
            i64,
        ) -> Result<(), rumi_domain::capability::candidate::Refused>,
    ) -> Result<Decision, WorkflowError> {
        check_key(key)?;
        let mut book = self.book.lock();
        let record = book
            .candidates
            .get(key)
            .ok_or_else(|| WorkflowError::NotFound(key.to_string()))?;
        let mut updated = record.clone();
        change(&mut updated, now()).map_err(|r| WorkflowError::Conflict(r.0))?;
        let item = CandidateItem::from(&updated);
        book.candidates.insert(key.to_string(), updated);
        book.save(&self.requests_file)?;
        let mut audit = AuditEntry::new(Category::Approval, action, true)
            .pack(&item.pack_id)
            .details(json!({
                "candidate_key": key, "status": item.status, "reject_count": item.reject_count,
                "cooldown_until": item.cooldown_until,
            }));
        if action == "capability_handler_rejected" {
            audit = audit.rejection(&item.reason);
        }
        Ok(Decision { item, audit })
    }
}

/// The audit entry of a refused decision.
pub fn refused_entry(action: &str, key: &str, e: &WorkflowError) -> AuditEntry {
    let key: String = key.chars().take(200).collect();
    AuditEntry::new(Category::Approval, action, false)
        .details(json!({"candidate_key": key}))
        .error(&e.to_string(), Some("refused"))
}
