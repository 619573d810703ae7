//! The memory egress responses may hold in the kernel.
//!
//! A response body is buffered whole (at most `RUMI_MAX_RESPONSE_BYTES`), then encoded into its
//! reply frame, so one response costs up to [`CHARGE_PER_BYTE`] times its body until the frame is
//! written. Without a bound, 64 connections of every pack fetching large bodies from a host the
//! pack controls could hold gigabytes. Each body chunk is charged, as it arrives, to its pack's
//! share and to the kernel-wide budget (`RUMI_EGRESS_BUFFER_BYTES`); the charge is released when
//! the reply has been written (or the connection gave up). A request that finds no room left fails
//! at once with `busy` — waiting could let one pack's slow reader stall everyone else's requests.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes charged per body byte: the body, plus its reply frame (JSON text escapes at most double
/// a body, since bodies heavy with control characters travel as base64).
pub const CHARGE_PER_BYTE: usize = 3;

/// The kernel-wide budget; each pack's listener takes its own share with [`Budget::for_pack`].
#[derive(Debug, Clone)]
pub struct Budget {
    global: Arc<Semaphore>,
    total: usize,
    per_pack: usize,
}

impl Budget {
    /// `total` bytes for every pack together; one pack holds at most a quarter of it, and never
    /// less than one response of `max_response` bytes.
    pub fn new(total: usize, max_response: usize) -> Budget {
        let one = max_response.saturating_mul(CHARGE_PER_BYTE);
        Budget {
            global: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
            per_pack: (total / 4).max(one).min(total),
        }
    }

    /// A fresh share for one pack (its listener's).
    pub fn for_pack(&self) -> PackBudget {
        PackBudget {
            global: Arc::clone(&self.global),
            pack: Arc::new(Semaphore::new(self.per_pack.min(Semaphore::MAX_PERMITS))),
            per_pack: self.per_pack,
            total: self.total,
        }
    }
}

/// One pack's share of the [`Budget`].
#[derive(Debug, Clone)]
pub struct PackBudget {
    global: Arc<Semaphore>,
    pack: Arc<Semaphore>,
    per_pack: usize,
    total: usize,
}

/// Why a charge was refused (the text goes to the audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted(pub String);

impl PackBudget {
    /// An empty hold that charges this share.
    pub fn hold(&self) -> Hold {
        Hold {
            budget: Some(self.clone()),
            permits: None,
        }
    }

    /// Bytes this pack holds now.
    pub fn in_use(&self) -> usize {
        self.per_pack - self.pack.available_permits()
    }
}

/// Memory charged for one response; released when dropped.
#[derive(Debug, Default)]
pub struct Hold {
    budget: Option<PackBudget>,
    /// The pack's and the kernel's permits (always the same count): each charge merges into them.
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Hold {
    /// A hold that charges nothing (replies without a body).
    pub fn none() -> Hold {
        Hold::default()
    }

    /// Charges `body_bytes` more body bytes, or refuses without charging anything.
    pub fn charge(&mut self, body_bytes: usize) -> Result<(), Exhausted> {
        let Some(b) = &self.budget else {
            return Ok(());
        };
        let n = body_bytes.saturating_mul(CHARGE_PER_BYTE);
        let Ok(permits) = u32::try_from(n) else {
            return Err(Exhausted(format!("{n} bytes cannot be charged at once")));
        };
        let pack = Arc::clone(&b.pack)
            .try_acquire_many_owned(permits)
            .map_err(|_| {
                Exhausted(format!(
                    "the pack's egress responses hold {} of its {} buffer bytes",
                    b.per_pack - b.pack.available_permits(),
                    b.per_pack
                ))
            })?;
        let global = Arc::clone(&b.global)
            .try_acquire_many_owned(permits)
            .map_err(|_| {
                Exhausted(format!(
                    "egress responses hold {} of the kernel's {} buffer bytes (RUMI_EGRESS_BUFFER_BYTES)",
                    b.total - b.global.available_permits(),
                    b.total
                ))
            })?;
        match &mut self.permits {
            Some((p, g)) => {
                p.merge(pack);
                g.merge(global);
            }
            None => self.permits = Some((pack, global)),
        }
        Ok(())
    }

    /// Gives back everything charged (the body it paid for is gone).
    pub fn release(&mut self) {
        self.permits = None;
    }

    /// Bytes charged so far.
    pub fn bytes(&self) -> usize {
        self.permits.as_ref().map_or(0, |(p, _)| p.num_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_the_total_bound_what_responses_hold() {
        // 1 200 bytes in all; one response may be 100 bytes (charged 300); a pack gets 300.
        let budget = Budget::new(1200, 100);
        let a = budget.for_pack();
        let mut first = a.hold();
        first.charge(60).unwrap();
        assert_eq!((first.bytes(), a.in_use()), (180, 180));
        let mut second = a.hold();
        let refused = second.charge(60).unwrap_err();
        assert!(refused.0.contains("pack"), "{refused:?}");
        assert_eq!(a.in_use(), 180, "a refused charge takes nothing");
        drop(first);
        assert_eq!(a.in_use(), 0, "released when the hold is dropped");

        // Four packs at their share exhaust the total: the fifth is refused by the kernel's bound.
        let holds: Vec<Hold> = (0..4)
            .map(|_| {
                let mut h = budget.for_pack().hold();
                h.charge(100).unwrap();
                h
            })
            .collect();
        let mut fifth = budget.for_pack().hold();
        let refused = fifth.charge(1).unwrap_err();
        assert!(
            refused.0.contains("RUMI_EGRESS_BUFFER_BYTES"),
            "{refused:?}"
        );
        drop(holds);
        fifth.charge(1).unwrap();
        assert_eq!(Hold::none().charge(usize::MAX / 4), Ok(()));
    }
}
