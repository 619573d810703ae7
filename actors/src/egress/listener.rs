//! The egress socket's service: the pack socket mechanism of [`crate::socket_server`] (one
//! [`EgressListener`] per approved pack, one connection actor per connection, bounded in number,
//! with read deadlines) speaking the egress protocol (request ≤ 1 MiB) to the [`Proxy`].

use super::budget::PackBudget;
use super::proxy::{Answer, Proxy, Reply};
use super::{EgressSettings, SOCKET_NAME};
use crate::socket_server::{ConnectionLimits, PackListener, SocketService};
use crate::sockets::SocketAccess;
use futures_util::future::BoxFuture;
use rumi_domain::egress::{parse_request, MAX_REQUEST_FRAME};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::socket_server::{
    GetSocketSnapshot as GetEgressSnapshot, SocketSnapshot as EgressSnapshot, StopListener,
};

/// A pack's egress socket.
pub type EgressListener = PackListener<EgressService>;

/// The egress protocol on a pack's socket: each frame is one request for the [`Proxy`], whose
/// answer holds its response's memory (charged to the pack's [`PackBudget`]) until written.
#[derive(Clone)]
pub struct EgressService {
    proxy: Arc<Proxy>,
    budget: PackBudget,
}

impl SocketService for EgressService {
    type Answer = Answer;

    fn kind(&self) -> &'static str {
        "egress"
    }
    fn socket_name(&self) -> &'static str {
        SOCKET_NAME
    }
    fn max_frame(&self) -> usize {
        MAX_REQUEST_FRAME
    }
    fn refuse(&self, pack_id: &str, error_type: &'static str, reason: &str) -> Answer {
        self.proxy.refuse(pack_id, error_type, reason)
    }
    fn handle(&self, pack_id: &str, frame: Vec<u8>) -> BoxFuture<'static, Answer> {
        let (proxy, pack, budget) = (
            Arc::clone(&self.proxy),
            pack_id.to_string(),
            self.budget.clone(),
        );
        Box::pin(async move {
            match parse_request(&frame) {
                Ok(request) => proxy.handle(&pack, request, &budget).await,
                Err(refusal) => proxy.refuse(&pack, refusal.error_type, &refusal.reason),
            }
        })
    }
    fn encode(answer: &Answer) -> io::Result<std::borrow::Cow<'_, [u8]>> {
        crate::frame::encode(&answer.reply)
            .map(std::borrow::Cow::Owned)
            .map_err(io::Error::other)
    }
    fn fatal(answer: &Answer) -> bool {
        matches!(&answer.reply, Reply::Http(r) if r.error_type.as_deref() == Some("protocol_error"))
    }
    fn buffered(&self) -> usize {
        self.budget.in_use()
    }
}

/// A pack's egress listener, not started.
pub fn egress_listener(
    pack_id: String,
    dir: PathBuf,
    access: SocketAccess,
    proxy: Arc<Proxy>,
    settings: &EgressSettings,
) -> EgressListener {
    let service = EgressService {
        budget: proxy.budget().for_pack(),
        proxy,
    };
    let limits = ConnectionLimits {
        max_connections: settings.max_connections,
        read_timeout: settings.read_timeout,
    };
    PackListener::new(pack_id, dir, access, service, limits)
}
