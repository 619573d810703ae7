//! `CapabilityHandler`: one actor per trusted third-party handler (contract §7.2), owning ONE warm
//! host worker (`python3 -I -S -B rumi_handlerhost.py <handler dir>`). The broker (through
//! [`super::trust::HandlerTable::lookup`]) sends it [`Execute`]; nothing else talks to it.
//!
//! The worker is started like a pack's permissive worker ([`Worker::from_command`]: its own
//! process group, the subreaper flag, `PR_SET_PDEATHSIG`, stderr logged in bounded lines) with an
//! environment holding only `PATH`, `LANG`, `HOME` (a directory of its own under
//! `user_data/capabilities/homes/`) and `PYTHONDONTWRITEBYTECODE`: no token, no secret, nothing of
//! the kernel's environment reaches handler code. The handler's source is sent to the worker in
//! its first frame, as the bytes the table verified against the trusted hash, so a file swapped
//! after the check never runs.
//!
//! Calls are serialised (one worker) behind a bounded queue ([`QUEUE_LIMIT`], then `busy`); a
//! call's deadline runs from its arrival, so one that waited past it is answered `timeout` unrun,
//! and one whose caller left is dropped unrun. A call past its deadline (≤ 120 s) kills the worker's whole tree and answers `timeout`; a worker that
//! dies or breaks the protocol answers `handler_crashed`; either way a fresh worker is started at
//! once. The handler's own exception is `handler_error` with a message clipped to
//! [`MAX_ERROR_BYTES`]; a reply is at most [`MAX_REPLY_BYTES`]. Stopping the actor kills the
//! worker.

use crate::pack_container::worker::{CallError, Worker};
use actix::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::oneshot;

/// Longest a call may run.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Calls that may wait for the worker before `busy` is answered.
pub const QUEUE_LIMIT: usize = 256;
/// Largest reply accepted from the worker.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Longest error message passed on from a handler.
pub const MAX_ERROR_BYTES: usize = 2000;
/// How long a fresh worker may take to start Python and compile the handler.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The load frame's id; calls count from 1.
const LOAD_ID: u64 = 0;

/// One call: `execute(context, args)` in the handler's worker.
#[derive(Message)]
#[rtype(result = "Result<Value, HandlerFailure>")]
pub struct Execute {
    /// `{principal_id, permission_id, handler_id, grant_config, request_id, ts}`.
    pub context: Value,
    pub args: Map<String, Value>,
    /// The call's deadline (≤ 120 s); past it the worker is killed and replaced.
    pub timeout: Duration,
}

/// Why a handler call failed (`error_type`: `handler_error`, `timeout`, `handler_crashed`,
/// `busy`).
#[derive(Debug, Clone)]
pub struct HandlerFailure {
    pub error: String,
    pub error_type: String,
}

impl HandlerFailure {
    fn new(error_type: &str, error: impl Into<String>) -> Self {
        HandlerFailure {
            error: clip(error.into(), MAX_ERROR_BYTES),
            error_type: error_type.to_string(),
        }
    }
}

/// Stops the actor (and kills its worker): the handler was replaced or lost its trust.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// The actor's counters.
#[derive(Message)]
#[rtype(result = "HandlerStats")]
pub struct GetStats;

/// What [`GetStats`] answers.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HandlerStats {
    pub calls: u64,
    pub failures: u64,
    pub timeouts: u64,
    /// Workers started after the first (each timeout or crash costs one).
    pub restarts: u64,
    pub queued: usize,
    /// The current worker's pid, when one runs.
    pub worker_pid: Option<i32>,
}

/// Makes the actor panic (supervision tests: the table starts a new one at the next lookup).
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

