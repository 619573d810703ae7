//! Flow sources and precedence (contract §3.1).
//!
//! Given every flow file that parsed (and the ones that did not), builds the table of available
//! flows: a lower rank wins a `flow_id` clash and the loser is reported; two files of the *same*
//! rank with one `flow_id` are both refused, naming both files (the original let the later file
//! win silently, so the order of a directory listing decided which code ran).

use crate::flow::{Flow, FlowError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A problem found while building the flow table, for diagnostics.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FlowProblem {
    /// A file failed to parse or validate.
    LoadError { error: FlowError },
    /// A higher-ranked file won `flow_id`; `loser` is ignored.
    Shadowed {
        flow_id: String,
        winner: String,
        loser: String,
    },
    /// Two files of one rank declare `flow_id`; neither is loaded.
    SameRankClash { flow_id: String, files: Vec<String> },
}

impl FlowProblem {
    pub fn message(&self) -> String {
        match self {
            FlowProblem::LoadError { error } => error.to_string(),
            FlowProblem::Shadowed {
                flow_id,
                winner,
                loser,
            } => {
                format!("flow {flow_id:?} in {loser} is ignored: {winner} has a higher rank")
            }
            FlowProblem::SameRankClash { flow_id, files } => {
                format!("flow {flow_id:?} is declared by {} files of the same rank ({}); none is loaded", files.len(), files.join(", "))
            }
        }
    }
}

/// The flows available to run, by id, and what went wrong building them.
#[derive(Debug, Clone, Default)]
pub struct FlowTable {
    pub flows: BTreeMap<String, Arc<Flow>>,
    pub problems: Vec<FlowProblem>,
}

/// Merges parsed flow files into a table.
pub fn build_table(files: Vec<Result<Flow, FlowError>>) -> FlowTable {
    let mut table = FlowTable::default();
    let mut by_id: BTreeMap<String, Vec<Flow>> = BTreeMap::new();
    for file in files {
        match file {
            Ok(flow) => by_id.entry(flow.flow_id.clone()).or_default().push(flow),
            Err(error) => table.problems.push(FlowProblem::LoadError { error }),
        }
    }
    for (flow_id, mut candidates) in by_id {
        candidates.sort_by(|a, b| {
            a.origin
                .rank
                .cmp(&b.origin.rank)
                .then_with(|| a.origin.path.cmp(&b.origin.path))
        });
        let best_rank = candidates[0].origin.rank;
        let best: Vec<&Flow> = candidates
            .iter()
            .filter(|f| f.origin.rank == best_rank)
            .collect();
        if best.len() > 1 {
            table.problems.push(FlowProblem::SameRankClash {
                flow_id: flow_id.clone(),
                files: best.iter().map(|f| f.origin.path.clone()).collect(),
            });
            // The clash at the best rank must not let a lower rank take the id either: the
            // operator has to resolve it.
            continue;
        }
        let winner = candidates.remove(0);
        for loser in &candidates {
            table.problems.push(FlowProblem::Shadowed {
                flow_id: flow_id.clone(),
                winner: winner.origin.path.clone(),
                loser: loser.origin.path.clone(),
            });
        }
        table.flows.insert(flow_id, Arc::new(winner));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{parse_flow, FlowOrigin, SourceRank};

    fn flow(id: &str, rank: SourceRank, path: &str) -> Result<Flow, FlowError> {
        parse_flow(
            &format!("flow_id: {id}\nphases: [m]\n"),
            FlowOrigin {
                rank,
                path: path.into(),
                pack_id: None,
            },
        )
    }

    #[test]
    fn higher_rank_wins_and_loser_reported() {
        let t = build_table(vec![
            flow("a", SourceRank::Pack, "p/a.flow.yaml"),
            flow("a", SourceRank::Official, "flows/a.flow.yaml"),
            flow("a", SourceRank::Shared, "s/a.flow.yaml"),
        ]);
        assert_eq!(t.flows["a"].origin.path, "flows/a.flow.yaml");
        assert_eq!(t.problems.len(), 2);
    }

    #[test]
    fn same_rank_clash_refuses_both() {
        let t = build_table(vec![
            flow("a", SourceRank::Shared, "s/one.flow.yaml"),
            flow("a", SourceRank::Shared, "s/two.flow.yaml"),
            flow("a", SourceRank::Pack, "p/a.flow.yaml"),
            flow("b", SourceRank::Shared, "s/b.flow.yaml"),
        ]);
        assert!(!t.flows.contains_key("a"));
        assert!(t.flows.contains_key("b"));
        let msg = t.problems[0].message();
        assert!(
            msg.contains("s/one.flow.yaml") && msg.contains("s/two.flow.yaml"),
            "{msg}"
        );
    }

    #[test]
    fn load_errors_are_kept() {
        let bad = parse_flow(
            "nope",
            FlowOrigin {
                rank: SourceRank::Shared,
                path: "s/x.flow.yaml".into(),
                pack_id: None,
            },
        );
        let t = build_table(vec![bad]);
        assert!(t.flows.is_empty());
        assert!(matches!(t.problems[0], FlowProblem::LoadError { .. }));
    }
}
