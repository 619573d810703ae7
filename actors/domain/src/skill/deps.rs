//! The dependency set of one skill script (contract §8 "Dependencies"): what the `run_script`
//! call asks (`{"pip": [...], "npm": [...]}`), the skill root's `requirements.txt` (pip) and
//! `package.json` `dependencies` (npm), and a `.py` script's PEP 723 `# /// script` header.
//!
//! Every item is checked strictly, and one bad item refuses the whole call with a message that
//! names it (`invalid_arguments`): packages are fetched **by name** from the operator's package
//! client configuration, so anything that would choose another source or run an option is out.
//! * pip: a PEP 508 name, optional `[extras]`, optional version specifiers (`==`, `!=`, `<=`,
//!   `>=`, `<`, `>`, `~=`, comma separated; `==1.*` wildcards). Refused: URLs and VCS
//!   (`git+https://…`), direct references (`@`), paths, options (`-r`, `--index-url`, `-e`, …),
//!   environment markers (`;`: the environment serves one interpreter).
//! * npm: `name` or `@scope/name`, optional `@range` — exact versions and simple ranges
//!   (`^1.2.0`, `~1.2`, `>=1.0.0 <2.0.0`, `1.x`, `*`). Refused: `file:`, `link:`, `git…`, URLs,
//!   `npm:` aliases, tags (`latest`), `||` and hyphen ranges.
//!
//! Canonical forms: pip names lower case with `_`/`.` → `-`, extras sorted, specifiers without
//! spaces and sorted; npm ranges comma-separated with a bare version `1.2.3` made exact
//! (`=1.2.3`, npm's meaning). The set of each runtime is sorted and deduplicated; its
//! environment is named by [`env_hash`]. Caps: [`MAX_SPECS`] per runtime, [`MAX_SPEC_BYTES`]
//! per item, [`MAX_FILE_BYTES`] per file read (the caller reads at most that).

use crate::pip::{normalize, valid_name};
use sha2::{Digest, Sha256};

/// Most specs per runtime (call + files together, after dedup).
pub const MAX_SPECS: usize = 64;
/// Longest spec, in bytes.
pub const MAX_SPEC_BYTES: usize = 200;
/// Largest `requirements.txt`, `package.json` or script read for its dependencies.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// Longest npm package name (npm's own limit).
pub const MAX_NPM_NAME: usize = 214;

/// The runtime an environment serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnvRuntime {
    Python,
    Node,
}

impl EnvRuntime {
    /// `python` or `node` (the directory under `user_data/skill_envs/`).
    pub fn as_str(self) -> &'static str {
        match self {
            EnvRuntime::Python => "python",
            EnvRuntime::Node => "node",
        }
    }
}

/// One checked npm requirement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NpmSpec {
    /// `name` or `@scope/name`.
    pub name: String,
    /// A `semver::VersionReq` text (`*` when none was given).
    pub range: String,
}

impl NpmSpec {
    /// `name@range`.
    pub fn canonical(&self) -> String {
        format!("{}@{}", self.name, self.range)
    }

    /// The range as a matcher.
    pub fn req(&self) -> semver::VersionReq {
        semver::VersionReq::parse(&self.range).unwrap_or(semver::VersionReq::STAR)
    }
}

/// The checked dependency set of one script: canonical pip requirements and npm specs, each
/// sorted and deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepSet {
    pub pip: Vec<String>,
    pub npm: Vec<NpmSpec>,
}

/// Where the items come from (the files' texts are read by the caller, at most
/// [`MAX_FILE_BYTES`] each; `None` = the file is absent).
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    pub call_pip: Vec<String>,
    pub call_npm: Vec<String>,
    pub requirements_txt: Option<&'a str>,
    pub package_json: Option<&'a str>,
    /// The `.py` script's text (its PEP 723 header is read).
    pub python_script: Option<&'a str>,
}

impl DepSet {
    /// Whether nothing is needed.
    pub fn is_empty(&self) -> bool {
        self.pip.is_empty() && self.npm.is_empty()
    }

