//! The Docker backend of strict mode (contract §5.3): one long-lived container per approved pack,
//! driven through bollard.
//!
//! * [`DockerEngine`] is the shared handle: the daemon connection (negotiated lazily, so a daemon
//!   that comes back later is found again), the container settings and this installation's
//!   instance label, which scopes every listing and clean-up so that two kernels on one daemon
//!   never touch each other's containers.
//! * [`sandbox::DockerSandbox`] is one running container with its channel: the kernel listens on
//!   `host.sock` in the pack's socket directory (mounted read-only at `/run/rumi`), the block host
//!   inside connects once, and every block call is one framed message on that connection — no
//!   `docker run` or `exec` per call.
//! * [`image`] builds the runtime image without a registry (debootstrap + import).
//!
//! Messages from the daemon can name host paths (mount sources); they go to the kernel's log, and
//! callers get a short description without them.

pub mod image;
pub mod sandbox;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Label on every container the kernel manages.
pub const LABEL_MANAGED: &str = "rumi.managed";
/// Label naming the pack a container belongs to.
pub const LABEL_PACK: &str = "rumi.pack_id";
/// Label naming the installation (a digest of its home) that owns the container.
pub const LABEL_INSTANCE: &str = "rumi.instance";
/// Label naming the kernel process (boot) that started the container: the start-up sweep removes
/// only earlier boots' leftovers, never a container this boot already started.
pub const LABEL_BOOT: &str = "rumi.boot";

/// How long a daemon request other than a long wait may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to and negotiating with the daemon may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a removal may take before shutdown (or `DELETE /api/containers/{id}`) stops waiting.
const REMOVAL_DEADLINE: Duration = Duration::from_secs(10);

/// Limits and settings of a pack container (defaults from the contract, §5.3).
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    /// The runtime image (`RUMI_PACK_IMAGE`, else the recipe's tag).
    pub image: String,
    pub memory_bytes: i64,
    pub pids_limit: i64,
    /// CPU share in billionths of a CPU (0.5 CPU = 500_000_000).
    pub nano_cpus: i64,
    /// Size of the `/tmp` tmpfs in MiB.
    pub tmp_mib: u64,
    /// The group that may use the pack's sockets (the container user joins it).
    pub socket_gid: u32,
    /// Mode of the sockets the kernel creates for packs.
    pub socket_mode: u32,
    /// How long a new container may take until its block host has connected.
    pub start_timeout: Duration,
}

