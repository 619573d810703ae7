//! Dependency environments of skill scripts (contract §8 "Dependencies", §10 "install cache").
//!
//! [`SkillEnvs`] is one per kernel, shared by every run. An environment is named by the hash of
//! its runtime and canonical dependency set ([`rumi_domain::skill::deps`]) and lives at
//! `user_data/skill_envs/python/<hash>/` (the package directory put on `PYTHONPATH`) or
//! `user_data/skill_envs/node/<hash>/node_modules` (put on `NODE_PATH`):
//!
//! * **Built once.** One build per hash at a time ([`OnceBuilds`]): a run that needs an
//!   environment being built joins that build and gets its result. Two kernels never share a
//!   home (`home_lock.rs` refuses a second kernel on the same home), so in-process is enough.
//! * **Bounded.** At most [`MAX_CONCURRENT_BUILDS`] builds run at once in the kernel (a
//!   semaphore; a run waiting for a permit still races its own deadline). A build lasts while
//!   some run waits for it: when the last one stops waiting (its deadline, its tool call
//!   dropped), the build is dropped — its download and unpack processes are killed (their
//!   process group), a builder container is removed, its temporary directories are removed —
//!   so ended runs leave no work behind.
//! * **Never half.** It is built into `.tmp-<hash>-<random>` beside its final place and renamed
//!   into place only when complete (after a file system sync): a crash never leaves a half
//!   environment that looks ready. Leftovers of a crash are removed at the next build of that
//!   hash and when the kernel starts.
//! * **Reused.** A ready environment is used as it is: no download, no lock.
//! * **Downloads in the kernel, installs offline.** pip: `python3 -m pip download
//!   --only-binary=:all:` with the machine's pip configuration (transitive dependencies resolved
//!   by pip; only wheels, so nothing is built and no package code runs), or
//!   `--no-index --find-links $RUMI_SKILL_FIND_LINKS`; the wheels are unpacked by the stdlib
//!   `rumi_wheel_install.py` ([`crate::pip::install::Installer::fetch_and_unpack`]). npm: see
//!   [`npm`]. In strict mode the unpacking runs in the network-less builder container
//!   ([`crate::pip::builder`]), as the pack user when the kernel is root, and the tree is taken
//!   back by the kernel's user after.
//! * **Read-only to scripts.** Directories 0755, files 0644, owned by the kernel's user: a
//!   container script (the pack user, with the environment bound read-only) reads and cannot
//!   write it. A host script (permissive mode) runs as the kernel's user (root in a user
//!   namespace when the kernel is root) and could change it — permissive mode says so
//!   (`isolation: "host"`).
//!
//! * **Self-cleaning.** [`MAX_ENVS`] environments per runtime: a build first removes the least
//!   recently used environments that no run holds ([`store`]); a run holds the environments its
//!   scripts used until it ends, at most [`store::MAX_ENVS_PER_RUN`] of them.
//!
//! Caps: [`MAX_ENVS`] environments per runtime, [`store::MAX_ENVS_PER_RUN`] per run,
//! [`MAX_CONCURRENT_BUILDS`] builds at once, the download and unpack caps of the pip installer
//! and of [`npm`], [`BUILD_DEADLINE`] per build. A build is recorded in
//! `user_data/skill_envs/builds.jsonl` (runtime, hash, ok, ms).

pub mod npm;
mod once;
pub mod store;

pub use once::OnceBuilds;

use super::agent::blocking;
use super::context::{Outcome, RunContext};
use crate::docker::DockerEngine;
use crate::pip::install::{self, Fetch, Installer};
use rumi_domain::skill::deps::{env_hash, DepSet, EnvRuntime};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{EnvUse, RunHolds, Uses};

/// Most environments kept per runtime (a build first removes the least recently used).
pub const MAX_ENVS: usize = 256;
/// Most builds running at once in the kernel.
pub const MAX_CONCURRENT_BUILDS: usize = 2;
/// How long one build may take, downloads included.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(600);
/// Largest `builds.jsonl` before it starts again.
const MAX_BUILD_LOG: u64 = 1024 * 1024;
/// Longest install log given to the agent.
pub const MAX_INSTALL_LOG: usize = 4000;

