//! Modifiers (contract §4, §16): steps that shared configuration and approved packs inject into,
//! replace in, or remove from flows others wrote.
//!
//! A modifier file is untrusted configuration, parsed like a flow file (size, depth and alias
//! limits; unknown keys refused) and its `step` validated like any flow step, with the
//! **modifier's own origin**: a step a pack injects into an official flow stays a pack step, so
//! it can never call an administrative handler (refused here, and again when it runs). This file
//! parses; `apply.rs` applies; `fnmatch.rs` matches `target_flow_id` patterns.

mod apply;
pub mod fnmatch;
#[cfg(test)]
mod tests;

pub use apply::{
    apply_all, apply_to, Application, ModifierReport, Status, KERNEL_INTERFACES,
    MAX_ADDED_STEP_BYTES,
};

use crate::flow::{
    find_line, quoted, valid_flow_id, valid_name, validate_step, yaml_message, Defaults, IdLines,
    RawStep, SourceRank, Step, StepRules, NAME_HINT,
};
use crate::yaml;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Where a modifier file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModifierOrigin {
    /// `Shared` or `Pack`.
    pub rank: SourceRank,
    /// Relative to `RUMI_HOME`.
    pub path: String,
    pub pack_id: Option<String>,
}

/// One `*.modifier.yaml` as read: its bytes, or why it could not be read.
#[derive(Debug, Clone)]
pub struct ModifierFile {
    pub origin: ModifierOrigin,
    pub bytes: Result<Vec<u8>, String>,
}

/// What a modifier does.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    InjectBefore,
    InjectAfter,
    Append,
    Replace,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::InjectBefore => "inject_before",
            Action::InjectAfter => "inject_after",
            Action::Append => "append",
            Action::Replace => "replace",
            Action::Remove => "remove",
        }
    }
}

/// The flows a modifier targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Exact(String),
    Pattern(String, fnmatch::Pattern),
}

impl Target {
    pub fn text(&self) -> &str {
        match self {
            Target::Exact(s) | Target::Pattern(s, _) => s,
        }
    }
    pub fn matches(&self, flow_id: &str) -> bool {
        match self {
            Target::Exact(s) => s == flow_id,
            Target::Pattern(_, p) => p.matches(flow_id),
        }
    }
}

/// A parsed, validated modifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Modifier {
    pub modifier_id: String,
    pub target: Target,
    pub phase: String,
    pub priority: f64,
    pub action: Action,
    pub target_step_id: Option<String>,
    /// The step to place (absent for `remove`), its phase the modifier's.
    pub step: Option<Step>,
    /// Whether the step says `on_error` itself (else the target flow's `defaults` decide).
    pub step_on_error_given: bool,
    /// About how many bytes one copy of the step holds (each flow it is placed in holds one).
    pub step_bytes: usize,
    pub requires_interfaces: Vec<String>,
    pub requires_capabilities: Vec<String>,
    pub origin: ModifierOrigin,
    /// The line of `modifier_id:`.
    pub line: Option<usize>,
}

/// Most names in one `requires` list.
const MAX_REQUIRES: usize = 64;

/// Largest step a modifier may place, in bytes of its values as JSON: a `*` modifier copies its
/// step into every flow it matches, so its size is multiplied by the number of flows.
pub const MAX_STEP_BYTES: usize = 64 * 1024;

/// About how many bytes one copy of `step` holds: its values as JSON, its texts, and a fixed part.
pub fn step_bytes(step: &Step) -> usize {
    use crate::flow::StepKind;
    let json = |v: &Value| serde_json::to_vec(v).map_or(0, |b| b.len());
    let kind = match &step.kind {
        StepKind::Block { input, file, .. } => json(input) + file.len(),
        StepKind::Handler { args, .. } => json(args),
        StepKind::Set { value, .. } => json(value),
        StepKind::If { .. } => 0,
    };
    256 + kind + step.id.len() + step.when.as_ref().map_or(0, |w| w.to_string().len())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModifier {
    modifier_id: Option<Value>,
    target_flow_id: Option<Value>,
    phase: Option<Value>,
    #[serde(default)]
    priority: Option<Value>,
    action: Option<Value>,
    #[serde(default)]
    target_step_id: Option<Value>,
    #[serde(default)]
    step: Option<RawStep>,
    #[serde(default)]
    requires: Option<RawRequires>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequires {
    #[serde(default)]
    interfaces: Option<Vec<String>>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
}

/// Why a modifier file was refused: where, what was wrong and what to do, and the id it declares
/// when it could be read.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub modifier_id: Option<String>,
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// The `modifier_id` a file declares on a line of its own, read without parsing.
fn declared_id(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("modifier_id:")?.trim();
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        valid_name(v).then(|| v.to_string())
    })
}

/// A string field, or a message saying what to write.
fn string_field(v: Option<Value>, key: &str, example: &str) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key} must be a string — e.g. `{key}: {example}`")),
    }
}

