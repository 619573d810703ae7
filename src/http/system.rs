//! Health, diagnostics and audit endpoints.

use super::auth::ApiToken;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::{web, HttpResponse};
use rumi_actors::audit::{self, AuditEntry, AuditSnapshot, Category};
use rumi_actors::audit_query::{self, Cursor};
use rumi_actors::egress::listener::{EgressSnapshot, GetEgressSnapshot};
use rumi_actors::limiter::LimiterSnapshot;
use rumi_actors::pack_container::ContainerSnapshot;
use rumi_actors::registry::GetDiagnostics;
use rumi_actors::{limiter, pack_container, Kernel, SecurityMode};
use rumi_domain::catalog::modifier::ModifierReport;
use rumi_domain::sources::FlowProblem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Liveness.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: &'static str,
    /// The kernel's version.
    version: &'static str,
    mode: SecurityMode,
    /// With `?challenge=`: HMAC-SHA256, keyed by the API token, of `rumi-kernel-proof:` and the
    /// challenge (hex). A client checks it before it sends the token: only the kernel that holds
    /// the token can answer it.
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<String>,
}

/// Query of `GET /api/health`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// 32 to 128 hex characters, chosen at random by the client.
    challenge: Option<String>,
}

/// `GET /api/health` (no token): liveness only, nothing an outsider could use; with a challenge,
/// the kernel's proof that it holds the token.
#[utoipa::path(
    get,
    operation_id = "system_health",
    path = "/api/health",
    tag = "system",
    summary = "Liveness, version and mode (no token needed); with a challenge, proof of the token",
    params(HealthQuery),
    responses(
        (status = 200, description = "the kernel is up", body = Envelope<Health>),
        (status = 400, description = "the challenge is not 32 to 128 hex characters", body = ErrorBody),
    )
)]
pub async fn health(
    k: web::Data<Kernel>,
    token: web::Data<ApiToken>,
    q: web::Query<HealthQuery>,
) -> Result<HttpResponse, ApiError> {
    let proof = match q.challenge.as_deref() {
        None => None,
        Some(c) if crate::token::valid_challenge(c) => Some(crate::token::proof(&token.0, c)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "challenge must be 32 to 128 hex characters",
            ))
        }
    };
    Ok(ok(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        mode: k.config.mode,
        proof,
    }))
}

/// A flow load problem and its message.
#[derive(Serialize, ToSchema)]
pub struct FlowProblemView<'a> {
    problem: &'a FlowProblem,
    message: String,
}

/// Load problems, runtime events and every actor's counters.
#[derive(Serialize, ToSchema)]
pub struct Diagnostics<'a> {
    mode: SecurityMode,
    uptime_seconds: f64,
    flow_problems: Vec<FlowProblemView<'a>>,
    /// Flow problems beyond the listed ones (only counted, so the answer stays small).
    flow_problems_omitted: usize,
    /// Packs that could not be read, and load order problems.
    pack_problems: &'a [String],
    /// The packs' load order.
    load_order: &'a [String],
    /// Unmet `requires` and dependency cycles, one entry per pack concerned (`kind: "load_order"`).
    load_problems: Vec<LoadProblemDiagnostic<'a>>,
    /// Recent runtime events (sandbox restarts and the like), oldest first.
    events: &'a [Value],
    limiter: LimiterSnapshot,
    audit: AuditSnapshot,
    /// Every approved pack's sandbox.
    containers: Vec<ContainerSnapshot>,
    /// Every approved pack's egress socket.
    egress: Vec<EgressSnapshot>,
    /// Every approved pack's capability socket and broker.
    capability: Vec<CapabilityDiagnostics>,
    /// Modifiers skipped (per target flow) and refused (per file), at most 200.
    modifiers: Vec<ModifierDiagnostic>,
    /// Modifier entries beyond the listed ones.
    modifiers_omitted: usize,
    /// Pack routes that clash (the earlier pack keeps each) or were refused.
    routes: RouteProblems,
    /// The refused lines of packs' `requirements.lock` files at the last pip scan (such a lock
    /// is not a candidate).
    pip_invalid: Vec<rumi_actors::pip::lockfile::InvalidLock>,
    /// Skills that could not be loaded: `{source: "skills", skill_id, error}`.
    skills: Vec<rumi_actors::skills::catalog::SkippedSkill>,
}

/// A problem of one pack's place in the load order; the pack loads anyway.
#[derive(Serialize, ToSchema)]
pub struct LoadProblemDiagnostic<'a> {
    /// Always `load_order`.
    kind: &'static str,
    #[serde(flatten)]
    problem: &'a rumi_domain::pack::LoadProblem,
}

/// The route table's problems (`GET /api/routes` has the same lists with the routes).
#[derive(Serialize, ToSchema)]
struct RouteProblems {
    clashes: Vec<rumi_domain::catalog::routes::Clash>,
    refused: Vec<rumi_domain::catalog::routes::Refusal>,
}

/// A modifier skipped for a flow, refused, or matching no flow.
#[derive(Serialize, ToSchema)]
struct ModifierDiagnostic {
    /// `modifier_skipped` or `modifier_refused`.
    kind: &'static str,
    modifier_id: Option<String>,
    /// The modifier file, relative to `RUMI_HOME`.
    file: String,
    line: Option<usize>,
    /// The flow it was skipped for (skips only).
    flow_id: Option<String>,
    reason: String,
}

