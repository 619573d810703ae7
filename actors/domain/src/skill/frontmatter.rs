//! `SKILL.md`: YAML frontmatter between `---` lines, then Markdown (contract §1).
//!
//! Loading is lenient the way real skills need: a name that differs from the directory, an
//! over-long description or unknown keys are warnings and the skill stays usable. Only what makes
//! the skill unusable for the catalog (no frontmatter, unparsable YAML, no description) skips it.
//! The YAML comes from a pack or a shared folder, so it is parsed with the hostile-YAML limits of
//! [`crate::yaml::parse_limited`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest `SKILL.md` callers read; a bigger file is refused before it is parsed.
pub const MAX_SKILL_MD_BYTES: usize = 1024 * 1024;

/// Longest description the contract allows; a longer one is kept whole with a warning.
const MAX_DESCRIPTION_CHARS: usize = 1024;

/// Keys the contract names; everything else is kept in [`SkillDoc::extra`] with a warning.
const KNOWN_KEYS: [&str; 6] = [
    "name",
    "description",
    "license",
    "compatibility",
    "metadata",
    "allowed-tools",
];

/// A parsed `SKILL.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillDoc {
    /// The frontmatter's `name`, or the directory name when it is missing.
    pub name: String,
    pub description: String,
    pub license: Option<String>,
    pub compatibility: Option<String>,
    pub metadata: Option<Value>,
    /// The frontmatter's `allowed-tools`, as written.
    pub allowed_tools: Option<Value>,
    /// Unknown keys, kept as written.
    pub extra: Map<String, Value>,
    /// The Markdown after the closing `---`.
    pub body: String,
    /// Why the skill is not quite as the contract wants it (it is still loaded).
    pub warnings: Vec<String>,
}

/// Parses `SKILL.md`. `dir_name` is the skill directory's last component. `Err(message)` means
/// the skill is skipped and the message is its diagnostic.
pub fn parse_skill_md(text: &str, dir_name: &str) -> Result<SkillDoc, String> {
    if text.len() > MAX_SKILL_MD_BYTES {
        return Err(format!(
            "SKILL.md is {} bytes; the limit is {MAX_SKILL_MD_BYTES}; move detail into referenced files",
            text.len()
        ));
    }
    let (yaml, body) = split_frontmatter(text)?;
    let parsed: serde_yaml::Value = crate::yaml::parse_limited(&yaml).map_err(|e| {
        format!("SKILL.md frontmatter is not valid YAML: {e}; fix the YAML between the --- lines")
    })?;
    let serde_yaml::Value::Mapping(mapping) = strip_tags(parsed) else {
        return Err("SKILL.md frontmatter is not a mapping of keys; write `name: …` and `description: …` lines".into());
    };
    let mut fields = Map::new();
    for (k, v) in mapping {
        fields.insert(key_string(&k), yaml_to_json(v));
    }
    let mut warnings = Vec::new();

    let description = match fields.remove("description") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) => {
            return Err("SKILL.md frontmatter has an empty `description`; describe what the skill does and when to use it".into())
        }
        Some(_) => {
            return Err("SKILL.md frontmatter `description` is not a string; write it as text".into())
        }
        None => {
            return Err("SKILL.md frontmatter has no `description`; add one saying what the skill does and when to use it".into())
        }
    };
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        warnings.push(format!(
            "description is {} characters; the limit is {MAX_DESCRIPTION_CHARS} (kept whole)",
            description.chars().count()
        ));
    }

    let name = match fields.remove("name") {
        Some(Value::String(s)) => s,
        Some(_) => {
            warnings.push(format!(
                "name is not a string; using the directory name `{dir_name}`"
            ));
            dir_name.to_string()
        }
        None => {
            warnings.push(format!(
                "name is missing; using the directory name `{dir_name}`"
            ));
            dir_name.to_string()
        }
    };
    if !valid_skill_name(&name) {
        warnings.push(format!(
            "name `{}` should be 1-64 lowercase letters, digits or '-'",
            shorten(&name)
        ));
    }
    if name != dir_name {
        warnings.push(format!(
            "name `{}` differs from the directory name `{dir_name}`",
            shorten(&name)
        ));
    }

    let license = string_field(&mut fields, "license", &mut warnings);
    let compatibility = string_field(&mut fields, "compatibility", &mut warnings);
    let metadata = fields.remove("metadata");
    if let Some(m) = &metadata {
        if !m.is_object() {
            warnings.push("metadata is not a mapping (kept as written)".into());
        }
    }
    let allowed_tools = fields.remove("allowed-tools");
    if let Some(t) = &allowed_tools {
        let list_of_strings = t.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !t.is_string() && !list_of_strings {
            warnings.push(
                "allowed-tools is neither a string nor a list of strings (kept as written)".into(),
            );
        }
    }

    let mut unknown: Vec<&String> = fields
        .keys()
        .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown
            .iter()
            .map(|k| format!("`{}`", shorten(k)))
            .collect();
        warnings.push(format!(
            "unknown frontmatter keys (kept): {}",
            names.join(", ")
        ));
    }

    Ok(SkillDoc {
        name,
        description,
        license,
        compatibility,
        metadata,
        allowed_tools,
        extra: fields,
        body,
        warnings,
    })
}

