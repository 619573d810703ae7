//! A warm host Python worker: one `rumi_blockhost.py` process serving one pack (permissive mode).
//!
//! The worker speaks the block host's framed protocol over its stdin/stdout. It runs in its own
//! process group with a scrubbed environment (only what Python needs, never the kernel's
//! variables, so no token or secret in the kernel's environment reaches pack code), and
//! `PYTHONDONTWRITEBYTECODE=1` plus `-B` so it never writes `.pyc` files into the pack (which would
//! change the pack's files and trip its own manifest). It is the subreaper of whatever its blocks
//! start, which the block host kills after every call (see [`super::proctree`]). A call that
//! overruns its deadline, or breaks the protocol, kills the worker with every process under it;
//! the owner then starts a fresh one.

use super::proctree;
use crate::frame::ReadError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// How to start a pack's worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub pack_id: String,
    /// The interpreter (absolute path).
    pub python: PathBuf,
    /// `rumi_blockhost.py`.
    pub host_script: PathBuf,
    /// The directory of the embedded modules (`rumi_syscall`, `rumi_capability`).
    pub modules_dir: PathBuf,
    /// The pack subdir: the block host's root (`/pack` in a container).
    pub pack_root: PathBuf,
    /// The pack's writable data directory, the worker's working directory.
    pub data_dir: PathBuf,
    /// Largest reply frame accepted.
    pub max_frame: usize,
    /// The pack's egress socket (`RUMI_EGRESS_SOCKET` in the worker's environment).
    pub egress_socket: Option<PathBuf>,
    /// The pack's capability socket (`RUMI_CAPABILITY_SOCKET`).
    pub capability_socket: Option<PathBuf>,
    /// Where the worker's pid is registered while it lives: the capability socket admits only
    /// the pack's own processes.
    pub processes: Option<std::sync::Arc<crate::capability::peers::PackProcesses>>,
    /// Secret values scrubbed from the stderr lines the kernel logs.
    pub redactor: Option<std::sync::Arc<crate::capability::redact::Redactor>>,
}

/// Why a call failed at the worker level (the block's own errors come back in the reply).
#[derive(Debug)]
pub enum CallError {
    /// The deadline passed; the worker was killed.
    TimedOut,
    /// The worker died or broke the protocol; it was killed.
    Crashed(String),
    /// The reply was larger than allowed; the worker was killed.
    TooLarge(usize),
    /// The sandbox ran out of memory and was killed (containers).
    OutOfMemory,
    /// The block left this many processes running; the sandbox was replaced (containers).
    Strays(u64),
}

/// A running worker process.
pub struct Worker {
    /// `None` once handed to its [`Reaper`] (the worker is being killed or was).
    child: Option<Child>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pgid: i32,
    max_frame: usize,
    /// Where its pid is registered as one of its pack's processes, until it is killed.
    registered: Option<(
        std::sync::Arc<crate::capability::peers::PackProcesses>,
        String,
    )>,
}

/// How long killing a worker may spend stopping its tree before everything found gets SIGKILL.
const KILL_WALK_LIMIT: Duration = Duration::from_millis(500);

impl Worker {
    /// Starts a worker. The process is ready when Python has started; the first request simply
    /// waits in the pipe until then.
    pub fn spawn(spec: &WorkerSpec) -> io::Result<Worker> {
        Worker::spawn_on(spec, &[])
    }