/// How to start a handler's worker.
#[derive(Debug, Clone)]
pub struct HandlerSpec {
    pub handler_id: String,
    pub permission_id: String,
    /// The interpreter (`RuntimeConfig::python`).
    pub python: PathBuf,
    /// `rumi_handlerhost.py`.
    pub host_script: PathBuf,
    /// The installed copy (`user_data/capabilities/handlers/<slug>/`).
    pub handler_dir: PathBuf,
    /// The worker's `HOME` and working directory (its own, under `user_data/capabilities/`).
    pub home: PathBuf,
    /// `handler.py`, as verified against the trusted SHA-256.
    pub source: Arc<str>,
    /// The function of the entrypoint (`execute`).
    pub function: String,
    /// Scrubs secret values from the worker's logged stderr lines.
    pub redactor: Option<Arc<super::redact::Redactor>>,
}

/// A call waiting for the worker.
struct Waiting {
    msg: Execute,
    reply: oneshot::Sender<Result<Value, HandlerFailure>>,
    /// The call's deadline, from its arrival: time spent waiting for the worker counts.
    deadline: Instant,
}

/// The actor (see the module docs).
pub struct CapabilityHandler {
    spec: HandlerSpec,
    /// The load frame (`{id: 0, op: "load", source, function}`), encoded once.
    load_frame: Arc<Vec<u8>>,
    /// The idle worker; `None` while a call runs (the call owns it) or after a failed start.
    worker: Option<Worker>,
    /// The idle worker has compiled the handler.
    loaded: bool,
    /// Why the last load failed; a worker is not preloaded again until a call asks.
    load_error: Option<HandlerFailure>,
    busy: bool,
    queue: VecDeque<Waiting>,
    next_id: u64,
    stats: HandlerStats,
}

impl CapabilityHandler {
    pub fn new(spec: HandlerSpec) -> Self {
        let load = json!({"id": LOAD_ID, "op": "load", "source": &*spec.source, "function": spec.function});
        let load_frame = crate::frame::encode(&load).unwrap_or_default();
        CapabilityHandler {
            spec,
            load_frame: Arc::new(load_frame),
            worker: None,
            loaded: false,
            load_error: None,
            busy: false,
            queue: VecDeque::new(),
            next_id: LOAD_ID + 1,
            stats: HandlerStats::default(),
        }
    }

    /// Starts a worker process (Python boots while the actor waits for work).
    fn spawn_worker(&mut self) -> std::io::Result<Worker> {
        crate::fsutil::ensure_dir(&self.spec.home, 0o700)?;
        let mut cmd = Command::new(&self.spec.python);
        cmd.arg("-I")
            .arg("-S")
            .arg("-B")
            .arg(&self.spec.host_script)
            .arg(&self.spec.handler_dir)
            .current_dir(&self.spec.home)
            // Stops: the kernel's environment (the API token, RUMI_* settings, anything an
            // operator exported) reaching third-party code.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &self.spec.home)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let label = format!("handler:{}", self.spec.handler_id);
        Worker::from_command(cmd, &label, MAX_REPLY_BYTES, self.spec.redactor.clone())
    }

