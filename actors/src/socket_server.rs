//! The one mechanism behind every pack socket that speaks the kernel's framing to pack code (the
//! egress socket, the capability socket): a [`PackListener`] actor per pack and socket accepts,
//! a [`PackConnection`] actor per connection reads frames and hands each to its
//! [`SocketService`] as a typed [`HandleFrame`] message, and writes the answer back.
//!
//! Every byte from the socket is hostile:
//! * a connection flood — at most `max_connections` per pack and socket; the next one is told
//!   `busy` and closed at once;
//! * a slow or silent client pinning a task — each frame (and each idle wait between frames) has
//!   a deadline, and so has writing the reply to a client that does not read;
//! * an oversized, empty, truncated or non-JSON frame — answered `protocol_error` (when the peer
//!   still listens) and the connection closed, without reading a declared oversized body;
//! * a process of another pack connecting to this pack's socket path — the service's
//!   [`SocketService::admit`] checks the peer's credentials (`SO_PEERCRED`) before any frame is
//!   read.

use crate::frame::ReadError;
use crate::sockets::{bind_pack_socket, BoundSocket, SocketAccess};
use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::stream;
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::unix::{OwnedWriteHalf, UCred};
use tokio::net::UnixStream;
use tracing::Instrument;

/// What a socket does with frames: the egress proxy, the capability broker.
pub trait SocketService: Clone + Unpin + Send + 'static {
    /// A reply, and whatever it holds until it is written (memory charged to the pack).
    type Answer: Send + 'static;

    /// `egress` or `capability` (logs and spans).
    fn kind(&self) -> &'static str;
    /// The socket's file name in the pack's socket directory.
    fn socket_name(&self) -> &'static str;
    /// The largest request frame.
    fn max_frame(&self) -> usize;
    /// Whether the peer may talk on this pack's socket at all; the reason is logged.
    fn admit(&self, _pack_id: &str, _peer: Option<UCred>) -> Result<(), String> {
        Ok(())
    }
    /// The answer to a frame that could not be read (`protocol_error`) or to a refused peer.
    fn refuse(&self, pack_id: &str, error_type: &'static str, reason: &str) -> Self::Answer;
    /// Handles one frame.
    fn handle(&self, pack_id: &str, frame: Vec<u8>) -> BoxFuture<'static, Self::Answer>;
    /// The bytes of the answer's frame (borrowed when the answer holds them already, so a
    /// frame carrying a secret is never copied).
    fn encode(answer: &Self::Answer) -> io::Result<std::borrow::Cow<'_, [u8]>>;
    /// The connection closes after this answer (a protocol error).
    fn fatal(answer: &Self::Answer) -> bool;
    /// Bytes the pack's answers hold now (for the snapshot).
    fn buffered(&self) -> usize {
        0
    }
}

/// One request frame, from a connection to its own actor.
pub struct HandleFrame<S: SocketService> {
    pub frame: Vec<u8>,
    _service: std::marker::PhantomData<S>,
}

impl<S: SocketService> Message for HandleFrame<S> {
    type Result = S::Answer;
}

/// Stops the listener and removes its socket file.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopListener;

/// The listener's state and counters, for `GET /api/diagnostics`.
#[derive(Message)]
#[rtype(result = "SocketSnapshot")]
pub struct GetSocketSnapshot;

/// What [`GetSocketSnapshot`] answers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, serde::Serialize)]
pub struct SocketSnapshot {
    pub pack_id: String,
    /// The socket is bound (when not, the kernel log says why).
    pub bound: bool,
    pub active_connections: usize,
    pub max_connections: usize,
    pub accepted: u64,
    /// Connections told `busy` because every slot was taken.
    pub refused_busy: u64,
    /// Connections refused because the peer is not one of the pack's processes.
    pub refused_peer: u64,
    /// Bytes the pack's answers hold now (egress: responses not yet written).
    pub buffered_bytes: usize,
}

/// A connection ended (its slot is free again).
#[derive(Message)]
#[rtype(result = "()")]
struct ConnectionClosed;

