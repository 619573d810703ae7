//! Flows: the YAML model, its validation, and the executable [`Flow`] it becomes.
//!
//! A flow file is untrusted configuration (a shared folder or a pack wrote it). Parsing goes
//! through [`crate::yaml::parse_limited`]; unknown keys are refused (a typo such as `wehn:` would
//! otherwise silently run a step unconditionally); one bad step makes the whole flow unavailable,
//! never half a flow; every error names the file and, where known, the line.

use crate::condition::{Condition, ConditionError};
use crate::handler::KernelHandler;
use crate::yaml::{self, YamlError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::fmt;

/// Default step priority when none is given.
pub const DEFAULT_PRIORITY: f64 = 100.0;
/// Default and largest step timeout, seconds.
pub const DEFAULT_STEP_TIMEOUT_SECS: u32 = 60;
pub const MAX_STEP_TIMEOUT_SECS: u32 = 600;
/// Most steps one flow may have.
pub const MAX_STEPS: usize = 1000;

/// Where a flow (or a step) comes from; lower rank wins a `flow_id` clash (contract §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceRank {
    /// `flows/*.flow.yaml`, shipped with the kernel.
    Official = 1,
    /// `user_data/shared/flows/**`.
    Shared = 2,
    /// `<pack subdir>/flows/**` of an approved pack.
    Pack = 3,
}

impl SourceRank {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceRank::Official => "official",
            SourceRank::Shared => "shared",
            SourceRank::Pack => "pack",
        }
    }
}

/// The origin of a flow file: its rank, a display path relative to `RUMI_HOME`, and for pack
/// flows the pack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlowOrigin {
    pub rank: SourceRank,
    pub path: String,
    pub pack_id: Option<String>,
}

/// A load error: the file, the line when known, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub struct FlowError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// What to do when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    Continue,
    Abort,
}

/// What a modifier does when its target step is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingStep {
    #[default]
    Skip,
    Error,
}

/// The flow's `defaults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Defaults {
    pub fail_soft: bool,
    pub on_missing_step: OnMissingStep,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            fail_soft: true,
            on_missing_step: OnMissingStep::Skip,
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Runs `file` of `owner_pack` with the resolved `input`.
    Block {
        owner_pack: String,
        file: String,
        input: Value,
        principal_override: Option<String>,
    },
    /// Calls a kernel handler with resolved `args`.
    Handler { handler: KernelHandler, args: Value },
    /// Stores the resolved `value` under `key` (or the step's `output`).
    Set { key: Option<String>, value: Value },
    /// Stores the truth of `condition` under `output`.
    If { condition: Condition },
}

impl StepKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Block { .. } => "python_file_call",
            StepKind::Handler { .. } => "handler",
            StepKind::Set { .. } => "set",
            StepKind::If { .. } => "if",
        }
    }
}

/// One validated step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub phase: String,
    pub priority: f64,
    pub kind: StepKind,
    pub when: Option<Condition>,
    pub output: Option<String>,
    pub timeout_seconds: u32,
    pub on_error: OnError,
    /// Who wrote the step: a modifier's step carries its modifier's origin, not the flow's.
    pub origin: SourceRank,
    /// The line of the step's `id:` in its file, when found.
    pub line: Option<usize>,
}

/// A loaded, validated flow whose steps are in execution order (phase, priority, id).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub flow_id: String,
    pub description: Option<String>,
    pub inputs: Value,
    pub outputs: Value,
    pub phases: Vec<String>,
    pub defaults: Defaults,
    /// Kept as written; the scheduler validates it (a bad schedule does not break the flow).
    pub schedule: Option<Value>,
    pub steps: Vec<Step>,
    pub origin: FlowOrigin,
}

// ---- raw YAML shapes -----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    flow_id: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    inputs: Option<Value>,
    #[serde(default)]
    outputs: Option<Value>,
    phases: Option<Vec<String>>,
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    schedule: Option<Value>,
    #[serde(default)]
    steps: Option<Vec<RawStep>>,
    /// Accepted for compatibility with the guide's examples; informational only.
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    fail_soft: Option<bool>,
    #[serde(default)]
    on_missing_step: Option<OnMissingStep>,
}

