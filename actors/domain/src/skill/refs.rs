//! The files a `SKILL.md` body references (L3 of progressive disclosure, contract §2).
//!
//! Three spellings count: Markdown links `[t](p)`, backticked paths `` `p` `` and plain mentions
//! `dir/file.ext`. Only relative paths come out: a URL, an absolute path, a path with a `..`
//! component or with a ':' (scheme, drive letter) is never a reference, so nothing here can point
//! the runtime at a file outside the skill or at the network.

/// Most references returned for one body (a hostile body cannot make the list unbounded).
pub const MAX_REFS: usize = 256;
/// Longest reference kept.
const MAX_REF_BYTES: usize = 1024;

/// Files the body references, in order of first appearance, deduplicated, relative paths only.
pub fn references(body: &str) -> Vec<String> {
    let mut found: Vec<(usize, String)> = Vec::new();
    // Link targets and code spans are blanked in `masked` so the plain-mention pass does not see
    // them a second time, as fragments.
    let mut masked = body.as_bytes().to_vec();
    links(body, &mut found, &mut masked);
    code_spans(body, &mut found, &mut masked);
    // Blanking whole byte ranges with ASCII spaces keeps the text valid UTF-8 only when ranges
    // fall on char boundaries, which they do (they are delimited by ASCII bytes); fall back to
    // a lossy view if that ever fails rather than panic.
    let masked = String::from_utf8_lossy(&masked).into_owned();
    plain_mentions(&masked, &mut found);
    found.sort_by_key(|(pos, _)| *pos);
    let mut out: Vec<String> = Vec::new();
    for (_, p) in found {
        if out.len() >= MAX_REFS {
            break;
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// `[text](target)` and `![alt](target)`: the target ends at ')' or whitespace (a title may follow);
/// `<target>` is unwrapped.
fn links(body: &str, found: &mut Vec<(usize, String)>, masked: &mut [u8]) {
    let bytes = body.as_bytes();
    let mut i = 0;
    while let Some(rel) = body[i..].find("](") {
        let start = i + rel + 2;
        let mut end = start;
        let angle = bytes.get(start) == Some(&b'<');
        if angle {
            while end < bytes.len() && bytes[end] != b'>' && bytes[end] != b'\n' {
                end += 1;
            }
        } else {
            while end < bytes.len() && !matches!(bytes[end], b')' | b' ' | b'\t' | b'\n' | b'\r') {
                end += 1;
            }
        }
        let target = if angle {
            &body[start + 1..end]
        } else {
            &body[start..end]
        };
        if let Some(p) = clean(target, false) {
            found.push((start, p));
        }
        for b in &mut masked[start..end] {
            *b = b' ';
        }
        i = end.max(start);
        if i >= bytes.len() {
            break;
        }
    }
}

/// Inline code spans. A run of three or more backticks is a fence marker, not a span: the fenced
/// block's lines are left to the plain-mention pass (`python scripts/fill.py` is a reference).
fn code_spans(body: &str, found: &mut Vec<(usize, String)>, masked: &mut [u8]) {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < bytes.len() && bytes[i] == b'`' {
            i += 1;
        }
        let run = i - run_start;
        if run >= 3 {
            continue;
        }
        // The span ends at the next run of exactly `run` backticks on the same line.
        let mut j = i;
        let mut close = None;
        while j < bytes.len() && bytes[j] != b'\n' {
            if bytes[j] == b'`' {
                let s = j;
                while j < bytes.len() && bytes[j] == b'`' {
                    j += 1;
                }
                if j - s == run {
                    close = Some(s);
                    break;
                }
            } else {
                j += 1;
            }
        }
        let Some(close) = close else { continue };
        let content = body[i..close].trim();
        if looks_like_path(content) {
            if let Some(p) = clean(content, false) {
                found.push((i, p));
            }
        }
        for b in &mut masked[run_start..close + run] {
            *b = b' ';
        }
        i = close + run;
    }
}

/// Tokens with a '/' and an extension, trimmed of surrounding punctuation.
fn plain_mentions(text: &str, found: &mut Vec<(usize, String)>) {
    let mut pos = 0;
    for token in text.split_inclusive(char::is_whitespace) {
        let start = pos;
        pos += token.len();
        let trimmed_start = token.trim_start_matches(['(', '[', '"', '\'', '<', '*', '_', '{']);
        let lead = token.len() - trimmed_start.len();
        let t = trimmed_start.trim_end().trim_end_matches([
            ')', ']', '"', '\'', '>', ',', ';', ':', '.', '!', '?', '*', '_', '}',
        ]);
        if t.contains('/') && has_extension(t) && path_chars(t) {
            if let Some(p) = clean(t, true) {
                found.push((start + lead, p));
            }
        }
    }
}

/// A backticked text is a path when it has no spaces and has a '/' or an extension.
fn looks_like_path(s: &str) -> bool {
    !s.is_empty() && path_chars(s) && (s.contains('/') || has_extension(s))
}

fn path_chars(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_alphanumeric()
            || matches!(
                c,
                '.' | '_' | '-' | '/' | '@' | '+' | '#' | '?' | '=' | '&' | '%' | ':' | '~'
            )
    })
}

