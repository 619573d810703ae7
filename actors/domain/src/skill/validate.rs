//! The validation gate (contract §9): completeness, compliance and quality of the expected
//! outputs. `finish` is accepted only after this passes.
//!
//! The runtime supplies the files through [`BuildView`], so the gate itself never touches the file
//! system. JSON Schemas come from the caller; the `jsonschema` crate is built without its remote
//! `$ref` resolvers, so a schema cannot make the kernel fetch a URL or read a local file.

use super::act::{Detail, ExpectedOutput, OutputKind, Unmet, Validation};
use serde_json::Value;

/// Most problems reported per output (a schema can fail in thousands of places).
const MAX_PROBLEMS: usize = 20;
/// Most links checked per file.
const MAX_LINKS: usize = 1000;

/// Read access to the run's `build/`.
pub trait BuildView {
    /// Bytes of a file under `build/` (`rel` without `build/`), `None` if absent or not a regular
    /// file.
    fn read(&self, rel: &str) -> Option<Vec<u8>>;
}

/// The outcome of the gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// All three gates passed.
    pub passed: bool,
    /// The gates; `details` lists only outputs with problems.
    pub validation: Validation,
    /// One entry per failing output, with a suggestion.
    pub unmet: Vec<Unmet>,
}

/// Compiles a caller's JSON Schema (no remote references can be fetched).
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// Runs the three gates over `expected`. Empty `expected` passes.
pub fn validate(expected: &[ExpectedOutput], view: &dyn BuildView) -> Report {
    let mut validation = Validation {
        completeness: true,
        compliance: true,
        quality: true,
        details: Vec::new(),
    };
    let mut unmet = Vec::new();
    for out in expected {
        let mut problems = Vec::new();
        let mut missing = false;
        let mut schema_failed = false;
        let p = out.path.as_str();
        match out.path.strip_prefix("build/").filter(|r| !r.is_empty()) {
            None => {
                validation.compliance = false;
                problems.push(format!(
                    "{p} is not under build/; outputs must be written under build/."
                ));
            }
            Some(rel) => match view.read(rel) {
                None => {
                    validation.completeness = false;
                    missing = true;
                    problems.push(format!("{p} does not exist."));
                }
                Some(bytes) => {
                    let c = compliance(out, rel, &bytes, &mut problems, &mut schema_failed);
                    validation.compliance &= c;
                    let q = quality(out, rel, &bytes, view, &mut problems);
                    validation.quality &= q;
                }
            },
        }
        if !problems.is_empty() {
            problems.truncate(MAX_PROBLEMS);
            let suggestion = if missing {
                format!("Write {p} (write_artifact with a path relative to build/, or a script that writes it), then call validate again.")
            } else if schema_failed {
                format!("Rewrite {p} so that it matches the JSON schema of this expected output, then call validate again.")
            } else {
                format!("Rewrite {p} to fix the problems listed, then call validate again.")
            };
            unmet.push(Unmet {
                item: p.to_string(),
                reason: problems.join(" "),
                suggestion,
            });
            validation.details.push(Detail {
                path: p.to_string(),
                problems,
            });
        }
    }
    Report {
        passed: validation.completeness && validation.compliance && validation.quality,
        validation,
        unmet,
    }
}

fn compliance(
    out: &ExpectedOutput,
    rel: &str,
    bytes: &[u8],
    problems: &mut Vec<String>,
    schema_failed: &mut bool,
) -> bool {
    let p = &out.path;
    let mut ok = true;
    if let Some(pattern) = &out.name_pattern {
        let file = rel.rsplit('/').next().unwrap_or(rel);
        if !glob_match(pattern, file) {
            ok = false;
            problems.push(format!(
                "{p}: the file name `{file}` does not match the name pattern `{pattern}`."
            ));
        }
    }
    let text = String::from_utf8_lossy(bytes);
    for needle in &out.must_contain {
        if !text.contains(needle.as_str()) {
            ok = false;
            problems.push(format!(
                "{p} does not contain the required text `{needle}`."
            ));
        }
    }
    if let Some(schema) = &out.schema {
        match serde_json::from_slice::<Value>(bytes) {
            // Not JSON at all is a quality problem, reported there.
            Err(_) => {}
            Ok(instance) => match compile_schema(schema) {
                Err(e) => {
                    ok = false;
                    *schema_failed = true;
                    problems.push(format!(
                        "{p}: the expected output's schema does not compile: {e}."
                    ));
                }
                Ok(validator) => {
                    for e in validator.iter_errors(&instance).take(MAX_PROBLEMS) {
                        ok = false;
                        *schema_failed = true;
                        let at = e.instance_path().to_string();
                        let at = if at.is_empty() {
                            "the document root".to_string()
                        } else {
                            format!("`{at}`")
                        };
                        problems.push(format!("{p} does not match its schema at {at}: {e}."));
                    }
                }
            },
        }
    }
    ok
}

