//! Network grant endpoints (contract §6): grant, revoke, check, list.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use super::packs::pack_id;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::egress::grants::{GrantError, GrantInfo};
use rumi_actors::egress::proxy::CheckVerdict;
use rumi_actors::Kernel;
use rumi_domain::egress::NetworkGrant;
use serde_json::{Map, Value};
use utoipa::ToSchema;

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Invalid(_) => ApiError::bad_request(e.to_string()),
            GrantError::NoSuchPack(_) | GrantError::NoGrant(_) => {
                ApiError::not_found(e.to_string())
            }
            GrantError::Storage => ApiError::internal(e),
        }
    }
}

fn field_pack(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("pack_id") {
        Some(Value::String(s)) => pack_id(s),
        _ => Err(ApiError::bad_request("pack_id must be a string")),
    }
}

fn optional_text(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

/// The list `name` of `body`, every item converted by `item` (else a 400 naming the field).
fn list_field<T>(
    body: &Map<String, Value>,
    name: &str,
    kind: &str,
    item: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, ApiError> {
    let items = match body.get(name) {
        Some(Value::Array(items)) => items.iter().map(item).collect::<Option<Vec<T>>>(),
        _ => None,
    };
    items.ok_or_else(|| ApiError::bad_request(format!("{name} must be a list of {kind}")))
}

/// The body of `POST /api/network/grant`.
#[derive(ToSchema)]
pub struct GrantRequest {
    pub pack_id: String,
    /// `example.com`, `*.example.com` (the domain and its subdomains) or `*` (any); at most 256.
    pub allowed_domains: Vec<String>,
    /// Ports (`0`: any); at most 256.
    pub allowed_ports: Vec<i64>,
    /// Free text kept with the grant.
    #[schema(required = false, nullable = true)]
    pub notes: String,
}

/// The body of `POST /api/network/revoke`.
#[derive(ToSchema)]
pub struct RevokeRequest {
    pub pack_id: String,
    /// Kept with the revoked grant.
    #[schema(required = false, nullable = true)]
    pub reason: String,
}

/// The body of `POST /api/network/check`.
#[derive(ToSchema)]
pub struct CheckRequest {
    pub pack_id: String,
    /// A host name (1 to 253 characters).
    pub domain: String,
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
}

/// `POST /api/network/grant {pack_id, allowed_domains, allowed_ports, notes}`
#[utoipa::path(
    post,
    operation_id = "network_grant",
    path = "/api/network/grant",
    tag = "network",
    summary = "Replace a pack's network grant lists and enable its grant",
    request_body(content = GrantRequest),
    responses(
        (status = 200, description = "the grant, signed and recorded", body = Envelope<NetworkGrant>),
        (status = 400, description = "malformed JSON, a missing or mistyped field, or an invalid domain or port", body = ErrorBody),
        (status = 404, description = "no such pack is installed", body = ErrorBody),
        (status = 408, description = "the body did not arrive within `RUMI_BODY_READ_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the grant could not be recorded; nothing changed", body = ErrorBody),
    )
)]
pub async fn grant(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let r = GrantRequest {
        pack_id: field_pack(&body)?,
        allowed_domains: list_field(&body, "allowed_domains", "strings", |v| {
            v.as_str().map(str::to_string)
        })?,
        allowed_ports: list_field(&body, "allowed_ports", "integers", Value::as_i64)?,
        notes: optional_text(&body, "notes")?,
    };
    Ok(ok(k
        .grant_network(&r.pack_id, &r.allowed_domains, &r.allowed_ports, &r.notes)
        .await?))
}

/// `POST /api/network/revoke {pack_id, reason}`
#[utoipa::path(
    post,
    operation_id = "network_revoke",
    path = "/api/network/revoke",
    tag = "network",
    summary = "Disable a pack's network grant (kept, shown as revoked)",
    request_body(content = RevokeRequest),
    responses(
        (status = 200, description = "the grant, disabled", body = Envelope<NetworkGrant>),
        (status = 400, description = "malformed JSON or a missing or mistyped field", body = ErrorBody),
        (status = 404, description = "no such pack is installed, or it has no grant", body = ErrorBody),
        (status = 408, description = "the body did not arrive within `RUMI_BODY_READ_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the change could not be recorded; nothing changed", body = ErrorBody),
    )
)]
pub async fn revoke(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let r = RevokeRequest {
        pack_id: field_pack(&body)?,
        reason: optional_text(&body, "reason")?,
    };
    Ok(ok(k.revoke_network(&r.pack_id, &r.reason).await?))
}

/// `POST /api/network/check {pack_id, domain, port}` → `{allowed, reason, grant: {allowed,
/// reason}, address: {allowed, reason, addresses}|null}`: the checks a request passes, step by
/// step — the grant, then the addresses the name resolves to (`address` is null when the grant
/// step refused).
#[utoipa::path(
    post,
    operation_id = "network_check",
    path = "/api/network/check",
    tag = "network",
    summary = "The checks a request of a pack to domain:port would pass, step by step",
    request_body(content = CheckRequest),
    responses(
        (status = 200, description = "the verdict of the grant step, then of the address step", body = Envelope<CheckVerdict>),
        (status = 400, description = "malformed JSON, or an invalid pack id, domain or port", body = ErrorBody),
        (status = 408, description = "the body did not arrive within `RUMI_BODY_READ_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
    )
)]
pub async fn check(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let pack_id = field_pack(&body)?;
    let (domain, port) = rumi_domain::egress::check_target(body.get("domain"), body.get("port"))
        .map_err(ApiError::bad_request)?;
    let r = CheckRequest {
        pack_id,
        domain,
        port,
    };
    Ok(ok(k.egress.check(&r.pack_id, &r.domain, r.port).await))
}

/// `GET /api/network/list`
#[utoipa::path(
    get,
    operation_id = "network_list",
    path = "/api/network/list",
    tag = "network",
    summary = "Every network grant with its state",
    responses((status = 200, description = "the grants", body = Envelope<Vec<GrantInfo>>))
)]
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.network.list()))
}