/// Parses and validates one modifier file.
pub fn parse_modifier(file: &ModifierFile) -> Result<Modifier, Refusal> {
    let path = file.origin.path.clone();
    let bytes = file.bytes.as_ref().map_err(|why| Refusal {
        modifier_id: None,
        file: path.clone(),
        line: None,
        reason: why.clone(),
    })?;
    let text = std::str::from_utf8(bytes).map_err(|e| Refusal {
        modifier_id: None,
        file: path.clone(),
        line: Some(
            bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1,
        ),
        reason: "the file is not UTF-8 — save it as UTF-8".into(),
    })?;
    let declared = declared_id(text);
    let refuse = |line: Option<usize>, reason: String| Refusal {
        modifier_id: declared.clone(),
        file: path.clone(),
        line: line.or(Some(1)),
        reason: crate::flow::FlowError::new("", None, reason).message,
    };
    let raw: RawModifier =
        yaml::parse_limited(text).map_err(|e| refuse(e.line(), yaml_message(&e)))?;
    let line_of = |key: &str| find_line(text, key, None);

    let modifier_id = match string_field(raw.modifier_id, "modifier_id", "add_logging")
        .map_err(|m| refuse(line_of("modifier_id:"), m))?
    {
        Some(id) if valid_name(&id) => id,
        Some(id) => {
            return Err(refuse(
                line_of("modifier_id:"),
                format!("modifier_id {} is invalid — {NAME_HINT}", quoted(&id)),
            ))
        }
        None => {
            return Err(refuse(
                None,
                format!("modifier_id is required — add `modifier_id: <name>` ({NAME_HINT})"),
            ))
        }
    };
    let target = match string_field(raw.target_flow_id, "target_flow_id", "my_flow")
        .map_err(|m| refuse(line_of("target_flow_id:"), m))?
    {
        None => {
            return Err(refuse(
                None,
                "target_flow_id is required — name one flow (`target_flow_id: my_flow`) or a pattern (`\"my_pack.*\"`)".into(),
            ))
        }
        Some(t) if t.chars().count() > fnmatch::MAX_PATTERN_CHARS || t.is_empty() => {
            return Err(refuse(
                line_of("target_flow_id:"),
                format!(
                    "target_flow_id must be 1-{} characters",
                    fnmatch::MAX_PATTERN_CHARS
                ),
            ))
        }
        Some(t) if fnmatch::is_pattern(&t) => {
            let p = fnmatch::Pattern::new(&t);
            Target::Pattern(t, p)
        }
        Some(t) if valid_flow_id(&t) => Target::Exact(t),
        Some(t) => {
            return Err(refuse(
                line_of("target_flow_id:"),
                format!(
                    "target_flow_id {} is neither a flow id nor a pattern — {NAME_HINT}, or use * ? [seq]",
                    quoted(&t)
                ),
            ))
        }
    };
    let phase =
        match string_field(raw.phase, "phase", "main").map_err(|m| refuse(line_of("phase:"), m))? {
            Some(p) if valid_name(&p) => p,
            Some(p) => {
                return Err(refuse(
                    line_of("phase:"),
                    format!("phase {} is invalid — {NAME_HINT}", quoted(&p)),
                ))
            }
            None => {
                return Err(refuse(
                    None,
                    "phase is required — add `phase: <a phase of the target flow>`".into(),
                ))
            }
        };
    let priority = match raw.priority {
        None => crate::flow::DEFAULT_PRIORITY,
        Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
            n.as_f64().unwrap_or_default()
        }
        Some(_) => {
            return Err(refuse(
                line_of("priority:"),
                "priority must be a finite number — e.g. `priority: 90` (default 100; lower goes first)".into(),
            ))
        }
    };
    const ACTIONS: &str = "inject_before, inject_after, append, replace, remove";
    let action = match raw.action {
        None => {
            return Err(refuse(
                None,
                format!("action is required — use one of {ACTIONS}"),
            ))
        }
        Some(v) => serde_json::from_value::<Action>(v.clone()).map_err(|_| {
            let shown = v.as_str().map(quoted).unwrap_or_else(|| "that".into());
            refuse(
                line_of("action:"),
                format!("action {shown} is unknown — use one of {ACTIONS}"),
            )
        })?,
    };
    let target_step_id = match string_field(raw.target_step_id, "target_step_id", "format_output")
        .map_err(|m| refuse(line_of("target_step_id:"), m))?
    {
        Some(s) if !valid_name(&s) => {
            return Err(refuse(
                line_of("target_step_id:"),
                format!("target_step_id {} is invalid — {NAME_HINT}", quoted(&s)),
            ))
        }
        other => other,
    };
    match (action, &target_step_id) {
        (Action::Append, Some(_)) => {
            return Err(refuse(
                line_of("target_step_id:"),
                "append places the step at the end of the phase and takes no target_step_id — remove it, or use inject_after".into(),
            ))
        }
        (Action::Append, None) => {}
        (_, None) => {
            return Err(refuse(
                None,
                format!(
                    "{} needs target_step_id — name the step of the target flow it acts on",
                    action.as_str()
                ),
            ))
        }
        _ => {}
    }
    let (step, step_on_error_given) = match (action, raw.step) {
        (Action::Remove, Some(_)) => {
            return Err(refuse(
                line_of("step:"),
                "remove takes no step — remove the `step:` block".into(),
            ))
        }
        (Action::Remove, None) => (None, false),
        (_, None) => {
            return Err(refuse(
                None,
                format!(
                    "{} needs a step — add `step: {{id: <name>, type: …}}`",
                    action.as_str()
                ),
            ))
        }
        (_, Some(mut raw_step)) => {
            match &raw_step.phase {
                Some(p) if *p != phase => {
                    return Err(refuse(
                        line_of("step:"),
                        format!(
                            "step phase {} differs from the modifier's phase {} — remove the step's phase or make them equal",
                            quoted(p),
                            quoted(&phase)
                        ),
                    ))
                }
                _ => raw_step.phase = Some(phase.clone()),
            }
            let given = raw_step.on_error.is_some();
            let rules = StepRules {
                phases: None,
                defaults: Defaults::default(),
                origin: file.origin.rank,
                own_pack: file.origin.pack_id.as_deref(),
            };
            let mut step = validate_step(raw_step, 0, &IdLines::new(text), &rules)
                .map_err(|(line, m)| refuse(line.or(line_of("step:")), m))?;
            let bytes = step_bytes(&step);
            if bytes > MAX_STEP_BYTES {
                return Err(refuse(
                    line_of("step:"),
                    format!(
                        "the step holds {bytes} bytes; a modifier's step may hold at most {MAX_STEP_BYTES} (it is copied into every flow it targets) — keep large data in a block or a store"
                    ),
                ));
            }
            step.placed_by = Some(modifier_id.clone());
            (Some(step), given)
        }
    };
    let requires = raw.requires.unwrap_or(RawRequires {
        interfaces: None,
        capabilities: None,
    });
    let names = |list: Option<Vec<String>>, key: &str| -> Result<Vec<String>, Refusal> {
        let list = list.unwrap_or_default();
        if list.len() > MAX_REQUIRES {
            return Err(refuse(
                line_of(key),
                format!(
                    "requires.{key} lists {} names; the limit is {MAX_REQUIRES}",
                    list.len()
                ),
            ));
        }
        if let Some(bad) = list.iter().find(|n| !valid_name(n)) {
            return Err(refuse(
                line_of(key),
                format!(
                    "requires.{key}: {} is not a valid name — {NAME_HINT}",
                    quoted(bad)
                ),
            ));
        }
        Ok(list)
    };
    let requires_interfaces = names(requires.interfaces, "interfaces")?;
    let requires_capabilities = names(requires.capabilities, "capabilities")?;
    let _ = raw.description;
    Ok(Modifier {
        modifier_id,
        target,
        phase,
        priority,
        action,
        target_step_id,
        step_bytes: step.as_ref().map_or(0, step_bytes),
        step,
        step_on_error_given,
        requires_interfaces,
        requires_capabilities,
        origin: file.origin.clone(),
        line: line_of("modifier_id:"),
    })
}

