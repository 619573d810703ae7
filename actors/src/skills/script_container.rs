//! Strict mode's ScriptRunner (contract §8): a run's scripts run in a **warm container** of the
//! pack runtime image (it has python3, sh and node), one per (run, dependency environment),
//! started at the run's first script of that environment, reused by the next ones and removed
//! when the run ends ([`ScriptRunner::finish`]). It has the hardening of pack containers
//! ([`hardened_host_config`]: no network, read-only root, every capability dropped,
//! `no-new-privileges`, the memory, pids and CPU limits).
//!
//! The container sees the skill the way a host script sees its view: `/skill` is a small
//! tmpfs holding a read-only bind of each top-level entry of the skill directory and the run's
//! `build/` writable at `/skill/build`; the working directory is `/skill`; the dependency
//! environments are read-only at `/env`. Binding the entries one by one (rather than the skill
//! directory with `build/` inside it) means the Docker daemon never has to create a `build`
//! mount point in the skill directory on the host — the skill is never written, not even an
//! empty directory. A top-level entry that is a symbolic link is not bound at all: the daemon
//! would resolve it on the host, outside the skill.
//!
//! **How a warm script runs.** The container's PID 1 is a small job runner
//! (`script_runner.py`, given to `python3 -I -S -B -c`). The kernel attaches to its stdin and
//! stdout before starting it and sends one job per line (argv, the `args` JSON, the file-size
//! limit, the timeout); the runner starts the script with the args on stdin (a memfd),
//! `RLIMIT_FSIZE` set to the disk budget left *for this script*, in `/skill`, reads its stdout
//! (capped at [`MAX_STDOUT`]) and stderr (its tail), and answers one line. A shell or Node script
//! is a new process of its interpreter; **a Python script runs in a fork of the runner** (its
//! modules already imported, `runpy` running the script as `__main__` with the search path,
//! argv, stdin and exit status a `python3 script.py` would have), so it does not pay an
//! interpreter's start-up — tens of milliseconds under the containers' CPU share. The runner
//! never runs script code itself, and drops its last answer before the next fork, so every fork
//! starts from the same clean state; its tracebacks start at the script's own frames. Two
//! differences from a new interpreter are accepted (one run's scripts are one trust domain):
//! the scripts of a run share the runner's string-hash seed, and `sys.flags` shows the runner's
//! `-I -S`. Measured
//! against `docker exec` (create + start attached + inspect: 50–110 ms per exec on the 2-core
//! reference machine, and a second exec would be needed to kill what the script left behind);
//! figures in `benches/skills.rs`, section 4, and the README.
//!
//! **Nothing of one script outlives it.** When the script's main process exits (or its timeout
//! passes) the runner sends `SIGKILL` to every process but itself (`kill(-1)`, repeated until
//! none is left, zombies reaped) *before* it answers: a daemon started with `setsid`, a double
//! fork or `nohup` dies before the result exists, so nothing writes into `build/` after it and
//! nothing runs into the next script. If that sweep fails, or the runner does not answer within
//! the timeout plus a margin, or the disk watch asks to stop (`job.stop`), the container is
//! removed before the result is returned; the next script starts a fresh one.
//!
//! **A script cannot tamper with the runner.** Scripts run as the runner's own uid (the
//! container has no capability to change uid), so the runner protects itself the ways a
//! same-uid process can:
//! * it is PID 1 of the container's pid namespace and installs no signal handler: the kernel
//!   drops every signal sent to a namespace's init from inside the namespace unless the init
//!   handles it, `SIGKILL` included;
//! * it is not dumpable (`PR_SET_DUMPABLE` 0): without `CAP_SYS_PTRACE` (all capabilities are
//!   dropped) a script can neither ptrace it, nor read or write its memory, nor open its
//!   descriptors — the attach stream — through `/proc/1`;
//! * its code is in its own memory (`-c`), the interpreter and standard library on the
//!   read-only root, and `-I -S` keep the script's directories and variables off its `sys.path`;
//!   every module is imported before the first job.
//!
//! So a script's only ways to reach the kernel are its own stdout and stderr (pipes to the
//! runner) and its exit status; it cannot forge another script's answer, and the kernel checks
//! each answer's job id. What a script does leave for the next one of the run is `build/`:
//! `/tmp`, `/dev/shm` and `/dev/mqueue` are emptied after every script (without recursion,
//! whatever the modes), as the run's `io/` directory is for host scripts in permissive mode;
//! if anything stays there, or a System V shared memory segment, semaphore or message queue
//! (they outlive processes and hold the container's memory), the runner answers "not clean"
//! and the container is removed: the next script gets a fresh one.
//!
//! Two scripts of a run never run at once (one Supervisor), but the runner would be safe if
//! they did: each container has an async lock held for the whole job, which also makes the
//! start of a container happen once. A kernel that crashes leaves its containers behind: they
//! carry the boot label and the next boot removes them (`DockerEngine::remove_leftovers`).

