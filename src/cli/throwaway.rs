//! The throw-away kernel of `rumi pack test`: a copy of one pack in a temporary home and this
//! binary serving it (`serve`, permissive unless `--strict`) on a free port with its own token.
//!
//! What the operator's side keeps from it:
//! * the kernel starts with an empty environment (PATH, HOME = the temporary home, and what the
//!   mode needs: `RUMI_PYTHON`, `DOCKER_HOST`), in the temporary home, with no inherited file
//!   descriptor but stdio, in a process group of its own, and dies with the command
//!   (`PR_SET_PDEATHSIG`, set by the thread that lives as long as the command);
//! * the command makes itself non-dumpable, so a same-user process cannot read its environment
//!   or working directory from `/proc` (root still can: permissive mode is no isolation);
//! * SIGINT, SIGTERM and SIGHUP are handled: the kernel is stopped, the home removed, exit 130;
//! * temporary homes of earlier commands that were killed are removed at the next start.

use crate::client::Client;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most entries (files and directories), bytes and directory depth copied: a pack import's limits.
const MAX_ENTRIES: usize = 2000;
const MAX_BYTES: u64 = 500 << 20;
const MAX_DEPTH: usize = 32;
/// How long the kernel may take to start, and to stop (after an interrupt: much less).
const START_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(15);
const STOP_DEADLINE_INTERRUPTED: Duration = Duration::from_secs(2);
/// The temporary homes' name: the prefix, the command's pid, a random part.
const PREFIX: &str = "rumi-pack-test-";

/// The command was interrupted by a signal (exit status 130).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted; the test kernel was stopped and its home removed")
    }
}

impl std::error::Error for Interrupted {}

/// Set when SIGINT, SIGTERM or SIGHUP arrives; the signals stop killing the command once this is
/// made, so every stage checks it.
#[derive(Clone)]
pub struct Interrupt(Arc<AtomicBool>, tokio::sync::watch::Receiver<bool>);

impl Interrupt {
    /// Starts a thread that turns the three signals into the flag.
    pub fn install() -> Result<Interrupt> {
        let flag = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let set = flag.clone();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let kinds = [
                    SignalKind::interrupt(),
                    SignalKind::terminate(),
                    SignalKind::hangup(),
                ];
                let mut streams = Vec::new();
                for k in kinds {
                    match signal(k) {
                        Ok(s) => streams.push(s),
                        Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let [a, b, c] = &mut streams[..] else { return };
                tokio::select! {
                    _ = a.recv() => {}
                    _ = b.recv() => {}
                    _ = c.recv() => {}
                }
                set.store(true, Ordering::SeqCst);
                let _ = tx.send(true);
            });
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Interrupt(flag, rx)),
            Ok(Err(e)) => bail!("cannot handle signals: {e}"),
            Err(_) => bail!("cannot handle signals"),
        }
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<()> {
        if self.is_set() {
            return Err(Interrupted.into());
        }
        Ok(())
    }

    /// Resolves when the flag is set.
    pub async fn wait(&self) {
        let mut rx = self.1.clone();
        let _ = rx.wait_for(|set| *set).await;
    }
}

/// The temporary home and its kernel; dropping it stops the kernel and removes the home.
pub struct Sandbox {
    /// The kernel, once started.
    child: Option<Child>,
    pub client: Option<Client>,
    interrupt: Interrupt,
    /// Declared last: removed after the kernel stopped.
    pub home: tempfile::TempDir,
}

impl Sandbox {
    /// Copies the pack `src` as `id` into a new temporary home and starts a kernel there.
    pub fn start(src: &Path, id: &str, strict: bool, interrupt: &Interrupt) -> Result<Sandbox> {
        // SAFETY: prctl on the calling process with constant arguments.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        remove_stale_homes();
        let home = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()
            .context("cannot create a throw-away home")?;
        let mut sandbox = Sandbox {
            child: None,
            client: None,
            interrupt: interrupt.clone(),
            home,
        };
        let meta = std::fs::symlink_metadata(src)
            .with_context(|| format!("cannot read {}", src.display()))?;
        if !meta.is_dir() {
            bail!(
                "{} is not a directory (a symlinked pack is not copied)",
                src.display()
            );
        }
        let mut copy = Copy {
            entries: 0,
            bytes: 0,
            interrupt,
        };
        copy.dir(src, &sandbox.home.path().join("ecosystem").join(id), 0)?;
        std::fs::create_dir_all(sandbox.home.path().join("user_data"))?;
        sandbox.spawn(strict)?;
        Ok(sandbox)
    }

