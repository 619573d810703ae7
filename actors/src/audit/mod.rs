//! `AuditWriter`: writes the audit files `user_data/audit/<category>_<YYYY-MM-DD>.jsonl` (§13).
//!
//! Every actor sends it [`Record`]s as things happen. Each entry is written to its file when the
//! message is handled (so a kernel crash loses nothing the OS has), and the files are fsynced on a
//! short interval (group commit) so thousands of entries a second do not cost thousands of
//! fsyncs. A caller that must not acknowledge before the entry is on disk (an approval, a grant)
//! sends [`RecordDurable`], which answers after the fsync; [`RecordWritten`] answers once the
//! entry is in its file (it survives a kernel crash). The writer runs on its own arbiter, so
//! messages and fsyncs never stall the actors that run flows. The files themselves are an
//! [`AuditLog`] (one lock): a finished run writes its own entry there, on its own thread, with
//! its record (see `run_history`), and a run's other entries go through the [`AuditQueue`],
//! written before that entry. Reading is not the writer's job: `GET /api/audit` reads the files on
//! a blocking thread (`audit_query`) after [`AwaitWritten`]. At start it gives every file whose
//! last line a crash cut its newline, so that line is skipped by readers instead of swallowing the
//! next entry.

use actix::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

mod log;
pub use log::{AuditLog, LogGuard};

/// Audit categories.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    FlowExecution,
    ModifierApplication,
    PythonFileCall,
    Approval,
    Permission,
    Network,
    Security,
    System,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::FlowExecution,
        Category::ModifierApplication,
        Category::PythonFileCall,
        Category::Approval,
        Category::Permission,
        Category::Network,
        Category::Security,
        Category::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::FlowExecution => "flow_execution",
            Category::ModifierApplication => "modifier_application",
            Category::PythonFileCall => "python_file_call",
            Category::Approval => "approval",
            Category::Permission => "permission",
            Category::Network => "network",
            Category::Security => "security",
            Category::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The position in [`Category::ALL`] (the merge order of ties, and the cursors' spelling).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Severity of an entry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

/// One audit entry (§13). Optional fields are omitted when empty.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub ts: String,
    pub category: Category,
    pub severity: Severity,
    pub action: String,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_pack: Option<String>,
    pub details: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<String>,
    /// Capability calls and grants: who asked (the socket's pack, never the payload's word).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Capability calls and grants: the permission concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_id: Option<String>,
}

impl AuditEntry {
    /// A new entry stamped now; severity follows `success` until set.
    pub fn new(category: Category, action: impl Into<String>, success: bool) -> Self {
        AuditEntry {
            ts: crate::clock::now_rfc3339(),
            category,
            severity: if success {
                Severity::Info
            } else {
                Severity::Warning
            },
            action: action.into(),
            success,
            flow_id: None,
            run_id: None,
            step_id: None,
            phase: None,
            owner_pack: None,
            details: Value::Object(Default::default()),
            error: None,
            error_type: None,
            rejection_reason: None,
            execution_mode: None,
            principal_id: None,
            permission_id: None,
        }
    }
    /// The `security` entry for a block call refused before any code ran (not approved, files
    /// changed, path outside the pack, no sandbox).
    pub fn block_refused(
        flow_id: &str,
        run_id: &str,
        step_id: &str,
        phase: &str,
        pack: &str,
        failure: &rumi_domain::run::StepFailure,
    ) -> Self {
        AuditEntry::new(Category::Security, "block_refused", false)
            .run(flow_id, run_id)
            .step(step_id, phase)
            .pack(pack)
            .error(&failure.error, Some(failure.error_type.as_str()))
    }