use super::script::{ScriptEnv, ScriptJob, ScriptOutput, ScriptRunner, Tail, MAX_STDOUT};
use super::script::{CONTAINER_NODE_ENV, CONTAINER_PYTHON_ENV, MAX_STDERR_LINES};
use super::script_warm::{Warm, RUNNER};
use crate::docker::sandbox::hardened_host_config;
use crate::docker::{remove, DockerEngine};
use crate::docker::{LABEL_BOOT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PACK};
use base64::Engine as _;
use bollard::models::{ContainerCreateBody, HostConfigLogConfig, Mount, MountType};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most top-level entries of a skill bound into the container.
pub const MAX_SKILL_ENTRIES: usize = 64;
/// Most warm containers of one run (one per dependency environment).
pub const MAX_WARM_PER_RUN: usize = 8;
/// How long past a script's own timeout the runner may take to answer before its container is
/// removed (the runner kills the script at the timeout itself).
const ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// How long `finish` waits for a script still running before it leaves the container to its
/// drop guard.
const FINISH_WAIT: Duration = Duration::from_secs(10);
/// stderr bytes the runner keeps (its tail; [`Tail`] then keeps the last lines).
const MAX_STDERR_BYTES: usize = MAX_STDERR_LINES * 1024;

type Slot = Arc<tokio::sync::Mutex<Option<Warm>>>;

#[derive(Default)]
struct Pool {
    slots: HashMap<String, Slot>,
    /// The run ended: no new container.
    finished: bool,
    /// Containers started (names them).
    started: u32,
}

/// Runs a run's scripts in its warm, network-less containers. One per run.
pub struct ContainerRunner {
    engine: Arc<DockerEngine>,
    pool: Arc<parking_lot::Mutex<Pool>>,
}

impl ContainerRunner {
    pub fn new(engine: Arc<DockerEngine>) -> ContainerRunner {
        ContainerRunner {
            engine,
            pool: Arc::default(),
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
        let pool = Arc::clone(&self.pool);
        Box::pin(async move { run_warm(&engine, &pool, job).await })
    }

    fn finish(&self) -> BoxFuture<'static, ()> {
        let pool = Arc::clone(&self.pool);
        Box::pin(async move {
            let slots: Vec<Slot> = {
                let mut p = pool.lock();
                p.finished = true;
                p.slots.drain().map(|(_, s)| s).collect()
            };
            for slot in slots {
                // A script still running owns its container; when it ends, the container is
                // dropped with the slot (and removed by its guard).
                if let Ok(mut held) = tokio::time::timeout(FINISH_WAIT, slot.lock_owned()).await {
                    if let Some(warm) = held.take() {
                        warm.remove().await;
                    }
                }
            }
        })
    }
}

/// The slot of `key`'s container (created on first use); refused once the run has ended.
fn slot(pool: &parking_lot::Mutex<Pool>, key: &str) -> Result<Slot, String> {
    let mut p = pool.lock();
    if p.finished {
        return Err("the run has ended; its script containers are gone".into());
    }
    if let Some(s) = p.slots.get(key) {
        return Ok(Arc::clone(s));
    }
    if p.slots.len() >= MAX_WARM_PER_RUN {
        return Err(format!(
            "the run uses more than {MAX_WARM_PER_RUN} dependency environments; use fewer"
        ));
    }
    let s: Slot = Arc::default();
    p.slots.insert(key.to_string(), Arc::clone(&s));
    Ok(s)
}

fn next_number(pool: &parking_lot::Mutex<Pool>) -> u32 {
    let mut p = pool.lock();
    p.started += 1;
    p.started
}

