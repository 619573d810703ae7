//! The actors on a pack's egress socket: [`EgressListener`] accepts, [`EgressConnection`] speaks
//! the framed protocol (4-byte big-endian length + UTF-8 JSON, request ≤ 1 MiB) and hands each
//! request to the [`Proxy`] as a typed [`HandleRequest`] message.
//!
//! Every byte from the socket is hostile:
//! * a connection flood — at most [`EgressSettings::max_connections`] per pack; the next one is
//!   told `busy` and closed at once;
//! * a slow or silent client pinning a task — each frame (and each idle wait between frames) has
//!   a deadline, and so has writing the reply to a client that does not read;
//! * an oversized, empty, truncated or non-JSON frame — answered `protocol_error` (when the peer
//!   still listens) and the connection closed, without reading a declared oversized body.

use super::budget::PackBudget;
use super::proxy::{Answer, Proxy, Reply};
use super::{EgressSettings, SOCKET_NAME};
use crate::frame::ReadError;
use crate::sockets::{bind_pack_socket, BoundSocket, SocketAccess};
use actix::prelude::*;
use futures_util::stream;
use rumi_domain::egress::{parse_request, ProxyResponse, MAX_REQUEST_FRAME};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tracing::Instrument;

/// One request frame, from a connection to its own actor (the pack is the connection's).
#[derive(Message)]
#[rtype(result = "Answer")]
pub struct HandleRequest {
    pub frame: Vec<u8>,
}

/// Stops the listener and removes its socket file.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopListener;

/// The listener's state and counters, for `GET /api/diagnostics`.
#[derive(Message)]
#[rtype(result = "EgressSnapshot")]
pub struct GetEgressSnapshot;

/// What [`GetEgressSnapshot`] answers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, serde::Serialize)]
pub struct EgressSnapshot {
    pub pack_id: String,
    /// The socket is bound (when not, the kernel log says why).
    pub bound: bool,
    pub active_connections: usize,
    pub max_connections: usize,
    pub accepted: u64,
    /// Connections told `busy` because every slot was taken.
    pub refused_busy: u64,
    /// Bytes charged to the pack's share of the response budget now.
    pub buffered_bytes: usize,
}

/// A connection ended (its slot is free again).
#[derive(Message)]
#[rtype(result = "()")]
struct ConnectionClosed;

/// A pack's egress socket (one per approved pack).
pub struct EgressListener {
    pack_id: String,
    dir: PathBuf,
    access: SocketAccess,
    proxy: Arc<Proxy>,
    settings: EgressSettings,
    /// This pack's share of the response memory.
    budget: PackBudget,
    active: usize,
    accepted: u64,
    refused_busy: u64,
    /// The socket file it bound: on stop only that file is removed, never a successor's.
    bound: Option<BoundSocket>,
}

impl EgressListener {
    pub fn new(
        pack_id: String,
        dir: PathBuf,
        access: SocketAccess,
        proxy: Arc<Proxy>,
        settings: EgressSettings,
    ) -> Self {
        EgressListener {
            pack_id,
            dir,
            access,
            budget: proxy.budget().for_pack(),
            proxy,
            settings,
            active: 0,
            accepted: 0,
            refused_busy: 0,
            bound: None,
        }
    }
}

impl Actor for EgressListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        match bind_pack_socket(&self.dir, SOCKET_NAME, self.access) {
            Ok((listener, bound)) => {
                self.bound = Some(bound);
                let accepts = stream::unfold(listener, |l| async move {
                    let next = l.accept().await.map(|(s, _)| s);
                    Some((next, l))
                });
                ctx.add_stream(accepts);
            }
            // Kept alive without a socket (the pack's requests answer `egress_unavailable`), so
            // the Registry's supervision does not retry a bind that cannot succeed every second.
            Err(why) => {
                tracing::error!(pack_id = %self.pack_id, "egress socket unavailable: {why}");
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(bound) = &self.bound {
            bound.remove();
        }
    }
}

impl StreamHandler<io::Result<UnixStream>> for EgressListener {
    fn handle(&mut self, item: io::Result<UnixStream>, ctx: &mut Self::Context) {
        let stream = match item {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(pack_id = %self.pack_id, error = %e, "egress accept failed");
                return;
            }
        };
        if self.active >= self.settings.max_connections {
            self.refused_busy += 1;
            let reply = Reply::Http(Box::new(ProxyResponse::failure(
                "busy",
                format!(
                    "too many open egress connections for this pack (at most {})",
                    self.settings.max_connections
                ),
            )));
            let limit = self.settings.read_timeout;
            ctx.spawn(
                async move {
                    let (_, mut wr) = stream.into_split();
                    let _ = tokio::time::timeout(limit, write_reply(&mut wr, &reply)).await;
                }
                .into_actor(self),
            );
            return;
        }
        self.active += 1;
        self.accepted += 1;
        let conn = EgressConnection {
            pack_id: self.pack_id.clone(),
            proxy: Arc::clone(&self.proxy),
            budget: self.budget.clone(),
            read_timeout: self.settings.read_timeout,
            stream: Some(stream),
            listener: ctx.address(),
        };
        conn.start();
    }

    /// The accept stream never ends on its own; the listener lives until [`StopListener`].
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<ConnectionClosed> for EgressListener {
    type Result = ();
    fn handle(&mut self, _: ConnectionClosed, _: &mut Self::Context) {
        self.active = self.active.saturating_sub(1);
    }
}

