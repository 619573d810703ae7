//! [`AuditLog`]: the audit files and their counters behind one lock, shared by the
//! [`AuditWriter`](super::AuditWriter) actor (its messages and its group-sync ticks) and by a
//! finished run, which writes its own entry on its own thread before it is answered (see
//! `run_history::RunSink`): a message to the disk thread and its answer were two wake-ups per run.
//!
//! **One lock, two invariants.** (1) The [`AuditQueue`] is taken and written while the lock is
//! held, so batches taken by different threads reach the files in the order they were taken, and
//! every entry once. (2) Whoever holds the lock has written what the queue held before it writes
//! its own entry, so a run's block-call entries precede its record's entry.
//!
//! The group fsync runs outside the lock (an fsync costs milliseconds here, a locked write a few
//! microseconds): it clears the dirty flag under the lock, then syncs the handles it took; any
//! write after the clear marks the files dirty again for the next sync. Syncs are serialised among
//! themselves, so a sync that finds nothing dirty returns only after the sync that cleared the flag
//! has finished.

use super::{entry_may_hold_a_cut, AuditEntry, AuditQueue, AuditSnapshot, Category};
use crate::capability::redact::Redactor;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The audit files (see the module docs).
#[derive(Clone)]
pub struct AuditLog {
    files: Arc<Mutex<Files>>,
    pub(super) queue: AuditQueue,
    sync_lock: Arc<Mutex<()>>,
}

/// What the lock protects.
pub(super) struct Files {
    dir: PathBuf,
    files: HashMap<(Category, String), Arc<File>>,
    dirty: bool,
    pub(super) written: u64,
    pub(super) failed: u64,
    pub(super) syncs: u64,
    pub(super) torn: u64,
    pub(super) skipped: u64,
    /// Secret values, scrubbed from every entry before it is written (invariant 5: whatever
    /// path a value took into an entry — a handler's error, a call's args — it stops here).
    pub(super) redactor: Option<Arc<Redactor>>,
}

/// The audit files, locked: what the holder writes goes after everything queued before.
pub struct LogGuard<'a> {
    files: MutexGuard<'a, Files>,
    queue: &'a AuditQueue,
}

impl AuditLog {
    pub(super) fn new(dir: PathBuf, queue: AuditQueue) -> AuditLog {
        AuditLog {
            files: Arc::new(Mutex::new(Files {
                dir,
                files: HashMap::new(),
                dirty: false,
                written: 0,
                failed: 0,
                syncs: 0,
                torn: 0,
                skipped: 0,
                redactor: None,
            })),
            queue,
            sync_lock: Arc::default(),
        }
    }

    /// Waits for the lock.
    pub fn lock(&self) -> LogGuard<'_> {
        LogGuard {
            files: self.files.lock(),
            queue: &self.queue,
        }
    }

    /// The lock, if it is free within `wait` (a hung disk holds it: the caller goes another way).
    pub fn try_lock_for(&self, wait: Duration) -> Option<LogGuard<'_>> {
        Some(LogGuard {
            files: self.files.try_lock_for(wait)?,
            queue: &self.queue,
        })
    }

    /// Makes every entry written so far durable (see the module docs: outside the lock).
    pub fn sync(&self) -> io::Result<()> {
        let _one_at_a_time = self.sync_lock.lock();
        let handles: Vec<Arc<File>> = {
            let mut f = self.files.lock();
            if !f.dirty {
                return Ok(());
            }
            f.dirty = false;
            f.files.values().cloned().collect()
        };
        for h in &handles {
            if let Err(e) = h.sync_data() {
                let mut f = self.files.lock();
                f.dirty = true;
                f.failed += 1;
                return Err(e);
            }
        }
        self.files.lock().syncs += 1;
        Ok(())
    }

    pub(super) fn set_redactor(&self, redactor: Arc<Redactor>) {
        self.files.lock().redactor = Some(redactor);
    }

    pub(super) fn snapshot(&self) -> AuditSnapshot {
        let mut g = self.lock();
        g.drain();
        let f = &g.files;
        AuditSnapshot {
            written: f.written,
            failed: f.failed,
            syncs: f.syncs,
            open_files: f.files.len(),
            torn_lines_terminated: f.torn,
            unreadable_lines_skipped: f.skipped,
        }
    }

    pub(super) fn count_skipped(&self, n: u64) {
        self.files.lock().skipped += n;
    }

    /// Gives every log file a crash left with a cut last line its newline (see the writer's docs).
    pub(super) fn terminate_torn_lines(&self) -> io::Result<u64> {
        let mut f = self.files.lock();
        let entries = match fs::read_dir(&f.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let is_log = entry.file_name().to_string_lossy().ends_with(".jsonl");
            if is_log && entry.file_type()?.is_file() {
                let mut file = OpenOptions::new()
                    .append(true)
                    .read(true)
                    .open(entry.path())?;
                if crate::fsutil::terminate_last_line(&mut file)? {
                    f.torn += 1;
                    file.sync_data()?;
                }
            }
        }
        Ok(f.torn)
    }
}

