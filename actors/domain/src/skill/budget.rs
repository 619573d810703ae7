//! Budgets and the ledger the BudgetGuard actor holds (contract §6, §15).
//!
//! Budgets are enforced in code, not in prompts: a tool call is admitted or refused *before* it
//! runs, tokens are charged from every model response, and every write is counted against the
//! disk limit. The ledger is pure; the actor feeds it the elapsed time.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A run's limits (the `budgets` object of the ActInput, over these defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    pub max_tool_calls: u32,
    pub time_budget_ms: u64,
    pub token_budget: u64,
    pub script_timeout_s: u32,
    pub disk_write_limit_mb: u32,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_tool_calls: 24,
            time_budget_ms: 120_000,
            token_budget: 60_000,
            script_timeout_s: 20,
            disk_write_limit_mb: 50,
        }
    }
}

/// The highest value each budget key accepts (a caller cannot buy an unbounded run).
const CAPS: [(&str, u64); 5] = [
    ("max_tool_calls", 1000),
    ("time_budget_ms", 3_600_000),
    ("token_budget", 10_000_000),
    ("script_timeout_s", 600),
    ("disk_write_limit_mb", 1024),
];

impl Budgets {
    /// A partial JSON object over the defaults (`None` or `null` = all defaults). Unknown keys,
    /// non-integers, 0 and values above the caps are refused with a message naming the key.
    pub fn from_json(v: Option<&Value>) -> Result<Budgets, String> {
        let mut b = Budgets::default();
        let obj = match v {
            None | Some(Value::Null) => return Ok(b),
            Some(Value::Object(o)) => o,
            Some(_) => {
                return Err("budgets must be an object like {\"token_budget\": 20000}".into())
            }
        };
        for (key, value) in obj {
            let Some((_, cap)) = CAPS.iter().find(|(k, _)| k == key) else {
                let known: Vec<&str> = CAPS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown budget `{key}`; the budgets are {}",
                    known.join(", ")
                ));
            };
            let n = value
                .as_u64()
                .ok_or_else(|| format!("budget `{key}` must be a positive integer"))?;
            if n == 0 || n > *cap {
                return Err(format!("budget `{key}` must be between 1 and {cap}"));
            }
            // The caps keep every value within u32 where the field is u32.
            match key.as_str() {
                "max_tool_calls" => b.max_tool_calls = n as u32,
                "time_budget_ms" => b.time_budget_ms = n,
                "token_budget" => b.token_budget = n,
                "script_timeout_s" => b.script_timeout_s = n as u32,
                _ => b.disk_write_limit_mb = n as u32,
            }
        }
        Ok(b)
    }

    fn disk_limit_bytes(&self) -> u64 {
        u64::from(self.disk_write_limit_mb) * 1024 * 1024
    }
}

/// Which budget ended (or would end) the run. Serialised as [`Which::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    Calls,
    Tokens,
    Time,
    Disk,
}

impl Which {
    /// `"calls"`, `"tokens"`, `"time"`, `"disk"` (the suffix of `budget_exceeded:`).
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Calls => "calls",
            Which::Tokens => "tokens",
            Which::Time => "time",
            Which::Disk => "disk",
        }
    }

    /// The key of `budgets` this kind is set by.
    pub fn budget_key(self) -> &'static str {
        match self {
            Which::Calls => "max_tool_calls",
            Which::Tokens => "token_budget",
            Which::Time => "time_budget_ms",
            Which::Disk => "disk_write_limit_mb",
        }
    }

    /// The inverse of [`Which::as_str`].
    pub fn parse(s: &str) -> Option<Which> {
        match s {
            "calls" => Some(Which::Calls),
            "tokens" => Some(Which::Tokens),
            "time" => Some(Which::Time),
            "disk" => Some(Which::Disk),
            _ => None,
        }
    }
}

/// What is left of each budget, under the `budgets` keys (§15).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemainingBudgets {
    pub max_tool_calls: u32,
    pub time_budget_ms: u64,
    /// `token_budget − (input_tokens + output_tokens)`, saturating at 0.
    pub token_budget: u64,
    /// Echoes the budget (each script gets the whole timeout).
    pub script_timeout_s: u32,
    /// Megabytes left, rounded to 3 decimals.
    pub disk_write_limit_mb: f64,
}

/// The pure ledger the BudgetGuard actor holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    budgets: Budgets,
    calls: u32,
    by_name: BTreeMap<String, u32>,
    input_tokens: u64,
    output_tokens: u64,
    disk_bytes: u64,
}

impl Ledger {
    /// An empty ledger over `b`.
    pub fn new(b: Budgets) -> Ledger {
        Ledger {
            budgets: b,
            calls: 0,
            by_name: BTreeMap::new(),
            input_tokens: 0,
            output_tokens: 0,
            disk_bytes: 0,
        }
    }

