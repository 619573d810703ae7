//! The SkillRuntime (contract `skill-runtime.md`): runs one Agent Skill to completion. Per run,
//! a [`supervisor::Supervisor`] whose model picks tool calls, four Sub Agents that do the work
//! ([`read_skill_md`], [`read_ref`], [`run_script`], [`write_artifact`]) and a
//! [`budget_guard::BudgetGuard`] that admits every call before it runs — all actors exchanging
//! typed messages. [`runtime::SkillRuntime`] is the entrance the API, the CLI and the flow
//! handler `kernel:skill.run` share; [`catalog`] finds the skills.
//!
//! The rules (frontmatter, paths, references, budgets, validation gates, the prompt) are pure
//! and live in `rumi_domain::skill`; this module holds state and does I/O around them.

// A refusal (`Err(Outcome)`) is the tool result itself, returned once per call: boxing it would
// only add an allocation to every refused call.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod blackboard;
pub mod budget_guard;
pub mod cache;
pub mod catalog;
pub mod context;
pub mod envs;
pub use crate::fsat;
pub mod llm;
pub mod memo;
pub mod read_ref;
pub mod read_skill_md;
pub mod run_script;
pub mod runtime;
pub mod script;
pub mod script_container;
pub mod script_warm;
pub mod slots;
pub mod supervisor;
pub mod workspace;
pub mod write_artifact;

pub use runtime::{SkillRuntime, StartError};

/// Largest artifact one write may produce (and the most of one read for validation).
pub const MAX_ARTIFACT_BYTES: usize = 8 * 1024 * 1024;
