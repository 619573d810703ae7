//! Pack routes (contract §11): `GET /api/routes`, `POST /api/routes/reload`, and [`dispatch`],
//! which serves every `/api/` request no kernel endpoint took. The table, the matching, the
//! inputs and the reading of `ctx._http` are pure functions of `rumi_domain::catalog::routes`;
//! this file only moves bytes between HTTP and them.
//!
//! One catalog per request: the route and the flow it runs come from the same load, so a reload
//! in between never pairs a route with another load's flow. The token is checked before any of
//! this, by the gate (`auth.rs`), as for every endpoint.

use super::body;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::audit::{AuditEntry, Category, Record, Severity};
use rumi_actors::registry::Reload;
use rumi_actors::Kernel;
use rumi_domain::catalog::routes::{request, Clash, Lookup, Method, Refusal, RouteTable};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::Instrument;
use utoipa::ToSchema;

/// A route as `GET /api/routes` lists it.
#[derive(Serialize, ToSchema)]
pub struct RouteView<'a> {
    method: Method,
    path: &'a str,
    flow_id: &'a str,
    pack_id: &'a str,
    description: Option<&'a str>,
    /// The run's deadline in seconds (null: the kernel's default, 300).
    timeout: Option<f64>,
}

/// The route table: the routes that serve, the clashes between packs (the earlier pack in load
/// order keeps the route) and the routes refused, each with what to do.
#[derive(Serialize, ToSchema)]
pub struct RoutesView<'a> {
    routes: Vec<RouteView<'a>>,
    clashes: &'a [Clash],
    refused: &'a [Refusal],
}

impl<'a> RoutesView<'a> {
    pub fn new(t: &'a RouteTable) -> Self {
        RoutesView {
            routes: t
                .routes
                .iter()
                .map(|r| RouteView {
                    method: r.method,
                    path: &r.path,
                    flow_id: &r.flow_id,
                    pack_id: &r.pack_id,
                    description: r.description.as_deref(),
                    timeout: r.timeout,
                })
                .collect(),
            clashes: &t.clashes,
            refused: &t.refused,
        }
    }
}

/// `GET /api/routes`
#[utoipa::path(
    get,
    operation_id = "routes_list",
    path = "/api/routes",
    tag = "routes",
    summary = "The approved packs' routes, their clashes and the routes refused",
    responses(
        (status = 200, description = "the route table", body = Envelope<RoutesView>),
    )
)]
pub async fn list(k: web::Data<Kernel>) -> HttpResponse {
    let catalog = k.view.catalog();
    ok(RoutesView::new(&catalog.routes))
}