/// The last component ends in `.ext`, ext 1–8 ASCII alphanumerics with a letter, after a
/// non-empty stem (so `1.5` and `v2.0` are not files).
fn has_extension(s: &str) -> bool {
    let s = s.split(['#', '?']).next().unwrap_or("");
    let last = s.rsplit('/').next().unwrap_or("");
    match last.rsplit_once('.') {
        Some((stem, ext)) => {
            !stem.is_empty()
                && (1..=8).contains(&ext.len())
                && ext.bytes().all(|b| b.is_ascii_alphanumeric())
                && ext.bytes().any(|b| b.is_ascii_alphabetic())
        }
        None => false,
    }
}

/// Normalises a candidate or drops it: fragment and query stripped, `./` removed; refused when
/// empty, absolute, home-relative, a URL or anything with ':' (scheme, drive letter), with a
/// `..` component, a backslash or whitespace, or too long.
fn clean(raw: &str, plain: bool) -> Option<String> {
    let s = raw.split(['#', '?']).next().unwrap_or("");
    if s.is_empty()
        || s.len() > MAX_REF_BYTES
        || s.starts_with('/')
        || s.starts_with('~')
        || s.contains(':')
        || s.contains('\\')
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return None;
    }
    // A bare host name written without a scheme (www.example.com/x.html) is a URL, not a file.
    if plain && parts[0].starts_with("www.") {
        return None;
    }
    let joined = parts.join("/");
    // A trailing '/' names a directory; keep it as written without the slash.
    Some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_spellings_in_order() {
        let body = "See [the guide](references/GUIDE.md#setup) first.\n\
                    Run `scripts/fill.py` then read forms/fields.txt.\n\
                    Also `template.docx` and [again](references/GUIDE.md).\n";
        assert_eq!(
            references(body),
            vec![
                "references/GUIDE.md",
                "scripts/fill.py",
                "forms/fields.txt",
                "template.docx"
            ]
        );
    }

    #[test]
    fn urls_anchors_and_absolute_paths_are_not_references() {
        let body = "[a](https://x.com/a.md) [b](http://x/b.md) [c](mailto:a@b.c) [d](#anchor)\n\
                    [e](/etc/passwd) [f](ftp://h/f.txt) [g](../secret.md) [h](C:/x.txt)\n\
                    `/abs/path.py` `~/.ssh/id.rsa` https://example.com/page.html www.example.com/p.html\n\
                    `a b.txt` [i](data:text/plain,x) ../up/file.md";
        assert_eq!(references(body), Vec::<String>::new());
    }

    #[test]
    fn fragments_queries_and_dot_slash_are_stripped() {
        let body = "[a](./docs/a.md?x=1) [b](<docs/b c.md>) ![img](assets/logo.png \"title\")";
        assert_eq!(references(body), vec!["docs/a.md", "assets/logo.png"]);
    }

    #[test]
    fn backticks_need_a_path_look() {
        let body = "`x = 1` `foo` `1.5` `README.md` `scripts/` `v2.0` `a.verylongextension`";
        assert_eq!(references(body), vec!["README.md", "scripts"]);
    }

    #[test]
    fn fenced_code_is_scanned_for_plain_mentions() {
        let body = "```bash\npython scripts/run.py --out build/out.json\n```\n";
        assert_eq!(references(body), vec!["scripts/run.py", "build/out.json"]);
    }

    #[test]
    fn plain_mentions_are_trimmed_of_punctuation() {
        let body =
            "(see docs/a.md), \"docs/b.md\". Then docs/c.md: done; docs/noext and a.md alone.";
        assert_eq!(
            references(body),
            vec!["docs/a.md", "docs/b.md", "docs/c.md"]
        );
    }

    #[test]
    fn the_list_is_capped() {
        let body: String = (0..400).map(|i| format!("d/f{i}.md\n")).collect();
        assert_eq!(references(&body).len(), MAX_REFS);
    }

    proptest! {
        #[test]
        fn never_a_url_or_an_absolute_path(body in "[a-z/:.#?`\\[\\]() \n~\\\\-]{0,200}") {
            for r in references(&body) {
                prop_assert!(!r.starts_with('/'), "{r}");
                prop_assert!(!r.contains(':'), "{r}");
                prop_assert!(!r.starts_with('~'), "{r}");
                prop_assert!(!r.split('/').any(|c| c == ".." || c.is_empty()), "{r}");
                prop_assert!(!r.contains('\\'), "{r}");
            }
        }
    }
}