/// Connection limits of a pack socket.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections one pack may hold on the socket; more are refused at once.
    pub max_connections: usize,
    /// How long a connection may take to deliver a whole frame (and to take its reply) before it
    /// is closed; an idle connection is closed after the same time.
    pub read_timeout: Duration,
}

/// A pack's socket (one per approved pack and service).
pub struct PackListener<S: SocketService> {
    pack_id: String,
    dir: PathBuf,
    access: SocketAccess,
    service: S,
    limits: ConnectionLimits,
    active: usize,
    accepted: u64,
    refused_busy: u64,
    refused_peer: u64,
    /// The socket file it bound: on stop only that file is removed, never a successor's.
    bound: Option<BoundSocket>,
}

impl<S: SocketService> PackListener<S> {
    pub fn new(
        pack_id: String,
        dir: PathBuf,
        access: SocketAccess,
        service: S,
        limits: ConnectionLimits,
    ) -> Self {
        PackListener {
            pack_id,
            dir,
            access,
            service,
            limits,
            active: 0,
            accepted: 0,
            refused_busy: 0,
            refused_peer: 0,
            bound: None,
        }
    }

    /// Writes `answer` to a connection that gets nothing else, then closes it.
    fn answer_and_close(&self, stream: UnixStream, answer: S::Answer, ctx: &mut Context<Self>) {
        let limit = self.limits.read_timeout;
        ctx.spawn(
            async move {
                let (_, mut wr) = stream.into_split();
                let _ = tokio::time::timeout(limit, write_answer::<S>(&mut wr, &answer)).await;
            }
            .into_actor(self),
        );
    }
}

impl<S: SocketService> Actor for PackListener<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        match bind_pack_socket(&self.dir, self.service.socket_name(), self.access) {
            Ok((listener, bound)) => {
                self.bound = Some(bound);
                let accepts = stream::unfold(listener, |l| async move {
                    let next = l.accept().await.map(|(s, _)| s);
                    Some((next, l))
                });
                ctx.add_stream(accepts);
            }
            // Kept alive without a socket (the pack's calls answer "unavailable"), so the
            // Registry's supervision does not retry a bind that cannot succeed every second.
            Err(why) => {
                tracing::error!(pack_id = %self.pack_id, kind = self.service.kind(), "pack socket unavailable: {why}");
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(bound) = &self.bound {
            bound.remove();
        }
    }
}

impl<S: SocketService> StreamHandler<io::Result<UnixStream>> for PackListener<S> {
    fn handle(&mut self, item: io::Result<UnixStream>, ctx: &mut Self::Context) {
        let stream = match item {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(pack_id = %self.pack_id, kind = self.service.kind(), error = %e, "accept failed");
                return;
            }
        };
        if let Err(why) = self.service.admit(&self.pack_id, stream.peer_cred().ok()) {
            self.refused_peer += 1;
            // The reason (which pids are whose) is the log's; the peer learns only the refusal.
            tracing::warn!(pack_id = %self.pack_id, kind = self.service.kind(), "connection refused: {why}");
            let answer = self.service.refuse(
                &self.pack_id,
                "peer_refused",
                "this socket belongs to another pack; a pack uses only its own socket",
            );
            self.answer_and_close(stream, answer, ctx);
            return;
        }
        if self.active >= self.limits.max_connections {
            self.refused_busy += 1;
            let why = format!(
                "too many open {} connections for this pack (at most {}); retry shortly",
                self.service.kind(),
                self.limits.max_connections
            );
            let answer = self.service.refuse(&self.pack_id, "busy", &why);
            self.answer_and_close(stream, answer, ctx);
            return;
        }
        self.active += 1;
        self.accepted += 1;
        PackConnection {
            pack_id: self.pack_id.clone(),
            service: self.service.clone(),
            read_timeout: self.limits.read_timeout,
            stream: Some(stream),
            listener: ctx.address(),
        }
        .start();
    }

    /// The accept stream never ends on its own; the listener lives until [`StopListener`].
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl<S: SocketService> Handler<ConnectionClosed> for PackListener<S> {
    type Result = ();
    fn handle(&mut self, _: ConnectionClosed, _: &mut Self::Context) {
        self.active = self.active.saturating_sub(1);
    }
}

