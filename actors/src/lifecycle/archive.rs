//! Zip extraction for import. Every rule is checked on the whole central directory before a byte
//! is written (names, kinds, one top-level directory, the file count, the declared sizes), then
//! each entry is written through [`Writer`], which counts the real bytes: a header that lies
//! about a size is caught by the count, never trusted.

use super::import::ImportError;
use super::writer::Writer;
use rumi_domain::archive::{
    entry_kind, entry_path, EntryKind, MAX_ARCHIVE_BYTES, MAX_ENTRIES, MAX_FILES,
    MAX_UNPACKED_BYTES,
};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use zip::CompressionMethod;

/// One entry of the plan: its index, components (the top directory first) and kind.
struct Entry {
    index: usize,
    parts: Vec<String>,
    dir: bool,
    declared: u64,
}

/// Extracts `file` into `w` (the pack directory: the top-level directory's content); answers the
/// top-level directory's name.
pub(super) fn extract(file: &Path, w: &mut Writer) -> Result<String, ImportError> {
    // Non-blocking and without following a link: a FIFO (or a link) swapped in after the
    // caller's checks is refused here, on what was opened, instead of hanging the import.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(file)
            .map_err(|_| {
                ImportError::Refused("the archive cannot be opened as a regular file".into())
            })?
    };
    let meta = f.metadata().map_err(ImportError::storage)?;
    if !meta.is_file() {
        return Err(ImportError::Refused(
            "the archive is not a regular file".into(),
        ));
    }
    let len = meta.len();
    if len > MAX_ARCHIVE_BYTES {
        return Err(ImportError::TooLarge(format!(
            "the archive is larger than {} MiB",
            MAX_ARCHIVE_BYTES >> 20
        )));
    }
    // The zip reader parses the whole central directory up front: refuse one that claims more
    // entries than a pack may hold before it allocates for them.
    let listed = check_entry_count(&mut f, len)?;
    no_hidden_directory(&mut f)?;
    f.seek(SeekFrom::Start(0)).map_err(ImportError::storage)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .map_err(|e| ImportError::Refused(format!("not a readable zip archive: {e}")))?;
    if zip.len() as u64 > MAX_ENTRIES {
        return Err(ImportError::Refused(format!(
            "the archive lists more than {MAX_ENTRIES} entries"
        )));
    }
    // The reader keeps one entry per name: an archive listing a name twice would show one
    // content to this kernel and maybe the other to the person who unzipped it to review.
    if zip.len() as u64 != listed {
        return Err(ImportError::Refused(format!(
            "the archive lists {listed} entries but {} distinct names: an entry appears twice",
            zip.len()
        )));
    }
    let (top, plan) = plan(&mut zip)?;
    for e in &plan {
        let shown = e.parts.join("/");
        if e.dir {
            w.dir(&e.parts[1..], &shown)?;
            continue;
        }
        let mut entry = zip
            .by_index(e.index)
            .map_err(|err| ImportError::Refused(format!("entry {shown:?}: {err}")))?;
        w.file(&e.parts[1..], &mut entry, Some(e.declared), &shown)?;
    }
    Ok(top)
}

/// Checks every entry without reading its data; answers the top directory and the plan.
fn plan<R: Read + Seek>(zip: &mut zip::ZipArchive<R>) -> Result<(String, Vec<Entry>), ImportError> {
    let mut top: Option<String> = None;
    let mut plan = Vec::new();
    let (mut files, mut declared_total) = (0usize, 0u64);
    for index in 0..zip.len() {
        let e = zip
            .by_index_raw(index)
            .map_err(|err| ImportError::Refused(format!("entry #{index}: {err}")))?;
        // Only the raw name is used, for checks and for creation alike: the zip reader may prefer
        // a unicode extra field, which would let what is checked differ from what is written.
        let raw = e.name_raw();
        let parts = entry_path(raw).map_err(ImportError::Refused)?;
        let shown = parts.join("/");
        let name_is_dir = raw.ends_with(b"/");
        let dir = match entry_kind(e.unix_mode(), name_is_dir) {
            EntryKind::Dir => true,
            EntryKind::File => false,
            EntryKind::Other => {
                return Err(ImportError::Refused(format!(
                    "entry {shown:?} is a symlink or special file; an archive may hold only \
                     files and directories"
                )))
            }
        };
        if e.encrypted() {
            return Err(ImportError::Refused(format!(
                "entry {shown:?} is encrypted; archives must not be"
            )));
        }
        if !dir
            && !matches!(
                e.compression(),
                CompressionMethod::Stored | CompressionMethod::Deflated
            )
        {
            return Err(ImportError::Refused(format!(
                "entry {shown:?} uses compression {:?}; only stored and deflate are read",
                e.compression()
            )));
        }
        match &top {
            None => top = Some(parts[0].clone()),
            Some(t) if *t != parts[0] => {
                return Err(ImportError::Refused(format!(
                    "more than one top-level entry ({t:?} and {:?}); the archive must hold \
                     exactly one directory, named after the pack",
                    parts[0]
                )))
            }
            Some(_) => {}
        }
        if parts.len() == 1 {
            if !dir {
                return Err(ImportError::Refused(format!(
                    "entry {shown:?} is a file at the top level; the archive must hold exactly \
                     one directory, named after the pack"
                )));
            }
            continue;
        }
        if !dir {
            files += 1;
            if files > MAX_FILES {
                return Err(ImportError::Refused(format!(
                    "more than {MAX_FILES} files (at {shown:?}); a pack may hold at most \
                     {MAX_FILES}"
                )));
            }
            declared_total = declared_total.saturating_add(e.size());
            if declared_total > MAX_UNPACKED_BYTES {
                return Err(ImportError::TooLarge(format!(
                    "the files hold more than {} MiB once unpacked (reached at {shown:?}); a \
                     pack may hold at most {} MiB",
                    MAX_UNPACKED_BYTES >> 20,
                    MAX_UNPACKED_BYTES >> 20
                )));
            }
        }
        plan.push(Entry {
            index,
            declared: e.size(),
            parts,
            dir,
        });
    }
    let top = top.ok_or_else(|| ImportError::Refused("the archive is empty".into()))?;
    Ok((top, plan))
}

