//! Network grants: signed files, an in-memory table for the per-hop check, and the check itself.
//!
//! Attacks stopped here:
//! * a flow or pack granting itself network rights (the original let any flow do it) — grants
//!   change only through the authenticated API;
//! * editing a grant file to widen it — each file carries an HMAC over its content with the
//!   installation's key; a file that fails the check denies every request of that pack (it never
//!   falls back to an older or wider grant) and is reported in the `security` audit;
//! * a pack whose files changed after approval keeping its network — the check asks for an
//!   approved pack, so a `modified` pack's grant is suspended, and comes back with re-approval
//!   without being granted again.

use crate::audit::{AuditEntry, Category, Severity};
use crate::keys::{SignedRecords, SigningKey, Stored};
use crate::view::{KernelView, PackState};
use parking_lot::{Mutex, RwLock};
use rumi_domain::egress::{grant_allows, normalise_grant_lists, NetworkGrant};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Slot {
    Valid(NetworkGrant),
    /// The file exists but fails its signature or shape check: denies.
    Tampered,
}

/// The reason an allowed check gives.
pub const ALLOWED: &str = "allowed by the pack's grant";

/// Why the check said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: String,
    /// The pack's grant file failed its signature check (a security event).
    pub tampered: bool,
}

impl Denial {
    fn plain(reason: impl Into<String>) -> Denial {
        Denial {
            reason: reason.into(),
            tampered: false,
        }
    }
}

/// The `security` audit entry for a grant file that failed its signature check.
pub fn tampered_entry(pack_id: &str) -> AuditEntry {
    AuditEntry::new(Category::Security, "network_grant_tampered", false)
        .severity(Severity::Error)
        .pack(pack_id)
        .error(
            "the pack's grant file failed its signature check; its requests are denied",
            Some("grant_tampered"),
        )
}

/// A pack's grant as `GET /api/network/list` shows it: `pack_id`, `state`, `pack_state`, then
/// the grant's own fields (lists, notes, times) side by side — `pack_id` once.
#[derive(Debug, Clone)]
pub struct GrantInfo {
    pub pack_id: String,
    /// `active`, `revoked`, `suspended` (the pack is not approved now) or `tampered`.
    pub state: &'static str,
    pub pack_state: Option<PackState>,
    pub grant: Option<NetworkGrant>,
}

impl Serialize for GrantInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        // `#[serde(flatten)]` wrote the grant's own `pack_id` a second time into each object.
        let fields = match &self.grant {
            Some(g) => match serde_json::to_value(g).map_err(S::Error::custom)? {
                serde_json::Value::Object(mut m) => {
                    m.remove("pack_id");
                    m
                }
                _ => serde_json::Map::new(),
            },
            None => serde_json::Map::new(),
        };
        let mut map = s.serialize_map(Some(3 + fields.len()))?;
        map.serialize_entry("pack_id", &self.pack_id)?;
        map.serialize_entry("state", self.state)?;
        map.serialize_entry("pack_state", &self.pack_state)?;
        for (k, v) in &fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The shape [`GrantInfo`]'s hand-written `Serialize` produces, for the OpenAPI document: built
/// from [`NetworkGrant`]'s own schema, so a field added to the grant is described here too.
/// (`ComposeSchema` is what `#[derive(ToSchema)]` implements, and what a type inside a generic
/// such as `Vec<GrantInfo>` needs; `PartialSchema` follows from it.)
#[cfg(feature = "openapi")]
impl utoipa::__dev::ComposeSchema for GrantInfo {
    fn compose(
        _generics: Vec<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>,
    ) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
        use utoipa::openapi::{Ref, RefOr};
        use utoipa::ToSchema;
        let mut grant_fields = match <NetworkGrant as utoipa::PartialSchema>::schema() {
            RefOr::T(Schema::Object(o)) => o.properties,
            _ => Default::default(),
        };
        grant_fields.retain(|name, _| name != "pack_id");
        let states = ["active", "revoked", "suspended", "tampered"];
        let mut b = ObjectBuilder::new()
            .description(Some(
                "A pack's grant and its state; the grant's own fields are absent when its file \
                 is tampered.",
            ))
            .property("pack_id", ObjectBuilder::new().schema_type(Type::String))
            .required("pack_id")
            .property(
                "state",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(states)),
            )
            .required("state")
            .property(
                "pack_state",
                OneOfBuilder::new()
                    .item(ObjectBuilder::new().schema_type(Type::Null))
                    .item(Ref::from_schema_name(PackState::name())),
            )
            .required("pack_state");
        for (name, field) in grant_fields {
            b = b.property(name, field);
        }
        b.into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for GrantInfo {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((PackState::name().into(), PackState::schema()));
    }
}