/// A step as written. Public so modifiers (which carry one step) validate it the same way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub id: Option<Value>,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub priority: Option<Value>,
    #[serde(rename = "type")]
    pub step_type: Option<String>,
    #[serde(default)]
    pub when: Option<Value>,
    #[serde(default)]
    pub owner_pack: Option<String>,
    #[serde(default)]
    pub principal_id: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<Value>,
    #[serde(default)]
    pub on_error: Option<OnError>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Checks a `flow_id`: `^[A-Za-z0-9_.:-]{1,128}$`.
pub fn valid_flow_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Checks a step id or context key: printable, no whitespace, 1..=128 bytes.
fn valid_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
}

/// Context for validating one step.
pub struct StepRules<'a> {
    /// The flow's phases; `None` when the phase is checked later (modifier steps).
    pub phases: Option<&'a [String]>,
    pub defaults: Defaults,
    pub origin: SourceRank,
    /// The pack a pack flow belongs to: its blocks may omit `owner_pack`.
    pub own_pack: Option<&'a str>,
}

/// Parses and validates a flow file.
pub fn parse_flow(text: &str, origin: FlowOrigin) -> Result<Flow, FlowError> {
    let file = origin.path.clone();
    let err = |line: Option<usize>, message: String| FlowError {
        file: file.clone(),
        line,
        message,
    };
    let raw: RawFlow =
        yaml::parse_limited(text).map_err(|e: YamlError| err(e.line(), e.to_string()))?;

    let flow_id = match raw.flow_id {
        Some(Value::String(s)) if valid_flow_id(&s) => s,
        Some(Value::String(s)) => {
            return Err(err(
                find_line(text, "flow_id:", None),
                format!("flow_id {s:?} is invalid: use 1-128 of A-Z a-z 0-9 _ . : -"),
            ))
        }
        Some(_) => {
            return Err(err(
                find_line(text, "flow_id:", None),
                "flow_id must be a string".into(),
            ))
        }
        None => return Err(err(None, "flow_id is required".into())),
    };
    let phases = raw.phases.ok_or_else(|| {
        err(
            None,
            "phases is required (a non-empty list of names)".into(),
        )
    })?;
    if phases.is_empty() {
        return Err(err(
            find_line(text, "phases:", None),
            "phases must not be empty".into(),
        ));
    }
    let mut seen = HashSet::new();
    for phase in &phases {
        if !valid_name(phase) {
            return Err(err(
                find_line(text, "phases:", None),
                format!("phase name {phase:?} is invalid"),
            ));
        }
        if !seen.insert(phase.as_str()) {
            return Err(err(
                find_line(text, "phases:", None),
                format!("phase {phase:?} is listed twice"),
            ));
        }
    }
    let mut defaults = Defaults::default();
    if let Some(d) = raw.defaults {
        if let Some(fs) = d.fail_soft {
            defaults.fail_soft = fs;
        }
        if let Some(m) = d.on_missing_step {
            defaults.on_missing_step = m;
        }
    }
    let raw_steps = raw.steps.unwrap_or_default();
    if raw_steps.len() > MAX_STEPS {
        return Err(err(
            None,
            format!("{} steps; the limit is {MAX_STEPS}", raw_steps.len()),
        ));
    }
    let rules = StepRules {
        phases: Some(&phases),
        defaults,
        origin: origin.rank,
        own_pack: origin.pack_id.as_deref(),
    };
    let mut steps = Vec::with_capacity(raw_steps.len());
    let mut ids = HashSet::new();
    for (index, raw_step) in raw_steps.into_iter().enumerate() {
        let step =
            validate_step(raw_step, index, text, &rules).map_err(|(line, m)| err(line, m))?;
        if !ids.insert(step.id.clone()) {
            return Err(err(
                step.line,
                format!("step id {:?} is used twice", step.id),
            ));
        }
        steps.push(step);
    }
    sort_steps(&mut steps, &phases);
    Ok(Flow {
        flow_id,
        description: raw.description,
        inputs: raw.inputs.unwrap_or(Value::Null),
        outputs: raw.outputs.unwrap_or(Value::Null),
        phases,
        defaults,
        schedule: raw.schedule,
        steps,
        origin,
    })
}

