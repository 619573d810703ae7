//! Settings from the environment (contract §14). Every variable is optional; an invalid value
//! stops start-up with a message naming the variable (never a silent default).

use anyhow::{anyhow, bail, Context, Result};
use rumi_actors::affinity::CpuPolicy;
use rumi_actors::{RuntimeConfig, SecurityMode};
use std::path::{Path, PathBuf};

/// Everything the edge needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub home: PathBuf,
    pub host: String,
    pub port: u16,
    pub token_override: Option<String>,
    pub max_body_bytes: usize,
    /// `RUMI_BODY_READ_TIMEOUT`: how long a request body may take to arrive (default 30 s).
    pub body_read_timeout: std::time::Duration,
    /// `RUMI_HTTP_WORKERS`; default: one per CPU the kernel may use (after the CPU policy).
    pub http_workers: Option<usize>,
    pub cpu_policy: CpuPolicy,
    /// `RUMI_SANDBOX_HOST`: where the pack sandboxes live (see [`SandboxHost`]).
    pub sandbox_host: SandboxHost,
    /// `RUMI_PACK_SPILL` (`on` default | `off`): under the `half` policy, may a pack's overlapping
    /// calls run on spill workers on the CPUs the kernel left (see `pack_container`)?
    pub pack_spill: bool,
    pub trace: Option<PathBuf>,
    pub log_filter: String,
    /// `RUMI_EGRESS_SOCK_DIR`: where the per-pack socket directories live.
    pub sockets_dir: Option<PathBuf>,
    /// `RUMI_CORS_ORIGINS`, else the local development servers.
    pub cors_origins: crate::http::cors::CorsOrigins,
    pub runtime: RuntimeConfig,
}

impl Settings {
    /// The installation's layout (with the socket directory override).
    pub fn layout(&self) -> rumi_actors::Layout {
        rumi_actors::Layout::new(self.home.clone()).with_sockets(self.sockets_dir.clone())
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_num<T>(name: &str, min: T, max: T) -> Result<Option<T>>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match var(name) {
        None => Ok(None),
        Some(v) => {
            let n: T = v
                .trim()
                .parse()
                .map_err(|_| anyhow!("{name}={v:?} is not a valid number"))?;
            if n < min || n > max {
                bail!("{name}={v} is out of range ({min}..={max})");
            }
            Ok(Some(n))
        }
    }
}

/// How the home was found, for messages that must say where the CLI looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeSource {
    /// `RUMI_HOME`.
    Env,
    /// The nearest enclosing directory holding `user_data/`.
    Enclosing,
    /// The current directory (it holds `user_data/`, or nothing above it does).
    Current,
}

impl HomeSource {
    pub fn describe(self) -> &'static str {
        match self {
            HomeSource::Env => "from RUMI_HOME",
            HomeSource::Enclosing => "the nearest directory above holding user_data/",
            HomeSource::Current => "the current directory",
        }
    }
}

/// The home, absolute: `RUMI_HOME`, else the nearest enclosing directory that holds
/// `user_data/` (as git finds `.git`), else the current directory.
pub fn home() -> Result<PathBuf> {
    Ok(find_home()?.0)
}

/// [`home`] and how it was found.
pub fn find_home() -> Result<(PathBuf, HomeSource)> {
    let cwd = std::env::current_dir().context("the current directory is not readable")?;
    if let Some(raw) = var("RUMI_HOME") {
        let abs = cwd.join(raw);
        let home = abs
            .canonicalize()
            .map_err(|_| anyhow!("RUMI_HOME: the directory {} does not exist", abs.display()))?;
        if !home.is_dir() {
            bail!("RUMI_HOME: {} is not a directory", home.display());
        }
        return Ok((home, HomeSource::Env));
    }
    enclosing_home(&cwd)
}

