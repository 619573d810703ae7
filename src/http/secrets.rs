//! Secret endpoints (contract §8, §16 "Secrets"): set, delete, list. Write-only: no answer,
//! log line or audit entry carries a value (invariant 5) — the value is wrapped in a
//! [`SecretValue`] (redacted, zeroed on drop) as soon as it leaves the body, answers are
//! [`SecretInfo`] (key and times), and a refusal names the field, never its content.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use super::grants::{audit_durably, blocking, string_field};
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::audit::{AuditEntry, Category};
use rumi_actors::capability::secrets::{SecretError, SecretInfo, SecretValue};
use rumi_actors::Kernel;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::InvalidKey | SecretError::TooLarge(_) => {
                ApiError::bad_request(e.to_string())
            }
            SecretError::NotFound(_) => ApiError::not_found(e.to_string()),
            SecretError::TooMany => {
                ApiError::new(actix_web::http::StatusCode::CONFLICT, e.to_string())
            }
            SecretError::Storage => ApiError::internal(e),
        }
    }
}

/// The body of `POST /api/secrets/set`.
#[derive(ToSchema)]
#[allow(dead_code)] // the body's schema for the OpenAPI document; the handler reads the fields one by one
pub struct SecretSetRequest {
    /// `^[A-Z0-9_]{1,64}$`
    pub key: String,
    /// The value (a string, at most 64 KiB). Never shown again by any endpoint.
    pub value: String,
}

/// The body of `POST /api/secrets/delete`.
#[derive(ToSchema)]
#[allow(dead_code)] // the body's schema for the OpenAPI document; the handler reads the fields one by one
pub struct SecretDeleteRequest {
    pub key: String,
}

/// `{secrets: [...]}`.
#[derive(Serialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// `POST /api/secrets/set {key, value}`
#[utoipa::path(
    post,
    operation_id = "secrets_set",
    path = "/api/secrets/set",
    tag = "secrets",
    summary = "Set a secret (encrypted at rest; the value is never returned)",
    request_body(content = SecretSetRequest),
    responses(
        (status = 200, description = "the key and its times (never the value)", body = Envelope<SecretInfo>),
        (status = 400, description = "malformed JSON, an invalid key, a value that is not a string or is over 64 KiB", body = ErrorBody),
        (status = 408, description = "the body did not arrive within `RUMI_BODY_READ_TIMEOUT`", body = ErrorBody),
        (status = 409, description = "1000 secrets are set already and the key is new: delete one first", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the secret could not be recorded; nothing changed", body = ErrorBody),
    )
)]
pub async fn set(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut body = json_object(&req, body).await?;
    let key = string_field(&body, "key")?;
    let value = match body.remove("value") {
        Some(Value::String(v)) => SecretValue::new(v),
        Some(_) => return Err(ApiError::bad_request("value must be a string")),
        None => return Err(ApiError::bad_request("value (a string) is required")),
    };
    drop(body);
    let secrets = k.capabilities.secrets.clone();
    let k2 = key.clone();
    let info = blocking(move || secrets.set(&k2, value.expose())).await??;
    audit_durably(
        &k,
        AuditEntry::new(Category::Permission, "secret_set", true).details(json!({"key": key})),
    )
    .await;
    Ok(ok(info))
}

/// `POST /api/secrets/delete {key}`
#[utoipa::path(
    post,
    operation_id = "secrets_delete",
    path = "/api/secrets/delete",
    tag = "secrets",
    summary = "Delete a secret (its file becomes a tombstone)",
    request_body(content = SecretDeleteRequest),
    responses(
        (status = 200, description = "the key and its times, deleted", body = Envelope<SecretInfo>),
        (status = 400, description = "malformed JSON or an invalid key", body = ErrorBody),
        (status = 404, description = "no such secret is set", body = ErrorBody),
        (status = 408, description = "the body did not arrive within `RUMI_BODY_READ_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the change could not be recorded; nothing changed", body = ErrorBody),
    )
)]
pub async fn delete(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let key = string_field(&body, "key")?;
    let secrets = k.capabilities.secrets.clone();
    let k2 = key.clone();
    let info = blocking(move || secrets.delete(&k2)).await??;
    audit_durably(
        &k,
        AuditEntry::new(Category::Permission, "secret_delete", true).details(json!({"key": key})),
    )
    .await;
    Ok(ok(info))
}

/// `GET /api/secrets`
#[utoipa::path(
    get,
    operation_id = "secrets_list",
    path = "/api/secrets",
    tag = "secrets",
    summary = "Every secret's key and times (never a value)",
    responses((status = 200, description = "the secrets, sorted by key", body = Envelope<SecretList>))
)]
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let secrets = k.capabilities.secrets.clone();
    let secrets = blocking(move || secrets.list()).await?;
    Ok(ok(SecretList { secrets }))
}
