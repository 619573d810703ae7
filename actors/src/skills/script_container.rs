//! Strict mode's ScriptRunner (contract §8): each script runs in a throw-away container from
//! the pack runtime image (it has python3, sh and node) with the hardening of pack containers
//! ([`hardened_host_config`]: no network, read-only root, every capability dropped, limits).
//!
//! The container sees the skill the way a host script sees its view: `/skill` is a small
//! tmpfs holding a read-only bind of each top-level entry of the skill directory and the run's
//! `build/` writable at `/skill/build`; the working directory is `/skill`. Binding the entries
//! one by one (rather than the skill directory with `build/` inside it) means the Docker daemon
//! never has to create a `build` mount point in the skill directory on the host — the skill is
//! never written, not even an empty directory. A top-level entry that is a symbolic link is not
//! bound at all: the daemon would resolve it on the host, outside the skill.
//!
//! stdin comes from a file (`io/stdin-<n>.json`, bound read-only): no attach stream to manage,
//! and nothing else of the workspace is visible. The container is removed when the script ends,
//! times out, or the run is cancelled (a drop guard).

use super::script::{ScriptEnv, ScriptJob, ScriptOutput, ScriptRunner, Tail, MAX_STDOUT};
use super::script::{CONTAINER_NODE_ENV, CONTAINER_PYTHON_ENV};
use crate::docker::sandbox::hardened_host_config;
use crate::docker::{describe, remove, DockerEngine};
use crate::docker::{LABEL_BOOT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PACK};
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, Mount, MountType};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Most top-level entries of a skill bound into the container.
pub const MAX_SKILL_ENTRIES: usize = 64;

/// Runs scripts in network-less containers.
pub struct ContainerRunner {
    pub engine: Arc<DockerEngine>,
}

/// Removes the container when dropped (a cancelled run drops the future mid-way).
struct RemoveOnDrop {
    client: Docker,
    name: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let (client, name) = (self.client.clone(), std::mem::take(&mut self.name));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = remove(&client, &name).await;
            });
        }
    }
}

impl ScriptRunner for ContainerRunner {
    fn isolation(&self) -> &'static str {
        "container"
    }

    fn prepare(&self, files: &super::workspace::RunFiles) {
        if crate::docker::is_root() {
            hand_over(files.build(), crate::docker::sandbox::PACK_UID);
        }
    }

    fn run(&self, job: ScriptJob) -> BoxFuture<'static, Result<ScriptOutput, String>> {
        let engine = Arc::clone(&self.engine);
        Box::pin(async move { run_in_container(&engine, job).await })
    }
}

fn bind(source: &Path, target: String, read_only: bool) -> Mount {
    Mount {
        target: Some(target),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The binds of the skill's top-level entries (links skipped), `build/`, and stdin.
fn mounts(job: &ScriptJob, stdin: &Path) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    let entries = std::fs::read_dir(job.files.skill_root())
        .map_err(|e| format!("the skill directory cannot be read ({})", e.kind()))?;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(t) = entry.file_type() else { continue };
        if name == "build" || t.is_symlink() || !(t.is_dir() || t.is_file()) {
            continue;
        }
        if mounts.len() >= MAX_SKILL_ENTRIES {
            return Err(format!(
                "the skill has more than {MAX_SKILL_ENTRIES} top-level entries; group its files into folders"
            ));
        }
        mounts.push(bind(&entry.path(), format!("/skill/{name}"), true));
    }
    mounts.push(bind(job.files.build(), "/skill/build".into(), false));
    mounts.extend(env_mounts(&job.env));
    mounts.push(bind(stdin, "/rumi-io/stdin.json".into(), true));
    Ok(mounts)
}

/// The dependency environments, read-only at [`CONTAINER_PYTHON_ENV`] and [`CONTAINER_NODE_ENV`].
pub fn env_mounts(env: &ScriptEnv) -> Vec<Mount> {
    let mut mounts = Vec::new();
    if let Some(p) = &env.python {
        mounts.push(bind(p, CONTAINER_PYTHON_ENV.into(), true));
    }
    if let Some(p) = &env.node {
        mounts.push(bind(p, CONTAINER_NODE_ENV.into(), true));
    }
    mounts
}

/// The container's variables: a fixed set, plus the environments' search paths.
pub fn container_variables(env: &ScriptEnv) -> Vec<String> {
    let mut vars: Vec<String> = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".into(),
        "LANG=C.UTF-8".into(),
        "HOME=/tmp".into(),
        "PYTHONDONTWRITEBYTECODE=1".into(),
        "RUMI_BUILD_DIR=build".into(),
    ];
    vars.extend(
        env.variables(false)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    vars
}