/// Most modifier entries the diagnostics list.
const MAX_MODIFIER_DIAGNOSTICS: usize = 200;

/// The modifier entries of the diagnostics, the first [`MAX_MODIFIER_DIAGNOSTICS`] and the count of the rest.
fn modifier_diagnostics(report: &ModifierReport) -> (Vec<ModifierDiagnostic>, usize) {
    let refused = report.refused.iter().map(|r| ModifierDiagnostic {
        kind: "modifier_refused",
        modifier_id: r.modifier_id.clone(),
        file: r.file.clone(),
        line: r.line,
        flow_id: None,
        reason: r.reason.clone(),
    });
    let unmatched = report.unmatched.iter().map(|r| ModifierDiagnostic {
        kind: "modifier_skipped",
        modifier_id: r.modifier_id.clone(),
        file: r.file.clone(),
        line: r.line,
        flow_id: None,
        reason: r.reason.clone(),
    });
    let skipped = report.skipped().map(|(flow, a)| ModifierDiagnostic {
        kind: "modifier_skipped",
        modifier_id: Some(a.modifier_id.clone()),
        file: a.file.clone(),
        line: None,
        flow_id: Some(flow.to_string()),
        reason: a.reason.clone().unwrap_or_default(),
    });
    let total = report.refused.len() + report.unmatched.len() + report.skipped().count();
    let listed: Vec<ModifierDiagnostic> = refused
        .chain(unmatched)
        .chain(skipped)
        .take(MAX_MODIFIER_DIAGNOSTICS)
        .collect();
    let omitted = total - listed.len();
    (listed, omitted)
}

/// A pack's capability socket and its broker's counters.
#[derive(Serialize, ToSchema)]
struct CapabilityDiagnostics {
    socket: rumi_actors::socket_server::SocketSnapshot,
    broker: rumi_actors::capability::broker::BrokerSnapshot,
}

/// `GET /api/diagnostics`: load problems, runtime events and every actor's counters.
#[utoipa::path(
    get,
    operation_id = "system_diagnostics",
    path = "/api/diagnostics",
    tag = "system",
    summary = "Load problems, runtime events and every actor's counters",
    responses(
        (status = 200, description = "the diagnostics", body = Envelope<Diagnostics>),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
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
    let mut capability = Vec::new();
    for (listener, broker) in &d.capability {
        let socket = listener
            .send(rumi_actors::socket_server::GetSocketSnapshot)
            .await;
        let counters = broker
            .send(rumi_actors::capability::broker::GetBrokerSnapshot)
            .await;
        if let (Ok(socket), Ok(broker)) = (socket, counters) {
            capability.push(CapabilityDiagnostics { socket, broker });
        }
    }
    capability.sort_by(|a, b| a.socket.pack_id.cmp(&b.socket.pack_id));
    let catalog = k.view.catalog();
    let (modifiers, modifiers_omitted) = modifier_diagnostics(&catalog.modifiers);
    let skill_runtime = std::sync::Arc::clone(&k.skills);
    let skills = web::block(move || skill_runtime.catalog().skipped)
        .await
        .map_err(ApiError::internal)?;
    Ok(ok(Diagnostics {
        mode: k.config.mode,
        uptime_seconds: k.started.elapsed().as_secs_f64(),
        flow_problems: d
            .flow_problems
            .iter()
            .map(|p| FlowProblemView {
                problem: p,
                message: p.message(),
            })
            .collect(),
        flow_problems_omitted: d.flow_problems_omitted,
        pack_problems: &d.pack_problems,
        load_order: &d.load_order,
        load_problems: d
            .load_problems
            .iter()
            .map(|problem| LoadProblemDiagnostic {
                kind: "load_order",
                problem,
            })
            .collect(),
        events: &d.events,
        limiter: lim,
        audit: aud,
        containers,
        egress,
        capability,
        modifiers,
        modifiers_omitted,
        routes: RouteProblems {
            clashes: catalog.routes.clashes.clone(),
            refused: catalog.routes.refused.clone(),
        },
        pip_invalid: k.pip.invalid(),
        skills,
    }))
}

/// Query of `GET /api/audit`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// One category (default: all).
    #[param(value_type = Option<Category>)]
    category: Option<String>,
    /// The UTC day, `YYYY-MM-DD` (default: today).
    date: Option<String>,
    /// At most this many entries (1..1000, default 100).
    limit: Option<usize>,
    /// A `Rumi-Audit-Before` cursor: the page of entries before it.
    before: Option<String>,
    /// A `Rumi-Audit-After` cursor: the entries after it, oldest first.
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
#[utoipa::path(
    get,
    operation_id = "system_audit",
    path = "/api/audit",
    tag = "audit",
    summary = "One page of a day's audit entries, oldest first",
    params(AuditQuery),
    responses(
        (status = 200, description = "the entries (at most `limit` and 8 MiB of them)", body = Envelope<Vec<AuditEntry>>,
            headers(
                ("Rumi-Audit-Before" = String, description = "the cursor of the page of older entries (absent when there are none)"),
                ("Rumi-Audit-After" = String, description = "the cursor of the entries newer than this page"),
                ("Rumi-Audit-Skipped-Lines" = u64, description = "unreadable lines met and skipped"),
            )),
        (status = 400, description = "an unknown category, a malformed date or cursor, or a malformed query", body = ErrorBody),
        (status = 500, description = "the audit files could not be read", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
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
