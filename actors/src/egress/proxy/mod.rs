//! One pack request through the egress proxy: the checks of §6 on every hop, then the hop itself.
//!
//! Attacks stopped here:
//! * DNS rebinding (a name that resolves to a public address when checked and to an internal one
//!   when connected) — each hop's name is resolved once, every address is checked, and the TCP
//!   connection goes to a checked address; TLS still verifies the certificate against the name;
//! * redirects into the internal network, or from https down to another scheme — each hop is
//!   checked again from step 1, at most [`MAX_REDIRECTS`] are followed, and only for GET/HEAD;
//!   credentials (`Authorization`, `Cookie`) are not carried to another origin;
//! * memory exhaustion by a huge or endless upstream body — the body is counted as it arrives and
//!   the request fails at the limit (a declared `Content-Length` over it fails before reading);
//! * a stalling upstream — the whole request, every hop included, has one deadline.

mod check;
pub use check::{AddressCheck, CheckVerdict};

use super::budget::{Budget, Hold, PackBudget};
use super::grants::NetworkPolicy;
use super::EgressSettings;
use crate::audit::{AuditEntry, AuditWriter, Category, Record, Severity};
use actix::Addr;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rumi_domain::egress::url;
use rumi_domain::egress::{
    self, EgressRequest, Host, HttpRequest, Method, ProxyResponse, Target, BLOCKED, MAX_REDIRECTS,
};
use rumi_domain::net::{self, Cidr};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Resolves a name to addresses (the system resolver; tests substitute a table).
pub type Resolver = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver (`getaddrinfo` on the blocking pool).
pub fn system_resolver() -> Resolver {
    Arc::new(|name, port| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), port)).await?;
            let mut out: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !out.contains(&a.ip()) {
                    out.push(a.ip());
                }
            }
            Ok(out)
        })
    })
}

/// A reply, and the response memory it holds until it has been written.
#[derive(Debug)]
pub struct Answer {
    pub reply: Reply,
    pub hold: Hold,
}

/// What a frame gets back.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Http(Box<ProxyResponse>),
    Check { allowed: bool, reason: String },
}

/// The proxy shared by every pack's listener.
pub struct Proxy {
    policy: Arc<NetworkPolicy>,
    /// When each (pack, host) last had a "resolves to a blocked address" warning logged.
    warned: parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    allow: Vec<Cidr>,
    max_response: usize,
    budget: Budget,
    tls: TlsConnector,
    resolver: Resolver,
    audit: Addr<AuditWriter>,
}

/// A failed hop or request: the error type and the short text the pack sees, and the detail
/// that goes only to the audit.
#[derive(Debug)]
struct Failure {
    error_type: &'static str,
    short: String,
    detail: String,
}

impl Failure {
    fn new(error_type: &'static str, short: impl Into<String>, detail: impl Into<String>) -> Self {
        Failure {
            error_type,
            short: short.into(),
            detail: detail.into(),
        }
    }
}

/// Error types that are the policy saying no (the rest are failures of an allowed request).
const POLICY_REFUSALS: [&str; 5] = [
    "validation",
    "access_denied",
    "security_blocked",
    "response_too_large",
    "too_many_redirects",
];

/// Where the request ended up, for the audit.
#[derive(Default)]
struct Trail {
    domain: String,
    port: u16,
    path: String,
    hops: u32,
    status: u16,
    bytes: u64,
}

