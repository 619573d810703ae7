//! One pack container and its channel (see the module docs of [`crate::docker`]).
//!
//! Start-up: the kernel binds `host.sock` in the pack's socket directory (group
//! [`ContainerSettings::socket_gid`], mode 0660, never 0666), creates and starts `rumi-pack-<id>.<instance>`
//! with every flag of §5.3, and accepts exactly one connection, from uid 65534; then the socket
//! file is unlinked, so nothing else in the container can connect a second time, and a ping proves
//! the block host answers. A call is one frame each way on that connection.
//!
//! Failure: a timeout, a dead block host, a reply over the limit or processes left running after a
//! call remove the container before the call's result is returned (so the next call cannot meet
//! it); the owner starts a fresh one. A dead block host is classified by the daemon's `OOMKilled`.

use super::{describe, remove, ContainerSettings, DockerEngine, PackSpec};
use super::{LABEL_BOOT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PACK};
use crate::pack_container::worker::{exchange, CallError};
use crate::sockets::{bind_pack_socket, BoundSocket, SocketAccess};
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;

/// The user every pack container runs as.
pub const PACK_UID: u32 = 65534;
/// Where the pack's socket directory appears inside its container.
pub const SOCKET_DIR_IN_CONTAINER: &str = "/run/rumi";
/// Where a capability socket directory apart from the socket directory is mounted.
pub const CAPABILITY_DIR_IN_CONTAINER: &str = "/run/rumi-capability";

/// Why a container could not be started.
#[derive(Debug, Clone)]
pub enum StartError {
    /// Docker (or the image) is not usable: calls answer `docker_required`.
    Unavailable(String),
    /// Docker is there but this container failed to come up.
    Failed(String),
}

/// A running pack container with its open channel.
pub struct DockerSandbox {
    client: Docker,
    name: String,
    id: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    max_frame: usize,
    /// The container's pids limit (to recognise a fork storm).
    pids_limit: u64,
    /// Set once the container is removed, so dropping does not remove it twice.
    gone: bool,
}

/// Creates the pack's container and waits until its block host has connected and answered.
pub async fn start(engine: &DockerEngine, spec: &PackSpec) -> Result<DockerSandbox, StartError> {
    start_kind(engine, spec, false).await
}

/// A throw-away container for one lib run (contract §9): the pack's container settings, but
/// named `rumi-lib-<id>.<instance>`, with `/data` writable and no egress or capability socket
/// (`spec.socket_dir` is a directory of its own holding only the channel); the pack's `lib`
/// directory is `/pack/lib`, read-only with the rest of the pack (not `/lib`: that is the image's
/// own library directory, and covering it leaves no working interpreter). The caller destroys it
/// after its one call.
pub async fn start_lib(
    engine: &DockerEngine,
    spec: &PackSpec,
) -> Result<DockerSandbox, StartError> {
    start_kind(engine, spec, true).await
}

