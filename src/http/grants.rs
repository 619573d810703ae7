//! Capability grant endpoints (contract §7.3, §16 "Grants API"): grant, revoke, list. Each
//! change is durable (the signed file fsynced) and audited durably (`permission`) before the
//! answer; the file I/O runs on a blocking thread, not on an HTTP worker.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::audit::AuditEntry;
use rumi_actors::capability::grants::GrantRecord;
use rumi_actors::Kernel;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io;
use utoipa::{IntoParams, ToSchema};

/// An `io::Error` of the capability services: invalid input is a 400 with its message, anything
/// else a logged 500.
pub(super) fn io_error(e: io::Error) -> ApiError {
    if e.kind() == io::ErrorKind::InvalidInput {
        ApiError::bad_request(e.to_string())
    } else {
        ApiError::internal(e)
    }
}

/// Runs blocking file work (an fsync or two) off the HTTP worker.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(ApiError::internal)
}

/// Writes `entry` durably before the answer (an acknowledged change is in the audit log).
pub(super) async fn audit_durably(k: &Kernel, entry: AuditEntry) {
    k.admin.audit_durably(entry).await;
}

/// A required string field of a body.
pub(super) fn string_field(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
        None => Err(ApiError::bad_request(format!(
            "{name} (a string) is required"
        ))),
    }
}

/// The body of `POST /api/capability/grants/grant`.
#[derive(ToSchema)]
#[allow(dead_code)] // the body's schema for the OpenAPI document; the handler reads the fields one by one
pub struct CapabilityGrantRequest {
    /// A pack id; a sub-principal is written `parent__child` (every level needs the grant).
    pub principal_id: String,
    /// e.g. `store.get`, `secrets.get`, or a third-party handler's permission.
    pub permission_id: String,
    /// The `grant_config` (an object, at most 64 KiB; absent or null is `{}`). `secrets.get`
    /// needs `allowed_keys`; `store.*` read `allowed_store_ids` and `max_value_bytes`.
    #[schema(value_type = Object, required = false, nullable = true)]
    pub config: Value,
}

/// The body of `POST /api/capability/grants/revoke`.
#[derive(ToSchema)]
#[allow(dead_code)] // the body's schema for the OpenAPI document; the handler reads the fields one by one
pub struct CapabilityRevokeRequest {
    pub principal_id: String,
    pub permission_id: String,
}

/// The answer of a revoke.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub principal_id: String,
    pub permission_id: String,
    pub revoked: bool,
}

/// `{grants: [...]}`.
#[derive(Serialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantRecord>,
}

/// Query of `GET /api/capability/grants`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantsQuery {
    /// Only this principal's grants (none → an empty list).
    principal_id: Option<String>,
}

/// `POST /api/capability/grants/grant {principal_id, permission_id, config}`
#[utoipa::path(
    post,
    operation_id = "capability_grant",
    path = "/api/capability/grants/grant",
    tag = "capabilities",
    summary = "Grant a permission to a principal (replacing its earlier grant of it)",
    request_body(content = CapabilityGrantRequest),
    responses(
        (status = 200, description = "the grant, signed and recorded", body = Envelope<GrantRecord>),
        (status = 400, description = "malformed JSON, an invalid principal or permission id, or a config that is not an object, is over 64 KiB, or lacks secrets.get's allowed_keys", body = ErrorBody),
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
    let mut body = json_object(&req, body).await?;
    let principal = string_field(&body, "principal_id")?;
    let permission = string_field(&body, "permission_id")?;
    let config = body.remove("config").unwrap_or(Value::Null);
    let record = k
        .admin
        .grant_capability(&principal, &permission, config)
        .await
        .map_err(io_error)?;
    Ok(ok(record))
}

/// `POST /api/capability/grants/revoke {principal_id, permission_id}`
#[utoipa::path(
    post,
    operation_id = "capability_revoke",
    path = "/api/capability/grants/revoke",
    tag = "capabilities",
    summary = "Revoke a principal's grant of a permission (it disappears from the list)",
    request_body(content = CapabilityRevokeRequest),
    responses(
        (status = 200, description = "revoked, durably", body = Envelope<Revoked>),
        (status = 400, description = "malformed JSON or an invalid principal or permission id", body = ErrorBody),
        (status = 404, description = "the principal holds no grant of this permission", body = ErrorBody),
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
    let principal = string_field(&body, "principal_id")?;
    let permission = string_field(&body, "permission_id")?;
    let had = k
        .admin
        .revoke_capability(&principal, &permission)
        .await
        .map_err(io_error)?;
    if !had {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "{principal} holds no grant of {permission}; `GET /api/capability/grants?principal_id={principal}` lists what it holds"
            ),
        ));
    }
    Ok(ok(Revoked {
        principal_id: principal,
        permission_id: permission,
        revoked: true,
    }))
}

/// `GET /api/capability/grants?principal_id=`
#[utoipa::path(
    get,
    operation_id = "capability_grants",
    path = "/api/capability/grants",
    tag = "capabilities",
    summary = "The capability grants (of one principal, or all); revoked grants are absent",
    params(GrantsQuery),
    responses(
        (status = 200, description = "the grants, sorted by principal then permission", body = Envelope<GrantList>),
        (status = 400, description = "an invalid principal_id", body = ErrorBody),
    )
)]
pub async fn list(
    k: web::Data<Kernel>,
    q: web::Query<GrantsQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = q.principal_id.as_deref().filter(|p| !p.is_empty());
    if let Some(p) = principal {
        if !rumi_domain::pack::valid_pack_id(p) {
            return Err(ApiError::bad_request(
                "principal_id must be a pack id: 1–64 letters, digits, '_' or '-'",
            ));
        }
    }
    Ok(ok(GrantList {
        grants: k.capabilities.grants.list(principal),
    }))
}
