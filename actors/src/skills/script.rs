//! The ScriptRunner seam (contract §8): how a skill's script runs. The RunScript agent decides
//! *whether* a script may run (extension, path, argv) and what its result means; a runner only
//! runs it. Two runners exist: [`HostRunner`] (permissive mode: a host process in the run's
//! workspace, and it says so — `isolation: "host"`) and the container runner of
//! `script_container.rs` (strict mode: a warm container per run and dependency environment,
//! reused by the run's scripts and removed by [`ScriptRunner::finish`]).
//!
//! Both give the script the same view: the working directory is the skill root, with the run's
//! `build/` inside it; stdin is the `args` JSON; argv follows the script path; stdout is kept up
//! to [`MAX_STDOUT`], stderr to its last [`MAX_STDERR_LINES`] lines.

use super::workspace::RunFiles;
use futures_util::future::BoxFuture;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Most stdout bytes kept.
pub const MAX_STDOUT: usize = 1024 * 1024;
/// stderr lines kept (the last ones).
pub const MAX_STDERR_LINES: usize = 512;
/// Longest stderr line kept, in bytes.
const MAX_STDERR_LINE: usize = 1000;

/// The interpreter a script's extension selects (`.py`, `.sh`, `.js`; nothing else runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    Python,
    Shell,
    Node,
}

impl Interpreter {
    /// The interpreter for `path`, or None (a `sandbox_violation`).
    pub fn for_path(path: &str) -> Option<Interpreter> {
        let ext = path.rsplit_once('.').map(|(_, e)| e)?;
        match ext {
            "py" => Some(Interpreter::Python),
            "sh" => Some(Interpreter::Shell),
            "js" => Some(Interpreter::Node),
            _ => None,
        }
    }

    /// The program name inside a container (the runtime image has python3, sh and node).
    pub fn program(self) -> &'static str {
        match self {
            Interpreter::Python => "python3",
            Interpreter::Shell => "sh",
            Interpreter::Node => "node",
        }
    }
}

/// One script to run.
#[derive(Debug, Clone)]
pub struct ScriptJob {
    pub interpreter: Interpreter,
    /// The script as the run shows it, relative to the skill root: `scripts/x.py`, `build/g.py`.
    pub shown: String,
    pub argv: Vec<String>,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    pub files: RunFiles,
    /// The script's number in the run (names its container, its stdin file).
    pub seq: u32,
    /// The largest file the script may write (the disk budget left): `RLIMIT_FSIZE` on the
    /// host, the `fsize` ulimit in a container.
    pub max_file_bytes: u64,
    /// Turns true when the script must stop now (the disk budget passed): the runner kills it —
    /// and, for a container, removes it — before it answers.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// The dependency environments the script runs with (none: the standard library only).
    pub env: ScriptEnv,
}

/// The dependency environments of one script (contract §8): built once per dependency set
/// under `user_data/skill_envs/<python|node>/<hash>/` and reused across runs and skills.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptEnv {
    /// Names the pair of environments (`""` = none); a warm container is kept per key.
    pub key: String,
    /// The Python environment's package directory (on `PYTHONPATH`), read-only to the script.
    pub python: Option<PathBuf>,
    /// The Node environment's `node_modules` (on `NODE_PATH`), read-only to the script.
    pub node: Option<PathBuf>,
}

/// Where a container sees the Python environment's package directory (read-only).
pub const CONTAINER_PYTHON_ENV: &str = "/env/python";
/// Where a container sees the Node environment's `node_modules` (read-only).
pub const CONTAINER_NODE_ENV: &str = "/env/node_modules";

