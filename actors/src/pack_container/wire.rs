//! What a pack's sandbox is sent (the call frame the block host reads) and the small text
//! helpers of its messages.

use rumi_domain::manifest::ManifestDiff;
use serde::Serialize;
use serde_json::Value;

/// One call as the block host reads it (serialized once, borrowing the message).
#[derive(Serialize)]
pub(super) struct CallRequest<'a> {
    pub(super) id: u64,
    pub(super) op: &'static str,
    pub(super) entry: &'static str,
    pub(super) file: &'a str,
    pub(super) input: &'a Value,
    pub(super) context: CallContext<'a>,
}

/// The JSON part of the block's `context` (the host adds `network_check` and `http_request`).
#[derive(Serialize)]
pub(super) struct CallContext<'a> {
    // A converter or a component setup gets nothing of a run (none for a setup; a converter
    // may be another pack's, called from any flow): only its terms or component, pack and ts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) flow_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) run_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) step_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) phase: Option<&'a str>,
    pub(super) ts: String,
    pub(super) owner_pack: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pack_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) inputs: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) component_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) from_term: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) to_term: Option<&'a str>,
}

pub(super) fn describe_diff(d: &ManifestDiff) -> String {
    let mut parts = Vec::new();
    let list = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if !d.added.is_empty() {
        parts.push(format!("added: {}", list(&d.added)));
    }
    if !d.removed.is_empty() {
        parts.push(format!("removed: {}", list(&d.removed)));
    }
    if !d.changed.is_empty() {
        parts.push(format!("changed: {}", list(&d.changed)));
    }
    parts.join("; ")
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