    pub fn severity(mut self, s: Severity) -> Self {
        self.severity = s;
        self
    }
    pub fn details(mut self, d: Value) -> Self {
        self.details = d;
        self
    }
    pub fn pack(mut self, p: &str) -> Self {
        self.owner_pack = Some(p.to_string());
        self
    }
    pub fn run(mut self, flow_id: &str, run_id: &str) -> Self {
        self.flow_id = Some(flow_id.to_string());
        self.run_id = Some(run_id.to_string());
        self
    }
    pub fn step(mut self, step_id: &str, phase: &str) -> Self {
        self.step_id = Some(step_id.to_string());
        self.phase = Some(phase.to_string());
        self
    }
    pub fn error(mut self, error: &str, error_type: Option<&str>) -> Self {
        self.error = Some(error.to_string());
        self.error_type = error_type.map(str::to_string);
        self
    }
    pub fn rejection(mut self, reason: &str) -> Self {
        self.rejection_reason = Some(reason.to_string());
        self
    }
    /// The principal and permission of a capability call or grant.
    pub fn permission(mut self, principal_id: &str, permission_id: &str) -> Self {
        self.principal_id = Some(principal_id.to_string());
        self.permission_id = Some(permission_id.to_string());
        self
    }
    pub fn mode(mut self, mode: &str) -> Self {
        self.execution_mode = Some(mode.to_string());
        self
    }
}

// ---- messages ---------------------------------------------------------------------------------

/// Writes an entry now; it reaches the disk at the next group fsync.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub AuditEntry);

/// Writes an entry and answers once it is fsynced.
#[derive(Message)]
#[rtype(result = "Result<(), AuditError>")]
pub struct RecordDurable(pub AuditEntry);

/// Writes an entry and answers once it is in its file (fsynced at the next group sync).
#[derive(Message)]
#[rtype(result = "Result<(), AuditError>")]
pub struct RecordWritten(pub AuditEntry);

/// Answers once every entry sent before it is in its file: a reader that asks first sees them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AwaitWritten;

/// A reader met unreadable lines (counted in the snapshot, so none is lost silently).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LinesSkipped(pub u64);

/// Observable counters.
#[derive(Message)]
#[rtype(result = "AuditSnapshot")]
pub struct GetSnapshot;

/// The writer's counters.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct AuditSnapshot {
    pub written: u64,
    pub failed: u64,
    pub syncs: u64,
    pub open_files: usize,
    /// Torn last lines given their newline (at start, or when a file was opened to append).
    pub torn_lines_terminated: u64,
    /// Unreadable lines readers skipped.
    pub unreadable_lines_skipped: u64,
}

/// Audit failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("date must be YYYY-MM-DD")]
    BadDate,
    #[error("bad cursor: {0}; pass back the Rumi-Audit-Before or Rumi-Audit-After header of an earlier page")]
    BadCursor(String),
    #[error("the audit log could not be written or read")]
    Io(#[from] io::Error),
}

/// Writes what [`AuditQueue`]s hold now (sent when a queue has grown by [`WAKE_EVERY`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// How many queued entries wake the writer (one message per this many pushes).
const WAKE_EVERY: usize = 256;

/// Entries handed to the writer without a message: the hot path's way (what a run audits: its
/// block calls, refusals and events). A message to the writer's thread is a wake-up of that
/// thread; a push is a short lock. Whoever writes to the [`AuditLog`] writes what the queue holds
/// first, in push order: every message the writer handles (so `AwaitWritten` lets a reader see
/// them), each group-sync tick (so a queued entry is in its file within the sync interval at the
/// latest) and a finished run storing its own entry (so its queued entries are written before it
/// is answered). Every [`WAKE_EVERY`] pushes wake the writer, so a busy queue does not wait for
/// the tick.
#[derive(Clone, Default)]
pub struct AuditQueue {
    entries: std::sync::Arc<parking_lot::Mutex<Vec<AuditEntry>>>,
    writer: std::sync::Arc<std::sync::OnceLock<Addr<AuditWriter>>>,
}

impl AuditQueue {
    /// Queues an entry for the writer (see the type's docs).
    pub fn push(&self, entry: AuditEntry) {
        let len = {
            let mut q = self.entries.lock();
            q.push(entry);
            q.len()
        };
        if len % WAKE_EVERY == 0 {
            if let Some(writer) = self.writer.get() {
                writer.do_send(Drain);
            }
        }
    }

