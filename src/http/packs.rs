//! Pack endpoints: list, pending, one pack, its status, scan, approve, reject, uninstall.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::registry::{
    Approve, ApprovedPack, GetPack, ListPacks, PackInfo, Reject, Scan, Uninstall, Uninstalled,
};
use rumi_actors::view::PackState;
use rumi_actors::Kernel;
use rumi_domain::manifest::ManifestDiff;
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// A pack's approval state and what changed since its approval.
#[derive(Serialize, ToSchema)]
pub struct PackStatus {
    pack_id: String,
    state: PackState,
    /// What changed since approval, when `modified`.
    changes: Option<ManifestDiff>,
    manifest_hash: Option<String>,
    decided_at: Option<String>,
}

/// The body of `POST /api/packs/{id}/reject` (may be empty).
#[derive(ToSchema)]
pub struct RejectRequest {
    /// Why (kept in the signed record and the audit, at most 500 characters).
    pub reason: Option<String>,
}

pub fn pack_id(raw: &str) -> Result<String, ApiError> {
    if rumi_domain::pack::valid_pack_id(raw) {
        Ok(raw.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "{raw:?} is not a valid pack id"
        )))
    }
}

/// `GET /api/packs`
#[utoipa::path(
    get,
    operation_id = "packs_list",
    path = "/api/packs",
    tag = "packs",
    summary = "List every pack in load order",
    responses(
        (status = 200, description = "every pack", body = Envelope<Vec<PackInfo>>),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.registry.send(ListPacks).await?))
}

