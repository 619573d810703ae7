//! Keeps secret values out of everything the kernel writes or answers about a run (contract §15
//! invariant 5): a block that received a secret and then raises with it in its message, prints it,
//! returns it or emits it must not have it land in a run record, an API answer, an audit line or
//! the kernel log. The secrets store tells the [`Redactor`] every value it holds; run records,
//! every audit entry, emitted events and worker stderr lines are scrubbed (`[redacted]`) before
//! they are kept or shown.
//!
//! What is looked for, for each value (its *needles*): the value itself; the value as JSON and as
//! Python's `repr` escape it (a block raising `f"{v!r}"` turns a newline into `\n`); each line of a
//! multi-line value (a PEM key printed to stderr arrives a line at a time). And since messages are
//! cut before they reach the kernel (a block's error at 2 000 characters, a stderr line at 2 000
//! bytes), a text that *ends* with the first [`MIN_TAIL_LEN`] bytes or more of a needle has that
//! tail replaced too.
//!
//! What it cannot do: a value the block encodes (reversed, base64, split at will) before printing
//! it. Values shorter than [`MIN_REDACTED_LEN`] bytes are not scrubbed (every `a` in every record
//! would go); such a value is no secret worth the name, and the operator guide says so. With no
//! secret set, a scrub is one atomic load.

use parking_lot::RwLock;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shortest value (and needle) scrubbed.
pub const MIN_REDACTED_LEN: usize = 4;
/// Shortest cut-off start of a needle replaced at the end of a text.
pub const MIN_TAIL_LEN: usize = 12;
/// What a scrubbed value becomes.
pub const REDACTED: &str = "[redacted]";

/// One value and how many secrets hold it.
struct Held {
    value: String,
    holders: usize,
}

#[derive(Default)]
struct Table {
    held: Vec<Held>,
    /// Every needle of every held value, longest first (a needle containing another is replaced
    /// whole).
    needles: Vec<String>,
}

impl Table {
    fn rebuild(&mut self) {
        for n in self.needles.drain(..) {
            wipe(n);
        }
        let mut needles: Vec<String> = self
            .held
            .iter()
            .flat_map(|h| needles_of(&h.value))
            .collect();
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        self.needles = needles;
    }
}

/// The value, its JSON and `repr` spellings, and its lines.
fn needles_of(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    if let Ok(json) = serde_json::to_string(value) {
        out.push(json[1..json.len() - 1].to_string());
    }
    let mut repr = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\r' => repr.push_str("\\r"),
            '\t' => repr.push_str("\\t"),
            '\'' => repr.push_str("\\'"),
            c => repr.push(c),
        }
    }
    out.push(repr);
    if value.contains('\n') {
        out.extend(value.lines().map(str::trim).map(String::from));
    }
    out.retain(|n| n.len() >= MIN_REDACTED_LEN);
    out.sort();
    out.dedup();
    out
}

/// The secret values to scrub (see the module docs).
#[derive(Default)]
pub struct Redactor {
    table: RwLock<Table>,
    any: AtomicBool,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor(..)")
    }
}