/// `POST /api/routes/reload`
#[utoipa::path(
    post,
    operation_id = "routes_reload",
    path = "/api/routes/reload",
    tag = "routes",
    summary = "Re-read every approved pack's routes.json (with the flows); answers the new table",
    responses(
        (status = 200, description = "the route table once the new catalog is published", body = Envelope<RoutesView>),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn reload(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    k.registry.send(Reload).await?;
    let catalog = k.view.catalog();
    Ok(ok(RoutesView::new(&catalog.routes)))
}

/// Serves a request that no kernel endpoint took: a pack route, or 403 (a pack that is not
/// approved declares it), 405 (the path is a route's, not the method) or 404.
pub async fn dispatch(
    k: web::Data<Kernel>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let catalog = k.view.catalog();
    let (route, params) = match catalog.routes.lookup(req.method().as_str(), req.path()) {
        Lookup::Found(route, params) => (route, params),
        Lookup::NotFound => return Err(ApiError::not_found("no such endpoint")),
        Lookup::Unapproved { pack_id } => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this route belongs to pack {pack_id:?}, which is not approved; review it \
                     and approve it (`rumi pack approve {pack_id}`) to serve its routes"
                ),
            ))
        }
        Lookup::MethodNotAllowed { allowed } => {
            let allowed: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            let mut e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method not allowed on this route; it accepts {}",
                    allowed.join(", ")
                ),
            );
            e.allow = Some(allowed.join(", "));
            return Err(e);
        }
    };
    let Some(flow) = catalog.flows.flows.get(&route.flow_id).cloned() else {
        return Err(ApiError::not_found(format!(
            "the route's flow {:?} (pack {:?}) is not loaded; see `rumi diagnostics`",
            route.flow_id, route.pack_id
        )));
    };
    let raw = body::bytes(&req, payload).await?;
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let inputs = request::inputs(
        &request::Request {
            method: req.method().as_str(),
            path: req.path(),
            query: req.query_string(),
            headers,
            content_type,
            body: &raw,
        },
        params,
    )
    .map_err(ApiError::bad_request)?;
    let span = tracing::info_span!(
        "http.route",
        method = %route.method,
        path = %route.path,
        pack_id = %route.pack_id,
        flow_id = %route.flow_id
    );
    let record = k
        .run_loaded_flow(
            Arc::clone(&catalog.flows),
            flow,
            inputs,
            route.timeout,
            "route",
        )
        .instrument(span)
        .await?;
    let (mut status, success, error) = super::flows::run_outcome(&record);
    // The flow chooses the status and extra headers only of a run that ended well; anything
    // it may not set is dropped (the response stands) and recorded in the audit.
    let reply = if success {
        request::reply(record.http.as_ref())
    } else {
        request::Reply::default()
    };
    if let Some(s) = reply.status.and_then(|s| StatusCode::from_u16(s).ok()) {
        status = s;
    }
    if !reply.refused.is_empty() {
        tracing::warn!(pack_id = %route.pack_id, flow_id = %route.flow_id, refused = ?reply.refused, "a route's ctx._http was partly refused");
        k.audit.do_send(Record(
            AuditEntry::new(Category::Security, "route_reply_refused", false)
                .severity(Severity::Warning)
                .pack(&route.pack_id)
                .run(&record.flow_id, &record.run_id)
                .details(
                    json!({"method": route.method, "path": route.path, "refused": reply.refused}),
                ),
        ));
    }
    let mut resp = HttpResponse::build(status);
    resp.content_type("application/json");
    for (name, value) in &reply.headers {
        // Checked by the domain already; a header the HTTP crate still refuses is dropped.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.append_header((n, v));
        }
    }
    Ok(resp.body(route_body(&k, &record.result, success, error)))
}

/// The envelope of a route's answer: `data` is the flow's result, replaced by
/// `{_truncated: true, _keys: [...]}` when the answer would exceed `RUMI_MAX_RESPONSE_BYTES`
/// (the rule of `POST /api/flows/{id}/run`).
fn route_body(k: &Kernel, result: &Value, success: bool, error: Option<String>) -> Vec<u8> {
    let body = serde_json::to_vec(&Envelope {
        success,
        data: Some(result),
        error: error.clone(),
    })
    .unwrap_or_default();
    if body.len() <= k.config.max_response_bytes {
        return body;
    }
    let keys: Vec<&String> = result
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    serde_json::to_vec(&Envelope {
        success,
        data: Some(json!({"_truncated": true, "_keys": keys})),
        error,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use rumi_domain::catalog::routes::pattern::KERNEL_ENDPOINTS;

    /// The domain's list of kernel endpoints (which pack routes may not shadow) is exactly the
    /// table actix serves, both ways: a new endpoint cannot be forgotten there.
    #[test]
    fn the_domain_knows_every_kernel_endpoint() {
        // A tail parameter (`{path:.*}`) is `{path}` in the domain's list.
        let mut served: Vec<(&str, String)> = super::super::table::served()
            .into_iter()
            .map(|(m, p)| (m, p.replace(":.*}", "}")))
            .collect();
        let mut known: Vec<(&str, String)> = KERNEL_ENDPOINTS
            .iter()
            .map(|(m, p)| (*m, p.to_string()))
            .collect();
        served.sort_unstable();
        known.sort_unstable();
        assert_eq!(served, known);
    }
}
