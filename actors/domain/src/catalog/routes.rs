//! Pack routes (contract §11): `routes.json` of approved packs, the route table and matching.
//! (Being built: the table is empty for now.)

use crate::sources::FlowTable;

/// One approved pack's `routes.json`, as read (bytes checked against the pack's manifest).
#[derive(Debug, Clone)]
pub struct RoutesFile {
    pub pack_id: String,
    /// Relative to `RUMI_HOME`.
    pub file: String,
    /// Its bytes, or why it could not be read.
    pub bytes: Result<Vec<u8>, String>,
}

/// The routes of every approved pack, their clashes and refusals.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {}

/// Builds the route table from the packs' files, in load order.
pub fn build_table(_files: Vec<RoutesFile>, _flows: &FlowTable) -> RouteTable {
    RouteTable {}
}