    /// Runs the next job when the worker is free: the front call (loading the handler first on
    /// a fresh worker), or, with nothing queued, a preload so the first call finds it warm.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if self.worker.is_none() {
            match self.spawn_worker() {
                Ok(w) => {
                    self.worker = Some(w);
                    self.loaded = false;
                }
                Err(e) => {
                    tracing::error!(handler_id = %self.spec.handler_id, error = %e, "cannot start the handler's worker");
                    for w in self.queue.drain(..) {
                        self.stats.failures += 1;
                        let _ = w.reply.send(Err(HandlerFailure::new(
                            "handler_crashed",
                            "the handler's worker could not be started; the kernel log says why",
                        )));
                    }
                    return;
                }
            }
        }
        let call = self.next_call();
        if call.is_none() && (self.loaded || self.load_error.is_some()) {
            return;
        }
        let Some(worker) = self.worker.take() else {
            return;
        };
        self.busy = true;
        let load = (!self.loaded).then(|| Arc::clone(&self.load_frame));
        let (reply, exec) = match call {
            Some(w) => {
                self.stats.calls += 1;
                let id = self.next_id;
                self.next_id += 1;
                let timeout = w.deadline.saturating_duration_since(Instant::now());
                let frame = crate::frame::encode(&json!({
                    "id": id, "op": "execute", "context": w.msg.context, "args": w.msg.args,
                }));
                match frame {
                    Ok(frame) => (Some(w.reply), Some((id, frame, timeout))),
                    Err(e) => {
                        let _ = w.reply.send(Err(HandlerFailure::new(
                            "handler_error",
                            format!("the call could not be encoded: {e}"),
                        )));
                        self.worker = Some(worker);
                        self.busy = false;
                        return self.pump(ctx);
                    }
                }
            }
            None => (None, None),
        };
        let job = run_job(worker, load, exec);
        ctx.spawn(job.into_actor(self).map(move |done, act, ctx| {
            act.busy = false;
            act.finish(done, reply);
            act.pump(ctx);
        }));
    }

    /// The next queued call worth running: one whose caller went away is dropped unrun, one whose
    /// deadline passed while it waited is answered `timeout` unrun.
    fn next_call(&mut self) -> Option<Waiting> {
        while let Some(w) = self.queue.pop_front() {
            if w.reply.is_closed() {
                continue;
            }
            if w.deadline <= Instant::now() {
                self.stats.failures += 1;
                self.stats.timeouts += 1;
                let _ = w.reply.send(Err(HandlerFailure::new(
                    "timeout",
                    "the call's deadline passed while it waited for the handler's earlier calls",
                )));
                continue;
            }
            return Some(w);
        }
        None
    }

    /// Takes back the worker (or notes its loss) and answers the call.
    fn finish(
        &mut self,
        done: JobDone,
        reply: Option<oneshot::Sender<Result<Value, HandlerFailure>>>,
    ) {
        match done.load {
            LoadOutcome::Done => {
                self.loaded = true;
                self.load_error = None;
            }
            LoadOutcome::Failed(f) => {
                tracing::warn!(handler_id = %self.spec.handler_id, error = %f.error, "the handler failed to load");
                self.loaded = false;
                self.load_error = Some(f);
            }
            LoadOutcome::Skipped => {}
        }
        match done.worker {
            Some(w) => self.worker = Some(w),
            None => {
                self.stats.restarts += 1;
                self.loaded = false;
            }
        }
        if let Some(result) = done.result {
            match &result {
                Err(f) if f.error_type == "timeout" => {
                    self.stats.failures += 1;
                    self.stats.timeouts += 1;
                }
                Err(_) => self.stats.failures += 1,
                Ok(_) => {}
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }
}

impl Actor for CapabilityHandler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Warm at once: the first call should not pay for Python's start.
        self.pump(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Dropping the worker kills its tree; a call in flight is dropped with its future.
        self.worker = None;
        for w in self.queue.drain(..) {
            let _ = w.reply.send(Err(HandlerFailure::new(
                "handler_crashed",
                "the handler was stopped",
            )));
        }
    }
}

/// `execute(context, args)`: queued behind the call in flight; `busy` past [`QUEUE_LIMIT`].
impl Handler<Execute> for CapabilityHandler {
    type Result = ResponseFuture<Result<Value, HandlerFailure>>;

    fn handle(&mut self, msg: Execute, ctx: &mut Self::Context) -> Self::Result {
        if self.queue.len() >= QUEUE_LIMIT {
            self.stats.failures += 1;
            return Box::pin(async {
                Err(HandlerFailure::new(
                    "busy",
                    format!("{QUEUE_LIMIT} calls already wait for this handler; retry later"),
                ))
            });
        }
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + msg.timeout.min(MAX_TIMEOUT);
        self.queue.push_back(Waiting {
            msg,
            reply: tx,
            deadline,
        });
        self.pump(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(HandlerFailure::new(
                    "handler_crashed",
                    "the handler stopped before answering",
                ))
            })
        })
    }
}