impl ScriptEnv {
    /// The variables that put the environments on the interpreters' search paths, for a host
    /// process (`host: true`, the environments' own paths) or a container (their mount points).
    pub fn variables(&self, host: bool) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        if let Some(p) = &self.python {
            let at = if host {
                p.to_string_lossy().into_owned()
            } else {
                CONTAINER_PYTHON_ENV.to_string()
            };
            vars.push(("PYTHONPATH", at));
        }
        if let Some(p) = &self.node {
            let at = if host {
                p.to_string_lossy().into_owned()
            } else {
                CONTAINER_NODE_ENV.to_string()
            };
            vars.push(("NODE_PATH", at));
        }
        vars
    }
}

/// Resolves once `stop` turns true (never, if its sender is gone without asking).
pub async fn stop_requested(mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            futures_util::future::pending::<()>().await;
        }
    }
}

/// What a script did.
#[derive(Debug, Clone, Default)]
pub struct ScriptOutput {
    /// None when it was killed (timeout) or died by a signal.
    pub exit_code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_tail: Vec<String>,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// Runs scripts; `Err` = the runner itself failed (no container backend, spawn failed).
pub trait ScriptRunner: Send + Sync {
    /// `"host"` or `"container"` (each `run_script` result says which).
    fn isolation(&self) -> &'static str;
    /// Readies the run's files before the RunScript agent snapshots them (the container runner
    /// hands `build/` to the container's user: done here, its change of owners is not taken
    /// for the script's writes). Blocking.
    fn prepare(&self, _files: &RunFiles) {}
    fn run(&self, job: ScriptJob) -> BoxFuture<'static, Result<ScriptOutput, String>>;
    /// The run ended: whatever the runner kept for it (a warm container) goes. Called once.
    fn finish(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Permissive mode: a host process with a scrubbed environment, in a view of the skill root.
pub struct HostRunner {
    /// The Python interpreter (absolute path; the kernel's configured one).
    pub python: PathBuf,
}

/// The workspace's `root/`: a link to each top-level entry of the skill and `build` → the run's
/// `build/`. The script's working directory, so relative paths mean what they mean in a
/// container. A host process can follow the links and write into the skill: the RunScript
/// agent snapshots the skill before and after and ends the run with `sandbox_violation` if so.
pub fn host_view(files: &RunFiles) -> std::io::Result<PathBuf> {
    let view = files.run_dir().join("root");
    if view.is_dir() {
        return Ok(view);
    }
    let tmp = files.run_dir().join(".root-tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)?;
    for entry in std::fs::read_dir(files.skill_root())?.flatten() {
        let name = entry.file_name();
        if name == "build" {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), tmp.join(&name))?;
    }
    std::os::unix::fs::symlink("../build", tmp.join("build"))?;
    std::fs::rename(&tmp, &view)?;
    Ok(view)
}

/// A kernel running as root starts host scripts in a user and a pid namespace of their own
/// (root inside mapped to root outside, so files read the same):
/// * the kernel is not dumpable (`Kernel::boot`), and reading its `/proc/<pid>/environ` (the
///   model's API key, the API token) or tracing it then needs `CAP_SYS_PTRACE` in the kernel's
///   namespace, which a process in a child namespace never has;
/// * in its own pid namespace a script cannot name the kernel (or any host process) to signal
///   it, and whatever it leaves running — a daemon that double-forked into a session of its
///   own — dies with it: the script is the namespace's init. A waiter stays outside (the
///   process the kernel spawned): it relays the script's exit status and, when it is killed
///   (timeout, cancelled run), the script gets `SIGKILL` (`PR_SET_PDEATHSIG`) and so does the
///   whole namespace.
///
/// Not protected: files. The script still reads what root reads — which is why a root kernel
/// in permissive mode refuses scripts the model wrote (`run_script.rs`).
/// Called between fork and exec: raw syscalls only.
fn enter_user_namespace() -> std::io::Result<()> {
    fn write_file(path: &[u8], text: &[u8]) -> std::io::Result<()> {
        // SAFETY: NUL-terminated path; open/write/close are async-signal-safe.
        unsafe {
            let fd = libc::open(
                path.as_ptr() as *const libc::c_char,
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, text.as_ptr() as *const libc::c_void, text.len());
            libc::close(fd);
            if n != text.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
    // SAFETY: unshare has no memory preconditions.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    write_file(b"/proc/self/setgroups\0", b"deny")?;
    write_file(b"/proc/self/uid_map\0", b"0 0 1")?;
    write_file(b"/proc/self/gid_map\0", b"0 0 1")?;
    // SAFETY: fork, waitpid, close and _exit are async-signal-safe; the waiter branch never
    // returns into the caller's code.
    unsafe {
        let child = libc::fork();
        if child < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if child > 0 {
            // The waiter: holds nothing open (the spawner learns of the exec from a pipe whose
            // other end the script closes by exec'ing; the streams end when the script does).
            if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
                for fd in 0..4096 {
                    libc::close(fd);
                }
            }
            let mut status = 0;
            loop {
                let r = libc::waitpid(child, &mut status, 0);
                if r == child {
                    break;
                }
                if r < 0 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(127);
                }
            }
            if libc::WIFEXITED(status) {
                libc::_exit(libc::WEXITSTATUS(status));
            }
            libc::_exit(128 + libc::WTERMSIG(status));
        }
        // The script, pid 1 of its namespace: dies with its waiter.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    Ok(())
}

/// Kills a process group when dropped (a cancelled run, a timeout): grandchildren too.
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: kill(2) with a negative pid signals the group the child leads.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

impl ScriptRunner for HostRunner {
    fn isolation(&self) -> &'static str {
        "host"
    }

    fn run(&self, job: ScriptJob) -> BoxFuture<'static, Result<ScriptOutput, String>> {
        let python = self.python.clone();
        Box::pin(async move {
            let view = {
                let files = job.files.clone();
                tokio::task::spawn_blocking(move || host_view(&files))
                    .await
                    .map_err(|_| "preparing the script's directory failed".to_string())?
                    .map_err(|e| {
                        format!("preparing the script's directory failed ({})", e.kind())
                    })?
            };
            let program: PathBuf = match job.interpreter {
                Interpreter::Python => python,
                other => PathBuf::from(other.program()),
            };
            let home = job.files.run_dir().join("io");
            let mut cmd = tokio::process::Command::new(&program);
            // The script by its path relative to the working directory: a traceback names
            // `scripts/x.py`, never the workspace's host path.
            cmd.arg(&job.shown)
                .args(&job.argv)
                .current_dir(&view)
                .env_clear()
                .env(
                    "PATH",
                    std::env::var_os("PATH")
                        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
                )
                .env("HOME", &home)
                .env("TMPDIR", &home)
                .env("LANG", "C.UTF-8")
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("RUMI_BUILD_DIR", "build")
                .envs(job.env.variables(true))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .process_group(0);
            let fsize = job.max_file_bytes.max(1);
            let own_namespace = crate::docker::is_root();
            // SAFETY: only async-signal-safe calls (setrlimit, unshare, open, write, close)
            // run between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: fsize as libc::rlim_t,
                        rlim_max: fsize as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if own_namespace {
                        enter_user_namespace()?;
                    }
                    Ok(())
                });
            }
            let started = Instant::now();
            let mut child = cmd.spawn().map_err(|e| {
                format!(
                    "the interpreter {} could not start ({})",
                    job.interpreter.program(),
                    e.kind()
                )
            })?;
            let _group = GroupKill(child.id().map(|p| p as i32));
            let mut stdin = child.stdin.take();
            let input = job.stdin.clone();
            let feed = async move {
                if let Some(s) = stdin.as_mut() {
                    let _ = s.write_all(&input).await;
                    let _ = s.shutdown().await;
                }
                drop(stdin);
            };
            let out = capture_stdout(child.stdout.take());
            let err = capture_stderr(child.stderr.take());
            let work = async {
                let ((), (stdout, truncated), tail, status) =
                    tokio::join!(feed, out, err, child.wait());
                (stdout, truncated, tail, status)
            };
            // Host paths never reach the model: Python prints the script's absolute path in a
            // traceback (and a script may print its own), so the run's directories are
            // replaced by what the script sees as relative paths.
            let hide = [
                (format!("{}/", view.display()), String::new()),
                (view.display().to_string(), ".".to_string()),
                (
                    format!("{}/", job.files.skill_root().display()),
                    String::new(),
                ),
                (
                    job.files.run_dir().display().to_string(),
                    "<run>".to_string(),
                ),
            ];
            let scrub = |text: &str| {
                hide.iter().fold(text.to_string(), |t, (from, to)| {
                    t.replace(from.as_str(), to)
                })
            };
            let limited = async {
                tokio::select! {
                    r = tokio::time::timeout(job.timeout, work) => r.ok(),
                    () = stop_requested(job.stop.clone()) => None,
                }
            };
            // Leaving this future (a timeout, a stop) drops the child: killed, its group too.
            match limited.await.ok_or(()) {
                Ok((stdout, stdout_truncated, stderr_tail, status)) => Ok(ScriptOutput {
                    exit_code: status.ok().and_then(|s| s.code()).map(i64::from),
                    stdout: match std::str::from_utf8(&stdout) {
                        Ok(text) => scrub(text).into_bytes(),
                        Err(_) => stdout,
                    },
                    stdout_truncated,
                    stderr_tail: stderr_tail.iter().map(|l| scrub(l)).collect(),
                    timed_out: false,
                    duration_ms: started.elapsed().as_millis() as u64,
                }),
                Err(_) => Ok(ScriptOutput {
                    timed_out: true,
                    duration_ms: started.elapsed().as_millis() as u64,
                    ..ScriptOutput::default()
                }),
            }
        })
    }
}