/// `GET /api/packs/pending`: packs waiting for a decision (never decided, or modified).
#[utoipa::path(
    get,
    operation_id = "packs_pending",
    path = "/api/packs/pending",
    tag = "packs",
    summary = "List the packs waiting for a decision (installed or modified)",
    responses(
        (status = 200, description = "the packs waiting for a decision", body = Envelope<Vec<PackInfo>>),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn pending(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let packs = k.registry.send(ListPacks).await?;
    let waiting: Vec<_> = packs
        .into_iter()
        .filter(|p| matches!(p.state, PackState::Installed | PackState::Modified))
        .collect();
    Ok(ok(waiting))
}

/// `GET /api/packs/{id}`
#[utoipa::path(
    get,
    operation_id = "packs_get",
    path = "/api/packs/{id}",
    tag = "packs",
    summary = "One pack",
    params(("id" = String, Path, description = "the pack id")),
    responses(
        (status = 200, description = "the pack", body = Envelope<PackInfo>),
        (status = 400, description = "not a valid pack id", body = ErrorBody),
        (status = 404, description = "no such pack is installed", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn get(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    Ok(ok(k.registry.send(GetPack { pack_id: id }).await??))
}

/// `GET /api/packs/{id}/status`
#[utoipa::path(
    get,
    operation_id = "packs_status",
    path = "/api/packs/{id}/status",
    tag = "packs",
    summary = "A pack's state and what changed since its approval",
    params(("id" = String, Path, description = "the pack id")),
    responses(
        (status = 200, description = "the pack's status", body = Envelope<PackStatus>),
        (status = 400, description = "not a valid pack id", body = ErrorBody),
        (status = 404, description = "no such pack is installed", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn status(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let p = k.registry.send(GetPack { pack_id: id }).await??;
    Ok(ok(PackStatus {
        pack_id: p.pack_id,
        state: p.state,
        changes: p.changes,
        manifest_hash: p.manifest_hash,
        decided_at: p.decided_at,
    }))
}

/// `POST /api/packs/scan`
#[utoipa::path(
    post,
    operation_id = "packs_scan",
    path = "/api/packs/scan",
    tag = "packs",
    summary = "Re-read the ecosystem: new packs appear, approved packs are verified again",
    responses(
        (status = 200, description = "every pack after the scan", body = Envelope<Vec<PackInfo>>),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn scan(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.registry.send(Scan).await?))
}

/// `POST /api/packs/{id}/approve`
#[utoipa::path(
    post,
    operation_id = "packs_approve",
    path = "/api/packs/{id}/approve",
    tag = "packs",
    summary = "Approve a pack: record the SHA-256 of every file, signed",
    params(("id" = String, Path, description = "the pack id")),
    responses(
        (status = 200, description = "the pack, approved, with `warnings`: its flow files that did not load (`file:line: what was wrong — how to fix it`)", body = Envelope<ApprovedPack>),
        (status = 400, description = "not a valid pack id", body = ErrorBody),
        (status = 404, description = "no such pack is installed", body = ErrorBody),
        (status = 409, description = "the pack cannot be approved (e.g. its metadata is invalid)", body = ErrorBody),
        (status = 500, description = "the approval could not be recorded; nothing changed", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn approve(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    Ok(ok(k.registry.send(Approve { pack_id: id }).await??))
}

/// `POST /api/packs/{id}/reject {reason}`
#[utoipa::path(
    post,
    operation_id = "packs_reject",
    path = "/api/packs/{id}/reject",
    tag = "packs",
    summary = "Reject a pack (blocked): its sandbox stops and its flows unload",
    params(("id" = String, Path, description = "the pack id")),
    request_body(content = Option<RejectRequest>, description = "why; an empty body is `{}`"),
    responses(
        (status = 200, description = "the pack, blocked", body = Envelope<PackInfo>),
        (status = 400, description = "not a valid pack id, malformed JSON, or `reason` not a string", body = ErrorBody),
        (status = 404, description = "no such pack is installed", body = ErrorBody),
        (status = 408, description = "the body did not arrive within `RUMI_BODY_READ_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the decision could not be recorded; nothing changed", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn reject(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let body = json_object(&req, body).await?;
    let RejectRequest { reason } = match body.get("reason") {
        None | Some(Value::Null) => RejectRequest { reason: None },
        Some(Value::String(s)) => RejectRequest {
            reason: Some(s.clone()),
        },
        Some(_) => return Err(ApiError::bad_request("reason must be a string")),
    };
    Ok(ok(k
        .registry
        .send(Reject {
            pack_id: id,
            reason,
        })
        .await??))
}

/// The query of `DELETE /api/packs/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UninstallQuery {
    /// `true`: remove the pack's files and its data directory too (then it is no longer listed).
    /// `false` (the default) keeps the files: the pack shows `installed`.
    pub purge: Option<bool>,
}

/// The query string: `purge` absent, `true` or `false`; anything else is refused.
fn uninstall_query(query: &str) -> Result<UninstallQuery, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    let mut purge = None;
    for (k, v) in pairs.into_inner() {
        match (k.as_str(), v.as_str()) {
            ("purge", "true" | "1") if purge.is_none() => purge = Some(true),
            ("purge", "false" | "0") if purge.is_none() => purge = Some(false),
            ("purge", _) => {
                return Err(ApiError::bad_request(
                    "purge must be given once, as true or false",
                ))
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {:?}; the only one is purge=true|false",
                    other.chars().take(40).collect::<String>()
                )))
            }
        }
    }
    Ok(UninstallQuery { purge })
}

/// `DELETE /api/packs/{id}[?purge=true]`
#[utoipa::path(
    delete,
    operation_id = "packs_uninstall",
    path = "/api/packs/{id}",
    tag = "packs",
    summary = "Uninstall a pack: stop it, remove its approval record and its network and capability grants",
    description = "Its container and workers stop, its sockets are removed, its network grant and \
                   capability grants are removed (not suspended: a pack installed again under the \
                   same id starts with none), its approval record is deleted, and its flows, \
                   modifiers, routes and schedules unload. The files stay and the pack shows \
                   `installed`, unless `purge=true` removes them and its data directory too.",
    params(("id" = String, Path, description = "the pack id"), UninstallQuery),
    responses(
        (status = 200, description = "what was removed, and the pack as it is now (null when purged)", body = Envelope<Uninstalled>),
        (status = 400, description = "not a valid pack id, or a bad query", body = ErrorBody),
        (status = 404, description = "no such pack is installed", body = ErrorBody),
        (status = 409, description = "a pip install of the pack is under way (uninstall when it has finished)", body = ErrorBody),
        (status = 500, description = "a grant or the record could not be removed; the pack keeps running as before", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn uninstall(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let purge = uninstall_query(req.query_string())?.purge.unwrap_or(false);
    // No pip install of the pack may run or begin while it goes (one finishing afterwards would
    // put its packages back for whatever pack takes the id next).
    let hold = k
        .pip
        .hold_for_uninstall(&id)
        .map_err(|e| ApiError::new(actix_web::http::StatusCode::CONFLICT, e.to_string()))?;
    let done = k
        .registry
        .send(Uninstall {
            pack_id: id.clone(),
            purge,
        })
        .await??;
    let pip = k.pip.clone();
    web::block(move || pip.forget_pack(&id))
        .await
        .map_err(|_| ApiError::internal("the pip records could not be updated"))?
        .map_err(|_| ApiError::internal("the pip records could not be updated"))?;
    drop(hold);
    Ok(ok(done))
}
