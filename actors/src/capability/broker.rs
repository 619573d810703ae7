//! `CapabilityBroker`: one per approved pack, behind its capability socket. Each frame from the
//! socket's connections arrives as a typed [`Call`]; the broker runs the check order of §7 —
//! request shape → rate limit → handler exists → trust → grant → execute → audit — and answers
//! with the encoded reply frame.
//!
//! Attacks stopped here:
//! * acting as another principal — the principal is the broker's pack, fixed when the socket was
//!   bound; nothing in the frame is read for it;
//! * a pack modified while its code runs keeping its doors — the grant step asks for an approved
//!   pack on every call (a change is recorded within a second by the pack watcher);
//! * probing secrets — every `secrets.get` failure (no grant, key not allowed, missing, deleted,
//!   rate-limited, malformed) is one identical answer, and the call is rate-limited per pack;
//! * secret values in the audit — args are summarised (names and sizes, never a value), and a
//!   reply carrying a secret is zeroed once written.

use super::builtins::{self, BuiltinOutcome};
use super::grants::{tampered_entry, GrantCheck};
use super::handler::Execute;
use super::peers::PeerRule;
use super::rate::RateWindow;
use super::trust::Lookup;
use super::{Capabilities, CapabilitySettings, SOCKET_NAME};
use crate::audit::{AuditEntry, AuditWriter, Category, Record};
use crate::socket_server::{ConnectionLimits, PackListener, SocketService};
use crate::sockets::SocketAccess;
use crate::view::{KernelView, PackState};
use actix::prelude::*;
use futures_util::future::BoxFuture;
use rumi_domain::capability::{
    parse_request, CapabilityRequest, CapabilityResponse, MAX_REQUEST_FRAME,
};
use serde_json::{json, Map, Value};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Built-in calls of one pack that run on blocking threads at once (the rest wait their turn).
pub const BLOCKING_PER_PACK: usize = 2;

/// Refusals a pack's broker audits one by one each minute; the rest are counted.
pub const DENIALS_AUDITED_PER_MINUTE: u32 = 600;

/// One request frame of the pack's socket.
#[derive(Message)]
#[rtype(result = "CapAnswer")]
pub struct Call {
    pub frame: Vec<u8>,
}

/// The broker's counters.
#[derive(Message)]
#[rtype(result = "BrokerSnapshot")]
pub struct GetBrokerSnapshot;

/// What [`GetBrokerSnapshot`] answers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerSnapshot {
    pub pack_id: String,
    /// Calls received (every frame, well-formed or not).
    pub calls: u64,
    /// Calls refused by a check (shape, rate limit, handler, trust, grant).
    pub denied: u64,
}

/// An encoded reply frame; zeroed when dropped (it may carry a secret's value).
pub struct CapAnswer {
    frame: Vec<u8>,
    fatal: bool,
}