/// Why a grant could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    Invalid(String),
    #[error("no pack {0:?} is installed")]
    NoSuchPack(String),
    #[error("pack {0:?} has no network grant")]
    NoGrant(String),
    #[error("the grant could not be recorded; nothing was changed")]
    Storage,
}

/// The grants (see the module docs). Reads take a shared lock; changes are serialised, written
/// durably, then published.
pub struct NetworkPolicy {
    files: SignedRecords,
    view: Arc<KernelView>,
    slots: RwLock<BTreeMap<String, Slot>>,
    writes: Mutex<()>,
}

impl NetworkPolicy {
    /// Loads every grant file of `dir`; answers the policy and the packs whose file is tampered.
    pub fn load(dir: PathBuf, key: SigningKey, view: Arc<KernelView>) -> (Self, Vec<String>) {
        let files = SignedRecords::new(dir, key);
        let mut slots = BTreeMap::new();
        let mut tampered = Vec::new();
        for pack_id in files.ids() {
            let slot = match files.load(&pack_id, |g: &NetworkGrant| g.pack_id == pack_id) {
                Stored::Valid(g) => Slot::Valid(g),
                // Gone since the listing, unreadable, or failing its check: denies.
                Stored::None | Stored::Tampered => {
                    tampered.push(pack_id.clone());
                    Slot::Tampered
                }
            };
            slots.insert(pack_id, slot);
        }
        let policy = NetworkPolicy {
            files,
            view,
            slots: RwLock::new(slots),
            writes: Mutex::new(()),
        };
        (policy, tampered)
    }

    /// Step 2 of §6: may `pack_id` reach `host:port` now?
    pub fn check(&self, pack_id: &str, host: &str, port: u16) -> Result<(), Denial> {
        match self.view.pack_state(pack_id) {
            Some(PackState::Approved) => {}
            Some(other) => {
                return Err(Denial::plain(format!(
                    "the pack is {} (its grant is suspended until it is approved)",
                    other.as_str()
                )))
            }
            None => return Err(Denial::plain("the pack is not installed")),
        }
        match self.slots.read().get(pack_id) {
            None => Err(Denial::plain("the pack has no network grant")),
            Some(Slot::Tampered) => Err(Denial {
                reason: "the pack's grant file failed its signature check".into(),
                tampered: true,
            }),
            Some(Slot::Valid(g)) => grant_allows(g, host, port).map_err(Denial::plain),
        }
    }

    /// `POST /api/network/grant`: replaces both lists and enables the grant.
    pub fn grant(
        &self,
        pack_id: &str,
        domains: &[String],
        ports: &[i64],
        notes: &str,
    ) -> Result<NetworkGrant, GrantError> {
        if self.view.pack_state(pack_id).is_none() {
            return Err(GrantError::NoSuchPack(pack_id.to_string()));
        }
        let (allowed_domains, allowed_ports) =
            normalise_grant_lists(domains, ports).map_err(GrantError::Invalid)?;
        if notes.len() > 2000 {
            return Err(GrantError::Invalid(
                "notes must be at most 2000 bytes".into(),
            ));
        }
        let grant = NetworkGrant {
            pack_id: pack_id.to_string(),
            enabled: true,
            allowed_domains,
            allowed_ports,
            notes: notes.to_string(),
            granted_at: crate::clock::now_rfc3339(),
            ..NetworkGrant::default()
        };
        self.store(grant)
    }

