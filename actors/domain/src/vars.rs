//! Variable resolution (`${ctx.a.b}`), exactly as the kernel contract §3.4 says.
//!
//! * A string that is exactly one reference takes the referenced value with its type.
//! * A reference embedded in a longer string is replaced by the value's JSON text, strings unquoted.
//! * `${ctx.items.0}` indexes arrays; a missing path is `null`.
//! * Values are resolved **exactly once**: text that came out of the context is data and is never
//!   scanned again. The original kernel expanded twice, so user input such as `"${ctx.secret}"`
//!   could read other context keys; a single pass over the *template* (never over substituted text)
//!   makes that impossible by construction.
//!
//! Only references rooted at `ctx` are expanded; any other `${…}` text is left as it is.

use serde_json::{Map, Value};

/// A parsed `${ctx…}` reference: the path below the context root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub path: Vec<String>,
}

impl Reference {
    /// Parses the text between `${` and `}`. Returns `None` for anything not rooted at `ctx`.
    pub fn parse(inner: &str) -> Option<Reference> {
        let inner = inner.trim();
        let rest = inner.strip_prefix("ctx")?;
        if rest.is_empty() {
            return Some(Reference { path: Vec::new() });
        }
        let rest = rest.strip_prefix('.')?;
        let path: Vec<String> = rest.split('.').map(str::to_string).collect();
        if path
            .iter()
            .any(|segment| segment.is_empty() || segment.contains(['$', '{']))
        {
            return None;
        }
        Some(Reference { path })
    }

    /// Looks the reference up in `ctx`; a missing path is `None` (which resolves to `null`).
    pub fn lookup<'a>(&self, ctx: &'a Map<String, Value>) -> Option<&'a Value> {
        let mut segments = self.path.iter();
        let Some(first) = segments.next() else {
            return None; // `${ctx}` is handled by `resolve_reference`, which needs an owned value.
        };
        let mut current = ctx.get(first.as_str())?;
        for segment in segments {
            current = step_into(current, segment)?;
        }
        Some(current)
    }

    /// The referenced value, `null` when missing.
    pub fn resolve(&self, ctx: &Map<String, Value>) -> Value {
        if self.path.is_empty() {
            return Value::Object(ctx.clone());
        }
        self.lookup(ctx).cloned().unwrap_or(Value::Null)
    }
}

/// One step of a path: by key into objects, by index into arrays.
pub fn step_into<'a>(value: &'a Value, segment: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Ref(Reference),
}

/// Splits a string into literal text and references. Unterminated `${` and non-`ctx` references
/// stay literal text.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut literal_start = 0usize;
    let mut consumed = 0usize;
    while let Some(open) = rest.find("${") {
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find('}') else {
            break;
        };
        let inner = &after_open[..close];
        let abs_open = consumed + open;
        let abs_end = abs_open + 2 + close + 1;
        if let Some(reference) = Reference::parse(inner) {
            if abs_open > literal_start {
                out.push(Piece::Text(&template[literal_start..abs_open]));
            }
            out.push(Piece::Ref(reference));
            literal_start = abs_end;
        }
        consumed = if Reference::parse(inner).is_some() {
            abs_end
        } else {
            abs_open + 2
        };
        rest = &template[consumed..];
    }
    if literal_start < template.len() {
        out.push(Piece::Text(&template[literal_start..]));
    }
    out
}

/// If `s` is exactly one reference and nothing else, returns it.
pub fn whole_reference(s: &str) -> Option<Reference> {
    let parts = pieces(s);
    match parts.as_slice() {
        [Piece::Ref(r)] => Some(r.clone()),
        _ => None,
    }
}

/// The text a value takes when embedded in a longer string: strings unquoted, everything else
/// as compact JSON.
pub fn embed_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Resolves one string template against the context.
pub fn resolve_str(template: &str, ctx: &Map<String, Value>) -> Value {
    let parts = pieces(template);
    match parts.as_slice() {
        [] => Value::String(String::new()),
        [Piece::Ref(r)] => r.resolve(ctx),
        _ => {
            let mut out = String::with_capacity(template.len());
            for part in &parts {
                match part {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Ref(r) => out.push_str(&embed_text(&r.resolve(ctx))),
                }
            }
            Value::String(out)
        }
    }
}