/// The nearest of `start` and its ancestors holding a `user_data` directory, else `start`. As git
/// does with `.git`, a found home must be the user's own: a `user_data/` that belongs to someone
/// else, or that anyone may write, is refused (it could be planted above a user's work to collect
/// their commands and hand them a token of its choosing), unless RUMI_HOME names it.
pub fn enclosing_home(start: &Path) -> Result<(PathBuf, HomeSource)> {
    use std::os::unix::fs::MetadataExt;
    let start = start.canonicalize().unwrap_or_else(|_| start.to_path_buf());
    let Some(found) = start.ancestors().find(|d| d.join("user_data").is_dir()) else {
        return Ok((start, HomeSource::Current));
    };
    let meta = std::fs::metadata(found.join("user_data"))
        .with_context(|| format!("{}/user_data cannot be read", found.display()))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me || meta.mode() & 0o002 != 0 {
        bail!(
            "refusing the home {} found from the current directory: its user_data/ {}; \
             set RUMI_HOME to use it anyway",
            found.display(),
            if meta.uid() != me {
                format!("belongs to another user (uid {}, you are {me})", meta.uid())
            } else {
                "may be written by anyone".to_string()
            }
        );
    }
    let source = if found == start {
        HomeSource::Current
    } else {
        HomeSource::Enclosing
    };
    Ok((found.to_path_buf(), source))
}

/// The API address and token override, for the CLI client as well as the server.
pub fn api_address() -> Result<(String, u16)> {
    let host = var("RUMI_API_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port = parse_num::<u16>("RUMI_API_PORT", 0, u16::MAX)?.unwrap_or(8765);
    Ok((host, port))
}

/// Reads every setting; `permissive_flag` is `--permissive`.
pub fn load(permissive_flag: bool) -> Result<Settings> {
    let home = home()?;
    let mode = match (permissive_flag, var("RUMI_SECURITY_MODE").as_deref()) {
        (true, _) => SecurityMode::Permissive,
        (false, None) | (false, Some("strict")) => SecurityMode::Strict,
        (false, Some("permissive")) => SecurityMode::Permissive,
        (false, Some(other)) => {
            bail!("RUMI_SECURITY_MODE={other:?} is invalid: use strict or permissive")
        }
    };
    let (host, port) = api_address()?;
    // Strict mode runs blocks in containers, so a host interpreter is needed only in permissive.
    let python = match (mode, resolve_python(&home)) {
        (_, Ok(p)) => p,
        (SecurityMode::Strict, Err(_)) => PathBuf::from("/usr/bin/python3"),
        (SecurityMode::Permissive, Err(e)) => return Err(e),
    };
    let mut runtime = RuntimeConfig::new(mode, python);
    container_settings(&mut runtime)?;
    runtime.pip_find_links = pip_find_links()?;
    if let Some(n) = parse_num::<usize>("RUMI_MAX_CONCURRENT_FLOWS", 1, 10_000)? {
        runtime.max_concurrent_flows = n;
    }
    if let Some(n) = parse_num::<usize>("RUMI_FLOW_QUEUE_LIMIT", 0, 1_000_000)? {
        runtime.flow_queue_limit = n;
    }
    if let Some(n) = parse_num::<usize>("RUMI_MAX_RESPONSE_BYTES", 1024, 1 << 30)? {
        runtime.max_response_bytes = n;
    }
    // A run's context holds at least one largest value; by default two.
    runtime.max_context_bytes = runtime.max_response_bytes.saturating_mul(2);
    if let Some(n) = parse_num::<usize>("RUMI_MAX_CONTEXT_BYTES", 1024, 1 << 32)? {
        if n < runtime.max_response_bytes {
            bail!(
                "RUMI_MAX_CONTEXT_BYTES={n} is smaller than RUMI_MAX_RESPONSE_BYTES={}: a run's \
                 context must hold at least one value of the largest size; raise it or lower \
                 RUMI_MAX_RESPONSE_BYTES",
                runtime.max_response_bytes
            );
        }
        runtime.max_context_bytes = n;
    }
    let sockets_dir = egress_settings(&mut runtime)?;
    capability_settings(&mut runtime)?;
    if let Some(n) = parse_num::<usize>("RUMI_PACK_WORKERS", 1, 64)? {
        runtime.workers_per_pack = n;
    }
    if let Some(secs) = parse_num::<f64>("RUMI_PACK_SPILL_IDLE", 0.1, 3600.0)? {
        runtime.spill_idle = std::time::Duration::from_secs_f64(secs);
    }
    if let Some(n) = parse_num::<usize>("RUMI_RUN_HISTORY", 1, 1_000_000)? {
        runtime.run_history = n;
    }
    let cpu_policy = match var("RUMI_CPU_AFFINITY").as_deref() {
        None | Some("half") => CpuPolicy::Half,
        Some("pack") => CpuPolicy::Pack,
        Some("off") => CpuPolicy::Off,
        Some(other) => bail!("RUMI_CPU_AFFINITY={other:?} is invalid: use half, pack or off"),
    };
    runtime.pack_cpu_pinning = cpu_policy != CpuPolicy::Off;
    let max_body_bytes =
        parse_num::<usize>("RUMI_MAX_BODY_BYTES", 1024, 1 << 30)?.unwrap_or(1024 * 1024);
    let body_read_timeout = std::time::Duration::from_secs_f64(
        parse_num::<f64>("RUMI_BODY_READ_TIMEOUT", 0.1, 600.0)?.unwrap_or(30.0),
    );
    let http_workers = parse_num::<usize>("RUMI_HTTP_WORKERS", 1, 256)?;
    let sandbox_host = match var("RUMI_SANDBOX_HOST").as_deref() {
        None | Some("auto") => SandboxHost::Auto,
        Some("http") => SandboxHost::Http,
        Some("arbiters") => SandboxHost::Arbiters,
        Some(other) => {
            bail!("RUMI_SANDBOX_HOST={other:?} is invalid: use auto, http or arbiters")
        }
    };
    let pack_spill = match var("RUMI_PACK_SPILL").as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => bail!("RUMI_PACK_SPILL={other:?} is invalid: use on or off"),
    };
    let trace = match var("RUMI_TRACE") {
        None => None,
        Some(v) => match v.strip_prefix("chrome:") {
            Some(file) if !file.is_empty() => Some(PathBuf::from(file)),
            _ => bail!("RUMI_TRACE={v:?} is invalid: use chrome:<file>"),
        },
    };
    let cors_origins = match var("RUMI_CORS_ORIGINS") {
        None => crate::http::cors::CorsOrigins::defaults(),
        Some(raw) => crate::http::cors::CorsOrigins::parse(&raw).map_err(|e| anyhow!(e))?,
    };
    Ok(Settings {
        home,
        host,
        port,
        cors_origins,
        token_override: var("RUMI_API_TOKEN"),
        max_body_bytes,
        body_read_timeout,
        http_workers,
        cpu_policy,
        sandbox_host,
        pack_spill,
        trace,
        log_filter: var("RUMI_LOG").unwrap_or_else(|| "info,actix_server=warn".into()),
        sockets_dir,
        runtime,
    })
}