async fn start_kind(
    engine: &DockerEngine,
    spec: &PackSpec,
    lib: bool,
) -> Result<DockerSandbox, StartError> {
    let settings = engine.settings();
    let client = engine.client().await.map_err(StartError::Unavailable)?;
    match super::image::present(&client, &settings.image).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(StartError::Unavailable(super::image::missing_message(
                &settings.image,
            )))
        }
        Err(why) => {
            engine.reset();
            return Err(StartError::Unavailable(why));
        }
    }
    let name = if lib {
        format!("rumi-lib-{}.{}", spec.pack_id, engine.instance())
    } else {
        super::container_name(engine.instance(), &spec.pack_id)
    };
    if engine
        .owns(&client, &name)
        .await
        .map_err(StartError::Failed)?
    {
        // A leftover of ours (a crash, or a stopped container): start from a clean one.
        remove(&client, &name)
            .await
            .map_err(|why| StartError::Failed(format!("removing the old {name} failed ({why})")))?;
        // A removal already under way answers at once; the name is free only when it is done.
        let mut waited = 0;
        while engine
            .owns(&client, &name)
            .await
            .map_err(StartError::Failed)?
        {
            if waited >= 100 {
                return Err(StartError::Failed(format!(
                    "the old {name} is still being removed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
    }
    let (listener, bound) = bind_channel(spec, settings).map_err(StartError::Failed)?;
    let python = pip_root(&spec.data_dir).map_err(|e| {
        StartError::Failed(format!(
            "the pack's data/python directory cannot be prepared ({})",
            e.kind()
        ))
    })?;
    let mut body = container_body(engine, spec);
    if lib {
        lib_body(&mut body, &python);
    }
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    let created = client
        .create_container(Some(options), body)
        .await
        .map_err(|e| StartError::Failed(format!("creating {name} failed ({})", describe(&e))))?;
    let id: String = created.id.chars().take(12).collect();
    let result = async {
        client
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| format!("starting {name} failed ({})", describe(&e)))?;
        accept(&client, &name, &listener, settings.start_timeout).await
    }
    .await;
    bound.remove();
    drop(listener);
    let stream = match result {
        Ok(s) => s,
        Err(why) => {
            let _ = remove(&client, &name).await;
            return Err(StartError::Failed(why));
        }
    };
    let (read, write) = stream.into_split();
    let mut sandbox = DockerSandbox {
        client,
        name,
        id,
        reader: BufReader::new(read),
        writer: write,
        max_frame: spec.max_frame,
        pids_limit: settings.pids_limit.max(0) as u64,
        gone: false,
    };
    let ping = crate::frame::encode(&json!({"id": 0, "op": "ping"})).unwrap_or_default();
    let pong = tokio::time::timeout(
        settings.start_timeout,
        exchange(&mut sandbox.reader, &mut sandbox.writer, 0, &ping, 4096),
    )
    .await;
    match pong {
        Ok(Ok(_)) => Ok(sandbox),
        _ => {
            sandbox.destroy().await;
            Err(StartError::Failed(format!(
                "the block host in {} did not answer its first ping",
                sandbox.name
            )))
        }
    }
}

/// Prepares the pack's directories and binds the channel socket.
fn bind_channel(
    spec: &PackSpec,
    settings: &ContainerSettings,
) -> Result<(UnixListener, BoundSocket), String> {
    crate::fsutil::ensure_dir(&spec.data_dir, 0o755)
        .map_err(|e| format!("the pack's data directory cannot be created ({})", e.kind()))?;
    let access = SocketAccess {
        gid: Some(settings.socket_gid),
        mode: settings.socket_mode,
    };
    bind_pack_socket(&spec.socket_dir, "host.sock", access)
}

/// Waits for the block host's connection; gives up when the container exits or time runs out.
async fn accept(
    client: &Docker,
    name: &str,
    listener: &UnixListener,
    limit: Duration,
) -> Result<tokio::net::UnixStream, String> {
    let exited = async {
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let outcome = client.wait_container(name, Some(options)).next().await;
        match outcome {
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Ok(r)) => r.status_code,
            _ => -1,
        }
    };
    tokio::select! {
        conn = listener.accept() => {
            let (stream, _) = conn.map_err(|e| format!("accepting the block host failed ({})", e.kind()))?;
            let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
            if uid != PACK_UID {
                return Err(format!("the channel was opened by uid {uid}, not the pack's user {PACK_UID}"));
            }
            Ok(stream)
        }
        code = exited => Err(format!("{name} exited (code {code}) before its block host connected; `docker logs {name}` shows why")),
        _ = tokio::time::sleep(limit) => Err(format!("the block host in {name} did not connect within {}s", limit.as_secs())),
    }
}

/// The container's configuration: every flag of §5.3. Only the variables listed here reach it;
/// the kernel's environment never does.
fn container_body(engine: &DockerEngine, spec: &PackSpec) -> ContainerCreateBody {
    let settings = engine.settings();
    let bind = |source: &Path, target: &str| Mount {
        target: Some(target.to_string()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    };
    let mut mounts = vec![
        bind(&spec.pack_root, "/pack"),
        bind(&spec.data_dir, "/data"),
        bind(&spec.socket_dir, SOCKET_DIR_IN_CONTAINER),
        bind(&spec.runtime_dir, "/opt/rumi"),
    ];
    // Never `is_dir()` (it follows a link): only a real directory is mounted, under a `python/`
    // that `pip_root` has just made sure is real too (see there).
    if std::fs::symlink_metadata(&spec.site_packages).is_ok_and(|m| m.is_dir()) {
        mounts.push(bind(&spec.site_packages, "/pip-packages"));
    }
    let capability_socket = match &spec.capability_dir {
        Some(dir) => {
            mounts.push(bind(dir, CAPABILITY_DIR_IN_CONTAINER));
            format!(
                "{CAPABILITY_DIR_IN_CONTAINER}/{}",
                crate::capability::SOCKET_NAME
            )
        }
        None => format!(
            "{SOCKET_DIR_IN_CONTAINER}/{}",
            crate::capability::SOCKET_NAME
        ),
    };
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_PACK.to_string(), spec.pack_id.clone()),
        (LABEL_INSTANCE.to_string(), engine.instance().to_string()),
        (LABEL_BOOT.to_string(), engine.boot().to_string()),
    ]);
    let group_add =
        (settings.socket_gid != PACK_UID).then(|| vec![settings.socket_gid.to_string()]);
    ContainerCreateBody {
        image: Some(settings.image.clone()),
        cmd: Some(
            [
                "python3",
                "-B",
                "-I",
                "-S",
                "/opt/rumi/rumi_blockhost.py",
                "--connect",
                "/run/rumi/host.sock",
                "/pack",
            ]
            .map(String::from)
            .to_vec(),
        ),
        entrypoint: Some(Vec::new()),
        user: Some(format!("{PACK_UID}:{PACK_UID}")),
        env: Some(vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "LANG=C.UTF-8".into(),
            "HOME=/tmp".into(),
            "PYTHONDONTWRITEBYTECODE=1".into(),
            format!("RUMI_PACK_ID={}", spec.pack_id),
            format!("RUMI_MAX_RESULT_BYTES={}", spec.max_frame),
            format!(
                "RUMI_EGRESS_SOCKET={SOCKET_DIR_IN_CONTAINER}/{}",
                crate::egress::SOCKET_NAME
            ),
            format!("RUMI_CAPABILITY_SOCKET={capability_socket}"),
        ]),
        working_dir: Some("/tmp".into()),
        labels: Some(labels),
        network_disabled: Some(true),
        attach_stdin: Some(false),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(hardened_host_config(
            settings,
            mounts,
            spec.cpuset.clone(),
            group_add,
        )),
        ..Default::default()
    }
}