    fn spawn(&mut self, strict: bool) -> Result<()> {
        let home = self.home.path().to_path_buf();
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw).context("no randomness for a token")?;
        let token = hex::encode(raw);
        let log = home.join("kernel.log");
        let mut cmd = Command::new(std::env::current_exe().context("cannot find this program")?);
        cmd.env_clear();
        for keep in ["PATH", "RUMI_PYTHON", "DOCKER_HOST", "LANG"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        cmd.arg("serve");
        if !strict {
            cmd.arg("--permissive");
        }
        cmd.current_dir(&home)
            .env("HOME", &home)
            .env("RUMI_HOME", &home)
            .env("RUMI_API_HOST", "127.0.0.1")
            .env("RUMI_API_PORT", "0")
            .env("RUMI_API_TOKEN", &token)
            .env("RUMI_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            // Its own group: the terminal's Ctrl-C reaches this command, which stops the kernel.
            .process_group(0);
        // SAFETY: getpid/getppid/prctl/syscall/_exit are async-signal-safe; nothing allocates.
        let parent = unsafe { libc::getpid() };
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // No descriptor of the operator's shell reaches the kernel (and its blocks).
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("cannot start a throw-away kernel")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("rumi listening on ") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let started = Instant::now();
        let base = loop {
            self.interrupt.check()?;
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(base) => break base,
                Err(_) if started.elapsed() > START_DEADLINE => bail!(
                    "the throw-away kernel did not start within {START_DEADLINE:?}: {}",
                    tail(&log)
                ),
                Err(_) => {
                    let exited = self
                        .child
                        .as_mut()
                        .map(|c| matches!(c.try_wait(), Ok(Some(_))));
                    if exited == Some(true) {
                        bail!("the throw-away kernel did not start: {}", tail(&log));
                    }
                }
            }
        };
        self.client = Some(Client::to(base, token, home)?);
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let deadline = if self.interrupt.is_set() {
                STOP_DEADLINE_INTERRUPTED
            } else {
                STOP_DEADLINE
            };
            stop(child, deadline);
        }
    }
}

/// SIGTERM, then SIGKILL past the deadline; waits for the kernel, then kills what is left of its
/// process group (a block's stray child).
fn stop(child: &mut Child, deadline: Duration) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: signals to our own child and its process group (its pid, not reaped yet).
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let until = Instant::now() + deadline;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// The last lines the kernel logged, for a start that failed.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Removes the temporary homes of earlier `pack test` commands that no longer run (killed before
/// they could clean up), when they are this user's.
fn remove_stale_homes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let mine = e
            .path()
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == me);
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if mine && gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The copy of a pack: directories and regular files only, within the limits.
struct Copy<'a> {
    entries: usize,
    bytes: u64,
    interrupt: &'a Interrupt,
}

impl Copy<'_> {
    fn dir(&mut self, from: &Path, to: &Path, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!(
                "{} is more than {MAX_DEPTH} directories deep",
                from.display()
            );
        }
        std::fs::create_dir_all(to)?;
        let entries =
            std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?;
        for entry in entries {
            self.interrupt.check()?;
            let entry = entry?;
            let kind = entry.file_type()?;
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                bail!("the pack has more than {MAX_ENTRIES} files and directories");
            }
            let dest = to.join(entry.file_name());
            if kind.is_dir() {
                self.dir(&entry.path(), &dest, depth + 1)?;
            } else if kind.is_file() {
                self.bytes += entry.metadata()?.len();
                if self.bytes > MAX_BYTES {
                    bail!("the pack is larger than {} MiB", MAX_BYTES >> 20);
                }
                std::fs::copy(entry.path(), &dest)
                    .with_context(|| format!("cannot copy {}", entry.path().display()))?;
            } else {
                bail!(
                    "{} is not a regular file or directory (symlinks, FIFOs and devices are not copied into the test kernel)",
                    entry.path().display()
                );
            }
        }
        Ok(())
    }
}
