//! The run's input (ActInput) and result (ActResult), in the exact shapes of contract §3, §7, §15.
//!
//! The ActInput arrives over HTTP, the CLI or a flow, so [`ActInput::parse`] checks every field
//! with a cap before a run starts: a bad input is a 400, never a run that fails later.

use super::budget::{Budgets, RemainingBudgets, Which};
use super::paths::{read_path, Area};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const MAX_GOAL_BYTES: usize = 8192;
const MAX_CONSTRAINTS: usize = 32;
const MAX_CONSTRAINT_BYTES: usize = 1024;
const MAX_INPUTS_BYTES: usize = 64 * 1024;
const MAX_EXPECTED_OUTPUTS: usize = 32;
const MAX_MUST_CONTAIN: usize = 32;
const MAX_MUST_CONTAIN_BYTES: usize = 4096;
const MAX_SCHEMA_BYTES: usize = 64 * 1024;
const MAX_NAME_PATTERN_CHARS: usize = 256;

/// What an expected output must parse as.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Json,
    Markdown,
    Html,
    Text,
    Binary,
}

impl OutputKind {
    /// The kind a path implies when the caller gives none: `.json`, `.md`, `.html`/`.htm`,
    /// otherwise text.
    pub fn infer(path: &str) -> OutputKind {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".json") {
            OutputKind::Json
        } else if lower.ends_with(".md") || lower.ends_with(".markdown") {
            OutputKind::Markdown
        } else if lower.ends_with(".html") || lower.ends_with(".htm") {
            OutputKind::Html
        } else {
            OutputKind::Text
        }
    }

    /// `"json"`, `"markdown"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Json => "json",
            OutputKind::Markdown => "markdown",
            OutputKind::Html => "html",
            OutputKind::Text => "text",
            OutputKind::Binary => "binary",
        }
    }
}

/// One `expected_outputs` item (§9).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedOutput {
    /// Starts with `build/`.
    pub path: String,
    pub kind: OutputKind,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub must_contain: Vec<String>,
    #[serde(default)]
    pub min_bytes: Option<u64>,
    /// A glob (`*`, `?`) over the file name.
    #[serde(default)]
    pub name_pattern: Option<String>,
}

/// The run's input (§3).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActInput {
    pub skill_id: String,
    pub goal: String,
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub inputs: Map<String, Value>,
    #[serde(default)]
    pub budgets: Option<Value>,
    #[serde(default)]
    pub expected_outputs: Vec<ExpectedOutput>,
}

impl ActInput {
    /// Parses and checks an ActInput (the body-size cap of 256 KiB is the caller's). Unknown keys
    /// are refused; a missing `kind` is inferred from the path's extension; each expected path is
    /// normalised to `build/<rel>`. Returns the input and its parsed [`Budgets`].
    pub fn parse(v: &Value) -> Result<(ActInput, Budgets), String> {
        let mut v = v.clone();
        let obj = v
            .as_object_mut()
            .ok_or("the run input must be a JSON object with skill_id and goal")?;
        // Clients often send `null` for an optional field they leave out; treat it as absent.
        obj.retain(|_, v| !v.is_null());
        if let Some(Value::Array(items)) = obj.get_mut("expected_outputs") {
            if items.len() > MAX_EXPECTED_OUTPUTS {
                return Err(format!("at most {MAX_EXPECTED_OUTPUTS} expected_outputs"));
            }
            for item in items.iter_mut() {
                if let Some(o) = item.as_object_mut() {
                    o.retain(|_, v| !v.is_null());
                    if !o.contains_key("kind") {
                        if let Some(p) = o.get("path").and_then(Value::as_str) {
                            let kind = OutputKind::infer(p).as_str();
                            o.insert("kind".into(), Value::from(kind));
                        }
                    }
                }
            }
        }
        let mut input: ActInput =
            serde_json::from_value(v).map_err(|e| format!("invalid run input: {e}"))?;

        super::id::parse_skill_ref(&input.skill_id).map_err(|e| format!("skill_id: {e}"))?;
        if input.goal.trim().is_empty() {
            return Err("goal is empty; say what the run should produce".into());
        }
        if input.goal.len() > MAX_GOAL_BYTES {
            return Err(format!("goal is longer than {MAX_GOAL_BYTES} bytes"));
        }
        if input.constraints.len() > MAX_CONSTRAINTS {
            return Err(format!("at most {MAX_CONSTRAINTS} constraints"));
        }
        if input
            .constraints
            .iter()
            .any(|c| c.len() > MAX_CONSTRAINT_BYTES)
        {
            return Err(format!(
                "each constraint is at most {MAX_CONSTRAINT_BYTES} bytes"
            ));
        }
        let inputs_len = serde_json::to_vec(&input.inputs)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if inputs_len > MAX_INPUTS_BYTES {
            return Err(format!(
                "inputs are {inputs_len} bytes as JSON; the limit is {MAX_INPUTS_BYTES}"
            ));
        }
        let mut seen: Vec<String> = Vec::new();
        for out in &mut input.expected_outputs {
            check_expected(out)?;
            if seen.contains(&out.path) {
                return Err(format!("expected output `{}` is listed twice", out.path));
            }
            seen.push(out.path.clone());
        }
        let budgets = Budgets::from_json(input.budgets.as_ref())?;
        Ok((input, budgets))
    }
}

