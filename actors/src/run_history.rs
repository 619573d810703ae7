//! The run history (contract §3.7): the newest records in memory and in
//! `user_data/runs/runs.jsonl`, behind one lock ([`RunStore`]), and the `RunHistory` actor on the
//! disk thread that syncs, compacts and answers readers.
//!
//! Every `FlowRun` ends by storing its record and its `flow_execution` audit entry through the
//! [`RunSink`], and answers its caller only once both are written: that is what "acknowledged"
//! means for a run (see the README's durability statement). Written means in the file, so a crash
//! of the kernel (kill -9, a panic, the OOM killer) loses no answered run; the files are fsynced in
//! groups on the audit's interval (and at shutdown), so a crash of the machine loses at most the
//! runs answered in the last interval. Awaiting an fsync per run would cost ~4 ms on this VM
//! against a 0.4 ms run.
//!
//! **Where the write happens.** The run writes both lines itself, on its own thread, holding the
//! history's lock and then the audit's: two buffered `write`s of a few microseconds. Handing them
//! to the disk thread cost two thread wake-ups per run — a third of a `set`-only run's CPU on this
//! VM (measured: README, "The block path at the physical floor"). A run hands its record to the
//! disk thread instead ([`RunFinished`], answered within the store deadline) when a lock is not
//! free within [`LOCK_WAIT`] — a compaction holds it, or a write that hangs on a sick disk — and,
//! for [`SLOW_BACKOFF`], after a store on its thread took longer than [`SLOW_STORE`]: a slow disk
//! then stalls the disk thread, as before, not the threads that serve requests. The group fsync
//! runs outside both locks.
//!
//! At start the newest records are loaded back, skipping (and counting) unreadable lines; a torn
//! last line is given its newline before the first append. The file is compacted (atomically, on
//! the disk thread) when it holds twice the bound, keeping the newest records, the one just stored
//! included.
//!
//! **What memory holds.** Each record as the line the file holds (with its run and flow ids): a
//! run serialises its record once, for the file, and neither copies it for the store nor has it
//! serialised again by a compaction (which writes the lines it holds); readers (`GET
//! /api/runs...`, rare against runs) parse the lines they return.

use crate::audit::{AuditEntry, AuditLog, LogGuard};
use actix::prelude::*;
use parking_lot::Mutex;
use rumi_domain::run::RunRecord;
use serde_json::Value;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest result kept in a stored record; bigger ones are summarised.
const MAX_STORED_RESULT_BYTES: usize = 64 * 1024;

/// How long a run waits for the history's and the audit's locks before it hands its record to
/// the disk thread instead.
pub const LOCK_WAIT: Duration = Duration::from_millis(1);

/// A store on a run's thread slower than this (a sick disk) sends the stores of the next
/// [`SLOW_BACKOFF`] to the disk thread.
pub const SLOW_STORE: Duration = Duration::from_millis(50);

/// See [`SLOW_STORE`].
pub const SLOW_BACKOFF: Duration = Duration::from_secs(5);

/// A run ended: store its record and write its audit entry; answers once both are written. Made
/// by [`RunFinished::new`] on the run's thread: its record already serialised.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RunFinished {
    run: StoredRun,
    audit: AuditEntry,
}

impl RunFinished {
    /// `record` as the file will hold it (its result summarised when large) with its audit entry.
    pub fn new(record: &RunRecord, audit: AuditEntry) -> Result<RunFinished, StoreError> {
        Ok(RunFinished {
            run: StoredRun::of(record)?,
            audit,
        })
    }
}

/// One stored record: its line in the file (newline included) and the ids readers look for.
#[derive(Clone)]
struct StoredRun {
    run_id: Box<str>,
    flow_id: Box<str>,
    line: Box<[u8]>,
}