    /// [`Worker::spawn`], the process confined to `cpus` from before its first instruction (empty:
    /// where its owner's thread may run).
    pub fn spawn_on(spec: &WorkerSpec, cpus: &[usize]) -> io::Result<Worker> {
        std::fs::create_dir_all(&spec.data_dir)?;
        let mut cmd = Command::new(&spec.python);
        cmd.arg("-B")
            .arg("-I")
            .arg("-S")
            .arg(&spec.host_script)
            .arg(&spec.pack_root)
            .current_dir(&spec.data_dir)
            // The kernel's environment never reaches pack code.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &spec.data_dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("RUMI_PACK_ID", &spec.pack_id)
            .env("RUMI_MAX_RESULT_BYTES", spec.max_frame.to_string())
            // The pack's installed pip packages (`user_data/packs/<id>/python/site-packages`):
            // the block host puts them on its path when the directory exists.
            .env(
                "RUMI_PIP_PACKAGES",
                spec.data_dir.join("python").join("site-packages"),
            );
        if let Some(sock) = &spec.egress_socket {
            cmd.env("RUMI_EGRESS_SOCKET", sock);
        }
        if let Some(sock) = &spec.capability_socket {
            cmd.env("RUMI_CAPABILITY_SOCKET", sock);
        }
        if !cpus.is_empty() {
            let set = crate::affinity::cpu_set(cpus);
            // SAFETY: one system call (sched_setaffinity) on a set copied before the fork.
            unsafe {
                cmd.pre_exec(move || crate::affinity::confine_current(&set));
            }
        }
        let mut worker =
            Worker::from_command(cmd, &spec.pack_id, spec.max_frame, spec.redactor.clone())?;
        worker.registered = spec.processes.clone().map(|procs| {
            procs.register(&spec.pack_id, worker.pgid);
            (procs, spec.pack_id.clone())
        });
        Ok(worker)
    }

    /// Starts `cmd` (its program, arguments, environment and working directory set by the
    /// caller) as a worker: piped stdio, its own process group, the subreaper flag and
    /// `PR_SET_PDEATHSIG` (see [`proctree::prepare_worker`]), stderr logged in bounded lines under
    /// `label`. Shared by pack workers and capability handler workers
    /// ([`crate::capability::handler`]). Must be called on a thread that lives as long as the
    /// worker's owner (the death signal follows the thread that forks): a kernel arbiter, or the
    /// HTTP worker that hosts the pack sandboxes (`registry::ContainerHost`), whose actors, and so
    /// their workers, are dropped — killed — before its thread ends. `redactor` scrubs secret
    /// values from the logged lines.
    pub(crate) fn from_command(
        mut cmd: Command,
        label: &str,
        max_frame: usize,
        redactor: Option<std::sync::Arc<crate::capability::redact::Redactor>>,
    ) -> io::Result<Worker> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: signals for the kernel's process group never reach pack code.
            .process_group(0);
        // SAFETY: getpid has no preconditions.
        let kernel_pid = unsafe { libc::getpid() };
        // SAFETY: the closure makes async-signal-safe system calls only (prctl, getppid) between
        // fork and exec. As its descendants' subreaper the worker keeps every process a block
        // starts under it, however detached, so the block host can kill them after each call and
        // the kernel with the worker; and it dies with the kernel (see `proctree`).
        unsafe {
            cmd.pre_exec(move || proctree::prepare_worker(kernel_pid));
        }
        // Before the first worker exists: its kill must never need a new thread.
        let _ = reaper_thread();
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("worker exited at once"))? as i32;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        if let Some(stderr) = child.stderr.take() {
            // Raw writes to fd 1/2 end up here; logged (bounded lines), never in a result.
            tokio::spawn(log_stderr(stderr, label.to_string(), redactor));
        }
        Ok(Worker {
            child: Some(child),
            stdin,
            stdout: BufReader::new(stdout),
            pgid: pid,
            max_frame,
            registered: None,
        })
    }

    /// The worker's process id (for tests and snapshots).
    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Sends one request (`frame`, already encoded, carrying `id`) and waits for its reply within
    /// `timeout`. Consumes the worker and gives it back when it is still usable; on any failure it
    /// is killed and `None` comes back.
    pub async fn call(
        mut self,
        id: u64,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> (Option<Worker>, Result<Value, CallError>) {
        let exchange = exchange(
            &mut self.stdout,
            &mut self.stdin,
            id,
            &frame,
            self.max_frame,
        );
        let failure = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => return (Some(self), Ok(reply)),
            Ok(Err(e)) => e,
            Err(_) => CallError::TimedOut,
        };
        self.kill_off_thread().await;
        (None, Err(failure))
    }

    /// Kills the worker on the reaper thread (see [`reap_elsewhere`]): the thread its owner runs
    /// on may be the HTTP worker's (`registry::ContainerHost`), whose other requests must not
    /// wait for a walk of up to [`KILL_WALK_LIMIT`] (a fork bomb's worth). The caller hears of
    /// the failure once the tree is dead, as before; should this future be dropped first (its
    /// actor stopped), the walk still runs to its end.
    async fn kill_off_thread(&mut self) {
        if let Some(reaper) = self.reaper() {
            let (done, killed) = tokio::sync::oneshot::channel();
            match reap_elsewhere(reaper, Some(done)) {
                Some(reaper) => drop(reaper), // no reaper thread: here
                None => {
                    let _ = killed.await;
                }
            }
        }
    }

    /// Kills the worker, every process under it and its process group now, on this thread (once);
    /// the zombie is reaped in the background.
    pub fn kill(&mut self) {
        drop(self.reaper());
    }

    /// Takes the worker out of its pack's processes and hands its tree to a [`Reaper`] (once).
    fn reaper(&mut self) -> Option<Reaper> {
        if let Some((procs, pack)) = self.registered.take() {
            procs.unregister(&pack, self.pgid);
        }
        let pgid = self.pgid;
        self.child.take().map(|child| Reaper { pgid, child })
    }
}

