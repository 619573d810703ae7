//! Keeps secret values out of everything the kernel writes or answers about a run (contract §15
//! invariant 5): a block that received a secret and then raises with it in its message, prints it,
//! returns it or emits it must not have it land in a run record, an API answer, an audit line or
//! the kernel log. The secrets store tells the [`Redactor`] every value it holds; run records,
//! block audit entries, emitted events and worker stderr lines are scrubbed of each one
//! (`[redacted]`) before they are kept or shown.
//!
//! Values shorter than [`MIN_REDACTED_LEN`] bytes are not scrubbed (every `a` in every record
//! would go); such a value is no secret worth the name, and the operator guide says so. With no
//! secret set the scrub is one atomic load.

use parking_lot::RwLock;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shortest value scrubbed.
pub const MIN_REDACTED_LEN: usize = 4;
/// What a scrubbed value becomes.
pub const REDACTED: &str = "[redacted]";

/// The secret values to scrub (see the module docs).
#[derive(Default)]
pub struct Redactor {
    /// Each value with how many holders (secret keys) it has, longest first.
    values: RwLock<Vec<(String, usize)>>,
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

impl Redactor {
    /// Starts scrubbing `value` (a secret was set to it); one more holder when already known.
    pub fn add(&self, value: &str) {
        if value.len() < MIN_REDACTED_LEN {
            return;
        }
        let mut v = self.values.write();
        match v.iter_mut().find(|(x, _)| x == value) {
            Some((_, holders)) => *holders += 1,
            None => {
                v.push((value.to_string(), 1));
                // Longest first: a secret containing another is replaced whole.
                v.sort_by_key(|(x, _)| std::cmp::Reverse(x.len()));
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// One holder of `value` is gone (its secret was deleted or replaced); the value stops being
    /// scrubbed when no other secret holds it.
    pub fn remove(&self, value: &str) {
        let mut v = self.values.write();
        if let Some(i) = v.iter().position(|(x, _)| x == value) {
            v[i].1 -= 1;
            if v[i].1 == 0 {
                wipe(v.remove(i).0);
            }
        }
        self.any.store(!v.is_empty(), Ordering::Release);
    }

    /// Scrubs one string in place; answers whether anything was replaced.
    pub fn scrub(&self, text: &mut String) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let values = self.values.read();
        let mut hit = false;
        for (secret, _) in values.iter() {
            if text.contains(secret.as_str()) {
                let clean = text.replace(secret.as_str(), REDACTED);
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
}
