//! The nesting pre-scan's tests: libyaml's rules case by case, and property tests against serde_yaml.

use super::*;
use proptest::prelude::*;
use serde_yaml::Value;

/// The most collections open at once, with no limit.
fn bound(text: &str) -> usize {
    max_nesting(text, usize::MAX).expect("no limit")
}

/// The level of the deepest node, as `yaml::walk_depth` counts it (the root is level 1).
fn depth(v: &Value) -> usize {
    1 + match v {
        Value::Sequence(items) => items.iter().map(depth).max().unwrap_or(0),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| depth(k).max(depth(v)))
            .max()
            .unwrap_or(0),
        Value::Tagged(t) => depth(&t.value),
        _ => 0,
    }
}

#[test]
fn counts_flow_and_block_collections() {
    assert_eq!(bound("a: 1\n"), 1);
    assert_eq!(bound("[[[1]]]"), 3);
    assert_eq!(bound("{a: [1, {b: 2}]}"), 3);
    assert_eq!(bound("a:\n  b:\n    - c\n"), 3);
    assert_eq!(bound("- - - x\n"), 3);
    // A sequence at its mapping's indentation is a level libyaml does not push.
    assert_eq!(bound("a:\n- b:\n    c: 1\n"), 4);
    assert_eq!(
        depth(&serde_yaml::from_str("a:\n- b:\n    c: 1\n").unwrap()),
        5
    );
    assert_eq!(bound("!t [1]"), 2);
}

#[test]
fn text_is_not_structure() {
    let deep = "[".repeat(1000);
    for doc in [
        format!("a: '{deep}'\n"),
        format!("a: \"{deep}\"\n"),
        format!("a: 1 # {deep}\n"),
        format!("a: x {deep}\n"),
        format!("a: |\n  {deep}\n  {deep}\nb: 2\n"),
        format!("a: >-\n\n  {deep}\nb: 2\n"),
        format!("a: 'it''s\n  {deep}'\n"),
        format!("a: \"\\\"{deep}\"\n"),
        format!("a: plain\n  continued {deep}\n"),
    ] {
        assert!(bound(&doc) <= 2, "{doc:.60}");
        serde_yaml::from_str::<Value>(&doc).expect("valid YAML");
    }
}

#[test]
fn hiding_nesting_behind_a_quote_does_not_work() {
    // `it's` is a plain scalar: its quote opens nothing. A scanner that thought it did would
    // then take the real quote on the next line for a closing one and count its `]` as
    // closes.
    let n = 40;
    let doc = format!(
        "a: it's\nb: '\n{}'\nc: {}1{}\n",
        "]".repeat(n),
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(bound(&doc) > n, "{}", bound(&doc));
    let doc = format!(
        "- [x 'y, '{}']\n- {}1{}\n",
        "]".repeat(n),
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(bound(&doc) > n);
}

#[test]
fn stops_at_the_limit_with_its_line() {
    let doc = format!("a: 1\nb: 2\nc: {}", "[".repeat(100));
    assert_eq!(max_nesting(&doc, 32), Err(3));
    let block: String = (0..40)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    assert_eq!(max_nesting(&block, 32), Err(32));
    // Review finding: a NUL made the scan spin on one character forever.
    assert!(max_nesting("a: 1\n\0\n", 32).is_ok());
    assert!(max_nesting("\0", 32).is_ok());
    assert!(max_nesting("[\0]", 32).is_ok());
    assert_eq!(max_nesting(&"- ".repeat(100), 32), Err(1));
}

#[test]
fn a_mebibyte_of_brackets_is_refused_at_once() {
    for c in ['[', '{'] {
        let doc = c.to_string().repeat(1 << 20);
        let t = std::time::Instant::now();
        assert_eq!(max_nesting(&doc, 32), Err(1));
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_wide_mebibyte_is_scanned_in_linear_time() {
    let doc = format!("[{}]", "[1, 'x]', \"y}\", {a: b}], ".repeat(40_000));
    let t = std::time::Instant::now();
    assert_eq!(bound(&doc), 3);
    // Generous: a linear pass over 1 MiB takes a few milliseconds even unoptimised.
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}

/// A YAML tree to render in mixed styles.
#[derive(Debug, Clone)]
enum Node {
    Scalar(usize),
    Seq(Vec<Node>),
    Map(Vec<Node>),
    Tagged(Box<Node>),
}

/// Scalars that look like structure: quotes, brackets, comments, escapes, continuation lines.
const SCALARS: &[&str] = &[
    "plain",
    "it's",
    "x#y",
    "'it''s [not] {nested}'",
    "\"a \\\" ]] }} [[ {{ \\\\\"",
    "\"# not a comment [\"",
    "'two\n  lines ]] ['",
    "\"esc \\\n  aped ]\"",
    "a - b",
    "'#'",
    "\"'\"",
    "'\"'",
    "1",
];

fn node() -> impl Strategy<Value = Node> {
    let leaf = (0..SCALARS.len()).prop_map(Node::Scalar);
    leaf.prop_recursive(12, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Node::Seq),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Node::Map),
            // One tag per node: a tag on a tag is not YAML.
            inner.prop_map(|n| match n {
                Node::Tagged(_) => Node::Seq(vec![n]),
                n => Node::Tagged(Box::new(n)),
            }),
        ]
    })
}

