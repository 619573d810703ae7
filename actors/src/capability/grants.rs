//! Capability grants (contract §7.3): which principal may use which `permission_id`, with which
//! `grant_config`. One signed file per principal (`user_data/permissions/capabilities/<principal>.json`,
//! the [`SignedRecords`] approvals and network grants use) holding all its permissions, and an
//! in-memory table the broker reads on every call (a shared lock and a map lookup, no file I/O).
//!
//! Attacks stopped here:
//! * editing a grant file to widen it, or copying one principal's file to another — the HMAC
//!   fails, and that principal is denied every capability call ([`GrantCheck::Tampered`], a
//!   `security` audit at boot and on each call) until an operator grants or revokes afresh;
//! * a child principal (`a__b`) widening what its parent was given — every level of the chain
//!   must hold the grant, and the effective config is the [`intersect`]ion, where a key
//!   restricted at any level stays restricted;
//! * `allowed_store_ids: []` ("any store") at one level widening `["notes"]` at another — an
//!   empty list of [`EMPTY_MEANS_ANY`] keys counts as absent, and levels whose lists share
//!   nothing deny instead of meeting at `[]`;
//! * a lost grant — changes are serialised (one writer at a time per table), written durably
//!   (`write_atomic` fsyncs the file and the directory) and only then published in memory, so an
//!   acknowledged grant is on disk and two concurrent grants to one principal both survive.

use crate::keys::{SignedRecords, SigningKey, Stored};
use parking_lot::{Mutex, RwLock};
use rumi_domain::capability::grant::intersect;
use rumi_domain::capability::keys::{valid_permission_id, valid_secret_key, valid_store_id};
use rumi_domain::pack::valid_pack_id;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;

/// Largest `config` of one grant, serialized (64 KiB).
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Top-level config keys whose empty list means "no restriction" (the contract's
/// `allowed_store_ids`: "empty or absent = any store"). Such a list is treated as absent before
/// the levels meet, and levels that restrict it without a common item deny.
pub const EMPTY_MEANS_ANY: &[&str] = &["allowed_store_ids"];

/// What the grant step decided for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantCheck {
    /// Every level of the principal holds an enabled grant; the effective (intersected) config.
    Granted(Value),
    /// No grant (at some level); the reason is for the audit, not the pack.
    Denied(String),
    /// A grant file of the principal (or an ancestor, named) failed its signature check: every
    /// call of the principal is denied and a `security` audit entry is due.
    Tampered { principal_id: String },
}

/// One grant, as stored and as `GET /api/capability/grants` lists it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub principal_id: String,
    pub permission_id: String,
    /// The `grant_config` the handler receives (an object; the built-ins read
    /// `allowed_store_ids`, `max_value_bytes`, `allowed_keys`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Value,
    /// Always true for a listed grant (a revoked grant is removed, not kept disabled).
    pub enabled: bool,
    /// RFC 3339 UTC.
    pub granted_at: String,
}

/// A principal's file: its id (checked against the file name, so a copied file fails) and its
/// grants by permission.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PrincipalGrants {
    principal_id: String,
    grants: BTreeMap<String, GrantRecord>,
}

impl PrincipalGrants {
    fn sound(&self, file_id: &str) -> bool {
        self.principal_id == file_id
            && self.grants.iter().all(|(perm, g)| {
                g.principal_id == file_id
                    && &g.permission_id == perm
                    && valid_permission_id(perm)
                    && g.config.is_object()
            })
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Valid(BTreeMap<String, GrantRecord>),
    /// The file exists but fails its signature or shape check: denies everything.
    Tampered,
}

/// Why a grant was refused (`io::ErrorKind::InvalidInput`, the message for the operator; the
/// API answers 400 with it).
fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

/// The grants: signed files under `user_data/permissions/capabilities/`, held in memory.
pub struct CapabilityGrants {
    files: SignedRecords,
    slots: RwLock<HashMap<String, Slot>>,
    /// Serialises read-modify-write of the files: two grants to one principal never lose one.
    writes: Mutex<()>,
}

impl CapabilityGrants {
    /// Loads every grant file; answers the principals whose file failed its check.
    pub fn load(dir: PathBuf, key: SigningKey) -> (Self, Vec<String>) {
        let files = SignedRecords::new(dir, key);
        let mut slots = HashMap::new();
        let mut tampered = Vec::new();
        for id in files.ids() {
            if !valid_pack_id(&id) {
                // Not a file this table writes (and no principal could be named so).
                continue;
            }
            let slot = match files.load(&id, |p: &PrincipalGrants| p.sound(&id)) {
                Stored::Valid(p) => Slot::Valid(p.grants),
                Stored::None | Stored::Tampered => {
                    tampered.push(id.clone());
                    Slot::Tampered
                }
            };
            slots.insert(id, slot);
        }
        tampered.sort();
        let grants = CapabilityGrants {
            files,
            slots: RwLock::new(slots),
            writes: Mutex::new(()),
        };
        (grants, tampered)
    }

