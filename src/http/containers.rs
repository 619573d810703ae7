//! Docker and container endpoints (strict mode): `GET /api/docker/status`, `GET /api/containers`,
//! `POST /api/containers/{id}/start|stop`, `DELETE /api/containers/{id}` (`{id}` is a pack id).

use super::error::{ok, ApiError};
use super::packs::pack_id;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use rumi_actors::kernel::ContainerError;
use rumi_actors::Kernel;
use serde_json::json;

impl From<ContainerError> for ApiError {
    fn from(e: ContainerError) -> Self {
        let status = match e {
            ContainerError::NotStrict => StatusCode::CONFLICT,
            ContainerError::NoSuchPack(_) => StatusCode::NOT_FOUND,
            ContainerError::Docker(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `GET /api/docker/status`: `{available, version, image, mode}` (plus `image_present` and the
/// reason Docker is not usable, when it is not).
pub async fn status(k: web::Data<Kernel>) -> HttpResponse {
    let mode = k.execution_mode();
    match k.docker_status().await {
        Some(s) => ok(json!({
            "available": s.available,
            "version": s.version,
            "api_version": s.api_version,
            "image": s.image,
            "image_present": s.image_present,
            "reason": s.reason,
            "mode": mode,
        })),
        None => ok(json!({
            "available": false,
            "version": null,
            "image": k.config.container.image,
            "image_present": null,
            "reason": "permissive mode does not use Docker",
            "mode": mode,
        })),
    }
}

/// `GET /api/containers`
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.containers().await?))
}

/// `POST /api/containers/{id}/start`: answers when the block host inside is ready.
pub async fn start(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    k.start_container(&id).await?;
    Ok(ok(json!({"pack_id": id, "state": "running"})))
}

/// `POST /api/containers/{id}/stop`: stops the container; the pack's next call starts a new one.
pub async fn stop(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let had = k.stop_container(&id, false).await?;
    Ok(ok(
        json!({"pack_id": id, "state": "stopped", "had_container": had}),
    ))
}

/// `DELETE /api/containers/{id}`: removes the container; the pack's next call starts a new one.
pub async fn remove(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let had = k.stop_container(&id, true).await?;
    Ok(ok(
        json!({"pack_id": id, "state": "removed", "had_container": had}),
    ))
}
