//! Store endpoints (contract §8, §16 "Stores"): create and list. Values are read and written by
//! packs through the `store.*` built-ins, not here. A root that escapes `user_data/stores/` (by
//! `..` or a link) is a 400 naming the rule, never the host path it resolved to.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use super::grants::{audit_durably, blocking, string_field};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::audit::{AuditEntry, Category};
use rumi_actors::capability::stores::{StoreError, StoreInfo};
use rumi_actors::Kernel;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Validation(_) | StoreError::TooLarge { .. } => {
                ApiError::bad_request(e.to_string())
            }
            StoreError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            StoreError::StoreNotFound(_) | StoreError::KeyNotFound { .. } => {
                ApiError::not_found(e.to_string())
            }
            StoreError::Storage => ApiError::internal(e),
        }
    }
}

/// The body of `POST /api/stores/create`.
#[derive(ToSchema)]
#[allow(dead_code)] // the body's schema for the OpenAPI document; the handler reads the fields one by one
pub struct StoreCreateRequest {
    /// `^[a-z0-9][a-z0-9_.-]{0,63}$`
    pub store_id: String,
    /// The store's directory, relative to the home (or absolute); it must resolve strictly
    /// inside `user_data/stores/` and not overlap another store. Default
    /// `user_data/stores/<store_id>`.
    #[schema(required = false, nullable = true)]
    pub root_path: String,
}

/// `{stores: [...]}`.
#[derive(Serialize, ToSchema)]
pub struct StoreList {
    pub stores: Vec<StoreInfo>,
}

/// `POST /api/stores/create {store_id, root_path}`
#[utoipa::path(
    post,
    operation_id = "stores_create",
    path = "/api/stores/create",
    tag = "stores",
    summary = "Create a store (its root is created inside user_data/stores/ when missing)",
    request_body(content = StoreCreateRequest),
    responses(
        (status = 200, description = "the store", body = Envelope<StoreInfo>),
        (status = 400, description = "malformed JSON, an invalid store_id, or a root_path that escapes user_data/stores/ (by '..' or a link), is user_data/stores/ itself, or overlaps another store", body = ErrorBody),
        (status = 408, description = "the body did not arrive within `RUMI_BODY_READ_TIMEOUT`", body = ErrorBody),
        (status = 409, description = "a store with this store_id exists", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the store could not be recorded", body = ErrorBody),
    )
)]
pub async fn create(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let store_id = string_field(&body, "store_id")?;
    let root_path = match body.get("root_path") {
        None | Some(Value::Null) => format!("user_data/stores/{store_id}"),
        Some(Value::String(r)) => r.clone(),
        Some(_) => return Err(ApiError::bad_request("root_path must be a string")),
    };
    let stores = k.capabilities.stores.clone();
    let (id, root) = (store_id.clone(), root_path);
    let info = blocking(move || stores.create(&id, &root)).await??;
    audit_durably(
        &k,
        AuditEntry::new(Category::Permission, "store_create", true)
            .details(json!({"store_id": store_id, "root_path": info.root_path})),
    )
    .await;
    Ok(ok(info))
}

/// `GET /api/stores`
#[utoipa::path(
    get,
    operation_id = "stores_list",
    path = "/api/stores",
    tag = "stores",
    summary = "Every store with its root (relative to the home)",
    responses((status = 200, description = "the stores, sorted by id", body = Envelope<StoreList>))
)]
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(StoreList {
        stores: k.capabilities.stores.list(),
    }))
}
