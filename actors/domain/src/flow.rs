//! Flows: the YAML model, its validation, and the executable [`Flow`] it becomes.
//!
//! A flow file is untrusted configuration (a shared folder or a pack wrote it). Parsing goes
//! through [`crate::yaml::parse_limited`]; unknown keys are refused (a typo such as `wehn:` would
//! otherwise silently run a step unconditionally); one bad step makes the whole flow unavailable,
//! never half a flow; every error names the file and line and says how to fix it (`flow/error.rs`).

use crate::condition::{Condition, ConditionError};
use crate::handler::KernelHandler;
use crate::yaml;

use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

mod error;

pub use error::{
    declared_flow_id, quoted, yaml_message, FlowError, MAX_MESSAGE_CHARS, MAX_QUOTED_CHARS,
    NAME_HINT,
};

/// Default step priority when none is given.
pub const DEFAULT_PRIORITY: f64 = 100.0;
/// Default and largest step timeout, seconds.
pub const DEFAULT_STEP_TIMEOUT_SECS: u32 = 60;
pub const MAX_STEP_TIMEOUT_SECS: u32 = 600;
/// Most steps one flow may have.
pub const MAX_STEPS: usize = 1000;
/// The step types, as a hint.
const STEP_TYPES: &str = "python_file_call, handler, set, if";

/// Where a flow (or a step) comes from; lower rank wins a `flow_id` clash (contract §3.1).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// What to do when a step fails.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    Continue,
    Abort,
}

/// What a modifier does when its target step is missing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingStep {
    #[default]
    Skip,
    Error,
}

