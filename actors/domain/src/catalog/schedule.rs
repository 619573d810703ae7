//! Schedules (contract §10): the plan of every flow's `schedule`, and when each fires next.
//! (Being built: the table is empty for now.)

use crate::sources::FlowTable;

/// Every flow's schedule, valid or not.
#[derive(Debug, Clone, Default)]
pub struct ScheduleTable {}

/// Reads the schedule of every effective flow.
pub fn build_table(_flows: &FlowTable) -> ScheduleTable {
    ScheduleTable {}
}
