//! The catalog: what the kernel runs, computed from what it loaded.
//!
//! A load (the Registry's, off its thread) reads the sources — flow files, modifier files, each
//! approved pack's `routes.json` — and hands them here. [`build`] is pure: it merges the flow files
//! by precedence (`crate::sources`), applies the modifiers to the flows they target
//! ([`modifier`]), builds the route table ([`routes`]) and the schedule table ([`schedule`]) from
//! the effective flows. The Registry publishes the result as one `Arc<Catalog>`: a run, a route
//! request and the scheduler each read one catalog, so a reload is atomic for them — a run in
//! flight keeps the flow it started with, and a new one sees every part of the new catalog.

pub mod modifier;
pub mod routes;
pub mod schedule;

use crate::sources::{self, FlowTable};
use crate::{Flow, FlowError};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What the kernel offers besides the flows, which modifiers may require.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// Services that approved packs `provide`, and the kernel's own interfaces.
    pub interfaces: BTreeSet<String>,
    /// Capability permission ids that have an installed handler (built-ins included).
    pub capabilities: BTreeSet<String>,
}

/// Everything one load read.
#[derive(Default)]
pub struct Sources {
    pub flows: Vec<Result<Flow, FlowError>>,
    pub modifiers: Vec<modifier::ModifierFile>,
    /// Each approved pack's `routes.json`, in load order.
    pub routes: Vec<routes::RoutesFile>,
    /// The `routes.json` of installed packs that are not approved (read bounded, parsed only so
    /// a request to one of their routes is answered 403 naming the pack; they never run).
    pub unapproved_routes: Vec<routes::RoutesFile>,
    pub environment: Environment,
}

/// The effective flows, routes and schedules (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The flows as they run: modifiers applied.
    pub flows: Arc<FlowTable>,
    /// What each modifier did, and the modifier files refused.
    pub modifiers: Arc<modifier::ModifierReport>,
    pub routes: Arc<routes::RouteTable>,
    pub schedules: Arc<schedule::ScheduleTable>,
}

/// Builds the catalog from one load's sources.
pub fn build(sources: Sources) -> Catalog {
    let table = sources::build_table(sources.flows);
    let (flows, modifiers) = modifier::apply_all(table, sources.modifiers, &sources.environment);
    let routes = routes::build_table(sources.routes, sources.unapproved_routes, &flows);
    let schedules = schedule::build_table(&flows);
    Catalog {
        flows: Arc::new(flows),
        modifiers: Arc::new(modifiers),
        routes: Arc::new(routes),
        schedules: Arc::new(schedules),
    }
}