/// Most modifier files one catalog takes (the rest, by path, are refused).
pub const MAX_MODIFIERS: usize = 2000;

/// Parses every file; a `modifier_id` declared by more than one file refuses all of them.
pub fn parse_all(files: &[ModifierFile]) -> (Vec<Modifier>, Vec<Refusal>) {
    let mut refused = Vec::new();
    let mut by_id: BTreeMap<String, Vec<Modifier>> = BTreeMap::new();
    let mut sorted: Vec<&ModifierFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.origin.path.cmp(&b.origin.path));
    for file in sorted.iter().skip(MAX_MODIFIERS) {
        refused.push(Refusal {
            modifier_id: None,
            file: file.origin.path.clone(),
            line: None,
            reason: format!(
                "more than {MAX_MODIFIERS} modifier files; this one (and the others after it by path) is not read — merge or remove modifiers"
            ),
        });
    }
    for file in sorted.into_iter().take(MAX_MODIFIERS) {
        match parse_modifier(file) {
            Ok(m) => by_id.entry(m.modifier_id.clone()).or_default().push(m),
            Err(r) => refused.push(r),
        }
    }
    let mut ok = Vec::new();
    for (id, mut group) in by_id {
        if group.len() == 1 {
            ok.push(group.remove(0));
            continue;
        }
        group.sort_by(|a, b| a.origin.path.cmp(&b.origin.path));
        for (i, m) in group.iter().enumerate() {
            let others: Vec<&str> = group
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .take(3)
                .map(|(_, o)| o.origin.path.as_str())
                .collect();
            let more = group.len() - 1 - others.len();
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            refused.push(Refusal {
                modifier_id: Some(id.clone()),
                file: m.origin.path.clone(),
                line: m.line,
                reason: format!(
                    "modifier_id {} is also declared by {}{more}; none of them is applied — give each modifier its own id",
                    quoted(&id),
                    others.join(", ")
                ),
            });
        }
    }
    refused.sort_by(|a, b| a.file.cmp(&b.file));
    (ok, refused)
}
