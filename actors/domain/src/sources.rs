//! Flow sources and precedence (contract §3.1).
//!
//! Given every flow file that parsed (and the ones that did not), builds the table of available
//! flows: a lower rank wins a `flow_id` clash and the loser is reported; two files of the *same*
//! rank with one `flow_id` are both refused, naming both files (the original let the later file
//! win silently, so the order of a directory listing decided which code ran).
//!
//! Every problem is told per file ([`FileProblem`]: `file:line: what was wrong — how to fix it`),
//! and the table remembers which flow ids failed to load, so a run of one can say why
//! ([`FlowTable::failure`]).

use crate::flow::{Flow, FlowError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The order of precedence, as a hint in messages.
const PRECEDENCE: &str = "flows/ outranks user_data/shared/flows/, which outranks packs";

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
        /// The lines of `flow_id:` in each.
        winner_line: Option<usize>,
        loser_line: Option<usize>,
    },
    /// Two files of one rank declare `flow_id`; neither is loaded.
    SameRankClash {
        flow_id: String,
        files: Vec<String>,
        /// The line of `flow_id:` in each of `files`.
        lines: Vec<Option<usize>>,
    },
}

/// What kind of problem a [`FileProblem`] is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    LoadError,
    Shadowed,
    SameRankClash,
}

/// One problem as one file sees it: where, what was wrong and how to fix it, and the flow id
/// concerned when it is known. Displayed as `file:line: message` (`file: message` when the file
/// could not be read at all).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileProblem {
    pub kind: ProblemKind,
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    pub flow_id: Option<String>,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", at(&self.file, self.line), self.message)
    }
}

/// `file:line`, or `file` when the line is unknown.
fn at(file: &str, line: Option<usize>) -> String {
    let file = short_path(file);
    match line {
        Some(l) => format!("{file}:{l}"),
        None => file,
    }
}

/// Most characters of a path named inside a message (its start and its end are kept): a pack
/// controls its directory names, and a message may name several files.
const MAX_PATH_CHARS: usize = 160;

fn short_path(path: &str) -> String {
    let n = path.chars().count();
    if n <= MAX_PATH_CHARS {
        return path.to_string();
    }
    let head: String = path.chars().take(60).collect();
    let tail: String = path.chars().skip(n - (MAX_PATH_CHARS - 61)).collect();
    format!("{head}…{tail}")
}

impl FlowProblem {
    /// The problem in one line, naming the file (the first file of a clash) and line first.
    pub fn message(&self) -> String {
        match self {
            FlowProblem::LoadError { error } => error.to_string(),
            FlowProblem::Shadowed { .. } => self.per_file()[0].to_string(),
            FlowProblem::SameRankClash {
                flow_id,
                files,
                lines,
            } => {
                let line = |i: usize| lines.get(i).copied().flatten();
                format!(
                    "{}: flow {flow_id:?} is declared by {} files of the same rank ({}); none is loaded — rename the flow_id in all but one, or remove the extra files",
                    at(&files[0], line(0)),
                    files.len(),
                    some_of(files, line, None)
                )
            }
        }
    }

    /// The problem told from each file it concerns: a clash is one problem per file, each
    /// naming the others.
    pub fn per_file(&self) -> Vec<FileProblem> {
        (0..self.file_count())
            .filter_map(|i| self.file_problem(i))
            .collect()
    }

    /// How many files the problem concerns (one message each).
    pub fn file_count(&self) -> usize {
        match self {
            FlowProblem::LoadError { .. } | FlowProblem::Shadowed { .. } => 1,
            FlowProblem::SameRankClash { files, .. } => files.len(),
        }
    }