    /// The grant step for `principal` (a pack id, possibly `a__b`) and `permission_id`.
    pub fn check(&self, principal: &str, permission_id: &str) -> GrantCheck {
        let slots = self.slots.read();
        let levels = chain(principal);
        // A tampered file anywhere in the chain wins over a plain denial: it is the security
        // event the operator must see.
        for level in &levels {
            if let Some(Slot::Tampered) = slots.get(*level) {
                return GrantCheck::Tampered {
                    principal_id: level.to_string(),
                };
            }
        }
        let mut configs = Vec::with_capacity(levels.len());
        for level in &levels {
            match slots.get(*level) {
                Some(Slot::Valid(grants)) => match grants.get(permission_id) {
                    Some(g) if g.enabled => configs.push(without_empty_any(&g.config)),
                    _ => return GrantCheck::Denied(no_grant(level, permission_id)),
                },
                _ => return GrantCheck::Denied(no_grant(level, permission_id)),
            }
        }
        drop(slots);
        let refs: Vec<&Value> = configs.iter().collect();
        let effective = intersect(&refs);
        for key in EMPTY_MEANS_ANY {
            if effective
                .get(key)
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                return GrantCheck::Denied(format!(
                    "the levels of {principal} share no item of {key}"
                ));
            }
        }
        GrantCheck::Granted(effective)
    }

    /// Grants `permission_id` to `principal` with `config` (replacing an earlier grant of that
    /// permission), durably. A principal whose file was tampered starts afresh: its tampered
    /// grants are dropped (deny-safe) and the new file is signed. Invalid input →
    /// `ErrorKind::InvalidInput` with a message saying what to fix.
    pub fn grant(
        &self,
        principal: &str,
        permission_id: &str,
        config: Value,
    ) -> io::Result<GrantRecord> {
        check_principal(principal)?;
        check_permission(permission_id)?;
        let config = check_config(permission_id, config)?;
        let record = GrantRecord {
            principal_id: principal.to_string(),
            permission_id: permission_id.to_string(),
            config,
            enabled: true,
            granted_at: crate::clock::now_rfc3339(),
        };
        let _w = self.writes.lock();
        let mut grants = self.current(principal);
        grants.insert(permission_id.to_string(), record.clone());
        self.store_locked(principal, grants)?;
        Ok(record)
    }

    /// Revokes `principal`'s grant of `permission_id`, durably. Answers whether anything changed.
    /// On a tampered principal the tampered file is removed (its grants are not trusted), so
    /// the principal is no longer tampered and still holds nothing: revoking always denies.
    pub fn revoke(&self, principal: &str, permission_id: &str) -> io::Result<bool> {
        check_principal(principal)?;
        check_permission(permission_id)?;
        let _w = self.writes.lock();
        let tampered = matches!(self.slots.read().get(principal), Some(Slot::Tampered));
        let mut grants = self.current(principal);
        let had = grants.remove(permission_id).is_some();
        if !had && !tampered {
            return Ok(false);
        }
        self.store_locked(principal, grants)?;
        // Clearing a tampered file is a change worth its answer and its audit entry.
        Ok(had || tampered)
    }

    /// Removes every grant of `principal`, its file included (a pack's uninstall; a tampered
    /// file goes too). Answers whether it had any.
    pub fn remove_principal(&self, principal: &str) -> io::Result<bool> {
        check_principal(principal)?;
        let _w = self.writes.lock();
        self.files.remove(principal)?;
        Ok(self.slots.write().remove(principal).is_some())
    }

