//! Load errors of flow files, and the wording that makes them actionable: each names the file and
//! line, says what was wrong and what to write instead, and quotes the file only in clipped form.

use super::valid_flow_id;
use crate::yaml::YamlError;
use std::fmt;

/// A load error: the file, the line, what was wrong and how to fix it, and the `flow_id` the
/// file declares when it could be read (so a run of that id can say why it is missing).
///
/// Shown as `file:line: what was wrong — how to fix it`. Whole-file problems (a missing key, a
/// limit) point at line 1; only a file that could not be read at all has no line. The message is
/// bounded ([`MAX_MESSAGE_CHARS`]; values quoted from the file are clipped first), so a hostile
/// file cannot make the diagnostics large.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub struct FlowError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    pub flow_id: Option<String>,
}

/// Longest message of a [`FlowError`], in characters.
pub const MAX_MESSAGE_CHARS: usize = 600;
/// Longest value quoted from a flow file in a message, in characters.
pub const MAX_QUOTED_CHARS: usize = 64;
/// The names flows, phases, step ids and context keys may use, as a hint.
pub const NAME_HINT: &str = "use 1-128 of A-Z a-z 0-9 _ . : -";

impl FlowError {
    /// An error in `file` at `line`; the message is clipped to [`MAX_MESSAGE_CHARS`].
    pub fn new(file: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        FlowError {
            file: file.into(),
            line,
            message: clip(message.into(), MAX_MESSAGE_CHARS),
            flow_id: None,
        }
    }

    /// The same error, for the flow `flow_id` declares.
    pub fn of_flow(mut self, flow_id: Option<String>) -> Self {
        self.flow_id = flow_id;
        self
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// `s` quoted as in Rust's `{:?}`, at most [`MAX_QUOTED_CHARS`] of it (then `…` before the closing
/// quote): values from a
/// flow file go into messages, and a file may hold a megabyte-long "name".
pub fn quoted(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{s:?}"),
        Some((at, _)) => {
            let q = format!("{:?}", &s[..at]);
            format!("{}…\"", &q[..q.len() - 1])
        }
    }
}

fn clip(mut s: String, max: usize) -> String {
    if let Some((at, _)) = s.char_indices().nth(max) {
        s.truncate(at);
        s.push('…');
    }
    s
}

/// The `flow_id` a file declares on a top-level line of its own (`flow_id: x`), read without
/// parsing: a file whose YAML does not parse still says which flow it meant to be.
pub fn declared_flow_id(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("flow_id:"))?;
    let value = line["flow_id:".len()..].split(" #").next()?.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    valid_flow_id(value).then(|| value.to_string())
}

/// A YAML refusal as a flow error's message: what the parser or the limits said, and what to do.
pub fn yaml_message(e: &YamlError) -> String {
    let said = e.to_string();
    // serde names the private shapes it expected; say what they are in the file's terms.
    let said = said
        .replace("struct RawFlow", "a mapping of flow keys")
        .replace("struct RawStep", "a step mapping")
        .replace(
            "struct RawDefaults",
            "a mapping {fail_soft, on_missing_step}",
        );
    let hint = match e {
        YamlError::TooLarge { .. } => "split the flow into smaller ones",
        YamlError::TooManyAliases { .. } => "write the repeated values out",
        // Its own message says what to do.
        YamlError::TooDeep { .. } => return said,
        YamlError::Syntax { .. } if said.contains("unknown field") => {
            "fix its spelling or remove it (unknown keys are refused so a typo cannot change what runs)"
        }
        YamlError::Syntax { .. } if said.contains("unknown variant") => {
            "use one of the values listed"
        }
        YamlError::Syntax { .. } if said.starts_with("phases") => {
            "phases is a list of names, e.g. `phases: [main]`"
        }
        YamlError::Syntax { .. } if said.starts_with("steps") => {
            "steps is a list of mappings, e.g. `- {id: a, phase: main, type: set, input: {key: k, value: 1}}`"
        }
        YamlError::Syntax { .. } if said.contains("a mapping of flow keys") => {
            "a flow file is a mapping: `flow_id: <name>`, `phases: [main]`, `steps: [...]`"
        }
        YamlError::Syntax { .. } if said.starts_with("invalid type") => {
            "check the value's type at this line"
        }
        YamlError::Syntax { .. } if said.contains("control character") => {
            "remove it (or write it escaped inside a double-quoted string)"
        }
        YamlError::Syntax { .. } => {
            "check the YAML at this line (indentation, quotes, brackets, a `:` after each key)"
        }
    };
    // The parser quotes the file (a key can be a kilobyte long): clipped so the hint stays.
    format!("{} — {hint}", clip(said, MAX_MESSAGE_CHARS / 2))
}
