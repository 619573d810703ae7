//! Pack routes (contract §11): each approved pack's `routes.json` is parsed ([`file`]), checked
//! against every limit and against the kernel's own endpoints ([`pattern`]), and merged into one
//! [`RouteTable`] in load order: the earlier pack keeps a route two packs declare, and the clash is
//! reported. [`RouteTable::lookup`] matches a request; [`request`] builds the run's inputs and
//! reads the flow's `ctx._http`. All pure: the edge (`src/http/routes.rs`) only moves bytes.
//!
//! Routes of packs that are installed but not approved are parsed too (bounded, untrusted) and
//! kept apart ([`RouteTable::unapproved`]): they never run and never claim a path; they only let
//! a request to them be answered 403 naming the pack to approve, instead of a puzzling 404.

pub mod file;
pub mod pattern;
pub mod request;
#[cfg(test)]
mod tests;

use crate::sources::FlowTable;
pub use pattern::{Method, Pattern};
use serde::Serialize;

/// Most refusals listed for one pack (each route may be refused; the rest are counted).
pub const MAX_REFUSALS_PER_PACK: usize = 50;

/// One pack's `routes.json`, as read (for an approved pack, bytes checked against its manifest).
#[derive(Debug, Clone)]
pub struct RoutesFile {
    pub pack_id: String,
    /// Relative to `RUMI_HOME`.
    pub file: String,
    /// Its bytes, or why it could not be read.
    pub bytes: Result<Vec<u8>, String>,
}

/// A route that serves requests.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    /// As written in `routes.json`.
    pub path: String,
    pub pattern: Pattern,
    pub flow_id: String,
    pub pack_id: String,
    pub description: Option<String>,
    /// The run's deadline, seconds (1..=600); `None`: the kernel's default.
    pub timeout: Option<f64>,
}

/// Two packs declared the same route: the earlier in load order keeps it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clash {
    pub method: Method,
    /// The path as the pack that keeps it wrote it.
    pub path: String,
    pub kept_by: String,
    pub refused_for: String,
}

/// A route (or a whole file) that was not taken, and why.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub pack_id: String,
    /// As written (empty when the route has none, or the whole file is refused).
    pub method: String,
    /// As written, clipped (empty when the route has none, or the whole file is refused).
    pub path: String,
    /// What was wrong and what to do.
    pub reason: String,
}

/// A route declared by a pack that is not approved (see the module docs).
#[derive(Debug, Clone)]
pub struct Unapproved {
    pub pack_id: String,
    pub method: Method,
    pub pattern: Pattern,
}

/// The routes of every approved pack, their clashes and refusals.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// In load order (then file order).
    pub routes: Vec<Route>,
    pub clashes: Vec<Clash>,
    pub refused: Vec<Refusal>,
    pub unapproved: Vec<Unapproved>,
}

/// What a request finds in the table.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A route, with its path parameters (decoded).
    Found(&'a Route, Vec<(String, String)>),
    /// No route of an approved pack; a pack that is not approved declares one.
    Unapproved {
        pack_id: &'a str,
    },
    /// The path is a route's, not the method.
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

/// Builds the route table from the approved packs' files, in load order, and the routes of
/// packs that are not approved (for 403 answers only).
pub fn build_table(
    files: Vec<RoutesFile>,
    unapproved: Vec<RoutesFile>,
    _flows: &FlowTable,
) -> RouteTable {
    let mut table = RouteTable::default();
    for f in files {
        let parsed = file::parse(&f);
        let mut listed = 0usize;
        let mut refuse = |table: &mut RouteTable, r: Refusal| {
            listed += 1;
            if listed <= MAX_REFUSALS_PER_PACK {
                table.refused.push(r);
            }
        };
        for r in parsed.refused {
            refuse(&mut table, r);
        }
        for route in parsed.routes {
            if let Some(kernel) = pattern::shadowed_kernel_endpoint(&route.pattern) {
                let reason = format!(
                    "the path could match the kernel endpoint {kernel}, which always wins — \
                     choose a path under a prefix of your pack's own, e.g. /api/{}/…",
                    route.pack_id
                );
                refuse(&mut table, refusal(&route, reason));
                continue;
            }
            let taken = table
                .routes
                .iter()
                .find(|r| r.method == route.method && r.pattern.equivalent(&route.pattern));
            match taken {
                Some(kept) if kept.pack_id == route.pack_id => {
                    let reason = format!(
                        "the file declares {} {} twice (or with only the parameter names \
                         changed) — keep one",
                        route.method, kept.path
                    );
                    refuse(&mut table, refusal(&route, reason));
                }
                Some(kept) => {
                    table.clashes.push(Clash {
                        method: route.method,
                        path: kept.path.clone(),
                        kept_by: kept.pack_id.clone(),
                        refused_for: route.pack_id.clone(),
                    });
                }
                None => table.routes.push(route),
            }
        }
        if listed > MAX_REFUSALS_PER_PACK {
            table.refused.push(Refusal {
                pack_id: f.pack_id.clone(),
                method: String::new(),
                path: String::new(),
                reason: format!(
                    "{} more routes of this pack were refused (only the first \
                     {MAX_REFUSALS_PER_PACK} are listed) — fix the ones listed and reload",
                    listed - MAX_REFUSALS_PER_PACK
                ),
            });
        }
    }
    for f in unapproved {
        // One that could shadow a kernel endpoint would be refused once approved: it must not
        // turn the 404 of an unknown path into a 403 either.
        for route in file::parse(&f)
            .routes
            .into_iter()
            .filter(|r| pattern::shadowed_kernel_endpoint(&r.pattern).is_none())
        {
            table.unapproved.push(Unapproved {
                pack_id: route.pack_id,
                method: route.method,
                pattern: route.pattern,
            });
        }
    }
    table
}

fn refusal(route: &Route, reason: String) -> Refusal {
    Refusal {
        pack_id: route.pack_id.clone(),
        method: route.method.to_string(),
        path: route.path.clone(),
        reason,
    }
}

impl RouteTable {
    /// Finds the route for a request: `method` as the request carries it, `path` as received
    /// (percent-encoded, without the query). Among the routes of the method whose pattern
    /// matches, the most specific wins (a literal beats a parameter, from the left); the table
    /// never holds two equivalent patterns for one method, so the winner is unique.
    pub fn lookup(&self, method: &str, path: &str) -> Lookup<'_> {
        let Some(segments) = pattern::request_segments(path) else {
            return Lookup::NotFound;
        };
        let method = Method::parse(method).filter(|m| m.as_str() == method);
        let mut best: Option<(&Route, Vec<(String, String)>)> = None;
        let mut allowed = Vec::new();
        for r in &self.routes {
            let Some(params) = r.pattern.matches(&segments) else {
                continue;
            };
            if Some(r.method) != method {
                if !allowed.contains(&r.method) {
                    allowed.push(r.method);
                }
                continue;
            }
            let better = best
                .as_ref()
                .is_none_or(|(b, _)| r.pattern.specificity() > b.pattern.specificity());
            if better {
                best = Some((r, params));
            }
        }
        if let Some((r, params)) = best {
            return Lookup::Found(r, params);
        }
        if let Some(u) = self
            .unapproved
            .iter()
            .find(|u| Some(u.method) == method && u.pattern.matches(&segments).is_some())
        {
            return Lookup::Unapproved {
                pack_id: &u.pack_id,
            };
        }
        if !allowed.is_empty() {
            allowed.sort();
            return Lookup::MethodNotAllowed { allowed };
        }
        Lookup::NotFound
    }
}
