//! Small pure text tools the Supervisor offers the model (contract §5, §14): `summarize`,
//! `diff` and `template_expand`. Each has caps on input and output, since both the text and the
//! template come from the model or the skill.

use serde_json::Value;

const SUMMARY_CHARS: usize = 1200;
const SENTENCE_CHARS: usize = 240;
const DIFF_MAX_LINES: usize = 2000;
const DIFF_MAX_BYTES: usize = 16 * 1024;
const DIFF_CONTEXT: usize = 1;
const TEMPLATE_MAX_DEPTH: usize = 8;
const TEMPLATE_MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// Most steps one expansion takes — loop bodies and tags together: nested `{{#each}}` over long
/// lists, or wide bodies of tags that print nothing, grow no output, so the output cap alone
/// would never stop them (four levels over 20 000 items are 1.6e17 iterations).
const TEMPLATE_MAX_ITERATIONS: usize = 2_000_000;

/// Headings and the first sentence of each paragraph, at most 1200 characters. Fenced code is
/// skipped (its first line is rarely a summary).
pub fn summarize(text: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut in_fence = false;
    let mut paragraph = String::new();
    let flush = |paragraph: &mut String, parts: &mut Vec<String>| {
        if !paragraph.is_empty() {
            parts.push(first_sentence(paragraph));
            paragraph.clear();
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") || t.starts_with("~~~") {
            flush(&mut paragraph, &mut parts);
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if t.is_empty() {
            flush(&mut paragraph, &mut parts);
        } else if t.starts_with('#') {
            flush(&mut paragraph, &mut parts);
            parts.push(t.to_string());
        } else {
            if !paragraph.is_empty() {
                paragraph.push(' ');
            }
            // A paragraph only needs its first sentence; stop growing it past that.
            if paragraph.len() < 4 * SENTENCE_CHARS {
                paragraph.push_str(t);
            }
        }
    }
    flush(&mut paragraph, &mut parts);
    cut_chars(&parts.join("\n"), SUMMARY_CHARS)
}

fn first_sentence(p: &str) -> String {
    let mut end = p.len();
    for (i, c) in p.char_indices() {
        if matches!(c, '.' | '!' | '?') {
            let next = p[i + c.len_utf8()..].chars().next();
            if next.is_none_or(char::is_whitespace) {
                end = i + c.len_utf8();
                break;
            }
        }
    }
    cut_chars(&p[..end], SENTENCE_CHARS)
}

fn cut_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A line diff of `a` → `b`: hunks headed `@@ -<line> +<line> @@`, removed lines `-`, added
/// lines `+`, one line of context ` `. Inputs are capped at 2000 lines each and the output at
/// 16 KiB, each with a marker. Identical inputs give `"(no differences)"`.
pub fn line_diff(a: &str, b: &str) -> String {
    let (a_lines, a_cut) = capped_lines(a);
    let (b_lines, b_cut) = capped_lines(b);
    let ops = lcs_ops(&a_lines, &b_lines);
    let mut out = String::new();
    if a_cut || b_cut {
        out.push_str(&format!(
            "[inputs cut to their first {DIFF_MAX_LINES} lines]\n"
        ));
    }
    if ops.iter().all(|op| matches!(op, Op::Same(..))) {
        out.push_str("(no differences)");
        return out;
    }
    // Which ops to show: every change plus DIFF_CONTEXT unchanged lines around it.
    let changed: Vec<bool> = ops.iter().map(|op| !matches!(op, Op::Same(..))).collect();
    let show: Vec<bool> = (0..ops.len())
        .map(|i| {
            let lo = i.saturating_sub(DIFF_CONTEXT);
            let hi = (i + DIFF_CONTEXT).min(ops.len() - 1);
            changed[lo..=hi].iter().any(|c| *c)
        })
        .collect();
    let mut prev_shown = false;
    for (i, op) in ops.iter().enumerate() {
        if !show[i] {
            prev_shown = false;
            continue;
        }
        if !prev_shown {
            let (ai, bi) = op.positions();
            out.push_str(&format!("@@ -{} +{} @@\n", ai + 1, bi + 1));
        }
        prev_shown = true;
        let line = match op {
            Op::Same(ai, _) => format!(" {}\n", a_lines[*ai]),
            Op::Del(ai, _) => format!("-{}\n", a_lines[*ai]),
            Op::Add(_, bi) => format!("+{}\n", b_lines[*bi]),
        };
        if out.len() + line.len() > DIFF_MAX_BYTES {
            out.push_str("[diff truncated at 16 KiB]");
            return out;
        }
        out.push_str(&line);
    }
    out.truncate(out.trim_end_matches('\n').len());
    out
}

fn capped_lines(s: &str) -> (Vec<&str>, bool) {
    let mut lines: Vec<&str> = s.lines().take(DIFF_MAX_LINES + 1).collect();
    let cut = lines.len() > DIFF_MAX_LINES;
    lines.truncate(DIFF_MAX_LINES);
    (lines, cut)
}

/// One step of the edit script, with the positions in a and b it is at.
enum Op {
    Same(usize, usize),
    Del(usize, usize),
    Add(usize, usize),
}

impl Op {
    fn positions(&self) -> (usize, usize) {
        match self {
            Op::Same(a, b) | Op::Del(a, b) | Op::Add(a, b) => (*a, *b),
        }
    }
}

/// The classic LCS table (u16: at most 2000 lines each, so at most 4M cells = 8 MB).
fn lcs_ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    let mut table = vec![0u16; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[at(i, j)] = if a[i] == b[j] {
                table[at(i + 1, j + 1)] + 1
            } else {
                table[at(i + 1, j)].max(table[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || table[at(i + 1, j)] >= table[at(i, j + 1)]) {
            // Deletions before additions, as unified diffs show them.
            ops.push(Op::Del(i, j));
            i += 1;
        } else {
            ops.push(Op::Add(i, j));
            j += 1;
        }
    }
    ops
}

/// Expands `{{key}}`, `{{a.b}}` (dotted; numbers index lists), and `{{#each list}}…{{/each}}`
/// with `{{this}}` / `{{this.field}}` inside (nesting ≤ 8). Inside a loop a plain key is looked
/// up on the current item first, then on the top-level data. Strings are inserted raw, other
/// values as JSON. A missing key is an error naming it; the output is capped at 4 MiB.
pub fn expand_template(template: &str, data: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut budget = TEMPLATE_MAX_ITERATIONS;
    render(template, data, None, 0, &mut out, &mut budget)?;
    Ok(out)
}

fn render(
    tpl: &str,
    root: &Value,
    this: Option<&Value>,
    depth: usize,
    out: &mut String,
    budget: &mut usize,
) -> Result<(), String> {
    let mut rest = tpl;
    while let Some(open) = rest.find("{{") {
        // Every tag costs one unit of the same budget as a loop body: a wide body of tags
        // that print nothing must not make a few bodies cost billions of steps.
        *budget = budget.checked_sub(1).ok_or_else(|| {
            format!(
                "template expansion takes more than {TEMPLATE_MAX_ITERATIONS} steps (loop bodies and tags); loop over shorter lists"
            )
        })?;
        push(out, &rest[..open])?;
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or("template has a `{{` without a closing `}}`")?;
        let tag = after[..close].trim();
        rest = &after[close + 2..];
        if let Some(list_key) = tag.strip_prefix("#each") {
            let list_key = list_key.trim();
            if depth + 1 > TEMPLATE_MAX_DEPTH {
                return Err(format!(
                    "template nests {{{{#each}}}} deeper than {TEMPLATE_MAX_DEPTH} levels"
                ));
            }
            let (body, after_each) = split_each(rest)?;
            rest = after_each;
            let list = lookup(list_key, root, this)?;
            let items = list.as_array().ok_or_else(|| {
                format!(
                    "template {{{{#each {list_key}}}}} needs a list, but `{list_key}` is not one"
                )
            })?;
            for item in items {
                *budget = budget.checked_sub(1).ok_or_else(|| {
                    format!(
                        "template expansion takes more than {TEMPLATE_MAX_ITERATIONS} steps (loop bodies and tags); loop over shorter lists"
                    )
                })?;
                render(body, root, Some(item), depth + 1, out, budget)?;
            }
        } else if tag == "/each" {
            return Err("template has a {{/each}} without a matching {{#each …}}".into());
        } else {
            let v = lookup(tag, root, this)?;
            match v {
                Value::String(s) => push(out, s)?,
                other => push(out, &other.to_string())?,
            }
        }
    }
    push(out, rest)
}

/// Splits after an `{{#each …}}` into the loop body and the text after its matching `{{/each}}`.
fn split_each(s: &str) -> Result<(&str, &str), String> {
    let mut level = 1;
    let mut pos = 0;
    while let Some(open) = s[pos..].find("{{") {
        let start = pos + open;
        let close = s[start..]
            .find("}}")
            .ok_or("template has a `{{` without a closing `}}`")?;
        let tag = s[start + 2..start + close].trim();
        let end = start + close + 2;
        if tag.starts_with("#each") {
            level += 1;
        } else if tag == "/each" {
            level -= 1;
            if level == 0 {
                return Ok((&s[..start], &s[end..]));
            }
        }
        pos = end;
    }
    Err("template has a {{#each …}} without its {{/each}}".into())
}

fn lookup<'v>(key: &str, root: &'v Value, this: Option<&'v Value>) -> Result<&'v Value, String> {
    let missing = || {
        format!(
            "template key `{}` is missing from data",
            key.chars().take(100).collect::<String>()
        )
    };
    if key.is_empty() {
        return Err("template has an empty {{}}".into());
    }
    let mut segments = key.split('.');
    let first = segments.next().unwrap_or("");
    let start = if first == "this" {
        this.ok_or_else(|| "template uses {{this}} outside {{#each}}".to_string())?
    } else {
        // Inside a loop, the item's own fields come first.
        let from_this = this.and_then(|t| step(t, first));
        from_this
            .or_else(|| step(root, first))
            .ok_or_else(missing)?
    };
    let mut v = start;
    for seg in segments {
        v = step(v, seg).ok_or_else(missing)?;
    }
    Ok(v)
}

fn step<'v>(v: &'v Value, seg: &str) -> Option<&'v Value> {
    match v {
        Value::Object(o) => o.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    }
}

