//! Health, diagnostics and audit endpoints.

use super::error::{ok, ApiError, Envelope};
use actix_web::{web, HttpResponse};
use rumi_actors::audit::{self, Category};
use rumi_actors::audit_query::{self, Cursor};
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
        "flow_problems_omitted": d.flow_problems_omitted,
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
    before: Option<String>,
    after: Option<String>,
}

impl From<audit::AuditError> for ApiError {
    fn from(e: audit::AuditError) -> Self {
        match e {
            audit::AuditError::BadDate | audit::AuditError::BadCursor(_) => {
                ApiError::bad_request(e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

/// `GET /api/audit?category=&date=&limit=&before=&after=`: one page of a day's entries, oldest
/// first; the cursors of the neighbouring pages and the count of unreadable lines met are in the
/// `Rumi-Audit-Before`, `Rumi-Audit-After` and `Rumi-Audit-Skipped-Lines` headers (the body
/// stays the envelope with the list of entries).
pub async fn audit(
    k: web::Data<Kernel>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
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
    let cursor = |c: Option<String>| c.map(|c| Cursor::parse(&c)).transpose();
    let query = audit_query::AuditQuery {
        category,
        date: q.date,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        before: cursor(q.before)?,
        after: cursor(q.after)?,
    };
    // Entries recorded before this request are in their files once the writer has handled
    // everything sent before this message.
    k.audit.send(audit::AwaitWritten).await?;
    // Reading is blocking file I/O of unbounded size: on a blocking thread, so it stalls neither
    // this HTTP worker nor the disk arbiter (whose writes acknowledge runs).
    let dir = k.layout.audit();
    let page = web::block(move || audit_query::query(&dir, &query))
        .await
        .map_err(ApiError::internal)??;
    if page.skipped_lines > 0 {
        tracing::warn!(
            skipped = page.skipped_lines,
            "audit: unreadable lines were skipped while reading a page (a crash can cut a line)"
        );
        k.audit.do_send(audit::LinesSkipped(page.skipped_lines));
    }
    let mut resp = HttpResponse::Ok();
    if let Some(before) = &page.before {
        resp.insert_header(("Rumi-Audit-Before", before.to_string()));
    }
    resp.insert_header(("Rumi-Audit-After", page.after.to_string()));
    resp.insert_header(("Rumi-Audit-Skipped-Lines", page.skipped_lines.to_string()));
    Ok(resp.json(Envelope {
        success: true,
        data: Some(page.entries),
        error: None,
    }))
}