    /// The set of `sources`, or the reason naming the refused item and where it came from.
    pub fn collect(s: &Sources) -> Result<DepSet, String> {
        let mut pip = Vec::new();
        for item in &s.call_pip {
            pip.push(parse_pip(item).map_err(|e| format!("dependencies.pip: {e}"))?);
        }
        if let Some(text) = s.requirements_txt {
            for (n, item) in requirements_lines(text)? {
                pip.push(parse_pip(&item).map_err(|e| format!("requirements.txt line {n}: {e}"))?);
            }
        }
        if let Some(text) = s.python_script {
            for item in pep723_dependencies(text)? {
                pip.push(
                    parse_pip(&item).map_err(|e| format!("the script's /// script header: {e}"))?,
                );
            }
        }
        let mut npm = Vec::new();
        for item in &s.call_npm {
            npm.push(parse_npm(item).map_err(|e| format!("dependencies.npm: {e}"))?);
        }
        if let Some(text) = s.package_json {
            for (name, range) in package_json_dependencies(text)? {
                npm.push(
                    parse_npm_parts(&name, &range)
                        .map_err(|e| format!("package.json dependencies: {e}"))?,
                );
            }
        }
        pip.sort();
        pip.dedup();
        npm.sort();
        npm.dedup();
        for (what, n) in [("pip", pip.len()), ("npm", npm.len())] {
            if n > MAX_SPECS {
                return Err(format!(
                    "{n} {what} dependencies; at most {MAX_SPECS} are installed for one script"
                ));
            }
        }
        Ok(DepSet { pip, npm })
    }

    /// The canonical items of one runtime.
    pub fn items(&self, rt: EnvRuntime) -> Vec<String> {
        match rt {
            EnvRuntime::Python => self.pip.clone(),
            EnvRuntime::Node => self.npm.iter().map(NpmSpec::canonical).collect(),
        }
    }
}

/// The name of the environment of `items` (canonical, sorted, deduplicated) for `rt`: the
/// first 32 hex characters of a sha256 over a version tag, the runtime and the items.
pub fn env_hash(rt: EnvRuntime, items: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"rumi-skill-env-v1\n");
    h.update(rt.as_str().as_bytes());
    for i in items {
        h.update(b"\n");
        h.update(i.as_bytes());
    }
    hex::encode(h.finalize())[..32].to_string()
}

use crate::pip::shown;

fn common_checks(s: &str) -> Result<(), String> {
    if s.len() > MAX_SPEC_BYTES {
        return Err(format!(
            "{} is longer than {MAX_SPEC_BYTES} bytes",
            shown(s)
        ));
    }
    if s.trim().is_empty() {
        return Err("an empty dependency".into());
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(format!("{} holds a control character", shown(s)));
    }
    let t = s.trim_start();
    if t.starts_with('-') {
        return Err(format!(
            "{} is an option; options (-r, -e, --index-url, …) are not allowed: the operator's package configuration chooses where packages come from; give a package name",
            shown(s)
        ));
    }
    if s.contains("://") || t.starts_with("git+") || t.starts_with("git:") {
        return Err(format!(
            "{} is a URL; only packages by name (with a version) are installed",
            shown(s)
        ));
    }
    if s.contains('\\') || t.starts_with('.') || t.starts_with('/') || t.starts_with('~') {
        return Err(format!(
            "{} is a path; only packages by name (with a version) are installed",
            shown(s)
        ));
    }
    Ok(())
}

const PIP_OPS: [&str; 7] = ["~=", "==", "!=", "<=", ">=", "<", ">"];