impl StoredRun {
    /// `record` serialised, its result summarised when it is larger than
    /// [`MAX_STORED_RESULT_BYTES`].
    fn of(record: &RunRecord) -> Result<StoredRun, StoreError> {
        // `json_size` never counts below the text's size, so only a result it finds large is
        // measured exactly.
        let large = rumi_domain::vars::json_size(&record.result, MAX_STORED_RESULT_BYTES + 1)
            > MAX_STORED_RESULT_BYTES
            && serde_json::to_vec(&record.result)
                .map_or(true, |v| v.len() > MAX_STORED_RESULT_BYTES);
        let summarised;
        let record = if large {
            let keys: Vec<Value> = record
                .result
                .as_object()
                .map(|o| o.keys().map(|k| Value::from(k.as_str())).collect())
                .unwrap_or_default();
            let mut copy = record.clone();
            copy.result = serde_json::json!({"_truncated": true, "_keys": keys});
            summarised = copy;
            &summarised
        } else {
            record
        };
        let mut line = serde_json::to_vec(record).map_err(|e| {
            tracing::error!(error = %e, "a run record could not be serialised");
            StoreError::Record(io::ErrorKind::InvalidData)
        })?;
        line.push(b'\n');
        Ok(StoredRun {
            run_id: record.run_id.as_str().into(),
            flow_id: record.flow_id.as_str().into(),
            line: line.into_boxed_slice(),
        })
    }

    /// The record again (a line this store wrote or loaded always reads back; one that does not
    /// is logged and left out).
    fn read(&self) -> Option<RunRecord> {
        serde_json::from_slice(&self.line)
            .map_err(|e| tracing::error!(run_id = %self.run_id, error = %e, "a stored run record does not read back"))
            .ok()
    }
}

/// Why a finished run's record or audit entry is not written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the run record could not be written to user_data/runs/runs.jsonl ({0}); check the disk"
    )]
    Record(io::ErrorKind),
    #[error("the run's audit entry could not be written; check the disk")]
    Audit,
}

/// One run by id.
#[derive(Message)]
#[rtype(result = "Option<RunRecord>")]
pub struct GetRun(pub String);

/// The newest runs, newest first.
#[derive(Message)]
#[rtype(result = "Vec<RunRecord>")]
pub struct ListRuns {
    pub limit: usize,
    pub flow_id: Option<String>,
}

/// The file holds twice the bound: rewrite it with the newest records (sent by a run that stored
/// on its own thread; the disk thread compacts).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Compact;

// ---- the store ---------------------------------------------------------------------------------

/// The records, in memory and in their file, behind one lock (see the module docs).
#[derive(Clone)]
pub struct RunStore {
    inner: Arc<Mutex<Records>>,
    sync_lock: Arc<Mutex<()>>,
}

struct Records {
    path: PathBuf,
    cap: usize,
    records: VecDeque<StoredRun>,
    lines_in_file: usize,
    file: Option<Arc<File>>,
    dirty: bool,
    /// A [`Compact`] is on its way to the disk thread: runs storing meanwhile do not send more
    /// (thousands a second would, while a compaction's fsync takes milliseconds).
    compact_asked: bool,
}

