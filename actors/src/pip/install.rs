//! Downloading and installing one approved lock (contract §9 "pip").
//!
//! 1. Download: the host's `python3 -m pip download --only-binary=:all: --no-deps -r <ours> -d
//!    <tmp>` — the requirements file is rewritten by the kernel from the parsed pins, never the
//!    pack's text; `--no-deps` because the lock pins everything; only wheels, so nothing is built
//!    and no package code runs. `RUMI_PIP_FIND_LINKS` makes it `--no-index --find-links <dir>`;
//!    else the approval's `index_url`, else the machine's pip configuration. pip runs with a
//!    scrubbed environment (never the kernel's variables: the API token and secrets stay out),
//!    a deadline and capped output.
//! 2. Install offline: the stdlib-only `rumi_wheel_install.py` unpacks the wheels into a fresh
//!    directory beside `site-packages` — in strict mode inside a network-less builder container
//!    ([`super::builder`]), in permissive mode with the host's Python and the scrubbed
//!    environment.
//! 3. Check that exactly the pinned distributions were installed, sync the tree, and swap it in
//!    atomically (`renameat2(RENAME_EXCHANGE)`): a reader sees the old tree or the new one, never a
//!    half of each, and a crash leaves one of them whole.

use rumi_domain::pip::{normalize, Distribution, Pin};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long a download may take.
pub const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(300);
/// How long unpacking may take.
pub const INSTALL_DEADLINE: Duration = Duration::from_secs(120);
/// Largest download kept (all wheels together).
pub const MAX_DOWNLOAD_BYTES: u64 = 1024 * 1024 * 1024;
/// Most output bytes kept of pip or the installer.
const MAX_OUTPUT: usize = 64 * 1024;

/// Where and how installs run.
#[derive(Clone)]
pub struct Installer {
    pub python: PathBuf,
    pub find_links: Option<PathBuf>,
    /// `user_data/pip/work`: downloads, removed after each install.
    pub work_root: PathBuf,
    /// The embedded Python runtime (holds `rumi_wheel_install.py`).
    pub runtime_dir: PathBuf,
    /// Strict mode's Docker backend; `None`: permissive (the host's Python unpacks).
    pub docker: Option<Arc<crate::docker::DockerEngine>>,
}

/// The environment pip and the installer get: what Python and pip need, the machine's pip
/// configuration (`PIP_*`, proxies, CA bundles), nothing of the kernel's.
pub(crate) fn scrubbed(cmd: &mut tokio::process::Command, home: &Path) {
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1");
    // The machine's pip configuration lives in /etc and in the kernel user's home.
    cmd.env(
        "HOME",
        std::env::var_os("HOME").unwrap_or_else(|| home.as_os_str().to_owned()),
    );
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        let keep = (name.starts_with("PIP_") && name != "PIP_REQUIRE_VIRTUALENV")
            || matches!(
                name.to_ascii_lowercase().as_str(),
                "https_proxy" | "http_proxy" | "no_proxy" | "ssl_cert_file" | "requests_ca_bundle"
            );
        if keep {
            cmd.env(&k, &v);
        }
    }
}

/// Removes credentials (`scheme://user:pass@`) and the kernel's paths from text shown to people.
pub(crate) fn clean(text: &str, paths: &[(&Path, &str)]) -> String {
    let mut s = text.to_string();
    for (p, name) in paths {
        s = s.replace(&*p.to_string_lossy(), name);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            out.push_str("***@");
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The last lines of an output, for an error message.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join(" | ")
}

/// Kills a process group when dropped while armed: a run of [`run`] dropped midway (nobody
/// waits for it any more) leaves no process of it behind.
struct KillGroup(Option<i32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: signalling the process group the child leads (still running: not reaped).
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }
}

/// Runs `cmd` with a deadline; answers (exit code, stdout, stderr), each stream capped. Dropping
/// the future kills the command's process group.
pub(crate) async fn run(
    mut cmd: tokio::process::Command,
    deadline: Duration,
    what: &str,
) -> Result<(i32, String, String), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what} could not start ({})", e.kind()))?;
    let pgid = child.id().map(|p| p as i32);
    let mut group = KillGroup(pgid);
    let read_capped = |r: Option<tokio::process::ChildStdout>| async move {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = r.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if buf.len() < MAX_OUTPUT {
                    buf.extend_from_slice(&chunk[..n.min(MAX_OUTPUT - buf.len())]);
                }
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stderr_task = async move {
        let mut buf = Vec::new();
        if let Some(mut r) = stderr {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = r.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                // Keep the end: pip's reason comes last.
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_OUTPUT {
                    buf.drain(..buf.len() - MAX_OUTPUT);
                }
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    };
    let all = async {
        let (out, err, status) = tokio::join!(read_capped(stdout), stderr_task, child.wait());
        (out, err, status)
    };
    match tokio::time::timeout(deadline, all).await {
        Ok((out, err, status)) => {
            group.0 = None;
            let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
            Ok((code, out, err))
        }
        Err(_) => {
            drop(group);
            Err(format!(
                "{what} did not finish within {}s; it was stopped",
                deadline.as_secs()
            ))
        }
    }
}

pub(crate) fn random_suffix() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    hex::encode(b)
}

