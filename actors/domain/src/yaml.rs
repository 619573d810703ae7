//! Parsing YAML written by someone who may be hostile.
//!
//! A flow or modifier file comes from a shared folder or a pack, so it is untrusted input. The
//! limits here stop the classic attacks: a huge file (size), a deeply nested document that exhausts
//! the stack or the parser's time (depth), and alias bombs ("billion laughs") that expand a few
//! lines into gigabytes (serde_yaml refuses excessive alias repetition; we also cap the number of
//! aliases outright, so a document cannot multiply its size at all beyond a small factor).
//!
//! Every limit is checked on the text before serde_yaml sees it, in one linear pass each: the
//! parser's scanner is quadratic in nesting (see `yaml/nesting.rs`), so a depth check on the parsed value
//! alone would come minutes too late. The parsed value's depth is checked again after aliases
//! expand.

mod nesting;

use serde::de::DeserializeOwned;

/// Largest YAML file we parse (bytes).
pub const MAX_YAML_BYTES: usize = 1024 * 1024;
/// Deepest nesting of mappings and sequences we accept.
pub const MAX_DEPTH: usize = 32;
/// Most alias references (`*name`) one document may contain.
pub const MAX_ALIASES: usize = 64;

/// Why a YAML document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    #[error("file is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("nesting deeper than {limit} levels{}; flatten the document", line_suffix(*line))]
    TooDeep { limit: usize, line: Option<usize> },
    #[error("more than {limit} aliases (*name); alias expansion is limited")]
    TooManyAliases { limit: usize },
    #[error("{message}")]
    Syntax {
        message: String,
        line: Option<usize>,
    },
}

impl YamlError {
    /// The 1-based line the error points at, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            YamlError::Syntax { line, .. } | YamlError::TooDeep { line, .. } => *line,
            _ => None,
        }
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// Parses `text` into `T` with the limits above. Errors carry the line the parser gives.
pub fn parse_limited<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(YamlError::TooLarge {
            size: text.len(),
            limit: MAX_YAML_BYTES,
        });
    }
    check_structure(text)?;
    serde_yaml::from_str::<T>(text).map_err(|e| YamlError::Syntax {
        line: e.location().map(|l| l.line()),
        message: clean_message(&e.to_string()),
    })
}

/// serde_yaml appends " at line N column M" to messages; we report the line separately.
fn clean_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Counts aliases and bounds the nesting on the text before anything is parsed or expanded, then
/// checks the depth of the parsed value, aliases expanded (serde_yaml's own recursion limit keeps
/// the parser's stack safe while it builds it).
fn check_structure(text: &str) -> Result<(), YamlError> {
    if alias_tokens(text).count() > MAX_ALIASES {
        return Err(YamlError::TooManyAliases { limit: MAX_ALIASES });
    }
    // The characters libyaml's reader refuses, refused first: the pre-scan below follows the
    // scanner's rules for readable text only (a NUL once made it spin forever).
    if let Some((line, c)) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.chars().find(|c| !yaml_printable(*c)).map(|c| (i + 1, c)))
    {
        return Err(YamlError::Syntax {
            line: Some(line),
            message: format!(
                "the file holds the control character U+{:04X}, which YAML does not allow",
                u32::from(c)
            ),
        });
    }
    // `MAX_DEPTH` open collections put their contents at level `MAX_DEPTH + 1`.
    let scan = nesting::scan(text, MAX_DEPTH).map_err(|line| YamlError::TooDeep {
        limit: MAX_DEPTH,
        line: Some(line),
    })?;
    // The scanner's count follows libyaml's tokens, which the quick count above does not always
    // (a `'` inside a word, a quoted string over several lines): either one over the limit refuses.
    if scan.aliases > MAX_ALIASES {
        return Err(YamlError::TooManyAliases { limit: MAX_ALIASES });
    }
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| YamlError::Syntax {
        line: e.location().map(|l| l.line()),
        message: clean_message(&e.to_string()),
    })?;
    walk_depth(&value, 1)
}

/// YAML 1.1's printable set, as libyaml's reader checks it (line breaks are split off before).
fn yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\r' | '\n' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

fn walk_depth(value: &serde_yaml::Value, level: usize) -> Result<(), YamlError> {
    if level > MAX_DEPTH {
        return Err(YamlError::TooDeep {
            limit: MAX_DEPTH,
            line: None,
        });
    }
    match value {
        serde_yaml::Value::Sequence(items) => {
            for item in items {
                walk_depth(item, level + 1)?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map {
                walk_depth(k, level + 1)?;
                walk_depth(v, level + 1)?;
            }
        }
        serde_yaml::Value::Tagged(tagged) => walk_depth(&tagged.value, level + 1)?,
        _ => {}
    }
    Ok(())
}

/// Yields the positions of alias indicators (`*name`) outside quoted scalars and comments.
/// Over-counting (a `*` that starts a plain scalar is not valid YAML anyway) only makes us
/// stricter.
fn alias_tokens(text: &str) -> impl Iterator<Item = usize> + '_ {
    let mut out = Vec::new();
    for (line_start, line) in line_offsets(text) {
        let bytes = line.as_bytes();
        let mut in_single = false;
        let mut in_double = false;
        let mut prev = b' ';
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\'' if !in_double => in_single = !in_single,
                b'"' if !in_single && prev != b'\\' => in_double = !in_double,
                b'#' if !in_single && !in_double && (prev == b' ' || i == 0) => break,
                b'*' if !in_single && !in_double => {
                    let starts_token =
                        matches!(prev, b' ' | b'[' | b',' | b'{' | b':' | b'-') || i == 0;
                    let next_is_name = bytes
                        .get(i + 1)
                        .is_some_and(|n| !n.is_ascii_whitespace() && *n != b'*');
                    if starts_token && next_is_name {
                        out.push(line_start + i);
                    }
                }
                _ => {}
            }
            prev = b;
        }
    }
    out.into_iter()
}