fn check_expected(out: &mut ExpectedOutput) -> Result<(), String> {
    if !out.path.starts_with("build/") {
        return Err(format!(
            "expected output path `{}` must start with build/ (outputs are written under build/)",
            shorten(&out.path)
        ));
    }
    let tp = read_path(&out.path).map_err(|e| format!("expected output path: {e}"))?;
    if tp.area != Area::Build || tp.rel.is_empty() || out.path.ends_with('/') {
        return Err(format!(
            "expected output path `{}` must name a file under build/",
            shorten(&out.path)
        ));
    }
    out.path = format!("build/{}", tp.rel);
    let p = &out.path;
    if out.must_contain.len() > MAX_MUST_CONTAIN {
        return Err(format!(
            "{p}: at most {MAX_MUST_CONTAIN} must_contain strings"
        ));
    }
    if out
        .must_contain
        .iter()
        .any(|s| s.len() > MAX_MUST_CONTAIN_BYTES)
    {
        return Err(format!(
            "{p}: each must_contain string is at most {MAX_MUST_CONTAIN_BYTES} bytes"
        ));
    }
    if let Some(np) = &out.name_pattern {
        if np.chars().count() > MAX_NAME_PATTERN_CHARS || np.is_empty() {
            return Err(format!(
                "{p}: name_pattern must be 1 to {MAX_NAME_PATTERN_CHARS} characters"
            ));
        }
    }
    if let Some(schema) = &out.schema {
        if out.kind != OutputKind::Json {
            return Err(format!(
                "{p}: a schema applies only to kind json (this output is {})",
                out.kind.as_str()
            ));
        }
        let len = serde_json::to_vec(schema)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if len > MAX_SCHEMA_BYTES {
            return Err(format!(
                "{p}: schema is larger than {MAX_SCHEMA_BYTES} bytes"
            ));
        }
        super::validate::compile_schema(schema)
            .map_err(|e| format!("{p}: schema does not compile: {e}"))?;
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    s.chars().take(120).collect()
}

/// One artifact of the run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// `build/…`
    pub path: String,
    /// `act.<name>@N`
    pub name: String,
    pub version: u32,
    pub bytes: u64,
    pub sha256: String,
}

/// The problems of one expected output.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    pub path: String,
    pub problems: Vec<String>,
}

/// The three gates of §9.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub completeness: bool,
    pub compliance: bool,
    pub quality: bool,
    pub details: Vec<Detail>,
}

/// An unmet expectation, with what to do about it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unmet {
    pub item: String,
    pub reason: String,
    pub suggestion: String,
}

/// Why a run ended; serialised as the strings of §3 (`"validated"`, `"budget_exceeded:calls"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Validated,
    BudgetExceeded(Which),
    MissingRefs,
    ScriptFailed,
    SandboxViolation,
    NoProgress,
    ModelError,
}

impl ExitReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Validated => "validated",
            ExitReason::BudgetExceeded(Which::Calls) => "budget_exceeded:calls",
            ExitReason::BudgetExceeded(Which::Tokens) => "budget_exceeded:tokens",
            ExitReason::BudgetExceeded(Which::Time) => "budget_exceeded:time",
            ExitReason::BudgetExceeded(Which::Disk) => "budget_exceeded:disk",
            ExitReason::MissingRefs => "missing_refs",
            ExitReason::ScriptFailed => "script_failed",
            ExitReason::SandboxViolation => "sandbox_violation",
            ExitReason::NoProgress => "no_progress",
            ExitReason::ModelError => "model_error",
        }
    }

    /// The inverse of [`ExitReason::as_str`].
    pub fn parse(s: &str) -> Option<ExitReason> {
        Some(match s {
            "validated" => ExitReason::Validated,
            "missing_refs" => ExitReason::MissingRefs,
            "script_failed" => ExitReason::ScriptFailed,
            "sandbox_violation" => ExitReason::SandboxViolation,
            "no_progress" => ExitReason::NoProgress,
            "model_error" => ExitReason::ModelError,
            other => {
                ExitReason::BudgetExceeded(Which::parse(other.strip_prefix("budget_exceeded:")?)?)
            }
        })
    }
}

impl Serialize for ExitReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ExitReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ExitReason::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown exit_reason `{s}`")))
    }
}

