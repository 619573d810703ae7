//! The HTTP API on actix-web (contract §12): one file per resource, `error.rs` for the status
//! mapping and the envelope, `auth.rs` for the token check, `body.rs` for size-limited JSON.

pub mod auth;
pub mod body;
pub mod containers;
pub mod error;
pub mod flows;
pub mod network;
pub mod packs;
pub mod runs;
pub mod system;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use error::ApiError;

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such endpoint"))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    ))
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad_request(format!("bad query: {e}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad_request(format!("bad path: {e}")).into()),
    )
    // The hot route first: actix tries resources in order, `{id}` ones by regex.
    .service(resource("/api/flows/{id}/run").post(flows::run))
    .service(resource("/api/health").get(system::health))
    .service(resource("/api/diagnostics").get(system::diagnostics))
    .service(resource("/api/audit").get(system::audit))
    .service(resource("/api/packs").get(packs::list))
    .service(resource("/api/packs/pending").get(packs::pending))
    .service(resource("/api/packs/scan").post(packs::scan))
    .service(resource("/api/packs/{id}").get(packs::get))
    .service(resource("/api/packs/{id}/status").get(packs::status))
    .service(resource("/api/packs/{id}/approve").post(packs::approve))
    .service(resource("/api/packs/{id}/reject").post(packs::reject))
    .service(resource("/api/flows").get(flows::list))
    .service(resource("/api/flows/reload").post(flows::reload))
    .service(resource("/api/flows/{id}").get(flows::get))
    .service(resource("/api/runs").get(runs::list))
    .service(resource("/api/runs/{run_id}").get(runs::get))
    .service(resource("/api/network/grant").post(network::grant))
    .service(resource("/api/network/revoke").post(network::revoke))
    .service(resource("/api/network/check").post(network::check))
    .service(resource("/api/network/list").get(network::list))
    .service(resource("/api/docker/status").get(containers::status))
    .service(resource("/api/containers").get(containers::list))
    .service(resource("/api/containers/{id}").delete(containers::remove))
    .service(resource("/api/containers/{id}/start").post(containers::start))
    .service(resource("/api/containers/{id}/stop").post(containers::stop))
    .default_service(web::to(not_found));
}