impl ContainerSettings {
    /// The contract's defaults with the given image.
    pub fn new(image: String) -> Self {
        ContainerSettings {
            image,
            memory_bytes: 256 * 1024 * 1024,
            pids_limit: 100,
            nano_cpus: 500_000_000,
            tmp_mib: 64,
            socket_gid: 65534,
            socket_mode: 0o660,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// What one pack's container needs from the host.
#[derive(Debug, Clone)]
pub struct PackSpec {
    pub pack_id: String,
    /// The pack subdir (`/pack`, read-only).
    pub pack_root: PathBuf,
    /// `user_data/packs/<id>` (`/data`, read-only for blocks).
    pub data_dir: PathBuf,
    /// The pack's installed pip packages (`/pip-packages`, read-only) when the directory exists.
    pub site_packages: PathBuf,
    /// The pack's socket directory (`/run/rumi`, read-only; the kernel creates the sockets).
    pub socket_dir: PathBuf,
    /// The block host and the pack-facing modules (`/opt/rumi`, read-only).
    pub runtime_dir: PathBuf,
    /// The pack's capability socket directory when `RUMI_CAPABILITY_SOCK_DIR` puts it apart from
    /// the socket directory (`/run/rumi-capability`, read-only); `None`: it is in `/run/rumi`.
    pub capability_dir: Option<PathBuf>,
    /// Largest reply frame accepted from the block host.
    pub max_frame: usize,
    /// CPUs the container may use (`--cpuset-cpus`): its pack arbiter's, when pinning is on, so
    /// a call's wake-ups stay on one CPU.
    pub cpuset: Option<String>,
}

/// `rumi-pack-<id>.<instance>`: the installation's digest ([`instance_id`]) in the name lets two
/// homes on one Docker daemon run the same pack id side by side, without either one taking (or
/// removing) the other's container.
pub fn container_name(instance: &str, pack_id: &str) -> String {
    format!("rumi-pack-{pack_id}.{instance}")
}

/// `GET /api/docker/status`.
#[derive(Debug, Clone, Serialize)]
pub struct DockerStatus {
    pub available: bool,
    /// The daemon's version, when reachable.
    pub version: Option<String>,
    pub api_version: Option<String>,
    pub image: String,
    /// Whether the image is present (null when the daemon is unreachable).
    pub image_present: Option<bool>,
    /// Why Docker is not usable, when it is not.
    pub reason: Option<String>,
}

/// A managed container as `GET /api/containers` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ManagedContainer {
    pub name: String,
    pub id: String,
    pub pack_id: String,
    pub image: String,
    pub state: String,
    pub status: String,
    pub created: i64,
    #[serde(skip)]
    pub boot: String,
}

/// The shared Docker handle (see the module docs).
#[derive(Debug)]
pub struct DockerEngine {
    settings: ContainerSettings,
    instance: String,
    boot: String,
    client: Mutex<Option<Docker>>,
}

impl DockerEngine {
    /// `instance` identifies this installation (see [`LABEL_INSTANCE`]).
    pub fn new(settings: ContainerSettings, instance: String) -> Arc<Self> {
        let mut rnd = [0u8; 6];
        let _ = getrandom::getrandom(&mut rnd);
        Arc::new(DockerEngine {
            settings,
            instance,
            boot: hex::encode(rnd),
            client: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &ContainerSettings {
        &self.settings
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// This kernel process's boot id (see [`LABEL_BOOT`]).
    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// A connected client whose API version is negotiated with the daemon (`DOCKER_HOST` or the
    /// local socket). A failure is not remembered: the next call tries again.
    pub async fn client(&self) -> Result<Docker, String> {
        if let Some(c) = self.client.lock().clone() {
            return Ok(c);
        }
        let docker = Docker::connect_with_defaults()
            .map_err(|e| format!("the Docker daemon is not reachable ({})", describe(&e)))?
            .with_timeout(REQUEST_TIMEOUT);
        let negotiated = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| "the Docker daemon did not answer within 3s".to_string())?
            .map_err(|e| format!("the Docker daemon is not reachable ({})", describe(&e)))?;
        *self.client.lock() = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// Forgets the connection (after a transport error), so the next call reconnects.
    pub fn reset(&self) {
        *self.client.lock() = None;
    }

    /// Daemon reachability, version and the image.
    pub async fn status(&self) -> DockerStatus {
        let mut status = DockerStatus {
            available: false,
            version: None,
            api_version: None,
            image: self.settings.image.clone(),
            image_present: None,
            reason: None,
        };
        let client = match self.client().await {
            Ok(c) => c,
            Err(why) => {
                status.reason = Some(why);
                return status;
            }
        };
        match client.version().await {
            Ok(v) => {
                status.available = true;
                status.version = v.version;
                status.api_version = v.api_version;
            }
            Err(e) => {
                self.reset();
                status.reason = Some(format!(
                    "the Docker daemon is not reachable ({})",
                    describe(&e)
                ));
                return status;
            }
        }
        match image::present(&client, &self.settings.image).await {
            Ok(present) => {
                status.image_present = Some(present);
                if !present {
                    status.reason = Some(image::missing_message(&self.settings.image));
                }
            }
            Err(why) => status.reason = Some(why),
        }
        status
    }

    fn instance_filter(&self, pack: Option<&str>) -> HashMap<String, Vec<String>> {
        let mut labels = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_INSTANCE}={}", self.instance),
        ];
        if let Some(p) = pack {
            labels.push(format!("{LABEL_PACK}={p}"));
        }
        HashMap::from([("label".to_string(), labels)])
    }

    /// This installation's managed containers (running or not).
    pub async fn list_managed(&self, pack: Option<&str>) -> Result<Vec<ManagedContainer>, String> {
        let client = self.client().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(self.instance_filter(pack)),
            ..Default::default()
        };
        let list = client
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("listing containers failed ({})", describe(&e)))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                ManagedContainer {
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    id: c.id.unwrap_or_default().chars().take(12).collect(),
                    pack_id: labels.get(LABEL_PACK).cloned().unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    status: c.status.unwrap_or_default(),
                    created: c.created.unwrap_or_default(),
                    boot: labels.get(LABEL_BOOT).cloned().unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Removes this installation's managed containers (all, or one pack's): everything at
    /// shutdown, one pack's on `DELETE /api/containers/{id}`. Returns how many were removed.
    pub async fn remove_managed(&self, pack: Option<&str>) -> Result<usize, String> {
        self.remove_where(pack, false).await
    }

    /// Removes leftovers of earlier boots (a crash): at start-up.
    pub async fn remove_leftovers(&self) -> Result<usize, String> {
        self.remove_where(None, true).await
    }

    async fn remove_where(&self, pack: Option<&str>, earlier_boots: bool) -> Result<usize, String> {
        let list = self.list_managed(pack).await?;
        let client = self.client().await?;
        let mut removed = Vec::new();
        for c in list
            .iter()
            .filter(|c| !earlier_boots || c.boot != self.boot)
        {
            match remove(&client, &c.id).await {
                Ok(()) => removed.push(c),
                Err(why) => tracing::warn!(container = %c.name, "could not remove: {why}"),
            }
        }
        // The daemon answers a removal already under way (a sandbox stopping its own container)
        // at once: wait until each is really gone, so "removed" is true when this returns (the
        // kernel's shutdown promises it, and a new kernel must not meet a half-removed one).
        let deadline = tokio::time::Instant::now() + REMOVAL_DEADLINE;
        for c in &removed {
            while client.inspect_container(&c.id, None).await.is_ok() {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(container = %c.name, "still being removed after {REMOVAL_DEADLINE:?}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(removed.len())
    }

    /// Stops one pack's container without removing it (`POST /api/containers/{id}/stop`).
    pub async fn stop_pack(&self, pack_id: &str) -> Result<bool, String> {
        let client = self.client().await?;
        let name = container_name(&self.instance, pack_id);
        if !self.owns(&client, &name).await? {
            return Ok(false);
        }
        let options = StopContainerOptions {
            t: Some(2),
            signal: None,
        };
        match client.stop_container(&name, Some(options)).await {
            Ok(()) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(true),
            Err(e) => Err(format!("stopping {name} failed ({})", describe(&e))),
        }
    }

    /// Whether the container called `name` exists and belongs to this installation. A container
    /// of that name owned by another installation is an error (names are global on a daemon).
    pub async fn owns(&self, client: &Docker, name: &str) -> Result<bool, String> {
        match client
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
                if labels.get(LABEL_INSTANCE).map(String::as_str) == Some(self.instance.as_str()) {
                    Ok(true)
                } else {
                    Err(format!(
                        "a container named {name} exists and is not this installation's; remove it or run this kernel against another Docker daemon"
                    ))
                }
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(format!("inspecting {name} failed ({})", describe(&e))),
        }
    }
}

/// Waits until a throw-away container (the pip builder, a skill script) stops: its exit code,
/// or -1 when the daemon reports none.
pub async fn wait_exit(client: &Docker, name: &str) -> i64 {
    use futures_util::StreamExt;
    let options = bollard::query_parameters::WaitContainerOptions {
        condition: "not-running".into(),
    };
    match client.wait_container(name, Some(options)).next().await {
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => code,
        Some(Ok(r)) => r.status_code,
        _ => -1,
    }
}

/// Force-removes a container (kills it first); a missing one counts as removed.
pub async fn remove(client: &Docker, name: &str) -> Result<(), String> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match client.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        // "removal already in progress"
        Err(BollardError::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(describe(&e)),
    }
}

/// A short description of a daemon error without host paths (the full error is logged).
pub fn describe(e: &BollardError) -> String {
    tracing::debug!(error = %e, "docker error");
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => {
            format!("the daemon answered {status_code}; the kernel log has its message")
        }
        BollardError::RequestTimeoutError => "the request timed out".into(),
        BollardError::IOError { err } => format!("I/O error: {}", err.kind()),
        BollardError::SocketNotFoundError(_) => {
            "no Docker socket at DOCKER_HOST or the default path".into()
        }
        BollardError::HyperLegacyError { .. } | BollardError::HyperResponseError { .. } => {
            "the connection failed".into()
        }
        BollardError::APIVersionParseError {} => "the daemon's API version is unreadable".into(),
        BollardError::UnsupportedURISchemeError { .. } => {
            "DOCKER_HOST has an unsupported scheme".into()
        }
        other => {
            let text = other.to_string();
            if text.contains('/') {
                "an error the kernel log describes".into()
            } else {
                text
            }
        }
    }
}

/// Whether the kernel runs as root (it can then give the pack sockets to any group, and
/// debootstrap can run).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A digest of the installation's home: the [`LABEL_INSTANCE`] value.
pub fn instance_id(home: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(home.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
}
