//! Conditions for `when` and the `if` step (kernel contract §3.5).
//!
//! Grammar: `<operand> == <operand>`, `<operand> != <operand>`, or a lone operand judged by
//! truthiness. An operand is one `${ctx…}` reference or a literal: a JSON scalar (`true`, `3`,
//! `"quoted text"`, `null`) or a bare word (taken as a string). Conditions are parsed when the flow
//! is loaded, so a malformed one is a load error, not a surprise mid-run.

use crate::vars::{self, Reference};
use serde_json::{Map, Value};
use std::fmt;

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Ref(Reference),
    Literal(Value),
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Truthy(Operand),
    Equals(Operand, Operand),
    NotEquals(Operand, Operand),
}

/// Why a condition text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid condition {}: {reason}", crate::flow::quoted(text))]
pub struct ConditionError {
    pub text: String,
    pub reason: String,
}

impl Condition {
    /// Parses a condition. A YAML boolean or number given directly is accepted as its literal.
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let err = |reason: &str| ConditionError {
            text: text.to_string(),
            reason: reason.into(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err("the condition is empty"));
        }
        match find_operator(trimmed) {
            Some((at, op)) => {
                let left = trimmed[..at].trim();
                let right = trimmed[at + 2..].trim();
                if left.is_empty() || right.is_empty() {
                    return Err(err("both sides of the comparison are needed"));
                }
                if find_operator(right).is_some() {
                    return Err(err("only one comparison is allowed"));
                }
                let l = parse_operand(left).map_err(|r| err(&r))?;
                let r = parse_operand(right).map_err(|r| err(&r))?;
                Ok(if op == "==" {
                    Condition::Equals(l, r)
                } else {
                    Condition::NotEquals(l, r)
                })
            }
            None => Ok(Condition::Truthy(
                parse_operand(trimmed).map_err(|r| err(&r))?,
            )),
        }
    }

    /// Evaluates against the context.
    pub fn eval(&self, ctx: &Map<String, Value>) -> bool {
        match self {
            Condition::Truthy(op) => truthy(&op.value(ctx)),
            Condition::Equals(a, b) => json_eq(&a.value(ctx), &b.value(ctx)),
            Condition::NotEquals(a, b) => !json_eq(&a.value(ctx), &b.value(ctx)),
        }
    }
}

/// The condition in its canonical text form (what `GET /api/flows/{id}` shows).
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Truthy(op) => write!(f, "{op}"),
            Condition::Equals(a, b) => write!(f, "{a} == {b}"),
            Condition::NotEquals(a, b) => write!(f, "{a} != {b}"),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Ref(r) if r.path.is_empty() => write!(f, "${{ctx}}"),
            Operand::Ref(r) => write!(f, "${{ctx.{}}}", r.path.join(".")),
            Operand::Literal(v) => write!(f, "{v}"),
        }
    }
}

impl Operand {
    /// The operand's value, borrowed from the context where it can be: a condition on a large
    /// value must not copy it for every step that tests it.
    fn value<'a>(&'a self, ctx: &'a Map<String, Value>) -> std::borrow::Cow<'a, Value> {
        use std::borrow::Cow;
        match self {
            Operand::Ref(r) if r.path.is_empty() => Cow::Owned(r.resolve(ctx)),
            Operand::Ref(r) => r.lookup(ctx).map_or(Cow::Owned(Value::Null), Cow::Borrowed),
            Operand::Literal(v) => Cow::Borrowed(v),
        }
    }
}

/// Finds `==` or `!=` outside quotes and `${…}`.
fn find_operator(text: &str) -> Option<(usize, &'static str)> {
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    let mut in_ref = false;
    let mut i = 0;
    while i + 1 < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if in_ref => in_ref = b != b'}',
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'$' if bytes[i + 1] == b'{' => in_ref = true,
                b'=' if bytes[i + 1] == b'=' => return Some((i, "==")),
                b'!' if bytes[i + 1] == b'=' => return Some((i, "!=")),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

fn parse_operand(text: &str) -> Result<Operand, String> {
    if text.starts_with("${") {
        return vars::whole_reference(text)
            .map(Operand::Ref)
            .ok_or_else(|| {
                format!(
                    "{} is not a single ${{ctx…}} reference",
                    crate::flow::quoted(text)
                )
            });
    }
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        return Ok(Operand::Literal(Value::String(inner.to_string())));
    }
    if text.starts_with('"') {
        return serde_json::from_str::<String>(text)
            .map(|s| Operand::Literal(Value::String(s)))
            .map_err(|_| format!("{} is not a valid quoted string", crate::flow::quoted(text)));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Bool(_) | Value::Null | Value::Number(_))) => Ok(Operand::Literal(v)),
        _ if text.contains("${") => Err(format!(
            "{} mixes a reference with text",
            crate::flow::quoted(text)
        )),
        _ => Ok(Operand::Literal(Value::String(text.to_string()))),
    }
}