/// Where the pack sandboxes live (`RUMI_SANDBOX_HOST`; `registry::ContainerHost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxHost {
    /// On the HTTP worker when the kernel serves HTTP on one worker on one CPU (the `half`
    /// policy on a machine of one or two CPUs), else on the pack arbiters.
    Auto,
    /// On the HTTP worker whenever there is one HTTP worker.
    Http,
    /// Always on the pack arbiters.
    Arbiters,
}

impl SandboxHost {
    /// Whether the sandboxes live on the HTTP worker, given the HTTP workers, the CPUs the kernel
    /// may use and its CPU policy.
    pub fn on_http_worker(self, http_workers: usize, cpus: usize, policy: CpuPolicy) -> bool {
        match self {
            SandboxHost::Auto => http_workers == 1 && cpus == 1 && policy == CpuPolicy::Half,
            SandboxHost::Http => http_workers == 1,
            SandboxHost::Arbiters => false,
        }
    }
}

/// Pack container settings (strict mode): image, limits, start policy, socket group and mode.
fn container_settings(runtime: &mut RuntimeConfig) -> Result<()> {
    let c = &mut runtime.container;
    if let Some(image) = var("RUMI_PACK_IMAGE") {
        let valid = image.len() <= 255
            && image
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-/:@".contains(ch));
        if !valid {
            bail!("RUMI_PACK_IMAGE={image:?} is not a valid image reference");
        }
        c.image = image;
    }
    if let Some(mb) = parse_num::<i64>("RUMI_CONTAINER_MEMORY_MB", 32, 1 << 20)? {
        c.memory_bytes = mb * 1024 * 1024;
    }
    if let Some(n) = parse_num::<i64>("RUMI_CONTAINER_PIDS", 8, 100_000)? {
        c.pids_limit = n;
    }
    if let Some(cpus) = parse_num::<f64>("RUMI_CONTAINER_CPUS", 0.01, 1024.0)? {
        c.nano_cpus = (cpus * 1e9) as i64;
    }
    if let Some(secs) = parse_num::<u64>("RUMI_CONTAINER_START_TIMEOUT", 1, 600)? {
        c.start_timeout = std::time::Duration::from_secs(secs);
    }
    if let Some(gid) = parse_num::<u32>("RUMI_EGRESS_SOCKET_GID", 0, u32::MAX - 1)? {
        c.socket_gid = gid;
        runtime.egress.socket_gid = Some(gid);
    }
    if let Some(mode) = socket_mode("RUMI_EGRESS_SOCKET_MODE")? {
        c.socket_mode = mode;
    }
    runtime.container_start_eager = match var("RUMI_CONTAINER_START").as_deref() {
        None | Some("first_call") => false,
        Some("approval") => true,
        Some(other) => {
            bail!("RUMI_CONTAINER_START={other:?} is invalid: use first_call or approval")
        }
    };
    Ok(())
}