/// Renders `n` in the flow style (the only style allowed inside a flow collection).
fn flow(n: &Node, out: &mut String) {
    match n {
        Node::Scalar(i) => out.push_str(SCALARS[*i]),
        Node::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(item, out);
            }
            out.push(']');
        }
        Node::Map(items) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&format!("k{i}: "));
                flow(item, out);
            }
            out.push('}');
        }
        Node::Tagged(inner) => {
            out.push_str("!t ");
            flow(inner, out);
        }
    }
}

/// Renders `n` as the value after `key:` or `-` (the indicator is already written) in the
/// block style where `block` says so, choosing flow or block per node from `style`.
fn value(n: &Node, indent: usize, style: &mut impl Iterator<Item = u8>, out: &mut String) {
    let pick = style.next().unwrap_or(0);
    let pad = " ".repeat(indent);
    match n {
        Node::Scalar(_) if pick % 4 == 0 => {
            out.push_str(&format!(" |\n{pad}  [[ ' \"\n{pad}  ]] {{\n"));
        }
        Node::Seq(items) if !items.is_empty() && pick % 3 != 0 => {
            out.push('\n');
            // Sometimes at the parent's own indentation (libyaml's indentless sequence).
            let at = if pick % 3 == 1 { indent } else { indent + 2 };
            for item in items {
                out.push_str(&format!("{}-", " ".repeat(at)));
                value(item, at + 2, style, out);
            }
        }
        Node::Map(items) if !items.is_empty() && pick % 3 != 0 => {
            out.push('\n');
            for (i, item) in items.iter().enumerate() {
                out.push_str(&format!("{pad}  k{i}:"));
                value(item, indent + 2, style, out);
            }
        }
        Node::Tagged(inner) if pick % 2 == 0 => {
            out.push_str(" !t");
            value(inner, indent, style, out);
        }
        _ => {
            out.push(' ');
            flow(n, out);
            if pick % 5 == 1 {
                out.push_str(" # ]] ' \" {");
            }
            out.push('\n');
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Whatever the parser accepts, the pre-scan counted at least as deep (the parsed value's
    /// deepest node sits one level inside the most collections ever open).
    #[test]
    fn never_under_counts_what_the_parser_builds(
        tree in node(),
        style in prop::collection::vec(any::<u8>(), 64),
    ) {
        let mut doc = String::from("root:");
        value(&tree, 0, &mut style.into_iter(), &mut doc);
        let parsed: Value = serde_yaml::from_str(&doc)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{doc}")))?;
        prop_assert!(bound(&doc) + 1 >= depth(&parsed), "{} < {}\n{doc}", bound(&doc) + 1, depth(&parsed));
    }

    /// The same against strings of structure characters, valid or not.
    #[test]
    fn never_under_counts_arbitrary_text(doc in "[\\[\\]{}'\"#:\\-|>!&?, \\na1\\t\\\\]{0,120}") {
        if let Ok(parsed) = serde_yaml::from_str::<Value>(&doc) {
            prop_assert!(bound(&doc) + 1 >= depth(&parsed), "{doc:?}");
        }
    }

    /// A chain nested past the limit, in any mix of styles, is refused before parsing.
    #[test]
    fn refuses_every_chain_past_the_limit(
        n in 20usize..48,
        style in prop::collection::vec(any::<u8>(), 48),
    ) {
        let mut tree = Node::Scalar(3);
        for s in style.iter().take(n) {
            tree = match s % 3 {
                0 => Node::Seq(vec![Node::Scalar(1), tree]),
                1 => Node::Map(vec![Node::Scalar(4), tree]),
                _ => Node::Seq(vec![tree]),
            };
        }
        let mut doc = String::from("root:");
        value(&tree, 0, &mut style.into_iter(), &mut doc);
        // n chained collections under the root mapping: the innermost scalar is at n + 2.
        if n + 2 > crate::yaml::MAX_DEPTH {
            prop_assert!(max_nesting(&doc, crate::yaml::MAX_DEPTH).is_err(), "{doc}");
        }
        if n < 25 {
            prop_assert!(max_nesting(&doc, crate::yaml::MAX_DEPTH).is_ok(), "over-counted {}\n{doc}", bound(&doc));
        }
    }
}

/// A collection used as a key, and a `key: value` entry of a flow sequence, sit inside a mapping
/// that libyaml starts only when it reaches the `:` — one level the text before it did not show.
#[test]
fn counts_the_mapping_a_key_opens_after_the_fact() {
    for doc in [
        "{a}:",
        "[a: [b]]",
        "[{a}: b]",
        "[[{a}: b]: c]",
        "[[[[a]: b]: c]: d]",
        "[? a : [b]]",
        "x: [a: 1, b: [c: [d]]]",
    ] {
        let parsed: Value = serde_yaml::from_str(doc).expect(doc);
        assert!(
            bound(doc) + 1 >= depth(&parsed),
            "{doc:?}: bound {} depth {}",
            bound(doc),
            depth(&parsed)
        );
    }
    // A chain of keys that are themselves flow pairs nests twice per bracket: refused before
    // the parser sees it once the real depth passes the limit.
    let mut doc = String::from("a");
    for _ in 0..20 {
        doc = format!("[{doc}: b]");
    }
    assert!(max_nesting(&doc, crate::yaml::MAX_DEPTH).is_err(), "{doc}");
    assert!(matches!(
        crate::yaml::parse_limited::<Value>(&doc),
        Err(crate::yaml::YamlError::TooDeep { .. })
    ));
}
