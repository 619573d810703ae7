//! Glob matching for `list_files {glob}` (contract §14): `*` matches within one path
//! component, `**` across components (`**/` also matches no directory), `?` one character
//! other than `/`; everything else literally. A table over (pattern position, path position)
//! makes it O(pattern × path) whatever the pattern: a hostile `*a*a*a*a*b` cannot blow up.

/// Longest pattern accepted (a longer one matches nothing).
pub const MAX_PATTERN_CHARS: usize = 256;
/// Longest path considered (a longer one matches nothing).
pub const MAX_PATH_CHARS: usize = 4096;

/// One piece of a pattern.
#[derive(Clone, Copy)]
enum Token {
    Lit(char),
    /// `?`
    Any,
    /// `*`
    Star,
    /// `**` not followed by `/`: anything, `/` included.
    Deep,
    /// `**/`: nothing, or anything that ends with `/`.
    DeepDir,
}

fn tokens(p: &[char]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' if p.get(i + 1) == Some(&'*') => {
                // `***` and more behave like `**`.
                while p.get(i) == Some(&'*') {
                    i += 1;
                }
                if p.get(i) == Some(&'/') {
                    out.push(Token::DeepDir);
                    i += 1;
                } else {
                    out.push(Token::Deep);
                }
            }
            '*' => {
                out.push(Token::Star);
                i += 1;
            }
            '?' => {
                out.push(Token::Any);
                i += 1;
            }
            c => {
                out.push(Token::Lit(c));
                i += 1;
            }
        }
    }
    out
}

/// Whether `path` (a `/`-separated relative path) matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = path.chars().collect();
    if p.len() > MAX_PATTERN_CHARS || s.len() > MAX_PATH_CHARS {
        return false;
    }
    let m = s.len();
    // next[j]: the tokens after the current one match s[j..]; built from the last token back.
    let mut next = vec![false; m + 1];
    next[m] = true;
    for t in tokens(&p).into_iter().rev() {
        let mut cur = vec![false; m + 1];
        // `dir[j]`: some s[k] == '/' with k >= j and next[k + 1] (for `**/`).
        let mut dir = false;
        for j in (0..=m).rev() {
            cur[j] = match t {
                Token::Lit(c) => j < m && s[j] == c && next[j + 1],
                Token::Any => j < m && s[j] != '/' && next[j + 1],
                Token::Star => next[j] || (j < m && s[j] != '/' && cur[j + 1]),
                Token::Deep => next[j] || (j < m && cur[j + 1]),
                Token::DeepDir => {
                    if j < m && s[j] == '/' && next[j + 1] {
                        dir = true;
                    }
                    next[j] || dir
                }
            };
        }
        next = cur;
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::matches;
    use proptest::prelude::*;

    #[test]
    fn stars_and_questions() {
        assert!(matches("*.md", "a.md"));
        assert!(!matches("*.md", "dir/a.md"));
        assert!(matches("**/*.md", "dir/sub/a.md"));
        assert!(matches("**/*.md", "a.md"));
        assert!(matches("references/*", "references/x.txt"));
        assert!(!matches("references/*", "references/d/x.txt"));
        assert!(matches("build/**", "build/a/b/c"));
        assert!(matches("?.py", "a.py"));
        assert!(!matches("?.py", "ab.py"));
        assert!(matches("scripts/*.py", "scripts/run.py"));
    }

    #[test]
    fn a_hostile_pattern_stays_fast() {
        let path = "a".repeat(5000);
        let pattern = format!("{}b", "*a".repeat(100));
        // Backtracking only to the last star keeps this O(pattern × path): an exponential
        // matcher would not finish this test.
        assert!(!matches(&pattern, &path));
    }

    proptest! {
        #[test]
        fn a_literal_matches_itself(s in "[a-z/._-]{0,40}") {
            prop_assert!(matches(&s, &s));
            prop_assert!(matches("**", &s));
        }
    }
}
