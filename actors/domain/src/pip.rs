//! pip dependencies of packs (contract §9 "pip", §16 "pip"): what a `requirements.lock` may say,
//! the candidate key and the record a person decides. The review state machine is the one of
//! capability handlers ([`crate::capability::review`]); the runtime crate reads the files, keeps
//! the records, downloads and installs.
//!
//! A lock holds only exact pins, one per line: `NAME==VERSION` or `NAME[extra1,extra2]==VERSION`;
//! full-line comments (`# …`) and blank lines are ignored. Everything else is refused with the
//! line number and the rule, and a lock with one refused line is not a candidate at all:
//!
//! * `-e`/`--editable`, option lines (`-r`, `-c`, `--index-url`, `--hash`, …): the operator, not
//!   the pack, chooses where packages come from, and a nested file would escape the review;
//! * VCS (`git+…`), URLs (`…://…`), `file:` references, `@` (direct references), relative
//!   (`../`, `./`) and absolute paths: anything not fetched by name from the operator's index;
//! * inline comments (`pkg==1.0  # why`), line continuations (`\`), environment markers
//!   (`; python_version < "3.9"`: the lock serves one interpreter, the sandbox's, so a marker
//!   could only hide a pin from the review), ranges and other operators (`>=`, `~=`, `!=`,
//!   `===`, wildcards `==1.*`): what is approved is exactly what is installed.
//!
//! Names follow PEP 508 (`[A-Za-z0-9]`, inner `.`, `_`, `-`, at most [`MAX_NAME`] characters);
//! versions PEP 440's characters (`[A-Za-z0-9.+!_-]`, at most [`MAX_VERSION`]). Bounded: a lock
//! of more than [`MAX_LOCK_BYTES`] or [`MAX_LOCK_LINES`] lines is refused whole.

use crate::capability::candidate::{CandidateStatus, Refused};
use crate::capability::review::Review;
use serde::{Deserialize, Serialize};

/// The lock file's name (at the pack directory or its `backend/`).
pub const LOCK_FILE: &str = "requirements.lock";
/// Largest lock read.
pub const MAX_LOCK_BYTES: usize = 64 * 1024;
/// Most lines in a lock.
pub const MAX_LOCK_LINES: usize = 2000;
/// Longest distribution name, version, extra.
pub const MAX_NAME: usize = 100;
pub const MAX_VERSION: usize = 64;
/// Most extras on one line.
pub const MAX_EXTRAS: usize = 16;
/// Most refused lines reported for one lock (the rest are counted in the last reason).
pub const MAX_REPORTED: usize = 20;
/// The unblock endpoint named by a refused approval.
pub const UNBLOCK_HINT: &str = "POST /api/pip/blocked/{candidate_key}/unblock (rumi pip unblock)";

/// One pinned distribution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub extras: Vec<String>,
}

impl Pin {
    /// The line the kernel writes for pip (rebuilt from the parsed parts, never the pack's text).
    pub fn requirement(&self) -> String {
        if self.extras.is_empty() {
            format!("{}=={}", self.name, self.version)
        } else {
            format!("{}[{}]=={}", self.name, self.extras.join(","), self.version)
        }
    }
}

/// A refused line: its 1-based number (0: the file as a whole) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

/// PEP 503 normalisation: lower case, runs of `-`, `_`, `.` become one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A PEP 508 name (also the rule of an extra).
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A version made of PEP 440's characters, starting with a letter or digit.
pub fn valid_version(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_VERSION
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'!' | b'_' | b'-'))
}

/// A value as a refusal quotes it: at most 60 characters, debug-escaped.
pub(crate) fn shown(s: &str) -> String {
    let t: String = s.chars().take(60).collect();
    if t.len() < s.len() {
        format!("{t:?}…")
    } else {
        format!("{t:?}")
    }
}