/// Reads a stream to its end, keeping the first [`MAX_STDOUT`] bytes.
pub async fn capture_stdout(stream: Option<impl AsyncRead + Unpin>) -> (Vec<u8>, bool) {
    let Some(mut s) = stream else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_STDOUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// Reads a stream to its end, keeping its last [`MAX_STDERR_LINES`] lines.
pub async fn capture_stderr(stream: Option<impl AsyncRead + Unpin>) -> Vec<String> {
    let Some(mut s) = stream else {
        return Vec::new();
    };
    let mut tail = Tail::default();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
    tail.finish()
}

/// The last lines of a stream, each capped.
#[derive(Default)]
pub struct Tail {
    lines: VecDeque<String>,
    current: Vec<u8>,
}

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.end_line();
            } else if self.current.len() < MAX_STDERR_LINE {
                self.current.push(b);
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.current).into_owned();
        self.current.clear();
        if self.lines.len() == MAX_STDERR_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.end_line();
        }
        self.lines.into()
    }
}

/// The script's path inside the view, checked to be a plain relative path (the agent already
/// resolved it; this is a second fence against a runner fed by another caller).
pub fn plain_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_extensions_run() {
        assert_eq!(Interpreter::for_path("a/b.py"), Some(Interpreter::Python));
        assert_eq!(Interpreter::for_path("b.sh"), Some(Interpreter::Shell));
        assert_eq!(Interpreter::for_path("b.js"), Some(Interpreter::Node));
        for bad in ["b.rb", "b", "b.PY", "b.exe", "b.mjs", ".py/x"] {
            assert_eq!(Interpreter::for_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn stderr_keeps_the_last_lines() {
        let mut t = Tail::default();
        for i in 0..(MAX_STDERR_LINES + 10) {
            t.push(format!("line {i}\n").as_bytes());
        }
        t.push(&vec![b'x'; 5000]);
        let lines = t.finish();
        assert_eq!(lines.len(), MAX_STDERR_LINES);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines.last().unwrap().len(), MAX_STDERR_LINE);
    }
}
