//! Spill workers: the rule is in the parent module's docs ([`super`]).

use super::sandboxes::{Sandbox, Spilled};
use super::{Backend, PackContainer};
use crate::pack_container::worker::Worker;
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spill workers the kernel may run per CPU it left (see the parent module's docs): two, so one
/// can take a call while the other's reply crosses back to the kernel's CPU.
pub const SPILL_PER_CPU: usize = 2;

/// Spill workers the kernel may run at most, over all its packs, however many CPUs it left.
pub const SPILL_MAX: usize = 4;

/// How long a pack below its share that found the budget spent is waited for (see
/// [`SpillPool::wanted_until`]); every such finding extends it.
const WANT_HOLD: Duration = Duration::from_secs(2);

/// How often a pack waiting for its share of spill workers looks for a freed slot.
const SHARE_RETRY: Duration = Duration::from_millis(50);

/// How often a pack with spill workers looks for idle ones to stop (at most; half the idle time
/// when that is shorter).
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// After a spill worker failed to start, no other is tried, by any pack, for this long (the
/// calls wait for the warm workers meanwhile).
const SPILL_BACKOFF: Duration = Duration::from_secs(10);

/// The kernel's spill workers: where they run, how long one may idle, and the slots every pack
/// takes them from.
#[derive(Debug)]
pub struct SpillPool {
    cpus: Vec<usize>,
    idle: Duration,
    limit: usize,
    /// A pack's share: half the limit (at least one). A pack may hold more while the pool has
    /// room and no pack waits for its share ([`Self::wanted_until`]).
    per_pack: usize,
    taken: AtomicUsize,
    /// Until when a pack below its share that found the pool full is waited for: meanwhile no
    /// pack at or past its share starts a spill worker, and those past it stop theirs as they
    /// come back from calls (or idle), so the slots come free for it.
    wanted_until: Until,
    epoch: Instant,
    /// Until when no spill worker is started (a start failed).
    blocked_until: Until,
}

/// A moment, in milliseconds after the pool's epoch, that any thread may push later (never
/// earlier).
#[derive(Debug, Default)]
struct Until(AtomicU64);

impl Until {
    /// At least `by` after `now_ms`.
    fn extend(&self, now_ms: u64, by: Duration) {
        self.0
            .fetch_max(now_ms + by.as_millis() as u64, Ordering::AcqRel);
    }

    /// `now_ms` is before it.
    fn pending(&self, now_ms: u64) -> bool {
        now_ms < self.0.load(Ordering::Acquire)
    }
}

impl SpillPool {
    /// A pool on `cpus` (the CPUs the kernel left), or `None` when there are none.
    pub fn new(cpus: Vec<usize>, idle: Duration) -> Option<Arc<SpillPool>> {
        if cpus.is_empty() {
            return None;
        }
        let limit = (SPILL_PER_CPU * cpus.len()).min(SPILL_MAX);
        Some(Arc::new(SpillPool {
            cpus,
            idle,
            limit,
            per_pack: (limit / 2).max(1),
            taken: AtomicUsize::new(0),
            wanted_until: Until::default(),
            epoch: Instant::now(),
            blocked_until: Until::default(),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn blocked(&self) -> bool {
        self.blocked_until.pending(self.now_ms())
    }

    fn block(&self) {
        self.blocked_until.extend(self.now_ms(), SPILL_BACKOFF);
    }

    /// Spill workers running now, over every pack.
    pub fn running(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    fn has_room(&self) -> bool {
        self.running() < self.limit
    }

    /// A pack below its share found no room (see [`Self::wanted_until`]).
    fn want(&self) {
        self.wanted_until.extend(self.now_ms(), WANT_HOLD);
    }

    /// A pack below its share waits for a slot.
    fn wanted(&self) -> bool {
        self.wanted_until.pending(self.now_ms())
    }

    /// Whether a pack holding `held` spill workers may start another: below its share always
    /// (room permitting), at or past it only while no pack waits for its share.
    fn may_grow(&self, held: usize) -> bool {
        held < self.per_pack || !self.wanted()
    }

    /// Whether a pack holding `held` spill workers gives one back now: past its share while a
    /// pack waits for its share.
    fn gives_back(&self, held: usize) -> bool {
        held > self.per_pack && self.wanted()
    }

    /// One slot, if the kernel may run one more spill worker.
    fn take(self: &Arc<Self>) -> Option<SpillSlot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| SpillSlot(Arc::clone(self)))
    }
}

/// A spill worker's place in the [`SpillPool`], given back when the worker is dropped (stopped,
/// killed after a failed call, or with its pack).
#[derive(Debug)]
pub(super) struct SpillSlot(Arc<SpillPool>);

impl Drop for SpillSlot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PackContainer {
    fn spill_pool(&self) -> Option<&Arc<SpillPool>> {
        match &self.backend {
            Backend::HostWorkers { spill, .. } => spill.as_ref(),
            Backend::Docker { .. } => None,
        }
    }

    /// Whether a call that finds no idle sandbox could have a spill worker started for it: while
    /// the pool has room, up to the whole pool, unless a pack below its share waits (then up to
    /// this pack's share). A pack below its share that finds the pool full tells it so.
    pub(super) fn may_spill(&self) -> bool {
        self.live > 0
            && self.spill_pool().is_some_and(|p| {
                if p.blocked() || !p.may_grow(self.spilled) {
                    return false;
                }
                if p.has_room() {
                    return true;
                }
                if self.spilled < p.per_pack {
                    p.want();
                }
                false
            })
    }

    /// While this pack waits for its share of spill workers (below it, the pool full) with calls
    /// queued, pumps again every [`SHARE_RETRY`]: the slots packs past their share give back
    /// come free in their threads, and nothing else would tell this one.
    pub(super) fn retry_for_share(&mut self, ctx: &mut Context<Self>) {
        let waits = self
            .spill_pool()
            .is_some_and(|p| self.spilled < p.per_pack && !p.has_room() && !p.blocked());
        if !waits || self.share_retry || self.queue.is_empty() {
            return;
        }
        self.share_retry = true;
        ctx.run_later(SHARE_RETRY, |act, ctx| {
            act.share_retry = false;
            act.pump(ctx);
        });
    }

    /// A sandbox back from a call: kept idle, unless it is a spill worker of a pack past its share
    /// while another pack waits for its share (see [`SpillPool`]); that one is stopped.
    pub(super) fn back_from_call(&mut self, sandbox: Sandbox) {
        let give_back = sandbox.is_spill()
            && self
                .spill_pool()
                .is_some_and(|p| p.gives_back(self.spilled));
        if !give_back {
            self.idle.push(sandbox);
            return;
        }
        drop(sandbox); // killed by the reaper thread; its slot goes back to the pool
        self.live = self.live.saturating_sub(1);
        self.spilled = self.spilled.saturating_sub(1);
        tracing::debug!(pack_id = %self.pack_id, "a spill worker past the pack's share stopped: another pack waits for its share");
    }

    /// The sandbox for the next call (see the parent module's docs for the rule): an idle spill
    /// worker while another call is in flight, else an idle warm worker, else a spill worker
    /// started for it. Of each kind the last one back is taken, so a spill worker left over from
    /// a burst is not kept alive by calls the others can take, and ages out.
    pub(super) fn take_sandbox(&mut self, ctx: &mut Context<Self>) -> Option<Sandbox> {
        if self.idle.is_empty() {
            return self.start_spill(ctx);
        }
        let in_flight = self.live > self.idle.len();
        let pos = in_flight
            .then(|| self.idle.iter().rposition(Sandbox::is_spill))
            .flatten()
            .or_else(|| self.idle.iter().rposition(|s| !s.is_spill()))
            .unwrap_or(self.idle.len() - 1);
        Some(self.idle.remove(pos))
    }

    /// Starts a spill worker, if the kernel may run one more.
    fn start_spill(&mut self, ctx: &mut Context<Self>) -> Option<Sandbox> {
        if !self.may_spill() {
            return None;
        }
        let (Backend::HostWorkers { spec, .. }, Some(pool)) = (&self.backend, self.spill_pool())
        else {
            return None;
        };
        let pool = Arc::clone(pool);
        let Some(slot) = pool.take() else {
            // Taken meanwhile by another pack's thread.
            if self.spilled < pool.per_pack {
                pool.want();
            }
            return None;
        };
        match Worker::spawn_on(spec, &pool.cpus) {
            Ok(worker) => {
                self.spilled += 1;
                self.live += 1;
                if !self.spill_timer {
                    self.spill_timer = true;
                    self.arm_spill_timer(pool.idle, ctx);
                }
                Some(Sandbox::Spill(Spilled::new(worker, slot)))
            }
            Err(e) => {
                pool.block();
                tracing::warn!(pack_id = %self.pack_id, error = %e, "cannot start a spill worker; calls wait for the warm ones (next try in 10 s)");
                None
            }
        }
    }

    /// Checks for idle spill workers every half `idle` (at most every [`IDLE_CHECK`]) while the
    /// pack has any.
    fn arm_spill_timer(&mut self, idle: Duration, ctx: &mut Context<Self>) {
        let every = (idle / 2).clamp(Duration::from_millis(100), IDLE_CHECK);
        ctx.run_later(every, move |act, ctx| {
            act.retire_idle_spills(idle);
            if act.spilled > 0 {
                act.arm_spill_timer(idle, ctx);
            } else {
                act.spill_timer = false;
            }
        });
    }

    /// Stops the idle spill workers whose last call ended `idle` ago or more, and, while a pack
    /// waits for its share, the idle ones past this pack's share.
    fn retire_idle_spills(&mut self, idle: Duration) {
        let mut past_share = match self.spill_pool() {
            Some(p) if p.wanted() => self.spilled.saturating_sub(p.per_pack),
            _ => 0,
        };
        let before = self.idle.len();
        // Dropped: killed by the reaper thread.
        self.idle.retain(|s| {
            if !s.is_spill() {
                return true;
            }
            let quiet = s.idle_for();
            if quiet >= idle {
                past_share = past_share.saturating_sub(1);
                return false;
            }
            if past_share > 0 {
                past_share -= 1;
                return false;
            }
            true
        });
        let stopped = before - self.idle.len();
        self.live = self.live.saturating_sub(stopped);
        self.spilled = self.spilled.saturating_sub(stopped);
        if stopped > 0 {
            tracing::debug!(pack_id = %self.pack_id, stopped, "idle spill workers stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_hands_out_at_most_its_limit_and_takes_slots_back() {
        assert!(SpillPool::new(Vec::new(), Duration::from_secs(1)).is_none());
        let pool = SpillPool::new(vec![0], Duration::from_secs(1)).unwrap();
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        assert!(pool.take().is_none(), "two per CPU left");
        assert_eq!(pool.running(), 2);
        drop(a);
        let c = pool.take().expect("a slot given back is taken again");
        drop((b, c));
        assert_eq!(pool.running(), 0);
        let many = SpillPool::new((0..32).collect(), Duration::from_secs(1)).unwrap();
        let slots: Vec<_> = std::iter::from_fn(|| many.take()).take(100).collect();
        assert_eq!(slots.len(), SPILL_MAX, "never more than SPILL_MAX in all");
    }

    /// While a pack waits for its share, packs past theirs give back and none at or past its
    /// share grows; the wait ends WANT_HOLD after the last finding.
    #[test]
    fn a_waiting_pack_holds_the_others_to_their_share_for_a_while() {
        let pool = SpillPool::new(vec![0, 1], Duration::from_secs(1)).unwrap();
        assert!(!pool.gives_back(4), "nobody waits: kept");
        assert!(
            pool.may_grow(3),
            "nobody waits: a pack may take the whole pool"
        );
        pool.want();
        assert!(!pool.gives_back(2), "at its share: kept");
        assert!(pool.gives_back(3), "past its share: given back");
        assert!(pool.gives_back(3), "as long as the pack waits");
        assert!(
            !pool.may_grow(2),
            "at its share: no more while a pack waits"
        );
        assert!(pool.may_grow(1), "below its share: may grow");
        pool.wanted_until.0.store(pool.now_ms(), Ordering::Release);
        assert!(!pool.wanted(), "the wait ends");
        assert!(pool.may_grow(2) && !pool.gives_back(3));
    }

    #[test]
    fn a_failed_start_blocks_every_pack_for_a_while_and_a_pack_has_a_half_share() {
        let pool = SpillPool::new(vec![0, 1], Duration::from_secs(1)).unwrap();
        assert_eq!((pool.limit, pool.per_pack), (4, 2));
        assert!(!pool.blocked());
        pool.block();
        assert!(pool.blocked(), "no start for SPILL_BACKOFF after a failure");
        let one = SpillPool::new(vec![0], Duration::from_secs(1)).unwrap();
        assert_eq!((one.limit, one.per_pack), (2, 1));
    }

    /// Packs on different threads extend the same moment at once: it never moves back, and ends
    /// at the latest one asked for.
    #[test]
    fn a_moment_extended_from_many_threads_only_moves_later() {
        let until = Arc::new(Until::default());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let until = Arc::clone(&until);
                std::thread::spawn(move || {
                    let mut seen = 0;
                    for i in 0..5_000u64 {
                        // A seeded spread of moments, each thread's own.
                        let now = (i * 7919 + t * 104_729) % 100_000;
                        until.extend(now, Duration::from_millis(t));
                        let after = until.0.load(Ordering::Acquire);
                        assert!(after >= seen && after >= now + t, "moved back");
                        // (Other threads only move it later, so it stays pending before `now + t`.)
                        assert!(t == 0 || until.pending(now), "not pending before it");
                        seen = after;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let want_max = (0..8u64)
            .flat_map(|t| (0..5_000u64).map(move |i| (i * 7919 + t * 104_729) % 100_000 + t))
            .max()
            .unwrap();
        assert_eq!(until.0.load(Ordering::Acquire), want_max);
        // Checked here, with every thread done: at the moment itself it is no longer pending.
        assert!(!until.pending(want_max), "pending at the moment itself");
        assert!(until.pending(want_max - 1));
    }

    /// Packs on different threads take slots at once: never more than the limit are out, and
    /// every slot comes back.
    #[test]
    fn slots_taken_from_many_threads_never_exceed_the_limit() {
        let pool = SpillPool::new(vec![0, 1], Duration::from_secs(1)).unwrap();
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (pool, peak) = (Arc::clone(&pool), Arc::clone(&peak));
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if let Some(slot) = pool.take() {
                            peak.fetch_max(pool.running(), Ordering::AcqRel);
                            std::thread::yield_now();
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 4);
        assert_eq!(pool.running(), 0);
    }
}
