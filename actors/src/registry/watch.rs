//! Watching approved packs' directories, so a pack modified while its code runs loses its doors
//! at once (issue: a change used to be noticed only at the next block call, so a block already
//! running kept its network and capability grants).
//!
//! An inotify watch (the `notify` crate) on each approved pack's directory sends the Registry a
//! [`PackTouched`]; after a short pause (a burst of writes is one check) the pack is verified
//! against its approval, off the Registry's thread, with a verifier kept warm per pack (only
//! files whose stat changed are hashed again). A difference records `modified` (`found_by:
//! watcher`): the egress check and every capability broker ask for an approved pack, so both
//! doors close for calls already in progress too. When the watch cannot be set up (inotify limits)
//! the kernel says so in its log and diagnostics. Every approved pack is also verified every
//! [`SWEEP`] (stat-cached), which finds what inotify cannot see: a write through a hard link.

use super::Registry;
use crate::approval::{ManifestVerifier, VerifyFailure};
use crate::view::PackState;
use actix::prelude::*;
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// How long after a change the pack is verified (one check for a burst of writes).
const SETTLE: Duration = Duration::from_millis(50);

/// How often every approved pack is verified even without an event: inotify reports only writes
/// made through the watched directory, so a pack file written through a hard link from outside
/// the pack (its data directory is on the same file system) raises none. The check is stat-cached
/// (a walk and a stat per file; only a changed file is hashed).
pub(super) const SWEEP: Duration = Duration::from_secs(2);

/// Files changed under watched pack directories.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PackTouched {
    pub paths: Vec<PathBuf>,
}

/// The watches and the warm verifiers.
#[derive(Default)]
pub(super) struct PackWatch {
    watcher: Option<notify::RecommendedWatcher>,
    /// Watched directory → pack id.
    watched: HashMap<PathBuf, String>,
    /// Packs with a check scheduled or running.
    pending: HashSet<String>,
    /// A touch arrived while the pack's check ran: check again after it.
    again: HashSet<String>,
    verifiers: HashMap<String, ManifestVerifier>,
    /// The watcher could not be created (reported once).
    failed: bool,
}

impl PackWatch {
    /// Which pack a changed path belongs to.
    fn pack_of(&self, path: &std::path::Path) -> Option<String> {
        self.watched
            .iter()
            .filter(|(dir, _)| path.starts_with(dir))
            .max_by_key(|(dir, _)| dir.as_os_str().len())
            .map(|(_, id)| id.clone())
    }
}

impl Registry {
    /// Watches (or stops watching) a pack's directory as its state wants.
    pub(super) fn follow_watch(&mut self, id: &str) {
        let Some(entry) = self.packs.get(id) else {
            self.unwatch(id);
            return;
        };
        if entry.state != PackState::Approved {
            self.unwatch(id);
            return;
        }
        let dir = entry.dir.clone();
        if self.watch.watched.get(&dir).is_some_and(|w| w == id) {
            return;
        }
        if self.watch.watcher.is_none() && !self.watch.failed {
            let Some(addr) = self.self_addr.clone() else {
                return;
            };
            let handler = move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else {
                    return;
                };
                // Reads (a block opening its own file) change nothing.
                if matches!(event.kind, EventKind::Access(_)) || event.paths.is_empty() {
                    return;
                }
                addr.do_send(PackTouched { paths: event.paths });
            };
            match notify::recommended_watcher(handler) {
                Ok(w) => self.watch.watcher = Some(w),
                Err(e) => {
                    self.watch.failed = true;
                    tracing::warn!(error = %e, "packs cannot be watched; a changed pack is found at its next call");
                    self.event(json!({"event": "pack_watch_unavailable", "error": e.to_string()}));
                    return;
                }
            }
        }
        let Some(watcher) = self.watch.watcher.as_mut() else {
            return;
        };
        match watcher.watch(&dir, RecursiveMode::Recursive) {
            Ok(()) => {
                self.watch.watched.insert(dir, id.to_string());
            }
            Err(e) => {
                tracing::warn!(pack_id = %id, error = %e, "the pack's directory cannot be watched; a change is found at its next call");
                self.event(json!({"pack_id": id, "event": "pack_watch_unavailable", "error": e.to_string()}));
            }
        }
    }

    fn unwatch(&mut self, id: &str) {
        self.watch.verifiers.remove(id);
        let dirs: Vec<PathBuf> = self
            .watch
            .watched
            .iter()
            .filter(|(_, w)| *w == id)
            .map(|(d, _)| d.clone())
            .collect();
        for dir in dirs {
            self.watch.watched.remove(&dir);
            if let Some(w) = self.watch.watcher.as_mut() {
                let _ = w.unwatch(&dir);
            }
        }
    }

    /// Verifies `id` against its approval now (off this thread); a difference records `modified`.
    fn check_touched(&mut self, id: String, ctx: &mut Context<Self>) {
        let Some(entry) = self.packs.get(&id) else {
            self.watch.pending.remove(&id);
            return;
        };
        let Some(record) = entry
            .record
            .as_ref()
            .filter(|_| entry.state == PackState::Approved)
        else {
            self.watch.pending.remove(&id);
            return;
        };
        let manifest = record.manifest.clone();
        let mut verifier = match self.watch.verifiers.remove(&id) {
            Some(v) if *v.manifest() == manifest => v,
            _ => ManifestVerifier::new(entry.dir.clone(), manifest),
        };
        let work = tokio::task::spawn_blocking(move || {
            let outcome = verifier.verify();
            (verifier, outcome)
        });
        ctx.spawn(
            actix::fut::wrap_future(work).map(move |done, act: &mut Registry, ctx| {
                act.watch.pending.remove(&id);
                let Ok((verifier, outcome)) = done else {
                    return;
                };
                act.watch.verifiers.insert(id.clone(), verifier);
                if let Err(VerifyFailure::Changed(diff)) = outcome {
                    drop(act.pack_changed(&id, diff, "watcher"));
                } else if act.watch.again.remove(&id) {
                    act.schedule_check(id, ctx);
                }
            }),
        );
    }

    fn schedule_check(&mut self, id: String, ctx: &mut Context<Self>) {
        if !self.watch.pending.insert(id.clone()) {
            self.watch.again.insert(id);
            return;
        }
        ctx.run_later(SETTLE, move |act, ctx| act.check_touched(id, ctx));
    }
}

impl Registry {
    /// Schedules a check of every approved pack (see [`SWEEP`]).
    pub(super) fn sweep_packs(&mut self, ctx: &mut Context<Self>) {
        let approved: Vec<String> = self
            .packs
            .iter()
            .filter(|(_, e)| e.state == PackState::Approved)
            .map(|(id, _)| id.clone())
            .collect();
        for id in approved {
            if !self.watch.pending.contains(&id) {
                self.schedule_check(id, ctx);
            }
        }
    }
}

impl Handler<PackTouched> for Registry {
    type Result = ();

    /// Schedules a check of every approved pack a changed path belongs to.
    fn handle(&mut self, msg: PackTouched, ctx: &mut Self::Context) {
        let ids: HashSet<String> = msg
            .paths
            .iter()
            .filter_map(|p| self.watch.pack_of(p))
            .collect();
        for id in ids {
            self.schedule_check(id, ctx);
        }
    }
}
