//! Pack lifecycle extras (contract §9): `POST /api/packs/{id}/lib/run` runs a pack's lib script
//! now and answers its result; `GET /api/vocab` shows the merged vocabulary and the converters.

use super::error::{ok, ApiError, Envelope, ErrorBody};
use super::packs::pack_id;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use rumi_actors::registry::{LibRunError, LibRunResult, RunLib};
use rumi_actors::Kernel;
use rumi_domain::vocab::{Converter, ConverterConflict};
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /api/vocab`.
#[derive(Serialize, ToSchema)]
pub struct VocabView {
    /// Each group of synonyms, its preferred term first.
    groups: Vec<Vec<String>>,
    /// Every converter, by (from, to).
    converters: Vec<Converter>,
    /// Pairs offered by more than one pack, refused for all of them (present only when there
    /// is one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conflicts: Vec<ConverterConflict>,
}

/// `POST /api/packs/{id}/lib/run`
#[utoipa::path(
    post,
    operation_id = "packs_lib_run",
    path = "/api/packs/{id}/lib/run",
    tag = "packs",
    summary = "Run a pack's lib script now (install, or update after a first success) and answer its result",
    params(("id" = String, Path, description = "the pack id")),
    responses(
        (status = 200, description = "the run's result (ok false when the script failed)", body = Envelope<LibRunResult>),
        (status = 400, description = "not a valid pack id", body = ErrorBody),
        (status = 404, description = "no such pack is installed", body = ErrorBody),
        (status = 409, description = "the pack is not approved, has no lib script, or a lib run of it is under way", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn lib_run(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    match k.registry.send(RunLib { pack_id: id }).await? {
        Ok(result) => Ok(ok(result)),
        Err(e @ LibRunError::NotFound(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
    }
}

/// `GET /api/vocab`
#[utoipa::path(
    get,
    operation_id = "vocab_get",
    path = "/api/vocab",
    tag = "packs",
    summary = "The approved packs' merged vocabulary (groups of synonyms) and converters",
    responses(
        (status = 200, description = "the groups and converters", body = Envelope<VocabView>),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn vocab(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let v = k.view.vocab();
    Ok(ok(VocabView {
        groups: v.groups().to_vec(),
        converters: v.converters().cloned().collect(),
        conflicts: v.conflicts().collect(),
    }))
}
