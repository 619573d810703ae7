//! Third-party capability handler candidates (contract §7.2, §16 "Capability candidates"): what a
//! pack's `handler.json` may say, the candidate key, and the trust workflow's state machine
//! (scan → `pending`; approve; reject with a cooldown, the third rejection → `blocked`; unblock →
//! `pending`). Pure: the runtime crate reads the files, keeps the records and passes the time in.
//!
//! Attacks stopped here: a `handler.json` whose entrypoint names a file outside its slug
//! directory (`../other_pack/x.py`, `/etc/passwd`, a nested path) or any file other than the
//! `handler.py` the trust hash covers; ids carrying the key's separator `:` or path characters
//! (a slug of `..`); a third-party handler claiming a built-in permission (checked by the caller,
//! which knows the built-ins); an operator's approval of a blocked candidate.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only file a handler's entrypoint may name: the one whose SHA-256 is trusted and copied.
pub const HANDLER_FILE: &str = "handler.py";
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "handler.json";
/// How long a rejected candidate stays rejected before a scan offers it again.
pub const REJECT_COOLDOWN_SECS: i64 = 3600;
/// The rejection that blocks a candidate.
pub const REJECTS_TO_BLOCK: u32 = 3;
/// Longest reason or note kept.
pub const MAX_NOTE_CHARS: usize = super::review::MAX_NOTE_CHARS;

/// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$` without `..`: a slug (a directory name copied under
/// `user_data/capabilities/handlers/`) or a handler id. No `:` (the key's separator), no `/`.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && !s.contains("..")
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// What a valid `handler.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerManifest {
    pub handler_id: String,
    pub permission_id: String,
    /// The function of `handler.py` to call (`execute` for `handler.py:execute`).
    pub function: String,
    pub description: String,
    pub risk: String,
}

fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 128
}

fn optional_text(obj: &serde_json::Map<String, Value>, name: &str) -> Result<String, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.chars().take(2000).collect()),
        Some(_) => Err(format!("handler.json: {name} must be a string")),
    }
}

/// Parses a `handler.json`. The entrypoint must be `handler.py:<function>` (or
/// `./handler.py:<function>`): the trust hash covers `handler.py` alone, so naming any other file
/// — inside the slug or out of it — would run code nobody approved.
pub fn parse_manifest(bytes: &[u8]) -> Result<HandlerManifest, String> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("handler.json is not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("handler.json must be a JSON object".into());
    };
    let handler_id = match obj.get("handler_id") {
        Some(Value::String(s)) if valid_name(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(format!(
                "handler.json: handler_id {:?} must be 1–64 letters, digits, '_', '.', '-' (no '..', no ':')",
                clip(s, 80)
            ))
        }
        _ => return Err("handler.json: handler_id (a string) is required".into()),
    };
    let permission_id = match obj.get("permission_id") {
        Some(Value::String(s)) if super::keys::valid_permission_id(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(format!(
                "handler.json: permission_id {:?} must be 1–128 letters, digits, '.', '_', '-'",
                clip(s, 80)
            ))
        }
        _ => return Err("handler.json: permission_id (a string) is required".into()),
    };
    let entrypoint = match obj.get("entrypoint") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err("handler.json: entrypoint (\"handler.py:execute\") is required".into()),
    };
    let function = parse_entrypoint(entrypoint)?;
    Ok(HandlerManifest {
        handler_id,
        permission_id,
        function,
        description: optional_text(&obj, "description")?,
        risk: optional_text(&obj, "risk")?,
    })
}