impl Installer {
    /// Downloads and installs `pins` into `site_packages`; answers the installed distributions.
    pub async fn install(
        &self,
        pack_id: &str,
        pins: &[Pin],
        index_url: Option<&str>,
        site_packages: &Path,
    ) -> Result<Vec<Distribution>, String> {
        let work = self
            .work_root
            .join(format!("{pack_id}-{}", random_suffix()));
        let parent = site_packages
            .parent()
            .ok_or("the pack's site-packages has no parent")?
            .to_path_buf();
        let staging = parent.join(format!("site-packages.new-{}", random_suffix()));
        let outcome = self
            .install_in(pack_id, pins, index_url, site_packages, &work, &staging)
            .await;
        let (w, s) = (work.clone(), staging.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&w);
            let _ = std::fs::remove_dir_all(&s);
        })
        .await;
        outcome.map_err(|e| {
            clean(
                &e,
                &[
                    (&work.join("wheels"), "<wheels>"),
                    (&staging, "<target>"),
                    (&work, "<work>"),
                ],
            )
        })
    }

    async fn install_in(
        &self,
        pack_id: &str,
        pins: &[Pin],
        index_url: Option<&str>,
        site_packages: &Path,
        work: &Path,
        staging: &Path,
    ) -> Result<Vec<Distribution>, String> {
        let fetch = Fetch {
            name: pack_id,
            requirements: pins.iter().map(|p| p.requirement() + "\n").collect(),
            resolve_deps: false,
            find_links: self.find_links.as_deref(),
            find_links_label: "<RUMI_PIP_FIND_LINKS>",
            index_url,
            log_lines: 3,
        };
        let installed = self.fetch_and_unpack(&fetch, work, staging).await?;
        check_matches(pins, &installed)?;
        let (s, target) = (staging.to_path_buf(), site_packages.to_path_buf());
        tokio::task::spawn_blocking(move || swap_in(&s, &target))
            .await
            .map_err(|_| "installing the tree failed".to_string())?
            .map_err(|e| format!("installing the tree failed ({})", e.kind()))?;
        Ok(installed)
    }

    /// Downloads `fetch` into `work/wheels` (`work` is created; the caller removes it) and
    /// unpacks the wheels into `staging`, created here empty (mode 0755) and owned by the
    /// kernel's user when this answers: in strict mode in the network-less builder container,
    /// else with the host's Python. Answers what was installed. Errors name no host path.
    pub async fn fetch_and_unpack(
        &self,
        fetch: &Fetch<'_>,
        work: &Path,
        staging: &Path,
    ) -> Result<Vec<Distribution>, String> {
        let wheels = work.join("wheels");
        let reqs = work.join("requirements.txt");
        let io = |e: std::io::Error| format!("preparing the install failed ({})", e.kind());
        crate::fsutil::ensure_dir(&self.work_root, 0o700).map_err(io)?;
        crate::fsutil::ensure_dir(work, 0o755).map_err(io)?;
        crate::fsutil::ensure_dir(&wheels, 0o755).map_err(io)?;
        crate::fsutil::write_atomic(&reqs, fetch.requirements.as_bytes(), 0o644).map_err(io)?;
        if !fetch.requirements.trim().is_empty() {
            self.download(fetch, &reqs, &wheels, work).await?;
        }
        check_download(&wheels)?;
        if let Some(parent) = staging.parent() {
            crate::fsutil::ensure_dir(parent, 0o755).map_err(io)?;
        }
        std::fs::create_dir(staging).map_err(io)?;
        set_mode(staging, 0o755).map_err(io)?;
        let stdout = match &self.docker {
            Some(engine) => {
                let build = super::builder::Build {
                    name: fetch.name,
                    script: "rumi_wheel_install.py",
                    runtime_dir: &self.runtime_dir,
                    input: &wheels,
                    target: staging,
                    deadline: INSTALL_DEADLINE,
                };
                let out = run_builder(engine, &build).await?;
                if out.code != 0 {
                    return Err(installer_error(&out.stderr));
                }
                out.stdout
            }
            None => {
                let mut cmd = tokio::process::Command::new(&self.python);
                cmd.arg("-I")
                    .arg("-S")
                    .arg("-B")
                    .arg(self.runtime_dir.join("rumi_wheel_install.py"))
                    .arg(&wheels)
                    .arg(staging)
                    .current_dir(work);
                scrubbed(&mut cmd, work);
                let (code, out, err) = run(cmd, INSTALL_DEADLINE, "the wheel installer").await?;
                if code != 0 {
                    return Err(installer_error(&err));
                }
                out
            }
        };
        parse_installed(&stdout)
    }

    async fn download(
        &self,
        fetch: &Fetch<'_>,
        reqs: &Path,
        wheels: &Path,
        work: &Path,
    ) -> Result<(), String> {
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.args(["-I", "-m", "pip", "download", "--only-binary=:all:"]);
        if !fetch.resolve_deps {
            cmd.arg("--no-deps");
        }
        cmd.args([
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg("--progress-bar=off")
        .arg("-r")
        .arg(reqs)
        .arg("-d")
        .arg(wheels)
        .current_dir(work);
        if let Some(dir) = fetch.find_links {
            cmd.arg("--no-index").arg("--find-links").arg(dir);
        } else if let Some(url) = fetch.index_url {
            cmd.arg("--index-url").arg(url);
        }
        scrubbed(&mut cmd, work);
        let (code, _out, err) = run(cmd, DOWNLOAD_DEADLINE, "pip download").await?;
        if code != 0 {
            let mut why = tail(&err, fetch.log_lines);
            if let Some(dir) = fetch.find_links {
                why = why.replace(&*dir.to_string_lossy(), fetch.find_links_label);
            }
            let cap = 200 * fetch.log_lines.max(3);
            return Err(format!(
                "pip download failed (exit {code}): {}",
                why.chars().take(cap).collect::<String>()
            ));
        }
        Ok(())
    }
}

/// One download: what pip fetches, from where, and how much of its log a failure keeps.
pub struct Fetch<'a> {
    /// Names the builder container and its label (a pack id, `skill-env-<hash>`).
    pub name: &'a str,
    /// The requirements file's text, written by the kernel from parsed items (never a pack's
    /// or a skill's text).
    pub requirements: String,
    /// pip resolves the requirements' own dependencies (`false`: `--no-deps`, a lock pins all).
    pub resolve_deps: bool,
    /// `--no-index --find-links <dir>`, shown as `find_links_label` in errors.
    pub find_links: Option<&'a Path>,
    pub find_links_label: &'a str,
    pub index_url: Option<&'a str>,
    /// Lines of pip's stderr kept in a failure.
    pub log_lines: usize,
}

