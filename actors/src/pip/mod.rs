//! pip dependencies of packs (contract §9 "pip", §16 "pip"): the trust workflow of
//! `requirements.lock` candidates and their offline install.
//!
//! scan → `pending`; approve (the pack approved, the lock re-read and re-hashed, the index
//! checked) → download and install → `installed` (or `failed` with the reason); reject with a
//! 1 h cooldown, the third rejection → `blocked`; unblock → `pending`. The state machine is the
//! domain's, shared with capability handlers ([`rumi_domain::capability::review`]). Records live
//! in `user_data/pip/requests/requests.json`, written atomically.
//!
//! Modules: [`lockfile`] reads locks out of packs (no symlinks, bounded), [`index`] checks an
//! `index_url`, [`install`] downloads and installs, [`builder`] is strict mode's network-less
//! installer container.
//!
//! Attacks stopped here: a lock changed between the scan and the approval (the approval re-reads
//! it and refuses a different hash); two approvals of one pack at once (one install per pack at a
//! time; the second is refused, 409); a candidate key from a URL reaching the disk (checked, then
//! only looked up); an approval of a blocked candidate or of an unapproved pack's lock.

pub mod builder;
pub mod index;
pub mod install;
pub mod lockfile;

use crate::audit::{AuditEntry, Category};
use crate::layout::Layout;
use crate::view::{KernelView, PackState};
use lockfile::{FoundLock, InvalidLock};
use parking_lot::Mutex;
use rumi_domain::capability::candidate::CandidateStatus;
use rumi_domain::pip::{valid_candidate_key, Distribution, Pin, PipRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most candidates kept (a pack has at most two locks; records of old hashes are dropped by
/// scans unless they carry a decision). With a lock of at most 64 KiB, the records stay under
/// about 100 MiB even then.
pub const MAX_RECORDS: usize = 1000;

/// The candidates' records and the last scan's invalid locks.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    candidates: BTreeMap<String, PipRecord>,
    #[serde(default)]
    invalid: Vec<InvalidLock>,
}

impl Book {
    fn load(path: &Path) -> Book {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the pip candidates' records cannot be read; starting with none (scan again)");
                Book::default()
            }),
            Err(_) => Book::default(),
        }
    }

    fn save(&self, path: &Path) -> Result<(), PipError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|_| PipError::Storage)?;
        if let Some(dir) = path.parent() {
            crate::fsutil::ensure_dir(dir, 0o700).map_err(|_| PipError::Storage)?;
        }
        crate::fsutil::write_atomic(path, &bytes, 0o600).map_err(|e| {
            tracing::error!(error = %e, "cannot write the pip candidates' records");
            PipError::Storage
        })
    }
}

/// One candidate as the API lists it (§16 "pip").
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PipItem {
    /// `pack_id:relpath:<sha256 of the lock>`.
    pub candidate_key: String,
    pub pack_id: String,
    /// `requirements.lock` or `backend/requirements.lock`, relative to the pack directory.
    pub relpath: String,
    pub sha256: String,
    pub status: CandidateStatus,
    pub reject_count: u32,
    /// RFC 3339 UTC: until when a rejected candidate stays rejected (null otherwise).
    pub cooldown_until: Option<String>,
    /// The pins of the lock.
    pub packages: Vec<Pin>,
    /// What the install put in the pack's site-packages (empty until `installed`).
    pub installed: Vec<Distribution>,
    /// The last decision's reason, or why the install failed.
    pub reason: String,
    /// RFC 3339 UTC of the last change.
    pub updated_at: String,
}