impl Handler<GetEgressSnapshot> for EgressListener {
    type Result = MessageResult<GetEgressSnapshot>;
    fn handle(&mut self, _: GetEgressSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(EgressSnapshot {
            pack_id: self.pack_id.clone(),
            bound: self.bound.is_some(),
            active_connections: self.active,
            max_connections: self.settings.max_connections,
            accepted: self.accepted,
            refused_busy: self.refused_busy,
            buffered_bytes: self.budget.in_use(),
        })
    }
}

/// Test only: makes the listener's handler panic (the actor dies, as on a bug).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

#[cfg(test)]
impl Handler<InjectPanic> for EgressListener {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _: &mut Self::Context) {
        panic!("injected panic in the egress listener of {}", self.pack_id);
    }
}

impl Handler<StopListener> for EgressListener {
    type Result = ();
    fn handle(&mut self, _: StopListener, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// One connection on a pack's egress socket.
pub struct EgressConnection {
    pack_id: String,
    proxy: Arc<Proxy>,
    budget: PackBudget,
    read_timeout: Duration,
    stream: Option<UnixStream>,
    listener: Addr<EgressListener>,
}

/// Encodes and writes one reply.
async fn write_reply(wr: &mut OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let frame = crate::frame::encode(reply).map_err(io::Error::other)?;
    crate::frame::write(wr, &frame).await
}

impl Actor for EgressConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(stream) = self.stream.take() else {
            ctx.stop();
            return;
        };
        let (addr, proxy, pack, limit) = (
            ctx.address(),
            Arc::clone(&self.proxy),
            self.pack_id.clone(),
            self.read_timeout,
        );
        let serve = async move {
            let (mut rd, mut wr) = stream.into_split();
            loop {
                let next = crate::frame::read(&mut rd, MAX_REQUEST_FRAME);
                let answer = match tokio::time::timeout(limit, next).await {
                    // Idle or too slow to deliver a frame: close.
                    Err(_) => break,
                    Ok(Err(ReadError::Closed)) => break,
                    Ok(Err(ReadError::Truncated)) => {
                        proxy.refuse(&pack, "protocol_error", "the frame was truncated")
                    }
                    Ok(Err(ReadError::Empty)) => {
                        proxy.refuse(&pack, "protocol_error", "the frame is empty")
                    }
                    Ok(Err(ReadError::TooLarge(n))) => proxy.refuse(
                        &pack,
                        "protocol_error",
                        &format!("the request frame has {n} bytes; at most {MAX_REQUEST_FRAME} are allowed"),
                    ),
                    Ok(Ok(frame)) => match addr.send(HandleRequest { frame }).await {
                        Ok(answer) => answer,
                        Err(_) => break,
                    },
                };
                let reply = &answer.reply;
                let fatal = matches!(reply, Reply::Http(r) if r.error_type.as_deref() == Some("protocol_error"));
                let wrote = tokio::time::timeout(limit, write_reply(&mut wr, reply)).await;
                // The response's memory is released here, once its frame is written (or not).
                drop(answer);
                if fatal || !matches!(wrote, Ok(Ok(()))) {
                    break;
                }
            }
        };
        ctx.spawn(serve.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.listener.do_send(ConnectionClosed);
    }
}

impl Handler<HandleRequest> for EgressConnection {
    type Result = ResponseFuture<Answer>;

    fn handle(&mut self, msg: HandleRequest, _: &mut Self::Context) -> Self::Result {
        let (proxy, pack, budget) = (
            Arc::clone(&self.proxy),
            self.pack_id.clone(),
            self.budget.clone(),
        );
        let span = tracing::debug_span!("egress.request", pack_id = %pack, bytes = msg.frame.len());
        Box::pin(
            async move {
                match parse_request(&msg.frame) {
                    Ok(request) => proxy.handle(&pack, request, &budget).await,
                    Err(refusal) => proxy.refuse(&pack, refusal.error_type, &refusal.reason),
                }
            }
            .instrument(span),
        )
    }
}