fn quality(
    out: &ExpectedOutput,
    rel: &str,
    bytes: &[u8],
    view: &dyn BuildView,
    problems: &mut Vec<String>,
) -> bool {
    let p = &out.path;
    let mut ok = true;
    if bytes.is_empty() {
        problems.push(format!("{p} is empty."));
        return false;
    }
    if let Some(min) = out.min_bytes {
        if (bytes.len() as u64) < min {
            ok = false;
            problems.push(format!(
                "{p} is {} bytes; at least {min} are expected.",
                bytes.len()
            ));
        }
    }
    if out.kind == OutputKind::Binary {
        return ok;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        problems.push(format!(
            "{p} is not valid UTF-8 text ({} expected).",
            out.kind.as_str()
        ));
        return false;
    };
    if out.kind == OutputKind::Json {
        if let Err(e) = serde_json::from_str::<Value>(text) {
            ok = false;
            problems.push(format!("{p} is not valid JSON: {e}."));
        }
    }
    for placeholder in placeholders(text) {
        ok = false;
        problems.push(format!(
            "{p} contains an unfilled placeholder: {placeholder}."
        ));
    }
    let links = match out.kind {
        OutputKind::Markdown => markdown_links(text),
        OutputKind::Html => html_links(text),
        _ => Vec::new(),
    };
    let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    for link in links.into_iter().take(MAX_LINKS) {
        match resolve_link(dir, &link) {
            Some(Err(())) => {
                ok = false;
                problems.push(format!(
                    "{p} links to `{link}`, which points outside build/."
                ));
            }
            Some(Ok(target)) if view.read(&target).is_none() => {
                ok = false;
                problems.push(format!(
                    "{p} links to `{link}`, but build/{target} does not exist."
                ));
            }
            None | Some(Ok(_)) => {}
        }
    }
    ok
}

/// `{{…}}`, `TODO` and `lorem ipsum` (any case), each reported once.
fn placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(start) = text.find("{{") {
        if let Some(len) = text[start..].find("}}") {
            let shown: String = text[start..start + len + 2].chars().take(60).collect();
            found.push(format!("`{shown}`"));
        }
    }
    if text.contains("TODO") {
        found.push("`TODO`".into());
    }
    if text.to_lowercase().contains("lorem ipsum") {
        found.push("`lorem ipsum`".into());
    }
    found
}

fn markdown_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(rel) = text[i..].find("](") {
        let start = i + rel + 2;
        let (s, e) = if bytes.get(start) == Some(&b'<') {
            let e = text[start..]
                .find(['>', '\n'])
                .map_or(text.len(), |x| start + x);
            (start + 1, e)
        } else {
            let e = text[start..]
                .find([')', ' ', '\t', '\n', '\r'])
                .map_or(text.len(), |x| start + x);
            (start, e)
        };
        out.push(text[s..e].to_string());
        i = e.max(start);
        if out.len() > MAX_LINKS {
            break;
        }
    }
    out
}

fn html_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = text.to_ascii_lowercase();
    for attr in ["href=", "src="] {
        let mut i = 0;
        while let Some(rel) = lower[i..].find(attr) {
            let at = i + rel;
            let start = at + attr.len();
            i = start;
            // `data-src=` and similar are different attributes.
            let prev = lower[..at].chars().next_back();
            if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                continue;
            }
            let rest = &text[start..];
            let value = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or(""),
                _ => rest
                    .split(|c: char| c.is_whitespace() || c == '>')
                    .next()
                    .unwrap_or(""),
            };
            out.push(value.to_string());
            if out.len() > MAX_LINKS {
                return out;
            }
        }
    }
    out
}

/// A relative link, resolved against `dir` (inside build/). `None` = not a file link (URL,
/// scheme, anchor, absolute, empty); `Some(Err)` = climbs out of build/.
fn resolve_link(dir: &str, link: &str) -> Option<Result<String, ()>> {
    let link = link.trim();
    let path = link.split(['#', '?']).next().unwrap_or("");
    if path.is_empty() || path.starts_with('/') {
        return None;
    }
    // A ':' before any '/' is a scheme (http:, mailto:, data:, javascript:).
    let first = path.split('/').next().unwrap_or("");
    if first.contains(':') {
        return None;
    }
    let decoded = percent_decode(path);
    let mut parts: Vec<&str> = if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for c in decoded.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Some(Err(()));
                }
            }
            c => parts.push(c),
        }
    }
    Some(Ok(parts.join("/")))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `*` = any run of characters, `?` = one character; everything else literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point: linear in practice, no exponential blow-up
    // on patterns like `*a*a*a*b`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests;
