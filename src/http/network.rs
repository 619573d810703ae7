//! Network grant endpoints (contract §6): grant, revoke, check, list.

use super::body::json_object;
use super::error::{ok, ApiError};
use super::packs::pack_id;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::egress::grants::GrantError;
use rumi_actors::Kernel;
use serde_json::{Map, Value};

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

/// `POST /api/network/grant {pack_id, allowed_domains, allowed_ports, notes}`
pub async fn grant(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let id = field_pack(&body)?;
    let domains = list_field(&body, "allowed_domains", "strings", |v| {
        v.as_str().map(str::to_string)
    })?;
    let ports = list_field(&body, "allowed_ports", "integers", Value::as_i64)?;
    let notes = optional_text(&body, "notes")?;
    Ok(ok(k.grant_network(&id, &domains, &ports, &notes).await?))
}

/// `POST /api/network/revoke {pack_id, reason}`
pub async fn revoke(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let id = field_pack(&body)?;
    let reason = optional_text(&body, "reason")?;
    Ok(ok(k.revoke_network(&id, &reason).await?))
}

/// `POST /api/network/check {pack_id, domain, port}` → `{allowed, reason, grant: {allowed,
/// reason}, address: {allowed, reason, addresses}|null}`: the checks a request passes, step by
/// step — the grant, then the addresses the name resolves to (`address` is null when the grant
/// step refused).
pub async fn check(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let id = field_pack(&body)?;
    let (domain, port) = rumi_domain::egress::check_target(body.get("domain"), body.get("port"))
        .map_err(ApiError::bad_request)?;
    Ok(ok(k.egress.check(&id, &domain, port).await))
}

/// `GET /api/network/list`
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.network.list()))
}
