//! The Registry's published view: the catalog (effective flows, routes, schedules), the pack
//! states and the address of each approved pack's `PackContainer`.
//!
//! Only the `Registry` writes it (on scan, approval, reload); HTTP handlers and `FlowRun`s read it
//! on every request. A read is a lock-free-in-practice `RwLock` read plus an `Arc` clone, instead
//! of a round trip through the Registry's mailbox on the hot path of every block call — the
//! Registry stays the single owner of the state, this is its read replica.

use crate::pack_container::PackContainer;
use actix::Addr;
use parking_lot::RwLock;
use rumi_domain::catalog::Catalog;
use rumi_domain::sources::{FileProblem, FlowTable};
use std::collections::HashMap;
use std::sync::Arc;

/// A pack's approval state as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PackState {
    Installed,
    Approved,
    Modified,
    Blocked,
    Error,
}

impl PackState {
    pub fn as_str(self) -> &'static str {
        match self {
            PackState::Installed => "installed",
            PackState::Approved => "approved",
            PackState::Modified => "modified",
            PackState::Blocked => "blocked",
            PackState::Error => "error",
        }
    }
}

/// The published view (see the module docs).
pub struct KernelView {
    catalog: RwLock<Arc<Catalog>>,
    /// Bumped on every catalog publication, for those who re-plan on a change (the scheduler).
    generation: tokio::sync::watch::Sender<u64>,
    containers: RwLock<HashMap<String, Addr<PackContainer>>>,
    states: RwLock<HashMap<String, PackState>>,
    /// The approved packs' merged vocabulary and converters (`registry/extras.rs`).
    vocab: RwLock<Arc<rumi_domain::vocab::Vocab>>,
}

impl Default for KernelView {
    fn default() -> Self {
        KernelView {
            catalog: RwLock::default(),
            generation: tokio::sync::watch::Sender::new(0),
            containers: RwLock::default(),
            states: RwLock::default(),
            vocab: RwLock::default(),
        }
    }
}

impl KernelView {
    /// The catalog now: hold it for the whole of one request so every part comes from one load.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read())
    }
    pub fn flows(&self) -> Arc<FlowTable> {
        Arc::clone(&self.catalog.read().flows)
    }
    /// Why no flow `flow_id` is loaded, when a file meant to provide it failed to load.
    pub fn flow_failure(&self, flow_id: &str) -> Option<FileProblem> {
        self.catalog.read().flows.failure(flow_id)
    }
    /// Changes whenever a new catalog is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
    pub fn container(&self, pack_id: &str) -> Option<Addr<PackContainer>> {
        self.containers.read().get(pack_id).cloned()
    }
    pub fn containers(&self) -> Vec<(String, Addr<PackContainer>)> {
        self.containers
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    /// The vocabulary now (`kernel:vocab.*`, `GET /api/vocab`).
    pub fn vocab(&self) -> Arc<rumi_domain::vocab::Vocab> {
        Arc::clone(&self.vocab.read())
    }
    pub(crate) fn publish_vocab(&self, vocab: rumi_domain::vocab::Vocab) {
        *self.vocab.write() = Arc::new(vocab);
    }
    pub fn pack_state(&self, pack_id: &str) -> Option<PackState> {
        self.states.read().get(pack_id).copied()
    }

    /// Publishes `catalog`; returns the one it replaces (the caller decides where it is freed:
    /// never under the lock every run reads through).
    pub(crate) fn publish_catalog(&self, catalog: Catalog) -> Arc<Catalog> {
        let old = std::mem::replace(&mut *self.catalog.write(), Arc::new(catalog));
        self.generation.send_modify(|g| *g += 1);
        old
    }
    pub(crate) fn publish_states(&self, states: HashMap<String, PackState>) {
        *self.states.write() = states;
    }
    pub(crate) fn set_container(&self, pack_id: &str, addr: Option<Addr<PackContainer>>) {
        let mut c = self.containers.write();
        match addr {
            Some(a) => c.insert(pack_id.to_string(), a),
            None => c.remove(pack_id),
        };
    }
}