/// Egress settings (§6, §14), after `RUMI_MAX_RESPONSE_BYTES`; answers the socket directory
/// override.
fn egress_settings(runtime: &mut RuntimeConfig) -> Result<Option<PathBuf>> {
    let max_response = runtime.max_response_bytes;
    let e = &mut runtime.egress;
    if let Some(n) = parse_num::<usize>("RUMI_EGRESS_BUFFER_BYTES", 1 << 20, 1 << 40)? {
        let one = max_response.saturating_mul(rumi_actors::egress::budget::CHARGE_PER_BYTE);
        if n < one {
            bail!(
                "RUMI_EGRESS_BUFFER_BYTES={n} cannot hold one response of RUMI_MAX_RESPONSE_BYTES={max_response} \
                 (it is charged {one} bytes); use at least {one}"
            );
        }
        e.buffer_bytes = Some(n);
    }
    if let Some(list) = var("RUMI_EGRESS_ALLOW_CIDRS") {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let cidr = item
                .parse()
                .map_err(|why| anyhow!("RUMI_EGRESS_ALLOW_CIDRS: {why}"))?;
            e.allow_cidrs.push(cidr);
        }
    }
    if let Some(n) = parse_num::<usize>("RUMI_EGRESS_MAX_CONNECTIONS", 1, 4096)? {
        e.max_connections = n;
    }
    if let Some(secs) = parse_num::<f64>("RUMI_EGRESS_READ_TIMEOUT", 0.1, 300.0)? {
        e.read_timeout = std::time::Duration::from_secs_f64(secs);
    }
    if let Some(file) = var("RUMI_EGRESS_CA_FILE") {
        let path = PathBuf::from(&file);
        if !path.is_file() {
            bail!("RUMI_EGRESS_CA_FILE={file:?} is not a file");
        }
        e.extra_ca_file = Some(path);
    }
    match var("RUMI_EGRESS_SOCK_DIR") {
        None => Ok(None),
        Some(dir) => {
            let path = PathBuf::from(&dir);
            if !path.is_absolute() {
                bail!("RUMI_EGRESS_SOCK_DIR={dir:?} must be an absolute path");
            }
            Ok(Some(path))
        }
    }
}

/// Parses a socket mode variable: 0600, 0660 (the default) or 0666 (warned).
fn socket_mode(name: &str) -> Result<Option<u32>> {
    let Some(mode) = var(name) else {
        return Ok(None);
    };
    Ok(Some(match mode.trim() {
        "0600" | "600" => 0o600,
        "0660" | "660" => 0o660,
        "0666" | "666" => {
            eprintln!("warning: {name}=0666 lets every local user reach the pack sockets");
            0o666
        }
        other => bail!("{name}={other:?} is invalid: use 0600, 0660 or 0666"),
    }))
}

/// Capability settings (§7, §14).
fn capability_settings(runtime: &mut RuntimeConfig) -> Result<()> {
    let c = &mut runtime.capability;
    if let Some(n) = parse_num::<u32>("RUMI_SECRET_GET_RATE_LIMIT", 0, 1_000_000)? {
        c.secret_get_rate_limit = n;
    }
    if let Some(n) = parse_num::<usize>("RUMI_CAPABILITY_MAX_CONNECTIONS", 1, 4096)? {
        c.max_connections = n;
    }
    if let Some(gid) = parse_num::<u32>("RUMI_CAPABILITY_SOCKET_GID", 0, u32::MAX - 1)? {
        c.socket_gid = Some(gid);
    }
    c.socket_mode = socket_mode("RUMI_CAPABILITY_SOCKET_MODE")?;
    if let Some(dir) = var("RUMI_CAPABILITY_SOCK_DIR") {
        let path = PathBuf::from(&dir);
        if !path.is_absolute() {
            bail!("RUMI_CAPABILITY_SOCK_DIR={dir:?} must be an absolute path");
        }
        c.sock_dir = Some(path);
    }
    Ok(())
}