/// Why one non-comment line is refused, or its pin.
fn parse_line(line: &str) -> Result<Pin, String> {
    let lower = line.to_ascii_lowercase();
    if lower.starts_with("-e") || lower.starts_with("--editable") {
        return Err("editable requirements (-e) are not allowed; pin NAME==VERSION".into());
    }
    if line.starts_with('-') {
        return Err(format!(
            "option lines ({}) are not allowed: the operator chooses the index at approval; pin NAME==VERSION",
            shown(line.split_whitespace().next().unwrap_or(line))
        ));
    }
    for vcs in ["git+", "hg+", "svn+", "bzr+"] {
        if lower.contains(vcs) {
            return Err(format!(
                "VCS references ({vcs}…) are not allowed; pin a released NAME==VERSION"
            ));
        }
    }
    if line.contains('@') {
        return Err("direct references (NAME @ …) are not allowed; pin NAME==VERSION".into());
    }
    if lower.contains("file:") {
        return Err("file: references are not allowed; pin NAME==VERSION".into());
    }
    if line.contains("://") {
        return Err("URLs are not allowed; pin NAME==VERSION from the index".into());
    }
    if line.contains("../") || line.contains("..\\") || line.starts_with("./") || line == ".." {
        return Err("relative paths (../, ./) are not allowed; pin NAME==VERSION".into());
    }
    if line.starts_with('/')
        || line.starts_with('\\')
        || line.starts_with('~')
        || (line.len() > 1 && line.as_bytes()[1] == b':')
    {
        return Err("absolute paths are not allowed; pin NAME==VERSION".into());
    }
    if line.contains('#') {
        return Err("inline comments are not allowed; put the comment on a line of its own".into());
    }
    if line.contains(';') {
        return Err("environment markers (; …) are not allowed: the lock serves the sandbox's one Python; pin NAME==VERSION".into());
    }
    if line.ends_with('\\') {
        return Err("line continuations (\\) are not allowed; one NAME==VERSION per line".into());
    }
    if line.contains('/') || line.contains('\\') {
        return Err("paths are not allowed; pin NAME==VERSION".into());
    }
    if line.contains("===") {
        return Err("arbitrary equality (===) is not allowed; pin NAME==VERSION".into());
    }
    let Some((left, right)) = line.split_once("==") else {
        for op in [">=", "<=", "~=", "!=", ">", "<"] {
            if line.contains(op) {
                return Err(format!(
                    "only exact pins are allowed (found {op:?}); pin NAME==VERSION"
                ));
            }
        }
        return Err(format!(
            "{} is not NAME==VERSION (a lock pins every package exactly)",
            shown(line)
        ));
    };
    let (left, version) = (left.trim(), right.trim());
    if version.contains('*') {
        return Err("wildcard versions (==1.*) are not allowed; pin one version".into());
    }
    if version.contains(['=', '<', '>', '~', '!', ',']) && !valid_version(version) {
        return Err("one exact version per line; ranges and lists are not allowed".into());
    }
    if !valid_version(version) {
        return Err(format!(
            "version {} is not a PEP 440 version (letters, digits, . + ! _ -; at most {MAX_VERSION})",
            shown(version)
        ));
    }
    let (name, extras) = match left.split_once('[') {
        None => (left, Vec::new()),
        Some((name, rest)) => {
            let Some(inner) = rest.strip_suffix(']') else {
                return Err("extras are written NAME[extra1,extra2]==VERSION".into());
            };
            let extras: Vec<String> = inner.split(',').map(|e| e.trim().to_string()).collect();
            if extras.len() > MAX_EXTRAS {
                return Err(format!("more than {MAX_EXTRAS} extras on one line"));
            }
            if let Some(bad) = extras.iter().find(|e| !valid_name(e)) {
                return Err(format!(
                    "extra {} is not a valid name (letters, digits, inner . _ -)",
                    shown(bad)
                ));
            }
            (name.trim(), extras)
        }
    };
    if !valid_name(name) {
        return Err(format!(
            "{} is not a valid distribution name (PEP 508: letters, digits, inner . _ -; at most {MAX_NAME})",
            shown(name)
        ));
    }
    Ok(Pin {
        name: name.to_string(),
        version: version.to_string(),
        extras,
    })
}

/// Parses a lock: its pins, or every refused line (at most [`MAX_REPORTED`]).
pub fn parse_lock(bytes: &[u8]) -> Result<Vec<Pin>, Vec<LineError>> {
    let whole = |reason: String| Err(vec![LineError { line: 0, reason }]);
    if bytes.len() > MAX_LOCK_BYTES {
        return whole(format!("{LOCK_FILE} is larger than {MAX_LOCK_BYTES} bytes"));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return whole(format!("{LOCK_FILE} is not UTF-8 text"));
    };
    if text.lines().count() > MAX_LOCK_LINES {
        return whole(format!("{LOCK_FILE} has more than {MAX_LOCK_LINES} lines"));
    }
    let mut pins: Vec<Pin> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut errors = Vec::new();
    let mut refused = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let outcome = if !line.is_ascii() || line.chars().any(|c| c.is_ascii_control() && c != '\t')
        {
            Err("only printable ASCII is allowed in a lock line".to_string())
        } else {
            parse_line(line).and_then(|pin| match seen.insert(normalize(&pin.name), n) {
                Some(first) => Err(format!(
                    "{} is pinned twice (first on line {first}); pin it once",
                    shown(&pin.name)
                )),
                None => Ok(pin),
            })
        };
        match outcome {
            Ok(pin) => pins.push(pin),
            Err(reason) => {
                refused += 1;
                if errors.len() < MAX_REPORTED {
                    errors.push(LineError { line: n, reason });
                }
            }
        }
    }
    if refused > errors.len() {
        errors.push(LineError {
            line: 0,
            reason: format!("{} more refused lines", refused - errors.len()),
        });
    }
    if errors.is_empty() {
        Ok(pins)
    } else {
        Err(errors)
    }
}