/// One pip requirement, checked and canonical (`name[extras]specifiers`).
pub fn parse_pip(s: &str) -> Result<String, String> {
    common_checks(s)?;
    if s.contains(';') {
        return Err(format!(
            "{}: environment markers (;) are not supported; give NAME[extras]SPECIFIERS",
            shown(s)
        ));
    }
    if s.contains('@') {
        return Err(format!(
            "{}: direct references (@) are not allowed; give NAME[extras]SPECIFIERS",
            shown(s)
        ));
    }
    if s.contains('#') {
        return Err(format!("{}: a comment is not a requirement", shown(s)));
    }
    let t = s.trim();
    let name_end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(t.len());
    let name = &t[..name_end];
    if !valid_name(name) {
        return Err(format!(
            "{}: not a package name (letters, digits, and . _ - inside)",
            shown(s)
        ));
    }
    let mut rest = t[name_end..].trim_start();
    let mut extras = Vec::new();
    if let Some(r) = rest.strip_prefix('[') {
        let Some(close) = r.find(']') else {
            return Err(format!("{}: an unclosed [extras] list", shown(s)));
        };
        for e in r[..close].split(',') {
            let e = e.trim();
            if !valid_name(e) {
                return Err(format!("{}: extra {} is not a name", shown(s), shown(e)));
            }
            extras.push(normalize(e));
        }
        extras.sort();
        extras.dedup();
        rest = r[close + 1..].trim_start();
    }
    let mut clauses = Vec::new();
    if !rest.is_empty() {
        for clause in rest.split(',') {
            let c = clause.trim();
            let Some(op) = PIP_OPS.iter().find(|op| c.starts_with(**op)) else {
                return Err(format!(
                    "{}: {} is not a version specifier (==, !=, <=, >=, <, >, ~= and a version)",
                    shown(s),
                    shown(c)
                ));
            };
            let v = c[op.len()..].trim();
            let wildcard = matches!(*op, "==" | "!=") && v.ends_with(".*");
            let core = if wildcard { &v[..v.len() - 2] } else { v };
            let ok = !core.is_empty()
                && core.as_bytes()[0].is_ascii_alphanumeric()
                && core.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'!' | b'-' | b'_')
                });
            if !ok {
                return Err(format!("{}: {} is not a version", shown(s), shown(v)));
            }
            clauses.push(format!("{op}{v}"));
        }
        clauses.sort();
        clauses.dedup();
    }
    let mut out = normalize(name);
    if !extras.is_empty() {
        out.push('[');
        out.push_str(&extras.join(","));
        out.push(']');
    }
    out.push_str(&clauses.join(","));
    Ok(out)
}

/// A valid npm package name: `name` or `@scope/name`, lower case, URL-safe characters.
pub fn valid_npm_name(name: &str) -> bool {
    fn part(p: &str) -> bool {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.starts_with('_')
            && p.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b'.' | b'_' | b'~')
            })
    }
    if name.is_empty() || name.len() > MAX_NPM_NAME {
        return false;
    }
    match name.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, n)) => part(scope) && part(n) && !n.contains('/'),
            None => false,
        },
        None => part(name) && !matches!(name, "node_modules" | "favicon.ico"),
    }
}

/// One npm spec (`name`, `name@range`, `@scope/name@range`), checked and canonical.
pub fn parse_npm(s: &str) -> Result<NpmSpec, String> {
    common_checks(s)?;
    let t = s.trim();
    let head = t.strip_prefix('@').unwrap_or(t);
    if head.split('@').next().is_some_and(|n| n.contains(':')) {
        return Err(format!(
            "{}: file:, link:, git: and other references are not allowed; give name@version",
            shown(s)
        ));
    }
    let (name, range) = match t.strip_prefix('@') {
        Some(rest) => match rest.split_once('@') {
            Some((n, r)) => (format!("@{n}"), r.to_string()),
            None => (t.to_string(), String::new()),
        },
        None => match t.split_once('@') {
            Some((n, r)) => (n.to_string(), r.to_string()),
            None => (t.to_string(), String::new()),
        },
    };
    parse_npm_parts(&name, &range).map_err(|e| {
        if e.starts_with('"') {
            e
        } else {
            format!("{}: {e}", shown(s))
        }
    })
}

