//! The rules of pack import (contract §2.4), pure: which names an archive entry may have, the
//! caps of an import, the shape of a staging id and of a backup directory's name. The runtime
//! (`rumi_actors::lifecycle`) reads archives and folders; every name it creates passes
//! [`entry_path`] first.

/// Most files one import may hold (contract §2.4).
pub const MAX_FILES: usize = 2000;
/// Most entries (files and directories) an archive's central directory may list: checked before
/// the archive is opened, so a directory of millions of entries is never parsed.
pub const MAX_ENTRIES: u64 = 4000;
/// Most bytes the imported files may hold together, counted as they are written (contract §2.4).
pub const MAX_UNPACKED_BYTES: u64 = 500 << 20;
/// The largest archive accepted, as uploaded or named by path.
pub const MAX_ARCHIVE_BYTES: u64 = 500 << 20;
/// The longest entry name, in bytes, and the longest component.
pub const MAX_NAME_BYTES: usize = 1024;
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest nesting of directories inside the pack.
pub const MAX_DEPTH: usize = 32;
/// Length of a staging id: 16 lowercase hex digits.
pub const STAGING_ID_LEN: usize = 16;

/// Whether `id` is a staging id: exactly 16 lowercase hex digits (so it never names anything but
/// one directory of `user_data/pack_staging/`).
pub fn valid_staging_id(id: &str) -> bool {
    id.len() == STAGING_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Characters that change how a name looks without being seen: bidirectional overrides,
/// embeddings and isolates, zero-width spaces and joiners, the soft hyphen, the byte-order mark
/// and other invisible format characters (Unicode `Cf` as far as names go).
pub fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Checks one archive entry name (the raw bytes of the zip's central directory) and answers its
/// components, the first being the top-level directory. A name ending in `/` is a directory.
///
/// Refused, each for the attack it stops: NUL (C APIs would cut the name: a different file than
/// the one checked), a backslash (a Windows separator: `..\x` is `..` elsewhere), an absolute
/// path or a `..` segment (zip-slip: writing outside the staging directory), `.` and empty
/// segments (two spellings of one file), control characters (names that lie on a terminal), names
/// that are not UTF-8, and over-long names or nesting.
pub fn entry_path(raw: &[u8]) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Err("an entry has an empty name".into());
    }
    if raw.len() > MAX_NAME_BYTES {
        return Err(format!(
            "an entry name is longer than {MAX_NAME_BYTES} bytes"
        ));
    }
    let shown = String::from_utf8_lossy(raw).replace('\0', "\\0");
    if raw.contains(&0) {
        return Err(format!("entry {shown:?}: a NUL byte in the name"));
    }
    if raw.contains(&b'\\') {
        return Err(format!(
            "entry {shown:?}: a backslash in the name (use / as the separator)"
        ));
    }
    let name = std::str::from_utf8(raw).map_err(|_| format!("entry {shown:?}: not UTF-8"))?;
    if name.chars().any(char::is_control) {
        return Err(format!("entry {shown:?}: a control character in the name"));
    }
    if let Some(c) = name.chars().find(|c| invisible(*c)) {
        return Err(format!(
            "entry {:?}: an invisible or direction-changing character (U+{:04X}) in the name: \
             a file list would show another name than the file's",
            shown.escape_default().to_string(),
            c as u32
        ));
    }
    if name.starts_with('/') {
        return Err(format!("entry {shown:?}: an absolute path"));
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let mut parts = Vec::new();
    for part in trimmed.split('/') {
        match part {
            ".." => return Err(format!("entry {shown:?}: a '..' segment")),
            "." | "" => return Err(format!("entry {shown:?}: an empty or '.' segment")),
            p if p.len() > MAX_COMPONENT_BYTES => {
                return Err(format!(
                    "entry {shown:?}: a component longer than {MAX_COMPONENT_BYTES} bytes"
                ))
            }
            p => parts.push(p.to_string()),
        }
    }
    if parts.len() > MAX_DEPTH + 1 {
        return Err(format!(
            "entry {shown:?}: nested deeper than {MAX_DEPTH} directories"
        ));
    }
    Ok(parts)
}

/// What a unix mode (the high 16 bits of a zip entry's external attributes) says the entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A symlink, device, fifo or socket: never extracted.
    Other,
}