/// `^[a-z0-9-]{1,64}$`.
fn valid_skill_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A hostile name could be huge; warnings quote at most 80 characters of it.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        let cut: String = s.chars().take(80).collect();
        format!("{cut}…")
    }
}

fn string_field(
    fields: &mut Map<String, Value>,
    key: &str,
    warnings: &mut Vec<String>,
) -> Option<String> {
    match fields.remove(key)? {
        Value::String(s) => Some(s),
        Value::Null => None,
        _ => {
            warnings.push(format!("{key} is not a string (ignored)"));
            None
        }
    }
}

/// Splits off the frontmatter. Tolerates a BOM, CRLF line ends and trailing spaces on the `---`
/// lines, since editors on every platform write skills.
fn split_frontmatter(text: &str) -> Result<(String, String), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let no_frontmatter = || {
        "SKILL.md has no YAML frontmatter; start the file with a `---` line, then `name:` and `description:`, then `---`".to_string()
    };
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().ok_or_else(no_frontmatter)?;
    if first.trim_end() != "---" {
        return Err(no_frontmatter());
    }
    let mut yaml = String::new();
    let mut offset = first.len();
    for line in lines {
        offset += line.len();
        if line.trim_end() == "---" {
            let body = text[offset..].to_string();
            return Ok((yaml, body));
        }
        // YAML treats '\r' as a line break too, but removing it keeps positions in messages sane.
        yaml.push_str(line.trim_end_matches(['\n', '\r']));
        yaml.push('\n');
    }
    Err("SKILL.md frontmatter is not closed; add a `---` line after the YAML".into())
}

fn strip_tags(v: serde_yaml::Value) -> serde_yaml::Value {
    match v {
        serde_yaml::Value::Tagged(t) => strip_tags(t.value),
        other => other,
    }
}

