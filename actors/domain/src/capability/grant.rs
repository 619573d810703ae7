//! Hierarchical principals and effective grant configs (contract §7.3).
//!
//! A principal `a__b` acts under every ancestor (`a`): each level must hold the grant, and the
//! config a handler sees is the [`intersect`]ion of the levels' configs. Attack stopped: the
//! original dropped a key that only some levels set, so a child could widen its parent's limits
//! by omitting them; here a key restricted at any level stays restricted, and no rule of the
//! intersection can give a level more than it had.
//!
//! OWNER: the stores/secrets/grants work. The signatures are fixed (the broker uses them).

use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

/// `a__b__c` → `["a", "a__b", "a__b__c"]`: the principal and every ancestor, root first.
pub fn principal_chain(principal: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = principal[at..].find("__") {
        out.push(principal[..at + i].to_string());
        at += i + 2;
    }
    out.push(principal.to_string());
    out
}

/// What two levels that disagree in type (or two different strings) yield: `false`, the
/// deny-safe choice. A flag reads as off; any other reader finds a value of the wrong type, which
/// the built-ins refuse as a `validation_error` (and a careful handler refuses too). It absorbs
/// every further level, so the result does not depend on the order of the levels.
pub const CONFLICT: Value = Value::Bool(false);

/// The effective config of several levels (contract §7.3):
///
/// * objects: key by key, recursively; a key absent (or `null`) at one level takes the value of
///   the levels that set it — never dropped, so a restriction at any level stays;
/// * lists: the items every level's list has (sorted by their JSON text, without duplicates);
/// * numbers: the minimum;
/// * booleans: and;
/// * equal strings: the string; different strings or mismatched types: [`CONFLICT`] (`false`).
///
/// The result never widens any single level, and does not depend on the levels' order or on a
/// level being repeated. No levels → `{}`.
pub fn intersect(configs: &[&Value]) -> Value {
    let mut it = configs.iter();
    let Some(first) = it.next() else {
        return Value::Object(Map::new());
    };
    let start = merge(first, first);
    it.fold(start, |acc, c| merge(&acc, c))
}

/// The meet of two values (see [`intersect`]).
fn merge(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Null, Value::Null) => Value::Null,
        (Value::Null, other) | (other, Value::Null) => merge_self(other),
        (Value::Object(x), Value::Object(y)) => {
            let mut out = Map::new();
            for (k, va) in x {
                let v = match y.get(k) {
                    Some(vb) => merge(va, vb),
                    None => merge_self(va),
                };
                out.insert(k.clone(), v);
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.insert(k.clone(), merge_self(vb));
                }
            }
            // A stable key order whatever the levels' orders.
            let mut entries: Vec<(String, Value)> = out.into_iter().collect();
            entries.sort_by(|p, q| p.0.cmp(&q.0));
            Value::Object(entries.into_iter().collect())
        }
        (Value::Array(x), Value::Array(y)) => {
            let mut common: Vec<(String, Value)> = x
                .iter()
                .filter(|item| y.contains(item))
                .map(|item| (canonical(item), item.clone()))
                .collect();
            common.sort_by(|p, q| p.0.cmp(&q.0));
            common.dedup_by(|p, q| p.0 == q.0);
            Value::Array(common.into_iter().map(|(_, v)| v).collect())
        }
        (Value::Number(x), Value::Number(y)) => {
            Value::Number(if number_cmp(x, y) == Ordering::Greater {
                y.clone()
            } else {
                x.clone()
            })
        }
        (Value::Bool(x), Value::Bool(y)) => Value::Bool(*x && *y),
        (Value::String(x), Value::String(y)) if x == y => a.clone(),
        _ => CONFLICT,
    }
}

/// A value met with itself: its lists sorted and deduplicated, its objects' keys sorted.
fn merge_self(v: &Value) -> Value {
    merge(v, v)
}