/// Overwrites a string's bytes before it is freed.
fn wipe(mut s: String) {
    // SAFETY: zero bytes keep the string valid UTF-8; volatile, so the writes are not elided.
    for b in unsafe { s.as_bytes_mut() } {
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    drop(s);
}

/// Where a text's cut-off tail starts, when it ends with the first `MIN_TAIL_LEN` bytes or more
/// of `needle` (ignoring the marks a cut leaves: `…`, ` [line truncated]`, trailing whitespace).
fn cut_tail(text: &str, needle: &str) -> Option<usize> {
    let mut body = text.trim_end();
    for mark in ["[line truncated]", "…"] {
        body = body.strip_suffix(mark).unwrap_or(body).trim_end();
    }
    // Only the last needle-length bytes can hold the start of a cut needle.
    let window = body.len().saturating_sub(needle.len());
    let first = needle.as_bytes().first()?;
    (window..body.len().saturating_sub(MIN_TAIL_LEN - 1))
        .filter(|&i| body.as_bytes()[i] == *first && body.is_char_boundary(i))
        .find(|&i| needle.as_bytes().starts_with(&body.as_bytes()[i..]))
}

impl Redactor {
    /// Starts scrubbing `value` (a secret was set to it); one more holder when already known.
    pub fn add(&self, value: &str) {
        if value.len() < MIN_REDACTED_LEN {
            return;
        }
        let mut t = self.table.write();
        match t.held.iter_mut().find(|h| h.value == value) {
            Some(h) => h.holders += 1,
            None => {
                t.held.push(Held {
                    value: value.to_string(),
                    holders: 1,
                });
                t.rebuild();
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// One holder of `value` is gone (its secret was deleted or replaced); the value stops being
    /// scrubbed when no other secret holds it.
    pub fn remove(&self, value: &str) {
        let mut t = self.table.write();
        if let Some(i) = t.held.iter().position(|h| h.value == value) {
            t.held[i].holders -= 1;
            if t.held[i].holders == 0 {
                wipe(t.held.remove(i).value);
                t.rebuild();
            }
        }
        self.any.store(!t.held.is_empty(), Ordering::Release);
    }

    /// Whether any value is held (else every scrub is a no-op).
    pub fn active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Whether `text` holds any needle whole (a quick test before a scrub that must rebuild a
    /// structure, such as an audit entry).
    pub fn mentions(&self, text: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        self.table
            .read()
            .needles
            .iter()
            .any(|n| text.contains(n.as_str()))
    }

    /// Scrubs one string in place; answers whether anything was replaced.
    pub fn scrub(&self, text: &mut String) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let t = self.table.read();
        let mut hit = false;
        for needle in &t.needles {
            if text.contains(needle.as_str()) {
                let clean = text.replace(needle.as_str(), REDACTED);
                wipe(std::mem::replace(text, clean));
                hit = true;
            }
        }
        for needle in &t.needles {
            if needle.len() <= MIN_TAIL_LEN {
                continue;
            }
            if let Some(at) = cut_tail(text, needle) {
                let mut clean = String::with_capacity(at + REDACTED.len());
                clean.push_str(&text[..at]);
                clean.push_str(REDACTED);
                wipe(std::mem::replace(text, clean));
                hit = true;
            }
        }
        hit
    }

    /// Scrubs every string (and key) of a JSON value in place.
    pub fn scrub_value(&self, value: &mut Value) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        match value {
            Value::String(s) => {
                self.scrub(s);
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(v)),
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let mut clean = k.clone();
                    if self.scrub(&mut clean) {
                        if let Some(v) = map.remove(&k) {
                            map.insert(clean, v);
                        }
                    }
                }
                map.values_mut().for_each(|v| self.scrub_value(v));
            }
            _ => {}
        }
    }

    /// Scrubs an optional string.
    pub fn scrub_opt(&self, text: &mut Option<String>) {
        if let Some(t) = text {
            self.scrub(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_and_keys_are_scrubbed_and_short_values_ignored() {
        let r = Redactor::default();
        let mut v = json!({"a": "x s3cr3t-value y", "s3cr3t-value": ["s3cr3t-value"], "n": 1});
        r.scrub_value(&mut v);
        assert_eq!(v["a"], "x s3cr3t-value y", "nothing to scrub yet");
        r.add("s3cr3t-value");
        r.add("abc");
        r.scrub_value(&mut v);
        let text = v.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(v["a"], "x [redacted] y");
        let mut s = "abc".to_string();
        assert!(
            !r.scrub(&mut s),
            "a value under the minimum length is left alone"
        );
        r.add("s3cr3t-value");
        r.remove("s3cr3t-value");
        let mut s = "s3cr3t-value".to_string();
        assert!(r.scrub(&mut s), "a second secret still holds the value");
        r.remove("s3cr3t-value");
        let mut s = "s3cr3t-value".to_string();
        assert!(!r.scrub(&mut s));
    }

    #[test]
    fn a_secret_containing_another_is_replaced_whole() {
        let r = Redactor::default();
        r.add("token");
        r.add("token-extended");
        let mut s = "see token-extended".to_string();
        r.scrub(&mut s);
        assert_eq!(s, "see [redacted]");
    }

    #[test]
    fn escaped_spellings_lines_and_cut_tails_are_scrubbed() {
        let r = Redactor::default();
        let pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END KEY-----";
        r.add(pem);
        for mut text in [
            format!("ValueError: {pem:?}"),
            format!("raised {}", pem.replace('\n', "\\n")),
            "stderr: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".to_string(),
        ] {
            r.scrub(&mut text);
            assert!(!text.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "{text}");
        }
        let long = "k".repeat(10) + &"0123456789abcdef".repeat(200);
        r.add(&long);
        // A message cut (with or without a mark) in the middle of the value.
        for cut in [
            format!("boom {}", &long[..2000]),
            format!("boom {}…", &long[..1500]),
            format!("x {} [line truncated]", &long[..1999]),
        ] {
            let mut text = cut;
            r.scrub(&mut text);
            assert!(
                text.starts_with("boom [redacted]") || text.starts_with("x [redacted]"),
                "{text}"
            );
        }
        // An ordinary text that merely shares a few bytes with a value is left alone.
        let mut text = "ends with kkkk".to_string();
        assert!(!r.scrub(&mut text));
    }
}
