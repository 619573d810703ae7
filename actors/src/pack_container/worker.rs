//! A warm host Python worker: one `rumi_blockhost.py` process serving one pack (permissive mode).
//!
//! The worker speaks the block host's framed protocol over its stdin/stdout. It runs in its own
//! process group with a scrubbed environment (only what Python needs, never the kernel's
//! variables, so no token or secret in the kernel's environment reaches pack code), and
//! `PYTHONDONTWRITEBYTECODE=1` plus `-B` so it never writes `.pyc` files into the pack (which would
//! change the pack's files and trip its own manifest). A call that overruns its deadline kills
//! the whole process group; the worker is then gone and the owner starts a fresh one.

use crate::frame::ReadError;
use serde_json::Value;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

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
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pgid: i32,
    max_frame: usize,
}

impl Worker {
    /// Starts a worker. The process is ready when Python has started; the first request simply
    /// waits in the pipe until then.
    pub fn spawn(spec: &WorkerSpec) -> io::Result<Worker> {
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
            .env("RUMI_MAX_RESULT_BYTES", spec.max_frame.to_string());
        if let Some(sock) = &spec.egress_socket {
            cmd.env("RUMI_EGRESS_SOCKET", sock);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a timeout kills whatever the block forked too.
            .process_group(0);
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
            let pack = spec.pack_id.clone();
            // Raw writes to fd 1/2 end up here; logged (bounded lines), never in a result.
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line: String = line.chars().take(2000).collect();
                    tracing::debug!(pack_id = %pack, "worker: {line}");
                }
            });
        }
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            pgid: pid,
            max_frame: spec.max_frame,
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
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => (Some(self), Ok(reply)),
            Ok(Err(e)) => {
                self.kill();
                (None, Err(e))
            }
            Err(_) => {
                self.kill();
                (None, Err(CallError::TimedOut))
            }
        }
    }

    /// Kills the worker's whole process group now; the zombie is reaped in the background.
    pub fn kill(&mut self) {
        // SAFETY: killpg only sends a signal; a stale pgid at worst targets nothing (ESRCH).
        unsafe {
            libc::killpg(self.pgid, libc::SIGKILL);
        }
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
    let reply: Value = serde_json::from_slice(&buf)
        .map_err(|_| CallError::Crashed("the block host sent a malformed reply".into()))?;
    if reply.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(CallError::Crashed(
            "the block host answered out of turn".into(),
        ));
    }
    Ok(reply)
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
