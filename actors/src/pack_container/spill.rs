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
    /// What one pack may hold: half the limit (at least one), so two packs can always spill.
    per_pack: usize,
    taken: AtomicUsize,
    epoch: Instant,
    /// Milliseconds after `epoch` before which no spill worker is started (a start failed).
    blocked_until_ms: AtomicU64,
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
            epoch: Instant::now(),
            blocked_until_ms: AtomicU64::new(0),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn blocked(&self) -> bool {
        self.now_ms() < self.blocked_until_ms.load(Ordering::Acquire)
    }

    fn block(&self) {
        let until = self.now_ms() + SPILL_BACKOFF.as_millis() as u64;
        self.blocked_until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Spill workers running now, over every pack.
    pub fn running(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    fn has_room(&self) -> bool {
        self.running() < self.limit
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

    /// Whether a call that finds no idle sandbox could have a spill worker started for it.
    pub(super) fn may_spill(&self) -> bool {
        self.live > 0
            && self
                .spill_pool()
                .is_some_and(|p| p.has_room() && !p.blocked() && self.spilled < p.per_pack)
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
        let slot = pool.take()?;
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

    /// Checks for idle spill workers every half `idle` while the pack has any.
    fn arm_spill_timer(&mut self, idle: Duration, ctx: &mut Context<Self>) {
        let every = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_later(every, move |act, ctx| {
            act.retire_idle_spills(idle);
            if act.spilled > 0 {
                act.arm_spill_timer(idle, ctx);
            } else {
                act.spill_timer = false;
            }
        });
    }

    /// Stops the idle spill workers whose last call ended `idle` ago or more.
    fn retire_idle_spills(&mut self, idle: Duration) {
        let before = self.idle.len();
        self.idle.retain(|s| !s.is_spill() || s.idle_for() < idle); // dropped: killed by the reaper thread
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

    #[test]
    fn a_failed_start_blocks_every_pack_for_a_while_and_a_pack_holds_half() {
        let pool = SpillPool::new(vec![0, 1], Duration::from_secs(1)).unwrap();
        assert_eq!((pool.limit, pool.per_pack), (4, 2));
        assert!(!pool.blocked());
        pool.block();
        assert!(pool.blocked(), "no start for SPILL_BACKOFF after a failure");
        let one = SpillPool::new(vec![0], Duration::from_secs(1)).unwrap();
        assert_eq!((one.limit, one.per_pack), (2, 1));
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
