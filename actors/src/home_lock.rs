//! One kernel per home: an exclusive `flock` on `user_data/kernel.lock`, taken before the kernel
//! touches anything of the installation.
//!
//! Which failure it stops: a second `rumi serve` on the same home used to boot far enough to
//! remove the running kernel's pack containers and re-bind its egress sockets before it failed on
//! the busy port, leaving the first kernel answering `Connection refused` to every egress call
//! while its diagnostics still said `bound: true`. With the lock, the second process stops before
//! its first write and says which process holds the home.
//!
//! The lock is the kernel's open file description: the OS drops it when the process ends in any
//! way (kill -9 included), so a crash never leaves a stale lock behind. The file's contents
//! (`pid port`) are only a note for the refusal message, never trusted for the decision. One
//! exception to "at once": a kernel killed while it was starting a worker leaves that fork holding
//! the description until it reaches `exec` (the descriptor is close-on-exec) or finds its parent
//! gone and exits — milliseconds, more on a loaded machine. So when the note's process no longer
//! exists, the lock is tried again for up to [`DEAD_HOLDER_WAIT`] before the refusal.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a lock whose noted holder is dead is tried again (see the module docs).
pub const DEAD_HOLDER_WAIT: Duration = Duration::from_secs(3);

/// Held for the kernel's lifetime; dropping it (or the process ending) releases the home.
#[derive(Debug)]
pub struct HomeLock {
    file: File,
}

/// Why the home could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum HomeLockError {
    /// Another live process holds the lock.
    #[error("another kernel {holder}; stop it first, or give this one another RUMI_HOME")]
    Busy { holder: String },
    #[error("cannot lock the home (user_data/kernel.lock): {0}")]
    Io(#[from] io::Error),
}

impl HomeLock {
    /// Takes the lock on `user_data/kernel.lock` (creating `user_data/` if needed) without
    /// waiting, and notes this process's pid in it.
    pub fn acquire(user_data: &Path) -> Result<HomeLock, HomeLockError> {
        crate::fsutil::ensure_dir(user_data, 0o700)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(user_data.join("kernel.lock"))?;
        let deadline = Instant::now() + DEAD_HOLDER_WAIT;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err.into());
            }
            let mut note = String::new();
            // The holder may not have written its note yet; the refusal stands either way.
            let _ = (&file).take(64).read_to_string(&mut note);
            (&file).rewind()?;
            if !noted_holder_is_gone(&note) || Instant::now() >= deadline {
                return Err(HomeLockError::Busy {
                    holder: describe_holder(&note),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lock = HomeLock { file };
        lock.note(None)?;
        Ok(lock)
    }

    /// Rewrites the note with this process's pid and, once bound, its API port.
    pub fn note(&mut self, port: Option<u16>) -> io::Result<()> {
        let text = match port {
            Some(p) => format!("{} {p}\n", std::process::id()),
            None => format!("{}\n", std::process::id()),
        };
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(text.as_bytes())
    }
}

/// The note names a process that no longer exists (a note without a pid proves nothing).
fn noted_holder_is_gone(note: &str) -> bool {
    let Some(pid) = note
        .split_whitespace()
        .next()
        .and_then(|w| w.parse::<i32>().ok())
        .filter(|&p| p > 0)
    else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    unsafe {
        libc::kill(pid, 0) != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// `(pid N) serves this home on :PORT` from a note, as far as it can be read.
fn describe_holder(note: &str) -> String {
    let mut words = note.split_whitespace();
    let pid = words.next().and_then(|w| w.parse::<u32>().ok());
    let port = words.next().and_then(|w| w.parse::<u16>().ok());
    let who = pid.map_or_else(|| "(pid unknown)".to_string(), |p| format!("(pid {p})"));
    match port {
        Some(port) => format!("{who} serves this home on :{port}"),
        None => format!("{who} is starting on this home"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fork holds every lock of this process until it execs (that is what
    /// `a_lock_left_by_a_dead_kernels_fork_is_waited_for_a_live_holder_is_not` is about), so the
    /// test that forks does not run beside the one that expects a lock to be free at once.
    static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_second_lock_on_the_same_home_is_refused_and_named() {
        let _serial = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        let home = tempfile::tempdir().unwrap();
        let ud = home.path().join("user_data");
        let mut first = HomeLock::acquire(&ud).unwrap();
        first.note(Some(8765)).unwrap();
        // flock locks belong to open file descriptions: a second open in this process conflicts
        // exactly as another process's would.
        match HomeLock::acquire(&ud) {
            Err(HomeLockError::Busy { holder }) => {
                let want = format!("(pid {}) serves this home on :8765", std::process::id());
                assert_eq!(holder, want);
            }
            other => panic!("expected busy, got {other:?}"),
        }
        drop(first);
        HomeLock::acquire(&ud).expect("released with its holder");
    }

    /// `flock(1)` holding `lock` for `secs` seconds, once it holds it (it takes the lock before it
    /// runs `sleep`).
    fn flock_holding(lock: &std::path::Path, secs: &str) -> std::process::Child {
        let holder = std::process::Command::new("flock")
            .arg(lock)
            .args(["sleep", secs])
            .spawn()
            .unwrap();
        let held = Instant::now() + Duration::from_secs(10);
        while std::process::Command::new("flock")
            .args(["-n"])
            .arg(lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
        {
            assert!(Instant::now() < held, "flock(1) never took the lock");
            std::thread::sleep(Duration::from_millis(5));
        }
        holder
    }

    /// A lock still held by what a dead kernel forked (here `flock(1)` holding it for 300 ms, the
    /// note naming a pid that exists no more) is waited for; one whose noted holder lives is
    /// refused at once.
    #[test]
    fn a_lock_left_by_a_dead_kernels_fork_is_waited_for_a_live_holder_is_not() {
        let _serial = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        let home = tempfile::tempdir().unwrap();
        let ud = home.path().join("user_data");
        drop(HomeLock::acquire(&ud).unwrap());
        let lock = ud.join("kernel.lock");
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        std::fs::write(&lock, format!("{dead_pid} 1\n")).unwrap();
        let mut holder = flock_holding(&lock, "0.3");
        let t = Instant::now();
        let got = HomeLock::acquire(&ud).expect("the dead kernel's fork lets go");
        assert!(t.elapsed() < DEAD_HOLDER_WAIT);
        holder.wait().unwrap();
        drop(got);

        // A live holder (this process's pid in the note): refused without waiting.
        let mut holder = flock_holding(&lock, "5");
        std::fs::write(&lock, format!("{} 1\n", std::process::id())).unwrap();
        let t = Instant::now();
        assert!(matches!(
            HomeLock::acquire(&ud),
            Err(HomeLockError::Busy { .. })
        ));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a live holder is not waited for"
        );
        let _ = holder.kill();
        let _ = holder.wait();
    }

    #[test]
    fn unreadable_notes_still_refuse() {
        assert_eq!(
            describe_holder(""),
            "(pid unknown) is starting on this home"
        );
        assert_eq!(describe_holder("12\n"), "(pid 12) is starting on this home");
        assert_eq!(
            describe_holder("x 80"),
            "(pid unknown) serves this home on :80"
        );
    }
}