/// Reads the entry counts of every end-of-central-directory record in the archive's tail (a
/// reader may pick any of them) and refuses one over [`MAX_ENTRIES`]; answers the count of the
/// last record (the one readers use).
fn check_entry_count(f: &mut File, len: u64) -> Result<u64, ImportError> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
    const EOCD64: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
    let tail_len = len.min(22 + 65_535 + 20);
    let start = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(start))
        .map_err(ImportError::storage)?;
    f.read_exact(&mut tail).map_err(ImportError::storage)?;
    let too_many = || {
        ImportError::Refused(format!(
            "the archive lists more than {MAX_ENTRIES} entries; a pack may hold at most \
             {MAX_FILES} files"
        ))
    };
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let mut last: Option<u64> = None;
    for i in (0..tail.len().saturating_sub(21)).rev() {
        if tail[i..i + 4] != EOCD {
            continue;
        }
        let count = u16_at(&tail, i + 10).max(u16_at(&tail, i + 8));
        if count != 0xFFFF {
            if u64::from(count) > MAX_ENTRIES {
                return Err(too_many());
            }
            last.get_or_insert(u64::from(count));
            continue;
        }
        // ZIP64: the locator sits right before the record and gives the zip64 record's offset.
        if i < 20 || tail[i - 20..i - 16] != LOCATOR {
            return Err(too_many());
        }
        let off = u64::from_le_bytes(tail[i - 12..i - 4].try_into().unwrap_or([0xFF; 8]));
        let mut rec = [0u8; 40];
        if off.saturating_add(40) > len {
            return Err(too_many());
        }
        f.seek(SeekFrom::Start(off)).map_err(ImportError::storage)?;
        read_full(f, &mut rec)?;
        let count = u64::from_le_bytes(rec[32..40].try_into().unwrap_or([0xFF; 8]));
        if rec[0..4] != EOCD64 || count > MAX_ENTRIES {
            return Err(too_many());
        }
        last.get_or_insert(count);
    }
    last.ok_or_else(|| {
        ImportError::Refused("not a zip archive (no end of central directory record)".into())
    })
}

/// The zip reader looks for the end record backwards through the **whole** file and falls back
/// to an earlier one when the last fails its checks: an archive could hide a record listing
/// millions of entries far before a harmless last one, and the reader would allocate for all of
/// them. So every end record (and zip64 end record) anywhere in the file must list at most
/// [`MAX_ENTRIES`]. One sequential pass; an archive that stores another archive with more
/// entries than a pack may hold is refused too (the message says so).
fn no_hidden_directory(f: &mut File) -> Result<(), ImportError> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const EOCD64: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
    const KEEP: usize = 40; // the longest field read past a signature
    f.seek(SeekFrom::Start(0)).map_err(ImportError::storage)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut have = 0usize;
    let mut at_end = false;
    loop {
        while !at_end && have < buf.len() {
            let n = f.read(&mut buf[have..]).map_err(ImportError::storage)?;
            if n == 0 {
                at_end = true;
            }
            have += n;
        }
        let window = &buf[..have];
        let scan_to = if at_end {
            have.saturating_sub(3)
        } else {
            have.saturating_sub(KEEP)
        };
        for i in 0..scan_to {
            let count = if window[i..i + 4] == EOCD && i + 12 <= have {
                u64::from(u16::from_le_bytes([window[i + 8], window[i + 9]])).max(u64::from(
                    u16::from_le_bytes([window[i + 10], window[i + 11]]),
                ))
            } else if window[i..i + 4] == EOCD64 && i + 40 <= have {
                u64::from_le_bytes(window[i + 32..i + 40].try_into().unwrap_or([0; 8]))
            } else {
                continue;
            };
            if count > MAX_ENTRIES && count != 0xFFFF {
                return Err(ImportError::Refused(format!(
                    "the archive holds an end-of-directory record listing {count} entries (at most \
                     {MAX_ENTRIES}; a pack may hold at most {MAX_FILES} files, and an archive \
                     stored inside the pack counts too)"
                )));
            }
        }
        if at_end {
            return Ok(());
        }
        buf.copy_within(scan_to..have, 0);
        have -= scan_to;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<(), ImportError> {
    f.read_exact(buf)
        .map_err(|e: io::Error| ImportError::storage(e))
}
