//! The built-in handlers (contract §7.1): `store.get|set|delete|list` and `secrets.get`, native
//! Rust on the caller's (blocking) thread, no process per call. The broker has already checked
//! the request's shape, the rate, trust and the grant; here each call's `args` are checked, then
//! the grant's effective `config` (`allowed_store_ids`, `max_value_bytes`, `allowed_keys`), then
//! the store or secret is touched.
//!
//! Attacks stopped here: a grant for one store used on another (`allowed_store_ids`); a value
//! larger than the grant allows filling the disk (`max_value_bytes`, default 1 MiB); keys that
//! climb out of a store (checked in [`super::stores`]); and probing which secrets exist —
//! `secrets.get` answers every failure (no such key, deleted, not allowed, malformed args) with
//! the one [`BuiltinOutcome::SecretDenied`], so a pack learns nothing from the difference. A
//! config a level intersection made malformed (the deny-safe `false`) denies, never widens.

use super::stores::{StoreError, DEFAULT_MAX_VALUE_BYTES};
use super::Capabilities;
use rumi_domain::capability::keys::valid_store_id;
use serde_json::{json, Map, Value};

/// The built-in permission ids.
pub const BUILTINS: &[&str] = &[
    "store.get",
    "store.set",
    "store.delete",
    "store.list",
    "secrets.get",
];

pub fn is_builtin(permission_id: &str) -> bool {
    BUILTINS.contains(&permission_id)
}

/// What a built-in answered.
pub enum BuiltinOutcome {
    /// The `output` object: `{success: true, ...}` or a logical failure `{success: false, error,
    /// error_type}` (`key_not_found`, `store_not_found`, `payload_too_large`, `validation_error`,
    /// `grant_denied`).
    Output(Value),
    /// `secrets.get` failed in any way: the broker answers the one identical denial.
    SecretDenied,
}

/// Runs built-in `permission_id` for `principal` with its effective grant `config`. Blocking
/// file I/O: the broker calls it off its actor's thread.
pub fn execute(
    caps: &Capabilities,
    principal: &str,
    permission_id: &str,
    args: &Map<String, Value>,
    config: &Value,
) -> BuiltinOutcome {
    let _ = principal; // the grant step used it; the built-ins act on the store or key named
    let result = match permission_id {
        "secrets.get" => return secrets_get(caps, args, config),
        "store.get" => store_get(caps, args, config),
        "store.set" => store_set(caps, args, config),
        "store.delete" => store_delete(caps, args, config),
        "store.list" => store_list(caps, args, config),
        other => Err(failure(
            "validation_error",
            format!("{other} is not a built-in permission"),
        )),
    };
    BuiltinOutcome::Output(result.unwrap_or_else(|e| e))
}

/// `{success: false, error, error_type}`.
fn failure(error_type: &str, error: impl Into<String>) -> Value {
    json!({"success": false, "error": error.into(), "error_type": error_type})
}

impl From<StoreError> for Value {
    fn from(e: StoreError) -> Value {
        failure(e.error_type(), e.to_string())
    }
}

type Answer = Result<Value, Value>;

/// A required string argument.
fn string_arg<'a>(
    args: &'a Map<String, Value>,
    name: &str,
    example: &str,
) -> Result<&'a str, Value> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(failure(
            "validation_error",
            format!("args.{name} must be a string (e.g. {example:?})"),
        )),
        None => Err(failure(
            "validation_error",
            format!("args.{name} is required (e.g. {example:?})"),
        )),
    }
}

/// `args.store_id`, well-formed and allowed by the grant's `allowed_store_ids` (empty or absent:
/// any store; anything but a list of strings: denied).
fn allowed_store<'a>(args: &'a Map<String, Value>, config: &Value) -> Result<&'a str, Value> {
    let store_id = string_arg(args, "store_id", "notes")?;
    if !valid_store_id(store_id) {
        return Err(failure(
            "validation_error",
            "args.store_id must be 1–64 characters of a–z, 0–9, '_', '.', '-', starting with a \
             letter or digit",
        ));
    }
    match config.get("allowed_store_ids") {
        None | Some(Value::Null) => Ok(store_id),
        Some(Value::Array(ids)) if ids.is_empty() => Ok(store_id),
        Some(Value::Array(ids)) if ids.iter().all(Value::is_string) => {
            if ids.iter().any(|i| i.as_str() == Some(store_id)) {
                Ok(store_id)
            } else {
                Err(failure(
                    "grant_denied",
                    format!("store {store_id:?} is not in this grant's allowed_store_ids"),
                ))
            }
        }
        Some(_) => Err(failure(
            "grant_denied",
            "this grant's allowed_store_ids is not a list of store ids",
        )),
    }
}

fn key_arg(args: &Map<String, Value>) -> Result<&str, Value> {
    string_arg(args, "key", "users/alice")
}

fn store_get(caps: &Capabilities, args: &Map<String, Value>, config: &Value) -> Answer {
    let key = key_arg(args)?;
    let store_id = allowed_store(args, config)?;
    let value = caps.stores.get(store_id, key)?;
    Ok(json!({"success": true, "value": value}))
}

fn store_set(caps: &Capabilities, args: &Map<String, Value>, config: &Value) -> Answer {
    let key = key_arg(args)?;
    let Some(value) = args.get("value") else {
        return Err(failure(
            "validation_error",
            "args.value is required (any JSON value)",
        ));
    };
    let store_id = allowed_store(args, config)?;
    let max = match config.get("max_value_bytes") {
        None | Some(Value::Null) => DEFAULT_MAX_VALUE_BYTES,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                return Err(failure(
                    "grant_denied",
                    "this grant's max_value_bytes is not a positive integer",
                ))
            }
        },
    };
    caps.stores.set(store_id, key, value, max)?;
    Ok(json!({"success": true}))
}

fn store_delete(caps: &Capabilities, args: &Map<String, Value>, config: &Value) -> Answer {
    let key = key_arg(args)?;
    let store_id = allowed_store(args, config)?;
    caps.stores.delete(store_id, key)?;
    Ok(json!({"success": true}))
}

fn store_list(caps: &Capabilities, args: &Map<String, Value>, config: &Value) -> Answer {
    let prefix = match args.get("prefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p.as_str()),
        Some(_) => {
            return Err(failure(
                "validation_error",
                "args.prefix must be a string (e.g. \"users/\")",
            ))
        }
    };
    let store_id = allowed_store(args, config)?;
    let (keys, truncated) = caps.stores.list_keys(store_id, prefix)?;
    Ok(json!({"success": true, "keys": keys, "truncated": truncated}))
}

/// `secrets.get {key}`: the value when `allowed_keys` names the key and it is set; any other
/// case is the one denial.
fn secrets_get(caps: &Capabilities, args: &Map<String, Value>, config: &Value) -> BuiltinOutcome {
    let Some(Value::String(key)) = args.get("key") else {
        return BuiltinOutcome::SecretDenied;
    };
    let allowed = config
        .get("allowed_keys")
        .and_then(Value::as_array)
        .is_some_and(|keys| keys.iter().any(|k| k.as_str() == Some(key)));
    if !allowed {
        return BuiltinOutcome::SecretDenied;
    }
    match caps.secrets.get(key) {
        // The plaintext is copied into the reply once; the SecretValue is zeroed when dropped.
        Some(v) => BuiltinOutcome::Output(json!({"success": true, "value": v.expose()})),
        None => BuiltinOutcome::SecretDenied,
    }
}

#[cfg(test)]
mod tests;
