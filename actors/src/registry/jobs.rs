//! Lib runs and component setups under way, for the [`Registry`](super::Registry): each is tied
//! to the approval it was started for (its *generation*: the approval record's `decided_at` and
//! manifest hash) and can be stopped.
//!
//! Every decision on a pack (approve, reject, uninstall, a pack found `modified`) ends in
//! `schedule_extras`, which calls [`Registry::stop_stale_jobs`]: a job whose pack is no longer
//! approved with the same record is told to stop at once. A stopped lib run kills its host
//! worker's process group (the `Worker` drop) or removes its throw-away container (the
//! `DockerSandbox` drop, in the background; the next start of that container name waits for the
//! removal); a stopped setup job runs no further setup. The outcome of a stale job is never
//! recorded as the pack's (`lib_records.json`, components): it is audited as stopped, and the
//! pack, approved again, gets a run of its own.

use super::Registry;
use crate::view::PackState;
use std::collections::HashMap;
use tokio::sync::watch;

/// Why a lib run or setup ended early.
pub const STOPPED: &str =
    "stopped: the pack was uninstalled, rejected or modified during the run (nothing recorded)";

/// One job under way.
pub(super) struct InFlight {
    pack: String,
    generation: Option<String>,
    cancel: watch::Sender<bool>,
}

/// The jobs under way, by token.
#[derive(Default)]
pub(super) struct Jobs {
    next: u64,
    in_flight: HashMap<u64, InFlight>,
}

/// Resolves when `rx` is told to stop (never when its sender is gone without saying so).
pub(super) async fn cancelled(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Registry {
    /// What identifies the current approval of `id` (`None` when it is not approved).
    pub(super) fn generation(&self, id: &str) -> Option<String> {
        let e = self.packs.get(id)?;
        let r = e
            .record
            .as_ref()
            .filter(|_| e.state == PackState::Approved)?;
        Some(format!("{}|{}", r.decided_at, r.manifest_hash))
    }

    /// Registers a job of `id` for its current approval; answers its token and stop signal.
    pub(super) fn track_job(&mut self, id: &str) -> (u64, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        let generation = self.generation(id);
        let jobs = &mut self.extras.jobs;
        jobs.next += 1;
        jobs.in_flight.insert(
            jobs.next,
            InFlight {
                pack: id.to_string(),
                generation,
                cancel: tx,
            },
        );
        (jobs.next, rx)
    }

    /// Forgets an ended job; answers whether its outcome still belongs to the pack (it was not
    /// stopped and the pack is approved with the same record).
    pub(super) fn untrack_job(&mut self, token: u64) -> bool {
        let Some(f) = self.extras.jobs.in_flight.remove(&token) else {
            return false;
        };
        !*f.cancel.borrow() && f.generation.is_some() && f.generation == self.generation(&f.pack)
    }

    /// Tells every job whose pack's approval changed to stop (see the module docs).
    pub(super) fn stop_stale_jobs(&mut self) {
        let stale: Vec<u64> = self
            .extras
            .jobs
            .in_flight
            .iter()
            .filter(|(_, f)| f.generation != self.generation(&f.pack))
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            if let Some(f) = self.extras.jobs.in_flight.get(&t) {
                if !f.cancel.send_replace(true) {
                    tracing::info!(pack_id = %f.pack, state = ?self.packs.get(&f.pack).map(|e| e.state.as_str()), "stopping a lib run or setup of a pack no longer approved as it was");
                }
            }
        }
    }
}