/// Whether `relpath` is one of the places a lock is read from.
pub fn valid_relpath(relpath: &str) -> bool {
    relpath == LOCK_FILE || relpath == "backend/requirements.lock"
}

/// `pack_id:relpath:<sha256 of the lock>`.
pub fn candidate_key(pack_id: &str, relpath: &str, sha256: &str) -> String {
    format!("{pack_id}:{relpath}:{sha256}")
}

/// Whether `key` has the shape of a pip candidate key (checked before any lookup).
pub fn valid_candidate_key(key: &str) -> bool {
    let parts: Vec<&str> = key.splitn(4, ':').collect();
    parts.len() == 3
        && crate::pack::valid_pack_id(parts[0])
        && valid_relpath(parts[1])
        && parts[2].len() == 64
        && parts[2]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One installed distribution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    pub name: String,
    pub version: String,
}

/// One pip candidate's record (kept under `user_data/pip/requests/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipRecord {
    pub candidate_key: String,
    pub pack_id: String,
    pub relpath: String,
    pub sha256: String,
    /// The pins, as parsed at the scan.
    pub packages: Vec<Pin>,
    pub status: CandidateStatus,
    pub reject_count: u32,
    pub cooldown_until: Option<i64>,
    #[serde(default)]
    pub last_reason: String,
    pub updated_at: i64,
    /// What the last successful install put in site-packages.
    #[serde(default)]
    pub installed: Vec<Distribution>,
}

impl PipRecord {
    /// A candidate a scan found for the first time.
    pub fn found(pack_id: &str, relpath: &str, sha256: &str, packages: Vec<Pin>, now: i64) -> Self {
        PipRecord {
            candidate_key: candidate_key(pack_id, relpath, sha256),
            pack_id: pack_id.to_string(),
            relpath: relpath.to_string(),
            sha256: sha256.to_string(),
            packages,
            status: CandidateStatus::Pending,
            reject_count: 0,
            cooldown_until: None,
            last_reason: String::new(),
            updated_at: now,
            installed: Vec::new(),
        }
    }