/// `handler.py:execute` → `execute`; anything naming another file, or a path leaving the slug
/// directory, is refused with the reason.
pub fn parse_entrypoint(entrypoint: &str) -> Result<String, String> {
    let Some((file, function)) = entrypoint.rsplit_once(':') else {
        return Err(format!(
            "handler.json: entrypoint {:?} must be \"handler.py:<function>\"",
            clip(entrypoint, 80)
        ));
    };
    let file = file.strip_prefix("./").unwrap_or(file);
    if file.starts_with('/') || file.split(['/', '\\']).any(|seg| seg == "..") {
        return Err(format!(
            "handler.json: entrypoint {:?} leaves the handler's directory; it must be \"handler.py:<function>\"",
            clip(entrypoint, 80)
        ));
    }
    if file != HANDLER_FILE {
        return Err(format!(
            "handler.json: entrypoint {:?} must name handler.py (the file the trust hash covers)",
            clip(entrypoint, 80)
        ));
    }
    if !identifier(function) {
        return Err(format!(
            "handler.json: entrypoint function {:?} is not a Python identifier",
            clip(function, 80)
        ));
    }
    Ok(function.to_string())
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `pack_id:slug:handler_id:<sha256 of handler.py>`.
pub fn candidate_key(pack_id: &str, slug: &str, handler_id: &str, sha256: &str) -> String {
    format!("{pack_id}:{slug}:{handler_id}:{sha256}")
}

/// Whether `key` has the shape of a candidate key (checked before any lookup, so a key from a
/// URL never reaches a file name or a log unbounded).
pub fn valid_candidate_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split(':').collect();
    parts.len() == 4
        && crate::pack::valid_pack_id(parts[0])
        && valid_name(parts[1])
        && valid_name(parts[2])
        && parts[3].len() == 64
        && parts[3]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where a candidate is in the workflow.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateStatus {
    /// Found by a scan, waiting for a decision.
    Pending,
    /// Rejected; a scan offers it again after the cooldown.
    Rejected,
    /// Rejected three times: only an unblock brings it back.
    Blocked,
    /// Approved: trusted, copied, its actor started.
    Installed,
    /// The approval could not be completed (a write failed); it may be approved again.
    Failed,
}

/// How many candidates are in each state (the pending summary's `capability` and `pip` sections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub pending_count: usize,
    pub rejected_count: usize,
    pub blocked_count: usize,
    pub failed_count: usize,
    pub installed_count: usize,
}

impl StatusCounts {
    /// Counts `statuses`.
    pub fn of(statuses: impl IntoIterator<Item = CandidateStatus>) -> Self {
        let mut c = StatusCounts::default();
        for s in statuses {
            *match s {
                CandidateStatus::Pending => &mut c.pending_count,
                CandidateStatus::Rejected => &mut c.rejected_count,
                CandidateStatus::Blocked => &mut c.blocked_count,
                CandidateStatus::Failed => &mut c.failed_count,
                CandidateStatus::Installed => &mut c.installed_count,
            } += 1;
        }
        c
    }
}

impl CandidateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateStatus::Pending => "pending",
            CandidateStatus::Rejected => "rejected",
            CandidateStatus::Blocked => "blocked",
            CandidateStatus::Installed => "installed",
            CandidateStatus::Failed => "failed",
        }
    }

    /// `pending|rejected|blocked|installed|failed`; `all` (and nothing) is `None`.
    pub fn parse_filter(s: &str) -> Result<Option<CandidateStatus>, String> {
        Ok(Some(match s {
            "all" => return Ok(None),
            "pending" => CandidateStatus::Pending,
            "rejected" => CandidateStatus::Rejected,
            "blocked" => CandidateStatus::Blocked,
            "installed" => CandidateStatus::Installed,
            "failed" => CandidateStatus::Failed,
            _ => {
                return Err(format!(
                    "status {:?} is not one of pending, rejected, blocked, installed, failed, all",
                    clip(s, 40)
                ))
            }
        }))
    }
}

/// One candidate's record (kept under `user_data/capabilities/requests/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub candidate_key: String,
    pub pack_id: String,
    pub slug: String,
    pub handler_id: String,
    pub permission_id: String,
    pub sha256: String,
    pub status: CandidateStatus,
    pub reject_count: u32,
    /// Unix seconds until which a rejected candidate stays rejected.
    pub cooldown_until: Option<i64>,
    /// The last decision's reason or notes.
    #[serde(default)]
    pub last_reason: String,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