impl RunStore {
    /// Loads the newest `cap` records from `dir/runs.jsonl`.
    pub fn load(dir: PathBuf, cap: usize) -> RunStore {
        let cap = cap.max(1);
        let path = dir.join("runs.jsonl");
        let mut records = VecDeque::new();
        let (mut lines, mut skipped) = (0, 0);
        if let Ok(f) = File::open(&path) {
            // Split on bytes, not text: a line a crash cut inside a UTF-8 character must cost
            // that line only, not every record after it.
            for line in BufReader::new(f).split(b'\n') {
                let Ok(line) = line else {
                    skipped += 1;
                    break;
                };
                lines += 1;
                match serde_json::from_slice::<RunRecord>(&line) {
                    Ok(r) => {
                        let mut line = line;
                        line.push(b'\n');
                        records.push_back(StoredRun {
                            run_id: r.run_id.into(),
                            flow_id: r.flow_id.into(),
                            line: line.into_boxed_slice(),
                        });
                        if records.len() > cap {
                            records.pop_front();
                        }
                    }
                    Err(_) => skipped += 1,
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "run history: unreadable lines in runs.jsonl were skipped (a crash can cut the last one)"
            );
        }
        let _ = crate::fsutil::ensure_dir(&dir, 0o700);
        RunStore {
            inner: Arc::new(Mutex::new(Records {
                path,
                cap,
                records,
                lines_in_file: lines,
                file: None,
                dirty: false,
                compact_asked: false,
            })),
            sync_lock: Arc::default(),
        }
    }

    /// One run by id.
    pub fn get(&self, id: &str) -> Option<RunRecord> {
        // The line is copied under the lock and read outside it.
        let found = {
            let r = self.inner.lock();
            r.records.iter().rev().find(|r| &*r.run_id == id).cloned()
        };
        found.as_ref().and_then(StoredRun::read)
    }

    /// The newest `limit` runs (of `flow_id`), newest first. The lines are copied under the lock
    /// and read outside it.
    pub fn list(&self, limit: usize, flow_id: Option<&str>) -> Vec<RunRecord> {
        let lines: Vec<StoredRun> = {
            let r = self.inner.lock();
            r.records
                .iter()
                .rev()
                .filter(|r| flow_id.is_none_or(|f| f == &*r.flow_id))
                .take(limit)
                .cloned()
                .collect()
        };
        lines.iter().filter_map(StoredRun::read).collect()
    }

    /// Makes every record written so far durable, outside the lock (as the audit's sync; syncs
    /// are serialised, so one that finds nothing dirty returns after the one that cleared it).
    fn sync(&self) -> io::Result<()> {
        let _one_at_a_time = self.sync_lock.lock();
        let file = {
            let mut r = self.inner.lock();
            if !r.dirty {
                return Ok(());
            }
            r.dirty = false;
            r.file.clone()
        };
        if let Some(f) = file {
            if let Err(e) = f.sync_data() {
                self.inner.lock().dirty = true;
                return Err(e);
            }
        }
        Ok(())
    }

    fn compact_if_due(&self) {
        let mut r = self.inner.lock();
        r.compact_asked = false;
        if r.compaction_due() {
            r.compact_logged();
        }
    }
}

impl Records {
    /// Appends a record's line and keeps it.
    fn append(&mut self, run: StoredRun) -> io::Result<()> {
        if self.file.is_none() {
            let (f, repaired) = crate::fsutil::open_log(&self.path, 0o600)?;
            if repaired {
                tracing::warn!("runs.jsonl ended in a torn line (a crash cut it); it is kept as an unreadable line");
            }
            self.file = Some(Arc::new(f));
        }
        let file = self.file.as_deref().expect("opened above");
        if let Err(e) = (&*file).write_all(&run.line) {
            // Part of the line may be in the file: drop the handle, so the next append reopens
            // and first ends that torn line (it is then skipped as unreadable), instead of gluing
            // the next record onto it. The record is not kept: it was not stored.
            self.file = None;
            return Err(e);
        }
        // In memory once written, before a compaction: it writes what memory holds, and the
        // record that triggered it must be part of it.
        self.records.push_back(run);
        if self.records.len() > self.cap {
            self.records.pop_front();
        }
        self.dirty = true;
        self.lines_in_file += 1;
        Ok(())
    }

    fn compaction_due(&self) -> bool {
        self.lines_in_file > self.cap * 2
    }

    fn compact_logged(&mut self) {
        if let Err(e) = self.compact() {
            // The records are stored (appended); the file just stays long. Try again after
            // another `cap` records rather than on every one.
            tracing::error!(error = %e, "run history compaction failed; it is retried later");
            self.lines_in_file = self.cap;
        }
    }

    fn compact(&mut self) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(self.records.iter().map(|r| r.line.len()).sum());
        for r in &self.records {
            bytes.extend_from_slice(&r.line);
        }
        self.file = None;
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)?;
        self.dirty = false;
        self.lines_in_file = self.records.len();
        Ok(())
    }
}

impl RunFinished {
    /// Writes the record, then (after what the audit queue holds) its audit entry, both locks
    /// held. The audit entry is written even when the record is not (as a failed store's trace).
    fn write(self, records: &mut Records, log: &mut LogGuard<'_>) -> Result<(), StoreError> {
        let stored = records.append(self.run).map_err(|e| {
            tracing::error!(error = %e, "run history write failed");
            StoreError::Record(e.kind())
        });
        let audited = log.write(&self.audit).map_err(|_| StoreError::Audit);
        stored.and(audited)
    }
}

/// What [`RunSink::store_here`] did.
pub enum Stored {
    /// Stored on this thread (or failed to be: the outcome).
    Here(Result<(), StoreError>),
    /// Not stored: send it to the disk thread.
    ToDiskThread(Box<RunFinished>),
}

// ---- the sink: where a finished run is stored ----------------------------------------------------