/// The flow's `defaults`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The modifier that placed the step (`None`: the flow's own step).
    pub placed_by: Option<String>,
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
    /// The line of `flow_id:` in its file, when found.
    pub line: Option<usize>,
    /// The first modifier (never official) that changed this flow, when one did. An official flow
    /// changed by one loses its administrative rights: a step around an administrative one can
    /// steer it (rewrite the context it reads, replace its guard, remove a revocation) without
    /// naming an administrative handler itself.
    pub modified_by: Option<String>,
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
pub fn valid_name(id: &str) -> bool {
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

/// Parses and validates a flow file. Every error names the file and a line, says what was wrong
/// and how to fix it, and carries the `flow_id` the file declares when it could be read.
pub fn parse_flow(text: &str, origin: FlowOrigin) -> Result<Flow, FlowError> {
    let file = origin.path.as_str();
    // Until `flow_id` is read and valid, an error belongs to the id the text declares, if any.
    let early = |line: Option<usize>, message: String| {
        FlowError::new(file, line.or(Some(1)), message).of_flow(declared_flow_id(text))
    };
    let raw: RawFlow = yaml::parse_limited(text).map_err(|e| early(e.line(), yaml_message(&e)))?;

    let flow_id = match raw.flow_id {
        Some(Value::String(s)) if valid_flow_id(&s) => s,
        Some(Value::String(s)) => {
            return Err(early(
                find_line(text, "flow_id:", None),
                format!("flow_id {} is invalid — {NAME_HINT}", quoted(&s)),
            ))
        }
        Some(_) => {
            return Err(early(
                find_line(text, "flow_id:", None),
                "flow_id must be a string — e.g. `flow_id: my_flow` (quote a number: `flow_id: \"2024\"`)"
                    .into(),
            ))
        }
        None => {
            return Err(early(
                None,
                format!("flow_id is required — add `flow_id: <name>` at the top ({NAME_HINT})"),
            ))
        }
    };
    let flow_line = find_line(text, "flow_id:", None);
    let err = |line: Option<usize>, message: String| {
        FlowError::new(file, line.or(Some(1)), message).of_flow(Some(flow_id.clone()))
    };
    let phases_line = find_line(text, "phases:", None);
    let phases = raw.phases.ok_or_else(|| {
        err(
            None,
            "phases is required — add `phases: [main]` (a non-empty list of names)".into(),
        )
    })?;
    if phases.is_empty() {
        return Err(err(
            phases_line,
            "phases: must be a non-empty list of names — add `phases: [main]`".into(),
        ));
    }
    let mut seen = HashSet::new();
    for phase in &phases {
        if !valid_name(phase) {
            return Err(err(
                phases_line,
                format!("phase name {} is invalid — {NAME_HINT}", quoted(phase)),
            ));
        }
        if !seen.insert(phase.as_str()) {
            return Err(err(
                phases_line,
                format!(
                    "phase {} is listed twice — list each phase once",
                    quoted(phase)
                ),
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
    let steps_line = find_line(text, "steps:", None);
    let raw_steps = raw.steps.unwrap_or_default();
    if raw_steps.len() > MAX_STEPS {
        return Err(err(
            steps_line,
            format!(
                "{} steps; the limit is {MAX_STEPS} — split the flow and call the parts with `kernel:flow.run`",
                raw_steps.len()
            ),
        ));
    }
    let rules = StepRules {
        phases: Some(&phases),
        defaults,
        origin: origin.rank,
        own_pack: origin.pack_id.as_deref(),
    };
    let mut steps: Vec<Step> = Vec::with_capacity(raw_steps.len());
    let mut ids: HashMap<String, Option<usize>> = HashMap::new();
    let id_lines = IdLines::new(text);
    for (index, raw_step) in raw_steps.into_iter().enumerate() {
        let step = validate_step(raw_step, index, &id_lines, &rules)
            .map_err(|(line, m)| err(line.or(steps_line), m))?;
        if let Some(first) = ids.get(&step.id) {
            let first = first
                .map(|l| format!(" (first at line {l})"))
                .unwrap_or_default();
            // The second step of that id sits after the first: point at it, not at the first.
            let line = step
                .line
                .and_then(|l| id_lines.after(l, &step.id))
                .or(step.line);
            return Err(err(
                line,
                format!(
                    "step id {} is used twice{first} — give each step its own id",
                    quoted(&step.id)
                ),
            ));
        }
        ids.insert(step.id.clone(), step.line);
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
        line: flow_line,
        modified_by: None,
    })
}

/// Validates one raw step. Errors are `(line, message)`; the caller adds the file.
pub fn validate_step(
    raw: RawStep,
    index: usize,
    id_lines: &IdLines<'_>,
    rules: &StepRules<'_>,
) -> Result<Step, (Option<usize>, String)> {
    let text = id_lines.text();
    let id = match raw.id {
        Some(Value::String(s)) if valid_name(&s) => s,
        Some(Value::String(s)) => {
            return Err((
                find_line(text, "id:", Some(&s)),
                format!("step id {} is invalid — {NAME_HINT}", quoted(&s)),
            ))
        }
        Some(Value::Number(n)) => {
            return Err((
                find_line(text, "id:", Some(&n.to_string())),
                format!("step id {n} must be a string — quote it: `id: \"{n}\"`"),
            ))
        }
        Some(_) => {
            return Err((
                None,
                format!(
                    "step #{} has an id that is not a string — e.g. `id: call_hello`",
                    index + 1
                ),
            ))
        }
        None => {
            return Err((
                None,
                format!(
                    "step #{} has no id — add `id: <name>` to it ({NAME_HINT})",
                    index + 1
                ),
            ))
        }
    };
    let line = id_lines.first(&id);
    let fail = |m: String| (line, format!("step {}: {m}", quoted(&id)));
    let phase_list = rules
        .phases
        .map(|p| {
            let shown: Vec<String> = p.iter().take(8).map(|x| quoted(x)).collect();
            let more = if p.len() > 8 { ", …" } else { "" };
            format!("[{}{more}]", shown.join(", "))
        })
        .unwrap_or_default();

    let phase = raw.phase.ok_or_else(|| match rules.phases {
        Some(p) => fail(format!(
            "phase is required — add `phase: {}` (one of the flow's phases {phase_list})",
            p.first().map(String::as_str).unwrap_or("main")
        )),
        None => fail("phase is required — add `phase: <name>`".into()),
    })?;
    if let Some(phases) = rules.phases {
        if !phases.contains(&phase) {
            return Err(fail(format!(
                "phase {} is not one of the flow's phases {phase_list} — use one of them or add it to `phases:`",
                quoted(&phase)
            )));
        }
    }
    let priority = match raw.priority {
        None => DEFAULT_PRIORITY,
        Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
            fail(format!(
                "priority must be a finite number — e.g. `priority: 50` (default {DEFAULT_PRIORITY}; lower runs first)"
            ))
        })?,
        Some(_) => {
            return Err(fail(format!(
                "priority must be a number — e.g. `priority: 50` (default {DEFAULT_PRIORITY}; lower runs first)"
            )))
        }
    };
    let timeout_hint = format!(
        "timeout_seconds must be a number of seconds in 1..={MAX_STEP_TIMEOUT_SECS} — e.g. `timeout_seconds: {DEFAULT_STEP_TIMEOUT_SECS}` (the default)"
    );
    let timeout_seconds = match raw.timeout_seconds {
        None => DEFAULT_STEP_TIMEOUT_SECS,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f > 0.0 && f <= MAX_STEP_TIMEOUT_SECS as f64 => f.ceil() as u32,
            _ => return Err(fail(timeout_hint)),
        },
        Some(_) => return Err(fail(timeout_hint)),
    };
    const CONDITION_HINT: &str =
        "write `${ctx.key} == value`, `${ctx.key} != value` or a lone `${ctx.key}`";
    let condition = |text: &str| {
        Condition::parse(text).map_err(|e: ConditionError| fail(format!("{e} — {CONDITION_HINT}")))
    };
    let when = match raw.when {
        None => None,
        Some(Value::String(s)) => Some(condition(&s)?),
        Some(Value::Bool(b)) => Some(condition(if b { "true" } else { "false" })?),
        Some(_) => {
            return Err(fail(format!(
                "when must be a condition string — {CONDITION_HINT}, quoted"
            )))
        }
    };
    if let Some(output) = &raw.output {
        if !valid_name(output) {
            return Err(fail(format!(
                "output {} is not a valid context key — {NAME_HINT}",
                quoted(output)
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
        .ok_or_else(|| fail(format!("type is required — use one of {STEP_TYPES}")))?;
    let input = raw.input.unwrap_or(Value::Null);
    let not_for = |field: &str, present: bool| -> Result<(), (Option<usize>, String)> {
        if present {
            Err(fail(format!(
                "{field} is only valid for python_file_call steps — remove it, or use `type: python_file_call`"
            )))
        } else {
            Ok(())
        }
    };
    let kind = match step_type.as_str() {
        "python_file_call" => {
            let file = raw.file.ok_or_else(|| {
                fail("file is required for python_file_call — add `file: blocks/<name>.py` (a path inside the pack)".into())
            })?;
            if file.is_empty() || file.contains('\0') {
                return Err(fail(
                    "file must be a non-empty relative path — e.g. `file: blocks/hello.py`".into(),
                ));
            }
            let owner_pack = match (raw.owner_pack, rules.own_pack) {
                (Some(p), _) => p,
                (None, Some(own)) => own.to_string(),
                (None, None) => {
                    return Err(fail(
                        "owner_pack is required for a python_file_call outside a pack flow — add `owner_pack: <pack id>`".into(),
                    ))
                }
            };
            if !crate::pack::valid_pack_id(&owner_pack) {
                return Err(fail(format!(
                    "owner_pack {} is not a valid pack id — use the pack's directory name under ecosystem/",
                    quoted(&owner_pack)
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
                    let obj = input.as_object().ok_or_else(|| {
                        fail("input must be {handler, args} — e.g. `input: {handler: \"kernel:noop\", args: {}}`".into())
                    })?;
                    let name = obj.get("handler").and_then(Value::as_str).ok_or_else(|| {
                        fail("input.handler is required — e.g. `input: {handler: \"kernel:noop\", args: {}}`".into())
                    })?;
                    let handler = KernelHandler::parse(name).ok_or_else(|| {
                        fail(format!(
                            "unknown handler {} — flows may call {}",
                            quoted(name),
                            KernelHandler::safe_names().collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                    if handler.is_administrative() && rules.origin != SourceRank::Official {
                        return Err(fail(format!(
                            "handler {} is administrative: only official flows (flows/) may call it — remove the step, or have an operator ship the flow in flows/",
                            quoted(name)
                        )));
                    }
                    if let Some(extra) = obj.keys().find(|k| *k != "handler" && *k != "args") {
                        return Err(fail(format!(
                            "input.{} is not allowed — put the handler's arguments under input.args",
                            quoted(extra).trim_matches('"')
                        )));
                    }
                    let args = obj
                        .get("args")
                        .cloned()
                        .unwrap_or(Value::Object(Default::default()));
                    StepKind::Handler { handler, args }
                }
                "set" => {
                    const SET_HINT: &str = "e.g. `input: {key: total, value: \"${ctx.n}\"}`";
                    let obj = input.as_object().ok_or_else(|| {
                        fail(format!("input must be {{key, value}} — {SET_HINT}"))
                    })?;
                    let key = match obj.get("key") {
                        None => None,
                        Some(Value::String(k)) if valid_name(k) => Some(k.clone()),
                        Some(_) => {
                            return Err(fail(format!(
                                "input.key must be a valid context key — {NAME_HINT}"
                            )))
                        }
                    };
                    if key.is_none() && raw.output.is_none() {
                        return Err(fail(format!(
                            "set needs input.key or output (where the value is stored) — {SET_HINT}"
                        )));
                    }
                    let value = obj.get("value").cloned().unwrap_or(Value::Null);
                    StepKind::Set { key, value }
                }
                "if" => {
                    let condition = match input.get("condition") {
                        Some(Value::String(s)) => condition(s)?,
                        Some(Value::Bool(b)) => condition(if *b { "true" } else { "false" })?,
                        _ => {
                            return Err(fail(
                                "input.condition is required for if — e.g. `input: {condition: \"${ctx.n} == 3\"}`".into(),
                            ))
                        }
                    };
                    if raw.output.is_none() {
                        return Err(fail(
                            "if needs output (where true/false is stored) — add `output: <name>`"
                                .into(),
                        ));
                    }
                    StepKind::If { condition }
                }
                unknown => {
                    return Err(fail(format!(
                        "unknown type {} — use one of {STEP_TYPES}",
                        quoted(unknown)
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
        placed_by: None,
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
    find_line_after(text, 0, key, value)
}

/// [`find_line`] below line `after` (1-based; 0 searches the whole text).
fn find_line_after(text: &str, after: usize, key: &str, value: Option<&str>) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(after)
        .find(|(_, line)| {
            key_ends(line, key).any(|end| match value {
                None => true,
                Some(v) => value_at(line[end..].trim_start(), v),
            })
        })
        .map(|(i, _)| i + 1)
}

/// The positions just after each `key` in `line` that starts a key: at the line's start or after a
/// space, `{`, `,` or `-` (so `pid:` is not `id:`). Each search starts where the last one ended.
fn key_ends<'a>(line: &'a str, key: &'a str) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(at) = line[from..].find(key) {
            let start = from + at;
            from = start + key.len();
            let boundary = line[..start]
                .chars()
                .next_back()
                .is_none_or(|c| matches!(c, ' ' | '{' | ',' | '-'));
            if boundary {
                return Some(from);
            }
        }
        None
    })
}

/// `rest` without its opening quote, and that quote.
fn split_quote(rest: &str) -> (Option<char>, &str) {
    match rest.chars().next() {
        Some(q @ ('"' | '\'')) => (Some(q), &rest[1..]),
        _ => (None, rest),
    }
}

/// Whether `rest` (the text after a key) starts with the value `v`, bare or quoted, followed by
/// nothing but spaces up to a `,`, `}`, `#` or the end of the line. Reads about `v`'s length, never
/// the rest of the line: a line of a million `id: id: id:` must not cost a million squared.
fn value_at(rest: &str, v: &str) -> bool {
    let (quote, body) = split_quote(rest);
    let Some(after) = body.strip_prefix(v) else {
        return false;
    };
    let after = match quote {
        Some(q) => match after.strip_prefix(q) {
            Some(a) => a,
            None => return false,
        },
        None => after,
    };
    let next = after.chars().find(|c| *c != ' ' && *c != '\t');
    matches!(next, None | Some(',' | '}' | '#'))
}

/// The lines of every `id: <value>` in a flow file, found in one pass: each step's line is then a
/// lookup, not a search of the whole text per step (a thousand steps in a 1 MiB file).
pub struct IdLines<'a> {
    text: &'a str,
    lines: HashMap<String, Vec<usize>>,
}

impl<'a> IdLines<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut lines: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            for end in key_ends(line, "id:") {
                let rest = line[end..].trim_start();
                let (quote, body) = split_quote(rest);
                // The candidate value: up to the closing quote, or a delimiter or space, looked
                // for in a bounded window (an id is short; this keeps the pass linear).
                let window_end = body
                    .char_indices()
                    .nth(MAX_INDEXED_ID)
                    .map_or(body.len(), |(i, _)| i);
                let window = &body[..window_end];
                let end = match quote {
                    Some(q) => window.find(q),
                    None => window.find([',', '}', '#', ' ', '\t']),
                }
                .unwrap_or(window.len());
                let v = &window[..end];
                if value_at(rest, v) {
                    let seen = lines.entry(v.to_string()).or_default();
                    if seen.last() != Some(&(i + 1)) {
                        seen.push(i + 1);
                    }
                }
            }
        }
        IdLines { text, lines }
    }

    /// The first line of `id: <id>`.
    pub fn first(&self, id: &str) -> Option<usize> {
        self.lines.get(id).and_then(|l| l.first().copied())
    }

    /// The first line of `id: <id>` below line `after`.
    pub fn after(&self, after: usize, id: &str) -> Option<usize> {
        self.lines
            .get(id)
            .and_then(|l| l.iter().copied().find(|line| *line > after))
    }

    pub fn text(&self) -> &'a str {
        self.text
    }
}

/// Longest id value indexed (ids are at most 128 characters; longer text is not an id).
const MAX_INDEXED_ID: usize = 256;

#[cfg(test)]
mod tests;
