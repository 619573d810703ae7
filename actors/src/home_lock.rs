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
//! (`pid port`) are only a note for the refusal message, never trusted for the decision.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

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
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut note = String::new();
                // The holder may not have written its note yet; the refusal stands either way.
                let _ = file.take(64).read_to_string(&mut note);
                return Err(HomeLockError::Busy {
                    holder: describe_holder(&note),
                });
            }
            return Err(err.into());
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

    #[test]
    fn a_second_lock_on_the_same_home_is_refused_and_named() {
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