impl<S: SocketService> Handler<GetSocketSnapshot> for PackListener<S> {
    type Result = MessageResult<GetSocketSnapshot>;
    fn handle(&mut self, _: GetSocketSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(SocketSnapshot {
            pack_id: self.pack_id.clone(),
            bound: self.bound.is_some(),
            active_connections: self.active,
            max_connections: self.limits.max_connections,
            accepted: self.accepted,
            refused_busy: self.refused_busy,
            refused_peer: self.refused_peer,
            buffered_bytes: self.service.buffered(),
        })
    }
}

impl<S: SocketService> Handler<StopListener> for PackListener<S> {
    type Result = ();
    fn handle(&mut self, _: StopListener, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Test only: makes the listener's handler panic (the actor dies, as on a bug).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

#[cfg(test)]
impl<S: SocketService> Handler<InjectPanic> for PackListener<S> {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _: &mut Self::Context) {
        panic!("injected panic in a pack listener of {}", self.pack_id);
    }
}

/// One connection on a pack's socket.
pub struct PackConnection<S: SocketService> {
    pack_id: String,
    service: S,
    read_timeout: Duration,
    stream: Option<UnixStream>,
    listener: Addr<PackListener<S>>,
}

/// Encodes and writes one answer.
async fn write_answer<S: SocketService>(
    wr: &mut OwnedWriteHalf,
    answer: &S::Answer,
) -> io::Result<()> {
    let frame = S::encode(answer)?;
    crate::frame::write(wr, &frame).await
}

impl<S: SocketService> Actor for PackConnection<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(stream) = self.stream.take() else {
            ctx.stop();
            return;
        };
        let (addr, service, pack, limit) = (
            ctx.address(),
            self.service.clone(),
            self.pack_id.clone(),
            self.read_timeout,
        );
        let serve = async move {
            let (mut rd, mut wr) = stream.into_split();
            let max = service.max_frame();
            loop {
                let next = crate::frame::read(&mut rd, max);
                let answer = match tokio::time::timeout(limit, next).await {
                    // Idle or too slow to deliver a frame: close.
                    Err(_) => break,
                    Ok(Err(ReadError::Closed)) => break,
                    Ok(Err(ReadError::Truncated)) => {
                        service.refuse(&pack, "protocol_error", "the frame was truncated")
                    }
                    Ok(Err(ReadError::Empty)) => {
                        service.refuse(&pack, "protocol_error", "the frame is empty")
                    }
                    Ok(Err(ReadError::TooLarge(n))) => service.refuse(
                        &pack,
                        "protocol_error",
                        &format!("the request frame has {n} bytes; at most {max} are allowed"),
                    ),
                    Ok(Ok(frame)) => match addr
                        .send(HandleFrame::<S> {
                            frame,
                            _service: std::marker::PhantomData,
                        })
                        .await
                    {
                        Ok(answer) => answer,
                        Err(_) => break,
                    },
                };
                let fatal = S::fatal(&answer);
                let wrote = tokio::time::timeout(limit, write_answer::<S>(&mut wr, &answer)).await;
                // What the answer holds (memory) is released here, once its frame is written.
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

impl<S: SocketService> Handler<HandleFrame<S>> for PackConnection<S> {
    type Result = ResponseFuture<S::Answer>;

    fn handle(&mut self, msg: HandleFrame<S>, _: &mut Self::Context) -> Self::Result {
        let span = tracing::debug_span!("socket.frame", kind = self.service.kind(), pack_id = %self.pack_id, bytes = msg.frame.len());
        Box::pin(
            self.service
                .handle(&self.pack_id, msg.frame)
                .instrument(span),
        )
    }
}