/// The dependency environments of a kernel.
pub struct SkillEnvs {
    root: PathBuf,
    installer: Installer,
    find_links: Option<PathBuf>,
    npm_tarballs: Option<PathBuf>,
    once: OnceBuilds<PathBuf, String>,
    permits: tokio::sync::Semaphore,
    uses: Arc<Uses>,
    runs: RunHolds,
    builds: AtomicU64,
}

/// Where a script's environments are.
#[derive(Debug, Clone, Default)]
pub struct Ensured {
    pub python: Option<PathBuf>,
    pub node: Option<PathBuf>,
    /// Names the pair (`""`: none).
    pub key: String,
}

impl SkillEnvs {
    /// The environments under `user_data/skill_envs/`; `RUMI_SKILL_FIND_LINKS` and
    /// `RUMI_SKILL_NPM_TARBALLS` are read here. Removes what interrupted builds left.
    pub fn new(
        user_data: &Path,
        python: PathBuf,
        runtime_dir: PathBuf,
        docker: Option<Arc<DockerEngine>>,
    ) -> SkillEnvs {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = user_data.join("skill_envs");
        let envs = SkillEnvs {
            installer: Installer {
                python,
                find_links: None,
                work_root: root.join(".work"),
                runtime_dir,
                docker,
            },
            root,
            find_links: var("RUMI_SKILL_FIND_LINKS"),
            npm_tarballs: var("RUMI_SKILL_NPM_TARBALLS"),
            once: OnceBuilds::default(),
            permits: tokio::sync::Semaphore::new(MAX_CONCURRENT_BUILDS),
            uses: Arc::default(),
            runs: RunHolds::default(),
            builds: AtomicU64::new(0),
        };
        remove_leftovers(&envs.root, None);
        envs
    }