impl Drop for CapAnswer {
    fn drop(&mut self) {
        // Volatile writes, so the zeroing of a buffer about to be freed is not optimised away.
        for b in self.frame.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into the buffer.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl CapAnswer {
    fn of(response: &CapabilityResponse) -> CapAnswer {
        let frame = crate::frame::encode(response).unwrap_or_else(|_| {
            crate::frame::encode(&CapabilityResponse::failure(
                "internal_error",
                "the reply could not be encoded",
            ))
            .unwrap_or_default()
        });
        CapAnswer {
            frame,
            fatal: response.error_type.as_deref() == Some("protocol_error"),
        }
    }
}

/// A pack's capability broker (see the module docs).
pub struct CapabilityBroker {
    pack_id: String,
    caps: Arc<Capabilities>,
    view: Arc<KernelView>,
    audit: Addr<AuditWriter>,
    secret_rate: RateWindow,
    secret_limit: u32,
    /// This pack's share of the blocking threads (see [`BLOCKING_PER_PACK`]).
    blocking: Arc<tokio::sync::Semaphore>,
    /// Refusals audited one by one (then counted).
    denial_audits: RateWindow,
    unaudited_denials: u64,
    /// When a tampered grant was last reported for this pack (one `security` entry a minute).
    tamper_reported: Option<Instant>,
    calls: u64,
    denied: u64,
}

impl CapabilityBroker {
    pub fn new(
        pack_id: String,
        caps: Arc<Capabilities>,
        view: Arc<KernelView>,
        audit: Addr<AuditWriter>,
        settings: &CapabilitySettings,
    ) -> Self {
        CapabilityBroker {
            pack_id,
            caps,
            view,
            audit,
            secret_rate: RateWindow::per_minute(settings.secret_get_rate_limit),
            secret_limit: settings.secret_get_rate_limit,
            blocking: Arc::new(tokio::sync::Semaphore::new(BLOCKING_PER_PACK)),
            denial_audits: RateWindow::per_minute(DENIALS_AUDITED_PER_MINUTE),
            unaudited_denials: 0,
            tamper_reported: None,
            calls: 0,
            denied: 0,
        }
    }

    /// A refusal of the checks: audited, counted, answered `Permission denied`.
    fn deny(
        &mut self,
        req: &CapabilityRequest,
        error_type: &str,
        why: &str,
        started: Instant,
    ) -> CapAnswer {
        self.denied += 1;
        self.audit_denial(Some(req), error_type, why, started);
        if req.permission_id == "secrets.get" {
            return CapAnswer::of(&CapabilityResponse::secret_denied());
        }
        let mut r = CapabilityResponse::failure(error_type, "Permission denied");
        r.latency_ms = ms(started);
        CapAnswer::of(&r)
    }

    /// Audits a refusal, at most [`DENIALS_AUDITED_PER_MINUTE`] a minute: past that the refusals
    /// are counted and the count is written once a minute. The attack: a pack with no grant
    /// calling as fast as it can to fill the disk with audit lines (9 000 a second from one
    /// connection, 22 GB an hour, before this limit).
    fn audit_denial(
        &mut self,
        req: Option<&CapabilityRequest>,
        error_type: &str,
        why: &str,
        started: Instant,
    ) {
        if !self.denial_audits.admit(started) {
            self.unaudited_denials += 1;
            return;
        }
        let mut e = AuditEntry::new(Category::Permission, "capability_call", false)
            .pack(&self.pack_id)
            .error(why, Some(error_type));
        if let Some(req) = req {
            e = e
                .permission(&self.pack_id, &req.permission_id)
                .details(json!({
                    "args": summarise_args(&req.permission_id, &req.args),
                    "request_id": req.request_id,
                    "latency_ms": ms(started),
                }));
        }
        self.audit.do_send(Record(e));
    }

    /// Writes how many refusals went unaudited since the last time (once a minute).
    fn flush_unaudited(&mut self) {
        if self.unaudited_denials == 0 {
            return;
        }
        let n = std::mem::take(&mut self.unaudited_denials);
        self.audit.do_send(Record(
            AuditEntry::new(
                Category::Permission,
                "capability_calls_denied_unaudited",
                false,
            )
            .pack(&self.pack_id)
            .details(json!({"count": n, "limit_per_minute": DENIALS_AUDITED_PER_MINUTE})),
        ));
    }

    fn report_tampered(&mut self, principal: &str) {
        let now = Instant::now();
        if self
            .tamper_reported
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.tamper_reported = Some(now);
        tracing::error!(principal_id = %principal, "a capability grant file failed its signature check; the calls of {} are denied", self.pack_id);
        self.audit.do_send(Record(tampered_entry(principal)));
    }

    /// The checks and the call: a refusal is answered at once, a call that runs asynchronously.
    fn call(&mut self, frame: &[u8]) -> Result<CapAnswer, BoxFuture<'static, CapAnswer>> {
        let started = Instant::now();
        self.calls += 1;
        // 1. The request's shape.
        let req = match parse_request(frame) {
            Ok(r) => r,
            Err(refusal) => {
                self.denied += 1;
                self.audit_denial(None, refusal.error_type, &refusal.reason, started);
                // A malformed `secrets.get` is one more failure of it: the one identical answer.
                if names_secrets_get(frame) {
                    return Ok(CapAnswer::of(&CapabilityResponse::secret_denied()));
                }
                let mut r = CapabilityResponse::failure(refusal.error_type, refusal.reason);
                r.latency_ms = ms(started);
                return Ok(CapAnswer::of(&r));
            }
        };
        let secret = req.permission_id == "secrets.get";
        // 2. The rate limit.
        if secret && !self.secret_rate.admit(started) {
            let why = format!(
                "secrets.get is limited to {} calls a minute per pack (RUMI_SECRET_GET_RATE_LIMIT)",
                self.secret_limit
            );
            return Ok(self.deny(&req, "rate_limited", &why, started));
        }
        // 3 and 4. The handler exists, and it is trusted (built-ins are by construction).
        let handler = if builtins::is_builtin(&req.permission_id) {
            None
        } else {
            match self.caps.handlers.lookup(&req.permission_id) {
                Lookup::NotFound => {
                    let why = format!("no handler provides {:?}", req.permission_id);
                    return Ok(self.deny(&req, "handler_not_found", &why, started));
                }
                Lookup::Untrusted { handler_id, reason } => {
                    let why = format!("handler {handler_id:?} is not trusted: {reason}");
                    return Ok(self.deny(&req, "trust_denied", &why, started));
                }
                Lookup::Ready { handler_id, actor } => Some((handler_id, actor)),
            }
        };
        // 5. The grant: the pack approved now, and every level of the principal granted.
        if self.view.pack_state(&self.pack_id) != Some(PackState::Approved) {
            let why = "the pack is not approved now (its files changed, or it was rejected)";
            return Ok(self.deny(&req, "grant_denied", why, started));
        }
        let config = match self.caps.grants.check(&self.pack_id, &req.permission_id) {
            GrantCheck::Granted(config) => config,
            GrantCheck::Denied(why) => return Ok(self.deny(&req, "grant_denied", &why, started)),
            GrantCheck::Tampered { principal_id } => {
                self.report_tampered(&principal_id);
                let why = format!("the grant file of {principal_id:?} failed its signature check");
                return Ok(self.deny(&req, "grant_denied", &why, started));
            }
        };
        // 6. Execute, 7. audit.
        match handler {
            None => {
                // Off the pack's arbiter, which other packs' actors share: a durable write (fsync)
                // or the read of a 1 MiB value would stall their calls (a pack reading large
                // values cut another pack's calls from 3 775/s to 28/s when reads ran inline).
                let (caps, pack, audit) = (
                    Arc::clone(&self.caps),
                    self.pack_id.clone(),
                    self.audit.clone(),
                );
                // The reply is encoded there too: a 1 MiB value is as much work to encode as to
                // read.
                let slots = Arc::clone(&self.blocking);
                Err(Box::pin(async move {
                    // At most BLOCKING_PER_PACK of this pack's calls hold a blocking thread at
                    // once: one pack's large reads cannot take every CPU from the others.
                    let _slot = slots.acquire_owned().await;
                    let done = tokio::task::spawn_blocking(move || {
                        let outcome =
                            builtins::execute(&caps, &pack, &req.permission_id, &req.args, &config);
                        let response = match outcome {
                            BuiltinOutcome::Output(v) => CapabilityResponse::output(v),
                            BuiltinOutcome::SecretDenied => CapabilityResponse::secret_denied(),
                        };
                        finish_async(&audit, &pack, &req, response, started)
                    })
                    .await;
                    done.unwrap_or_else(|_| {
                        CapAnswer::of(&CapabilityResponse::failure(
                            "internal_error",
                            "the call failed inside the kernel; the kernel log says why",
                        ))
                    })
                }))
            }
            Some((handler_id, actor)) => {
                let (pack, audit) = (self.pack_id.clone(), self.audit.clone());
                let timeout = Duration::from_secs_f64(req.timeout_seconds);
                let context = json!({
                    "principal_id": pack,
                    "permission_id": req.permission_id,
                    "handler_id": handler_id,
                    "grant_config": config,
                    "request_id": req.request_id,
                    "ts": crate::clock::now_rfc3339(),
                });
                let redactor = Arc::clone(&self.caps.redactor);
                Err(Box::pin(async move {
                    let sent = actor
                        .send(Execute {
                            context,
                            args: req.args.clone(),
                            timeout,
                        })
                        // The handler enforces the call's deadline; this bounds a stuck mailbox.
                        .timeout(timeout + Duration::from_secs(5))
                        .await;
                    let response = match sent {
                        Ok(Ok(output)) => CapabilityResponse::output(output),
                        // A handler is trusted code, but its error text may quote a secret it
                        // was handed or read: the caller gets it scrubbed, like the audit.
                        Ok(Err(mut f)) => {
                            redactor.scrub(&mut f.error);
                            CapabilityResponse::failure(&f.error_type, f.error)
                        }
                        Err(MailboxError::Timeout) => CapabilityResponse::failure(
                            "timeout",
                            "the handler did not answer in time",
                        ),
                        Err(MailboxError::Closed) => CapabilityResponse::failure(
                            "handler_crashed",
                            "the handler stopped; retry the call",
                        ),
                    };
                    finish_async(&audit, &pack, &req, response, started)
                }))
            }
        }
    }
}

/// Whether a frame that is not a well-formed request names `secrets.get` all the same.
fn names_secrets_get(frame: &[u8]) -> bool {
    serde_json::from_slice::<Value>(frame)
        .ok()
        .and_then(|v| v.get("permission_id").cloned())
        .is_some_and(|p| p == "secrets.get")
}

/// Audits and encodes an answer computed off the broker's thread.
fn finish_async(
    audit: &Addr<AuditWriter>,
    pack: &str,
    req: &CapabilityRequest,
    mut response: CapabilityResponse,
    started: Instant,
) -> CapAnswer {
    response.latency_ms = ms(started);
    let mut e = AuditEntry::new(Category::Permission, "capability_call", response.success)
        .pack(pack)
        .permission(pack, &req.permission_id)
        .details(json!({
            "args": summarise_args(&req.permission_id, &req.args),
            "request_id": req.request_id,
            "latency_ms": response.latency_ms,
        }));
    if !response.success {
        e = e.error(
            response.error.as_deref().unwrap_or_default(),
            response.error_type.as_deref(),
        );
    }
    audit.do_send(Record(e));
    CapAnswer::of(&response)
}

fn ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// Args as the audit shows them: for the built-ins, the names a call is about (store ids, keys,
/// prefixes: clipped); for everything else only each arg's JSON type and size — never a value,
/// which may be a secret the pack stores, or, for a third-party handler, an API key passed as
/// `key`. At most 16 args, names clipped, so a line stays small whatever the call.
pub fn summarise_args(permission_id: &str, args: &Map<String, Value>) -> Value {
    const NAMES: &[&str] = &["store_id", "key", "prefix"];
    let named = builtins::is_builtin(permission_id);
    let mut out = Map::new();
    for (k, v) in args.iter().take(16) {
        let k = rumi_domain::engine::clip(k.clone(), 32);
        let shown = match v {
            Value::String(s) if named && NAMES.contains(&k.as_str()) => {
                Value::String(rumi_domain::engine::clip(s.clone(), 64))
            }
            Value::String(s) => json!({"type": "string", "len": s.len()}),
            Value::Array(a) => json!({"type": "array", "len": a.len()}),
            Value::Object(o) => json!({"type": "object", "len": o.len()}),
            Value::Number(_) => json!({"type": "number"}),
            Value::Bool(_) => json!({"type": "bool"}),
            Value::Null => Value::Null,
        };
        out.insert(k, shown);
    }
    Value::Object(out)
}

impl Actor for CapabilityBroker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(Duration::from_secs(60), |act, _| act.flush_unaudited());
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.flush_unaudited();
    }
}