/// Truthiness: `false`, `null`, `0`, `""`, `"false"`, `[]` and `{}` are false.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !(s.is_empty() || s == "false"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn comparisons() {
        let c = ctx(json!({"enabled": true, "n": 3, "s": "on", "x": {"y": "a b"}}));
        let t = |s: &str| Condition::parse(s).unwrap().eval(&c);
        assert!(t("${ctx.enabled} == true"));
        assert!(!t("${ctx.enabled} != true"));
        assert!(t("${ctx.n} == 3"));
        assert!(t("${ctx.n} == 3.0"));
        assert!(!t("${ctx.n} == \"3\""));
        assert!(t("${ctx.s} == on"));
        assert!(t("${ctx.s} == 'on'"));
        assert!(t("${ctx.x.y} == \"a b\""));
        assert!(t("${ctx.missing} == null"));
        assert!(t("${ctx.missing} != on"));
        assert!(t("${ctx.s}==on"));
    }

    #[test]
    fn truthiness() {
        let c = ctx(json!({
            "f": false, "z": 0, "e": "", "fs": "false", "l": [], "o": {}, "n": null,
            "t": true, "one": 1, "str": "x", "ll": [0], "oo": {"a": 1}
        }));
        for k in ["f", "z", "e", "fs", "l", "o", "n", "missing"] {
            assert!(
                !Condition::parse(&format!("${{ctx.{k}}}")).unwrap().eval(&c),
                "{k}"
            );
        }
        for k in ["t", "one", "str", "ll", "oo"] {
            assert!(
                Condition::parse(&format!("${{ctx.{k}}}")).unwrap().eval(&c),
                "{k}"
            );
        }
        assert!(Condition::parse("true").unwrap().eval(&c));
        assert!(!Condition::parse("false").unwrap().eval(&c));
    }

    #[test]
    fn operators_inside_quotes_and_refs_are_data() {
        let c = ctx(json!({"s": "a==b"}));
        assert!(Condition::parse("${ctx.s} == \"a==b\"").unwrap().eval(&c));
        assert!(Condition::parse("'x != y'").unwrap().eval(&c));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "${ctx.a.b} == true",
            "${ctx.n} != 3",
            "${ctx}",
            "\"on\"",
            "${ctx.s} == \"a b\"",
        ] {
            let c = Condition::parse(text).unwrap();
            assert_eq!(
                Condition::parse(&c.to_string()).unwrap(),
                c,
                "{text} -> {c}"
            );
        }
        assert_eq!(
            Condition::parse("${ctx.a}==1").unwrap().to_string(),
            "${ctx.a} == 1"
        );
    }

    #[test]
    fn bad_conditions_are_refused() {
        for bad in [
            "",
            "  ",
            "== 1",
            "${ctx.a} ==",
            "${ctx.a} == 1 == 2",
            "${ctx.a",
            "x${ctx.a} == 1",
            "\"unterminated == 1",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    proptest! {
        /// `==` and `!=` are exact complements for any stored value and literal.
        #[test]
        fn eq_ne_complement(n in any::<i32>(), m in any::<i32>()) {
            let c = ctx(json!({"v": n}));
            let eq = Condition::parse(&format!("${{ctx.v}} == {m}")).unwrap().eval(&c);
            let ne = Condition::parse(&format!("${{ctx.v}} != {m}")).unwrap().eval(&c);
            prop_assert_eq!(eq, n == m);
            prop_assert_eq!(ne, n != m);
        }

        /// A number is truthy exactly when it is not zero; a string exactly when not "" / "false".
        #[test]
        fn scalar_truthiness(n in any::<i64>(), s in "[a-z]{0,6}") {
            let c = ctx(json!({"n": n, "s": s}));
            prop_assert_eq!(Condition::parse("${ctx.n}").unwrap().eval(&c), n != 0);
            prop_assert_eq!(Condition::parse("${ctx.s}").unwrap().eval(&c), !(s.is_empty() || s == "false"));
        }

        /// Parsing never panics, whatever the text.
        #[test]
        fn parse_total(s in ".{0,40}") {
            let _ = Condition::parse(&s);
        }
    }
}