/// A worker's process tree, killed when this is dropped, wherever that happens: first the walk
/// (the root, its descendants' subreaper, is stopped, not killed, while it runs, so nothing under
/// it escapes to init), then the root, which tokio reaps.
struct Reaper {
    pgid: i32,
    child: Child,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        proctree::kill_tree(self.pgid, KILL_WALK_LIMIT);
        let _ = self.child.start_kill();
    }
}

/// One request/reply on a framed channel ([`crate::frame`]): writes `frame` (already encoded,
/// carrying `id`) and reads the reply, which must carry the same id and fit `max_frame` (plus room
/// for the envelope). Shared by host workers (pipes) and containers (a Unix socket).
pub(crate) async fn exchange<R, W>(
    reader: &mut R,
    writer: &mut W,
    id: u64,
    frame: &[u8],
    max_frame: usize,
) -> Result<Value, CallError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    crate::frame::write(writer, frame)
        .await
        .map_err(|e| CallError::Crashed(format!("write: {}", e.kind())))?;
    let buf = crate::frame::read(reader, max_frame + 64 * 1024)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge(n) => CallError::TooLarge(n),
            ReadError::Closed => CallError::Crashed("the block host exited".into()),
            ReadError::Truncated => CallError::Crashed("the block host exited mid-reply".into()),
            ReadError::Empty => CallError::Crashed("the block host sent a malformed reply".into()),
        })?;
    let reply: Value = match serde_json::from_slice(&buf) {
        Ok(reply) => reply,
        Err(e) => return unreadable_reply(&buf, id, &e),
    };
    if reply.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(CallError::Crashed(
            "the block host answered out of turn".into(),
        ));
    }
    Ok(reply)
}

/// The envelope of a reply, for when its result cannot be read as a [`Value`]. Everything else
/// is skipped by serde_json without recursion, so a reply of any depth yields its id.
#[derive(Deserialize)]
struct Envelope {
    id: Option<u64>,
    log: Option<String>,
}

/// A whole frame arrived but its JSON is not a [`Value`] the kernel can hold: a result nested
/// past serde_json's recursion limit (128), or a number out of range. The block host refuses such
/// results itself; this is for one that slips through (or a tampered host). Stops: a block that
/// returns a deep value to have its worker declared crashed and replaced. The frame was read whole
/// and carries this request's id, so the channel is still in step and the worker is kept.
fn unreadable_reply(buf: &[u8], id: u64, error: &serde_json::Error) -> Result<Value, CallError> {
    let malformed = || CallError::Crashed("the block host sent a malformed reply".into());
    let envelope: Envelope = serde_json::from_slice(buf).map_err(|_| malformed())?;
    if envelope.id != Some(id) {
        return Err(malformed());
    }
    let what = error.to_string();
    let what = what.split(" at line ").next().unwrap_or_default();
    let error = if what == "recursion limit exceeded" {
        "run() returned a value nested deeper than the kernel reads (128 levels); return flatter data"
            .to_string()
    } else {
        format!("run() returned a value the kernel cannot read ({what}); return plain JSON data")
    };
    Ok(
        json!({"id": id, "ok": false, "error_type": "invalid_result", "error": error, "log": envelope.log}),
    )
}

