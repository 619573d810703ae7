//! The runtime's configuration: plain values the edge parses from the environment (§14) and
//! passes in at construction.

use crate::capability::CapabilitySettings;
use crate::docker::ContainerSettings;
use crate::egress::EgressSettings;
use crate::sockets::SocketAccess;
use std::path::PathBuf;
use std::time::Duration;

/// Where blocks run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    /// Docker containers (the default). Never falls back to host processes.
    Strict,
    /// Warm host Python workers, one per pack; results carry a warning.
    Permissive,
}

impl SecurityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::Strict => "strict",
            SecurityMode::Permissive => "permissive",
        }
    }
}

/// Configuration of the runtime crate.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub mode: SecurityMode,
    pub max_concurrent_flows: usize,
    pub flow_queue_limit: usize,
    /// Largest result returned in a response or accepted from a block.
    pub max_response_bytes: usize,
    /// Largest a run's context may grow (as JSON); at least `max_response_bytes`.
    pub max_context_bytes: usize,
    /// The Python interpreter for permissive workers (an absolute path).
    pub python: PathBuf,
    /// Warm workers per pack in permissive mode.
    pub workers_per_pack: usize,
    /// Permissive mode: the CPUs the kernel left, where a pack's overlapping calls run on spill
    /// workers (see `pack_container`); empty: no spill workers.
    pub spill_cpus: Vec<usize>,
    /// A spill worker that has taken no call for this long is stopped.
    pub spill_idle: Duration,
    /// Calls that may wait for a pack's worker before `busy` is answered.
    pub pack_queue_limit: usize,
    /// Run records kept.
    pub run_history: usize,
    /// How often the audit writer fsyncs buffered entries.
    pub audit_sync_interval: Duration,
    /// Pin pack arbiter threads (and so their workers and containers) to CPUs; see
    /// [`crate::affinity`].
    pub pack_cpu_pinning: bool,
    /// Host the pack sandboxes on the HTTP worker's arbiter, named after boot with
    /// [`crate::Kernel::host_sandboxes`] (see [`crate::registry::ContainerHost`]). The edge sets it
    /// when it serves HTTP on one worker with the kernel on one CPU.
    pub sandboxes_on_http_worker: bool,
    /// Pack containers (strict mode): image, limits, socket group.
    pub container: ContainerSettings,
    /// Start a pack's container when it is approved (and at boot) rather than at its first call.
    pub container_start_eager: bool,
    /// The egress proxy: opened ranges, connection limits, deadlines, socket group, extra CA.
    pub egress: EgressSettings,
    /// Capability sockets: rate limits, connection limits, socket directory, group and mode.
    pub capability: CapabilitySettings,
    /// `RUMI_PIP_FIND_LINKS`: a local directory of wheels; pip downloads only from it
    /// (`--no-index --find-links`).
    pub pip_find_links: Option<PathBuf>,
}

impl RuntimeConfig {
    /// Defaults for a given mode and interpreter.
    pub fn new(mode: SecurityMode, python: PathBuf) -> Self {
        RuntimeConfig {
            mode,
            max_concurrent_flows: 10,
            flow_queue_limit: 100,
            max_response_bytes: 4 * 1024 * 1024,
            max_context_bytes: 8 * 1024 * 1024,
            python,
            workers_per_pack: 1,
            spill_cpus: Vec::new(),
            spill_idle: Duration::from_secs(60),
            pack_queue_limit: 1000,
            run_history: 1000,
            audit_sync_interval: Duration::from_millis(200),
            pack_cpu_pinning: true,
            sandboxes_on_http_worker: false,
            container: ContainerSettings::new(crate::docker::image::default_tag()),
            container_start_eager: false,
            egress: EgressSettings::default(),
            capability: CapabilitySettings::default(),
            pip_find_links: None,
        }
    }

    /// Who may connect to a pack's sockets: in strict mode the container's group (so its user
    /// reaches them), in permissive mode the kernel's user and `RUMI_EGRESS_SOCKET_GID` if set.
    pub fn socket_access(&self) -> SocketAccess {
        let gid = match self.mode {
            SecurityMode::Strict => Some(self.container.socket_gid),
            SecurityMode::Permissive => self.egress.socket_gid,
        };
        SocketAccess {
            gid,
            mode: self.container.socket_mode,
        }
    }

    /// Who may connect to a pack's capability socket: as [`Self::socket_access`], with
    /// `RUMI_CAPABILITY_SOCKET_GID` / `_MODE` in place of the egress ones when set.
    pub fn capability_socket_access(&self) -> SocketAccess {
        let base = self.socket_access();
        SocketAccess {
            gid: match self.mode {
                SecurityMode::Strict => base.gid,
                SecurityMode::Permissive => self.capability.socket_gid.or(base.gid),
            },
            mode: self.capability.socket_mode.unwrap_or(base.mode),
        }
    }
}