/// Validates one raw step. Errors are `(line, message)`; the caller adds the file.
pub fn validate_step(
    raw: RawStep,
    index: usize,
    text: &str,
    rules: &StepRules<'_>,
) -> Result<Step, (Option<usize>, String)> {
    let id = match raw.id {
        Some(Value::String(s)) if valid_name(&s) => s,
        Some(Value::String(s)) => {
            return Err((
                find_line(text, "id:", Some(&s)),
                format!("step id {s:?} is invalid"),
            ))
        }
        Some(Value::Number(n)) => {
            return Err((
                find_line(text, "id:", Some(&n.to_string())),
                "step id must be a string".into(),
            ))
        }
        _ => return Err((None, format!("step #{} has no id", index + 1))),
    };
    let line = find_line(text, "id:", Some(&id));
    let fail = |m: String| (line, format!("step {id:?}: {m}"));

    let phase = raw.phase.ok_or_else(|| fail("phase is required".into()))?;
    if let Some(phases) = rules.phases {
        if !phases.contains(&phase) {
            return Err(fail(format!(
                "phase {phase:?} is not one of the flow's phases {phases:?}"
            )));
        }
    }
    let priority = match raw.priority {
        None => DEFAULT_PRIORITY,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| fail("priority must be a finite number".into()))?,
        Some(_) => return Err(fail("priority must be a number".into())),
    };
    let timeout_seconds = match raw.timeout_seconds {
        None => DEFAULT_STEP_TIMEOUT_SECS,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f > 0.0 && f <= MAX_STEP_TIMEOUT_SECS as f64 => f.ceil() as u32,
            _ => {
                return Err(fail(format!(
                    "timeout_seconds must be in 1..={MAX_STEP_TIMEOUT_SECS}"
                )))
            }
        },
        Some(_) => return Err(fail("timeout_seconds must be a number".into())),
    };
    let when = match raw.when {
        None => None,
        Some(Value::String(s)) => {
            Some(Condition::parse(&s).map_err(|e: ConditionError| fail(e.to_string()))?)
        }
        Some(Value::Bool(b)) => Some(
            Condition::parse(if b { "true" } else { "false" }).map_err(|e| fail(e.to_string()))?,
        ),
        Some(_) => return Err(fail("when must be a condition string".into())),
    };
    if let Some(output) = &raw.output {
        if !valid_name(output) {
            return Err(fail(format!(
                "output {output:?} is not a valid context key"
            )));
        }
    }
    let on_error = raw.on_error.unwrap_or(if rules.defaults.fail_soft {
        OnError::Continue
    } else {
        OnError::Abort
    });
    let step_type = raw
        .step_type
        .ok_or_else(|| fail("type is required".into()))?;
    let input = raw.input.unwrap_or(Value::Null);
    let not_for = |field: &str, present: bool| -> Result<(), (Option<usize>, String)> {
        if present {
            Err(fail(format!(
                "{field} is only valid for python_file_call steps"
            )))
        } else {
            Ok(())
        }
    };
    let kind = match step_type.as_str() {
        "python_file_call" => {
            let file = raw
                .file
                .ok_or_else(|| fail("file is required for python_file_call".into()))?;
            if file.is_empty() || file.contains('\0') {
                return Err(fail("file must be a non-empty relative path".into()));
            }
            let owner_pack = match (raw.owner_pack, rules.own_pack) {
                (Some(p), _) => p,
                (None, Some(own)) => own.to_string(),
                (None, None) => {
                    return Err(fail(
                        "owner_pack is required for a python_file_call outside a pack flow".into(),
                    ))
                }
            };
            if !crate::pack::valid_pack_id(&owner_pack) {
                return Err(fail(format!(
                    "owner_pack {owner_pack:?} is not a valid pack id"
                )));
            }
            let principal_override = raw.principal_id.filter(|p| *p != owner_pack);
            StepKind::Block {
                owner_pack,
                file,
                input,
                principal_override,
            }
        }
        other => {
            not_for("file", raw.file.is_some())?;
            not_for("owner_pack", raw.owner_pack.is_some())?;
            match other {
                "handler" => {
                    let obj = input
                        .as_object()
                        .ok_or_else(|| fail("input must be {handler, args}".into()))?;
                    let name = obj.get("handler").and_then(Value::as_str).ok_or_else(|| {
                        fail("input.handler is required (e.g. \"kernel:noop\")".into())
                    })?;
                    let handler = KernelHandler::parse(name).ok_or_else(|| {
                        fail(format!(
                            "unknown handler {name:?}; flows may call {}",
                            KernelHandler::safe_names().collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                    if handler.is_administrative() && rules.origin != SourceRank::Official {
                        return Err(fail(format!(
                            "handler {name:?} is administrative: only official flows (flows/) may call it"
                        )));
                    }
                    if let Some(extra) = obj.keys().find(|k| *k != "handler" && *k != "args") {
                        return Err(fail(format!(
                            "input.{extra} is not allowed; use input.args"
                        )));
                    }
                    let args = obj
                        .get("args")
                        .cloned()
                        .unwrap_or(Value::Object(Default::default()));
                    StepKind::Handler { handler, args }
                }
                "set" => {
                    let obj = input
                        .as_object()
                        .ok_or_else(|| fail("input must be {key, value}".into()))?;
                    let key = match obj.get("key") {
                        None => None,
                        Some(Value::String(k)) if valid_name(k) => Some(k.clone()),
                        Some(_) => {
                            return Err(fail("input.key must be a valid context key".into()))
                        }
                    };
                    if key.is_none() && raw.output.is_none() {
                        return Err(fail("set needs input.key or output".into()));
                    }
                    let value = obj.get("value").cloned().unwrap_or(Value::Null);
                    StepKind::Set { key, value }
                }
                "if" => {
                    let condition = match input.get("condition") {
                        Some(Value::String(s)) => {
                            Condition::parse(s).map_err(|e| fail(e.to_string()))?
                        }
                        Some(Value::Bool(b)) => Condition::parse(if *b { "true" } else { "false" })
                            .map_err(|e| fail(e.to_string()))?,
                        _ => return Err(fail("input.condition is required for if".into())),
                    };
                    if raw.output.is_none() {
                        return Err(fail("if needs output (where true/false is stored)".into()));
                    }
                    StepKind::If { condition }
                }
                unknown => {
                    return Err(fail(format!(
                        "unknown type {unknown:?}; use python_file_call, handler, set or if"
                    )))
                }
            }
        }
    };
    Ok(Step {
        id,
        phase,
        priority,
        kind,
        when,
        output: raw.output,
        timeout_seconds,
        on_error,
        origin: rules.origin,
        line,
    })
}

/// Orders steps by (phase index, priority ascending, id ascending) — contract §3.3.
pub fn sort_steps(steps: &mut [Step], phases: &[String]) {
    let phase_index = |p: &str| phases.iter().position(|x| x == p).unwrap_or(usize::MAX);
    steps.sort_by(|a, b| {
        phase_index(&a.phase)
            .cmp(&phase_index(&b.phase))
            .then(a.priority.total_cmp(&b.priority))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Finds the 1-based line of `key` (optionally followed by `value`) in a YAML text, in block
/// style (`- id: a`) or flow style (`- {id: a, ...}`). Used to point semantic errors at the right
/// line, which the YAML parser cannot know.
pub fn find_line(text: &str, key: &str, value: Option<&str>) -> Option<usize> {
    text.lines()
        .position(|line| {
            let mut from = 0;
            while let Some(at) = line[from..].find(key) {
                let start = from + at;
                from = start + key.len();
                let before_ok = line[..start]
                    .chars()
                    .next_back()
                    .is_none_or(|c| matches!(c, ' ' | '{' | ',' | '-'));
                if !before_ok {
                    continue;
                }
                let Some(v) = value else { return true };
                let rest = line[from..].trim_start();
                let token: &str = rest.split([',', '}', '#']).next().unwrap_or("").trim();
                if token.trim_matches(|c| c == '"' || c == '\'') == v {
                    return true;
                }
            }
            false
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests;
