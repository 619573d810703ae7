//! The HTTP API on actix-web (contract §12): one file per resource, `error.rs` for the status
//! mapping and the envelope, `auth.rs` for the token check, `body.rs` for size-limited JSON,
//! `table.rs` for the one list of routes, `openapi.rs` for the document that describes them.

#[macro_use]
mod table;

pub mod auth;
pub mod body;
pub mod capability_handlers;
pub mod containers;
pub mod cors;
pub mod error;
pub mod extras;
pub mod flows;
pub mod grants;
pub mod network;
pub mod openapi;
pub mod pack_import;
pub mod packs;
pub mod pip;
pub mod routes;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod skills;
pub mod stores;
pub mod system;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};
use error::ApiError;

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    ))
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// The routes of the table, grouped by path in the table's order.
#[derive(Default)]
struct Table {
    resources: Vec<(&'static str, Vec<actix_web::Route>)>,
}

impl Table {
    fn add<F, Args>(&mut self, method: Method, path: &'static str, handler: F)
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        let route = web::method(method).to(handler);
        match self.resources.iter_mut().find(|(p, _)| *p == path) {
            Some((_, routes)) => routes.push(route),
            None => self.resources.push((path, vec![route])),
        }
    }
}

macro_rules! table_of {
    ($($method:ident $path:literal => $handler:path,)*) => {{
        let mut t = Table::default();
        $( t.add(Method::$method, $path, $handler); )*
        t
    }};
}

/// Registers every route of the table (`table.rs`, the one list of what is served), each path
/// once with its methods; another method on a known path is 405; any other path goes to the pack
/// routes (`routes::dispatch`: a pack route, or 403, 405, 404).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad_request(format!("bad query: {e}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad_request(format!("bad path: {e}")).into()),
    );
    let table: Table = api_routes!(table_of);
    for (path, routes) in table.resources {
        let mut r = resource(path);
        for route in routes {
            r = r.route(route);
        }
        cfg.service(r);
    }
    cfg.default_service(web::to(routes::dispatch));
}