    fn take(&self) -> Vec<AuditEntry> {
        std::mem::take(&mut *self.entries.lock())
    }
}

// ---- actor ------------------------------------------------------------------------------------

/// The audit writer (see the module docs): a thin actor over the shared [`AuditLog`].
pub struct AuditWriter {
    log: AuditLog,
    sync_interval: Duration,
}

impl AuditWriter {
    /// Scrubs every entry of the values `redactor` holds.
    pub fn with_redactor(
        self,
        redactor: std::sync::Arc<crate::capability::redact::Redactor>,
    ) -> Self {
        self.log.set_redactor(redactor);
        self
    }

    pub fn new(dir: PathBuf, sync_interval: Duration) -> Self {
        AuditWriter {
            log: AuditLog::new(dir, AuditQueue::default()),
            sync_interval,
        }
    }

    /// The queue whose entries this writer writes (take it before starting the writer).
    pub fn queue(&self) -> AuditQueue {
        self.log.queue.clone()
    }

    /// The files this writer writes, for a writer on another thread (take it before starting).
    pub fn log(&self) -> AuditLog {
        self.log.clone()
    }

    /// Writes what the queue holds, in push order.
    fn drain(&self) {
        self.log.lock().drain();
    }
}

/// Whether an entry has free text where a block's message may end in a cut-off secret (its error).
fn entry_may_hold_a_cut(entry: &AuditEntry) -> bool {
    entry.error.is_some() || entry.rejection_reason.is_some()
}

impl Actor for AuditWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        match self.log.terminate_torn_lines() {
            Ok(0) => {}
            Ok(files) => tracing::warn!(
                files,
                "audit files ended in a torn line (a crash cut it); each is kept as an unreadable line and skipped by readers"
            ),
            Err(e) => {
                tracing::error!(error = %e, "could not check the audit files for torn last lines")
            }
        }
        let _ = self.log.queue.writer.set(ctx.address());
        ctx.run_interval(self.sync_interval, |act, _| {
            act.drain();
            if let Err(e) = act.log.sync() {
                tracing::error!(error = %e, "audit fsync failed");
            }
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.drain();
        let _ = self.log.sync();
        Running::Stop
    }
}

impl Handler<Record> for AuditWriter {
    type Result = ();

    /// Appends the entry; failures are counted and logged (never the entry's details).
    fn handle(&mut self, msg: Record, _: &mut Self::Context) {
        let _ = self.log.lock().write(&msg.0);
    }
}

impl Handler<RecordDurable> for AuditWriter {
    type Result = Result<(), AuditError>;

    /// Appends the entry and fsyncs before answering.
    fn handle(&mut self, msg: RecordDurable, _: &mut Self::Context) -> Self::Result {
        self.log.lock().write(&msg.0)?;
        Ok(self.log.sync()?)
    }
}

impl Handler<RecordWritten> for AuditWriter {
    type Result = Result<(), AuditError>;

    /// Appends the entry and answers; the next group sync makes it durable.
    fn handle(&mut self, msg: RecordWritten, _: &mut Self::Context) -> Self::Result {
        Ok(self.log.lock().write(&msg.0)?)
    }
}

impl Handler<AwaitWritten> for AuditWriter {
    type Result = ();

    /// Being handled means every earlier message was; the queue is written now.
    fn handle(&mut self, _: AwaitWritten, _: &mut Self::Context) {
        self.drain();
    }
}

impl Handler<Drain> for AuditWriter {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Self::Context) {
        self.drain();
    }
}

impl Handler<LinesSkipped> for AuditWriter {
    type Result = ();

    fn handle(&mut self, LinesSkipped(n): LinesSkipped, _: &mut Self::Context) {
        self.log.count_skipped(n);
    }
}

impl Handler<GetSnapshot> for AuditWriter {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.log.snapshot())
    }
}

/// `YYYY-MM-DD` (digits and dashes only), so a date can be put in a file name.
pub(crate) fn valid_date(d: &str) -> bool {
    let b = d.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

#[cfg(test)]
mod tests;
