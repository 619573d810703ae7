//! The Registry's published view: the flow table, the pack states and the address of each
//! approved pack's `PackContainer`.
//!
//! Only the `Registry` writes it (on scan, approval, reload); HTTP handlers and `FlowRun`s read it
//! on every request. A read is a lock-free-in-practice `RwLock` read plus an `Arc` clone, instead
//! of a round trip through the Registry's mailbox on the hot path of every block call — the
//! Registry stays the single owner of the state, this is its read replica.

use crate::pack_container::PackContainer;
use actix::Addr;
use parking_lot::RwLock;
use rumi_domain::sources::{FileProblem, FlowTable};
use rumi_domain::Flow;
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
#[derive(Default)]
pub struct KernelView {
    flows: RwLock<Arc<FlowTable>>,
    containers: RwLock<HashMap<String, Addr<PackContainer>>>,
    states: RwLock<HashMap<String, PackState>>,
}

impl KernelView {
    pub fn flow(&self, flow_id: &str) -> Option<Arc<Flow>> {
        self.flows.read().flows.get(flow_id).cloned()
    }
    pub fn flows(&self) -> Arc<FlowTable> {
        Arc::clone(&self.flows.read())
    }
    /// Why no flow `flow_id` is loaded, when a file meant to provide it failed to load.
    pub fn flow_failure(&self, flow_id: &str) -> Option<FileProblem> {
        self.flows.read().failure(flow_id)
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
    pub fn pack_state(&self, pack_id: &str) -> Option<PackState> {
        self.states.read().get(pack_id).copied()
    }

    pub(crate) fn publish_flows(&self, table: FlowTable) {
        *self.flows.write() = Arc::new(table);
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
