//! Trust in third-party capability handlers (contract §7.2): the installed handlers by permission
//! id, the broker's "handler exists" and "trust" steps ([`HandlerTable::lookup`]), and one
//! supervised [`CapabilityHandler`] actor per trusted handler. The candidate workflow (scan,
//! approve, reject, block, unblock) is in [`super::workflow`].
//!
//! A handler is trusted when its signed trust record (`user_data/capabilities/trust/<slug>.json`,
//! [`SignedRecords`]) names the SHA-256 of the installed `handlers/<slug>/handler.py`, the record
//! itself checks out, and the pack that provided it is approved now. Each lookup re-verifies all
//! three, stat-cached (a file is re-hashed only when its size, mtime, ctime or inode changed, or
//! changed less than 2 s ago), so it costs an `lstat`, an `open`+`fstat` and a few lock reads.
//!
//! Attacks stopped here: an installed handler edited (or replaced by a symlink) after approval —
//! `trust_denied` at its next call, and its warm worker is stopped; a trust record edited by hand,
//! copied from another slug or rolled back to an older signed version; a handler whose pack was
//! rejected or modified since (never trusted while its pack is not approved); a handler actor
//! that panicked (a new one is started at the next lookup, so a crash costs one call).

use super::handler::{CapabilityHandler, HandlerSpec, Stop};
use crate::keys::{SignedRecords, SigningKey, Stored};
use crate::layout::Layout;
use crate::view::{KernelView, PackState};
use actix::prelude::*;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The signed record of an approval: which handler, from which pack, with which hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRecord {
    pub slug: String,
    pub pack_id: String,
    pub handler_id: String,
    pub permission_id: String,
    /// The entrypoint's function (`execute`).
    pub function: String,
    /// SHA-256 of the installed `handler.py`.
    pub sha256: String,
    pub candidate_key: String,
    pub approved_at: String,
    pub notes: String,
}

/// (size, mtime, ctime, inode, device): what must stay equal for a cached check to hold. ctime
/// is in it because no user call can set it back (`touch -d` sets mtime only).
type StatKey = (u64, i64, i64, i64, i64, u64, u64);

fn stat_key(m: &std::fs::Metadata) -> StatKey {
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
        m.dev(),
    )
}

/// How old a file's last change must be before its stat is trusted to stand for its content:
/// timestamps are coarse (a clock tick), so an edit of the same size within the tick of the last
/// check would keep every field of the stat. Until then each lookup re-reads (as the pack
/// manifest check does).
const STAT_TRUST_AGE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `m`'s last change is old enough, at `now`, for its stat to be trusted.
fn settled(m: &std::fs::Metadata, now: std::time::SystemTime) -> bool {
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            m.ctime().max(0) as u64,
            m.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
    now.duration_since(changed)
        .is_ok_and(|age| age >= STAT_TRUST_AGE)
}

/// A cached check: the stat it was made under, and whether that stat may stand for the content.
type Cached<T> = Option<(StatKey, bool, T)>;

/// The cached outcome of the last verification of one installed handler.
#[derive(Default)]
struct Checked {
    source: Cached<Result<Arc<str>, String>>,
    record: Cached<Result<(), String>>,
}

/// Whether the cache entry still holds for a file now stat'ed as `key`.
fn hit<T>(cached: &Cached<T>, key: &StatKey) -> bool {
    cached
        .as_ref()
        .is_some_and(|(k, settled, _)| *settled && k == key)
}

/// One installed handler.
pub(crate) struct Installed {
    pub(crate) record: TrustRecord,
    /// Set at boot when the trust record failed its check: never trusted.
    pub(crate) tampered: Option<String>,
    checked: Mutex<Checked>,
    actor: Mutex<Option<Addr<CapabilityHandler>>>,
}

impl Installed {
    pub(crate) fn new(record: TrustRecord, tampered: Option<String>) -> Self {
        Installed {
            record,
            tampered,
            checked: Mutex::new(Checked::default()),
            actor: Mutex::new(None),
        }
    }

    /// Stops the handler's actor (its worker is killed).
    pub(crate) fn stop_actor(&self) {
        if let Some(a) = self.actor.lock().take() {
            a.do_send(Stop);
        }
    }
}

/// The installed third-party handlers, by permission id.
pub struct HandlerTable {
    pub(crate) handlers_dir: PathBuf,
    pub(crate) homes_dir: PathBuf,
    pub(crate) requests_file: PathBuf,
    trust_dir: PathBuf,
    pub(crate) ecosystem: PathBuf,
    host_script: PathBuf,
    pub(crate) trust: SignedRecords,
    pub(crate) view: Arc<KernelView>,
    pub(crate) installed: RwLock<HashMap<String, Arc<Installed>>>,
    /// The candidates' records; holding it serialises every decision.
    pub(crate) book: Mutex<super::workflow::Book>,
    python: RwLock<PathBuf>,
    /// Scrubs secret values from the lines handler workers write to stderr.
    redactor: RwLock<Option<Arc<super::redact::Redactor>>>,
    /// The thread the handler actors (and so their workers' death signal) live on.
    arbiter: Mutex<Option<ArbiterHandle>>,
    /// The wall clock the stat cache ages files by (tests move it).
    clock: fn() -> std::time::SystemTime,
}

