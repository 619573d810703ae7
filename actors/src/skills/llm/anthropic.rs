//! The Anthropic Messages wire (`POST <base_url>/v1/messages`, headers `x-api-key` and
//! `anthropic-version: 2023-06-01`).
//!
//! The API wants roles to alternate, starting with the user, so consecutive user-side items (tool
//! results, then perhaps a user text) are merged into ONE user message of content blocks. It has no
//! `seed` field, so none is sent (§15). Input usage counts cached prompt tokens too
//! (`cache_creation_input_tokens`, `cache_read_input_tokens`), since the budget pays for them.

use super::{
    check_tool_calls, non_empty, ChatMessage, ChatRequest, ChatResponse, LlmError, ToolCall, Usage,
};
use serde_json::{json, Value};

/// The request body of one turn.
pub fn request_body(model: &str, req: &ChatRequest) -> Value {
    // (role, content blocks), merged while the role repeats.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, block: Value| match turns.last_mut() {
        Some((r, blocks)) if *r == role => blocks.push(block),
        _ => turns.push((role, vec![block])),
    };
    for m in &req.messages {
        match m {
            ChatMessage::User(text) => push("user", json!({"type": "text", "text": text})),
            ChatMessage::Assistant { text, tool_calls } => {
                if let Some(t) = text.as_deref().filter(|t| !t.is_empty()) {
                    push("assistant", json!({"type": "text", "text": t}));
                }
                for c in tool_calls {
                    // The API wants an object; unparsable arguments (from another provider's
                    // history) go as an empty one.
                    let input = if c.arguments.is_object() {
                        c.arguments.clone()
                    } else {
                        json!({})
                    };
                    push(
                        "assistant",
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                if text.as_deref().is_none_or(str::is_empty) && tool_calls.is_empty() {
                    // An empty assistant turn is refused by the API; it keeps its place.
                    push("assistant", json!({"type": "text", "text": "(no reply)"}));
                }
            }
            ChatMessage::ToolResult {
                call_id, content, ..
            } => push(
                "user",
                json!({"type": "tool_result", "tool_use_id": call_id, "content": content}),
            ),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, blocks)| {
            // A lone user text goes as a plain string, the common shape.
            if role == "user" && blocks.len() == 1 && blocks[0]["type"] == "text" {
                json!({"role": role, "content": blocks[0]["text"]})
            } else {
                json!({"role": role, "content": blocks})
            }
        })
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": req.max_tokens,
        "system": req.system,
        "messages": messages,
        "temperature": 0,
    });
    if !req.tools.is_empty() {
        body["tools"] = Value::Array(
            req.tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                .collect(),
        );
    }
    body
}

/// Reads a 2xx reply. `request_bytes` feeds the usage estimate when the server reports none.
pub fn parse_reply(reply: &[u8], request_bytes: usize) -> Result<ChatResponse, LlmError> {
    let v: Value = serde_json::from_slice(reply).map_err(|e| {
        LlmError::Protocol(format!(
            "the reply is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::Protocol("the reply has no \"content\" array".into()))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let uses = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
        .count();
    check_tool_calls(uses)?;
    for (i, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
            Some("tool_use") => {
                let id = b.get("id").and_then(Value::as_str).ok_or_else(|| {
                    LlmError::Protocol(format!("content block {i} (tool_use) has no id"))
                })?;
                let name = b.get("name").and_then(Value::as_str).ok_or_else(|| {
                    LlmError::Protocol(format!("content block {i} (tool_use) has no name"))
                })?;
                let arguments = match b.get("input") {
                    Some(o @ Value::Object(_)) => o.clone(),
                    None | Some(Value::Null) => Value::Object(Default::default()),
                    Some(other) => Value::String(super::cap_chars(
                        &other.to_string(),
                        super::MAX_RAW_ARGUMENTS,
                    )),
                };
                tool_calls.push(ToolCall {
                    id: super::cap_chars(id, 256),
                    name: super::cap_chars(name, 256),
                    arguments,
                });
            }
            // thinking, redacted_thinking…: not part of the conversation the runtime keeps.
            _ => {}
        }
    }
    let reported = v.get("usage").and_then(|u| {
        let cached = ["cache_creation_input_tokens", "cache_read_input_tokens"]
            .iter()
            .filter_map(|k| u.get(*k).and_then(Value::as_u64))
            .sum::<u64>();
        Some(Usage {
            input_tokens: u.get("input_tokens")?.as_u64()?.saturating_add(cached),
            output_tokens: u.get("output_tokens")?.as_u64()?,
        })
    });
    Ok(ChatResponse {
        text: non_empty(text),
        tool_calls,
        usage: reported.unwrap_or_else(|| Usage::estimate(request_bytes, reply.len())),
        usage_estimated: reported.is_none(),
    })
}