    /// `POST /api/network/revoke`: disables the grant (kept, so the list shows who had what).
    pub fn revoke(&self, pack_id: &str, reason: &str) -> Result<NetworkGrant, GrantError> {
        // Read and write under one writes lock: a revoke that read the grant before a concurrent
        // grant stored its new lists would otherwise write the old lists back over a grant that
        // was acknowledged a moment earlier.
        let _w = self.writes.lock();
        let current = match self.slots.read().get(pack_id) {
            Some(Slot::Valid(g)) => Some(g.clone()),
            Some(Slot::Tampered) => None,
            None => return Err(GrantError::NoGrant(pack_id.to_string())),
        };
        // A tampered grant is replaced by an empty, disabled one: revoking always denies.
        let mut grant = current.unwrap_or_else(|| NetworkGrant {
            pack_id: pack_id.to_string(),
            granted_at: crate::clock::now_rfc3339(),
            ..NetworkGrant::default()
        });
        grant.enabled = false;
        grant.revoked_at = Some(crate::clock::now_rfc3339());
        grant.revoke_reason = Some(reason.chars().take(500).collect());
        self.store_locked(grant)
    }

    /// Removes a pack's grant, file and all (uninstall: not a revocation kept for the record, so
    /// nothing of it can come back). Answers whether there was one (a tampered one counts).
    pub fn remove(&self, pack_id: &str) -> io::Result<bool> {
        let _w = self.writes.lock();
        self.files.remove(pack_id)?;
        Ok(self.slots.write().remove(pack_id).is_some())
    }

    fn store(&self, grant: NetworkGrant) -> Result<NetworkGrant, GrantError> {
        let _w = self.writes.lock();
        self.store_locked(grant)
    }

    /// Writes the signed file, then the in-memory slot; the caller holds `writes`.
    fn store_locked(&self, grant: NetworkGrant) -> Result<NetworkGrant, GrantError> {
        self.files.save(&grant.pack_id, &grant).map_err(|e| {
            tracing::error!(error = %e, "grant file write failed");
            GrantError::Storage
        })?;
        self.slots
            .write()
            .insert(grant.pack_id.clone(), Slot::Valid(grant.clone()));
        Ok(grant)
    }

    /// Every grant.
    pub fn list(&self) -> Vec<GrantInfo> {
        let slots = self.slots.read().clone();
        slots
            .into_iter()
            .map(|(id, slot)| self.describe(&id, slot))
            .collect()
    }

