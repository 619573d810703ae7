//! The model-facing tool list (contract §14, §15): exact names, descriptions and argument
//! schemas. Names match `^[A-Za-z0-9_-]{1,64}$`, the rule every provider accepts, which is why
//! the dotted names of §4–§5 (`blackboard.get`) are written in snake_case here.

use serde_json::{json, Value};

/// One tool as offered to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// A JSON Schema object for the arguments.
    pub parameters: Value,
}

impl ToolSpec {
    /// The OpenAI Chat Completions shape: `{type: "function", function: {name, description, parameters}}`.
    pub fn openai(&self) -> Value {
        json!({"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}})
    }

    /// The Anthropic Messages shape: `{name, description, input_schema}`.
    pub fn anthropic(&self) -> Value {
        json!({"name": self.name, "description": self.description, "input_schema": self.parameters})
    }
}

/// `^[A-Za-z0-9_-]{1,64}$`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The brief's name for [`valid_tool_name`].
pub const TOOL_NAME_PATTERN_OK: fn(&str) -> bool = valid_tool_name;

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn task_property() -> Value {
    json!({"type": "string", "description": "Delegated mode: the job in words, instead of exact arguments; a sub agent carries it out with its own tools."})
}

fn dependencies_property() -> Value {
    json!({"type": "object", "description": "Packages to install before running.",
        "properties": {"pip": {"type": "array", "items": {"type": "string"}},
                       "npm": {"type": "array", "items": {"type": "string"}}},
        "additionalProperties": false})
}

fn script_properties() -> Value {
    json!({
        "path": {"type": "string", "description": "A .py, .sh or .js script in the skill or under build/."},
        "argv": {"type": "array", "items": {"type": "string"}, "description": "Command-line arguments; the working directory is the skill root, outputs go under build/."},
        "args": {"type": "object", "description": "JSON passed to the script on stdin."},
        "dependencies": dependencies_property(),
        "timeout_seconds": {"type": "integer", "minimum": 1, "description": "At most the run's script_timeout_s."}
    })
}

fn write_properties() -> Value {
    json!({
        "path": {"type": "string", "description": "Relative to build/, e.g. notes/outline.md."},
        "content": {"type": "string"},
        "encoding": {"type": "string", "enum": ["text", "base64"], "description": "How content is encoded (default text)."}
    })
}

fn blackboard_get() -> ToolSpec {
    ToolSpec {
        name: "blackboard_get",
        description: "Read a value the run stored on its blackboard.",
        parameters: object(json!({"key": {"type": "string"}}), &["key"]),
    }
}

fn blackboard_put() -> ToolSpec {
    ToolSpec {
        name: "blackboard_put",
        description: "Store a value on the run's blackboard for later steps.",
        parameters: object(
            json!({"key": {"type": "string"}, "value": {}}),
            &["key", "value"],
        ),
    }
}

/// The Supervisor's tools, in the order of §14.
pub fn supervisor_tools() -> Vec<ToolSpec> {
    let with_task = |mut props: Value| {
        props["task"] = task_property();
        props
    };
    vec![
        ToolSpec {
            name: "read_skill_md",
            description: "Load the skill's SKILL.md instructions (once per run).",
            parameters: object(json!({}), &[]),
        },
        ToolSpec {
            name: "read_ref",
            description: "Read a file the skill references (give `path`), or describe what to find (give `task`). Binary files return size and type only.",
            parameters: object(with_task(json!({"path": {"type": "string", "description": "Relative to the skill root, or build/…"}})), &[]),
        },
        ToolSpec {
            name: "run_script",
            description: "Run a skill script (give `path` and optional argv/args/dependencies/timeout_seconds), or describe the job (give `task`). Returns exit code, parsed stdout and files written.",
            parameters: object(with_task(script_properties()), &[]),
        },
        ToolSpec {
            name: "write_artifact",
            description: "Write a file under build/ (give `path` and `content`), or describe what to write (give `task`). Each rewrite is a new version.",
            parameters: object(with_task(write_properties()), &[]),
        },
        ToolSpec {
            name: "list_files",
            description: "List files in the skill and in build/, optionally filtered by a glob.",
            parameters: object(json!({"glob": {"type": "string"}}), &[]),
        },
        ToolSpec {
            name: "validate",
            description: "Check the run's expected outputs (completeness, compliance, quality).",
            parameters: object(json!({}), &[]),
        },
        ToolSpec {
            name: "summarize",
            description: "Summarise a file (give `path`) or a text (give `text`).",
            parameters: object(json!({"path": {"type": "string"}, "text": {"type": "string"}}), &[]),
        },
        ToolSpec {
            name: "diff",
            description: "Line diff between two files or artifact versions (paths or act.<name>@N).",
            parameters: object(json!({"a": {"type": "string"}, "b": {"type": "string"}}), &["a", "b"]),
        },
        blackboard_get(),
        blackboard_put(),
        ToolSpec {
            name: "template_expand",
            description: "Fill a template ({{key}}, {{#each list}}…{{/each}}) with JSON data and write the result under build/.",
            parameters: object(
                json!({"template_path": {"type": "string"}, "data": {},
                       "out_path": {"type": "string", "description": "Relative to build/."}}),
                &["template_path", "data", "out_path"],
            ),
        },
        ToolSpec {
            name: "finish",
            description: "End the run. Accepted only after validate passes on the current files.",
            parameters: object(json!({"summary": {"type": "string"}}), &["summary"]),
        },
    ]
}

/// Which sub agent a delegated call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    ReadRef,
    RunScript,
    WriteArtifact,
}

/// A sub agent's tools in delegated mode (§15): its own tools, the blackboard tools and `done`.
pub fn agent_tools(kind: AgentKind) -> Vec<ToolSpec> {
    let mut tools = match kind {
        AgentKind::ReadRef => vec![
            ToolSpec {
                name: "fs_read",
                description:
                    "Read a file in the skill or build/ (letter case is resolved like read_ref).",
                parameters: object(json!({"path": {"type": "string"}}), &["path"]),
            },
            ToolSpec {
                name: "fs_list",
                description: "List files in the skill and build/, optionally filtered by a glob.",
                parameters: object(json!({"glob": {"type": "string"}}), &[]),
            },
        ],
        AgentKind::RunScript => vec![ToolSpec {
            name: "script_run",
            description: "Run a .py, .sh or .js script from the skill or build/.",
            parameters: object(script_properties(), &["path"]),
        }],
        AgentKind::WriteArtifact => vec![ToolSpec {
            name: "fs_write",
            description: "Write a file under build/.",
            parameters: object(write_properties(), &["path", "content"]),
        }],
    };
    tools.push(blackboard_get());
    tools.push(blackboard_put());
    tools.push(ToolSpec {
        name: "done",
        description: "Finish the task; `result` goes back to the supervisor verbatim.",
        parameters: object(json!({"result": {}}), &["result"]),
    });
    tools
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &[ToolSpec]) -> Vec<&'static str> {
        t.iter().map(|t| t.name).collect()
    }

    #[test]
    fn supervisor_tools_are_exactly_section_14s() {
        assert_eq!(
            names(&supervisor_tools()),
            vec![
                "read_skill_md",
                "read_ref",
                "run_script",
                "write_artifact",
                "list_files",
                "validate",
                "summarize",
                "diff",
                "blackboard_get",
                "blackboard_put",
                "template_expand",
                "finish"
            ]
        );
    }

    #[test]
    fn agent_tools_are_exactly_section_15s() {
        assert_eq!(
            names(&agent_tools(AgentKind::ReadRef)),
            vec![
                "fs_read",
                "fs_list",
                "blackboard_get",
                "blackboard_put",
                "done"
            ]
        );
        assert_eq!(
            names(&agent_tools(AgentKind::RunScript)),
            vec!["script_run", "blackboard_get", "blackboard_put", "done"]
        );
        assert_eq!(
            names(&agent_tools(AgentKind::WriteArtifact)),
            vec!["fs_write", "blackboard_get", "blackboard_put", "done"]
        );
    }

    #[test]
    fn every_name_is_valid_and_every_schema_an_object() {
        let mut all = supervisor_tools();
        for k in [
            AgentKind::ReadRef,
            AgentKind::RunScript,
            AgentKind::WriteArtifact,
        ] {
            all.extend(agent_tools(k));
        }
        for t in &all {
            assert!(valid_tool_name(t.name), "{}", t.name);
            assert!(TOOL_NAME_PATTERN_OK(t.name));
            assert_eq!(t.parameters["type"], "object", "{}", t.name);
            assert!(t.parameters["properties"].is_object(), "{}", t.name);
            assert!(
                jsonschema::validator_for(&t.parameters).is_ok(),
                "{}",
                t.name
            );
            assert!(!t.description.is_empty());
            assert_eq!(t.openai()["function"]["name"], t.name);
            assert_eq!(t.anthropic()["input_schema"], t.parameters);
        }
        for bad in ["", "blackboard.get", "a b", &"a".repeat(65)] {
            assert!(!valid_tool_name(bad), "{bad}");
        }
    }

    #[test]
    fn delegating_tools_take_exact_args_or_a_task() {
        for t in supervisor_tools() {
            if matches!(t.name, "read_ref" | "run_script" | "write_artifact") {
                assert!(t.parameters["properties"]["task"].is_object(), "{}", t.name);
                assert_eq!(t.parameters["required"], json!([]), "{}", t.name);
            }
        }
        let run = &supervisor_tools()[2];
        for k in ["path", "argv", "args", "dependencies", "timeout_seconds"] {
            assert!(run.parameters["properties"][k].is_object(), "{k}");
        }
    }
}