/// The Python interpreter for pack workers, as an absolute path to a real executable.
///
/// `RUMI_PYTHON` wins when set. Otherwise `python3` is looked up on `PATH`: a real binary is used
/// as it is. A wrapper script (a version manager's shim) is resolved by asking it for
/// `sys.executable` — which costs ~200 ms here, the whole start-up budget — so the answer is
/// cached in `user_data/runtime/python-interpreter` and reused while it still names an executable
/// binary.
fn resolve_python(home: &Path) -> Result<PathBuf> {
    if let Some(p) = var("RUMI_PYTHON") {
        let path = PathBuf::from(&p);
        if path.is_absolute() && is_binary(&path) {
            return Ok(path);
        }
        return probe(&p);
    }
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("python3"))
                .find(|p| p.is_file())
        })
        .unwrap_or(None)
        .ok_or_else(|| {
            anyhow!("RUMI_PYTHON: no python3 on PATH; install Python 3 or point RUMI_PYTHON at it")
        })?;
    if is_binary(&found) {
        return Ok(found.canonicalize().unwrap_or(found));
    }
    let cache = home.join("user_data/runtime/python-interpreter");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        let cached = PathBuf::from(text.trim());
        if cached.is_absolute() && is_binary(&cached) {
            return Ok(cached);
        }
    }
    let resolved = probe(&found.to_string_lossy())?;
    let _ = std::fs::create_dir_all(cache.parent().unwrap_or(home));
    let _ = std::fs::write(&cache, resolved.to_string_lossy().as_bytes());
    Ok(resolved)
}

/// An executable ELF file (not a script).
fn is_binary(path: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return false;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

fn probe(candidate: &str) -> Result<PathBuf> {
    let out = std::process::Command::new(candidate)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map_err(|_| anyhow!("RUMI_PYTHON: cannot run {candidate:?}; install Python 3 or point RUMI_PYTHON at it"))?;
    if !out.status.success() {
        bail!("RUMI_PYTHON: {candidate:?} did not run");
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.is_absolute() {
        bail!("RUMI_PYTHON: {candidate:?} did not report its executable");
    }
    Ok(path)
}

/// `RUMI_PIP_FIND_LINKS`: an existing directory (absolute, or relative to the working directory)
/// of wheels pip downloads from instead of an index (tests, air-gapped sites).
fn pip_find_links() -> Result<Option<PathBuf>> {
    let Some(raw) = var("RUMI_PIP_FIND_LINKS") else {
        return Ok(None);
    };
    let dir = std::fs::canonicalize(&raw).map_err(|_| {
        anyhow!("RUMI_PIP_FIND_LINKS: the directory {raw:?} does not exist; set it to a directory of wheels or unset it")
    })?;
    if !dir.is_dir() {
        bail!("RUMI_PIP_FIND_LINKS: {raw:?} is not a directory; set it to a directory of wheels or unset it");
    }
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandboxes_live_on_the_http_worker_only_when_asked_or_when_it_is_alone_on_one_cpu() {
        use CpuPolicy::{Half, Off, Pack};
        use SandboxHost::{Arbiters, Auto, Http};
        for (host, workers, cpus, policy, on) in [
            (Auto, 1, 1, Half, true),
            (Auto, 2, 1, Half, false),
            (Auto, 1, 2, Half, false),
            (Auto, 1, 1, Pack, false),
            (Auto, 1, 1, Off, false),
            (Http, 1, 8, Off, true),
            (Http, 2, 1, Half, false),
            (Arbiters, 1, 1, Half, false),
        ] {
            assert_eq!(
                host.on_http_worker(workers, cpus, policy),
                on,
                "{host:?} with {workers} HTTP workers, {cpus} CPUs, {policy:?}"
            );
        }
    }
}