/// Runs the builder with the target handed to the container's user (a root kernel hands it to
/// the pack user) and taken back after: a script or a block that runs as that user can then
/// not change the tree.
pub async fn run_builder(
    engine: &crate::docker::DockerEngine,
    build: &super::builder::Build<'_>,
) -> Result<super::builder::Output, String> {
    let io = |e: std::io::Error| format!("preparing the install failed ({})", e.kind());
    let (_, hand_over) = super::builder::builder_user();
    if hand_over {
        chown(build.target, crate::docker::sandbox::PACK_UID).map_err(io)?;
    }
    let out = super::builder::run_build(engine, build).await;
    if hand_over {
        let s = build.target.to_path_buf();
        tokio::task::spawn_blocking(move || chown_tree(&s, 0))
            .await
            .map_err(|_| "taking the installed tree back failed".to_string())?
            .map_err(io)?;
    }
    out
}

fn installer_error(stderr: &str) -> String {
    format!(
        "the wheels were not installed: {}",
        tail(stderr, 2).chars().take(600).collect::<String>()
    )
}

/// Only wheels, at most [`MAX_DOWNLOAD_BYTES`] in all.
pub(crate) fn check_download(wheels: &Path) -> Result<(), String> {
    let mut total = 0u64;
    let entries = std::fs::read_dir(wheels)
        .map_err(|e| format!("the download cannot be read ({})", e.kind()))?;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = e
            .metadata()
            .map_err(|e| format!("the download cannot be read ({})", e.kind()))?;
        if !name.ends_with(".whl") || !meta.is_file() {
            return Err(format!(
                "the download holds {:?}, which is not a wheel; sdists are never built",
                name.chars().take(120).collect::<String>()
            ));
        }
        total += meta.len();
    }
    if total > MAX_DOWNLOAD_BYTES {
        return Err(format!(
            "the wheels are {total} bytes; the limit is {MAX_DOWNLOAD_BYTES}"
        ));
    }
    Ok(())
}