    /// The decision fields, for the shared state machine.
    pub fn review(&mut self) -> Review<'_> {
        Review {
            status: &mut self.status,
            reject_count: &mut self.reject_count,
            cooldown_until: &mut self.cooldown_until,
            last_reason: &mut self.last_reason,
            updated_at: &mut self.updated_at,
        }
    }

    /// Whether approve may proceed (the caller then checks the pack, the file and the index).
    pub fn may_approve(&self) -> Result<(), Refused> {
        self.clone().review().may_approve(UNBLOCK_HINT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused(text: &str) -> String {
        match parse_lock(text.as_bytes()) {
            Ok(p) => panic!("{text:?} was accepted: {p:?}"),
            Err(e) => {
                assert_eq!(e[0].line, 1, "{text:?}: {e:?}");
                e[0].reason.clone()
            }
        }
    }

    #[test]
    fn pins_extras_comments_and_blank_lines() {
        let pins = parse_lock(b"# a comment\n\nrequests==2.31.0\r\n  six == 1.16.0 \nuvicorn[standard, dev]==0.23.2\n").unwrap();
        assert_eq!(pins.len(), 3);
        assert_eq!(pins[1].requirement(), "six==1.16.0");
        assert_eq!(pins[2].requirement(), "uvicorn[standard,dev]==0.23.2");
        assert_eq!(parse_lock(b"").unwrap(), vec![]);
    }

    #[test]
    fn every_forbidden_form_is_refused_with_its_rule() {
        for (line, rule) in [
            ("-e .", "editable"),
            ("--editable=x", "editable"),
            ("-r other.txt", "option lines"),
            ("--index-url https://evil/simple", "option lines"),
            ("git+https://github.com/a/b", "VCS"),
            ("pkg @ https://x/pkg.whl", "direct references"),
            ("https://x/pkg-1.0-py3-none-any.whl", "URLs"),
            ("file:///tmp/x.whl", "file:"),
            ("../other/pkg", "relative"),
            ("./pkg", "relative"),
            ("/abs/pkg.whl", "absolute"),
            ("C:\\pkg.whl", "absolute"),
            ("pkg==1.0 # why", "inline comments"),
            ("pkg==1.0; python_version<'3.9'", "markers"),
            ("pkg==1.0 \\", "continuations"),
            ("pkg>=1.0", "exact pins"),
            ("pkg~=1.0", "exact pins"),
            ("pkg===1.0", "==="),
            ("pkg==1.*", "wildcard"),
            ("pkg", "NAME==VERSION"),
            ("pkg==1.0,<2", "exact version"),
            ("-pkg==1", "option"),
            ("pk g==1.0", "distribution name"),
            ("pkg[a b]==1.0", "extra"),
            ("pkg==", "version"),
            ("pkgé==1.0", "ASCII"),
        ] {
            let reason = refused(line);
            assert!(
                reason.contains(rule),
                "{line:?}: {reason:?} should mention {rule:?}"
            );
        }
    }

    #[test]
    fn duplicates_sizes_and_line_numbers() {
        let e = parse_lock(b"a_b==1\n\n# c\nA.B==2\n").unwrap_err();
        assert_eq!(e[0].line, 4);
        assert!(e[0].reason.contains("twice (first on line 1)"), "{e:?}");
        let big = "a==1\n".repeat(MAX_LOCK_BYTES / 5 + 1);
        assert_eq!(parse_lock(big.as_bytes()).unwrap_err()[0].line, 0);
        let many = "\n".repeat(MAX_LOCK_LINES + 1);
        assert_eq!(parse_lock(many.as_bytes()).unwrap_err()[0].line, 0);
        let bad = "x>=1\n".repeat(100);
        let e = parse_lock(bad.as_bytes()).unwrap_err();
        assert_eq!(e.len(), MAX_REPORTED + 1);
        assert!(e[MAX_REPORTED].reason.contains("80 more"));
    }

    #[test]
    fn keys() {
        let sha = "a".repeat(64);
        assert!(valid_candidate_key(&candidate_key(
            "p",
            "requirements.lock",
            &sha
        )));
        assert!(valid_candidate_key(&candidate_key(
            "p",
            "backend/requirements.lock",
            &sha
        )));
        for bad in [
            format!("p:../requirements.lock:{sha}"),
            format!("p:requirements.lock:{}", "A".repeat(64)),
            format!("p:requirements.lock:{sha}:x"),
            format!("p/x:requirements.lock:{sha}"),
        ] {
            assert!(!valid_candidate_key(&bad), "{bad}");
        }
        assert_eq!(normalize("Foo__Bar.baz"), "foo-bar-baz");
    }

    #[test]
    fn the_shared_review_blocks_at_the_third_rejection() {
        let mut r = PipRecord::found("p", LOCK_FILE, &"0".repeat(64), vec![], 10);
        r.review().reject("a", 11).unwrap();
        r.review().reject("b", 12).unwrap();
        assert_eq!(r.status, CandidateStatus::Rejected);
        r.review().reject("c", 13).unwrap();
        assert_eq!(r.status, CandidateStatus::Blocked);
        assert!(r.may_approve().unwrap_err().0.contains("/api/pip/blocked"));
        r.review().unblock("ok", 14).unwrap();
        assert_eq!((r.status, r.reject_count), (CandidateStatus::Pending, 0));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_lock(&bytes);
        }

        /// Whatever is accepted is an exact pin of safe characters, and the line the kernel
        /// writes for pip parses back to the same pin.
        #[test]
        fn accepted_lines_are_exact_pins(line in "[ -~]{0,40}") {
            if let Ok(pins) = parse_lock(line.as_bytes()) {
                for p in pins {
                    prop_assert!(valid_name(&p.name) && valid_version(&p.version));
                    prop_assert!(p.extras.iter().all(|e| valid_name(e)));
                    let again = parse_lock(p.requirement().as_bytes()).unwrap();
                    prop_assert_eq!(&again[0], &p);
                    let r = p.requirement();
                    for bad in ["://", "@", "#", ";", "/", "\\", " ", "-e", "*"] {
                        prop_assert!(!r.contains(bad) || (bad == "-e" && !r.starts_with('-')), "{r:?} holds {bad:?}");
                    }
                }
            }
        }

        /// Generated valid pins always parse, whatever the surrounding whitespace.
        #[test]
        fn valid_pins_parse(name in "[a-z][a-z0-9._-]{0,20}[a-z0-9]", version in "[0-9][0-9a-z.+!-]{0,10}", pad in " {0,3}") {
            let text = format!("{pad}{name}{pad}=={pad}{version}{pad}\n");
            let pins = parse_lock(text.as_bytes()).unwrap();
            prop_assert_eq!(&pins[0].name, &name);
            prop_assert_eq!(&pins[0].version, &version);
        }
    }
}