/// A name and a range (as `package.json` `dependencies` gives them), checked and canonical.
pub fn parse_npm_parts(name: &str, range: &str) -> Result<NpmSpec, String> {
    if name.len() + range.len() + 1 > MAX_SPEC_BYTES {
        return Err(format!(
            "{} is longer than {MAX_SPEC_BYTES} bytes",
            shown(&format!("{name}@{range}"))
        ));
    }
    if !valid_npm_name(name) {
        return Err(format!(
            "{} is not an npm package name (name or @scope/name, lower case)",
            shown(name)
        ));
    }
    let r = range.trim();
    let lower = r.to_ascii_lowercase();
    for (bad, what) in [
        ("file:", "a file: reference"),
        ("link:", "a link: reference"),
        ("npm:", "an npm: alias"),
        ("git", "a git reference"),
        ("http", "a URL"),
        ("workspace:", "a workspace: reference"),
        ("portal:", "a portal: reference"),
    ] {
        if lower.starts_with(bad) {
            return Err(format!(
                "{}@{}: {what} is not allowed; give a version or a range",
                name,
                shown(r)
            ));
        }
    }
    if r.contains("||") || r.contains(" - ") {
        return Err(format!(
            "{name}@{}: `||` and hyphen ranges are not supported; give one range like ^1.2.0 or >=1.0.0 <2.0.0",
            shown(r)
        ));
    }
    if r.contains(['/', ':', '@', '\\']) {
        return Err(format!("{name}@{}: not a version or a range", shown(r)));
    }
    let canonical = canonical_range(r).ok_or_else(|| {
        format!(
            "{name}@{}: not a version or a simple range (exact 1.2.3, ^1.2.0, ~1.2.0, >=1.0.0 <2.0.0, 1.x, *)",
            shown(r)
        )
    })?;
    Ok(NpmSpec {
        name: name.to_string(),
        range: canonical,
    })
}

/// npm's range text as a `semver::VersionReq` text: comparators separated by spaces or commas
/// joined by `, `, a bare version made exact (`=`), `latest`/empty → `*`. None if it does not
/// parse.
fn canonical_range(r: &str) -> Option<String> {
    if r.is_empty() || r == "*" || r == "x" || r == "X" {
        return Some("*".into());
    }
    let mut parts: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for tok in r.split([' ', ',']).filter(|t| !t.is_empty()) {
        // `>= 1.0.0` (an operator alone) joins the next token.
        if tok
            .chars()
            .all(|c| matches!(c, '<' | '>' | '=' | '^' | '~'))
        {
            pending_op.push_str(tok);
            continue;
        }
        let mut full = std::mem::take(&mut pending_op);
        full.push_str(tok);
        let full = full.strip_prefix('v').unwrap_or(&full).to_string();
        let starts_digit = full.as_bytes().first().is_some_and(u8::is_ascii_digit);
        let wildcard = full.contains(['*', 'x', 'X']);
        let c = if starts_digit && !wildcard {
            format!("={full}")
        } else {
            full.replace(['x', 'X'], "*")
        };
        parts.push(c);
    }
    if !pending_op.is_empty() || parts.is_empty() || parts.len() > 8 {
        return None;
    }
    let text = parts.join(", ");
    let req = semver::VersionReq::parse(&text).ok()?;
    Some(req.to_string())
}

/// The requirement lines of a `requirements.txt`: blank lines and `#` comments (whole-line or
/// after a space) are skipped; each other line is one item with its 1-based line number.
pub fn requirements_lines(text: &str) -> Result<Vec<(usize, String)>, String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!(
            "requirements.txt is larger than {MAX_FILE_BYTES} bytes"
        ));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = match line.find(" #").or_else(|| line.find("\t#")) {
            Some(at) => &line[..at],
            None => line,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.ends_with('\\') {
            return Err(format!(
                "requirements.txt line {}: line continuations are not supported",
                i + 1
            ));
        }
        out.push((i + 1, line.to_string()));
        if out.len() > MAX_SPECS {
            return Err(format!(
                "requirements.txt has more than {MAX_SPECS} requirements"
            ));
        }
    }
    Ok(out)
}