/// The JSON text of a value, objects with sorted keys (a total order on list items).
fn canonical(v: &Value) -> String {
    serde_json::to_string(&merge_self_keys(v)).unwrap_or_default()
}

fn merge_self_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|p, q| p.0.cmp(q.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), merge_self_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(merge_self_keys).collect()),
        other => other.clone(),
    }
}

/// A total order on JSON numbers: integers exactly, anything with a float by value; equal
/// values (`1` and `1.0`) by their text, so the minimum is the same whichever comes first.
fn number_cmp(x: &Number, y: &Number) -> Ordering {
    let exact = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    let by_value = match (exact(x), exact(y)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => {
            let (a, b) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    };
    by_value.then_with(|| x.to_string().cmp(&y.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn chains() {
        assert_eq!(principal_chain("a"), vec!["a"]);
        assert_eq!(principal_chain("a__b__c"), vec!["a", "a__b", "a__b__c"]);
    }

    #[test]
    fn the_rules_of_the_contract() {
        let parent = json!({"allowed_keys": ["A", "B"], "max_value_bytes": 1000, "write": true,
                            "nested": {"paths": ["x", "y"], "depth": 3}});
        let child = json!({"allowed_keys": ["B", "C"], "max_value_bytes": 5000, "write": false,
                           "nested": {"paths": ["y"]}, "extra": ["z"]});
        assert_eq!(
            intersect(&[&parent, &child]),
            json!({"allowed_keys": ["B"], "max_value_bytes": 1000, "write": false,
                   "nested": {"depth": 3, "paths": ["y"]}, "extra": ["z"]})
        );
    }

    #[test]
    fn a_key_restricted_at_one_level_is_never_dropped() {
        // The original's defect: the parent restricts, the child says nothing, and the key
        // vanished from the effective config (meaning "any").
        let parent = json!({"allowed_store_ids": ["notes"]});
        let child = json!({});
        assert_eq!(
            intersect(&[&parent, &child]),
            json!({"allowed_store_ids": ["notes"]})
        );
        assert_eq!(
            intersect(&[&child, &parent]),
            json!({"allowed_store_ids": ["notes"]})
        );
        assert_eq!(
            intersect(&[&json!({"k": null}), &parent]),
            json!({"allowed_store_ids": ["notes"], "k": null})
        );
    }

    #[test]
    fn mismatched_types_are_the_deny_safe_false() {
        for (a, b) in [
            (json!(["a"]), json!("a")),
            (json!(5), json!("5")),
            (json!({"x": 1}), json!([1])),
            (json!("read"), json!("write")),
            (json!(true), json!(1)),
        ] {
            assert_eq!(intersect(&[&a, &b]), CONFLICT, "{a} {b}");
            assert_eq!(intersect(&[&b, &a]), CONFLICT, "{b} {a}");
        }
        assert_eq!(intersect(&[&json!("same"), &json!("same")]), json!("same"));
    }

    #[test]
    fn numbers_meet_at_the_minimum_whatever_their_spelling() {
        assert_eq!(intersect(&[&json!(1.5), &json!(2)]), json!(1.5));
        assert_eq!(intersect(&[&json!(-3), &json!(2.5)]), json!(-3));
        assert_eq!(
            intersect(&[&json!(1), &json!(1.0)]),
            intersect(&[&json!(1.0), &json!(1)])
        );
        assert_eq!(intersect(&[&json!(u64::MAX), &json!(1)]), json!(1));
        assert_eq!(intersect(&[]), json!({}));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-50i64..50).prop_map(|n| json!(n)),
            (-50i32..50).prop_map(|n| json!(f64::from(n) / 4.0)),
            prop::sample::select(vec!["a", "b", "c"]).prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec!["k", "l", "m", "n"]).prop_map(String::from),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Configs of one shape family, so lists meet lists and numbers meet numbers (mismatches are
    /// covered by `arb_value`).
    fn arb_config() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(prop::sample::select(vec!["A", "B", "C", "D"]), 0..4),
            prop::option::of(0u32..5000),
            prop::option::of(any::<bool>()),
            prop::option::of(prop::collection::vec(0i64..6, 0..4)),
        )
            .prop_map(|(keys, max, flag, nested)| {
                let mut m = Map::new();
                m.insert("allowed_keys".into(), json!(keys));
                if let Some(n) = max {
                    m.insert("max_value_bytes".into(), json!(n));
                }
                if let Some(f) = flag {
                    m.insert("write".into(), json!(f));
                }
                if let Some(list) = nested {
                    m.insert("nested".into(), json!({ "ids": list }));
                }
                Value::Object(m)
            })
    }

    /// Every list in `result` (at `path`) is a subset of the list at the same path of `level`,
    /// and every number is ≤ it, wherever `level` sets one.
    fn never_wider(result: &Value, level: &Value) -> Result<(), String> {
        match (result, level) {
            (_, Value::Null) => Ok(()),
            (Value::Object(r), Value::Object(l)) => {
                for (k, lv) in l {
                    match r.get(k) {
                        Some(rv) => never_wider(rv, lv)?,
                        None if lv.is_null() => {}
                        None => return Err(format!("key {k} dropped")),
                    }
                }
                Ok(())
            }
            (Value::Array(r), Value::Array(l)) => match r.iter().find(|i| !l.contains(i)) {
                Some(i) => Err(format!("{i} is not in the level's list {l:?}")),
                None => Ok(()),
            },
            (Value::Number(r), Value::Number(l)) => {
                if number_cmp(r, l) == Ordering::Greater && r.as_f64() > l.as_f64() {
                    Err(format!("{r} > {l}"))
                } else {
                    Ok(())
                }
            }
            (Value::Bool(r), Value::Bool(l)) => {
                if *r && !*l {
                    Err("true from false".into())
                } else {
                    Ok(())
                }
            }
            (Value::String(r), Value::String(l)) if r == l => Ok(()),
            (r, _) if *r == CONFLICT => Ok(()),
            (r, l) => Err(format!("{r} from {l}")),
        }
    }

    proptest! {
        #[test]
        fn never_widens_any_level(levels in prop::collection::vec(arb_config(), 1..5)) {
            let refs: Vec<&Value> = levels.iter().collect();
            let result = intersect(&refs);
            for l in &levels {
                if let Err(e) = never_wider(&result, l) {
                    prop_assert!(false, "{} widens {}: {}", result, l, e);
                }
            }
        }

        #[test]
        fn never_widens_arbitrary_values(levels in prop::collection::vec(arb_value(), 1..4)) {
            let refs: Vec<&Value> = levels.iter().collect();
            let result = intersect(&refs);
            for l in &levels {
                if let Err(e) = never_wider(&result, l) {
                    prop_assert!(false, "{} widens {}: {}", result, l, e);
                }
            }
        }

        #[test]
        fn idempotent(levels in prop::collection::vec(arb_value(), 1..4)) {
            let refs: Vec<&Value> = levels.iter().collect();
            let once = intersect(&refs);
            let mut twice = refs.clone();
            twice.extend(refs.iter().copied());
            prop_assert_eq!(&intersect(&twice), &once);
            prop_assert_eq!(&intersect(&[&once]), &once);
            prop_assert_eq!(&intersect(&[&once, &once]), &once);
        }

        #[test]
        fn order_independent(levels in prop::collection::vec(arb_value(), 1..5), seed in any::<u64>()) {
            let refs: Vec<&Value> = levels.iter().collect();
            let mut shuffled = refs.clone();
            // A seeded Fisher–Yates, so a failure replays.
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(intersect(&refs), intersect(&shuffled));
        }

        #[test]
        fn config_order_independent(levels in prop::collection::vec(arb_config(), 1..5)) {
            let refs: Vec<&Value> = levels.iter().collect();
            let mut rev = refs.clone();
            rev.reverse();
            prop_assert_eq!(intersect(&refs), intersect(&rev));
        }
    }
}
