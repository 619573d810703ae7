//! A started sandbox of a pack: a warm host worker, a spill worker or a container, called the
//! same way.

use super::spill::SpillSlot;
use super::worker::{CallError, Worker};
use crate::docker::sandbox::DockerSandbox;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A started sandbox.
pub(super) enum Sandbox {
    Host(Worker),
    /// A host worker on the CPUs the kernel left (see [`super::spill`]).
    Spill(Spilled),
    Container(DockerSandbox),
}

/// A spill worker with its slot in the kernel's pool (given back when it is dropped).
pub(super) struct Spilled {
    worker: Worker,
    /// When its last call ended (or it started).
    since: Instant,
    _slot: SpillSlot,
}

impl Spilled {
    pub(super) fn new(worker: Worker, slot: SpillSlot) -> Spilled {
        Spilled {
            worker,
            since: Instant::now(),
            _slot: slot,
        }
    }
}

impl Sandbox {
    pub(super) fn is_spill(&self) -> bool {
        matches!(self, Sandbox::Spill(_))
    }

    /// How long a spill worker has been without a call (zero for other sandboxes).
    pub(super) fn idle_for(&self) -> Duration {
        match self {
            Sandbox::Spill(s) => s.since.elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// A host worker's pid (warm or spill).
    pub(super) fn pid(&self) -> Option<i32> {
        match self {
            Sandbox::Host(w) => Some(w.pid()),
            Sandbox::Spill(s) => Some(s.worker.pid()),
            Sandbox::Container(_) => None,
        }
    }

    /// For spans and snapshots: the worker's pid or the container's id.
    pub(super) fn label(&self) -> String {
        match self {
            Sandbox::Container(c) => c.id().to_string(),
            host => host.pid().unwrap_or_default().to_string(),
        }
    }

    pub(super) async fn call(
        self,
        id: u64,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> (Option<Sandbox>, Result<Value, CallError>) {
        match self {
            Sandbox::Host(w) => {
                let (w, r) = w.call(id, frame, timeout).await;
                (w.map(Sandbox::Host), r)
            }
            Sandbox::Spill(Spilled { worker, _slot, .. }) => {
                let (w, r) = worker.call(id, frame, timeout).await;
                let back = w.map(|worker| {
                    Sandbox::Spill(Spilled {
                        worker,
                        since: Instant::now(),
                        _slot,
                    })
                });
                (back, r)
            }
            Sandbox::Container(c) => {
                let (c, r) = c.call(id, frame, timeout).await;
                (c.map(Sandbox::Container), r)
            }
        }
    }
}
