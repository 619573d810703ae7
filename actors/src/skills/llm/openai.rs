//! The OpenAI-compatible Chat Completions wire (`POST <base_url>/chat/completions`, base ending in
//! `/v1`): OpenAI itself and the local servers that copy it (vLLM, llama.cpp, Ollama, LM Studio…).
//!
//! Tool-call arguments travel as a JSON *string* both ways; some compatible servers send an object
//! instead, which is accepted as is. A call without an id (some local servers) gets `call_<i>`, so
//! its result can still be matched on the next turn.

use super::{
    cap_chars, check_tool_calls, non_empty, parse_arguments, ChatMessage, ChatRequest,
    ChatResponse, LlmError, ToolCall, Usage,
};
use serde_json::{json, Value};

/// The request body of one turn.
pub fn request_body(model: &str, req: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    messages.push(json!({"role": "system", "content": req.system}));
    for m in &req.messages {
        messages.push(match m {
            ChatMessage::User(text) => json!({"role": "user", "content": text}),
            ChatMessage::Assistant { text, tool_calls } => {
                // OpenAI refuses an assistant message with neither content nor tool calls.
                let content = match text {
                    None if tool_calls.is_empty() => Some(""),
                    t => t.as_deref(),
                };
                let mut msg = json!({"role": "assistant", "content": content});
                if !tool_calls.is_empty() {
                    let calls: Vec<Value> = tool_calls
                        .iter()
                        .map(|c| {
                            // Unparsable arguments were kept as the raw string: send them back as
                            // they came, so the history is what the model wrote.
                            let arguments = match &c.arguments {
                                Value::String(raw) => raw.clone(),
                                other => other.to_string(),
                            };
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": arguments}})
                        })
                        .collect();
                    msg["tool_calls"] = Value::Array(calls);
                }
                msg
            }
            ChatMessage::ToolResult {
                call_id, content, ..
            } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
        });
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": req.max_tokens,
    });
    if !req.tools.is_empty() {
        body["tools"] = Value::Array(
            req.tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect(),
        );
    }
    if let Some(seed) = req.seed {
        body["seed"] = json!(seed);
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
    let message = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("message"))
        .ok_or_else(|| LlmError::Protocol("the reply has no choices[0].message".into()))?;
    let text = match message.get("content") {
        Some(Value::String(s)) => non_empty(s.clone()),
        // Some servers answer content parts [{type: "text", text}].
        Some(Value::Array(parts)) => non_empty(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        check_tool_calls(calls.len())?;
        for (i, c) in calls.iter().enumerate() {
            let function = c.get("function").ok_or_else(|| {
                LlmError::Protocol(format!("tool call {i} has no \"function\" object"))
            })?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| LlmError::Protocol(format!("tool call {i} has no function name")))?;
            let arguments = match function.get("arguments") {
                Some(Value::String(raw)) => parse_arguments(raw),
                Some(v @ Value::Object(_)) => v.clone(),
                None | Some(Value::Null) => Value::Object(Default::default()),
                Some(other) => {
                    Value::String(cap_chars(&other.to_string(), super::MAX_RAW_ARGUMENTS))
                }
            };
            let id = match c.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => format!("call_{i}"),
            };
            tool_calls.push(ToolCall {
                id: cap_chars(&id, 256),
                name: cap_chars(name, 256),
                arguments,
            });
        }
    }
    let reported = v.get("usage").and_then(|u| {
        Some(Usage {
            input_tokens: u.get("prompt_tokens")?.as_u64()?,
            output_tokens: u.get("completion_tokens")?.as_u64()?,
        })
    });
    Ok(ChatResponse {
        text,
        tool_calls,
        usage: reported.unwrap_or_else(|| Usage::estimate(request_bytes, reply.len())),
        usage_estimated: reported.is_none(),
    })
}
