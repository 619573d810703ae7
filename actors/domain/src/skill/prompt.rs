//! The Supervisor's system prompt (contract §14 "Messages"): the skill's L1 line, the goal,
//! constraints, inputs, expected outputs and budgets — and nothing loaded during the run, so
//! the prompt prefix is byte-identical across runs of the same input (provider prompt caches
//! then hit, and a test can compare two runs' prompts byte for byte).

use super::act::{ActInput, ExpectedOutput, OutputKind};
use super::budget::Budgets;
use super::disclosure::l1_line;
use std::fmt::Write;

/// The fixed part: how the run works, in the tools' own names.
const RULES: &str = "You run one Agent Skill inside Rumi's SkillRuntime. Work in steps: each reply calls one or more tools; \
every tool answers JSON with \"ok\". Start with read_skill_md (the skill's instructions). Read the files it references with \
read_ref (relative paths; build/ holds this run's artifacts). Scripts are executed with run_script, never read. Write every \
output with write_artifact (paths relative to build/) or template_expand. When the outputs are written, call validate; when \
validate passes, call finish. A tool may instead be given {\"task\": \"...\"} to delegate to its agent. Budgets are enforced by \
the runtime: stay well inside them.";

/// The text a tool-less micro-reflect call adds after two steps without progress.
pub const REFLECT: &str = "The last two steps made no progress (nothing new was loaded, written or run). In at most three \
sentences: what is missing for the expected outputs, and which single tool call comes next?";

/// What the Supervisor says after a micro-reflect, to hand the turn back to tool calls.
pub const CONTINUE: &str = "Continue with the next tool call.";

/// The first (and only fixed) user message of a Supervisor conversation.
pub const BEGIN: &str = "Begin the run.";

fn kind(k: &OutputKind) -> &'static str {
    match k {
        OutputKind::Json => "json",
        OutputKind::Markdown => "markdown",
        OutputKind::Html => "html",
        OutputKind::Text => "text",
        OutputKind::Binary => "binary",
    }
}

fn expected(out: &mut String, e: &ExpectedOutput) {
    let _ = write!(out, "- {} ({})", e.path, kind(&e.kind));
    if !e.must_contain.is_empty() {
        let quoted: Vec<String> = e
            .must_contain
            .iter()
            .map(|s| serde_json::to_string(s).unwrap_or_default())
            .collect();
        let _ = write!(out, "; must contain {}", quoted.join(", "));
    }
    if let Some(n) = e.min_bytes {
        let _ = write!(out, "; at least {n} bytes");
    }
    if let Some(p) = &e.name_pattern {
        let _ = write!(out, "; file name matches {p}");
    }
    if let Some(s) = &e.schema {
        let _ = write!(
            out,
            "; JSON Schema {}",
            serde_json::to_string(s).unwrap_or_default()
        );
    }
    out.push('\n');
}

/// The Supervisor's system prompt for `input` on the skill `name`/`description`.
pub fn system_prompt(name: &str, description: &str, input: &ActInput, budgets: &Budgets) -> String {
    let mut out = String::new();
    out.push_str(RULES);
    let _ = write!(
        out,
        "\n\nSkill: {}\n\nGoal: {}\n",
        l1_line(name, description),
        input.goal
    );
    if !input.constraints.is_empty() {
        out.push_str("\nConstraints:\n");
        for c in &input.constraints {
            let _ = writeln!(out, "- {c}");
        }
    }
    if !input.inputs.is_empty() {
        let _ = write!(
            out,
            "\nInputs (JSON): {}\n",
            serde_json::to_string(&input.inputs).unwrap_or_default()
        );
    }
    if input.expected_outputs.is_empty() {
        out.push_str("\nExpected outputs: none named; validate passes once you are done.\n");
    } else {
        out.push_str("\nExpected outputs:\n");
        for e in &input.expected_outputs {
            expected(&mut out, e);
        }
    }
    let _ = write!(
        out,
        "\nBudgets: max_tool_calls={}, time_budget_ms={}, token_budget={}, script_timeout_s={}, disk_write_limit_mb={}\n",
        budgets.max_tool_calls,
        budgets.time_budget_ms,
        budgets.token_budget,
        budgets.script_timeout_s,
        budgets.disk_write_limit_mb
    );
    out
}