/// The hardening every container the kernel runs shares (§5.3): no network, read-only root,
/// every capability dropped, `no-new-privileges`, the memory, pids and CPU limits, a small
/// `/tmp`, an init, private IPC, bounded file descriptors and logs. Pack containers and the pip
/// builder (`crate::pip::builder`) both use it.
pub(crate) fn hardened_host_config(
    settings: &ContainerSettings,
    mounts: Vec<Mount>,
    cpuset: Option<String>,
    group_add: Option<Vec<String>>,
) -> HostConfig {
    HostConfig {
        network_mode: Some("none".into()),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory: Some(settings.memory_bytes),
        memory_swap: Some(settings.memory_bytes),
        pids_limit: Some(settings.pids_limit),
        nano_cpus: Some(settings.nano_cpus),
        cpuset_cpus: cpuset,
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={}m", settings.tmp_mib),
        )])),
        mounts: Some(mounts),
        init: Some(true),
        ipc_mode: Some("private".into()),
        group_add,
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(1024),
            hard: Some(1024),
        }]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), "1m".to_string()),
                ("max-file".to_string(), "1".to_string()),
            ])),
        }),
        ..Default::default()
    }
}

/// Makes the pack's `<data>/python` (where its pip packages are installed) a real directory and
/// answers it. A lib run has `/data` writable: had it planted `python` or
/// `python/site-packages` as a symbolic link, the next container would bind-mount the link's
/// host target (another pack's data or sockets, any host directory) at `/pip-packages`. A link
/// or a file found there is removed; every lib container then gets `/data/python` read-only
/// (the pack container has all of `/data` read-only), so nothing of the pack can change it again
/// between this check and a mount.
pub(crate) fn pip_root(data_dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let root = data_dir.join("python");
    match std::fs::symlink_metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            std::fs::remove_file(&root)?;
            std::fs::create_dir(&root)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&root)?,
        Err(e) => return Err(e),
    }
    let site = root.join("site-packages");
    if std::fs::symlink_metadata(&site).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(&site)?;
    }
    Ok(root)
}