/// Hands `build/` to the container's user when the kernel runs as root: every entry re-owned
/// through directory descriptors without following a link ([`super::fsat`]), so a link
/// planted in `build/` (or a directory swapped for one mid-walk) never re-owns a host file.
fn hand_over(build: &Path, uid: u32) {
    fn walk(dir: &std::os::fd::OwnedFd, uid: u32, depth: usize, seen: &mut usize) {
        let Ok(list) = super::fsat::entries(dir) else {
            return;
        };
        for (name, is_dir, _) in list {
            *seen += 1;
            if *seen > super::workspace::MAX_WALK_ENTRIES {
                return;
            }
            super::fsat::chown_at(dir, &name, uid);
            if is_dir && depth < super::workspace::MAX_WALK_DEPTH {
                if let Ok(sub) = super::fsat::open_subdir(dir, &name) {
                    walk(&sub, uid, depth + 1, seen);
                }
            }
        }
    }
    if let Ok(root) = super::fsat::open_dir(build) {
        super::fsat::chown_fd(&root, uid);
        walk(&root, uid, 0, &mut 0);
    }
}

async fn run_in_container(engine: &DockerEngine, job: ScriptJob) -> Result<ScriptOutput, String> {
    if !super::script::plain_relative(&job.shown) {
        return Err("the script path is not a plain relative path".into());
    }
    let settings = engine.settings();
    let client = engine.client().await?;
    match crate::docker::image::present(&client, &settings.image).await {
        Ok(true) => {}
        Ok(false) => return Err(crate::docker::image::missing_message(&settings.image)),
        Err(why) => return Err(why),
    }
    let run_short: String = job
        .files
        .run_dir()
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .unwrap_or_default();
    let name = format!("rumi-skill-{run_short}-{}.{}", job.seq, engine.instance());
    let stdin = job
        .files
        .run_dir()
        .join("io")
        .join(format!("stdin-{}.json", job.seq));
    {
        let (path, bytes) = (stdin.clone(), job.stdin.clone());
        tokio::task::spawn_blocking(move || {
            crate::fsutil::write_atomic(&path, &bytes, 0o644)?;
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|_| "preparing the script's input failed".to_string())?
        .map_err(|e| format!("preparing the script's input failed ({})", e.kind()))?;
    }
    let mounts = mounts(&job, &stdin)?;
    let (user, _) = crate::pip::builder::builder_user();
    let mut host = hardened_host_config(settings, mounts, None, None);
    if let Some(t) = host.tmpfs.as_mut() {
        t.insert("/skill".into(), "rw,nosuid,nodev,size=1m,mode=0755".into());
    }
    // No file larger than the disk budget left (the RunScript agent also watches build/'s
    // total while the script runs).
    let fsize = job.max_file_bytes.clamp(1, i64::MAX as u64) as i64;
    host.ulimits
        .get_or_insert_with(Vec::new)
        .push(bollard::models::ResourcesUlimits {
            name: Some("fsize".into()),
            soft: Some(fsize),
            hard: Some(fsize),
        });
    let mut cmd = vec![
        "sh".to_string(),
        "-c".to_string(),
        "exec \"$0\" \"$@\" < /rumi-io/stdin.json".to_string(),
        job.interpreter.program().to_string(),
        format!("/skill/{}", job.shown),
    ];
    cmd.extend(job.argv.iter().cloned());
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_PACK.to_string(), "skill-runtime".to_string()),
        (LABEL_INSTANCE.to_string(), engine.instance().to_string()),
        (LABEL_BOOT.to_string(), engine.boot().to_string()),
        ("rumi.role".to_string(), "skill-script".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(settings.image.clone()),
        cmd: Some(cmd),
        entrypoint: Some(Vec::new()),
        user: Some(user),
        env: Some(container_variables(&job.env)),
        working_dir: Some("/skill".into()),
        labels: Some(labels),
        network_disabled: Some(true),
        attach_stdin: Some(false),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host),
        ..Default::default()
    };
    if engine.owns(&client, &name).await? {
        remove(&client, &name).await?;
    }
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    client
        .create_container(Some(options), body)
        .await
        .map_err(|e| format!("creating the script's container failed ({})", describe(&e)))?;
    let _cleanup = RemoveOnDrop {
        client: client.clone(),
        name: name.clone(),
    };
    let started = Instant::now();
    client
        .start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|e| format!("starting the script's container failed ({})", describe(&e)))?;
    let wait = crate::docker::wait_exit(&client, &name);
    let waited = tokio::select! {
        r = tokio::time::timeout(job.timeout, wait) => r.ok(),
        () = super::script::stop_requested(job.stop.clone()) => None,
    };
    let code = match waited {
        Some(code) => code,
        None => {
            // Removed before answering: the script must not go on writing into build/ while
            // the run reads it.
            let _ = remove(&client, &name).await;
            return Ok(ScriptOutput {
                timed_out: true,
                duration_ms: started.elapsed().as_millis() as u64,
                ..ScriptOutput::default()
            });
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let mut out = ScriptOutput {
        exit_code: (code >= 0).then_some(code),
        duration_ms,
        ..ScriptOutput::default()
    };
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut tail = Tail::default();
    let mut logs = client.logs(&name, Some(options));
    while let Some(Ok(item)) = logs.next().await {
        match item {
            LogOutput::StdOut { message } => {
                let room = MAX_STDOUT.saturating_sub(out.stdout.len());
                out.stdout
                    .extend_from_slice(&message[..message.len().min(room)]);
                out.stdout_truncated |= message.len() > room;
            }
            LogOutput::StdErr { message } => tail.push(&message),
            _ => {}
        }
    }
    out.stderr_tail = tail.finish();
    Ok(out)
}