/// Where a finished run is stored: on the run's own thread when the locks are free and the disk
/// is quick, else by the disk thread (see the module docs).
#[derive(Clone)]
pub struct RunSink {
    store: RunStore,
    audit: AuditLog,
    history: Addr<RunHistory>,
    epoch: Instant,
    /// Milliseconds after `epoch` before which stores go to the disk thread.
    slow_until_ms: Arc<AtomicU64>,
}

impl RunSink {
    pub fn new(store: RunStore, audit: AuditLog, history: Addr<RunHistory>) -> RunSink {
        RunSink {
            store,
            audit,
            history,
            epoch: Instant::now(),
            slow_until_ms: Arc::default(),
        }
    }

    /// The disk thread's actor (for the stores this thread does not do).
    pub fn history(&self) -> &Addr<RunHistory> {
        &self.history
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Stores the run on this thread, or gives it back when it must go to the disk thread
    /// ([`RunFinished`] to [`Self::history`]).
    pub fn store_here(&self, finished: RunFinished) -> Stored {
        if self.now_ms() < self.slow_until_ms.load(Ordering::Relaxed) {
            return Stored::ToDiskThread(Box::new(finished));
        }
        let started = Instant::now();
        // The lock order everywhere: the history's, then the audit's.
        let Some(mut records) = self.store.inner.try_lock_for(LOCK_WAIT) else {
            return Stored::ToDiskThread(Box::new(finished));
        };
        let Some(mut log) = self.audit.try_lock_for(LOCK_WAIT) else {
            return Stored::ToDiskThread(Box::new(finished));
        };
        let outcome = finished.write(&mut records, &mut log);
        drop(log);
        let ask = records.compaction_due() && !std::mem::replace(&mut records.compact_asked, true);
        drop(records);
        if ask {
            self.history.do_send(Compact);
        }
        self.took(started.elapsed());
        Stored::Here(outcome)
    }

    /// A store on a run's thread took `took`: past [`SLOW_STORE`], the next stores go to the disk
    /// thread for [`SLOW_BACKOFF`].
    fn took(&self, took: Duration) {
        if took > SLOW_STORE {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "storing a run took long (a slow disk?); runs are stored by the disk thread for the next {}s",
                SLOW_BACKOFF.as_secs()
            );
            self.slow_until_ms.store(
                self.now_ms() + SLOW_BACKOFF.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
    }
}

// ---- actor ------------------------------------------------------------------------------------

/// The run history's actor on the disk thread (see the module docs).
pub struct RunHistory {
    store: RunStore,
    audit: AuditLog,
    sync_interval: Duration,
}

impl RunHistory {
    /// Syncs `store` every `sync_interval`; stores written to it are audited in `audit`.
    pub fn new(store: RunStore, audit: AuditLog, sync_interval: Duration) -> Self {
        RunHistory {
            store,
            audit,
            sync_interval,
        }
    }
}

impl Actor for RunHistory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(self.sync_interval, |act, _| {
            if let Err(e) = act.store.sync() {
                tracing::error!(error = %e, "run history fsync failed");
            }
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        let _ = self.store.sync();
        Running::Stop
    }
}

impl Handler<RunFinished> for RunHistory {
    type Result = Result<(), StoreError>;

    /// Keeps the record (its result summarised when large), appends it to the file and writes
    /// the audit entry; answers once both are written.
    fn handle(&mut self, finished: RunFinished, _: &mut Self::Context) -> Self::Result {
        let mut records = self.store.inner.lock();
        let outcome = finished.write(&mut records, &mut self.audit.lock());
        if records.compaction_due() {
            records.compact_logged();
        }
        outcome
    }
}

impl Handler<Compact> for RunHistory {
    type Result = ();

    fn handle(&mut self, _: Compact, _: &mut Self::Context) {
        self.store.compact_if_due();
    }
}

impl Handler<GetRun> for RunHistory {
    type Result = Option<RunRecord>;

    fn handle(&mut self, GetRun(id): GetRun, _: &mut Self::Context) -> Self::Result {
        self.store.get(&id)
    }
}

impl Handler<ListRuns> for RunHistory {
    type Result = MessageResult<ListRuns>;

    fn handle(&mut self, msg: ListRuns, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.store.list(msg.limit, msg.flow_id.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditWriter, Category};
    use rumi_domain::run::RunStatus;
    use std::time::Duration;

    fn record(id: &str) -> RunRecord {
        RunRecord {
            run_id: id.to_string(),
            flow_id: "f".into(),
            trigger: "api".into(),
            inputs_digest: String::new(),
            started: "2026-01-01T00:00:00.000Z".into(),
            ended: None,
            status: RunStatus::Succeeded,
            reason: None,
            failed_step: None,
            steps: Vec::new(),
            result: Value::Null,
            execution_time_ms: 0.0,
            execution_mode: "permissive".into(),
            http: None,
        }
    }

    fn start(dir: &std::path::Path, cap: usize) -> Addr<RunHistory> {
        let writer = AuditWriter::new(dir.join("audit"), Duration::from_millis(10));
        let audit = writer.log();
        writer.start();
        let runs = dir.join("runs");
        let store = RunStore::load(runs, cap);
        RunHistory::new(store, audit, Duration::from_millis(10)).start()
    }

    async fn store(h: &Addr<RunHistory>, id: &str) {
        let audit = AuditEntry::new(Category::FlowExecution, "flow_run", true);
        h.send(RunFinished::new(&record(id), audit).unwrap())
            .await
            .unwrap()
            .unwrap();
    }

    /// Review defect 6: with a bound of 5, the 11th run triggers compaction and must be in the
    /// compacted file (it was only in memory, so it vanished at the next start).
    #[actix_rt::test]
    async fn compaction_keeps_the_record_that_triggered_it() {
        let dir = tempfile::tempdir().unwrap();
        let h = start(dir.path(), 5);
        for i in 1..=11 {
            store(&h, &format!("run{i}")).await;
        }
        let again = start(dir.path(), 5);
        for i in 7..=11 {
            let id = format!("run{i}");
            assert!(
                again.send(GetRun(id.clone())).await.unwrap().is_some(),
                "{id} is lost after a restart"
            );
        }
        let text = std::fs::read_to_string(dir.path().join("runs/runs.jsonl")).unwrap();
        assert!(text.contains("\"run11\""), "{text}");
    }

    /// Memory holds lines: what readers get back is the record that was stored (a large result
    /// summarised), newest first and filtered by flow; a compaction writes those very lines.
    #[actix_rt::test]
    async fn readers_get_the_stored_records_back_and_compaction_writes_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _queue) = sink(dir.path(), 3);
        let mut big = record("big");
        big.flow_id = "g".into();
        big.result = serde_json::json!({"blob": "x".repeat(MAX_STORED_RESULT_BYTES + 1)});
        for r in [record("a"), big.clone(), record("c")] {
            let finished = RunFinished::new(
                &r,
                AuditEntry::new(Category::FlowExecution, "flow_run", true),
            )
            .unwrap();
            let Stored::Here(Ok(())) = sink.store_here(finished) else {
                panic!("stored here")
            };
        }
        let a = sink.store.get("a").unwrap();
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::to_value(record("a")).unwrap()
        );
        assert_eq!(
            sink.store.get("big").unwrap().result,
            serde_json::json!({"_truncated": true, "_keys": ["blob"]})
        );
        let ids = |v: Vec<RunRecord>| v.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
        assert_eq!(ids(sink.store.list(10, None)), ["c", "big", "a"]);
        assert_eq!(ids(sink.store.list(10, Some("f"))), ["c", "a"]);
        assert_eq!(ids(sink.store.list(1, Some("f"))), ["c"]);
        let path = dir.path().join("runs/runs.jsonl");
        let before = std::fs::read(&path).unwrap();
        sink.store.inner.lock().compact().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "three lines, cap three: the same file"
        );
        for id in ["d", "e"] {
            let Stored::Here(Ok(())) = sink.store_here(finished(id)) else {
                panic!("stored here")
            };
        }
        sink.store.inner.lock().compact().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<RunRecord>(l).unwrap().run_id)
            .collect();
        assert_eq!(kept, ["c", "d", "e"]);
    }

    /// Review defect 12: a torn last line (cut inside a UTF-8 character) costs that line only.
    #[actix_rt::test]
    async fn a_torn_line_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let h = start(dir.path(), 10);
        store(&h, "first").await;
        let path = dir.path().join("runs/runs.jsonl");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"run_id\":\"caf\xc3");
        std::fs::write(&path, &bytes).unwrap();
        let again = start(dir.path(), 10);
        store(&again, "second").await;
        let third = start(dir.path(), 10);
        for id in ["first", "second"] {
            assert!(
                third.send(GetRun(id.into())).await.unwrap().is_some(),
                "{id} is lost"
            );
        }
    }

    /// An answered run is in the file and its audit entry in the audit's, before any fsync.
    #[actix_rt::test]
    async fn answers_once_record_and_audit_entry_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let h = start(dir.path(), 10);
        store(&h, "written").await;
        let runs = std::fs::read_to_string(dir.path().join("runs/runs.jsonl")).unwrap();
        assert!(runs.contains("\"written\""));
        let audit = std::fs::read_dir(dir.path().join("audit"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect::<String>();
        assert!(audit.contains("flow_run"), "{audit}");
    }

    fn sink(dir: &std::path::Path, cap: usize) -> (RunSink, crate::audit::AuditQueue) {
        let writer = AuditWriter::new(dir.join("audit"), Duration::from_millis(1));
        let (audit, queue) = (writer.log(), writer.queue());
        writer.start();
        let store = RunStore::load(dir.join("runs"), cap);
        let history =
            RunHistory::new(store.clone(), audit.clone(), Duration::from_millis(1)).start();
        (RunSink::new(store, audit, history), queue)
    }

    fn finished(id: &str) -> RunFinished {
        RunFinished::new(
            &record(id),
            AuditEntry::new(Category::FlowExecution, "flow_run", true).run("f", id),
        )
        .unwrap()
    }

    fn lines(path: std::path::PathBuf) -> Vec<Value> {
        std::fs::read_dir(path)
            .unwrap()
            .flat_map(|e| {
                std::fs::read_to_string(e.unwrap().path())
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A run stored on its own thread is in the file, and its queued entries are written
    /// before its own entry, before `store_here` returns (no message, no wait).
    #[actix_rt::test]
    async fn a_run_stored_on_its_thread_is_written_with_its_queued_entries_first() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, queue) = sink(dir.path(), 10);
        queue.push(AuditEntry::new(Category::FlowExecution, "queued", true));
        let Stored::Here(Ok(())) = sink.store_here(finished("here")) else {
            panic!("the locks are free")
        };
        let runs = std::fs::read_to_string(dir.path().join("runs/runs.jsonl")).unwrap();
        assert!(runs.contains("\"here\""), "{runs}");
        let actions: Vec<Value> = lines(dir.path().join("audit"))
            .into_iter()
            .map(|v| v["action"].clone())
            .collect();
        assert_eq!(actions, ["queued", "flow_run"]);
        assert!(sink.store.get("here").is_some());
    }

    /// A lock that is not free within LOCK_WAIT (a compaction, a hung write) and a slow store
    /// send the run to the disk thread instead of waiting on the run's thread.
    #[actix_rt::test]
    async fn a_held_lock_or_a_slow_disk_sends_the_run_to_the_disk_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _) = sink(dir.path(), 10);
        {
            let _held = sink.store.inner.lock();
            let t = std::time::Instant::now();
            let back = sink.store_here(finished("held"));
            assert!(
                matches!(back, Stored::ToDiskThread(_)),
                "not stored while the history is locked"
            );
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{:?}",
                t.elapsed()
            );
        }
        {
            let _held = sink.audit.lock();
            let back = sink.store_here(finished("held"));
            assert!(matches!(back, Stored::ToDiskThread(_)));
        }
        assert!(sink.store.get("held").is_none(), "nothing half-stored");
        let stored = sink.store_here(finished("free"));
        assert!(
            matches!(stored, Stored::Here(Ok(()))),
            "the locks are free again"
        );
        sink.took(SLOW_STORE + Duration::from_millis(1));
        let Stored::ToDiskThread(run) = sink.store_here(finished("slow")) else {
            panic!("a slow disk sends the next runs to the disk thread")
        };
        sink.history().send(*run).await.unwrap().unwrap();
        assert!(sink.store.get("slow").is_some());
    }

    /// A run storing on its own thread asks the disk thread to compact once, not once per run
    /// while the compaction is on its way, and the compaction happens.
    #[actix_rt::test]
    async fn a_due_compaction_is_asked_for_once() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _) = sink(dir.path(), 2);
        for i in 0..5 {
            let Stored::Here(Ok(())) = sink.store_here(finished(&format!("r{i}"))) else {
                panic!("the locks are free")
            };
        }
        {
            let r = sink.store.inner.lock();
            assert!(r.compaction_due() && r.compact_asked, "due and asked for");
        }
        // The disk thread's mailbox is in order: the compaction was handled before this answer.
        sink.history().send(GetRun("none".into())).await.unwrap();
        let r = sink.store.inner.lock();
        assert!(!r.compact_asked && !r.compaction_due(), "compacted");
        assert_eq!(r.lines_in_file, 2);
    }

    /// The store's invariant under concurrency (a seeded stress test): runs stored on several
    /// threads at once — on their own threads or, when a lock is busy, by the disk thread — with
    /// compactions, group syncs and readers in between, are each in the file once, the file
    /// holds the newest records after the compaction, and every run's audit entry is written once.
    #[actix_rt::test]
    async fn concurrent_stores_compactions_and_syncs_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 40;
        let (sink, queue) = sink(dir.path(), cap);
        let (threads, per) = (4u64, 250u64);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (sink, queue) = (sink.clone(), queue.clone());
                std::thread::spawn(move || {
                    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ (t + 1);
                    let mut to_disk_thread = Vec::new();
                    for i in 0..per {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let id = format!("t{t}-{i}");
                        // In the run entry's category, so both are in one file, whose order
                        // is the order of writing.
                        queue.push(
                            AuditEntry::new(Category::FlowExecution, "block_call", true)
                                .run("f", &id),
                        );
                        match sink.store_here(finished(&id)) {
                            Stored::Here(r) => r.unwrap(),
                            Stored::ToDiskThread(run) => to_disk_thread.push(*run),
                        }
                        if seed % 3 == 0 {
                            // Memory never holds more than the bound, whatever runs meanwhile.
                            assert!(sink.store.list(cap + 10, None).len() <= cap);
                        }
                        if seed % 11 == 0 {
                            std::thread::yield_now();
                        }
                    }
                    to_disk_thread
                })
            })
            .collect();
        let mut sent = 0;
        for h in handles {
            for run in h.join().unwrap() {
                sink.history().send(run).await.unwrap().unwrap();
                sent += 1;
            }
        }
        eprintln!("{sent} runs went to the disk thread");
        let history = sink.history().clone();
        history.send(Compact).await.unwrap();
        let total = (threads * per) as usize;
        let memory: Vec<String> = sink
            .store
            .list(total, None)
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(memory.len(), cap);
        let again = RunStore::load(dir.path().join("runs"), total);
        let on_disk: Vec<String> = again
            .list(total, None)
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        let unique: std::collections::HashSet<&String> = on_disk.iter().collect();
        assert_eq!(unique.len(), on_disk.len(), "a record is in the file twice");
        assert_eq!(
            &on_disk[..cap],
            &memory[..],
            "the file's newest are memory's"
        );
        history.send(GetRun("none".into())).await.unwrap();
        let audit = lines(dir.path().join("audit"));
        let runs: Vec<&Value> = audit.iter().filter(|v| v["action"] == "flow_run").collect();
        let ids: std::collections::HashSet<&str> =
            runs.iter().map(|v| v["run_id"].as_str().unwrap()).collect();
        assert_eq!(
            (runs.len(), ids.len()),
            (total, total),
            "each run's entry once"
        );
        // Every run's block call precedes its own entry.
        let mut seen = std::collections::HashSet::new();
        for v in &audit {
            let id = v["run_id"].as_str().unwrap();
            if v["action"] == "block_call" {
                seen.insert(id);
            } else {
                assert!(seen.contains(id), "{id}: its entry before its block call");
            }
        }
    }

    /// Review finding: a record that could not be written was still kept (and listed) and its
    /// run answered. Now the store fails, nothing is kept, and the next append works again.
    #[actix_rt::test]
    async fn a_record_that_cannot_be_written_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runs")).unwrap();
        // A directory where the file should be: opening it for appending fails.
        std::fs::create_dir_all(dir.path().join("runs/runs.jsonl")).unwrap();
        let h = start(dir.path(), 10);
        let r = h
            .send(
                RunFinished::new(
                    &record("lost"),
                    AuditEntry::new(Category::FlowExecution, "flow_run", true),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        assert!(r.is_err(), "the store fails");
        assert!(h.send(GetRun("lost".into())).await.unwrap().is_none());
    }
}
