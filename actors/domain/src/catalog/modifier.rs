//! Modifiers (contract §4). (Being built: no modifier is applied yet.)

use super::Environment;
use crate::flow::SourceRank;
use crate::sources::FlowTable;

/// Where a modifier file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModifierOrigin {
    /// `Shared` or `Pack`.
    pub rank: SourceRank,
    /// Relative to `RUMI_HOME`.
    pub path: String,
    pub pack_id: Option<String>,
}

/// One `*.modifier.yaml` as read: its bytes, or why it could not be read.
#[derive(Debug, Clone)]
pub struct ModifierFile {
    pub origin: ModifierOrigin,
    pub bytes: Result<Vec<u8>, String>,
}

/// What the modifiers did.
#[derive(Debug, Clone, Default)]
pub struct ModifierReport {}

/// Applies every modifier to the flows it targets.
pub fn apply_all(
    table: FlowTable,
    _files: Vec<ModifierFile>,
    _env: &Environment,
) -> (FlowTable, ModifierReport) {
    (table, ModifierReport::default())
}