    /// The problem as the `i`th file concerned sees it (built alone: a 404 needs only the first
    /// of a thousand-file clash).
    pub fn file_problem(&self, i: usize) -> Option<FileProblem> {
        match self {
            FlowProblem::LoadError { error } => (i == 0).then(|| FileProblem {
                kind: ProblemKind::LoadError,
                file: error.file.clone(),
                line: error.line,
                message: error.message.clone(),
                flow_id: error.flow_id.clone(),
            }),
            FlowProblem::Shadowed {
                flow_id,
                winner,
                loser,
                winner_line,
                loser_line,
            } => (i == 0).then(|| FileProblem {
                kind: ProblemKind::Shadowed,
                file: loser.clone(),
                line: *loser_line,
                message: format!(
                    "flow {flow_id:?} is ignored: {} declares it too and takes precedence ({PRECEDENCE}) — rename this flow_id to load both",
                    at(winner, *winner_line)
                ),
                flow_id: Some(flow_id.clone()),
            }),
            FlowProblem::SameRankClash {
                flow_id,
                files,
                lines,
            } => {
                let line = |j: usize| lines.get(j).copied().flatten();
                files.get(i).map(|file| FileProblem {
                    kind: ProblemKind::SameRankClash,
                    file: file.clone(),
                    line: line(i),
                    message: format!(
                        "flow_id {flow_id:?} is also declared by {} (the same rank); neither is loaded — rename one of the flow_ids or remove one of the files",
                        some_of(files, line, Some(i))
                    ),
                    flow_id: Some(flow_id.clone()),
                })
            }
        }
    }
}

/// Most files of a clash one message names (a thousand files may declare one id: naming every
/// other one in each file's message would grow with the square of their number).
const MAX_NAMED_FILES: usize = 3;

/// `a:1, b:2, c:3 and N more`: the files of a clash but `except`, at most [`MAX_NAMED_FILES`].
fn some_of(
    files: &[String],
    line: impl Fn(usize) -> Option<usize>,
    except: Option<usize>,
) -> String {
    let others = (0..files.len()).filter(|j| Some(*j) != except);
    let named: Vec<String> = others
        .take(MAX_NAMED_FILES)
        .map(|j| at(&files[j], line(j)))
        .collect();
    let count = files.len() - usize::from(except.is_some_and(|i| i < files.len()));
    match count - named.len() {
        0 => named.join(", "),
        more => format!("{} and {more} more", named.join(", ")),
    }
}

/// The flows available to run, by id, and what went wrong building them.
#[derive(Debug, Clone, Default)]
pub struct FlowTable {
    pub flows: BTreeMap<String, Arc<Flow>>,
    pub problems: Vec<FlowProblem>,
}

impl FlowTable {
    /// Why no flow `flow_id` is in the table, when a file meant to provide it failed: a file
    /// whose declared `flow_id` is that id (read even when the rest did not parse), a same-rank
    /// clash over it, or else a file that declares no readable id but is named `<flow_id>.flow.yaml`.
    pub fn failure(&self, flow_id: &str) -> Option<FileProblem> {
        let declared = self.problems.iter().find(|p| match p {
            FlowProblem::LoadError { error } => error.flow_id.as_deref() == Some(flow_id),
            FlowProblem::SameRankClash { flow_id: id, .. } => id == flow_id,
            FlowProblem::Shadowed { .. } => false,
        });
        let named = || {
            self.problems.iter().find(|p| {
                matches!(p, FlowProblem::LoadError { error }
                    if error.flow_id.is_none() && file_stem(&error.file) == Some(flow_id))
            })
        };
        declared.or_else(named).and_then(|p| p.file_problem(0))
    }
}