fn key_string(k: &serde_yaml::Value) -> String {
    match strip_tags(k.clone()) {
        serde_yaml::Value::String(s) => s,
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => "null".into(),
        other => serde_yaml::to_string(&other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// YAML → JSON without failing: tags are dropped, non-string keys become strings, non-finite
/// floats become null.
fn yaml_to_json(v: serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => {
            Value::Array(items.into_iter().map(yaml_to_json).collect())
        }
        serde_yaml::Value::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (key_string(&k), yaml_to_json(v)))
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, dir: &str) -> SkillDoc {
        parse_skill_md(text, dir).expect("parses")
    }

    #[test]
    fn a_clean_skill_has_no_warnings() {
        let d = ok(
            "---\nname: pdf\ndescription: Works with PDFs.\nlicense: MIT\n---\n# PDF\nBody\n",
            "pdf",
        );
        assert_eq!(d.name, "pdf");
        assert_eq!(d.description, "Works with PDFs.");
        assert_eq!(d.license.as_deref(), Some("MIT"));
        assert_eq!(d.body, "# PDF\nBody\n");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn bom_crlf_and_trailing_spaces_are_tolerated() {
        let d = ok(
            "\u{feff}---  \r\nname: a\r\ndescription: d\r\n---\t\r\nbody\r\n",
            "a",
        );
        assert_eq!(d.description, "d");
        assert_eq!(d.body, "body\r\n");
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn skipped_skills_say_why() {
        let cases = [
            ("# no frontmatter\n", "no YAML frontmatter"),
            ("", "no YAML frontmatter"),
            ("---\nname: a\ndescription: d\n", "not closed"),
            ("---\nname: [a\ndescription: d\n---\n", "not valid YAML"),
            ("---\n- a\n- b\n---\n", "not a mapping"),
            ("---\n---\n", "not a mapping"),
            ("---\nname: a\n---\n", "no `description`"),
            (
                "---\nname: a\ndescription: \"  \"\n---\n",
                "empty `description`",
            ),
            ("---\nname: a\ndescription: [x]\n---\n", "not a string"),
        ];
        for (text, want) in cases {
            let e = parse_skill_md(text, "a").expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn oversized_files_are_refused() {
        let text = format!(
            "---\nname: a\ndescription: d\n---\n{}",
            "x".repeat(MAX_SKILL_MD_BYTES)
        );
        assert!(parse_skill_md(&text, "a")
            .unwrap_err()
            .contains("the limit is"));
    }

    #[test]
    fn hostile_yaml_is_refused_by_the_limits() {
        let mut text = String::from("---\ndescription: d\nx: ");
        text.push_str(&"[".repeat(100));
        text.push_str(&"]".repeat(100));
        text.push_str("\n---\n");
        let e = parse_skill_md(&text, "a").unwrap_err();
        assert!(e.contains("not valid YAML"), "{e}");
    }

    #[test]
    fn name_warnings() {
        let d = ok("---\ndescription: d\n---\n", "my-skill");
        assert_eq!(d.name, "my-skill");
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("name is missing"));

        let d = ok("---\nname: My_Skill\ndescription: d\n---\n", "My_Skill");
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("lowercase"), "{:?}", d.warnings);

        let d = ok("---\nname: other\ndescription: d\n---\n", "dir");
        assert_eq!(d.name, "other");
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("differs from the directory name `dir`"));

        let long = "a".repeat(65);
        let d = ok(&format!("---\nname: {long}\ndescription: d\n---\n"), &long);
        assert!(d.warnings[0].contains("lowercase"));

        let d = ok("---\nname: 12\ndescription: d\n---\n", "x");
        assert_eq!(d.name, "x");
        assert!(d.warnings[0].contains("not a string"));
    }

    #[test]
    fn long_description_is_kept_whole_with_a_warning() {
        let desc = "é".repeat(1025);
        let d = ok(&format!("---\nname: a\ndescription: {desc}\n---\n"), "a");
        assert_eq!(d.description, desc);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("1025 characters"));
        let d = ok(
            &format!("---\nname: a\ndescription: {}\n---\n", "é".repeat(1024)),
            "a",
        );
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn unknown_keys_are_kept_and_named_sorted() {
        let d = ok(
            "---\nname: a\ndescription: d\nzeta: 1\nalpha: {b: 2}\n---\n",
            "a",
        );
        assert_eq!(d.extra.get("zeta"), Some(&Value::from(1)));
        assert_eq!(d.extra.get("alpha"), Some(&serde_json::json!({"b": 2})));
        assert_eq!(
            d.warnings,
            vec!["unknown frontmatter keys (kept): `alpha`, `zeta`".to_string()]
        );
    }

    #[test]
    fn optional_keys() {
        let d = ok(
            "---\nname: a\ndescription: d\ncompatibility: python3\nmetadata: {version: 1}\nallowed-tools: Read Bash\n---\n",
            "a",
        );
        assert_eq!(d.compatibility.as_deref(), Some("python3"));
        assert_eq!(d.metadata, Some(serde_json::json!({"version": 1})));
        assert_eq!(d.allowed_tools, Some(Value::from("Read Bash")));
        assert!(d.warnings.is_empty());

        let d = ok(
            "---\nname: a\ndescription: d\nlicense: 3\nmetadata: x\nallowed-tools: {a: 1}\n---\n",
            "a",
        );
        assert_eq!(d.license, None);
        assert_eq!(d.metadata, Some(Value::from("x")));
        assert_eq!(d.allowed_tools, Some(serde_json::json!({"a": 1})));
        assert_eq!(d.warnings.len(), 3, "{:?}", d.warnings);
        let d = ok(
            "---\nname: a\ndescription: d\nallowed-tools: [Read, Bash]\n---\n",
            "a",
        );
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn non_string_keys_do_not_fail_the_load() {
        let d = ok("---\nname: a\ndescription: d\n1: x\n---\n", "a");
        assert_eq!(d.extra.get("1"), Some(&Value::from("x")));
    }
}