/// `package.json`'s `dependencies` as (name, range) pairs (other sections are not installed).
pub fn package_json_dependencies(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!(
            "package.json is larger than {MAX_FILE_BYTES} bytes"
        ));
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("package.json is not JSON (line {})", e.line()))?;
    let deps = match v.get("dependencies") {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => return Err("package.json: dependencies is not an object".into()),
    };
    if deps.len() > MAX_SPECS {
        return Err(format!(
            "package.json has more than {MAX_SPECS} dependencies"
        ));
    }
    deps.iter()
        .map(|(k, v)| match v.as_str() {
            Some(r) => Ok((k.clone(), r.to_string())),
            None => Err(format!(
                "package.json dependencies: the range of {} is not a string",
                shown(k)
            )),
        })
        .collect()
}

/// The `dependencies = [...]` of a PEP 723 `# /// script` block (none without the block).
/// Only that key is read, as a list of quoted strings; other keys are ignored.
pub fn pep723_dependencies(script: &str) -> Result<Vec<String>, String> {
    let head = &script[..floor_boundary(script, MAX_FILE_BYTES)];
    let mut body: Option<String> = None;
    let mut closed = false;
    for line in head.lines() {
        match &mut body {
            None => {
                if line.trim_end() == "# /// script" {
                    body = Some(String::new());
                }
            }
            Some(b) => {
                if line.trim_end() == "# ///" {
                    closed = true;
                    break;
                }
                let content = if line == "#" {
                    ""
                } else if let Some(c) = line.strip_prefix("# ") {
                    c
                } else {
                    return Err(
                        "the /// script header: every line inside it starts with '# '".into(),
                    );
                };
                b.push_str(content);
                b.push('\n');
            }
        }
    }
    let Some(body) = body else {
        return Ok(Vec::new());
    };
    if !closed {
        return Err("the /// script header has no closing '# ///' line".into());
    }
    let Some(at) = body
        .lines()
        .scan(0usize, |off, l| {
            let start = *off;
            *off += l.len() + 1;
            Some((start, l))
        })
        .find(|(_, l)| {
            let t = l.trim_start();
            t.starts_with("dependencies") && t["dependencies".len()..].trim_start().starts_with('=')
        })
        .map(|(start, _)| start)
    else {
        return Ok(Vec::new());
    };
    let after = &body[at..];
    let open = after
        .find('[')
        .ok_or("the /// script header: dependencies is not a list")?;
    let mut items = Vec::new();
    let mut chars = after[open + 1..].chars();
    loop {
        match chars.next() {
            None => return Err("the /// script header: the dependencies list is not closed".into()),
            Some(']') => break,
            Some(c) if c.is_whitespace() || c == ',' => {}
            Some('#') => {
                // A TOML comment to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            Some(q @ ('"' | '\'')) => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err("the /// script header: an unclosed string".into());
                        }
                        Some(c) if c == q => break,
                        Some('\\') if q == '"' => {
                            return Err(
                                "the /// script header: escapes in dependency strings are not supported"
                                    .into(),
                            )
                        }
                        Some(c) => s.push(c),
                    }
                    if s.len() > MAX_SPEC_BYTES {
                        return Err(format!(
                            "the /// script header: a dependency is longer than {MAX_SPEC_BYTES} bytes"
                        ));
                    }
                }
                items.push(s);
                if items.len() > MAX_SPECS {
                    return Err(format!(
                        "the /// script header has more than {MAX_SPECS} dependencies"
                    ));
                }
            }
            Some(_) => {
                return Err(
                    "the /// script header: dependencies is a list of quoted strings".into(),
                )
            }
        }
    }
    Ok(items)
}

fn floor_boundary(s: &str, at: usize) -> usize {
    let mut i = at.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests;
