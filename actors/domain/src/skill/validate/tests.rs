use super::*;
use serde_json::json;
use std::collections::BTreeMap;

struct Files(BTreeMap<String, Vec<u8>>);

impl BuildView for Files {
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        self.0.get(rel).cloned()
    }
}

fn files(entries: &[(&str, &str)]) -> Files {
    Files(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    )
}

fn out(path: &str, kind: OutputKind) -> ExpectedOutput {
    ExpectedOutput {
        path: path.into(),
        kind,
        schema: None,
        must_contain: vec![],
        min_bytes: None,
        name_pattern: None,
    }
}

fn problems(r: &Report) -> String {
    r.validation
        .details
        .iter()
        .flat_map(|d| d.problems.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn empty_expectations_pass() {
    let r = validate(&[], &files(&[]));
    assert!(r.passed);
    assert!(r.validation.details.is_empty() && r.unmet.is_empty());
}

#[test]
fn a_good_output_passes() {
    let mut o = out("build/notes/a.md", OutputKind::Markdown);
    o.must_contain = vec!["#FF0000".into()];
    o.name_pattern = Some("?.md".into());
    o.min_bytes = Some(10);
    let view = files(&[
        ("notes/a.md", "# Title\nColour #FF0000, see [b](b.md), [top](../top.html#x), [web](https://x.y), [m](mailto:a@b), [s](#sec)."),
        ("notes/b.md", "b"),
        ("top.html", "<a href=\"notes/a.md\">a</a>"),
    ]);
    let r = validate(&[o, out("build/top.html", OutputKind::Html)], &view);
    assert!(r.passed, "{}", problems(&r));
}

#[test]
fn a_missing_output_fails_completeness_with_a_suggestion() {
    let r = validate(&[out("build/x.md", OutputKind::Markdown)], &files(&[]));
    assert!(!r.passed);
    assert!(!r.validation.completeness);
    assert!(r.validation.compliance && r.validation.quality);
    assert_eq!(r.validation.details[0].path, "build/x.md");
    assert_eq!(
        r.validation.details[0].problems,
        vec!["build/x.md does not exist."]
    );
    assert_eq!(r.unmet.len(), 1);
    assert_eq!(r.unmet[0].item, "build/x.md");
    assert!(r.unmet[0].suggestion.contains("write_artifact"));
}

#[test]
fn compliance_failures() {
    let mut o = out("build/report.json", OutputKind::Json);
    o.name_pattern = Some("summary-*.json".into());
    o.must_contain = vec!["brand".into()];
    o.schema = Some(
        json!({"type": "object", "required": ["title"], "properties": {"n": {"type": "integer"}}}),
    );
    let r = validate(&[o], &files(&[("report.json", "{\"n\": \"x\"}")]));
    assert!(!r.passed);
    assert!(r.validation.completeness && !r.validation.compliance && r.validation.quality);
    let text = problems(&r);
    assert!(
        text.contains("does not match the name pattern `summary-*.json`"),
        "{text}"
    );
    assert!(
        text.contains("does not contain the required text `brand`"),
        "{text}"
    );
    assert!(
        text.contains("does not match its schema at the document root"),
        "{text}"
    );
    assert!(text.contains("does not match its schema at `/n`"), "{text}");
    assert!(r.unmet[0].suggestion.contains("schema"));
}

#[test]
fn outputs_outside_build_fail_compliance() {
    let r = validate(
        &[out("notes/x.md", OutputKind::Markdown)],
        &files(&[("notes/x.md", "x")]),
    );
    assert!(!r.validation.compliance);
    assert!(problems(&r).contains("not under build/"));
}

#[test]
fn quality_failures() {
    let cases: [(OutputKind, &str, &str); 8] = [
        (OutputKind::Json, "{not json", "is not valid JSON"),
        (OutputKind::Markdown, "", "is empty"),
        (OutputKind::Markdown, "Hello {{name}}", "`{{name}}`"),
        (OutputKind::Markdown, "TODO: write", "`TODO`"),
        (
            OutputKind::Html,
            "<p>Lorem Ipsum dolor</p>",
            "`lorem ipsum`",
        ),
        (
            OutputKind::Markdown,
            "see [x](missing.md)",
            "build/missing.md does not exist",
        ),
        (
            OutputKind::Html,
            "<img src='img/a.png'><a href=../../x.html>",
            "points outside build/",
        ),
        (
            OutputKind::Html,
            "<IMG SRC=\"b.png\">",
            "build/b.png does not exist",
        ),
    ];
    for (kind, content, want) in cases {
        let r = validate(&[out("build/f", kind)], &files(&[("f", content)]));
        assert!(!r.passed, "{content}");
        assert!(r.validation.completeness && r.validation.compliance && !r.validation.quality);
        let text = problems(&r);
        assert!(text.contains(want), "{content}: {text}");
        assert!(text.contains("build/f"), "{text}");
    }
    let view = Files([("f".to_string(), vec![0xff, 0xfe])].into_iter().collect());
    let r = validate(&[out("build/f", OutputKind::Text)], &view);
    assert!(problems(&r).contains("not valid UTF-8"));
    // Binary outputs only need to exist, be non-empty and big enough.
    assert!(validate(&[out("build/f", OutputKind::Binary)], &view).passed);
    let mut o = out("build/f", OutputKind::Binary);
    o.min_bytes = Some(3);
    assert!(problems(&validate(&[o], &view)).contains("at least 3"));
}

#[test]
fn data_src_is_not_src_and_percent_encoding_resolves() {
    let view = files(&[
        (
            "p.html",
            "<img data-src=\"nope.png\"><a href=\"my%20file.md\">",
        ),
        ("my file.md", "x"),
    ]);
    assert!(validate(&[out("build/p.html", OutputKind::Html)], &view).passed);
}

#[test]
fn remote_and_file_refs_in_schemas_are_never_fetched() {
    for r in ["https://example.com/s.json", "file:///etc/passwd"] {
        let schema = json!({"$ref": r});
        assert!(compile_schema(&schema).is_err(), "{r}");
    }
    assert!(compile_schema(&json!({"type": "object"})).is_ok());
}

#[test]
fn globs() {
    assert!(glob_match("*.md", "a.md"));
    assert!(glob_match("a?c", "abc"));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "aXXbYYc"));
    assert!(!glob_match("a*b*c", "aXXbYY"));
    assert!(!glob_match("?", ""));
    assert!(!glob_match("*.md", "a.mdx"));
    assert!(glob_match("é?", "éx"));
    let long = "a".repeat(200);
    assert!(!glob_match(&format!("{}b", "*a".repeat(50)), &long));
}