impl Drop for Worker {
    /// A worker dropped alive (its pack stopped, its call abandoned) is killed by the reaper
    /// thread, or here when there is none.
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper() {
            drop(reap_elsewhere(reaper, None));
        }
    }
}

/// What the reaper thread is asked: a tree to kill (and whom to tell), or to say when it has
/// killed every tree asked before.
enum ReapJob {
    Kill(Reaper, Option<tokio::sync::oneshot::Sender<()>>),
    Mark(std::sync::mpsc::Sender<()>),
}

/// Hands `reaper` to the kernel's one reaper thread, which kills the tree (up to
/// [`KILL_WALK_LIMIT`]) and then answers `done`: the thread a worker's owner runs on may be the
/// HTTP worker's (`registry::ContainerHost`), which must not wait for a walk. A thread of its
/// own, started with the first worker, rather than the blocking pool: a fork bomb that has used
/// up the user's processes makes every new thread fail (tokio's `spawn_blocking` then panics),
/// and the kill must not need one. It runs at normal priority, so a bomb cannot starve it. Gives
/// the reaper back when there is no such thread (it could not be started, or it died): the caller
/// kills it then (dropping it does).
#[must_use = "a reaper given back must be dropped where the caller is: that is the kill"]
fn reap_elsewhere(
    reaper: Reaper,
    done: Option<tokio::sync::oneshot::Sender<()>>,
) -> Option<Reaper> {
    let Some(tx) = reaper_thread() else {
        return Some(reaper);
    };
    match tx.send(ReapJob::Kill(reaper, done)) {
        Ok(()) => None,
        Err(e) => match e.0 {
            ReapJob::Kill(reaper, _) => Some(reaper),
            ReapJob::Mark(_) => None,
        },
    }
}

/// The reaper thread's queue (see [`reap_elsewhere`]); started on first use — from
/// [`Worker::from_command`], so before any worker needs it.
fn reaper_thread() -> Option<&'static std::sync::mpsc::Sender<ReapJob>> {
    static REAPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<ReapJob>>> =
        std::sync::OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<ReapJob>();
            let started = std::thread::Builder::new()
                .name("rumi-reaper".into())
                .spawn(move || {
                    for job in rx {
                        match job {
                            ReapJob::Kill(reaper, done) => {
                                drop(reaper);
                                if let Some(done) = done {
                                    let _ = done.send(());
                                }
                            }
                            ReapJob::Mark(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the reaper thread; workers are killed on their owner's thread");
                    None
                }
            }
        })
        .as_ref()
}

/// Waits, at most `max`, until every tree handed to the reaper thread so far is killed: at
/// shutdown, before the process exits (and the kills under way with it).
pub fn reaped(max: Duration) {
    if let Some(tx) = reaper_thread() {
        let (done, marked) = std::sync::mpsc::channel();
        if tx.send(ReapJob::Mark(done)).is_ok() {
            let _ = marked.recv_timeout(max);
        }
    }
}

/// The most of one stderr line the kernel keeps for its log; the rest of a longer line is dropped
/// up to its newline.
pub const STDERR_LINE_CAP: usize = 2000;
/// How much of a worker's stderr is read at a time.
const STDERR_CHUNK: usize = 16 * 1024;

/// Logs a worker's stderr line by line (at debug level), reading it in bounded chunks.
///
/// Stops: a block that writes hundreds of MiB to fd 2 without a newline. Reading whole lines and
/// cutting them afterwards held the entire "line" in the kernel (400 MiB took the kernel from
/// 22 MB to 432 MB of RSS, for good); here the kernel never holds more than one chunk and one
/// capped line per worker, and the stream keeps being drained so the block never blocks on it.
pub(crate) async fn log_stderr(
    mut stderr: ChildStderr,
    pack: String,
    redactor: Option<std::sync::Arc<crate::capability::redact::Redactor>>,
) {
    let mut chunk = vec![0u8; STDERR_CHUNK];
    let mut lines = CappedLines::new(STDERR_LINE_CAP);
    let log = |line: &[u8], truncated: bool| {
        let more = if truncated { " [line truncated]" } else { "" };
        let mut text = String::from_utf8_lossy(line).into_owned();
        if let Some(r) = &redactor {
            r.scrub(&mut text);
        }
        tracing::debug!(pack_id = %pack, "worker: {text}{more}");
    };
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.feed(&chunk[..n], log),
        }
    }
    lines.finish(log);
}