fn line_offsets(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split('\n').map(move |line| {
        let start = offset;
        offset += line.len() + 1;
        (start, line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_billion_laughs() {
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] {
            doc.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
            prev = name;
        }
        let err = parse_limited::<serde_yaml::Value>(&doc).unwrap_err();
        assert!(matches!(err, YamlError::TooManyAliases { .. }), "{err:?}");
    }

    /// Review finding: a NUL in a flow file hung the pre-scan, and with it every flow load.
    #[test]
    fn control_characters_are_refused_with_their_line() {
        for doc in ["flow_id: evil\n\0\n", "a: 1\nb: \u{1b}[31m\n", "a: \u{7f}"] {
            match parse_limited::<serde_yaml::Value>(doc).unwrap_err() {
                YamlError::Syntax { line, message } => {
                    assert!(
                        line.is_some() && message.contains("control character"),
                        "{message}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(parse_limited::<serde_yaml::Value>("a: \"tab\there é 日本\"\r\n").is_ok());
    }

    /// Second review: the quick alias count flipped its quote state on a `'` inside a word and
    /// reset it at each line, so `[it's, *a, *a, …]` counted no alias and the expansion limit was
    /// gone. The scanner's count follows libyaml's tokens.
    #[test]
    fn aliases_hidden_from_the_quick_count_are_still_counted() {
        let refs = vec!["*a"; 100].join(", ");
        for doc in [
            format!("a: &a [1, 2, 3]\nb: [it's, {refs}]\n"),
            format!("a: &a [1, 2, 3]\nb: [ \"x\n  \", {refs}]\n"),
        ] {
            let err = parse_limited::<serde_yaml::Value>(&doc).unwrap_err();
            assert!(matches!(err, YamlError::TooManyAliases { .. }), "{err:?}");
        }
        // A `*` inside a quoted or plain scalar is text, not an alias.
        let text = format!("a: [\"{}\", x*y]\n", "*b ".repeat(100));
        assert!(parse_limited::<serde_yaml::Value>(&text).is_ok());
    }

    #[test]
    fn refuses_deep_nesting() {
        let doc = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let err = parse_limited::<serde_yaml::Value>(&doc).unwrap_err();
        assert!(
            matches!(err, YamlError::TooDeep { .. } | YamlError::Syntax { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_mebibyte_of_brackets_is_refused_for_its_depth_before_parsing() {
        // serde_yaml's scanner is quadratic in flow nesting: this file took minutes to refuse.
        let doc = "[".repeat(MAX_YAML_BYTES);
        let err = parse_limited::<serde_yaml::Value>(&doc).unwrap_err();
        assert_eq!(
            err,
            YamlError::TooDeep {
                limit: MAX_DEPTH,
                line: Some(1)
            }
        );
        assert_eq!(
            err.to_string(),
            "nesting deeper than 32 levels (line 1); flatten the document"
        );
        // The linear pre-scan refused it (the parser would have spent minutes): no wall-clock
        // assertion here, which a loaded machine makes flaky; a regression shows as a test that
        // does not finish.
    }

    #[test]
    fn refuses_large_files() {
        let doc = "a: b\n".repeat(MAX_YAML_BYTES / 4);
        let err = parse_limited::<serde_yaml::Value>(&doc).unwrap_err();
        assert!(matches!(err, YamlError::TooLarge { .. }));
    }

    #[test]
    fn accepts_small_aliases_and_reports_lines() {
        let ok: serde_yaml::Value = parse_limited("a: &x 1\nb: *x\n").unwrap();
        assert_eq!(ok["b"], serde_yaml::Value::from(1));
        let err = parse_limited::<serde_yaml::Value>("a: 1\nb: [unclosed\n").unwrap_err();
        assert!(err.line().is_some(), "{err:?}");
    }

    #[test]
    fn stars_inside_strings_are_not_aliases() {
        let doc = "a: \"*x *y\"\nb: '*z'\nc: 2 * 3 # *w\n";
        let ok: serde_yaml::Value = parse_limited(doc).unwrap();
        assert_eq!(ok["a"], serde_yaml::Value::from("*x *y"));
    }
}