impl CandidateRecord {
    /// A candidate a scan found for the first time.
    pub fn found(pack_id: &str, slug: &str, m: &HandlerManifest, sha256: &str, now: i64) -> Self {
        CandidateRecord {
            candidate_key: candidate_key(pack_id, slug, &m.handler_id, sha256),
            pack_id: pack_id.to_string(),
            slug: slug.to_string(),
            handler_id: m.handler_id.clone(),
            permission_id: m.permission_id.clone(),
            sha256: sha256.to_string(),
            status: CandidateStatus::Pending,
            reject_count: 0,
            cooldown_until: None,
            last_reason: String::new(),
            updated_at: now,
        }
    }

    /// The decision fields, for the shared state machine ([`super::review::Review`]).
    pub fn review(&mut self) -> super::review::Review<'_> {
        super::review::Review {
            status: &mut self.status,
            reject_count: &mut self.reject_count,
            cooldown_until: &mut self.cooldown_until,
            last_reason: &mut self.last_reason,
            updated_at: &mut self.updated_at,
        }
    }

    /// See [`super::review::Review::rescanned`].
    pub fn rescanned(&mut self, now: i64) -> bool {
        self.review().rescanned(now)
    }

    /// Whether approve may proceed (the caller then checks the pack and the files).
    pub fn may_approve(&self) -> Result<(), Refused> {
        self.clone()
            .review()
            .may_approve("POST /api/capability/blocked/{candidate_key}/unblock")
    }

    /// The approval completed.
    pub fn approved(&mut self, notes: &str, now: i64) {
        self.review().approved(notes, now)
    }

    /// The approval failed after its checks (a write failed).
    pub fn failed(&mut self, why: &str, now: i64) {
        self.review().failed(why, now)
    }

    /// See [`super::review::Review::reject`].
    pub fn reject(&mut self, reason: &str, now: i64) -> Result<(), Refused> {
        self.review().reject(reason, now)
    }

    /// See [`super::review::Review::unblock`].
    pub fn unblock(&mut self, reason: &str, now: i64) -> Result<(), Refused> {
        self.review().unblock(reason, now)
    }
}

