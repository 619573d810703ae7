//! Docker and container endpoints (strict mode): `GET /api/docker/status`, `GET /api/containers`,
//! `POST /api/containers/{id}/start|stop`, `DELETE /api/containers/{id}` (`{id}` is a pack id).

use super::error::{ok, ApiError, Envelope, ErrorBody};
use super::packs::pack_id;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use rumi_actors::docker::ManagedContainer;
use rumi_actors::kernel::ContainerError;
use rumi_actors::{Kernel, SecurityMode};
use serde::Serialize;
use utoipa::ToSchema;

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

/// Whether strict mode can use Docker.
#[derive(Serialize, ToSchema)]
pub struct DockerStatusView {
    available: bool,
    /// The daemon's version, when reachable.
    version: Option<String>,
    api_version: Option<String>,
    /// The pack runtime image.
    image: String,
    /// Whether the image is present (null when the daemon is unreachable or not used).
    image_present: Option<bool>,
    /// Why Docker is not usable, when it is not.
    reason: Option<String>,
    mode: SecurityMode,
}

/// What a container action did.
#[derive(Serialize, ToSchema)]
pub struct ContainerAction {
    pack_id: String,
    state: ContainerState,
    /// Whether there was a container (stop and remove).
    #[serde(skip_serializing_if = "Option::is_none")]
    had_container: Option<bool>,
}

/// A pack container's state after an action.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Running,
    Stopped,
    Removed,
}

/// `GET /api/docker/status`: `{available, version, api_version, image, image_present, reason,
/// mode}`.
#[utoipa::path(
    get,
    operation_id = "containers_status",
    path = "/api/docker/status",
    tag = "docker",
    summary = "Whether Docker and the pack runtime image are usable",
    responses((status = 200, description = "the Docker status", body = Envelope<DockerStatusView>))
)]
pub async fn status(k: web::Data<Kernel>) -> HttpResponse {
    let mode = k.config.mode;
    match k.docker_status().await {
        Some(s) => ok(DockerStatusView {
            available: s.available,
            version: s.version,
            api_version: s.api_version,
            image: s.image,
            image_present: s.image_present,
            reason: s.reason,
            mode,
        }),
        None => ok(DockerStatusView {
            available: false,
            version: None,
            api_version: None,
            image: k.config.container.image.clone(),
            image_present: None,
            reason: Some("permissive mode does not use Docker".into()),
            mode,
        }),
    }
}

/// `GET /api/containers`
#[utoipa::path(
    get,
    operation_id = "containers_list",
    path = "/api/containers",
    tag = "docker",
    summary = "This installation's pack containers",
    responses(
        (status = 200, description = "the containers", body = Envelope<Vec<ManagedContainer>>),
        (status = 409, description = "permissive mode has no containers", body = ErrorBody),
        (status = 503, description = "the Docker daemon is not usable", body = ErrorBody),
    )
)]
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.containers().await?))
}

/// `POST /api/containers/{id}/start`: answers when the block host inside is ready.
#[utoipa::path(
    post,
    operation_id = "containers_start",
    path = "/api/containers/{id}/start",
    tag = "docker",
    summary = "Start an approved pack's container; answers when its block host is ready",
    params(("id" = String, Path, description = "the pack id")),
    responses(
        (status = 200, description = "the container runs", body = Envelope<ContainerAction>),
        (status = 400, description = "not a valid pack id", body = ErrorBody),
        (status = 404, description = "the pack is not approved", body = ErrorBody),
        (status = 409, description = "permissive mode has no containers", body = ErrorBody),
        (status = 503, description = "Docker could not start the container", body = ErrorBody),
    )
)]
pub async fn start(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    k.start_container(&id).await?;
    Ok(ok(ContainerAction {
        pack_id: id,
        state: ContainerState::Running,
        had_container: None,
    }))
}

/// `POST /api/containers/{id}/stop`: stops the container; the pack's next call starts a new one.
#[utoipa::path(
    post,
    operation_id = "containers_stop",
    path = "/api/containers/{id}/stop",
    tag = "docker",
    summary = "Stop a pack's container (kept); its next call starts a fresh one",
    params(("id" = String, Path, description = "the pack id")),
    responses(
        (status = 200, description = "the container is stopped", body = Envelope<ContainerAction>),
        (status = 400, description = "not a valid pack id", body = ErrorBody),
        (status = 404, description = "no such pack", body = ErrorBody),
        (status = 409, description = "permissive mode has no containers", body = ErrorBody),
        (status = 503, description = "the Docker daemon is not usable", body = ErrorBody),
    )
)]
pub async fn stop(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let had = k.stop_container(&id, false).await?;
    Ok(ok(ContainerAction {
        pack_id: id,
        state: ContainerState::Stopped,
        had_container: Some(had),
    }))
}

/// `DELETE /api/containers/{id}`: removes the container; the pack's next call starts a new one.
#[utoipa::path(
    delete,
    operation_id = "containers_remove",
    path = "/api/containers/{id}",
    tag = "docker",
    summary = "Remove a pack's container; its next call starts a fresh one",
    params(("id" = String, Path, description = "the pack id")),
    responses(
        (status = 200, description = "the container is removed", body = Envelope<ContainerAction>),
        (status = 400, description = "not a valid pack id", body = ErrorBody),
        (status = 404, description = "no such pack", body = ErrorBody),
        (status = 409, description = "permissive mode has no containers", body = ErrorBody),
        (status = 503, description = "the Docker daemon is not usable", body = ErrorBody),
    )
)]
pub async fn remove(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let had = k.stop_container(&id, true).await?;
    Ok(ok(ContainerAction {
        pack_id: id,
        state: ContainerState::Removed,
        had_container: Some(had),
    }))
}