/// `x` for `…/x.flow.yaml`.
fn file_stem(path: &str) -> Option<&str> {
    path.rsplit('/').next()?.strip_suffix(".flow.yaml")
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
                lines: best.iter().map(|f| f.line).collect(),
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
                winner_line: winner.line,
                loser_line: loser.line,
            });
        }
        table.flows.insert(flow_id, Arc::new(winner));
    }
    table
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn long_paths_keep_their_start_and_end() {
        assert_eq!(at("a/b.flow.yaml", Some(3)), "a/b.flow.yaml:3");
        let long = format!("ecosystem/p/{}x.flow.yaml", "d/".repeat(500));
        let short = at(&long, Some(2));
        assert!(
            short.starts_with("ecosystem/p/d/") && short.ends_with("d/x.flow.yaml:2"),
            "{short}"
        );
        assert_eq!(short.chars().count(), MAX_PATH_CHARS + 2);
    }
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
    fn a_clash_is_told_from_each_file_with_its_line() {
        let at = |path: &str| FlowOrigin {
            rank: SourceRank::Shared,
            path: path.into(),
            pack_id: None,
        };
        let text = "# a comment\nflow_id: dup\nphases: [m]\n";
        let t = build_table(vec![
            parse_flow(text, at("s/one.flow.yaml")),
            parse_flow(text, at("s/two.flow.yaml")),
        ]);
        let each: Vec<String> = t.problems[0]
            .per_file()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            each,
            [
                "s/one.flow.yaml:2: flow_id \"dup\" is also declared by s/two.flow.yaml:2 (the same rank); neither is loaded — rename one of the flow_ids or remove one of the files",
                "s/two.flow.yaml:2: flow_id \"dup\" is also declared by s/one.flow.yaml:2 (the same rank); neither is loaded — rename one of the flow_ids or remove one of the files",
            ]
        );
        assert!(t.problems[0].message().starts_with("s/one.flow.yaml:2: "));
        assert_eq!(t.failure("dup").unwrap().to_string(), each[0]);
    }

    #[test]
    fn a_clash_of_many_files_names_a_few_and_counts_the_rest() {
        let files: Vec<Result<Flow, FlowError>> = (0..2000)
            .map(|i| flow("many", SourceRank::Shared, &format!("s/{i:04}.flow.yaml")))
            .collect();
        let t = build_table(files);
        let each = t.problems[0].per_file();
        assert_eq!(each.len(), 2000);
        assert_eq!(
            each[1].message,
            "flow_id \"many\" is also declared by s/0000.flow.yaml:1, s/0002.flow.yaml:1, s/0003.flow.yaml:1 and 1996 more (the same rank); neither is loaded — rename one of the flow_ids or remove one of the files"
        );
        assert!(t.problems[0].message().len() < 300);
    }

    #[test]
    fn a_failed_flow_is_found_by_its_declared_id_or_else_by_its_file_name() {
        let at = |path: &str| FlowOrigin {
            rank: SourceRank::Pack,
            path: path.into(),
            pack_id: Some("p".into()),
        };
        let t = build_table(vec![
            // The id is read although the YAML does not parse.
            parse_flow(
                "flow_id: greet\nphases: [m\n",
                at("p/flows/hello.flow.yaml"),
            ),
            // No id to read: known by the file's name.
            parse_flow("phases: [m]\n", at("p/flows/nameless.flow.yaml")),
            flow("fine", SourceRank::Pack, "p/flows/fine.flow.yaml"),
            flow("fine", SourceRank::Shared, "s/fine.flow.yaml"),
        ]);
        let greet = t.failure("greet").expect("found by its declared id");
        assert_eq!(greet.file, "p/flows/hello.flow.yaml");
        assert_eq!(greet.kind, ProblemKind::LoadError);
        assert!(t.failure("hello").is_none(), "the file declares another id");
        let nameless = t.failure("nameless").expect("found by its file name");
        assert_eq!(
            nameless.to_string(),
            "p/flows/nameless.flow.yaml:1: flow_id is required — add `flow_id: <name>` at the top (use 1-128 of A-Z a-z 0-9 _ . : -)"
        );
        assert!(t.failure("fine").is_none(), "a shadowed file is no failure");
        assert!(t.failure("nothing").is_none());
        let shadowed = t
            .problems
            .iter()
            .find(|p| matches!(p, FlowProblem::Shadowed { .. }))
            .unwrap();
        assert_eq!(
            shadowed.message(),
            "p/flows/fine.flow.yaml:1: flow \"fine\" is ignored: s/fine.flow.yaml:1 declares it too and takes precedence (flows/ outranks user_data/shared/flows/, which outranks packs) — rename this flow_id to load both"
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
