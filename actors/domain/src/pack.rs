//! Pack metadata (`ecosystem.json`) and load order (contract §2.1, §2.3). Read without running any
//! pack code.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Largest `ecosystem.json` we read.
pub const MAX_ECOSYSTEM_JSON_BYTES: usize = 256 * 1024;

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`. The id is also a directory name and a container name, so
/// it must never hold a path separator or `..`.
pub fn valid_pack_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// A pack's declared services.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connectivity {
    #[serde(default)]
    pub provides: Vec<String>,
    #[serde(default)]
    pub requires: Vec<String>,
}

/// The parsed `ecosystem.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackMeta {
    pub pack_id: String,
    pub pack_identity: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub pack_identity_vocabulary: Vec<String>,
    pub connectivity: Connectivity,
    pub load_order: Option<i64>,
}

/// Parses `ecosystem.json` and checks that `pack_id` equals the directory name.
pub fn parse_ecosystem_json(text: &str, dir_name: &str) -> Result<PackMeta, String> {
    if text.len() > MAX_ECOSYSTEM_JSON_BYTES {
        return Err(format!(
            "ecosystem.json is larger than {MAX_ECOSYSTEM_JSON_BYTES} bytes"
        ));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("ecosystem.json is not valid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("ecosystem.json must be a JSON object")?;
    let pack_id = obj
        .get("pack_id")
        .and_then(Value::as_str)
        .ok_or("ecosystem.json: pack_id (string) is required")?;
    if !valid_pack_id(pack_id) {
        return Err(format!(
            "ecosystem.json: pack_id {pack_id:?} is invalid (^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$)"
        ));
    }
    if pack_id != dir_name {
        return Err(format!(
            "ecosystem.json: pack_id {pack_id:?} must equal its directory name {dir_name:?}"
        ));
    }
    let pack_identity = obj
        .get("pack_identity")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or("ecosystem.json: pack_identity (non-empty string) is required")?;
    let string = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let vocabulary = match obj.get("pack_identity_vocabulary") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => return Err("ecosystem.json: pack_identity_vocabulary must be a list".into()),
    };
    let connectivity = match obj.get("connectivity") {
        None | Some(Value::Null) => Connectivity::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            format!("ecosystem.json: connectivity must be {{provides: [..], requires: [..]}}: {e}")
        })?,
    };
    let load_order = match obj.get("load_order") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or("ecosystem.json: load_order must be an integer")?,
        ),
    };
    Ok(PackMeta {
        pack_id: pack_id.to_string(),
        pack_identity: pack_identity.to_string(),
        version: string("version"),
        description: string("description"),
        pack_identity_vocabulary: vocabulary,
        connectivity,
        load_order,
    })
}

/// The load order and what was wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadOrder {
    pub order: Vec<String>,
    /// Human-readable problems (cycles, unmet requires); the packs still load.
    pub problems: Vec<String>,
}

