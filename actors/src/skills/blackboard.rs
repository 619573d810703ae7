//! The run's blackboard (contract §4, §7): a small key → JSON store the Supervisor and the Sub
//! Agents share. Sub agents never talk to each other; what one finds, it puts here (under
//! `<agent>.last`), and the model may read and write it through `blackboard_get`/`blackboard_put`.
//!
//! Everything a model can put is capped: a hostile or looping model cannot grow the kernel's
//! memory by writing the same key with ever larger values.

use parking_lot::Mutex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most keys one run's blackboard holds.
pub const MAX_KEYS: usize = 256;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Largest value, as JSON text.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// All values together, as JSON text.
pub const MAX_TOTAL_BYTES: usize = 1024 * 1024;

/// The shared blackboard of one run.
#[derive(Clone, Default)]
pub struct Blackboard {
    inner: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    values: BTreeMap<String, (Value, usize)>,
    bytes: usize,
}

impl Blackboard {
    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.inner.lock().values.get(key).map(|(v, _)| v.clone())
    }

    /// Stores `value` under `key`, replacing what was there; refuses what passes a cap, with
    /// a message that says which one.
    pub fn put(&self, key: &str, value: Value) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(format!(
                "a blackboard key is 1 to {MAX_KEY_BYTES} bytes without control characters"
            ));
        }
        let size = serde_json::to_string(&value)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > MAX_VALUE_BYTES {
            return Err(format!(
                "the value is {size} bytes as JSON; a blackboard value is at most {MAX_VALUE_BYTES}: store a path to an artifact instead"
            ));
        }
        let mut e = self.inner.lock();
        let old = e.values.get(key).map_or(0, |(_, s)| *s);
        if old == 0 && !e.values.contains_key(key) && e.values.len() >= MAX_KEYS {
            return Err(format!("the blackboard holds at most {MAX_KEYS} keys"));
        }
        let total = e.bytes - old + size;
        if total > MAX_TOTAL_BYTES {
            return Err(format!(
                "the blackboard would hold {total} bytes; at most {MAX_TOTAL_BYTES}"
            ));
        }
        e.bytes = total;
        e.values.insert(key.to_string(), (value, size));
        Ok(())
    }

    /// The keys, in order (for the run record).
    pub fn keys(&self) -> Vec<String> {
        self.inner.lock().values.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caps_keys_values_and_total() {
        let b = Blackboard::default();
        b.put("a", json!(1)).unwrap();
        assert_eq!(b.get("a"), Some(json!(1)));
        assert!(b.put("", json!(1)).is_err());
        assert!(b.put("x\n", json!(1)).is_err());
        assert!(b.put("big", json!("x".repeat(MAX_VALUE_BYTES))).is_err());
        for i in 0..MAX_KEYS - 1 {
            b.put(&format!("k{i}"), json!(i)).unwrap();
        }
        assert!(b
            .put("one-too-many", json!(0))
            .unwrap_err()
            .contains("keys"));
        // Replacing an existing key is always possible.
        b.put("a", json!(2)).unwrap();
        let c = Blackboard::default();
        let v = json!("y".repeat(MAX_VALUE_BYTES - 10));
        let mut stored = 0;
        while c.put(&format!("v{stored}"), v.clone()).is_ok() {
            stored += 1;
        }
        assert!(stored * (MAX_VALUE_BYTES - 8) <= MAX_TOTAL_BYTES);
        assert!(stored >= MAX_TOTAL_BYTES / MAX_VALUE_BYTES - 1);
    }

    /// Threads writing at once (seeded sizes, replacing and new keys) never pass the key count
    /// or the byte total: the caps are checked and charged under one lock.
    #[test]
    fn caps_hold_under_concurrent_writers() {
        let b = Blackboard::default();
        let threads: Vec<_> = (0..8u64)
            .map(|seed| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for i in 0..2_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let size = (x % 40_000) as usize;
                        let key = format!("k{}", (x >> 20) % 400);
                        let _ = b.put(&key, json!("v".repeat(size)));
                        if i % 64 == 0 {
                            assert!(b.keys().len() <= MAX_KEYS);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let keys = b.keys();
        assert!(keys.len() <= MAX_KEYS);
        let total: usize = keys
            .iter()
            .map(|k| serde_json::to_string(&b.get(k).unwrap()).unwrap().len())
            .sum();
        assert!(total <= MAX_TOTAL_BYTES, "{total}");
    }
}