fn push(out: &mut String, s: &str) -> Result<(), String> {
    if out.len() + s.len() > TEMPLATE_MAX_OUTPUT {
        return Err(format!(
            "template output passes {} MiB",
            TEMPLATE_MAX_OUTPUT / (1024 * 1024)
        ));
    }
    out.push_str(s);
    Ok(())
}

/// The model's words with its tool calls, as evidence: at most 5 lines, 400 characters.
pub fn reason_short(text: Option<&str>) -> String {
    let Some(t) = text else { return String::new() };
    let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).take(5).collect();
    lines.join("\n").chars().take(400).collect()
}

/// A short hint of a call's arguments for evidence (a path, a key, a task).
pub fn args_hint(args: &serde_json::Value) -> String {
    for key in ["path", "template_path", "key", "task", "glob", "a"] {
        if let Some(v) = args.get(key).and_then(serde_json::Value::as_str) {
            return v.chars().take(120).collect();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_take_headings_and_first_sentences() {
        let text = "# Title\n\nFirst sentence. Second one.\nStill para.\n\n```\ncode. here\n```\n## Sub\nAnother para! More.\n";
        assert_eq!(
            summarize(text),
            "# Title\nFirst sentence.\n## Sub\nAnother para!"
        );
        assert_eq!(summarize("v1.2 is out"), "v1.2 is out");
        let long = "word ".repeat(2000);
        let s = summarize(&format!(
            "{long}\n\n{long}\n\n{long}\n\n{long}\n\n{long}\n\n{long}"
        ));
        assert!(s.chars().count() <= 1200, "{}", s.chars().count());
    }

    #[test]
    fn diffs() {
        assert_eq!(line_diff("a\nb\n", "a\nb\n"), "(no differences)");
        assert_eq!(
            line_diff("a\nb\nc", "a\nx\nc"),
            "@@ -1 +1 @@\n a\n-b\n+x\n c"
        );
        assert_eq!(line_diff("", "new"), "@@ -1 +1 @@\n+new");
        let a: String = (0..20).map(|i| format!("{i}\n")).collect();
        let b = a.replace("3\n", "three\n").replace("15\n", "");
        let d = line_diff(&a, &b);
        assert_eq!(d.matches("@@").count(), 4, "{d}");
        assert!(d.contains("-3\n+three") && d.contains("-15"), "{d}");
    }

    #[test]
    fn diff_caps() {
        let a: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        let b: String = (0..3000).map(|i| format!("other {i}\n")).collect();
        let d = line_diff(&a, &b);
        assert!(d.starts_with("[inputs cut to their first 2000 lines]"));
        assert!(d.ends_with("[diff truncated at 16 KiB]"));
        assert!(d.len() <= DIFF_MAX_BYTES + 100);
    }

    #[test]
    fn templates() {
        let data = json!({"title": "Hi", "n": 3, "user": {"name": "Ann"}, "items": [
            {"name": "a", "tags": ["x", "y"]}, {"name": "b", "tags": []}], "flag": true});
        assert_eq!(
            expand_template("{{ title }} {{n}} {{user.name}} {{flag}}", &data).unwrap(),
            "Hi 3 Ann true"
        );
        assert_eq!(
            expand_template("{{#each items}}[{{this.name}}:{{#each this.tags}}{{this}},{{/each}}|{{title}}]{{/each}}", &data).unwrap(),
            "[a:x,y,|Hi][b:|Hi]"
        );
        assert_eq!(
            expand_template("{{#each items}}{{name}}{{/each}}", &data).unwrap(),
            "ab"
        );
        assert_eq!(
            expand_template("{{user}}", &data).unwrap(),
            "{\"name\":\"Ann\"}"
        );
        assert_eq!(expand_template("{{items.1.name}}", &data).unwrap(), "b");
        assert_eq!(expand_template("no tags", &data).unwrap(), "no tags");
    }

    #[test]
    fn template_errors() {
        let data = json!({"a": 1, "l": [1]});
        for (t, want) in [
            ("{{missing}}", "`missing` is missing"),
            ("{{a.b}}", "`a.b` is missing"),
            ("{{a", "without a closing"),
            ("{{#each a}}x{{/each}}", "needs a list"),
            ("{{#each l}}x", "without its {{/each}}"),
            ("x{{/each}}", "without a matching"),
            ("{{this}}", "outside {{#each}}"),
            ("{{}}", "empty"),
        ] {
            let e = expand_template(t, &data).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        let deep = format!("{}x{}", "{{#each l}}".repeat(9), "{{/each}}".repeat(9));
        assert!(expand_template(&deep, &data)
            .unwrap_err()
            .contains("deeper than 8"));
        let ok = format!("{}x{}", "{{#each l}}".repeat(8), "{{/each}}".repeat(8));
        assert_eq!(expand_template(&ok, &data).unwrap(), "x");
        let big = json!({"s": "x".repeat(1024 * 1024), "l": [1, 2, 3, 4, 5]});
        assert!(expand_template("{{#each l}}{{s}}{{/each}}", &big)
            .unwrap_err()
            .contains("4 MiB"));
    }

    #[test]
    fn nested_loops_with_empty_bodies_stop_at_the_iteration_budget() {
        let items: Vec<u32> = (0..20_000).collect();
        let data = serde_json::json!({"l": items});
        let tpl =
            "{{#each l}}{{#each l}}{{#each l}}{{#each l}}{{/each}}{{/each}}{{/each}}{{/each}}";
        let err = expand_template(tpl, &data).unwrap_err();
        assert!(err.contains("bodies"), "{err}");
    }
}
