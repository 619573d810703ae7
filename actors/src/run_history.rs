//! `RunHistory`: owns the bounded history of run records (contract §3.7), in memory and in
//! `user_data/runs/runs.jsonl`. Every `FlowRun` ends by sending it [`RunFinished`] (the record
//! and the run's `flow_execution` audit entry, which it passes on to the `AuditWriter` living on
//! the same thread: one cross-thread message per run instead of two). Records are appended as runs
//! finish; at start the newest are loaded back; the file is compacted (atomically) when it holds
//! twice the bound. Runs on the disk arbiter so disk writes never stall flows.

use crate::audit::{AuditEntry, AuditWriter, Record};
use actix::prelude::*;
use rumi_domain::run::RunRecord;
use serde_json::Value;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Largest result kept in a stored record; bigger ones are summarised.
const MAX_STORED_RESULT_BYTES: usize = 64 * 1024;

/// A run ended: store its record and write its audit entry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunFinished {
    pub record: RunRecord,
    pub audit: AuditEntry,
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

/// The run history (see the module docs).
pub struct RunHistory {
    path: PathBuf,
    cap: usize,
    records: VecDeque<RunRecord>,
    lines_in_file: usize,
    file: Option<File>,
    audit: Addr<AuditWriter>,
}

impl RunHistory {
    /// Loads the newest `cap` records from `dir/runs.jsonl`.
    pub fn load(dir: PathBuf, cap: usize, audit: Addr<AuditWriter>) -> Self {
        let path = dir.join("runs.jsonl");
        let mut records = VecDeque::new();
        let mut lines = 0;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                lines += 1;
                if let Ok(r) = serde_json::from_str::<RunRecord>(&line) {
                    records.push_back(r);
                    if records.len() > cap {
                        records.pop_front();
                    }
                }
            }
        }
        let _ = crate::fsutil::ensure_dir(&dir, 0o700);
        RunHistory {
            path,
            cap: cap.max(1),
            records,
            lines_in_file: lines,
            file: None,
            audit,
        }
    }

    fn append(&mut self, record: &RunRecord) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&self.path)?,
            );
        }
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.as_mut().expect("opened above").write_all(&line)?;
        self.lines_in_file += 1;
        if self.lines_in_file > self.cap * 2 {
            self.compact()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for r in &self.records {
            bytes.extend(serde_json::to_vec(r).map_err(std::io::Error::other)?);
            bytes.push(b'\n');
        }
        self.file = None;
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)?;
        self.lines_in_file = self.records.len();
        Ok(())
    }
}

impl Actor for RunHistory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if let Some(f) = &self.file {
            let _ = f.sync_data();
        }
        Running::Stop
    }
}

impl Handler<RunFinished> for RunHistory {
    type Result = ();

    /// Passes the audit entry on, keeps the record (its result summarised when large) and appends
    /// it to the file.
    fn handle(&mut self, RunFinished { mut record, audit }: RunFinished, _: &mut Self::Context) {
        self.audit.do_send(Record(audit));
        let size = serde_json::to_vec(&record.result)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_STORED_RESULT_BYTES {
            let keys: Vec<Value> = record
                .result
                .as_object()
                .map(|o| o.keys().map(|k| Value::from(k.as_str())).collect())
                .unwrap_or_default();
            record.result = serde_json::json!({"_truncated": true, "_keys": keys});
        }
        if let Err(e) = self.append(&record) {
            tracing::error!(error = %e, "run history write failed");
        }
        self.records.push_back(record);
        if self.records.len() > self.cap {
            self.records.pop_front();
        }
    }
}

impl Handler<GetRun> for RunHistory {
    type Result = Option<RunRecord>;

    fn handle(&mut self, GetRun(id): GetRun, _: &mut Self::Context) -> Self::Result {
        self.records.iter().rev().find(|r| r.run_id == id).cloned()
    }
}

impl Handler<ListRuns> for RunHistory {
    type Result = MessageResult<ListRuns>;

    fn handle(&mut self, msg: ListRuns, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.records
                .iter()
                .rev()
                .filter(|r| msg.flow_id.as_ref().is_none_or(|f| *f == r.flow_id))
                .take(msg.limit)
                .cloned()
                .collect(),
        )
    }
}
