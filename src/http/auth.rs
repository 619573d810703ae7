//! Bearer-token check before routing: every endpoint but those of [`OPEN`] needs
//! `Authorization: Bearer <token>`; anything else is 401 with the envelope, whatever the path.

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

/// The token, as app data.
pub struct ApiToken(pub String);

pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let open = OPEN
        .iter()
        .any(|(m, p)| req.method() == m && req.path() == *p);
    if !open {
        let token = req
            .app_data::<web::Data<ApiToken>>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let header = req.headers().get("authorization").map(|v| v.as_bytes());
        if token.is_empty() || !crate::token::authorized(header, &token) {
            let resp = ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
                .error_response();
            return Ok(req.into_response(resp).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}
