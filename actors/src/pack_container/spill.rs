//! Spill workers: the rule is in the parent module's docs ([`super`]).

use super::{Backend, PackContainer, Sandbox};
use crate::pack_container::worker::Worker;
use std::time::{Duration, Instant};

/// Spill workers a pack may run per CPU the kernel left (see the module docs): two, so one can
/// take a call while the other's reply crosses back to the kernel's CPU.
pub const SPILL_PER_CPU: usize = 2;

/// Spill workers a pack may run at most, however many CPUs the kernel left.
pub const SPILL_MAX: usize = 4;

/// A live spill worker.
pub(super) struct Spill {
    pub(super) pid: i32,
    /// When it last took a call (or started).
    pub(super) used: Instant,
}

impl PackContainer {
    /// Whether `sandbox` is one of the spill workers.
    pub(super) fn is_spill(&self, sandbox: &Sandbox) -> bool {
        sandbox
            .pid()
            .is_some_and(|pid| self.spills.iter().any(|s| s.pid == pid))
    }

    /// The sandbox for the next call (see the module docs for the spill rule), out of `idle` or
    /// a spill worker started for it.
    pub(super) fn take_sandbox(&mut self) -> Option<Sandbox> {
        if self.live > self.idle.len() {
            // Another call is in flight.
            if let Some(pos) = self.idle.iter().position(|s| self.is_spill(s)) {
                return Some(self.idle.swap_remove(pos));
            }
            if let Some(w) = self.start_spill() {
                return Some(w);
            }
        }
        let warm = self.idle.iter().rposition(|s| !self.is_spill(s));
        match warm {
            Some(pos) => Some(self.idle.swap_remove(pos)),
            None => self.idle.pop(),
        }
    }

    /// Starts a spill worker, if this pack may have one more.
    pub(super) fn start_spill(&mut self) -> Option<Sandbox> {
        let Backend::HostWorkers { spec, spill, .. } = &self.backend else {
            return None;
        };
        let limit = (SPILL_PER_CPU * spill.len()).min(SPILL_MAX);
        if self.spills.len() >= limit || self.live == 0 {
            return None;
        }
        match Worker::spawn_on(spec, spill) {
            Ok(w) => {
                self.spills.push(Spill {
                    pid: w.pid(),
                    used: Instant::now(),
                });
                self.live += 1;
                Some(Sandbox::Host(w))
            }
            Err(e) => {
                tracing::warn!(pack_id = %self.pack_id, error = %e, "cannot start a spill worker; calls wait for the warm ones");
                None
            }
        }
    }

    /// Stops the spill workers that are idle and took no call for `idle`.
    pub(super) fn retire_idle_spills(&mut self, idle: Duration) {
        let stale: Vec<i32> = self
            .spills
            .iter()
            .filter(|s| s.used.elapsed() >= idle)
            .map(|s| s.pid)
            .collect();
        for pid in stale {
            if let Some(pos) = self.idle.iter().position(|s| s.pid() == Some(pid)) {
                drop(self.idle.remove(pos)); // killed by the reaper thread (`Worker`'s drop)
                self.live = self.live.saturating_sub(1);
                self.spills.retain(|s| s.pid != pid);
                tracing::debug!(pack_id = %self.pack_id, pid, "spill worker idle; stopped");
            }
        }
    }

    /// A spill worker is gone (killed after a failed call, or released).
    pub(super) fn forget_spill(&mut self, pid: Option<i32>) -> bool {
        let before = self.spills.len();
        self.spills.retain(|s| Some(s.pid) != pid);
        self.spills.len() != before
    }
}
