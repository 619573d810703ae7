//! Pack endpoints: list, pending, one pack, its status, scan, approve, reject.

use super::body::json_object;
use super::error::{ok, ApiError};
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::registry::{Approve, GetPack, ListPacks, Reject, Scan};
use rumi_actors::view::PackState;
use rumi_actors::Kernel;
use serde_json::json;

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
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.registry.send(ListPacks).await?))
}

/// `GET /api/packs/pending`: packs waiting for a decision (never decided, or modified).
pub async fn pending(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let packs = k.registry.send(ListPacks).await?;
    let waiting: Vec<_> = packs
        .into_iter()
        .filter(|p| matches!(p.state, PackState::Installed | PackState::Modified))
        .collect();
    Ok(ok(waiting))
}

/// `GET /api/packs/{id}`
pub async fn get(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    Ok(ok(k.registry.send(GetPack { pack_id: id }).await??))
}

/// `GET /api/packs/{id}/status`
pub async fn status(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let p = k.registry.send(GetPack { pack_id: id }).await??;
    Ok(ok(
        json!({"pack_id": p.pack_id, "state": p.state, "changes": p.changes, "manifest_hash": p.manifest_hash, "decided_at": p.decided_at}),
    ))
}

/// `POST /api/packs/scan`
pub async fn scan(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.registry.send(Scan).await?))
}

/// `POST /api/packs/{id}/approve`
pub async fn approve(
    k: web::Data<Kernel>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    Ok(ok(k.registry.send(Approve { pack_id: id }).await??))
}

/// `POST /api/packs/{id}/reject {reason}`
pub async fn reject(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = pack_id(&path)?;
    let body = json_object(&req, body).await?;
    let reason = match body.get("reason") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
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