impl LogGuard<'_> {
    /// Writes what the queue holds, in push order.
    pub fn drain(&mut self) {
        for entry in self.queue.take() {
            let _ = self.files.record(&entry);
        }
    }

    /// Writes what the queue holds, then `entry`; a failure is counted and logged.
    pub fn write(&mut self, entry: &AuditEntry) -> io::Result<()> {
        self.drain();
        self.files.record(entry)
    }
}

impl Files {
    fn write(&mut self, entry: &AuditEntry) -> io::Result<()> {
        let date = entry.ts.get(..10).unwrap_or("unknown").to_string();
        let key = (entry.category, date);
        if !self.files.contains_key(&key) {
            // Close other days' files as days change so handles do not accumulate, synced first:
            // entries written just before midnight must not miss their group fsync. (Under the
            // lock: once a day.)
            if self.files.keys().any(|(_, d)| *d != key.1) {
                self.sync_locked()?;
            }
            self.files.retain(|(_, d), _| *d == key.1);
            crate::fsutil::ensure_dir(&self.dir, 0o700)?;
            let path = self.dir.join(format!("{}_{}.jsonl", key.0.as_str(), key.1));
            let (f, repaired) = crate::fsutil::open_log(&path, 0o600)?;
            if repaired {
                self.torn += 1;
                tracing::warn!(file = %format!("{}_{}.jsonl", key.0.as_str(), key.1), "an audit file ended in a torn line (a crash cut it); it is kept as an unreadable line and skipped");
            }
            self.files.insert(key.clone(), Arc::new(f));
        }
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        // The entry's text holds a secret's value (or its JSON spelling): rebuilt scrubbed. The
        // rebuild goes through the structure, never a text replacement, so the line stays JSON;
        // a cut-off value can only be at the end of a field, which the structure's scrub sees.
        if let Some(r) = self.redactor.as_ref().filter(|r| r.active()) {
            if r.mentions(&String::from_utf8_lossy(&line)) || entry_may_hold_a_cut(entry) {
                let mut v = serde_json::to_value(entry).map_err(io::Error::other)?;
                r.scrub_value(&mut v);
                line = serde_json::to_vec(&v).map_err(io::Error::other)?;
            }
        }
        line.push(b'\n');
        let file = self.files.get(&key).expect("inserted above");
        (&**file).write_all(&line)?;
        self.dirty = true;
        Ok(())
    }

    /// Writes an entry and counts it; a failure is counted and logged (never the entry's details).
    fn record(&mut self, entry: &AuditEntry) -> io::Result<()> {
        let r = self.write(entry);
        match &r {
            Ok(()) => self.written += 1,
            Err(e) => {
                self.failed += 1;
                tracing::error!(error = %e, category = entry.category.as_str(), "audit write failed");
            }
        }
        r
    }

    fn sync_locked(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        for f in self.files.values() {
            f.sync_data()?;
        }
        self.dirty = false;
        self.syncs += 1;
        Ok(())
    }
}