/// What a step cost.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub tokens: u64,
    pub time_ms: u64,
}

/// One line of `evidence.jsonl` (§7, §15).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub tool: String,
    /// At most 5 lines.
    pub reason_short: String,
    pub inputs_digest: String,
    pub cost: Cost,
    pub diff_summary: String,
    pub file_ids: Vec<String>,
}

impl Evidence {
    /// Caps a reason at 5 lines and 400 characters (§7: `reason_short` ≤ 5 lines).
    pub fn short_reason(reason: &str) -> String {
        let lines: Vec<&str> = reason.trim().lines().take(5).collect();
        let joined = lines.join("\n");
        if joined.chars().count() <= 400 {
            joined
        } else {
            let mut cut: String = joined.chars().take(399).collect();
            cut.push('…');
            cut
        }
    }

    /// `sha256:<hex>` of the tool name and its arguments as compact JSON with object keys sorted
    /// (sorted here, not by serde_json: its `preserve_order` feature may be on in the workspace),
    /// so equal arguments give equal digests.
    pub fn inputs_digest(tool: &str, args: &Value) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(tool.as_bytes());
        h.update([0u8]);
        h.update(canonical(args).to_string().as_bytes());
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&o[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The run's counters (§7; at least these keys).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub model_calls: u64,
    /// Admitted tool calls.
    pub tool_calls: u64,
    pub tool_calls_executed: u64,
    pub tool_calls_from_memo: u64,
    /// `{name: admitted count}`.
    pub tool_calls_by_name: BTreeMap<String, u64>,
    pub script_runs: u64,
    pub script_failures: u64,
    pub script_retries: u64,
    pub l1_tokens: u64,
    pub l2_loads: u64,
    pub l3_reads: u64,
    pub l3_exec: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub bytes_truncated: u64,
}

/// The run's result (§3, §15).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActResult {
    pub run_id: String,
    /// `"succeeded"` iff `exit_reason == validated`, else `"failed"`; `"running"` while running.
    pub status: String,
    pub artifacts: Vec<ArtifactInfo>,
    pub validation: Validation,
    pub evidence_summary: Vec<Value>,
    pub metrics: Metrics,
    pub remaining_budgets: RemainingBudgets,
    pub unmet: Vec<Unmet>,
    /// `null` while the run is running.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub exit_reason: Option<ExitReason>,
    pub skill_id: String,
    /// `"host"` or `"container"`.
    pub isolation: String,
    pub model: Value,
}