/// Runs one call (see the module docs).
impl Handler<Call> for CapabilityBroker {
    type Result = ResponseFuture<CapAnswer>;

    fn handle(&mut self, msg: Call, _: &mut Self::Context) -> Self::Result {
        match self.call(&msg.frame) {
            Ok(answer) => Box::pin(std::future::ready(answer)),
            Err(later) => later,
        }
    }
}

/// Answers the counters.
impl Handler<GetBrokerSnapshot> for CapabilityBroker {
    type Result = MessageResult<GetBrokerSnapshot>;
    fn handle(&mut self, _: GetBrokerSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(BrokerSnapshot {
            pack_id: self.pack_id.clone(),
            calls: self.calls,
            denied: self.denied,
        })
    }
}

/// The capability protocol on a pack's socket: peers checked at connect, each frame a [`Call`] to
/// the pack's broker.
#[derive(Clone)]
pub struct CapabilityService {
    broker: Addr<CapabilityBroker>,
    peers: PeerRule,
}

impl SocketService for CapabilityService {
    type Answer = CapAnswer;

    fn kind(&self) -> &'static str {
        "capability"
    }
    fn socket_name(&self) -> &'static str {
        SOCKET_NAME
    }
    fn max_frame(&self) -> usize {
        MAX_REQUEST_FRAME
    }
    fn admit(&self, pack_id: &str, peer: Option<tokio::net::unix::UCred>) -> Result<(), String> {
        self.peers.admit(pack_id, peer)
    }
    fn refuse(&self, _pack_id: &str, error_type: &'static str, reason: &str) -> CapAnswer {
        CapAnswer::of(&CapabilityResponse::failure(error_type, reason))
    }
    fn handle(&self, _pack_id: &str, frame: Vec<u8>) -> BoxFuture<'static, CapAnswer> {
        let broker = self.broker.clone();
        Box::pin(async move {
            match broker.send(Call { frame }).await {
                Ok(answer) => answer,
                Err(_) => CapAnswer::of(&CapabilityResponse::failure(
                    "capability_unavailable",
                    "the pack's capability broker stopped; retry the call",
                )),
            }
        })
    }
    fn encode(answer: &CapAnswer) -> io::Result<std::borrow::Cow<'_, [u8]>> {
        Ok(std::borrow::Cow::Borrowed(&answer.frame))
    }
    fn fatal(answer: &CapAnswer) -> bool {
        answer.fatal
    }
}

/// A pack's capability socket.
pub type CapabilityListener = PackListener<CapabilityService>;

/// A pack's capability listener, not started, in front of its (started) broker.
pub fn capability_listener(
    pack_id: String,
    dir: PathBuf,
    access: SocketAccess,
    broker: Addr<CapabilityBroker>,
    peers: PeerRule,
    settings: &CapabilitySettings,
) -> CapabilityListener {
    let limits = ConnectionLimits {
        max_connections: settings.max_connections,
        read_timeout: settings.read_timeout,
    };
    PackListener::new(
        pack_id,
        dir,
        access,
        CapabilityService { broker, peers },
        limits,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_keys_and_never_hold_values() {
        let args = json!({"store_id": "s", "key": "a/b", "value": {"password": "hunter2"}, "token": "hunter2"});
        let s = summarise_args("store.get", args.as_object().unwrap()).to_string();
        assert!(s.contains("a/b") && s.contains("\"s\""));
        assert!(!s.contains("hunter2"), "{s}");
        let third = json!({"key": "sk-live-hunter2"});
        let s = summarise_args("mail.send", third.as_object().unwrap()).to_string();
        assert!(
            !s.contains("hunter2"),
            "a handler's `key` may be a credential: {s}"
        );
    }
}
