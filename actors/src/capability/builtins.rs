//! The built-in handlers (contract §7.1). STUB: signatures fixed, bodies to be written.

use super::Capabilities;
use serde_json::{Map, Value};

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
    _caps: &Capabilities,
    _principal: &str,
    permission_id: &str,
    _args: &Map<String, Value>,
    _config: &Value,
) -> BuiltinOutcome {
    if permission_id == "secrets.get" {
        return BuiltinOutcome::SecretDenied;
    }
    BuiltinOutcome::Output(
        serde_json::json!({"success": false, "error": "not built yet", "error_type": "validation_error"}),
    )
}