impl From<&PipRecord> for PipItem {
    fn from(r: &PipRecord) -> Self {
        PipItem {
            candidate_key: r.candidate_key.clone(),
            pack_id: r.pack_id.clone(),
            relpath: r.relpath.clone(),
            sha256: r.sha256.clone(),
            status: r.status,
            reject_count: r.reject_count,
            cooldown_until: r.cooldown_until.map(rfc3339),
            packages: r.packages.clone(),
            installed: r.installed.clone(),
            reason: r.last_reason.clone(),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

/// `GET /api/pip/requests` and `GET /api/pip/blocked`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct PipList {
    pub items: Vec<PipItem>,
    pub count: usize,
}

/// `POST /api/pip/candidates/scan`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct PipScanReport {
    /// Packs looked at.
    pub packs: usize,
    /// Every valid lock found, with its status (new ones `pending`).
    pub candidates: Vec<PipItem>,
    /// How many were seen for the first time.
    pub new: usize,
    /// Locks with refused lines: one entry per line (`line` 0: the file as a whole). Such a lock
    /// is not a candidate.
    pub invalid: Vec<InvalidLock>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PipError {
    /// A malformed key or body (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("no pip candidate {0:?}; run POST /api/pip/candidates/scan (rumi pip scan) and use a key it lists")]
    NotFound(String),
    /// The candidate's state, its pack or its file do not allow it (409).
    #[error("{0}")]
    Conflict(String),
    #[error("the decision could not be recorded; the kernel log says why")]
    Storage,
}

/// A decision taken: the candidate now, and the audit entry to write.
pub struct Decision {
    pub item: PipItem,
    pub audit: AuditEntry,
}

/// What an approval will install (checked, the pack's install slot taken).
pub struct Approval {
    pub key: String,
    pub pack_id: String,
    pub pins: Vec<Pin>,
    pub index_url: Option<String>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn check_key(key: &str) -> Result<(), PipError> {
    if valid_candidate_key(key) {
        Ok(())
    } else {
        Err(PipError::BadRequest(
            "a pip candidate key is pack_id:relpath:<64 hex sha256>, relpath requirements.lock or backend/requirements.lock (URL-encoded in a path)".into(),
        ))
    }
}

/// The pip workflow: the records, the packs' files and the installer.
pub struct Pip {
    ecosystem: PathBuf,
    layout: Layout,
    requests_file: PathBuf,
    view: Arc<KernelView>,
    book: Mutex<Book>,
    /// Packs with an install under way.
    installing: Mutex<HashSet<String>>,
    pub installer: install::Installer,
}

/// A pack held by an uninstall (see [`Pip::hold_for_uninstall`]); released when dropped.
pub struct UninstallHold {
    pip: Arc<Pip>,
    pack: String,
}

impl Drop for UninstallHold {
    fn drop(&mut self) {
        self.pip.installing.lock().remove(&self.pack);
    }
}

/// The records' file.
pub fn requests_file(layout: &Layout) -> PathBuf {
    layout
        .user_data()
        .join("pip")
        .join("requests")
        .join("requests.json")
}

/// `{pending_count, rejected_count, blocked_count, failed_count, installed_count}` of the pip
/// section of `user_data/pending/summary.json` (§2.5), read from the records.
pub fn pending_summary(layout: &Layout) -> Value {
    let path = requests_file(layout);
    let book = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Book>(&bytes) {
            Ok(b) => b,
            Err(_) => return json!({"error": "the pip records cannot be read"}),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Book::default(),
        Err(_) => return json!({"error": "the pip records cannot be read"}),
    };
    let count = |s: CandidateStatus| book.candidates.values().filter(|r| r.status == s).count();
    json!({
        "pending_count": count(CandidateStatus::Pending),
        "rejected_count": count(CandidateStatus::Rejected),
        "blocked_count": count(CandidateStatus::Blocked),
        "failed_count": count(CandidateStatus::Failed),
        "installed_count": count(CandidateStatus::Installed),
    })
}

impl Pip {
    /// Opens the records and removes what an interrupted install left (downloads, half-filled
    /// trees beside a pack's site-packages).
    pub fn new(layout: &Layout, view: Arc<KernelView>, installer: install::Installer) -> Pip {
        let _ = std::fs::remove_dir_all(&installer.work_root);
        if let Ok(packs) = std::fs::read_dir(layout.user_data().join("packs")) {
            for p in packs.filter_map(Result::ok).take(100_000) {
                let python = p.path().join("python");
                // Never through a link a pack may have planted (permissive workers write there).
                if !std::fs::symlink_metadata(&python).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                if let Ok(entries) = std::fs::read_dir(&python) {
                    for e in entries.filter_map(Result::ok).take(1000) {
                        if e.file_name()
                            .to_string_lossy()
                            .starts_with("site-packages.new-")
                        {
                            let _ = std::fs::remove_dir_all(e.path());
                        }
                    }
                }
            }
        }
        let requests_file = requests_file(layout);
        Pip {
            ecosystem: layout.ecosystem(),
            layout: layout.clone(),
            book: Mutex::new(Book::load(&requests_file)),
            requests_file,
            view,
            installing: Mutex::default(),
            installer,
        }
    }

    /// Finds the locks of every pack and records the new ones `pending`; a rejected candidate
    /// whose cooldown passed is `pending` again; pending ones no longer shipped are dropped.
    pub fn scan(&self) -> Result<(PipScanReport, AuditEntry), PipError> {
        let packs = lockfile::pack_dirs(&self.ecosystem);
        let mut found: Vec<FoundLock> = Vec::new();
        let mut invalid = Vec::new();
        for (pack_id, dir) in &packs {
            let (f, i) = lockfile::scan_pack(pack_id, dir);
            found.extend(f);
            invalid.extend(i);
        }
        let t = now();
        let mut book = self.book.lock();
        let keys: HashSet<String> = found
            .iter()
            .map(|f| rumi_domain::pip::candidate_key(&f.pack_id, &f.relpath, &f.sha256))
            .collect();
        book.candidates.retain(|k, r| {
            keys.contains(k)
                || !matches!(r.status, CandidateStatus::Pending | CandidateStatus::Failed)
        });
        let mut new = 0;
        let mut items = Vec::new();
        for f in found {
            let key = rumi_domain::pip::candidate_key(&f.pack_id, &f.relpath, &f.sha256);
            if !book.candidates.contains_key(&key) && book.candidates.len() >= MAX_RECORDS {
                invalid.push(InvalidLock {
                    pack_id: f.pack_id.clone(),
                    relpath: f.relpath.clone(),
                    line: 0,
                    reason: format!("the kernel keeps at most {MAX_RECORDS} pip candidates; reject or unblock old ones, or remove packs, then scan again"),
                });
                continue;
            }
            let record = book.candidates.entry(key).or_insert_with(|| {
                new += 1;
                PipRecord::found(&f.pack_id, &f.relpath, &f.sha256, f.pins.clone(), t)
            });
            record.review().rescanned(t);
            items.push(PipItem::from(&*record));
        }
        book.invalid = invalid.clone();
        book.save(&self.requests_file)?;
        for i in &invalid {
            tracing::warn!(pack_id = %i.pack_id, relpath = %i.relpath, line = i.line, reason = %i.reason, "an invalid requirements.lock");
        }
        let audit = AuditEntry::new(Category::Approval, "pip_candidates_scanned", true).details(
            json!({"packs": packs.len(), "found": items.len(), "new": new, "invalid": invalid}),
        );
        Ok((
            PipScanReport {
                packs: packs.len(),
                candidates: items,
                new,
                invalid,
            },
            audit,
        ))
    }

    /// The last scan's invalid locks (for the diagnostics).
    pub fn invalid(&self) -> Vec<InvalidLock> {
        self.book.lock().invalid.clone()
    }

    /// The candidates with `status` (all when `None`), by key.
    pub fn list(&self, status: Option<CandidateStatus>) -> PipList {
        let book = self.book.lock();
        let items: Vec<PipItem> = book
            .candidates
            .values()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .map(PipItem::from)
            .collect();
        PipList {
            count: items.len(),
            items,
        }
    }

    /// The checks of an approval, before anything is downloaded: the candidate may be approved,
    /// its pack is approved, its lock still hashes as it did at the scan, and no install of its
    /// pack is under way (the slot is taken: [`Pip::finish`] gives it back).
    pub fn begin(&self, key: &str, index_url: Option<String>) -> Result<Approval, PipError> {
        check_key(key)?;
        let record = self
            .book
            .lock()
            .candidates
            .get(key)
            .cloned()
            .ok_or_else(|| PipError::NotFound(key.to_string()))?;
        record.may_approve().map_err(|r| PipError::Conflict(r.0))?;
        match self.view.pack_state(&record.pack_id) {
            Some(PackState::Approved) => {}
            state => {
                return Err(PipError::Conflict(format!(
                    "pack {:?} is {}; pip dependencies are installed only for an approved pack: approve the pack first (rumi pack approve {})",
                    record.pack_id,
                    state.map_or("not installed", PackState::as_str),
                    record.pack_id
                )))
            }
        }
        let dir = lockfile::pack_dirs(&self.ecosystem)
            .into_iter()
            .find(|(id, _)| *id == record.pack_id)
            .map(|(_, d)| d)
            .ok_or_else(|| {
                PipError::Conflict(format!("pack {:?} is no longer installed", record.pack_id))
            })?;
        let now_lock = match lockfile::read_lock(&record.pack_id, &dir, &record.relpath) {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(PipError::Conflict(format!(
                    "{} is gone from pack {:?}; nothing was installed",
                    record.relpath, record.pack_id
                )))
            }
            Err(_) => {
                return Err(PipError::Conflict(
                    "the lock changed since the scan and is no longer valid; nothing was installed: scan again".into(),
                ))
            }
        };
        if now_lock.sha256 != record.sha256 {
            return Err(PipError::Conflict(
                "the lock changed since the scan; nothing was installed: scan again and review the new candidate".into(),
            ));
        }
        if !self.installing.lock().insert(record.pack_id.clone()) {
            return Err(PipError::Conflict(format!(
                "an install for pack {:?} is under way; try again when it has finished",
                record.pack_id
            )));
        }
        Ok(Approval {
            key: key.to_string(),
            pack_id: record.pack_id,
            // The pins of the bytes hashed now (the same as the scan's: the hash matched).
            pins: now_lock.pins,
            index_url,
        })
    }

    /// Holds `pack` while it is uninstalled: no install of it may begin meanwhile (one that did
    /// would recreate its packages, for whatever pack takes the id next). Refused while an
    /// install of the pack is under way.
    pub fn hold_for_uninstall(self: &Arc<Self>, pack: &str) -> Result<UninstallHold, PipError> {
        if !self.installing.lock().insert(pack.to_string()) {
            return Err(PipError::Conflict(format!(
                "a pip install for pack {pack:?} is under way; uninstall it when the install has finished"
            )));
        }
        Ok(UninstallHold {
            pip: Arc::clone(self),
            pack: pack.to_string(),
        })
    }

    /// Forgets every candidate of `pack` (its uninstall): installed again, its locks are
    /// reviewed again from nothing.
    pub fn forget_pack(&self, pack: &str) -> Result<(), PipError> {
        let mut book = self.book.lock();
        let before = book.candidates.len();
        book.candidates.retain(|_, r| r.pack_id != pack);
        if book.candidates.len() != before {
            book.save(&self.requests_file)?;
        }
        Ok(())
    }

    /// Runs the install of a begun approval and records its outcome.
    pub async fn install(&self, a: &Approval) -> Result<Decision, PipError> {
        let target = self.layout.pack_site_packages(&a.pack_id);
        let outcome = self
            .installer
            .install(&a.pack_id, &a.pins, a.index_url.as_deref(), &target)
            .await;
        self.finish(a, outcome)
    }

    fn finish(
        &self,
        a: &Approval,
        outcome: Result<Vec<Distribution>, String>,
    ) -> Result<Decision, PipError> {
        self.installing.lock().remove(&a.pack_id);
        let t = now();
        let mut book = self.book.lock();
        let ok = outcome.is_ok();
        if ok {
            // The pack's site-packages holds this lock's packages now: an older installed lock
            // of the same pack is superseded.
            book.candidates.retain(|k, r| {
                k == &a.key || !(r.pack_id == a.pack_id && r.status == CandidateStatus::Installed)
            });
        }
        let r = book
            .candidates
            .get_mut(&a.key)
            .ok_or_else(|| PipError::NotFound(a.key.clone()))?;
        match &outcome {
            Ok(dists) => {
                r.installed = dists.clone();
                r.review().approved("", t);
            }
            Err(why) => {
                tracing::warn!(pack_id = %a.pack_id, reason = %why, "a pip install failed");
                r.review().failed(why, t);
            }
        }
        let item = PipItem::from(&*r);
        book.save(&self.requests_file)?;
        let audit = AuditEntry::new(Category::Approval, "pip_request_approved", ok)
            .pack(&a.pack_id)
            .details(json!({
                "candidate_key": a.key, "status": item.status, "installed": item.installed,
                "index": a.index_url.as_deref().map_or(
                    if self.installer.find_links.is_some() { "RUMI_PIP_FIND_LINKS" } else { "pip configuration" },
                    |_| "index_url"),
            }));
        let audit = match outcome {
            Ok(_) => audit,
            Err(why) => audit.error(&why, Some("install_failed")),
        };
        Ok(Decision { item, audit })
    }

    /// Rejects a candidate: `rejected` for an hour, `blocked` at the third rejection.
    pub fn reject(&self, key: &str, reason: &str) -> Result<Decision, PipError> {
        self.decide(key, "pip_request_rejected", |r, t| {
            r.review().reject(reason, t)
        })
    }

    /// Unblocks a candidate: `pending`, its count reset.
    pub fn unblock(&self, key: &str, reason: &str) -> Result<Decision, PipError> {
        self.decide(key, "pip_request_unblocked", |r, t| {
            r.review().unblock(reason, t)
        })
    }

    fn decide(
        &self,
        key: &str,
        action: &str,
        change: impl FnOnce(
            &mut PipRecord,
            i64,
        ) -> Result<(), rumi_domain::capability::candidate::Refused>,
    ) -> Result<Decision, PipError> {
        check_key(key)?;
        let pack = key.split(':').next().unwrap_or_default();
        if self.installing.lock().contains(pack) {
            return Err(PipError::Conflict(format!(
                "an install for pack {pack:?} is under way; decide when it has finished"
            )));
        }
        let mut book = self.book.lock();
        let record = book
            .candidates
            .get(key)
            .ok_or_else(|| PipError::NotFound(key.to_string()))?;
        let mut updated = record.clone();
        change(&mut updated, now()).map_err(|r| PipError::Conflict(r.0))?;
        let item = PipItem::from(&updated);
        book.candidates.insert(key.to_string(), updated);
        book.save(&self.requests_file)?;
        let mut audit = AuditEntry::new(Category::Approval, action, true)
            .pack(&item.pack_id)
            .details(json!({
                "candidate_key": key, "status": item.status, "reject_count": item.reject_count,
                "cooldown_until": item.cooldown_until,
            }));
        if action == "pip_request_rejected" {
            audit = audit.rejection(&item.reason);
        }
        Ok(Decision { item, audit })
    }
}

/// The audit entry of a refused request.
pub fn refused_entry(action: &str, key: &str, e: &PipError) -> AuditEntry {
    let key: String = key.chars().take(200).collect();
    AuditEntry::new(Category::Approval, action, false)
        .details(json!({"candidate_key": key}))
        .error(&e.to_string(), Some("refused"))
}
