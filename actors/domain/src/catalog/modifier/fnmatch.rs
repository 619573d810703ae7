//! `fnmatch`-style patterns for `target_flow_id`: `*` (any run), `?` (one character), `[seq]`,
//! `[!seq]` (a set or range such as `[a-c]`). Matching is case-sensitive (flow ids are) and takes
//! time proportional to the product of the two lengths at worst — no backtracking blow-up for
//! `*a*a*a*…` (both are bounded: ids by 128, patterns by [`MAX_PATTERN_CHARS`]).

/// Longest `target_flow_id`, in characters.
pub const MAX_PATTERN_CHARS: usize = 256;

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    Star,
    Set {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

/// Whether `target` uses any pattern character (else it names one flow exactly).
pub fn is_pattern(target: &str) -> bool {
    target.contains(['*', '?', '['])
}

impl Pattern {
    /// Compiles `pattern`. An unclosed `[` is a literal `[`, as in Python's `fnmatch`.
    pub fn new(pattern: &str) -> Pattern {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                '[' => match set(&chars, i + 1) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Literal('['));
                        i += 1;
                    }
                },
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Pattern { tokens }
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let mut unbounded = u64::MAX;
        self.matches_within(text, &mut unbounded)
            .unwrap_or_default()
    }

    /// [`Self::matches`], counting its steps against `budget`; `None` when the budget ran out
    /// first (a catalog bounds the matching work thousands of patterns over thousands of flows
    /// may ask for).
    pub fn matches_within(&self, text: &str, budget: &mut u64) -> Option<bool> {
        let text: Vec<char> = text.chars().collect();
        // Iterative matching with one remembered star: linear in practice, and bounded by
        // len(pattern) * len(text) in the worst case.
        let (mut p, mut t) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            *budget = budget.checked_sub(1)?;
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(tok) if one(tok, text[t]) => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return Some(false),
                },
            }
        }
        Some(self.tokens[p..].iter().all(|t| *t == Token::Star))
    }
}

/// Whether a single-character token matches `c`.
fn one(tok: &Token, c: char) -> bool {
    match tok {
        Token::Literal(l) => *l == c,
        Token::Any => true,
        Token::Set { negated, items } => {
            items.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
        Token::Star => false,
    }
}

/// Reads a `[...]` set starting after the `[` at `start`; `None` when it is not closed.
fn set(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'!');
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let first = i;
    loop {
        let c = *chars.get(i)?;
        // A `]` first in the set is a member, as in fnmatch.
        if c == ']' && i > first {
            return Some((Token::Set { negated, items }, i + 1));
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|c| *c != ']') {
            let hi = chars[i + 2];
            items.push((c, hi));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::new(p).matches(t)
    }

    #[test]
    fn the_fnmatch_forms() {
        assert!(m("*", "anything"));
        assert!(m("*", ""));
        assert!(m("my_pack.*", "my_pack.chat"));
        assert!(!m("my_pack.*", "other.chat"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("flow[0-9]", "flow7"));
        assert!(!m("flow[0-9]", "flowx"));
        assert!(m("flow[!0-9]", "flowx"));
        assert!(m("[]]x", "]x"));
        assert!(m("a[bc", "a[bc"), "an unclosed [ is literal");
        assert!(m("*.chat.*", "p.chat.v2"));
        assert!(!m("*.chat.*", "p.chat"));
        assert!(m("exact", "exact") && !m("exact", "exactly"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let p = "*a".repeat(100) + "b";
        let t = "a".repeat(128);
        assert!(!m(&p, &t));
    }

    /// A plain recursive matcher (exponential, fine for short strings) as the reference.
    fn reference(p: &[Token], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(Token::Star) => (0..=t.len()).any(|i| reference(&p[1..], &t[i..])),
            Some(tok) => !t.is_empty() && one(tok, t[0]) && reference(&p[1..], &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_a_plain_recursive_matcher(p in "[ab*?\\[\\]!-]{0,8}", t in "[ab\\]-]{0,8}") {
            let pat = Pattern::new(&p);
            let chars: Vec<char> = t.chars().collect();
            prop_assert_eq!(pat.matches(&t), reference(&pat.tokens, &chars));
        }

        #[test]
        fn a_literal_matches_only_itself(a in "[a-z_.]{1,12}", b in "[a-z_.]{1,12}") {
            prop_assert_eq!(m(&a, &b), a == b);
        }
    }
}
