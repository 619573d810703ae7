//! The environment store keeps itself within [`MAX_ENVS`] per runtime: which environments are in
//! use, when each was last used, and making room by removing the least recently used ones that
//! nothing uses.
//!
//! * **In use.** [`SkillEnvs::ensure`](super::SkillEnvs::ensure) takes an [`EnvUse`] of the
//!   environment *before* it looks whether it is ready; a run keeps it until it has ended (its
//!   warm script containers removed), so an environment on a script's `PYTHONPATH` or mounted
//!   in a run's container is never removed under it. A build holds one too (its caller's).
//! * **Last used.** The environment directory's modification time, set by every `ensure` that
//!   finds it ready and by its build: it survives a restart of the kernel.
//! * **Removal.** Under the in-use map's lock, an environment nobody uses is renamed to
//!   `.gone-<hash>-<random>` (one atomic step; a concurrent `ensure` of that hash then finds it
//!   missing and builds it again) and removed after, outside the lock. Leftover `.gone-*`
//!   directories are removed when the kernel starts.

use super::MAX_ENVS;
use parking_lot::Mutex;
use rumi_domain::skill::deps::EnvRuntime;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Most environments one run may use (a model cannot hold the whole store in one run).
pub const MAX_ENVS_PER_RUN: usize = 32;

/// How many holders each environment (`<runtime>/<hash>`) has.
#[derive(Default)]
pub struct Uses {
    counts: Mutex<HashMap<String, usize>>,
}

/// One holder of an environment: released when dropped.
pub struct EnvUse {
    uses: Arc<Uses>,
    key: String,
}

impl std::fmt::Debug for EnvUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvUse({})", self.key)
    }
}

impl EnvUse {
    /// `<runtime>/<hash>`.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for EnvUse {
    fn drop(&mut self) {
        let mut counts = self.uses.counts.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Names an environment in the in-use map.
pub fn use_key(rt: EnvRuntime, hash: &str) -> String {
    format!("{}/{hash}", rt.as_str())
}

impl Uses {
    /// A new holder of `key`.
    pub fn hold(self: &Arc<Self>, key: &str) -> EnvUse {
        *self.counts.lock().entry(key.to_string()).or_insert(0) += 1;
        EnvUse {
            uses: Arc::clone(self),
            key: key.to_string(),
        }
    }

    /// Holders of `key` now.
    pub fn holders(&self, key: &str) -> usize {
        self.counts.lock().get(key).copied().unwrap_or(0)
    }
}

/// The environments each run holds until it ends.
#[derive(Default)]
pub struct RunHolds {
    runs: Mutex<HashMap<String, HashMap<String, EnvUse>>>,
}

impl RunHolds {
    /// Whether `run` may use the environments `keys` (a refusal says why): at most
    /// [`MAX_ENVS_PER_RUN`] different ones per run.
    pub fn admit(&self, run: &str, keys: &[String]) -> Result<(), String> {
        let runs = self.runs.lock();
        let held = runs.get(run);
        let new = keys
            .iter()
            .filter(|k| !held.is_some_and(|h| h.contains_key(*k)))
            .count();
        let have = held.map_or(0, HashMap::len);
        if have + new > MAX_ENVS_PER_RUN {
            return Err(format!(
                "this run has used {have} dependency environments, the most per run is {MAX_ENVS_PER_RUN}; use a dependency set the run already used, or none"
            ));
        }
        Ok(())
    }

    /// `run` keeps `uses` until [`RunHolds::release`].
    pub fn keep(&self, run: &str, uses: Vec<EnvUse>) {
        let mut runs = self.runs.lock();
        let held = runs.entry(run.to_string()).or_default();
        for u in uses {
            held.entry(u.key.clone()).or_insert(u);
        }
    }

    /// `run` has ended: its environments may be removed when room is needed.
    pub fn release(&self, run: &str) {
        let gone = self.runs.lock().remove(run);
        drop(gone);
    }
}

/// Marks `dir` as used now (its modification time). Blocking; best effort.
pub fn stamp(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; a null `times` sets both times to now.
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
}

/// Makes room in `parent` (the environments of `rt`) for `room` more: while more than
/// `MAX_ENVS - room` environments are there, removes the least recently used one that nobody
/// holds. Answers how many were removed; a refusal when [`MAX_ENVS`] are left, all in use.
/// Blocking.
pub fn make_room(parent: &Path, rt: EnvRuntime, uses: &Uses, room: usize) -> Result<usize, String> {
    let limit = MAX_ENVS.saturating_sub(room);
    let mut envs: Vec<(SystemTime, String)> = std::fs::read_dir(parent)
        .map_err(|e| format!("the environments cannot be listed ({})", e.kind()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            let when = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            Some((when, name))
        })
        .collect();
    if envs.len() <= limit {
        return Ok(0);
    }
    envs.sort();
    let mut count = envs.len();
    let mut gone = Vec::new();
    for (_, name) in &envs {
        if count <= limit {
            break;
        }
        let to = parent.join(format!(
            ".gone-{name}-{}",
            crate::pip::install::random_suffix()
        ));
        {
            // The rename happens under the lock a new holder takes: a holder that came first
            // keeps it; one that comes after finds it missing.
            let counts = uses.counts.lock();
            if counts.contains_key(&use_key(rt, name)) {
                continue;
            }
            if std::fs::rename(parent.join(name), &to).is_err() {
                continue;
            }
        }
        count -= 1;
        gone.push(to);
    }
    let removed = gone.len();
    for g in gone {
        let _ = std::fs::remove_dir_all(&g);
    }
    if removed > 0 {
        tracing::info!(
            runtime = rt.as_str(),
            removed,
            kept = count,
            "least recently used skill environments removed"
        );
    }
    if count >= MAX_ENVS {
        return Err(format!(
            "{count} {} environments exist and every one is in use by a running skill run; try again when runs have ended",
            rt.as_str()
        ));
    }
    Ok(removed)
}
