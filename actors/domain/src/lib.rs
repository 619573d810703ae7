//! Rumi's pure domain: the rules of the kernel with no I/O, no actors and no clocks of its own.
//!
//! Everything here is deterministic and is where the property tests live: flow parsing and
//! validation ([`flow`]), variable resolution ([`vars`]), conditions ([`condition`]), the run engine
//! that steps through a flow ([`engine`]), flow sources and their precedence ([`sources`]), pack
//! metadata and load order ([`pack`]), manifests and signatures ([`manifest`]), egress requests and
//! grants ([`egress`]), egress address
//! classification ([`net`]), the SkillRuntime's rules ([`skill`]), and hostile-YAML
//! limits ([`yaml`]). The runtime crate (`rumi-actors`) holds state and does I/O around these.

pub mod archive;
pub mod capability;
pub mod catalog;
pub mod condition;
pub mod egress;
pub mod engine;
pub mod flow;
pub mod handler;
pub mod manifest;
pub mod net;
pub mod pack;
pub mod pip;
pub mod run;
pub mod skill;
pub mod sources;
pub mod vars;
pub mod vocab;
pub mod yaml;

pub use flow::{Flow, FlowError, SourceRank, Step, StepKind};
pub use run::{ErrorType, RunStatus, StepRecord, StepStatus};