/// Resolves every string inside a JSON template (object values and array items; keys are never
/// expanded). One pass: substituted values are not looked at again.
pub fn resolve(template: &Value, ctx: &Map<String, Value>) -> Value {
    match template {
        Value::String(s) => {
            if s.contains("${") {
                resolve_str(s, ctx)
            } else {
                template.clone()
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, ctx)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve(v, ctx)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Deepest nesting of arrays and objects a value in a run's context may have (the same bound as
/// a block's result). Every walk of a value (cloning, serialising, reading a record back, whose
/// parser stops at 128 levels) recurses once per level: without a bound a flow that wraps a value
/// in a few more levels per step overflows the kernel's stack.
pub const MAX_VALUE_DEPTH: usize = 100;

/// A resolved value would pass its byte limit (`limit` bytes) or [`MAX_VALUE_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    #[error("a resolved value would be larger than {limit} bytes")]
    Bytes { limit: usize },
    #[error("a resolved value would be nested deeper than {MAX_VALUE_DEPTH} levels")]
    Depth,
}

impl TooLarge {
    /// The byte limit, for a byte refusal.
    pub fn limit(&self) -> Option<usize> {
        match self {
            TooLarge::Bytes { limit } => Some(*limit),
            TooLarge::Depth => None,
        }
    }
}

/// The size of `value` as compact JSON, counted only up to `limit`: any result above `limit`
/// means "too large", and the walk stops there, so measuring a huge value costs no more than
/// `limit` steps. String escapes are counted at their longest (`\u00XX`), so the figure is never
/// below what the value occupies as text.
pub fn json_size(value: &Value, limit: usize) -> usize {
    measure(value, limit).bytes
}

/// What [`measure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// As [`json_size`].
    pub bytes: usize,
    /// Nesting of arrays and objects (a scalar is 0, `[1]` is 1), counted until the byte limit.
    pub depth: usize,
}

/// Size and depth of `value` in one walk, with an explicit stack (no recursion, so any depth is
/// measured safely), stopping once `limit` bytes are passed.
pub fn measure(value: &Value, limit: usize) -> Measure {
    let mut m = Measure { bytes: 0, depth: 0 };
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, level)) = stack.pop() {
        if m.bytes > limit {
            break;
        }
        match v {
            Value::Null => m.bytes += 4,
            Value::Bool(_) => m.bytes += 5,
            Value::Number(x) => m.bytes += x.to_string().len(),
            Value::String(s) => m.bytes += str_size(s),
            Value::Array(items) => {
                m.depth = m.depth.max(level + 1);
                m.bytes += 2 + items.len();
                stack.extend(items.iter().rev().map(|i| (i, level + 1)));
            }
            Value::Object(map) => {
                m.depth = m.depth.max(level + 1);
                m.bytes += 2 + map.len();
                for (k, item) in map {
                    m.bytes += str_size(k) + 1;
                    stack.push((item, level + 1));
                }
            }
        }
    }
    m
}