    /// Builds run by this kernel so far.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::SeqCst)
    }

    fn dir(&self, rt: EnvRuntime) -> PathBuf {
        self.root.join(rt.as_str())
    }

    /// Builds in flight now (some run still waits for each).
    pub fn builds_in_flight(&self) -> usize {
        self.once.in_flight()
    }

    /// `run` has ended: the environments it held may be removed when room is needed.
    pub fn release_run(&self, run: &str) {
        self.runs.release(run);
    }

    /// The ready environment of `items` for `rt` (built first if missing; the build shared
    /// with concurrent callers), held by the answered [`EnvUse`] — taken before the
    /// environment is looked at, so it is never removed between this answer and its use — or
    /// the failure's log (no host path in it). Dropping the future stops waiting; the build
    /// stops when no caller waits for it any more.
    pub async fn ensure(
        self: &Arc<Self>,
        rt: EnvRuntime,
        items: Vec<String>,
    ) -> Result<(PathBuf, EnvUse), String> {
        let hash = env_hash(rt, &items);
        let final_dir = self.dir(rt).join(&hash);
        let usable = match rt {
            EnvRuntime::Python => final_dir.clone(),
            EnvRuntime::Node => final_dir.join("node_modules"),
        };
        let key = store::use_key(rt, &hash);
        let held = self.uses.hold(&key);
        let ready = || final_dir.is_dir().then(|| usable.clone());
        let me = Arc::clone(self);
        let built_usable = usable.clone();
        let path = self
            .once
            .run(&key, ready, move || async move {
                let _permit = me
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| "the kernel is stopping".to_string())?;
                let started = Instant::now();
                let built = tokio::time::timeout(BUILD_DEADLINE, me.build(rt, &items, &hash)).await;
                let built = built.unwrap_or_else(|_| {
                    Err(format!(
                        "the build did not finish within {} s",
                        BUILD_DEADLINE.as_secs()
                    ))
                });
                me.record(rt, &hash, built.is_ok(), started.elapsed());
                built.map(|()| built_usable)
            })
            .await?;
        store::stamp(&final_dir);
        Ok((path, held))
    }

    fn record(&self, rt: EnvRuntime, hash: &str, ok: bool, took: Duration) {
        self.builds.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            runtime = rt.as_str(),
            hash,
            ok,
            ms = took.as_millis() as u64,
            "skill environment build"
        );
        let log = self.root.join("builds.jsonl");
        if std::fs::metadata(&log).is_ok_and(|m| m.len() > MAX_BUILD_LOG) {
            let _ = std::fs::remove_file(&log);
        }
        let line = json!({"runtime": rt.as_str(), "hash": hash, "ok": ok, "ms": took.as_millis() as u64, "at": chrono::Utc::now().to_rfc3339()});
        if let Ok((mut f, _)) = crate::fsutil::open_log(&log, 0o600) {
            use std::io::Write;
            let _ = writeln!(f, "{line}");
        }
    }

    async fn build(&self, rt: EnvRuntime, items: &[String], hash: &str) -> Result<(), String> {
        let parent = self.dir(rt);
        {
            let (parent, root) = (parent.clone(), self.root.clone());
            let (h, uses) = (hash.to_string(), Arc::clone(&self.uses));
            blocking(move || {
                let io = |e: std::io::Error| {
                    format!(
                        "the environments' directory cannot be prepared ({})",
                        e.kind()
                    )
                };
                crate::fsutil::ensure_dir(&root, 0o755).map_err(io)?;
                crate::fsutil::ensure_dir(&parent, 0o755).map_err(io)?;
                remove_leftovers(&root, Some(&h));
                store::make_room(&parent, rt, &uses, MAX_CONCURRENT_BUILDS)
            })
            .await?;
        }
        let suffix = install::random_suffix();
        let staging = parent.join(format!(".tmp-{hash}-{suffix}"));
        let work = self.root.join(".work").join(format!("{hash}-{suffix}"));
        // Removes both if this build is dropped midway (nobody waits for it any more).
        let scratch = Scratch {
            dirs: vec![work.clone(), staging.clone()],
            what: format!("{}/{}", rt.as_str(), &hash[..16]),
        };
        let outcome = match rt {
            EnvRuntime::Python => self.build_python(items, hash, &work, &staging).await,
            EnvRuntime::Node => {
                npm::build(
                    &npm::NpmBuild {
                        installer: &self.installer,
                        tarballs: self.npm_tarballs.as_deref(),
                        name: &format!("skill-env-{}", &hash[..16]),
                    },
                    items,
                    &work,
                    &staging,
                )
                .await
            }
        };
        // From here one blocking task puts the tree in place and cleans up: it finishes even if
        // this build is dropped meanwhile, so the guard stands down first.
        scratch.disarm();
        let target = parent.join(hash);
        let (w, s, t) = (work.clone(), staging.clone(), target.clone());
        let outcome = blocking(move || {
            let placed = outcome.and_then(|()| {
                install::swap_in(&s, &t)
                    .map_err(|e| format!("putting the environment in place failed ({})", e.kind()))
            });
            if placed.is_ok() {
                store::stamp(&t);
            }
            let _ = std::fs::remove_dir_all(&w);
            let _ = std::fs::remove_dir_all(&s);
            placed
        })
        .await;
        outcome.map_err(|e| {
            let mut paths: Vec<(&Path, &str)> = vec![
                (&staging, "<env>"),
                (&work, "<work>"),
                (&self.root, "<skill_envs>"),
            ];
            if let Some(f) = &self.find_links {
                paths.push((f, "<RUMI_SKILL_FIND_LINKS>"));
            }
            if let Some(t) = &self.npm_tarballs {
                paths.push((t, "<RUMI_SKILL_NPM_TARBALLS>"));
            }
            cap_log(&install::clean(&e, &paths))
        })
    }

    async fn build_python(
        &self,
        items: &[String],
        hash: &str,
        work: &Path,
        staging: &Path,
    ) -> Result<(), String> {
        let fetch = Fetch {
            name: &format!("skill-env-{}", &hash[..16]),
            requirements: items.iter().map(|i| format!("{i}\n")).collect(),
            resolve_deps: true,
            find_links: self.find_links.as_deref(),
            find_links_label: "<RUMI_SKILL_FIND_LINKS>",
            index_url: None,
            log_lines: 20,
        };
        let installed = self
            .installer
            .fetch_and_unpack(&fetch, work, staging)
            .await?;
        // Every package asked for is there (pip resolved the set; the unpacker says what it
        // unpacked).
        let names: std::collections::BTreeSet<String> = installed
            .iter()
            .map(|d| rumi_domain::pip::normalize(&d.name))
            .collect();
        for item in items {
            let name: String = item
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !names.contains(&name) {
                return Err(format!("{name} was not installed by the download"));
            }
        }
        Ok(())
    }
}

/// The temporary directories of a build, removed (on a blocking thread) when the build is
/// dropped before it got to put its tree in place.
struct Scratch {
    dirs: Vec<PathBuf>,
    what: String,
}