/// A decision the candidate's state does not allow (answered 409 with the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(entry: &str) -> Result<HandlerManifest, String> {
        parse_manifest(
            serde_json::json!({"handler_id": "fs_read", "permission_id": "fs.read",
                "entrypoint": entry, "description": "d", "risk": "r"})
            .to_string()
            .as_bytes(),
        )
    }

    #[test]
    fn a_manifest_parses() {
        let m = manifest("handler.py:execute").unwrap();
        assert_eq!(m.handler_id, "fs_read");
        assert_eq!(m.permission_id, "fs.read");
        assert_eq!(m.function, "execute");
        assert_eq!(manifest("./handler.py:run").unwrap().function, "run");
    }

    #[test]
    fn entrypoints_that_escape_or_name_another_file_are_refused() {
        for bad in [
            "/etc/passwd:execute",
            "../other/handler.py:execute",
            "sub/../../handler.py:execute",
            "..\\handler.py:execute",
            "other.py:execute",
            "sub/handler.py:execute",
            "handler.py",
            "handler.py:",
            "handler.py:exec ute",
            "handler.py:1x",
            "",
        ] {
            assert!(manifest(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn manifests_missing_fields_or_with_bad_ids_are_refused() {
        for bad in [
            serde_json::json!({"permission_id": "a", "entrypoint": "handler.py:execute"}),
            serde_json::json!({"handler_id": "h", "entrypoint": "handler.py:execute"}),
            serde_json::json!({"handler_id": "h", "permission_id": "a"}),
            serde_json::json!({"handler_id": "a:b", "permission_id": "a", "entrypoint": "handler.py:execute"}),
            serde_json::json!({"handler_id": "..", "permission_id": "a", "entrypoint": "handler.py:execute"}),
            serde_json::json!({"handler_id": "h", "permission_id": "../x", "entrypoint": "handler.py:execute"}),
            serde_json::json!({"handler_id": "h", "permission_id": "a", "entrypoint": "handler.py:execute", "risk": 3}),
            serde_json::json!([1]),
        ] {
            assert!(parse_manifest(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_manifest(b"not json").is_err());
    }

    #[test]
    fn keys_round_trip_and_odd_keys_are_refused() {
        let sha = "a".repeat(64);
        let k = candidate_key("pack", "slug", "h.1", &sha);
        assert!(valid_candidate_key(&k));
        for bad in [
            "pack:slug:h".to_string(),
            format!("pack:slug:h:{}", "A".repeat(64)),
            format!("pack:../x:h:{sha}"),
            format!("pa/ck:slug:h:{sha}"),
            format!("pack:slug:h:{sha}:extra"),
        ] {
            assert!(!valid_candidate_key(&bad), "{bad}");
        }
    }

    fn record() -> CandidateRecord {
        let m = manifest("handler.py:execute").unwrap();
        CandidateRecord::found("p", "s", &m, &"0".repeat(64), 1000)
    }

    #[test]
    fn three_rejections_block_and_unblock_resets() {
        let mut r = record();
        r.reject("no", 1000).unwrap();
        assert_eq!(r.status, CandidateStatus::Rejected);
        assert_eq!(r.cooldown_until, Some(1000 + REJECT_COOLDOWN_SECS));
        // Within the cooldown a scan leaves it rejected; a rejected one accepts more rejections.
        assert!(!r.rescanned(1001));
        r.reject("no", 1002).unwrap();
        assert_eq!((r.status, r.reject_count), (CandidateStatus::Rejected, 2));
        r.reject("no", 1003).unwrap();
        assert_eq!((r.status, r.reject_count), (CandidateStatus::Blocked, 3));
        assert!(
            r.may_approve().is_err(),
            "a blocked candidate is not approved"
        );
        assert!(r.reject("again", 1004).is_err());
        assert!(!r.rescanned(1_000_000), "a scan never unblocks");
        r.unblock("ok", 1005).unwrap();
        assert_eq!(r.status, CandidateStatus::Pending);
        assert_eq!((r.reject_count, r.cooldown_until), (0, None));
        assert!(r.unblock("twice", 1006).is_err());
    }

    #[test]
    fn a_rejected_candidate_returns_after_its_cooldown() {
        let mut r = record();
        r.reject("later", 1000).unwrap();
        assert!(r.rescanned(1000 + REJECT_COOLDOWN_SECS));
        assert_eq!(r.status, CandidateStatus::Pending);
        assert_eq!(r.reject_count, 1, "the count is kept");
    }

    #[test]
    fn an_installed_candidate_is_neither_approved_again_nor_rejected() {
        let mut r = record();
        r.approved("fine", 1000);
        assert!(r.may_approve().is_err());
        assert!(r.reject("no", 1001).is_err());
        assert!(!r.rescanned(5000));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reject,
        Unblock,
        Rescan(i64),
    }

    proptest! {
        /// Whatever the order of decisions: the count never reaches 3 without blocking, a
        /// blocked candidate is left only by an unblock, and a rejected one always has a
        /// cooldown.
        #[test]
        fn the_workflow_keeps_its_invariants(ops in proptest::collection::vec(
            prop_oneof![Just(Op::Reject), Just(Op::Unblock), (0i64..10_000).prop_map(Op::Rescan)], 0..40)) {
            let mut r = record();
            let mut now = 1000;
            for op in ops {
                now += 1;
                let before = r.status;
                match op {
                    Op::Reject => { let _ = r.reject("x", now); }
                    Op::Unblock => { let _ = r.unblock("x", now); }
                    Op::Rescan(dt) => { now += dt; r.rescanned(now); }
                }
                prop_assert!(r.reject_count < REJECTS_TO_BLOCK || r.status == CandidateStatus::Blocked);
                if before == CandidateStatus::Blocked && r.status != CandidateStatus::Blocked {
                    prop_assert_eq!(r.reject_count, 0);
                }
                if r.status == CandidateStatus::Rejected {
                    prop_assert!(r.cooldown_until.is_some());
                }
            }
        }

        #[test]
        fn parse_manifest_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_manifest(&bytes);
        }

        #[test]
        fn any_accepted_entrypoint_is_handler_py(entry in "[./a-z_:\\\\]{0,24}") {
            if parse_entrypoint(&entry).is_ok() {
                let file = entry.rsplit_once(':').unwrap().0;
                prop_assert!(file == "handler.py" || file == "./handler.py");
            }
        }
    }
}