fn str_size(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// [`resolve`] with a cap: every resolved string, and the resolved template as a whole, stay
/// within `limit` bytes (as JSON), or the resolution stops with [`TooLarge`] before allocating
/// past it. Without it, a chain of steps each setting `"${ctx.k}${ctx.k}"` doubles a value per
/// step and reaches gigabytes in about forty synchronous steps, which no deadline interrupts.
pub fn resolve_capped(
    template: &Value,
    ctx: &Map<String, Value>,
    limit: usize,
) -> Result<Value, TooLarge> {
    let mut used = 0usize;
    let v = resolve_within(template, ctx, limit, &mut used)?;
    // The template's own levels plus a referenced value's: bounded (YAML depth + context depth),
    // so building it was safe; keeping it must not deepen the context.
    if measure(&v, usize::MAX).depth > MAX_VALUE_DEPTH {
        return Err(TooLarge::Depth);
    }
    Ok(v)
}

fn resolve_within(
    template: &Value,
    ctx: &Map<String, Value>,
    limit: usize,
    used: &mut usize,
) -> Result<Value, TooLarge> {
    let charge = |n: usize, used: &mut usize| -> Result<(), TooLarge> {
        *used = used.saturating_add(n);
        if *used > limit {
            Err(TooLarge::Bytes { limit })
        } else {
            Ok(())
        }
    };
    match template {
        Value::String(s) if s.contains("${") => {
            // What is left of the budget bounds this string; a refusal names the whole limit.
            let v = resolve_str_capped(s, ctx, limit.saturating_sub(*used))
                .map_err(|_| TooLarge::Bytes { limit })?;
            charge(json_size(&v, limit), used)?;
            Ok(v)
        }
        Value::Array(items) => {
            charge(2, used)?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(resolve_within(item, ctx, limit, used)?);
                charge(1, used)?;
            }
            Ok(Value::Array(out))
        }
        Value::Object(map) => {
            charge(2, used)?;
            let mut out = Map::new();
            for (k, v) in map {
                charge(str_size(k) + 2, used)?;
                out.insert(k.clone(), resolve_within(v, ctx, limit, used)?);
            }
            Ok(Value::Object(out))
        }
        other => {
            charge(json_size(other, limit), used)?;
            Ok(other.clone())
        }
    }
}

/// [`resolve_str`] that measures before it copies: a whole reference is measured in place, and
/// an embedded one is written into the output only while the output stays within `limit`.
fn resolve_str_capped(
    template: &str,
    ctx: &Map<String, Value>,
    limit: usize,
) -> Result<Value, TooLarge> {
    let measure = |r: &Reference| -> usize {
        if r.path.is_empty() {
            let mut n = 2 + ctx.len();
            for (k, v) in ctx {
                n += str_size(k) + 1 + json_size(v, limit);
                if n > limit {
                    break;
                }
            }
            n
        } else {
            r.lookup(ctx).map_or(4, |v| json_size(v, limit))
        }
    };
    let parts = pieces(template);
    match parts.as_slice() {
        [] => Ok(Value::String(String::new())),
        [Piece::Ref(r)] => {
            if measure(r) > limit {
                return Err(TooLarge::Bytes { limit });
            }
            Ok(r.resolve(ctx))
        }
        _ => {
            let mut out = String::with_capacity(template.len().min(limit));
            for part in &parts {
                match part {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Ref(r) => {
                        // The JSON size bounds the embedded text (strings lose their quotes).
                        if out.len().saturating_add(measure(r)) > limit.saturating_add(2) {
                            return Err(TooLarge::Bytes { limit });
                        }
                        out.push_str(&embed_text(&r.resolve(ctx)));
                    }
                }
                if out.len() > limit {
                    return Err(TooLarge::Bytes { limit });
                }
            }
            Ok(Value::String(out))
        }
    }
}

