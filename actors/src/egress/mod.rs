//! Network egress (contract §6): the only way out for pack code.
//!
//! * [`grants::NetworkPolicy`] — the packs' network grants: HMAC-signed files under
//!   `user_data/permissions/network/`, held in memory for the per-hop check; a file that fails
//!   its signature denies and is reported as a `security` audit entry.
//! * [`proxy::Proxy`] — one request from a pack: the checks of §6 on every hop (validation →
//!   grant → address → limits), the connection to the *checked* address (no second resolution;
//!   TLS still verifies the host name), bounded bodies and redirects, a `network` audit entry for
//!   every decision.
//! * [`budget::Budget`] — the memory responses may hold, per pack and in all, until written.
//! * [`listener::EgressListener`] (one per approved pack, on its socket
//!   `<sockets>/<pack>/egress.sock`) — the pack socket mechanism of [`crate::socket_server`]
//!   (shared with the capability socket) with the egress protocol as its service.
//!
//! The socket is the pack's identity: what a payload says about its owner is ignored.

pub mod budget;
pub mod grants;
pub mod listener;
pub mod proxy;

use rumi_domain::net::Cidr;
use std::path::PathBuf;
use std::time::Duration;

/// The socket's file name in a pack's socket directory (`/run/rumi/egress.sock` in containers).
pub const SOCKET_NAME: &str = "egress.sock";

/// Egress settings (contract §14).
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// `RUMI_EGRESS_ALLOW_CIDRS`: internal ranges the operator opened (the grant still applies).
    pub allow_cidrs: Vec<Cidr>,
    /// Open connections one pack may hold on its socket; more are refused at once.
    pub max_connections: usize,
    /// How long a connection may take to deliver a whole request frame (and to take its reply)
    /// before it is closed; an idle connection is closed after the same time.
    pub read_timeout: Duration,
    /// `RUMI_EGRESS_SOCKET_GID` when set explicitly (strict mode always uses the container group).
    pub socket_gid: Option<u32>,
    /// `RUMI_EGRESS_CA_FILE`: PEM certificates trusted besides the built-in web roots (an
    /// intranet CA).
    pub extra_ca_file: Option<PathBuf>,
    /// `RUMI_EGRESS_BUFFER_BYTES`: memory all packs' responses may hold together until their
    /// replies are written (see [`budget`]); `None` is [`default_buffer_bytes`].
    pub buffer_bytes: Option<usize>,
}

/// The default response budget: 256 MiB, or enough for every pack's share (a quarter of the
/// total) to hold one response of `max_response` bytes.
pub fn default_buffer_bytes(max_response: usize) -> usize {
    (256usize << 20).max(max_response.saturating_mul(budget::CHARGE_PER_BYTE * 4))
}

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            allow_cidrs: Vec::new(),
            max_connections: 64,
            read_timeout: Duration::from_secs(10),
            socket_gid: None,
            extra_ca_file: None,
            buffer_bytes: None,
        }
    }
}