impl Proxy {
    /// Builds the proxy from the egress settings (internal ranges opened, the extra CA file, the
    /// response budget) and the response size limit.
    pub fn new(
        policy: Arc<NetworkPolicy>,
        settings: &EgressSettings,
        max_response: usize,
        audit: Addr<AuditWriter>,
    ) -> Result<Proxy, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(file) = &settings.extra_ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| format!("RUMI_EGRESS_CA_FILE cannot be read ({})", e.kind()))?;
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|_| "RUMI_EGRESS_CA_FILE is not PEM".to_string())?;
                roots
                    .add(cert)
                    .map_err(|e| format!("RUMI_EGRESS_CA_FILE holds a bad certificate ({e})"))?;
                n += 1;
            }
            if n == 0 {
                return Err("RUMI_EGRESS_CA_FILE holds no certificate".into());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up failed ({e})"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let total = settings
            .buffer_bytes
            .unwrap_or_else(|| super::default_buffer_bytes(max_response));
        Ok(Proxy {
            policy,
            warned: Default::default(),
            allow: settings.allow_cidrs.clone(),
            max_response,
            budget: Budget::new(total, max_response),
            tls: TlsConnector::from(Arc::new(config)),
            resolver: system_resolver(),
            audit,
        })
    }

    /// Replaces the resolver (tests: names that resolve to local addresses).
    pub fn with_resolver(mut self, resolver: Resolver) -> Proxy {
        self.resolver = resolver;
        self
    }

    /// The packs' network grants this proxy checks.
    pub fn policy(&self) -> &Arc<NetworkPolicy> {
        &self.policy
    }

    /// The kernel-wide response budget (each listener takes its pack's share).
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Answers one parsed frame of `pack_id`, and audits the decision. The answer holds the
    /// memory charged for its body to `budget` until it is dropped (after the reply is written).
    pub async fn handle(
        &self,
        pack_id: &str,
        request: EgressRequest,
        budget: &PackBudget,
    ) -> Answer {
        let mut hold = budget.hold();
        let reply = match request {
            EgressRequest::Check { domain, port } => {
                let verdict = self.check(pack_id, &domain, port).await;
                self.audit.do_send(Record(
                    AuditEntry::new(Category::Network, "network_check", verdict.allowed)
                        .pack(pack_id)
                        .details(json!({"allowed": verdict.allowed, "reason": verdict.reason, "domain": domain, "port": port})),
                ));
                // The pack learns that an address is internal, never which one.
                let reason = match &verdict.address {
                    Some(a) if !a.allowed => {
                        format!("{BLOCKED}: the host resolves to an internal address")
                    }
                    _ => verdict.reason,
                };
                Reply::Check {
                    allowed: verdict.allowed,
                    reason,
                }
            }
            EgressRequest::Http(req) => {
                Reply::Http(Box::new(self.fetch(pack_id, req, &mut hold).await))
            }
        };
        Answer { reply, hold }
    }

    /// Audits a refused frame (bad framing or validation) and answers it.
    pub fn refuse(&self, pack_id: &str, error_type: &str, reason: &str) -> Answer {
        self.audit.do_send(Record(
            AuditEntry::new(Category::Network, "egress_refused", false)
                .severity(Severity::Warning)
                .pack(pack_id)
                .error(reason, Some(error_type))
                .details(json!({"allowed": false, "reason": reason})),
        ));
        Answer {
            reply: Reply::Http(Box::new(ProxyResponse::failure(error_type, reason))),
            hold: Hold::none(),
        }
    }

    fn audit_tampered(&self, pack_id: &str, tampered: bool) {
        if tampered {
            self.audit
                .do_send(Record(super::grants::tampered_entry(pack_id)));
        }
    }

    /// An HTTP request, every hop checked; always answers (failures are responses).
    async fn fetch(&self, pack_id: &str, req: HttpRequest, hold: &mut Hold) -> ProxyResponse {
        let started = Instant::now();
        let method = req.method;
        let mut trail = Trail::default();
        let outcome = tokio::time::timeout(req.timeout, self.hops(pack_id, req, &mut trail, hold))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::new(
                    "timeout",
                    "timeout",
                    "the request did not finish within its timeout_seconds",
                ))
            });
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (mut response, allowed, reason) = match outcome {
            Ok(r) => (r, true, "allowed".to_string()),
            Err(f) => {
                // A failed request's partial body is gone already.
                hold.release();
                let reason = f.detail.clone();
                let allowed = !POLICY_REFUSALS.contains(&f.error_type);
                (
                    ProxyResponse::failure(f.error_type, f.short),
                    allowed,
                    reason,
                )
            }
        };
        response.latency_ms = latency_ms;
        response.redirect_hops = trail.hops;
        let mut entry = AuditEntry::new(Category::Network, "egress_request", response.success)
            .pack(pack_id)
            .details(json!({
                "allowed": allowed,
                "reason": reason,
                "domain": trail.domain,
                "port": trail.port,
                "method": method.as_str(),
                "path": trail.path,
                "status": trail.status,
                "latency_ms": (latency_ms * 1000.0).round() / 1000.0,
                "bytes": trail.bytes,
                "hops": trail.hops,
            }));
        if let Some(t) = &response.error_type {
            let sev = if allowed {
                Severity::Info
            } else {
                Severity::Warning
            };
            entry = entry.severity(sev).error(&reason, Some(t));
        }
        self.audit.do_send(Record(entry));
        response
    }

    async fn hops(
        &self,
        pack_id: &str,
        req: HttpRequest,
        trail: &mut Trail,
        hold: &mut Hold,
    ) -> Result<ProxyResponse, Failure> {
        let HttpRequest {
            mut method,
            mut url,
            mut headers,
            body,
            ..
        } = req;
        // Converted once; every hop shares it (a clone is a reference count).
        let mut body = Bytes::from(body);
        loop {
            trail.path = url.path().chars().take(200).collect();
            // 1. Validation (the scheme of a redirect target included).
            let target = egress::target(&url).map_err(|e| {
                Failure::new("validation", format!("Network access denied: {e}"), e)
            })?;
            trail.domain = target.host.grant_name();
            trail.port = target.port;
            // 2. Grant.
            if let Err(d) = self.policy.check(pack_id, &trail.domain, target.port) {
                self.audit_tampered(pack_id, d.tampered);
                return Err(Failure::new(
                    "access_denied",
                    format!("Network access denied: {}", d.reason),
                    d.reason,
                ));
            }
            // 3. Address: resolve once, check every address.
            let addrs = self.checked_addresses(&target).await?;
            // The hop, to a checked address.
            let response = self
                .send(&target, &addrs, &url, method, &headers, &body)
                .await?;
            // 4. Limits: redirects.
            let status = response.status().as_u16();
            trail.status = status;
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if matches!(status, 301 | 302 | 303 | 307 | 308) && method.follows_redirects() {
                if let Some(location) = location {
                    if trail.hops >= MAX_REDIRECTS {
                        return Err(Failure::new(
                            "too_many_redirects",
                            "too_many_redirects",
                            format!("more than {MAX_REDIRECTS} redirects"),
                        ));
                    }
                    let next = url.join(&location).map_err(|_| {
                        Failure::new(
                            "upstream_error",
                            "the upstream sent an invalid redirect",
                            "invalid Location header",
                        )
                    })?;
                    if next.origin() != url.origin() {
                        headers.retain(|(k, _)| {
                            !["authorization", "cookie", "proxy-authorization"]
                                .iter()
                                .any(|h| k.eq_ignore_ascii_case(h))
                        });
                    }
                    if status == 303 && method != Method::Head {
                        method = Method::Get;
                    }
                    body = Bytes::new();
                    url = next;
                    trail.hops += 1;
                    continue;
                }
            }
            return self.read_response(response, &url, trail, hold).await;
        }
    }

    async fn checked_addresses(&self, target: &Target) -> Result<Vec<SocketAddr>, Failure> {
        let ips = match &target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => (self.resolver)(name.clone(), target.port)
                .await
                .map_err(|_| {
                    Failure::new(
                        "dns_error",
                        "could not resolve the host",
                        format!("{name} did not resolve"),
                    )
                })?,
        };
        if ips.is_empty() {
            return Err(Failure::new(
                "dns_error",
                "could not resolve the host",
                "no addresses",
            ));
        }
        if let Some((ip, why)) = net::first_blocked(&ips, &self.allow) {
            let explanation = net::blocked_explanation(&target.host.grant_name(), ip, why);
            self.warn_blocked(&explanation);
            return Err(Failure::new("security_blocked", BLOCKED, explanation));
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, target.port))
            .collect())
    }

    async fn send(
        &self,
        target: &Target,
        addrs: &[SocketAddr],
        url: &url::Url,
        method: Method,
        headers: &[(String, String)],
        body: &Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let mut builder = hyper::Request::builder()
            .method(method.as_str())
            .uri(&url[url::Position::BeforePath..url::Position::AfterQuery])
            .header(
                hyper::header::HOST,
                &url[url::Position::BeforeHost..url::Position::AfterPort],
            );
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder.body(Full::new(body.clone())).map_err(|e| {
            Failure::new(
                "validation",
                "Network access denied: a header is not valid HTTP",
                e.to_string(),
            )
        })?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(tcp) = tcp else {
            return Err(Failure::new(
                "connection_error",
                "could not connect to the host",
                format!(
                    "connect failed ({})",
                    last.map(|e| e.kind().to_string()).unwrap_or_default()
                ),
            ));
        };
        let _ = tcp.set_nodelay(true);
        if !target.https {
            return exchange(tcp, request).await;
        }
        let name = match &target.host {
            Host::Name(n) => ServerName::try_from(n.clone()).map_err(|_| {
                Failure::new(
                    "validation",
                    "Network access denied: bad host name",
                    "bad name",
                )
            })?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let tls = self.tls.connect(name, tcp).await.map_err(|e| {
            Failure::new(
                "tls_error",
                "the TLS handshake with the host failed",
                format!("TLS: {e}"),
            )
        })?;
        exchange(tls, request).await
    }

    async fn read_response(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
        url: &url::Url,
        trail: &mut Trail,
        hold: &mut Hold,
    ) -> Result<ProxyResponse, Failure> {
        let too_large = || {
            Failure::new(
                "response_too_large",
                "response_too_large",
                format!("the response is larger than {} bytes", self.max_response),
            )
        };
        let declared = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_response as u64) {
            return Err(too_large());
        }
        let status = response.status().as_u16();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in response.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            headers
                .entry(k.as_str().to_string())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        // The proxy owns this marker: an upstream cannot make a text body look like base64.
        headers.remove(egress::BODY_ENCODING_HEADER);
        let mut incoming = response.into_body();
        let mut data = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                Failure::new(
                    "upstream_error",
                    "the upstream connection failed",
                    e.to_string(),
                )
            })?;
            if let Ok(chunk) = frame.into_data() {
                if data.len() + chunk.len() > self.max_response {
                    trail.bytes = (data.len() + chunk.len()) as u64;
                    return Err(too_large());
                }
                hold.charge(chunk.len()).map_err(|e| {
                    Failure::new(
                        "busy",
                        "the kernel's egress buffers are full; retry later",
                        e.0,
                    )
                })?;
                data.extend_from_slice(&chunk);
            }
        }
        trail.bytes = data.len() as u64;
        let mut out = ProxyResponse {
            success: true,
            status_code: status,
            headers,
            bytes_read: data.len() as u64,
            final_url: url.to_string(),
            ..ProxyResponse::default()
        };
        out.set_body(data);
        Ok(out)
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange<IO>(
    io: IO,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, Failure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upstream = |e: hyper::Error| {
        Failure::new(
            "upstream_error",
            "the upstream connection failed",
            e.to_string(),
        )
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(upstream)?;
    // The connection task ends with the response body (or when the request is dropped).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(request).await.map_err(upstream)
}

#[cfg(test)]
mod tests;