/// Reads a dotted key (`a.b.0`) from the context, as `kernel:ctx.get` does.
pub fn get_path(ctx: &Map<String, Value>, key: &str) -> Option<Value> {
    let mut segments = key.split('.');
    let first = segments.next()?;
    let mut current = ctx.get(first)?;
    for segment in segments {
        current = step_into(current, segment)?;
    }
    Some(current.clone())
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
    fn whole_reference_keeps_type() {
        let c = ctx(json!({"n": 5, "o": {"a": [1, {"b": true}]}, "s": "x"}));
        assert_eq!(resolve_str("${ctx.n}", &c), json!(5));
        assert_eq!(resolve_str("${ctx.o.a.1.b}", &c), json!(true));
        assert_eq!(resolve_str("${ctx.o.a.0}", &c), json!(1));
        assert_eq!(resolve_str("${ctx.o}", &c), json!({"a": [1, {"b": true}]}));
        assert_eq!(resolve_str("${ ctx.s }", &c), json!("x"));
    }

    #[test]
    fn missing_is_null() {
        let c = ctx(json!({"a": {"b": 1}, "l": [1]}));
        assert_eq!(resolve_str("${ctx.nope}", &c), Value::Null);
        assert_eq!(resolve_str("${ctx.a.b.c}", &c), Value::Null);
        assert_eq!(resolve_str("${ctx.l.5}", &c), Value::Null);
        assert_eq!(resolve_str("${ctx.l.x}", &c), Value::Null);
        assert_eq!(resolve_str("v=${ctx.nope}", &c), json!("v=null"));
    }

    #[test]
    fn embedded_references_use_json_text() {
        let c = ctx(json!({"name": "Ann", "n": 2, "o": {"k": "v"}, "l": [1, "a"]}));
        assert_eq!(resolve_str("Hello, ${ctx.name}!", &c), json!("Hello, Ann!"));
        assert_eq!(resolve_str("${ctx.n}${ctx.n}", &c), json!("22"));
        assert_eq!(resolve_str("o=${ctx.o}", &c), json!("o={\"k\":\"v\"}"));
        assert_eq!(resolve_str("l=${ctx.l}", &c), json!("l=[1,\"a\"]"));
    }

    #[test]
    fn non_ctx_and_unterminated_stay_literal() {
        let c = ctx(json!({"a": 1}));
        assert_eq!(resolve_str("${HOME}/x", &c), json!("${HOME}/x"));
        assert_eq!(resolve_str("${ctx.a", &c), json!("${ctx.a"));
        assert_eq!(resolve_str("${env.a} ${ctx.a}", &c), json!("${env.a} 1"));
        assert_eq!(resolve_str("${ctx..a}", &c), json!("${ctx..a}"));
    }

    #[test]
    fn resolved_exactly_once() {
        // The input holds reference text; it must come out as data, not be expanded again.
        let c = ctx(json!({"user": "${ctx.secret}", "secret": "s3cr3t"}));
        assert_eq!(resolve_str("${ctx.user}", &c), json!("${ctx.secret}"));
        assert_eq!(
            resolve_str("said: ${ctx.user}", &c),
            json!("said: ${ctx.secret}")
        );
        let t = json!({"a": ["${ctx.user}", {"b": "x${ctx.user}"}]});
        assert_eq!(
            resolve(&t, &c),
            json!({"a": ["${ctx.secret}", {"b": "x${ctx.secret}"}]})
        );
    }

    #[test]
    fn keys_are_not_expanded() {
        let c = ctx(json!({"a": 1}));
        let t = json!({"${ctx.a}": "${ctx.a}"});
        assert_eq!(resolve(&t, &c), json!({"${ctx.a}": 1}));
    }

    #[test]
    fn json_size_matches_compact_json_for_plain_values() {
        for v in [
            json!(null),
            json!(true),
            json!(12.5),
            json!("abc"),
            json!([1, "x", {"k": [null]}]),
            json!({"a": {"b": "c"}, "d": []}),
        ] {
            assert!(json_size(&v, usize::MAX) >= v.to_string().len(), "{v}");
        }
        assert_eq!(json_size(&json!({"a": [1, 2]}), usize::MAX), 13);
        // Escapes are counted at their longest, never below the text.
        let tricky = json!("\"\\\n\u{1}");
        assert!(json_size(&tricky, usize::MAX) >= tricky.to_string().len());
    }

    /// The doubling chain of the hardening review: each step sets `k{n} = "${ctx.k{n-1}}${ctx.k{n-1}}"`.
    /// With a cap, the step that would pass it is refused before anything that large exists.
    #[test]
    fn doubling_stops_at_the_cap() {
        let limit = 1 << 20;
        let mut c = ctx(json!({"k0": "xxxxxxxxxxxxxxxx"}));
        let mut refused_at = None;
        for n in 1..40 {
            let t = json!(format!("${{ctx.k{}}}${{ctx.k{}}}", n - 1, n - 1));
            match resolve_capped(&t, &c, limit) {
                Ok(v) => {
                    assert!(json_size(&v, usize::MAX) <= limit);
                    c.insert(format!("k{n}"), v);
                }
                Err(e) => {
                    assert_eq!(e, TooLarge::Bytes { limit });
                    refused_at = Some(n);
                    break;
                }
            }
        }
        // 16 bytes doubled 16 times is 1 MiB (plus quotes): the 16th doubling is refused.
        assert_eq!(refused_at, Some(16));
    }

    #[test]
    fn whole_references_and_containers_are_capped_too() {
        let big = "y".repeat(1000);
        let c = ctx(json!({"big": big, "n": 1}));
        assert!(resolve_capped(&json!("${ctx.big}"), &c, 500).is_err());
        assert!(resolve_capped(&json!("${ctx}"), &c, 500).is_err());
        assert!(resolve_capped(&json!(["${ctx.big}", "${ctx.big}"]), &c, 1500).is_err());
        assert!(resolve_capped(&json!({"a": "${ctx.big}", "b": "${ctx.big}"}), &c, 1500).is_err());
        assert_eq!(
            resolve_capped(&json!({"a": ["${ctx.n}", "v${ctx.n}"]}), &c, 100),
            Ok(json!({"a": [1, "v1"]}))
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z${}. ]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// A template without `${` is returned unchanged.
        #[test]
        fn literal_templates_unchanged(s in "[^$]{0,40}") {
            let c = Map::new();
            prop_assert_eq!(resolve_str(&s, &c), Value::String(s.clone()));
        }

        /// Any value stored in the context comes back unchanged (type included) through a whole
        /// reference, and is never expanded again even when it contains reference text.
        #[test]
        fn whole_reference_roundtrip(v in arb_json(), key in "[a-z]{1,6}") {
            let mut c = Map::new();
            c.insert(key.clone(), v.clone());
            c.insert("secret".into(), json!("s"));
            prop_assert_eq!(resolve_str(&format!("${{ctx.{key}}}"), &c), v);
        }

        /// Embedding is textual substitution of exactly the referenced value's text.
        #[test]
        fn embedded_matches_embed_text(v in arb_json(), pre in "[a-z ]{1,5}", post in "[a-z ]{0,5}") {
            let mut c = Map::new();
            c.insert("k".into(), v.clone());
            let out = resolve_str(&format!("{pre}${{ctx.k}}{post}"), &c);
            prop_assert_eq!(out, Value::String(format!("{pre}{}{post}", embed_text(&v))));
        }

        /// Under a cap the capped resolver agrees with the plain one, or refuses a result whose
        /// size is over the cap — never anything else.
        #[test]
        fn capped_agrees_or_refuses(t in arb_json(), c in arb_json(), limit in 0usize..400) {
            let ctx = match c { Value::Object(m) => m, _ => Map::new() };
            let plain = resolve(&t, &ctx);
            match resolve_capped(&t, &ctx, limit) {
                Ok(v) => {
                    prop_assert_eq!(&v, &plain);
                    prop_assert!(json_size(&v, usize::MAX) <= limit);
                }
                Err(e) => prop_assert_eq!(e.limit(), Some(limit)),
            }
            prop_assert_eq!(resolve_capped(&t, &ctx, usize::MAX), Ok(plain));
        }

        /// Resolving never panics and leaves non-string leaves alone.
        #[test]
        fn resolve_total(t in arb_json(), c in arb_json()) {
            let ctx = match c { Value::Object(m) => m, _ => Map::new() };
            let _ = resolve(&t, &ctx);
        }

        /// Array indexes reach array items.
        #[test]
        fn array_index(items in prop::collection::vec(any::<i32>(), 1..10), i in 0usize..12) {
            let mut c = Map::new();
            c.insert("l".into(), json!(items));
            let got = resolve_str(&format!("${{ctx.l.{i}}}"), &c);
            let want = items.get(i).map(|n| json!(n)).unwrap_or(Value::Null);
            prop_assert_eq!(got, want);
        }
    }
}
