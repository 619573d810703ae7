//! Pack metadata (`ecosystem.json`) and load order (contract §2.1, §2.3). Read without running any
//! pack code.

mod order;

pub use order::{load_order, LoadOrder, LoadProblem, LoadProblemKind};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest `ecosystem.json` we read.
pub const MAX_ECOSYSTEM_JSON_BYTES: usize = 256 * 1024;

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`. The id is also a directory name and a container name, so
/// it must never hold a path separator or `..`. `packs` is reserved: `ecosystem/packs/` is the
/// legacy directory holding other packs, never a pack of its own.
pub fn valid_pack_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    id != RESERVED_PACK_ID
        && !bytes.is_empty()
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

/// The one id matching the pattern that no pack may have (see [`valid_pack_id`]).
pub const RESERVED_PACK_ID: &str = "packs";

/// Most services a pack may list under `provides` or under `requires`.
pub const MAX_SERVICES: usize = 64;
/// Longest service name.
pub const MAX_SERVICE_CHARS: usize = 128;

fn check_services(c: &Connectivity) -> Result<(), String> {
    for (key, list) in [("provides", &c.provides), ("requires", &c.requires)] {
        if list.len() > MAX_SERVICES {
            return Err(format!(
                "ecosystem.json: connectivity.{key} lists {} services; at most {MAX_SERVICES} are allowed",
                list.len()
            ));
        }
        if let Some(s) = list
            .iter()
            .find(|s| s.trim().is_empty() || s.chars().count() > MAX_SERVICE_CHARS)
        {
            return Err(format!(
                "ecosystem.json: connectivity.{key} holds {:?}: a service name must be 1 to {MAX_SERVICE_CHARS} characters",
                s.chars().take(40).collect::<String>()
            ));
        }
    }
    Ok(())
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
    check_services(&connectivity)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
            "packs",
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
            (
                r#"{"pack_id":"p","pack_identity":"x","connectivity":{"requires":[""]}}"#,
                "connectivity.requires",
            ),
        ] {
            let e = parse_ecosystem_json(bad, "p").unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
