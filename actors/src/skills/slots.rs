//! The cap on skill runs at once (`RUMI_MAX_SKILL_RUNS`): a slot is taken before a run starts and
//! given back when the value holding it is dropped — when the run ends, or when its start fails
//! half-way — so no path can leak one and jam the cap for good.

use parking_lot::Mutex;
use std::sync::Arc;

/// The slots of one runtime.
pub struct RunSlots {
    active: Mutex<usize>,
    max: usize,
}

/// A taken slot; dropping it gives it back.
pub struct Slot(Arc<RunSlots>);

impl RunSlots {
    pub fn new(max: usize) -> Arc<RunSlots> {
        Arc::new(RunSlots {
            active: Mutex::new(0),
            max,
        })
    }

    /// A slot, or `Err(active)` when all are taken.
    pub fn take(self: &Arc<Self>) -> Result<Slot, usize> {
        let mut active = self.active.lock();
        if *active >= self.max {
            return Err(*active);
        }
        *active += 1;
        Ok(Slot(Arc::clone(self)))
    }

    /// Slots taken now.
    pub fn active(&self) -> usize {
        *self.active.lock()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut active = self.0.active.lock();
        *active = active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Eight threads take and give back slots as fast as they can (a seeded mix of holding
    /// times): the cap is never passed, every refusal happens only at the cap, and every
    /// slot comes back.
    #[test]
    fn the_cap_holds_under_contention_and_every_slot_comes_back() {
        let slots = RunSlots::new(3);
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8u64)
            .map(|seed| {
                let (slots, peak) = (Arc::clone(&slots), Arc::clone(&peak));
                std::thread::spawn(move || {
                    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut held = Vec::new();
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x % 3 == 0 && !held.is_empty() {
                            held.pop();
                        } else {
                            match slots.take() {
                                Ok(s) => {
                                    peak.fetch_max(slots.active(), Ordering::SeqCst);
                                    held.push(s);
                                }
                                Err(active) => assert!(active >= 3, "refused below the cap"),
                            }
                        }
                        assert!(slots.active() <= 3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(slots.active(), 0, "every slot came back");
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }
}