/// Splits a byte stream into lines, holding at most `cap` bytes of the current one. A line that
/// reaches the cap is handed over at once, cut and marked truncated, and what follows it is
/// skipped up to the next newline.
#[derive(Debug)]
struct CappedLines {
    line: Vec<u8>,
    cap: usize,
    /// Inside a line that was already handed over cut: bytes are skipped until its newline.
    skipping: bool,
}

impl CappedLines {
    fn new(cap: usize) -> Self {
        CappedLines {
            // Allocated once at the cap, so it never grows past it.
            line: Vec::with_capacity(cap),
            cap,
            skipping: false,
        }
    }

    /// Feeds one chunk; `emit(line, truncated)` gets every line finished (or cut) by it.
    fn feed(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !chunk.is_empty() {
            let end = chunk.iter().position(|&b| b == b'\n');
            let part = &chunk[..end.unwrap_or(chunk.len())];
            if !self.skipping {
                let room = self.cap - self.line.len();
                if part.len() > room {
                    self.line.extend_from_slice(&part[..room]);
                    emit(&self.line, true);
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            match end {
                Some(i) => {
                    if !self.skipping {
                        emit(&self.line, false);
                    }
                    self.line.clear();
                    self.skipping = false;
                    chunk = &chunk[i + 1..];
                }
                None => break,
            }
        }
    }

    /// At the end of the stream: hands over an unfinished line.
    fn finish(self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.line.is_empty() {
            emit(&self.line, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker whose "block" left two sleeps running, one in a session of its own (outside the
    /// worker's process group); answers the worker and the sleeps' pids.
    async fn worker_with_strays() -> (Worker, Vec<i32>) {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & echo $!; setsid sleep 60 & echo $!; wait"]);
        let mut w = Worker::from_command(cmd, "test", 1 << 20, None).unwrap();
        let mut pids = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            w.stdout.read_line(&mut line).await.unwrap();
            pids.push(line.trim().parse::<i32>().unwrap());
        }
        (w, pids)
    }

    /// Whether `pid` runs (an exited process not yet reaped, a zombie, does not).
    fn running(pid: i32) -> bool {
        // `pid (comm) S …`: the state follows the last `)`.
        std::fs::read(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let close = s.iter().rposition(|&b| b == b')')?;
                s.get(close + 2).copied()
            })
            .is_some_and(|state| !matches!(state, b'Z' | b'X'))
    }

    /// The worker itself gets its SIGKILL last, once everything under it is dead; it dies when
    /// next scheduled.
    async fn root_dies(root: i32) {
        crate::test_support::eventually(&format!("the worker {root} dies"), || !running(root))
            .await;
    }

    #[tokio::test]
    async fn a_failed_call_is_answered_once_the_whole_tree_is_dead() {
        let (w, pids) = worker_with_strays().await;
        let root = w.pid();
        // `sh` never answers: the call times out and the worker is killed off this thread.
        let (back, outcome) = w.call(1, b"{}".to_vec(), Duration::from_millis(50)).await;
        assert!(back.is_none());
        assert!(matches!(outcome, Err(CallError::TimedOut)));
        for pid in pids {
            assert!(!running(pid), "{pid} still runs when the call is answered");
        }
        root_dies(root).await;
    }

    #[tokio::test]
    async fn a_dropped_worker_has_its_whole_tree_killed_by_the_reaper_thread() {
        let (w, pids) = worker_with_strays().await;
        let root = w.pid();
        drop(w);
        reaped(Duration::from_secs(10));
        for pid in pids {
            assert!(!running(pid), "{pid} still runs after the reaper's turn");
        }
        root_dies(root).await;
    }

    fn split(cap: usize, chunks: &[&[u8]]) -> (Vec<(String, bool)>, usize) {
        let mut lines = CappedLines::new(cap);
        let mut out = Vec::new();
        let mut held = 0;
        for c in chunks {
            lines.feed(c, |l, t| {
                out.push((String::from_utf8_lossy(l).into_owned(), t))
            });
            held = held.max(lines.line.capacity());
        }
        lines.finish(|l, t| out.push((String::from_utf8_lossy(l).into_owned(), t)));
        (out, held)
    }

    /// Runs one exchange against `reply`, written beforehand by the "block host".
    async fn exchange_with(reply: &[u8]) -> (Result<Value, CallError>, tokio::io::DuplexStream) {
        use tokio::io::AsyncWriteExt;
        let (mut kernel_r, mut host_w) = tokio::io::duplex(1 << 16);
        let (mut kernel_w, _host_r) = tokio::io::duplex(1 << 16);
        let mut frame = (reply.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(reply);
        host_w.write_all(&frame).await.unwrap();
        let request = crate::frame::encode(&json!({"id": 7})).unwrap();
        let out = exchange(&mut kernel_r, &mut kernel_w, 7, &request, 1 << 16).await;
        drop(kernel_r);
        (out, host_w)
    }

    #[tokio::test]
    async fn a_reply_too_deep_to_parse_is_an_invalid_result_not_a_crash() {
        // The attack: a result nested past serde_json's limit, to get the worker replaced.
        let deep = format!("{}0{}", "[".repeat(200), "]".repeat(200));
        let reply = format!(r#"{{"id":7,"ok":true,"result":{deep},"log":"printed"}}"#);
        let (out, _) = exchange_with(reply.as_bytes()).await;
        let reply = out.unwrap_or_else(|e| panic!("the worker would be dropped: {e:?}"));
        assert_eq!(reply["error_type"], "invalid_result");
        assert_eq!(reply["log"], "printed");
        assert!(reply["error"].as_str().unwrap().contains("nested deeper"));
        // Out of range numbers are the other value serde_json refuses.
        let (out, _) = exchange_with(br#"{"id":7,"ok":true,"result":1e400}"#).await;
        assert_eq!(out.unwrap()["error_type"], "invalid_result");
        // Broken JSON, or a deep reply to another request, is still a broken channel.
        let (out, _) = exchange_with(br#"{"id":7,"ok":tru"#).await;
        assert!(matches!(out, Err(CallError::Crashed(_))), "{out:?}");
        let wrong_id = format!(r#"{{"id":8,"result":{deep}}}"#);
        let (out, _) = exchange_with(wrong_id.as_bytes()).await;
        assert!(matches!(out, Err(CallError::Crashed(_))), "{out:?}");
    }

    #[test]
    fn lines_are_split_across_chunks_and_capped() {
        let (out, _) = split(5, &[b"ab", b"c\nde\n\nxy"]);
        let want = [("abc", false), ("de", false), ("", false), ("xy", false)];
        assert_eq!(out, want.map(|(l, t)| (l.to_string(), t)));
        // Exactly the cap is a whole line; one byte more is cut, and the rest of it is dropped.
        let (out, _) = split(3, &[b"abc\nabcd", b"efg\nok\n"]);
        let want = [("abc", false), ("abc", true), ("ok", false)];
        assert_eq!(out, want.map(|(l, t)| (l.to_string(), t)));
    }

    #[test]
    fn a_flood_without_newlines_holds_at_most_the_cap() {
        // The attack: megabytes with no newline, then a normal line that must still be logged.
        let flood = vec![b'x'; 1 << 20];
        let mut chunks: Vec<&[u8]> = vec![&flood; 64];
        chunks.push(b"\nafter\n");
        let (out, held) = split(STDERR_LINE_CAP, &chunks);
        assert!(held <= STDERR_LINE_CAP, "held {held} bytes");
        assert_eq!(out.len(), 2, "one cut line, then the next line");
        assert_eq!(out[0].0.len(), STDERR_LINE_CAP);
        assert!(out[0].1);
        assert_eq!(out[1], ("after".to_string(), false));
    }
}