async fn run_warm(
    engine: &DockerEngine,
    pool: &parking_lot::Mutex<Pool>,
    job: ScriptJob,
) -> Result<ScriptOutput, String> {
    if !super::script::plain_relative(&job.shown) {
        return Err("the script path is not a plain relative path".into());
    }
    let slot = slot(pool, &job.env.key)?;
    // Held for the whole job: one script at a time per container, and one start.
    let mut held = slot.lock_owned().await;
    let mut warm = match held.take() {
        Some(w) => w,
        None => start(engine, &job, next_number(pool)).await?,
    };
    let mut argv = vec![
        job.interpreter.program().to_string(),
        format!("/skill/{}", job.shown),
    ];
    argv.extend(job.argv.iter().cloned());
    let request = json!({
        "id": job.seq,
        "argv": argv,
        "stdin": base64::engine::general_purpose::STANDARD.encode(&job.stdin),
        "fsize": job.max_file_bytes.clamp(1, i64::MAX as u64),
        "timeout_ms": job.timeout.as_millis() as u64,
        // A Python script runs in a fork of the runner (no interpreter start-up per script).
        "fork": true,
    });
    let started = Instant::now();
    let answer = tokio::select! {
        r = tokio::time::timeout(job.timeout + ANSWER_MARGIN, warm.exchange(&request)) => Some(r),
        () = super::script::stop_requested(job.stop.clone()) => None,
    };
    let timed_out = || ScriptOutput {
        timed_out: true,
        duration_ms: started.elapsed().as_millis() as u64,
        ..ScriptOutput::default()
    };
    let answer = match answer {
        // Stopped (the disk budget) or the runner overran: removed before answering, so the
        // script cannot go on writing into build/ while the run reads it.
        None | Some(Err(_)) => {
            warm.remove().await;
            return Ok(timed_out());
        }
        Some(Ok(Err(why))) => {
            warm.remove().await;
            return Err(why);
        }
        Some(Ok(Ok(a))) => a,
    };
    if answer["id"] != json!(job.seq) || answer["clean"] != true {
        // An answer for another job, or processes the runner could not kill: not reused.
        warm.remove().await;
    } else {
        *held = Some(warm);
    }
    if let Some(why) = answer["error"].as_str() {
        return Err(format!(
            "the interpreter {} could not start ({why})",
            job.interpreter.program()
        ));
    }
    decode(&answer, started)
}

fn decode(answer: &Value, started: Instant) -> Result<ScriptOutput, String> {
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(answer[k].as_str().unwrap_or_default())
            .map_err(|_| "the script container's runner answered garbage".to_string())
    };
    let mut stdout = b64("stdout")?;
    stdout.truncate(MAX_STDOUT);
    let mut tail = Tail::default();
    tail.push(&b64("stderr")?);
    Ok(ScriptOutput {
        exit_code: answer["exit_code"].as_i64(),
        stdout,
        stdout_truncated: answer["stdout_truncated"] == true,
        stderr_tail: tail.finish(),
        timed_out: answer["timed_out"] == true,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Creates and starts the container of `job`'s run and environment.
async fn start(engine: &DockerEngine, job: &ScriptJob, number: u32) -> Result<Warm, String> {
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
    let name = format!("rumi-skill-{run_short}-{number}.{}", engine.instance());
    let mounts = mounts(job)?;
    let (user, _) = crate::pip::builder::builder_user();
    let mut host = hardened_host_config(settings, mounts, None, None);
    if let Some(t) = host.tmpfs.as_mut() {
        t.insert("/skill".into(), "rw,nosuid,nodev,size=1m,mode=0755".into());
    }
    // The runner is PID 1 (it reaps what the scripts leave); the attach stream carries every
    // job and answer, and nothing of it needs keeping in a log file.
    host.init = Some(false);
    host.log_config = Some(HostConfigLogConfig {
        typ: Some("none".into()),
        config: None,
    });
    let cmd = vec![
        "python3".to_string(),
        "-I".into(),
        "-S".into(),
        "-B".into(),
        "-c".into(),
        RUNNER.to_string(),
        MAX_STDOUT.to_string(),
        MAX_STDERR_BYTES.to_string(),
    ];
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
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(false),
        tty: Some(false),
        host_config: Some(host),
        ..Default::default()
    };
    if engine.owns(&client, &name).await? {
        remove(&client, &name).await?;
    }
    Warm::start(&client, &name, body, settings.start_timeout).await
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

/// The binds of the skill's top-level entries (links skipped), `build/` and the environments.
fn mounts(job: &ScriptJob) -> Result<Vec<Mount>, String> {
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
