//! Bearer-token check before routing: every endpoint but those of [`OPEN`] needs
//! `Authorization: Bearer <token>`; anything else is 401 with the envelope, whatever the path.
//! The same middleware applies CORS first (`cors.rs`), so a preflight needs no token.

use super::error::ApiError;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};

/// The endpoints that need no token (the OpenAPI document marks every other one as needing it).
pub const OPEN: [(Method, &str); 2] = [
    (Method::GET, "/api/health"),
    (Method::GET, "/api/openapi.json"),
];

/// How long a request waits at start-up for the sandboxes to be placed before it is served anyway.
const SANDBOXES_PLACED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The token, as app data.
pub struct ApiToken(pub String);

/// The one middleware of every request: CORS (a preflight is answered here, before the token
/// check), then the token, then the CORS headers of the answer.
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let allowed = match super::cors::inspect(&req) {
        super::cors::Verdict::Preflight(resp) => {
            return Ok(req.into_response(resp).map_into_right_body())
        }
        super::cors::Verdict::Pass(allowed) => allowed,
    };
    let open = OPEN
        .iter()
        .any(|(m, p)| req.method() == m && req.path() == *p);
    if !open {
        let token = req.app_data::<web::Data<ApiToken>>().cloned();
        let header = req.headers().get("authorization").map(|v| v.as_bytes());
        let authorized = token
            .as_ref()
            .is_some_and(|t| !t.0.is_empty() && crate::token::authorized(header, &t.0));
        if !authorized {
            let mut resp =
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
                    .error_response();
            super::cors::decorate(resp.headers_mut(), allowed.as_deref());
            return Ok(req.into_response(resp).map_into_right_body());
        }
    }
    // In the first milliseconds after start-up the pack sandboxes may still be waiting for
    // this HTTP worker to host them (`registry::ContainerHost`): no request is served before
    // they have their place (a run would find an approved pack without its sandbox).
    if let Some(kernel) = req.app_data::<web::Data<rumi_actors::Kernel>>() {
        let placed = &kernel.sandboxes_placed;
        if !placed.is_set() {
            placed.wait(SANDBOXES_PLACED_WAIT).await;
        }
    }
    let mut res = next.call(req).await?;
    super::cors::decorate(res.headers_mut(), allowed.as_deref());
    Ok(res.map_into_left_body())
}