/// Turns a pack container's configuration into a lib run's: `/data` writable but for
/// `/data/python` (read-only: see [`pip_root`]), no egress or capability socket named in the
/// environment (none is mounted either).
fn lib_body(body: &mut ContainerCreateBody, python: &Path) {
    if let Some(hc) = body.host_config.as_mut() {
        if let Some(mounts) = hc.mounts.as_mut() {
            mounts.retain(|m| m.target.as_deref() != Some(CAPABILITY_DIR_IN_CONTAINER));
            for m in mounts.iter_mut() {
                if m.target.as_deref() == Some("/data") {
                    m.read_only = Some(false);
                }
            }
            mounts.push(Mount {
                target: Some("/data/python".into()),
                source: Some(python.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    if let Some(env) = body.env.as_mut() {
        env.retain(|v| {
            !v.starts_with("RUMI_EGRESS_SOCKET=") && !v.starts_with("RUMI_CAPABILITY_SOCKET=")
        });
    }
    body.working_dir = Some("/data".into());
}

impl DockerSandbox {
    /// The container's short id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One call (see [`crate::pack_container::worker::Worker::call`] for the contract). On any
    /// failure the container is removed before this returns.
    pub async fn call(
        mut self,
        id: u64,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> (Option<DockerSandbox>, Result<Value, CallError>) {
        let outcome = tokio::time::timeout(
            timeout,
            exchange(
                &mut self.reader,
                &mut self.writer,
                id,
                &frame,
                self.max_frame,
            ),
        )
        .await;
        let error = match outcome {
            Ok(Ok(reply)) => match reply.get("strays").and_then(Value::as_u64) {
                Some(n) if n > 0 => CallError::Strays(n),
                _ => return (Some(self), Ok(reply)),
            },
            Ok(Err(CallError::Crashed(why))) => {
                if self.oom_killed().await {
                    CallError::OutOfMemory
                } else {
                    CallError::Crashed(why)
                }
            }
            Ok(Err(e)) => e,
            // A fork storm starves the block host of CPU, so it rarely answers in time: a call
            // that overran with the pids limit (nearly) reached is reported as what it is.
            Err(_) => match self.processes().await {
                Some(n) if n >= self.pids_limit.saturating_sub(5).max(1) => CallError::Strays(n),
                _ => CallError::TimedOut,
            },
        };
        self.destroy().await;
        (None, Err(error))
    }

    /// How many processes the container runs now (one-shot stats).
    async fn processes(&self) -> Option<u64> {
        let options = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let stats = self
            .client
            .stats(&self.name, Some(options))
            .next()
            .await?
            .ok()?;
        stats.pids_stats?.current
    }

    /// After the block host died: lets the container finish exiting, then asks whether the
    /// kernel's OOM killer ended it.
    async fn oom_killed(&self) -> bool {
        for _ in 0..40 {
            match self
                .client
                .inspect_container(&self.name, None::<InspectContainerOptions>)
                .await
            {
                Ok(info) => {
                    let state = info.state.unwrap_or_default();
                    if state.oom_killed == Some(true) {
                        return true;
                    }
                    if state.running != Some(true) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Lets go of the container without removing it (the caller stops or removes it).
    pub fn forget(mut self) {
        self.gone = true;
    }

    /// Removes the container now.
    pub async fn destroy(&mut self) {
        if let Err(why) = remove(&self.client, &self.name).await {
            tracing::warn!(container = %self.name, "could not remove the container: {why}");
        }
        self.gone = true;
    }

    /// Resolves when the container stops running (it died by itself, or was removed).
    pub fn exited(&self) -> impl std::future::Future<Output = ()> + 'static {
        // Waits are long polls: a client without the request timeout, re-asked if it lapses.
        let client = self.client.clone().with_timeout(Duration::from_secs(3600));
        let name = self.name.clone();
        async move {
            loop {
                let options = WaitContainerOptions {
                    condition: "not-running".into(),
                };
                match client.wait_container(&name, Some(options)).next().await {
                    Some(Err(bollard::errors::Error::RequestTimeoutError)) => continue,
                    Some(Err(bollard::errors::Error::HyperLegacyError { .. })) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    _ => return,
                }
            }
        }
    }
}

impl Drop for DockerSandbox {
    /// A sandbox dropped without [`DockerSandbox::destroy`] (its pack stopped, or its call was
    /// abandoned) is removed in the background; shutdown sweeps whatever is left by label.
    fn drop(&mut self) {
        if self.gone {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, name) = (self.client.clone(), self.name.clone());
            rt.spawn(async move {
                if let Err(why) = remove(&client, &name).await {
                    tracing::warn!(container = %name, "could not remove the container: {why}");
                }
            });
        }
    }
}