    /// The budgets this ledger enforces.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// Admits one tool call before it runs. Checked in order: time (`elapsed_ms >=
    /// time_budget_ms`), tokens (`input + output >= token_budget`), calls (already `max_tool_calls`
    /// admitted). An admitted call is counted in total and under its name.
    pub fn admit(&mut self, tool: &str, elapsed_ms: u64) -> Result<(), Which> {
        if elapsed_ms >= self.budgets.time_budget_ms {
            return Err(Which::Time);
        }
        if self.total_tokens() >= self.budgets.token_budget {
            return Err(Which::Tokens);
        }
        if self.calls >= self.budgets.max_tool_calls {
            return Err(Which::Calls);
        }
        self.calls += 1;
        *self.by_name.entry(tool.to_string()).or_insert(0) += 1;
        Ok(())
    }

    /// Charges a model response. It is charged in any case (the tokens were spent); `Err(Tokens)`
    /// when the total now passes `token_budget`, so its tool calls are refused.
    pub fn charge_tokens(&mut self, input: u64, output: u64) -> Result<(), Which> {
        self.input_tokens = self.input_tokens.saturating_add(input);
        self.output_tokens = self.output_tokens.saturating_add(output);
        if self.total_tokens() > self.budgets.token_budget {
            Err(Which::Tokens)
        } else {
            Ok(())
        }
    }

    /// Admits a write of `bytes`: counted only when admitted; `Err(Disk)` when it would pass the
    /// limit.
    pub fn admit_disk(&mut self, bytes: u64) -> Result<(), Which> {
        let after = self.disk_bytes.saturating_add(bytes);
        if after > self.budgets.disk_limit_bytes() {
            return Err(Which::Disk);
        }
        self.disk_bytes = after;
        Ok(())
    }

    /// `(input_tokens, output_tokens)` charged so far.
    pub fn tokens(&self) -> (u64, u64) {
        (self.input_tokens, self.output_tokens)
    }

    /// Tool calls admitted so far.
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// Admitted tool calls by tool name.
    pub fn calls_by_name(&self) -> &BTreeMap<String, u32> {
        &self.by_name
    }

    /// Bytes written so far (admitted writes).
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// What is left, `elapsed_ms` into the run.
    /// Whether a request of (at least) `tokens` can still be paid for: checked before it is
    /// sent, so one huge request cannot overshoot the budget by its whole size.
    pub fn admit_request(&self, tokens: u64) -> Result<(), Which> {
        if self.total_tokens().saturating_add(tokens) > self.budgets.token_budget {
            Err(Which::Tokens)
        } else {
            Ok(())
        }
    }

    /// Disk bytes the run may still write.
    pub fn disk_left(&self) -> u64 {
        self.budgets
            .disk_limit_bytes()
            .saturating_sub(self.disk_bytes)
    }

    pub fn remaining(&self, elapsed_ms: u64) -> RemainingBudgets {
        let left_bytes = self
            .budgets
            .disk_limit_bytes()
            .saturating_sub(self.disk_bytes);
        let mb = left_bytes as f64 / (1024.0 * 1024.0);
        RemainingBudgets {
            max_tool_calls: self.budgets.max_tool_calls.saturating_sub(self.calls),
            time_budget_ms: self.budgets.time_budget_ms.saturating_sub(elapsed_ms),
            token_budget: self
                .budgets
                .token_budget
                .saturating_sub(self.total_tokens()),
            script_timeout_s: self.budgets.script_timeout_s,
            disk_write_limit_mb: (mb * 1000.0).round() / 1000.0,
        }
    }

    fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn defaults_and_partial_objects() {
        assert_eq!(Budgets::from_json(None), Ok(Budgets::default()));
        assert_eq!(
            Budgets::from_json(Some(&Value::Null)),
            Ok(Budgets::default())
        );
        let b =
            Budgets::from_json(Some(&json!({"token_budget": 500, "max_tool_calls": 3}))).unwrap();
        assert_eq!(b.token_budget, 500);
        assert_eq!(b.max_tool_calls, 3);
        assert_eq!(b.time_budget_ms, 120_000);
        assert_eq!(b.script_timeout_s, 20);
        assert_eq!(b.disk_write_limit_mb, 50);
        let max = json!({"max_tool_calls": 1000, "time_budget_ms": 3_600_000, "token_budget": 10_000_000,
            "script_timeout_s": 600, "disk_write_limit_mb": 1024});
        assert!(Budgets::from_json(Some(&max)).is_ok());
    }