impl HandlerTable {
    /// A table with nothing installed and no pack approved (tests of other services).
    pub fn empty(dir: PathBuf) -> Self {
        let mut key = [0u8; 32];
        let _ = getrandom::getrandom(&mut key);
        let home = dir.clone();
        Self::new(
            &dir,
            home.join("ecosystem"),
            home.join("runtime/rumi_handlerhost.py"),
            SigningKey::from_bytes(&key),
            Arc::new(KernelView::default()),
        )
    }

    fn new(
        dir: &Path,
        ecosystem: PathBuf,
        host_script: PathBuf,
        key: SigningKey,
        view: Arc<KernelView>,
    ) -> Self {
        HandlerTable {
            handlers_dir: dir.join("handlers"),
            homes_dir: dir.join("homes"),
            requests_file: dir.join("requests").join("requests.json"),
            trust_dir: dir.join("trust"),
            ecosystem,
            host_script,
            trust: SignedRecords::new(dir.join("trust"), key),
            view,
            installed: RwLock::new(HashMap::new()),
            book: Mutex::new(Default::default()),
            python: RwLock::new(PathBuf::from("/usr/bin/python3")),
            redactor: RwLock::new(None),
            arbiter: Mutex::new(None),
            clock: std::time::SystemTime::now,
        }
    }

    /// The same table with another wall clock for the stat cache (tests).
    pub fn with_clock(mut self, clock: fn() -> std::time::SystemTime) -> Self {
        self.clock = clock;
        self
    }

