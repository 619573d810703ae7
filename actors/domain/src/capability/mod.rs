//! Capabilities (contract §7): the wire shapes of a pack's capability socket and the pure rules
//! behind the built-in handlers and the grants. The runtime crate's `capability` module does the
//! I/O (the socket, the signed grant files, the secret and store files, handler workers).
//!
//! * [`parse_request`] — one request frame: `{permission_id, args, timeout_seconds, request_id}`;
//!   anything else in the frame (a `principal_id`, an `owner_pack`) is ignored: the socket alone
//!   says who is calling.
//! * [`keys`] — store ids, store keys, secret keys, permission ids.
//! * [`candidate`] — third-party handler candidates: handler.json, the key, the trust workflow.
//! * [`grant`] — hierarchical principals (`a__b`) and the intersection of their grant configs.

pub mod candidate;
pub mod grant;
pub mod keys;
pub mod review;

use serde::Serialize;
use serde_json::{Map, Value};

/// Largest request frame a pack may send (4 MiB).
pub const MAX_REQUEST_FRAME: usize = 4 * 1024 * 1024;
/// Largest and default `timeout_seconds` of a call.
pub const MAX_TIMEOUT_SECS: f64 = 120.0;
pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;
/// Longest `request_id` kept (longer ones are cut; it is only echoed into the audit).
pub const MAX_REQUEST_ID: usize = 128;

/// The one answer of every `secrets.get` failure (contract §7.1, §16 "Capability calls").
pub const SECRET_DENIED: &str = "Access denied or secret not found";

/// A well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct CapabilityRequest {
    pub permission_id: String,
    pub args: Map<String, Value>,
    pub timeout_seconds: f64,
    pub request_id: String,
}

/// Why a frame is not a request (answered as `validation_error` / `protocol_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error_type: &'static str,
    pub reason: String,
}

fn refuse(error_type: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        error_type,
        reason: reason.into(),
    }
}

/// Parses and checks one request frame (check order step 1: the request's shape).
pub fn parse_request(frame: &[u8]) -> Result<CapabilityRequest, Refusal> {
    // serde_json stops at 128 levels of nesting with an error (no stack overflow).
    let value: Value = serde_json::from_slice(frame)
        .map_err(|e| refuse("protocol_error", format!("the frame is not JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(refuse("protocol_error", "the frame must be a JSON object"));
    };
    let permission_id = match obj.remove("permission_id") {
        Some(Value::String(p)) if keys::valid_permission_id(&p) => p,
        Some(Value::String(_)) => {
            return Err(refuse(
                "validation_error",
                "permission_id must be 1–128 characters of letters, digits, '.', '_', '-' (e.g. \"store.get\")",
            ))
        }
        _ => return Err(refuse("validation_error", "permission_id (a string) is required")),
    };
    let args = match obj.remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(refuse("validation_error", "args must be an object")),
    };
    let timeout_seconds = match obj.remove("timeout_seconds") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_SECS,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if t > 0.0 && t <= MAX_TIMEOUT_SECS => t,
            _ => {
                return Err(refuse(
                    "validation_error",
                    format!("timeout_seconds must be in (0, {MAX_TIMEOUT_SECS}]"),
                ))
            }
        },
        Some(_) => {
            return Err(refuse(
                "validation_error",
                "timeout_seconds must be a number",
            ))
        }
    };
    let request_id = match obj.remove("request_id") {
        Some(Value::String(mut s)) => {
            if s.len() > MAX_REQUEST_ID {
                let mut end = MAX_REQUEST_ID;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
            s
        }
        _ => String::new(),
    };
    Ok(CapabilityRequest {
        permission_id,
        args,
        timeout_seconds,
        request_id,
    })
}

/// The reply frame: `{success, output, error, error_type, latency_ms}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapabilityResponse {
    pub success: bool,
    pub output: Value,
    pub error: Option<String>,
    pub error_type: Option<String>,
    pub latency_ms: f64,
}

impl CapabilityResponse {
    /// A call that ran: `success` mirrors the output's own `success` when it has one.
    pub fn output(output: Value) -> Self {
        let (success, error, error_type) = match &output {
            Value::Object(o) if o.get("success") == Some(&Value::Bool(false)) => (
                false,
                o.get("error").and_then(Value::as_str).map(String::from),
                o.get("error_type")
                    .and_then(Value::as_str)
                    .map(String::from),
            ),
            _ => (true, None, None),
        };
        CapabilityResponse {
            success,
            output,
            error,
            error_type,
            latency_ms: 0.0,
        }
    }

    /// A refusal before or instead of the handler: `Permission denied` and its `error_type` for
    /// the checks of §7, the reason for shape and protocol errors.
    pub fn failure(error_type: &str, error: impl Into<String>) -> Self {
        CapabilityResponse {
            success: false,
            output: Value::Null,
            error: Some(error.into()),
            error_type: Some(error_type.to_string()),
            latency_ms: 0.0,
        }
    }

    /// The identical answer of every `secrets.get` failure.
    pub fn secret_denied() -> Self {
        let output = serde_json::json!({
            "success": false, "error": SECRET_DENIED, "error_type": "access_denied",
        });
        CapabilityResponse {
            success: false,
            output,
            error: Some(SECRET_DENIED.into()),
            error_type: Some("access_denied".into()),
            latency_ms: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_request_is_parsed_and_a_principal_in_it_is_ignored() {
        let r = parse_request(&frame(json!({
            "permission_id": "store.get", "args": {"store_id": "s", "key": "k"},
            "request_id": "r1", "principal_id": "other_pack", "owner_pack": "other_pack"
        })))
        .unwrap();
        assert_eq!(r.permission_id, "store.get");
        assert_eq!(r.args["key"], json!("k"));
        assert_eq!(r.timeout_seconds, DEFAULT_TIMEOUT_SECS);
        assert!(!r.args.contains_key("principal_id"));
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        for (bad, kind) in [
            (b"not json".to_vec(), "protocol_error"),
            (frame(json!([1, 2])), "protocol_error"),
            (frame(json!({"args": {}})), "validation_error"),
            (frame(json!({"permission_id": "../x"})), "validation_error"),
            (
                frame(json!({"permission_id": "a", "args": [1]})),
                "validation_error",
            ),
            (
                frame(json!({"permission_id": "a", "timeout_seconds": 0})),
                "validation_error",
            ),
            (
                frame(json!({"permission_id": "a", "timeout_seconds": 121})),
                "validation_error",
            ),
        ] {
            assert_eq!(parse_request(&bad).unwrap_err().error_type, kind);
        }
        let deep = format!(
            "{{\"permission_id\":\"a\",\"args\":{{\"x\":{}{}}}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert!(
            parse_request(deep.as_bytes()).is_err(),
            "deep nesting is refused, not a stack overflow"
        );
    }

    #[test]
    fn the_secret_denial_is_one_shape() {
        let v = serde_json::to_value(CapabilityResponse::secret_denied()).unwrap();
        assert_eq!(v["output"]["error"], json!(SECRET_DENIED));
        assert_eq!(v["error"], json!(SECRET_DENIED));
        assert_eq!(v["error_type"], json!("access_denied"));
        assert_eq!(v["success"], json!(false));
    }
}