impl Scratch {
    fn disarm(mut self) {
        self.dirs.clear();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        tracing::info!(
            env = %self.what,
            "skill environment build stopped: no run waits for it any more"
        );
        let dirs = std::mem::take(&mut self.dirs);
        let remove = move || {
            for d in dirs {
                let _ = std::fs::remove_dir_all(&d);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Removes `.tmp-<hash>-*`, `.gone-<hash>-*` and the work directories of `hash` (all of them
/// when `None`). Blocking.
fn remove_leftovers(root: &Path, hash: Option<&str>) {
    let prefix = |p: &str| match hash {
        Some(h) => format!("{p}{h}-"),
        None => p.to_string(),
    };
    for (dir, p) in [
        (root.join(EnvRuntime::Python.as_str()), prefix(".tmp-")),
        (root.join(EnvRuntime::Node.as_str()), prefix(".tmp-")),
        (root.join(EnvRuntime::Python.as_str()), prefix(".gone-")),
        (root.join(EnvRuntime::Node.as_str()), prefix(".gone-")),
        (root.join(".work"), prefix("")),
    ] {
        let Ok(list) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in list.flatten() {
            if e.file_name().to_string_lossy().starts_with(&p) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn cap_log(s: &str) -> String {
    if s.len() <= MAX_INSTALL_LOG {
        return s.to_string();
    }
    let mut cut = s.len() - MAX_INSTALL_LOG;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &s[cut..])
}

/// A script's environments for `set` (none when the set is empty), raced against the run's
/// deadline; a failure is the tool result the agent gets (the script not run).
pub async fn ensure_for(
    ctx: &Arc<RunContext>,
    set: &DepSet,
) -> Result<super::script::ScriptEnv, Outcome> {
    if set.is_empty() {
        return Ok(Default::default());
    }
    let envs = Arc::clone(&ctx.envs);
    let work = async {
        let mut out = Ensured::default();
        let wanted: Vec<(EnvRuntime, Vec<String>)> = [EnvRuntime::Python, EnvRuntime::Node]
            .into_iter()
            .map(|rt| (rt, set.items(rt)))
            .filter(|(_, items)| !items.is_empty())
            .collect();
        let mut keys: Vec<String> = wanted
            .iter()
            .map(|(rt, items)| env_hash(*rt, items))
            .collect();
        let use_keys: Vec<String> = wanted
            .iter()
            .zip(&keys)
            .map(|((rt, _), h)| store::use_key(*rt, h))
            .collect();
        envs.runs.admit(&ctx.run_id, &use_keys)?;
        let mut held = Vec::new();
        for (rt, items) in wanted {
            let (dir, hold) = envs.ensure(rt, items).await?;
            held.push(hold);
            match rt {
                EnvRuntime::Python => out.python = Some(dir),
                EnvRuntime::Node => out.node = Some(dir),
            }
        }
        // Held until the run ends (its warm containers mount them).
        envs.runs.keep(&ctx.run_id, held);
        out.key = if keys.len() == 1 {
            keys.remove(0)
        } else {
            env_hash(EnvRuntime::Python, &keys)
        };
        Ok::<_, String>(out)
    };
    match tokio::time::timeout_at(ctx.deadline, work).await {
        Ok(Ok(e)) => Ok(super::script::ScriptEnv {
            key: e.key,
            python: e.python,
            node: e.node,
        }),
        Ok(Err(log)) => {
            let mut o = Outcome::ok(json!({
                "ok": false,
                "error_type": "script_failed",
                "error": format!("installing the dependencies failed: {}; the script was not run. Change the dependencies, or go on without them", first_line(&log)),
                "install_log": log,
                "files_written": [],
                "from_memo": false,
            }));
            o.script_failed = true;
            o.tally.script_failures += 1;
            o.diff_summary = "dependencies not installed".into();
            ctx.last_script_failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Err(o)
        }
        Err(_) => {
            let mut o = Outcome::err(
                "timeout",
                "the run's time budget ended while the dependencies were installed; the script was not run (the build goes on only while another run waits for it)",
            )
            .ending(rumi_domain::skill::act::ExitReason::BudgetExceeded(
                rumi_domain::skill::budget::Which::Time,
            ));
            o.script_failed = true;
            Err(o)
        }
    }
}

fn first_line(log: &str) -> String {
    let l = log.lines().next().unwrap_or("").trim();
    let t: String = l.chars().take(300).collect();
    if t.len() < l.len() {
        format!("{t}…")
    } else {
        t
    }
}

/// The dependency set of one `run_script` call (`dependencies` as the model gave it) for the
/// script at `path`: the call's lists, the skill root's `requirements.txt` and `package.json`,
/// and a `.py` script's PEP 723 header. A refusal is `invalid_arguments` naming the item.
/// Blocking (reads files).
pub fn dependency_set(
    ctx: &RunContext,
    call: Option<&serde_json::Value>,
    path: &rumi_domain::skill::paths::ToolPath,
    interpreter: super::script::Interpreter,
) -> Result<DepSet, Outcome> {
    use serde_json::Value;
    let refuse = |why: String| Outcome::err("invalid_arguments", why);
    let mut lists: [Vec<String>; 2] = Default::default();
    match call {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let slot = match k.as_str() {
                    "pip" => 0,
                    "npm" => 1,
                    _ => {
                        return Err(refuse(format!(
                            "dependencies has a key {:?}; it is {{pip: [...], npm: [...]}}",
                            k.chars().take(40).collect::<String>()
                        )))
                    }
                };
                let items = match v {
                    Value::Null => continue,
                    Value::Array(items) if items.len() <= rumi_domain::skill::deps::MAX_SPECS => {
                        items
                    }
                    _ => {
                        return Err(refuse(format!(
                            "dependencies.{k} is a list of at most {} strings",
                            rumi_domain::skill::deps::MAX_SPECS
                        )))
                    }
                };
                for item in items {
                    let Some(s) = item.as_str() else {
                        return Err(refuse(format!("dependencies.{k} is a list of strings")));
                    };
                    lists[slot].push(s.to_string());
                }
            }
        }
        Some(_) => {
            return Err(refuse(
                "dependencies is {pip: [...], npm: [...]}".to_string(),
            ))
        }
    }
    // The skill's files serve the scripts that can use them: requirements.txt the `.py` and
    // `.sh` scripts, package.json the `.js` and `.sh` ones (the call's lists always count).
    use super::script::Interpreter;
    let root = ctx.files.skill_root();
    let requirements = match interpreter {
        Interpreter::Node => None,
        _ => read_dep_file(root, "requirements.txt", "requirements.txt").map_err(refuse)?,
    };
    let package = match interpreter {
        Interpreter::Python => None,
        _ => read_dep_file(root, "package.json", "package.json").map_err(refuse)?,
    };
    let script = if interpreter == Interpreter::Python {
        match ctx.files.resolve(path, true) {
            super::workspace::Resolve::Found(r) if !r.is_dir => {
                read_dep_file(&r.root, &r.rel_real, &r.shown).map_err(refuse)?
            }
            _ => None,
        }
    } else {
        None
    };
    let [call_pip, call_npm] = lists;
    DepSet::collect(&rumi_domain::skill::deps::Sources {
        call_pip,
        call_npm,
        requirements_txt: requirements.as_deref(),
        package_json: package.as_deref(),
        python_script: script.as_deref(),
    })
    .map_err(|e| {
        refuse(format!(
            "{e}; nothing was installed and the script was not run"
        ))
    })
}

/// Reads a file of the skill (no link followed) for its dependencies: `None` when absent; an
/// `invalid_arguments` reason when it is a link, not a file, or larger than the cap.
pub fn read_dep_file(root: &Path, rel: &str, shown: &str) -> Result<Option<String>, String> {
    use std::io::Read;
    let cap = rumi_domain::skill::deps::MAX_FILE_BYTES;
    match super::fsat::open_file(root, rel) {
        Ok(f) => {
            let mut buf = Vec::new();
            f.take(cap as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| format!("{shown} cannot be read ({})", e.kind()))?;
            if buf.len() > cap {
                return Err(format!(
                    "{shown} is larger than {cap} bytes; its dependencies are not read"
                ));
            }
            String::from_utf8(buf)
                .map(Some)
                .map_err(|_| format!("{shown} is not UTF-8 text"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "{shown} cannot be read as a plain file of the skill ({})",
            e.kind()
        )),
    }
}

#[cfg(test)]
mod tests;
