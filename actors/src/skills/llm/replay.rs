//! The replay provider: a recorded exchange played back turn by turn, for demos and for runs that
//! must not reach a model.
//!
//! The file (at most 4 MiB, named by `RUMI_LLM_REPLAY`) is JSON:
//!
//! ```json
//! {
//!   "provider": "replay",
//!   "skill_id": "report-writer",
//!   "note": "what this recording shows",
//!   "turns": [
//!     {"tool_calls": [{"id": "call_0_0", "name": "read_skill_md", "arguments": {}}],
//!      "usage": {"input_tokens": 812, "output_tokens": 20}},
//!     {"text": "All outputs validated.", "tool_calls": []}
//!   ]
//! }
//! ```
//!
//! Each [`LlmClient::chat`](super::LlmClient::chat) returns the next turn, whatever the request
//! (tool-less requests such as the micro-reflect consume a turn too); past the last turn it fails
//! with [`LlmError::ReplayExhausted`]. `provider`, `skill_id` and `note` are informative (`provider`,
//! when present, must be `"replay"`); in a turn, `text`, `tool_calls` and `usage` are optional, at
//! most 32 tool calls, `arguments` defaults to `{}`. A turn without `usage` is charged the local
//! estimate (bytes/4 of the request as the OpenAI wire would send it, and of the turn's JSON).

use super::{check_tool_calls, ChatRequest, ChatResponse, LlmError, ToolCall, Usage};
use parking_lot::Mutex;
use serde::Deserialize;
use std::io::Read;
use std::path::Path;

/// Largest replay file read.
pub const MAX_REPLAY_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayFile {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    skill_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    turns: Vec<RecordedTurn>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RecordedTurn {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_calls: Vec<RecordedCall>,
    #[serde(default)]
    usage: Option<RecordedUsage>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RecordedCall {
    id: String,
    name: String,
    #[serde(default = "empty_object")]
    arguments: serde_json::Value,
}

#[derive(Deserialize, serde::Serialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RecordedUsage {
    input_tokens: u64,
    output_tokens: u64,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A loaded recording and the position of the next turn.
pub struct Replay {
    turns: Vec<RecordedTurn>,
    next: Mutex<usize>,
}

impl Replay {
    /// Reads and checks the file. Errors name the problem, not the host path.
    pub fn load(path: &Path) -> Result<Replay, String> {
        let file = std::fs::File::open(path).map_err(|e| {
            format!(
                "cannot open the replay file named by RUMI_LLM_REPLAY ({})",
                e.kind()
            )
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_REPLAY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the replay file ({})", e.kind()))?;
        if bytes.len() as u64 > MAX_REPLAY_BYTES {
            return Err("the replay file is larger than 4 MiB".into());
        }
        Replay::parse(&bytes)
    }

    /// Parses a recording from its JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Replay, String> {
        let file: ReplayFile = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "the replay file is not a recording {{provider, skill_id, note, turns: [{{text, \
                 tool_calls: [{{id, name, arguments}}], usage}}]}}: {e}"
            )
        })?;
        if let Some(p) = &file.provider {
            if p != "replay" {
                return Err("the replay file's \"provider\" must be \"replay\"".into());
            }
        }
        for (i, t) in file.turns.iter().enumerate() {
            check_tool_calls(t.tool_calls.len()).map_err(|e| format!("replay turn {i}: {e}"))?;
        }
        Ok(Replay {
            turns: file.turns,
            next: Mutex::new(0),
        })
    }

    /// The next recorded turn.
    pub fn next(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let turn = {
            let mut next = self.next.lock();
            let Some(turn) = self.turns.get(*next) else {
                return Err(LlmError::ReplayExhausted);
            };
            *next += 1;
            turn
        };
        let usage = match turn.usage {
            Some(u) => Usage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
            },
            None => {
                let request = super::openai::request_body("replay", req).to_string().len();
                let reply = serde_json::to_string(turn).map(|s| s.len()).unwrap_or(0);
                Usage::estimate(request, reply)
            }
        };
        Ok(ChatResponse {
            text: turn.text.clone().and_then(super::non_empty),
            tool_calls: turn
                .tool_calls
                .iter()
                .map(|c| ToolCall {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect(),
            usage,
            usage_estimated: turn.usage.is_none(),
        })
    }
}