    /// Opens the table from the home: the candidates' records and every installed handler (their
    /// files are verified at their first lookup). The signing key is the one approvals use.
    pub fn open(layout: &Layout, view: Arc<KernelView>) -> io::Result<Self> {
        let key = SigningKey::load_or_create(&layout.keys())?;
        let dir = layout.capabilities();
        // Nothing writes here yet: temporary files of writes a crash interrupted are stale.
        let mut dirs = vec![dir.join("requests"), dir.join("trust")];
        if let Ok(entries) = std::fs::read_dir(dir.join("handlers")) {
            dirs.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        crate::fsutil::remove_interrupted_writes(&dirs)?;
        let table = Self::new(
            &layout.capabilities(),
            layout.ecosystem(),
            layout.runtime_python().join("rumi_handlerhost.py"),
            key,
            view,
        );
        *table.book.lock() = super::workflow::Book::load(&table.requests_file);
        let mut installed = HashMap::new();
        for slug in table.trust.ids() {
            if !rumi_domain::capability::candidate::valid_name(&slug) {
                continue;
            }
            let entry = match table.trust.load(&slug, |r: &TrustRecord| r.slug == slug) {
                Stored::Valid(r) => Installed::new(r, None),
                Stored::Tampered => {
                    tracing::error!(slug = %slug, "a capability handler's trust record failed its signature check; the handler is not trusted");
                    // Its permission id, unsigned, only to answer `trust_denied` rather than
                    // `handler_not_found`.
                    let Some(permission_id) = installed_permission(&table.handlers_dir, &slug)
                    else {
                        continue;
                    };
                    let record = TrustRecord {
                        slug: slug.clone(),
                        permission_id,
                        pack_id: String::new(),
                        handler_id: slug.clone(),
                        function: String::new(),
                        sha256: String::new(),
                        candidate_key: String::new(),
                        approved_at: String::new(),
                        notes: String::new(),
                    };
                    Installed::new(
                        record,
                        Some("its trust record failed its signature check".into()),
                    )
                }
                Stored::None => continue,
            };
            installed.insert(entry.record.permission_id.clone(), Arc::new(entry));
        }
        *table.installed.write() = installed;
        Ok(table)
    }

    /// The interpreter handler workers run (`RuntimeConfig::python`).
    pub fn set_python(&self, python: PathBuf) {
        *self.python.write() = python;
    }

    /// The redactor of secret values for the handler workers' logged stderr.
    pub fn set_redactor(&self, redactor: Arc<super::redact::Redactor>) {
        *self.redactor.write() = Some(redactor);
    }

    /// The "handler exists" and "trust" steps for `permission_id` (not a built-in). Must be
    /// called inside the actix system (a handler's actor may be started).
    pub fn lookup(&self, permission_id: &str) -> Lookup {
        let Some(entry) = self.installed.read().get(permission_id).cloned() else {
            return Lookup::NotFound;
        };
        let source = match self.trusted(&entry) {
            Ok(source) => source,
            Err(reason) => {
                // Its warm worker goes too: nothing of an untrusted handler stays running.
                entry.stop_actor();
                return Lookup::Untrusted {
                    handler_id: entry.record.handler_id.clone(),
                    reason,
                };
            }
        };
        let mut actor = entry.actor.lock();
        if let Some(a) = actor.as_ref().filter(|a| a.connected()) {
            return Lookup::Ready {
                handler_id: entry.record.handler_id.clone(),
                actor: a.clone(),
            };
        }
        // None yet, or the last one died (a panic): supervision is a fresh actor here.
        let spec = HandlerSpec {
            handler_id: entry.record.handler_id.clone(),
            permission_id: entry.record.permission_id.clone(),
            python: self.python.read().clone(),
            host_script: self.host_script.clone(),
            handler_dir: self.handlers_dir.join(&entry.record.slug),
            home: self.homes_dir.join(&entry.record.slug),
            source,
            function: entry.record.function.clone(),
            redactor: self.redactor.read().clone(),
        };
        let arbiter = self.arbiter.lock().get_or_insert_with(new_arbiter).clone();
        let addr =
            CapabilityHandler::start_in_arbiter(&arbiter, move |_| CapabilityHandler::new(spec));
        *actor = Some(addr.clone());
        Lookup::Ready {
            handler_id: entry.record.handler_id.clone(),
            actor: addr,
        }
    }

    /// The trust step for an installed handler: its record sound, its pack approved now, its
    /// installed copy matching the trusted hash (stat-cached). Answers the verified source, or
    /// why it is not trusted.
    pub(crate) fn trusted(&self, entry: &Installed) -> Result<Arc<str>, String> {
        if let Some(why) = &entry.tampered {
            return Err(why.clone());
        }
        match self.view.pack_state(&entry.record.pack_id) {
            Some(PackState::Approved) => {}
            state => {
                return Err(format!(
                    "its pack {:?} is {}, not approved",
                    entry.record.pack_id,
                    state.map_or("not installed", PackState::as_str)
                ))
            }
        }
        self.verify(entry)
    }

    /// Whether the installed copy and the trust record still match (stat-cached); answers the
    /// verified source.
    fn verify(&self, entry: &Installed) -> Result<Arc<str>, String> {
        let slug = &entry.record.slug;
        let mut checked = entry.checked.lock();
        let record_path = self.trust_path(slug);
        let meta = std::fs::symlink_metadata(&record_path)
            .map_err(|_| "its trust record is missing".to_string())?;
        let key = stat_key(&meta);
        if !hit(&checked.record, &key) {
            let outcome = match self.trust.load(slug, |r: &TrustRecord| r.slug == *slug) {
                Stored::Valid(r) if r == entry.record => Ok(()),
                Stored::Valid(_) => Err("its trust record was replaced by another".to_string()),
                Stored::Tampered => Err("its trust record failed its signature check".to_string()),
                Stored::None => Err("its trust record is missing".to_string()),
            };
            checked.record = Some((key, settled(&meta, (self.clock)()), outcome));
        }
        if let Some((_, _, Err(why))) = &checked.record {
            return Err(why.clone());
        }
        let file = open_regular(&self.handlers_dir.join(slug).join("handler.py"))
            .map_err(|_| "its installed handler.py is missing or not a regular file".to_string())?;
        let meta = file
            .metadata()
            .map_err(|_| "its installed handler.py cannot be read".to_string())?;
        let key = stat_key(&meta);
        if !hit(&checked.source, &key) {
            let outcome = hash_matches(file, &entry.record.sha256);
            checked.source = Some((key, settled(&meta, (self.clock)()), outcome));
        }
        match &checked.source {
            Some((_, _, Ok(source))) => Ok(Arc::clone(source)),
            Some((_, _, Err(why))) => Err(why.clone()),
            None => Err("not verified".into()),
        }
    }

    pub(crate) fn trust_path(&self, slug: &str) -> PathBuf {
        self.trust_dir.join(format!("{slug}.json"))
    }

    /// The installed handler at `slug`, if any.
    pub(crate) fn at_slug(&self, slug: &str) -> Option<Arc<Installed>> {
        self.installed
            .read()
            .values()
            .find(|e| e.record.slug == slug)
            .cloned()
    }
}

fn new_arbiter() -> ArbiterHandle {
    Arbiter::new().handle()
}

/// Opens a regular file without following a symlink.
fn open_regular(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Reads (bounded) and hashes `file`; the text when it matches `sha256`.
fn hash_matches(file: File, sha256: &str) -> Result<Arc<str>, String> {
    let max = super::candidates::MAX_SOURCE_BYTES;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| "its installed handler.py cannot be read".to_string())?;
    if bytes.len() as u64 > max || hex::encode(Sha256::digest(&bytes)) != sha256 {
        return Err("its installed handler.py no longer matches the trusted SHA-256".into());
    }
    String::from_utf8(bytes)
        .map(Arc::from)
        .map_err(|_| "its installed handler.py is not UTF-8".into())
}

/// The permission id in an installed `handler.json` (unsigned; only for a tampered record).
fn installed_permission(handlers: &Path, slug: &str) -> Option<String> {
    let f = open_regular(&handlers.join(slug).join("handler.json")).ok()?;
    let mut bytes = Vec::new();
    f.take(super::candidates::MAX_MANIFEST_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    rumi_domain::capability::candidate::parse_manifest(&bytes)
        .ok()
        .map(|m| m.permission_id)
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