/// Orders packs: those with `load_order` first (ascending, then id), then a topological order in
/// which a provider of a service comes before its requirers, ties broken by id. A cycle or an
/// unmet `requires` is reported and the affected packs load in id order (fail-soft).
pub fn load_order(packs: &[PackMeta]) -> LoadOrder {
    let mut out = LoadOrder::default();
    let mut explicit: Vec<&PackMeta> = packs.iter().filter(|p| p.load_order.is_some()).collect();
    explicit.sort_by(|a, b| {
        a.load_order
            .cmp(&b.load_order)
            .then_with(|| a.pack_id.cmp(&b.pack_id))
    });
    out.order.extend(explicit.iter().map(|p| p.pack_id.clone()));

    let mut providers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in packs {
        for s in &p.connectivity.provides {
            providers
                .entry(s.as_str())
                .or_default()
                .insert(p.pack_id.as_str());
        }
    }
    let rest: Vec<&PackMeta> = packs.iter().filter(|p| p.load_order.is_none()).collect();
    // deps[p] = packs (among `rest`) that must come before p.
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in &rest {
        let entry = deps.entry(p.pack_id.as_str()).or_default();
        for s in &p.connectivity.requires {
            match providers.get(s.as_str()) {
                None => out.problems.push(format!(
                    "pack {:?} requires service {s:?}, which no pack provides",
                    p.pack_id
                )),
                Some(by) => {
                    for provider in by {
                        if *provider != p.pack_id && rest.iter().any(|r| r.pack_id == *provider) {
                            entry.insert(provider);
                        }
                    }
                }
            }
        }
    }
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Option<&str> = deps
            .iter()
            .filter(|(id, _)| !placed.contains(*id))
            .find(|(_, before)| before.iter().all(|b| placed.contains(b)))
            .map(|(id, _)| *id);
        match ready {
            Some(id) => {
                placed.insert(id);
                out.order.push(id.to_string());
            }
            None => break,
        }
    }
    let stuck: Vec<&str> = deps
        .keys()
        .copied()
        .filter(|id| !placed.contains(id))
        .collect();
    if !stuck.is_empty() {
        out.problems.push(format!(
            "dependency cycle among packs {stuck:?}; they load in id order"
        ));
        out.order.extend(stuck.into_iter().map(str::to_string));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, provides: &[&str], requires: &[&str], order: Option<i64>) -> PackMeta {
        PackMeta {
            pack_id: id.into(),
            pack_identity: format!("github:x/{id}"),
            version: None,
            description: None,
            pack_identity_vocabulary: vec![],
            connectivity: Connectivity {
                provides: provides.iter().map(|s| s.to_string()).collect(),
                requires: requires.iter().map(|s| s.to_string()).collect(),
            },
            load_order: order,
        }
    }

    #[test]
    fn pack_ids() {
        for ok in ["a", "my_pack", "A-1", "parent__child", &"x".repeat(64)] {
            assert!(valid_pack_id(ok), "{ok}");
        }
        for bad in [
            "",
            "_a",
            "-a",
            "a/b",
            "..",
            "a.b",
            "a b",
            &"x".repeat(65),
            "é",
        ] {
            assert!(!valid_pack_id(bad), "{bad}");
        }
    }

    #[test]
    fn ecosystem_json() {
        let m = parse_ecosystem_json(
            r#"{"pack_id":"p","pack_identity":"github:a/p","version":"1.0.0","extra":1}"#,
            "p",
        )
        .unwrap();
        assert_eq!(m.version.as_deref(), Some("1.0.0"));
        for (bad, want) in [
            ("[]", "object"),
            ("{", "not valid JSON"),
            (r#"{"pack_identity":"x"}"#, "pack_id"),
            (r#"{"pack_id":"q","pack_identity":"x"}"#, "directory name"),
            (r#"{"pack_id":"p"}"#, "pack_identity"),
            (
                r#"{"pack_id":"p","pack_identity":"x","load_order":"1"}"#,
                "load_order",
            ),
        ] {
            let e = parse_ecosystem_json(bad, "p").unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn order_explicit_then_topological() {
        let packs = vec![
            meta("client", &[], &["ai.client"], None),
            meta("ai", &["ai.client"], &[], None),
            meta("first", &[], &[], Some(1)),
            meta("zero", &[], &[], Some(0)),
            meta("alone", &[], &[], None),
        ];
        let o = load_order(&packs);
        assert_eq!(o.order, ["zero", "first", "ai", "alone", "client"]);
        assert!(o.problems.is_empty());
    }

    #[test]
    fn cycles_and_unmet_are_reported() {
        let packs = vec![
            meta("a", &["sa"], &["sb"], None),
            meta("b", &["sb"], &["sa"], None),
            meta("c", &[], &["missing"], None),
        ];
        let o = load_order(&packs);
        assert_eq!(o.order, ["c", "a", "b"]);
        assert_eq!(o.problems.len(), 2, "{:?}", o.problems);
    }
}
