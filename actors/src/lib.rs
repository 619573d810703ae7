//! Rumi's runtime: every actor with its typed messages, the pack workers, signed state and audit.
//!
//! Actors (one module each): [`registry::Registry`] (packs, approvals, flows),
//! [`limiter::ConcurrencyLimiter`] (the flow cap and its FIFO queue), [`flow_run::FlowRun`] (one per
//! run), [`pack_container::PackContainer`] (one per approved pack), [`audit::AuditWriter`] and
//! [`run_history::RunHistory`] and [`scheduler::Scheduler`] (schedules and scheduled runs). [`kernel::Kernel`] is the handle the edge holds: the addresses of
//! the long-lived actors and the configuration, built once at boot and passed down (no globals).

pub mod admin;
pub mod affinity;
pub mod approval;
pub mod audit;
pub mod audit_query;
pub mod blockhost;
pub mod capability;
pub mod clock;
pub mod config;
pub mod docker;
pub mod egress;
pub mod flow_run;
pub mod frame;
pub mod fsat;
pub mod fsutil;
pub mod home_lock;
pub mod kernel;
pub mod keys;
pub mod layout;
pub mod lifecycle;
pub mod limiter;
pub mod pack_container;
pub mod pip;
pub mod registry;
pub mod run_history;
pub mod scheduler;
pub mod skills;
pub mod socket_server;
pub mod sockets;
#[cfg(test)]
pub(crate) mod test_support;
pub mod view;
pub mod vocab_call;

pub use config::{RuntimeConfig, SecurityMode};
pub use kernel::Kernel;
pub use layout::Layout;