    fn describe(&self, pack_id: &str, slot: Slot) -> GrantInfo {
        let pack_state = self.view.pack_state(pack_id);
        let (state, grant) = match slot {
            Slot::Tampered => ("tampered", None),
            Slot::Valid(g) if !g.enabled => ("revoked", Some(g)),
            Slot::Valid(g) if pack_state != Some(PackState::Approved) => ("suspended", Some(g)),
            Slot::Valid(g) => ("active", Some(g)),
        };
        GrantInfo {
            pack_id: pack_id.to_string(),
            state,
            pack_state,
            grant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;
    use std::path::Path;

    fn policy(dir: &Path, approved: &[&str]) -> (NetworkPolicy, Vec<String>) {
        let view = Arc::new(KernelView::default());
        view.publish_states(
            approved
                .iter()
                .map(|p| (p.to_string(), PackState::Approved))
                .collect::<HashMap<_, _>>(),
        );
        NetworkPolicy::load(dir.to_path_buf(), SigningKey::from_bytes(&[7; 32]), view)
    }

    #[test]
    fn grants_survive_restart_and_tampering_denies() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = policy(d.path(), &["a"]);
        p.grant("a", &["api.example.com".into()], &[443], "n")
            .unwrap();
        assert!(p.check("a", "api.example.com", 443).is_ok());
        assert!(p.check("a", "api.example.com", 80).is_err());

        let (p2, tampered) = policy(d.path(), &["a"]);
        assert!(tampered.is_empty());
        assert!(
            p2.check("a", "api.example.com", 443).is_ok(),
            "survives restart"
        );

        // Widen the file by hand: the signature no longer matches.
        let file = d.path().join("a.json");
        let text = fs::read_to_string(&file).unwrap();
        fs::write(&file, text.replace("api.example.com", "*")).unwrap();
        let (p3, tampered) = policy(d.path(), &["a"]);
        assert_eq!(tampered, vec!["a".to_string()]);
        let denial = p3.check("a", "anything.net", 443).unwrap_err();
        assert!(denial.tampered && denial.reason.contains("signature"));
        assert_eq!(p3.list()[0].state, "tampered");
        // Revoking a tampered grant writes a valid, disabled one.
        p3.revoke("a", "tampered").unwrap();
        assert!(!p3.check("a", "api.example.com", 443).unwrap_err().tampered);
    }

    /// Hardening defect 13: `revoke` read the grant outside the writes lock, so a revoke racing a
    /// grant could write the *previous* lists back, disabled, over the grant acknowledged a moment
    /// before. Each round races one grant of new lists against one revoke; whichever is stored
    /// last, a revoked result must carry the lists of the grant it followed. Seeded by the round.
    #[test]
    fn a_revoke_racing_a_grant_never_writes_older_lists() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = policy(d.path(), &["a"]);
        let p = Arc::new(p);
        p.grant("a", &["g0.example.com".into()], &[443], "")
            .unwrap();
        for round in 1..=150 {
            let domain = format!("g{round}.example.com");
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let granter = {
                let (p, b, domain) = (Arc::clone(&p), Arc::clone(&barrier), domain.clone());
                std::thread::spawn(move || {
                    b.wait();
                    p.grant("a", &[domain], &[443], "").unwrap();
                })
            };
            let revoker = {
                let (p, b) = (Arc::clone(&p), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    b.wait();
                    p.revoke("a", "race").unwrap();
                })
            };
            granter.join().unwrap();
            revoker.join().unwrap();
            let info = p.list().pop().unwrap();
            let g = info.grant.unwrap();
            if !g.enabled {
                assert_eq!(
                    g.allowed_domains,
                    vec![domain.clone()],
                    "round {round}: the revoke wrote lists older than the acknowledged grant"
                );
            }
            // The file on disk says the same as memory.
            let (reloaded, _) = policy(d.path(), &["a"]);
            assert_eq!(reloaded.list().pop().unwrap().grant.unwrap(), g);
        }
    }

    /// Hardening defect 14: each listed object carried `pack_id` twice (once flattened from the
    /// grant), which strict JSON readers reject.
    #[test]
    fn a_listed_grant_names_its_pack_once() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = policy(d.path(), &["a"]);
        p.grant("a", &["api.example.com".into()], &[443], "n")
            .unwrap();
        let text = serde_json::to_string(&p.list()).unwrap();
        assert_eq!(text.matches("\"pack_id\"").count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[0]["pack_id"], "a");
        assert_eq!(v[0]["state"], "active");
        assert_eq!(v[0]["allowed_domains"][0], "api.example.com");
        assert_eq!(v[0]["enabled"], true);
    }

    #[test]
    fn a_grant_copied_to_another_pack_does_not_verify() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = policy(d.path(), &["a", "b"]);
        p.grant("a", &["*".into()], &[0], "").unwrap();
        fs::copy(d.path().join("a.json"), d.path().join("b.json")).unwrap();
        let (p2, tampered) = policy(d.path(), &["a", "b"]);
        assert_eq!(tampered, vec!["b".to_string()]);
        assert!(p2.check("b", "x.com", 1).is_err());
    }

    #[test]
    fn only_approved_packs_use_their_grant() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = policy(d.path(), &["a"]);
        p.grant("a", &["*".into()], &[0], "").unwrap();
        p.view
            .publish_states(HashMap::from([("a".to_string(), PackState::Modified)]));
        assert!(p
            .check("a", "x.com", 1)
            .unwrap_err()
            .reason
            .contains("modified"));
        assert_eq!(p.list()[0].state, "suspended");
        p.view
            .publish_states(HashMap::from([("a".to_string(), PackState::Approved)]));
        assert!(
            p.check("a", "x.com", 1).is_ok(),
            "restored without a new grant"
        );
        assert!(matches!(
            p.grant("ghost", &[], &[], ""),
            Err(GrantError::NoSuchPack(_))
        ));
        assert!(matches!(p.revoke("b", ""), Err(GrantError::NoGrant(_))));
        p.revoke("a", "done").unwrap();
        assert!(p
            .check("a", "x.com", 1)
            .unwrap_err()
            .reason
            .contains("revoked"));
        assert_eq!(p.list()[0].state, "revoked");
    }
}
