//! Strict mode's builder (contract §9 "pip"; skill dependency environments, SkillRuntime §8): an
//! embedded stdlib unpacker (`rumi_wheel_install.py` for wheels, `rumi_npm_install.py` for npm
//! tarballs) runs in a throw-away container from the pack runtime image, with no network, the
//! hardening of pack containers ([`crate::docker::sandbox::hardened_host_config`]), the downloads
//! mounted read-only at `/input`, the embedded runtime read-only at `/opt/rumi` and only the fresh
//! target directory writable at `/target`. It unpacks archives; no package code runs, and if the
//! unpacker were fooled it could still write nowhere but the target.

use crate::docker::sandbox::{hardened_host_config, PACK_UID};
use crate::docker::{describe, remove, DockerEngine};
use crate::docker::{LABEL_BOOT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PACK};
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, Mount, MountType};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// What the installer printed: stdout and stderr, each capped.
pub struct Output {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Most bytes kept of each stream.
const MAX_OUTPUT: usize = 64 * 1024;

/// The user the installer runs as, and whether the target must be handed to it first (a kernel
/// running as root hands it to the pack user, and takes it back after).
pub fn builder_user() -> (String, bool) {
    if crate::docker::is_root() {
        (format!("{PACK_UID}:{PACK_UID}"), true)
    } else {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        (format!("{uid}:{gid}"), false)
    }
}

/// What one builder container does.
pub struct Build<'a> {
    /// Names the container (`rumi-pip-<name>.<instance>`) and labels it (`rumi.pack_id`): a
    /// pack id, or `skill-env-<hash>` for a skill's dependency environment.
    pub name: &'a str,
    /// The embedded unpacker run (a file of the runtime directory).
    pub script: &'a str,
    pub runtime_dir: &'a Path,
    /// The downloads, read-only at `/input`.
    pub input: &'a Path,
    /// The fresh target, writable at `/target`.
    pub target: &'a Path,
    pub deadline: Duration,
}

/// Runs the wheel installer over `wheels` into `target` in a network-less container.
pub async fn run_installer(
    engine: &DockerEngine,
    pack_id: &str,
    runtime_dir: &Path,
    wheels: &Path,
    target: &Path,
    deadline: Duration,
) -> Result<Output, String> {
    run_build(
        engine,
        &Build {
            name: pack_id,
            script: "rumi_wheel_install.py",
            runtime_dir,
            input: wheels,
            target,
            deadline,
        },
    )
    .await
}

/// Runs `b.script` over `/input` into `/target` in a network-less container. Dropping the
/// future removes the container and then the target directory (the build is abandoned).
pub async fn run_build(engine: &DockerEngine, b: &Build<'_>) -> Result<Output, String> {
    let (pack_id, runtime_dir, wheels, target, deadline) =
        (b.name, b.runtime_dir, b.input, b.target, b.deadline);
    let settings = engine.settings();
    let client = engine.client().await?;
    match crate::docker::image::present(&client, &settings.image).await {
        Ok(true) => {}
        Ok(false) => return Err(crate::docker::image::missing_message(&settings.image)),
        Err(why) => return Err(why),
    }
    let name = format!("rumi-pip-{pack_id}.{}", engine.instance());
    if engine.owns(&client, &name).await? {
        remove(&client, &name).await?;
    }
    let bind = |source: &Path, target: &str, read_only: bool| Mount {
        target: Some(target.to_string()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    };
    let mounts = vec![
        bind(runtime_dir, "/opt/rumi", true),
        bind(wheels, "/input", true),
        bind(target, "/target", false),
    ];
    let (user, _) = builder_user();
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_PACK.to_string(), pack_id.to_string()),
        (LABEL_INSTANCE.to_string(), engine.instance().to_string()),
        (LABEL_BOOT.to_string(), engine.boot().to_string()),
        ("rumi.role".to_string(), "pip-builder".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(settings.image.clone()),
        cmd: Some(vec![
            "python3".into(),
            "-I".into(),
            "-S".into(),
            "-B".into(),
            format!("/opt/rumi/{}", b.script),
            "/input".into(),
            "/target".into(),
        ]),
        entrypoint: Some(Vec::new()),
        user: Some(user),
        env: Some(vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "LANG=C.UTF-8".into(),
            "HOME=/tmp".into(),
            "PYTHONDONTWRITEBYTECODE=1".into(),
        ]),
        working_dir: Some("/tmp".into()),
        labels: Some(labels),
        network_disabled: Some(true),
        attach_stdin: Some(false),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(hardened_host_config(settings, mounts, None, None)),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    client
        .create_container(Some(options), body)
        .await
        .map_err(|e| format!("creating the builder container failed ({})", describe(&e)))?;
    // Dropped midway (nobody waits for the build any more): the container goes, then the target.
    let mut abandoned = Abandoned(Some((client.clone(), name.clone(), target.to_path_buf())));
    let outcome = async {
        client
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| format!("starting the builder container failed ({})", describe(&e)))?;
        let wait = crate::docker::wait_exit(&client, &name);
        let code = tokio::time::timeout(deadline, wait).await.map_err(|_| {
            format!(
                "the builder container did not finish within {}s; it was removed",
                deadline.as_secs()
            )
        })?;
        let mut out = Output {
            code,
            stdout: String::new(),
            stderr: String::new(),
        };
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "500".into(),
            ..Default::default()
        };
        let mut logs = client.logs(&name, Some(options));
        while let Some(Ok(item)) = logs.next().await {
            let (buf, bytes) = match item {
                LogOutput::StdOut { message } => (&mut out.stdout, message),
                LogOutput::StdErr { message } => (&mut out.stderr, message),
                _ => continue,
            };
            if buf.len() < MAX_OUTPUT {
                let take = bytes.len().min(MAX_OUTPUT - buf.len());
                buf.push_str(&String::from_utf8_lossy(&bytes[..take]));
            }
        }
        Ok(out)
    }
    .await;
    abandoned.0 = None;
    let _ = remove(&client, &name).await;
    outcome
}

/// A builder container (and its target directory) whose build was dropped before it ended:
/// removed by a task of its own — the container first, so nothing writes the target after.
struct Abandoned(Option<(bollard::Docker, String, std::path::PathBuf)>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some((client, name, target)) = self.0.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let _ = remove(&client, &name).await;
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(target)).await;
        });
    }
}