/// Stops the actor; its worker is killed.
impl Handler<Stop> for CapabilityHandler {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The counters and the current worker's pid.
impl Handler<GetStats> for CapabilityHandler {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        let mut s = self.stats.clone();
        s.queued = self.queue.len();
        s.worker_pid = self.worker.as_ref().map(Worker::pid);
        MessageResult(s)
    }
}

/// Panics on purpose (supervision tests).
impl Handler<InjectPanic> for CapabilityHandler {
    type Result = ();
    fn handle(&mut self, _: InjectPanic, _: &mut Self::Context) {
        panic!("injected panic in a capability handler actor");
    }
}

enum LoadOutcome {
    Skipped,
    Done,
    Failed(HandlerFailure),
}

/// What one job on the worker left: the worker when still usable, the load's outcome, and the
/// call's answer when there was a call.
struct JobDone {
    worker: Option<Worker>,
    load: LoadOutcome,
    result: Option<Result<Value, HandlerFailure>>,
}

/// Loads the handler on a fresh worker (when `load` is given), then runs the call (when given).
async fn run_job(
    worker: Worker,
    load: Option<Arc<Vec<u8>>>,
    exec: Option<(u64, Vec<u8>, Duration)>,
) -> JobDone {
    let mut worker = worker;
    let mut load_outcome = LoadOutcome::Skipped;
    if let Some(frame) = load {
        let (back, res) = worker.call(LOAD_ID, frame.to_vec(), LOAD_TIMEOUT).await;
        let failure = match res {
            Ok(reply) => reply_result(reply).err(),
            Err(e) => Some(call_failure(e, LOAD_TIMEOUT)),
        };
        if let Some(f) = failure {
            return JobDone {
                worker: back,
                result: exec.map(|_| Err(f.clone())),
                load: LoadOutcome::Failed(f),
            };
        }
        load_outcome = LoadOutcome::Done;
        match back {
            Some(w) => worker = w,
            None => {
                return JobDone {
                    worker: None,
                    load: load_outcome,
                    result: exec.map(|_| {
                        Err(HandlerFailure::new(
                            "handler_crashed",
                            "the handler's worker died",
                        ))
                    }),
                }
            }
        }
    }
    let Some((id, frame, timeout)) = exec else {
        return JobDone {
            worker: Some(worker),
            load: load_outcome,
            result: None,
        };
    };
    let (back, res) = worker.call(id, frame, timeout).await;
    let result = match res {
        Ok(reply) => reply_result(reply),
        Err(e) => Err(call_failure(e, timeout)),
    };
    JobDone {
        worker: back,
        load: load_outcome,
        result: Some(result),
    }
}

/// `{ok: true, result}` → the result; `{ok: false, error}` → `handler_error`.
fn reply_result(mut reply: Value) -> Result<Value, HandlerFailure> {
    if reply.get("ok") == Some(&Value::Bool(true)) {
        return Ok(reply
            .get_mut("result")
            .map(Value::take)
            .unwrap_or(Value::Null));
    }
    let error = reply
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("the handler failed")
        .to_string();
    Err(HandlerFailure::new("handler_error", error))
}

/// A failure of the worker itself (it was killed; a fresh one is started).
fn call_failure(e: CallError, timeout: Duration) -> HandlerFailure {
    match e {
        CallError::TimedOut => HandlerFailure::new(
            "timeout",
            format!(
                "the handler did not answer within {:.1} s; its worker was replaced",
                timeout.as_secs_f64()
            ),
        ),
        CallError::TooLarge(n) => HandlerFailure::new(
            "handler_error",
            format!("the handler's reply is {n} bytes; the limit is {MAX_REPLY_BYTES}; its worker was replaced"),
        ),
        CallError::Crashed(why) => {
            tracing::warn!(%why, "a capability handler's worker failed");
            HandlerFailure::new(
                "handler_crashed",
                "the handler's worker died or broke the protocol; it was replaced",
            )
        }
        CallError::OutOfMemory | CallError::Strays(_) => HandlerFailure::new(
            "handler_crashed",
            "the handler's worker failed; it was replaced",
        ),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
pub(crate) mod tests;
