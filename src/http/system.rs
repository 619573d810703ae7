//! Health, diagnostics and audit endpoints.

use super::error::{ok, ApiError};
use actix_web::{web, HttpResponse};
use rumi_actors::audit::{self, Category, Query};
use rumi_actors::egress::listener::GetEgressSnapshot;
use rumi_actors::registry::GetDiagnostics;
use rumi_actors::{limiter, pack_container, Kernel};
use serde::Deserialize;
use serde_json::json;

/// `GET /api/health` (no token): liveness only, nothing an outsider could use.
pub async fn health(k: web::Data<Kernel>) -> HttpResponse {
    ok(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "mode": k.execution_mode()}))
}

/// `GET /api/diagnostics`: load problems, runtime events and every actor's counters.
pub async fn diagnostics(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let d = k.registry.send(GetDiagnostics).await?;
    let lim = k.limiter.addr.send(limiter::GetSnapshot).await?;
    let aud = k.audit.send(audit::GetSnapshot).await?;
    let mut containers = Vec::new();
    for (_, addr) in k.view.containers() {
        if let Ok(s) = addr.send(pack_container::GetSnapshot).await {
            containers.push(s);
        }
    }
    containers.sort_by(|a, b| a.pack_id.cmp(&b.pack_id));
    let mut egress = Vec::new();
    for addr in &d.egress {
        if let Ok(s) = addr.send(GetEgressSnapshot).await {
            egress.push(s);
        }
    }
    egress.sort_by(|a, b| a.pack_id.cmp(&b.pack_id));
    Ok(ok(json!({
        "mode": k.execution_mode(),
        "uptime_seconds": k.started.elapsed().as_secs_f64(),
        "flow_problems": d.flow_problems.iter().map(|p| json!({"problem": p, "message": p.message()})).collect::<Vec<_>>(),
        "pack_problems": d.pack_problems,
        "load_order": d.load_order,
        "events": d.events,
        "limiter": lim,
        "audit": aud,
        "containers": containers,
        "egress": egress,
    })))
}

/// Query of `GET /api/audit`.
#[derive(Deserialize)]
pub struct AuditQuery {
    category: Option<String>,
    date: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/audit?category=&date=&limit=`
pub async fn audit(
    k: web::Data<Kernel>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let category = match q.category.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Category::parse(c).ok_or_else(|| {
            let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown category {c:?}; use one of {}",
                names.join(", ")
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = k
        .audit
        .send(Query {
            category,
            date: q.date.clone(),
            limit,
        })
        .await?
        .map_err(|e| match e {
            audit::AuditError::BadDate => ApiError::bad_request(e.to_string()),
            other => ApiError::internal(other),
        })?;
    Ok(ok(entries))
}