/// The kind of an entry from its unix mode (`None` when the archive has none: a plain file or
/// directory as its name says).
pub fn entry_kind(unix_mode: Option<u32>, name_is_dir: bool) -> EntryKind {
    let by_name = if name_is_dir {
        EntryKind::Dir
    } else {
        EntryKind::File
    };
    match unix_mode.map(|m| m & 0o170000) {
        None | Some(0) => by_name,
        Some(0o100000) if !name_is_dir => EntryKind::File,
        Some(0o040000) => EntryKind::Dir,
        _ => EntryKind::Other,
    }
}

/// The name of a backup directory made at `unix_nanos` (UTC): sortable, with nanoseconds, e.g.
/// `20261130T082320.123456789Z`. Two applies within one nanosecond get `…Z-1`, `…Z-2` from
/// [`backup_name_retry`].
pub fn backup_name(unix_nanos: i128) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000) as i64;
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The `n`th alternative (n ≥ 1) to [`backup_name`] when that directory already exists.
pub fn backup_name_retry(base: &str, n: u32) -> String {
    format!("{base}-{n}")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_are_refused_with_the_rule() {
        for (name, why) in [
            (&b"../etc/x"[..], "'..'"),
            (b"p/../../x", "'..'"),
            (b"/etc/x", "absolute"),
            (b"p\\..\\x", "backslash"),
            (b"p/a\0b", "NUL"),
            (b"p//x", "empty"),
            (b"p/./x", "'.'"),
            (b"p/\x1b[2Jx", "control"),
            (b"p/\xff", "UTF-8"),
            (b"", "empty name"),
        ] {
            let e = entry_path(name).unwrap_err();
            assert!(e.contains(why), "{name:?}: {e}");
        }
        assert_eq!(entry_path(b"p/a/b.py").unwrap(), ["p", "a", "b.py"]);
        assert_eq!(entry_path(b"p/").unwrap(), ["p"]);
        assert!(entry_path(&[b'a'; 2000]).is_err());
    }

    #[test]
    fn kinds_from_modes() {
        assert_eq!(entry_kind(Some(0o120777), false), EntryKind::Other);
        assert_eq!(entry_kind(Some(0o010644), false), EntryKind::Other);
        assert_eq!(entry_kind(Some(0o100644), false), EntryKind::File);
        assert_eq!(entry_kind(Some(0o100644), true), EntryKind::Other);
        assert_eq!(entry_kind(Some(0o040755), true), EntryKind::Dir);
        assert_eq!(entry_kind(None, true), EntryKind::Dir);
        assert_eq!(entry_kind(Some(0o644), false), EntryKind::File);
    }

    #[test]
    fn backup_names_are_utc_with_nanos() {
        assert_eq!(backup_name(0), "19700101T000000.000000000Z");
        assert_eq!(
            backup_name(1_796_026_400_123_456_789),
            "20261130T081320.123456789Z"
        );
        assert_eq!(
            backup_name(951_782_400_000_000_000),
            "20000229T000000.000000000Z"
        );
    }

    proptest! {
        /// Whatever the name, an accepted one has only plain components: joined under a root it
        /// can never leave it.
        #[test]
        fn accepted_names_stay_inside(raw in proptest::collection::vec(any::<u8>(), 0..64),
                                      s in "[a-z./\\\\]{0,24}") {
            for name in [raw, s.into_bytes()] {
                if let Ok(parts) = entry_path(&name) {
                    prop_assert!(!parts.is_empty());
                    for p in &parts {
                        prop_assert!(!p.is_empty() && p != "." && p != "..");
                        prop_assert!(!p.contains('/') && !p.contains('\\') && !p.contains('\0'));
                    }
                }
            }
        }

        #[test]
        fn staging_ids_are_exactly_16_lowercase_hex(s in "[0-9a-fA-F./]{0,20}") {
            let ok = s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            prop_assert_eq!(valid_staging_id(&s), ok);
        }

        /// Backup names sort as their instants do.
        #[test]
        fn backup_names_sort_by_time(a in 0i128..4_102_444_800_000_000_000, b in 0i128..4_102_444_800_000_000_000) {
            prop_assert_eq!(a.cmp(&b), backup_name(a).cmp(&backup_name(b)));
        }
    }
}