fn parse_installed(stdout: &str) -> Result<Vec<Distribution>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        installed: Vec<Distribution>,
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str::<Answer>(line)
        .map(|a| a.installed)
        .map_err(|_| "the wheel installer gave no list of what it installed".to_string())
}

/// Exactly the pinned distributions, at their versions: nothing more came in, nothing is missing.
fn check_matches(pins: &[Pin], installed: &[Distribution]) -> Result<(), String> {
    let want: BTreeSet<(String, String)> = pins
        .iter()
        .map(|p| (normalize(&p.name), p.version.clone()))
        .collect();
    let got: BTreeSet<(String, String)> = installed
        .iter()
        .map(|d| (normalize(&d.name), d.version.clone()))
        .collect();
    if want == got {
        return Ok(());
    }
    let missing: Vec<String> = want
        .difference(&got)
        .map(|(n, v)| format!("{n}=={v}"))
        .take(10)
        .collect();
    let extra: Vec<String> = got
        .difference(&want)
        .map(|(n, v)| format!("{n}=={v}"))
        .take(10)
        .collect();
    Err(format!(
        "the wheels do not match the lock (missing: [{}]; not pinned: [{}]); nothing was installed",
        missing.join(", "),
        extra.join(", ")
    ))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

fn chown(path: &Path, id: u32) -> std::io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), id, id) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `lchown` of a whole tree, never following a link.
pub(crate) fn chown_tree(root: &Path, id: u32) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        chown(&p, id)?;
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

/// Syncs the new tree's file system, then puts it in place of `target` in one step.
pub(crate) fn swap_in(staging: &Path, target: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(staging)?;
    // SAFETY: a valid descriptor; syncfs flushes the file system holding the new tree.
    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    let (a, b) = (cstr(staging)?, cstr(target)?);
    if target.exists() {
        // SAFETY: valid NUL-terminated paths; AT_FDCWD with absolute or relative paths.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // `staging` now holds the old tree; the caller removes it.
    } else {
        std::fs::rename(staging, target)?;
    }
    if let Some(parent) = target.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_paths_are_cleaned() {
        let s = clean(
            "GET https://user:tok@idx.example/simple from /w/x/wheels failed",
            &[(Path::new("/w/x/wheels"), "<wheels>")],
        );
        assert_eq!(s, "GET https://***@idx.example/simple from <wheels> failed");
        assert_eq!(clean("a://b/c@d", &[]), "a://b/c@d");
    }

    #[test]
    fn the_install_must_match_the_lock() {
        let pins = vec![Pin {
            name: "Foo_Bar".into(),
            version: "1.0".into(),
            extras: vec![],
        }];
        let ok = vec![Distribution {
            name: "foo-bar".into(),
            version: "1.0".into(),
        }];
        assert!(check_matches(&pins, &ok).is_ok());
        let extra = vec![
            ok[0].clone(),
            Distribution {
                name: "evil".into(),
                version: "6".into(),
            },
        ];
        assert!(check_matches(&pins, &extra)
            .unwrap_err()
            .contains("evil==6"));
        assert!(check_matches(&pins, &[])
            .unwrap_err()
            .contains("foo-bar==1.0"));
    }

    /// Whether `pid` is gone (or a zombie waiting for its parent).
    fn gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        }
    }

    #[tokio::test]
    async fn a_dropped_run_kills_its_whole_process_group() {
        let d = tempfile::tempdir().unwrap();
        let pids = d.path().join("pids");
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(format!(
            "sleep 300 & echo $$ $! > {}.tmp && mv {0}.tmp {0}; wait",
            pids.display()
        ));
        let mut running = Box::pin(run(cmd, Duration::from_secs(300), "sh"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !pids.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the command never started"
            );
            tokio::select! {
                _ = &mut running => panic!("the command ended"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let text = std::fs::read_to_string(&pids).unwrap();
        let ids: Vec<i32> = text
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(!gone(ids[1]), "the grandchild runs");
        drop(running);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ids.iter().all(|p| gone(*p)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the shell or its child outlived the dropped run: {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_swap_exchanges_whole_trees() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("site-packages");
        let staging = d.path().join("new");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("a.py"), "1").unwrap();
        swap_in(&staging, &target).unwrap();
        assert!(target.join("a.py").exists());
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("b.py"), "2").unwrap();
        swap_in(&staging, &target).unwrap();
        assert!(target.join("b.py").exists() && !target.join("a.py").exists());
        assert!(
            staging.join("a.py").exists(),
            "the old tree is left for removal"
        );
    }
}