    /// Every principal holding grants (or a tampered grant file), sorted.
    pub fn principals(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.slots.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Every grant (or those of one principal), sorted by principal then permission. Tampered
    /// principals list nothing here (see [`CapabilityGrants::tampered`]).
    pub fn list(&self, principal: Option<&str>) -> Vec<GrantRecord> {
        let slots = self.slots.read();
        let mut out: Vec<GrantRecord> = slots
            .iter()
            .filter(|(id, _)| principal.is_none_or(|p| p == id.as_str()))
            .filter_map(|(_, slot)| match slot {
                Slot::Valid(g) => Some(g.values().cloned().collect::<Vec<_>>()),
                Slot::Tampered => None,
            })
            .flatten()
            .collect();
        out.sort_by(|a, b| {
            (&a.principal_id, &a.permission_id).cmp(&(&b.principal_id, &b.permission_id))
        });
        out
    }

    /// The principals whose grant file failed its check (their calls are denied).
    pub fn tampered(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .slots
            .read()
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Tampered))
            .map(|(id, _)| id.clone())
            .collect();
        out.sort();
        out
    }

    /// The principal's grants now (empty when none or tampered); the caller holds `writes`.
    fn current(&self, principal: &str) -> BTreeMap<String, GrantRecord> {
        match self.slots.read().get(principal) {
            Some(Slot::Valid(g)) => g.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// Signs and writes the principal's file (removed when it holds nothing), then publishes it;
    /// the caller holds `writes`.
    fn store_locked(
        &self,
        principal: &str,
        grants: BTreeMap<String, GrantRecord>,
    ) -> io::Result<()> {
        if grants.is_empty() {
            self.files.remove(principal)?;
            self.slots.write().remove(principal);
            return Ok(());
        }
        let file = PrincipalGrants {
            principal_id: principal.to_string(),
            grants,
        };
        self.files.save(principal, &file).inspect_err(|e| {
            tracing::error!(error = %e, "capability grant file write failed");
        })?;
        self.slots
            .write()
            .insert(principal.to_string(), Slot::Valid(file.grants));
        Ok(())
    }
}

/// The principal and its ancestors, root first, as slices of `principal` (no allocation per
/// level: this is on every call's path). Same as [`rumi_domain::capability::grant::principal_chain`].
fn chain(principal: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(2);
    let mut at = 0;
    while let Some(i) = principal[at..].find("__") {
        out.push(&principal[..at + i]);
        at += i + 2;
    }
    out.push(principal);
    out
}

fn no_grant(level: &str, permission_id: &str) -> String {
    format!("{level} holds no grant of {permission_id}")
}

/// The config with the empty [`EMPTY_MEANS_ANY`] lists removed.
fn without_empty_any(config: &Value) -> Value {
    let mut c = config.clone();
    if let Value::Object(m) = &mut c {
        for key in EMPTY_MEANS_ANY {
            if m.get(*key)
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                m.remove(*key);
            }
        }
    }
    c
}

fn check_principal(principal: &str) -> io::Result<()> {
    if valid_pack_id(principal) {
        Ok(())
    } else {
        Err(invalid(
            "principal_id must be a pack id: 1–64 letters, digits, '_' or '-', starting with a \
             letter or digit (a sub-principal is written parent__child)",
        ))
    }
}

fn check_permission(permission_id: &str) -> io::Result<()> {
    if valid_permission_id(permission_id) {
        Ok(())
    } else {
        Err(invalid(
            "permission_id must be 1–128 letters, digits, '.', '_' or '-', starting with a letter \
             or digit (e.g. \"store.get\")",
        ))
    }
}

/// Checks a grant's config: an object of at most 64 KiB (null or absent is `{}`), with the
/// built-ins' keys well-formed so a typo is a clear 400 now rather than a denial later.
fn check_config(permission_id: &str, config: Value) -> io::Result<Value> {
    let config = match config {
        Value::Null => Value::Object(Default::default()),
        Value::Object(m) => Value::Object(m),
        _ => return Err(invalid("config must be a JSON object (e.g. {})")),
    };
    let size = serde_json::to_vec(&config)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "config is {size} bytes; at most {MAX_CONFIG_BYTES} bytes (64 KiB) are accepted"
        )));
    }
    let string_list =
        |key: &str, valid: fn(&str) -> bool, what: &str| -> io::Result<Option<usize>> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => {
                    if items.iter().all(|i| i.as_str().is_some_and(valid)) {
                        Ok(Some(items.len()))
                    } else {
                        Err(invalid(format!("config.{key} must be a list of {what}")))
                    }
                }
                Some(_) => Err(invalid(format!("config.{key} must be a list of {what}"))),
            }
        };
    if permission_id.starts_with("store.") && crate::capability::builtins::is_builtin(permission_id)
    {
        string_list(
            "allowed_store_ids",
            valid_store_id,
            "store ids (^[a-z0-9][a-z0-9_.-]{0,63}$); empty or absent means any store",
        )?;
        if let Some(v) = config.get("max_value_bytes") {
            if v.as_u64().is_none_or(|n| n < 1) {
                return Err(invalid(
                    "config.max_value_bytes must be a positive integer (bytes; default 1048576)",
                ));
            }
        }
    }
    if permission_id == "secrets.get" {
        let n = string_list(
            "allowed_keys",
            valid_secret_key,
            "secret keys (^[A-Z0-9_]{1,64}$)",
        )?;
        if n.is_none_or(|n| n == 0) {
            return Err(invalid(
                "a secrets.get grant needs config.allowed_keys, a non-empty list of the secret keys \
                 the principal may read (e.g. {\"allowed_keys\": [\"API_KEY\"]})",
            ));
        }
    }
    Ok(config)
}

/// The `security` audit entry for a grant file that failed its signature check (the action
/// names the grant).
pub fn tampered_entry(principal_id: &str) -> crate::audit::AuditEntry {
    use crate::audit::{AuditEntry, Category, Severity};
    AuditEntry::new(Category::Security, "capability_grant_tampered", false)
        .severity(Severity::Error)
        .pack(principal_id)
        .error(
            "the principal's capability grant file failed its signature check; its capability calls are denied",
            Some("grant_tampered"),
        )
}

#[cfg(test)]
mod tests;
