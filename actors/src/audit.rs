//! `AuditWriter`: owns the audit files `user_data/audit/<category>_<YYYY-MM-DD>.jsonl` (§13).
//!
//! Every actor sends it [`Record`]s as things happen. Each entry is written to its file when the
//! message is handled (so a kernel crash loses nothing the OS has), and the files are fsynced on a
//! short interval (group commit) so thousands of entries a second do not cost thousands of
//! fsyncs. A caller that must not acknowledge before the entry is on disk (an approval, a grant)
//! sends [`RecordDurable`], which answers after the fsync. The writer runs on its own arbiter, so
//! disk latency never stalls the actors that run flows.

use actix::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// Audit categories.
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
}

/// Severity of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

/// One audit entry (§13). Optional fields are omitted when empty.
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

/// Reads the newest entries of one day, optionally of one category.
#[derive(Message)]
#[rtype(result = "Result<Vec<Value>, AuditError>")]
pub struct Query {
    pub category: Option<Category>,
    /// `YYYY-MM-DD`; today (UTC) when absent.
    pub date: Option<String>,
    pub limit: usize,
}

/// Observable counters.
#[derive(Message)]
#[rtype(result = "AuditSnapshot")]
pub struct GetSnapshot;

/// The writer's counters.
#[derive(Debug, Clone, Serialize)]
pub struct AuditSnapshot {
    pub written: u64,
    pub failed: u64,
    pub syncs: u64,
    pub open_files: usize,
}

/// Audit failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("date must be YYYY-MM-DD")]
    BadDate,
    #[error("the audit log could not be written or read")]
    Io(#[from] io::Error),
}

// ---- actor ------------------------------------------------------------------------------------

/// The audit writer (see the module docs).
pub struct AuditWriter {
    dir: PathBuf,
    files: HashMap<(Category, String), File>,
    dirty: bool,
    sync_interval: Duration,
    written: u64,
    failed: u64,
    syncs: u64,
}

impl AuditWriter {
    pub fn new(dir: PathBuf, sync_interval: Duration) -> Self {
        AuditWriter {
            dir,
            files: HashMap::new(),
            dirty: false,
            sync_interval,
            written: 0,
            failed: 0,
            syncs: 0,
        }
    }

    fn write(&mut self, entry: &AuditEntry) -> io::Result<()> {
        let date = entry.ts.get(..10).unwrap_or("unknown").to_string();
        let key = (entry.category, date);
        if !self.files.contains_key(&key) {
            // Close other days' files as days change so handles do not accumulate.
            self.files.retain(|(_, d), _| *d == key.1);
            crate::fsutil::ensure_dir(&self.dir, 0o700)?;
            let path = self.dir.join(format!("{}_{}.jsonl", key.0.as_str(), key.1));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            self.files.insert(key.clone(), f);
        }
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let file = self.files.get_mut(&key).expect("inserted above");
        file.write_all(&line)?;
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
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

impl Actor for AuditWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(self.sync_interval, |act, _| {
            if let Err(e) = act.sync() {
                tracing::error!(error = %e, "audit fsync failed");
            }
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        let _ = self.sync();
        Running::Stop
    }
}

impl Handler<Record> for AuditWriter {
    type Result = ();

    /// Appends the entry; failures are counted and logged (never the entry's details).
    fn handle(&mut self, msg: Record, _: &mut Self::Context) {
        match self.write(&msg.0) {
            Ok(()) => self.written += 1,
            Err(e) => {
                self.failed += 1;
                tracing::error!(error = %e, category = msg.0.category.as_str(), "audit write failed");
            }
        }
    }
}

impl Handler<RecordDurable> for AuditWriter {
    type Result = Result<(), AuditError>;

    /// Appends the entry and fsyncs before answering.
    fn handle(&mut self, msg: RecordDurable, _: &mut Self::Context) -> Self::Result {
        let r = self.write(&msg.0).and_then(|_| self.sync());
        match &r {
            Ok(()) => self.written += 1,
            Err(_) => self.failed += 1,
        }
        r.map_err(AuditError::Io)
    }
}

impl Handler<Query> for AuditWriter {
    type Result = Result<Vec<Value>, AuditError>;

    /// Reads the newest `limit` entries (oldest first). The date is validated before it is used
    /// in a file name, so a query cannot name another file.
    fn handle(&mut self, msg: Query, _: &mut Self::Context) -> Self::Result {
        let date = match msg.date {
            Some(d) => d,
            None => crate::clock::now_rfc3339()[..10].to_string(),
        };
        if !valid_date(&date) {
            return Err(AuditError::BadDate);
        }
        let _ = self.sync();
        let categories: Vec<Category> = match msg.category {
            Some(c) => vec![c],
            None => Category::ALL.to_vec(),
        };
        let mut entries: Vec<Value> = Vec::new();
        for c in categories {
            let path = self.dir.join(format!("{}_{}.jsonl", c.as_str(), date));
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for line in BufReader::new(file).lines() {
                if let Ok(v) = serde_json::from_str::<Value>(&line?) {
                    entries.push(v);
                }
            }
        }
        entries.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
        let skip = entries.len().saturating_sub(msg.limit);
        Ok(entries.split_off(skip))
    }
}

impl Handler<GetSnapshot> for AuditWriter {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(AuditSnapshot {
            written: self.written,
            failed: self.failed,
            syncs: self.syncs,
            open_files: self.files.len(),
        })
    }
}

fn valid_date(d: &str) -> bool {
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
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn writes_queries_and_refuses_bad_dates() {
        let dir = tempfile::tempdir().unwrap();
        let addr = AuditWriter::new(dir.path().to_path_buf(), Duration::from_millis(10)).start();
        addr.send(Record(AuditEntry::new(Category::System, "one", true)))
            .await
            .unwrap();
        addr.send(RecordDurable(AuditEntry::new(
            Category::Security,
            "two",
            false,
        )))
        .await
        .unwrap()
        .unwrap();
        let all = addr
            .send(Query {
                category: None,
                date: None,
                limit: 10,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(all.len(), 2);
        let sec = addr
            .send(Query {
                category: Some(Category::Security),
                date: None,
                limit: 10,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sec.len(), 1);
        assert_eq!(sec[0]["action"], "two");
        assert_eq!(sec[0]["severity"], "warning");
        for bad in ["../../etc", "2026-1-01", "2026-01-01/../x", "abcd-ef-gh"] {
            let r = addr
                .send(Query {
                    category: None,
                    date: Some(bad.into()),
                    limit: 1,
                })
                .await
                .unwrap();
            assert!(matches!(r, Err(AuditError::BadDate)), "{bad}");
        }
        let snap = addr.send(GetSnapshot).await.unwrap();
        assert_eq!(snap.written, 2);
    }
}