    #[test]
    fn refusals_name_the_key() {
        for (v, want) in [
            (json!({"tokens": 5}), "unknown budget `tokens`"),
            (
                json!({"token_budget": 0}),
                "`token_budget` must be between 1",
            ),
            (
                json!({"token_budget": 10_000_001}),
                "`token_budget` must be between 1 and 10000000",
            ),
            (json!({"max_tool_calls": 1001}), "`max_tool_calls`"),
            (json!({"time_budget_ms": 3_600_001}), "`time_budget_ms`"),
            (json!({"script_timeout_s": 601}), "`script_timeout_s`"),
            (
                json!({"disk_write_limit_mb": 1025}),
                "`disk_write_limit_mb`",
            ),
            (
                json!({"max_tool_calls": 2.5}),
                "`max_tool_calls` must be a positive integer",
            ),
            (json!({"max_tool_calls": -1}), "positive integer"),
            (json!({"max_tool_calls": "3"}), "positive integer"),
            (json!([1]), "must be an object"),
        ] {
            let e = Budgets::from_json(Some(&v)).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    fn small() -> Budgets {
        Budgets {
            max_tool_calls: 2,
            time_budget_ms: 1000,
            token_budget: 100,
            script_timeout_s: 5,
            disk_write_limit_mb: 1,
        }
    }

    #[test]
    fn admit_checks_time_then_tokens_then_calls() {
        let mut l = Ledger::new(small());
        assert_eq!(l.admit("read_ref", 0), Ok(()));
        assert_eq!(l.admit("read_ref", 999), Ok(()));
        assert_eq!(l.admit("validate", 10), Err(Which::Calls));
        assert_eq!(l.admit("validate", 1000), Err(Which::Time));
        assert_eq!(l.calls(), 2);
        assert_eq!(l.calls_by_name().get("read_ref"), Some(&2));
        assert_eq!(l.calls_by_name().get("validate"), None);
        l.charge_tokens(60, 40).unwrap();
        assert_eq!(l.admit("x", 10), Err(Which::Tokens));
        assert_eq!(l.admit("x", 5000), Err(Which::Time));
    }

    #[test]
    fn tokens_are_charged_even_when_they_pass_the_budget() {
        let mut l = Ledger::new(small());
        assert_eq!(l.charge_tokens(50, 50), Ok(()));
        assert_eq!(l.charge_tokens(1, 0), Err(Which::Tokens));
        assert_eq!(l.tokens(), (51, 50));
        assert_eq!(l.remaining(0).token_budget, 0);
    }

    #[test]
    fn disk_is_counted_only_when_admitted() {
        let mut l = Ledger::new(small());
        assert_eq!(l.admit_disk(1024 * 1024 - 1), Ok(()));
        assert_eq!(l.admit_disk(2), Err(Which::Disk));
        assert_eq!(l.disk_bytes(), 1024 * 1024 - 1);
        assert_eq!(l.admit_disk(1), Ok(()));
        assert_eq!(l.remaining(0).disk_write_limit_mb, 0.0);
    }

    #[test]
    fn remaining_uses_the_budget_keys() {
        let mut l = Ledger::new(Budgets::default());
        l.admit("a", 0).unwrap();
        l.charge_tokens(1000, 234).unwrap();
        l.admit_disk(512 * 1024).unwrap();
        let r = l.remaining(20_000);
        assert_eq!(r.max_tool_calls, 23);
        assert_eq!(r.time_budget_ms, 100_000);
        assert_eq!(r.token_budget, 60_000 - 1234);
        assert_eq!(r.script_timeout_s, 20);
        assert_eq!(r.disk_write_limit_mb, 49.5);
        assert_eq!(l.remaining(200_000).time_budget_ms, 0);
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5);
        assert_eq!(Which::Disk.as_str(), "disk");
        assert_eq!(Which::parse("calls"), Some(Which::Calls));
        for w in [Which::Calls, Which::Tokens, Which::Time, Which::Disk] {
            assert_eq!(serde_json::to_value(w).unwrap(), Value::from(w.as_str()));
            assert_eq!(Which::parse(w.as_str()), Some(w));
        }
    }

    proptest! {
        #[test]
        fn the_ledger_never_passes_its_limits(
            ops in proptest::collection::vec((0u8..3, 0u64..5000), 0..200),
            max_calls in 1u32..30,
        ) {
            let b = Budgets { max_tool_calls: max_calls, token_budget: 20_000, disk_write_limit_mb: 1, ..Budgets::default() };
            let mut l = Ledger::new(b);
            for (op, n) in ops {
                match op {
                    0 => { let _ = l.admit("t", 0); }
                    1 => { let _ = l.charge_tokens(n, n / 2); }
                    _ => { let _ = l.admit_disk(n * 100); }
                }
                prop_assert!(l.calls() <= max_calls);
                prop_assert!(l.disk_bytes() <= 1024 * 1024);
                let r = l.remaining(0);
                let (i, o) = l.tokens();
                prop_assert_eq!(r.token_budget, 20_000u64.saturating_sub(i + o));
                prop_assert!(r.disk_write_limit_mb >= 0.0);
                prop_assert_eq!(l.calls_by_name().values().sum::<u32>(), l.calls());
            }
        }
    }
}
