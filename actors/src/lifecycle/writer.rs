//! The one place that creates staged files: under a fresh directory the import made itself, one
//! component at a time, each file `create_new` with `O_NOFOLLOW` (nothing that already exists,
//! and never through a link), each byte counted as it is written against the caps of
//! `rumi_domain::archive` — never a size a header or a stat claimed.

use super::import::ImportError;
use rumi_domain::archive::{MAX_FILES, MAX_UNPACKED_BYTES};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Copy buffer: large enough for throughput, small enough to be no concern.
const BUF: usize = 256 * 1024;

/// Files written so far and their bytes, under `root`.
pub(super) struct Writer {
    root: PathBuf,
    pub files: Vec<String>,
    pub bytes: u64,
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(root: PathBuf) -> Self {
        Writer {
            root,
            files: Vec::new(),
            bytes: 0,
            buf: vec![0; BUF],
        }
    }

    /// Creates the directory `rel` (plain components, checked by `entry_path`) and its parents.
    pub fn dir(&mut self, rel: &[String], shown: &str) -> Result<PathBuf, ImportError> {
        let mut p = self.root.clone();
        for part in rel {
            p.push(part);
            match DirBuilder::new().mode(0o755).create(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Only a directory this import made can be here: the archive cannot make links,
                    // and `symlink_metadata` would not follow one anyway.
                    if !fs::symlink_metadata(&p)
                        .map(|m| m.is_dir())
                        .unwrap_or(false)
                    {
                        return Err(ImportError::Refused(format!(
                            "entry {shown:?}: a file of the same name as a directory; the \
                             archive lists the same path twice"
                        )));
                    }
                }
                Err(e) => return Err(ImportError::storage(e)),
            }
        }
        Ok(p)
    }

    /// Writes the file `rel` from `src`, counting its bytes against the caps. `declared` is the
    /// size the archive claims: a different real size is refused (a header that lies).
    pub fn file(
        &mut self,
        rel: &[String],
        src: &mut dyn Read,
        declared: Option<u64>,
        shown: &str,
    ) -> Result<(), ImportError> {
        if self.files.len() >= MAX_FILES {
            return Err(ImportError::Refused(format!(
                "more than {MAX_FILES} files (at {shown:?}); a pack may hold at most {MAX_FILES}"
            )));
        }
        let (name, parents) = rel
            .split_last()
            .ok_or_else(|| ImportError::Refused(format!("entry {shown:?} has no name")))?;
        let dir = self.dir(parents, shown)?;
        let path = dir.join(name);
        // create_new: an entry listed twice is refused, never overwritten; O_NOFOLLOW: never
        // through a link (none can be there: belt and braces).
        let mut out = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ImportError::Refused(format!(
                    "entry {shown:?} appears twice (or as a file and a directory)"
                )))
            }
            Err(e) => return Err(ImportError::storage(e)),
        };
        let remaining = MAX_UNPACKED_BYTES - self.bytes;
        // Read at most one byte past what may be written: past the cap, or past the size the
        // header declared (a lying header is caught at once, not after decompressing a bomb).
        let limit = declared.map_or(remaining, |d| d.min(remaining));
        let mut limited = src.take(limit + 1);
        let mut written: u64 = 0;
        loop {
            let n = match limited.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ImportError::Refused(format!(
                        "entry {shown:?} could not be read: {e}"
                    )))
                }
            };
            written += n as u64;
            if written > limit {
                if let Some(d) = declared.filter(|d| written > *d) {
                    return Err(ImportError::Refused(format!(
                        "entry {shown:?} holds more than the {d} bytes its header says; the \
                         archive is forged or damaged"
                    )));
                }
                return Err(ImportError::TooLarge(format!(
                    "the files hold more than {} MiB once unpacked (reached at {shown:?}); a \
                     pack may hold at most {} MiB",
                    MAX_UNPACKED_BYTES >> 20,
                    MAX_UNPACKED_BYTES >> 20
                )));
            }
            out.write_all(&self.buf[..n])
                .map_err(ImportError::storage)?;
        }
        if let Some(d) = declared {
            if d != written {
                return Err(ImportError::Refused(format!(
                    "entry {shown:?}: its header says {d} bytes but it holds {written}; the \
                     archive is forged or damaged"
                )));
            }
        }
        self.bytes += written;
        self.files.push(rel.join("/"));
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