impl ActResult {
    /// The `status` string for an exit reason (`None` = still running).
    pub fn status_for(exit: Option<ExitReason>) -> &'static str {
        match exit {
            None => "running",
            Some(ExitReason::Validated) => "succeeded",
            Some(_) => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<(ActInput, Budgets), String> {
        ActInput::parse(&v)
    }

    #[test]
    fn a_minimal_input() {
        let (i, b) = parse(json!({"skill_id": "brand", "goal": "Write a note"})).unwrap();
        assert_eq!(i.skill_id, "brand");
        assert!(i.expected_outputs.is_empty());
        assert_eq!(b, Budgets::default());
        let (i, _) = parse(json!({"skill_id": "a", "goal": "g", "inputs": null, "budgets": null,
            "constraints": null, "expected_outputs": [{"path": "build/a.md", "kind": null, "must_contain": null}]}))
        .unwrap();
        assert_eq!(i.expected_outputs[0].kind, OutputKind::Markdown);
    }

    #[test]
    fn a_full_input() {
        let (i, b) = parse(json!({
            "skill_id": "pack_1:docs/pptx", "goal": "g", "constraints": ["c"], "inputs": {"k": 1},
            "budgets": {"token_budget": 1000},
            "expected_outputs": [
                {"path": "build/a.json", "schema": {"type": "object"}, "must_contain": ["x"], "min_bytes": 3},
                {"path": "build/./b.md", "name_pattern": "*.md"},
                {"path": "build/c.htm"}, {"path": "build/d.txt"}, {"path": "build/e.bin"},
                {"path": "build/f.png", "kind": "binary"}
            ]
        }))
        .unwrap();
        assert_eq!(b.token_budget, 1000);
        let kinds: Vec<OutputKind> = i.expected_outputs.iter().map(|o| o.kind).collect();
        use OutputKind::*;
        assert_eq!(kinds, vec![Json, Markdown, Html, Text, Text, Binary]);
        assert_eq!(i.expected_outputs[1].path, "build/b.md");
    }

    #[test]
    fn every_refusal() {
        let long_goal = "g".repeat(8193);
        let cases = [
            (json!([]), "JSON object"),
            (json!({"goal": "g"}), "skill_id"),
            (json!({"skill_id": "a"}), "goal"),
            (
                json!({"skill_id": "a", "goal": "g", "extra": 1}),
                "unknown field `extra`",
            ),
            (json!({"skill_id": "../a", "goal": "g"}), "skill_id:"),
            (json!({"skill_id": "a", "goal": " "}), "goal is empty"),
            (
                json!({"skill_id": "a", "goal": long_goal}),
                "longer than 8192",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "constraints": vec!["c"; 33]}),
                "at most 32 constraints",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "constraints": ["c".repeat(1025)]}),
                "at most 1024 bytes",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "inputs": {"k": "x".repeat(70_000)}}),
                "inputs are",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "budgets": {"nope": 1}}),
                "unknown budget",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": vec![json!({"path": "build/a"}); 33]}),
                "at most 32 expected",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "a.md"}]}),
                "must start with build/",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/../a.md"}]}),
                "'..'",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/"}]}),
                "name a file",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/a", "kind": "pdf"}]}),
                "unknown variant",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/a", "mustContain": []}]}),
                "unknown field",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/a", "must_contain": vec!["x"; 33]}]}),
                "must_contain strings",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/a", "name_pattern": "x".repeat(257)}]}),
                "name_pattern",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/a.md", "schema": {}}]}),
                "only to kind json",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/a.json", "schema": {"type": 5}}]}),
                "does not compile",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/a.json", "schema": {"description": "x".repeat(70_000)}}]}),
                "larger than",
            ),
            (
                json!({"skill_id": "a", "goal": "g", "expected_outputs": [{"path": "build/a.md"}, {"path": "build/./a.md"}]}),
                "listed twice",
            ),
        ];
        for (v, want) in cases {
            let e =
                parse(v.clone()).expect_err(&v.to_string().chars().take(200).collect::<String>());
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn exit_reasons_round_trip_as_strings() {
        let all = [
            ExitReason::Validated,
            ExitReason::BudgetExceeded(Which::Calls),
            ExitReason::BudgetExceeded(Which::Tokens),
            ExitReason::BudgetExceeded(Which::Time),
            ExitReason::BudgetExceeded(Which::Disk),
            ExitReason::MissingRefs,
            ExitReason::ScriptFailed,
            ExitReason::SandboxViolation,
            ExitReason::NoProgress,
            ExitReason::ModelError,
        ];
        for r in all {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v, Value::from(r.as_str()));
            assert_eq!(serde_json::from_value::<ExitReason>(v).unwrap(), r);
        }
        assert_eq!(
            ExitReason::BudgetExceeded(Which::Calls).as_str(),
            "budget_exceeded:calls"
        );
        assert!(serde_json::from_value::<ExitReason>(json!("budget_exceeded:x")).is_err());
        assert_eq!(ActResult::status_for(None), "running");
        assert_eq!(
            ActResult::status_for(Some(ExitReason::Validated)),
            "succeeded"
        );
        assert_eq!(
            ActResult::status_for(Some(ExitReason::NoProgress)),
            "failed"
        );
    }

    #[test]
    fn evidence_helpers() {
        let r = Evidence::short_reason("1\n2\n3\n4\n5\n6\n7");
        assert_eq!(r, "1\n2\n3\n4\n5");
        assert_eq!(
            Evidence::short_reason(&"x".repeat(500)).chars().count(),
            400
        );
        let a = Evidence::inputs_digest("read_ref", &json!({"path": "a", "b": 1}));
        let b = Evidence::inputs_digest("read_ref", &json!({"b": 1, "path": "a"}));
        assert_eq!(a, b);
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
        assert_ne!(
            a,
            Evidence::inputs_digest("fs_read", &json!({"path": "a", "b": 1}))
        );
    }

    #[test]
    fn metrics_have_the_contract_keys() {
        let v = serde_json::to_value(Metrics::default()).unwrap();
        for k in [
            "input_tokens",
            "output_tokens",
            "model_calls",
            "tool_calls",
            "tool_calls_executed",
            "tool_calls_from_memo",
            "tool_calls_by_name",
            "script_runs",
            "script_failures",
            "l1_tokens",
            "l2_loads",
            "l3_reads",
            "l3_exec",
            "cache_hits",
            "cache_misses",
            "bytes_truncated",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn result_serialises_null_exit_reason_while_running() {
        let r = ActResult {
            run_id: "r".into(),
            status: "running".into(),
            artifacts: vec![],
            validation: Validation {
                completeness: false,
                compliance: false,
                quality: false,
                details: vec![],
            },
            evidence_summary: vec![],
            metrics: Metrics::default(),
            remaining_budgets: super::super::budget::Ledger::new(Budgets::default()).remaining(0),
            unmet: vec![],
            exit_reason: None,
            skill_id: "a".into(),
            isolation: "host".into(),
            model: json!({}),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["exit_reason"], Value::Null);
        assert_eq!(serde_json::from_value::<ActResult>(v).unwrap(), r);
    }
}
