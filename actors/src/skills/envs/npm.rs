//! npm environments: resolve, download in the kernel, unpack offline.
//!
//! 1. **Resolve.** Each spec (`name@range`, checked by the domain) is matched to one tarball:
//!    with `RUMI_SKILL_NPM_TARBALLS=<dir>`, the highest version among the directory's
//!    `<name>-<version>.tgz` files (`@scope/name` → `scope-name-<version>.tgz`, as `npm pack`
//!    names them) that matches; without it, the host's `npm pack <spec> --pack-destination
//!    <dir> --ignore-scripts` (the machine's npm configuration; not exercised by the tests: the
//!    npm registry is not reachable on the test machine). The tarball's own `package.json` is
//!    read in the kernel (gzip + tar headers, capped) and its `dependencies` are resolved the same
//!    way, breadth first, with caps ([`MAX_PACKAGES`]). One version per package (a flat
//!    `node_modules`): a second range the chosen version does not satisfy is refused, naming both.
//! 2. **Unpack offline.** The stdlib `rumi_npm_install.py` unpacks each tarball's `package/` tree
//!    into `node_modules/<name>/` — no links, no absolute paths, no `..`, size caps; in strict
//!    mode inside the network-less builder container. npm itself never installs, so no lifecycle
//!    script (`preinstall`, `install`, `postinstall`, `prepare`) ever runs: the guarantee of
//!    `npm install --ignore-scripts`, by construction.

use super::super::agent::blocking;
use crate::pip::install::{self, Installer};
use rumi_domain::skill::deps::{parse_npm, parse_npm_parts, valid_npm_name, NpmSpec};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most packages in one environment (transitive ones included).
pub const MAX_PACKAGES: usize = 200;
/// Largest tarball.
pub const MAX_TARBALL_BYTES: u64 = 128 * 1024 * 1024;
/// Largest download (all tarballs).
pub const MAX_DOWNLOAD_BYTES: u64 = 512 * 1024 * 1024;
/// Most bytes decompressed while looking for `package.json`.
const MAX_SCAN_BYTES: u64 = 256 * 1024 * 1024;
/// Largest `package.json` read.
const MAX_META_BYTES: u64 = 1024 * 1024;
/// Most files looked at in the tarball directory.
const MAX_DIR_ENTRIES: usize = 20_000;
/// How long one `npm pack` may take.
const PACK_DEADLINE: Duration = Duration::from_secs(120);
/// How long unpacking may take.
const UNPACK_DEADLINE: Duration = Duration::from_secs(120);

/// What one npm build uses.
pub struct NpmBuild<'a> {
    pub installer: &'a Installer,
    pub tarballs: Option<&'a Path>,
    /// Names the builder container (`skill-env-<hash>`).
    pub name: &'a str,
}

struct Chosen {
    version: semver::Version,
    file: PathBuf,
}

/// Builds `node_modules` for `items` (canonical `name@range`) inside `staging` (created here).
pub async fn build(
    b: &NpmBuild<'_>,
    items: &[String],
    work: &Path,
    staging: &Path,
) -> Result<(), String> {
    let input = work.join("input");
    {
        let input = input.clone();
        blocking(move || {
            crate::fsutil::ensure_dir(input.parent().unwrap_or(&input), 0o755)?;
            crate::fsutil::ensure_dir(&input, 0o755)
        })
        .await
        .map_err(|e| format!("preparing the install failed ({})", e.kind()))?;
    }
    let listing = match b.tarballs {
        Some(dir) => {
            let dir = dir.to_path_buf();
            Some(blocking(move || list_dir(&dir)).await?)
        }
        None => None,
    };
    let mut queue: VecDeque<(NpmSpec, String)> = VecDeque::new();
    for i in items {
        queue.push_back((parse_npm(i)?, "the script".to_string()));
    }
    let mut chosen: BTreeMap<String, Chosen> = BTreeMap::new();
    let mut total = 0u64;
    while let Some((spec, by)) = queue.pop_front() {
        if let Some(c) = chosen.get(&spec.name) {
            if spec.req().matches(&c.version) {
                continue;
            }
            return Err(format!(
                "{} needs {}@{}, but {}@{} was chosen; one version of a package is installed",
                by, spec.name, spec.range, spec.name, c.version
            ));
        }
        if chosen.len() >= MAX_PACKAGES {
            return Err(format!(
                "more than {MAX_PACKAGES} npm packages are needed; the most installed"
            ));
        }
        let (version, file) = match &listing {
            Some(list) => pick(list, &spec).ok_or_else(|| {
                format!(
                    "no tarball of {}@{} (needed by {by}) in <RUMI_SKILL_NPM_TARBALLS>: {} files are named {}-<version>.tgz",
                    spec.name,
                    spec.range,
                    spec.name,
                    flat_name(&spec.name)
                )
            })?,
            None => npm_pack(&spec, &input).await?,
        };
        let meta = {
            let f = file.clone();
            blocking(move || read_package_json(&f)).await?
        };
        let shown = format!("{}@{version}", spec.name);
        if meta.get("name").and_then(Value::as_str) != Some(spec.name.as_str()) {
            return Err(format!(
                "the tarball of {shown} names another package in its package.json"
            ));
        }
        let meta_version = meta.get("version").and_then(Value::as_str).unwrap_or("");
        if semver::Version::parse(meta_version).ok().as_ref() != Some(&version) {
            return Err(format!(
                "the tarball of {shown} says version {:?} in its package.json",
                meta_version.chars().take(40).collect::<String>()
            ));
        }
        total += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if total > MAX_DOWNLOAD_BYTES {
            return Err(format!(
                "the tarballs are more than {MAX_DOWNLOAD_BYTES} bytes"
            ));
        }
        if let Some(deps) = meta.get("dependencies").and_then(Value::as_object) {
            for (n, r) in deps {
                let r = r.as_str().ok_or_else(|| {
                    format!("{shown}: the range of its dependency {n:?} is not a string")
                })?;
                let dep = parse_npm_parts(n, r).map_err(|e| format!("{shown} depends on {e}"))?;
                queue.push_back((dep, shown.clone()));
            }
        }
        chosen.insert(spec.name.clone(), Chosen { version, file });
    }
    let plan: Vec<Value> = chosen
        .iter()
        .map(|(name, c)| {
            let file = format!("{}-{}.tgz", flat_name(name), c.version);
            json!({"name": name, "file": file, "from": c.file})
        })
        .collect();
    {
        let (input, plan, staging) = (input.clone(), plan.clone(), staging.to_path_buf());
        blocking(move || stage(&input, &plan, &staging))
            .await
            .map_err(|e| format!("preparing the install failed ({})", e.kind()))?;
    }
    let stdout = match &b.installer.docker {
        Some(engine) => {
            let build = crate::pip::builder::Build {
                name: b.name,
                script: "rumi_npm_install.py",
                runtime_dir: &b.installer.runtime_dir,
                input: &input,
                target: staging,
                deadline: UNPACK_DEADLINE,
            };
            let out = install::run_builder(engine, &build).await?;
            if out.code != 0 {
                return Err(unpack_error(&out.stderr));
            }
            out.stdout
        }
        None => {
            let mut cmd = tokio::process::Command::new(&b.installer.python);
            cmd.args(["-I", "-S", "-B"])
                .arg(b.installer.runtime_dir.join("rumi_npm_install.py"))
                .arg(&input)
                .arg(staging)
                .current_dir(work);
            install::scrubbed(&mut cmd, work);
            let (code, out, err) = install::run(cmd, UNPACK_DEADLINE, "the npm unpacker").await?;
            if code != 0 {
                return Err(unpack_error(&err));
            }
            out
        }
    };
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let got: Value = line
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or("the npm unpacker gave no list of what it installed")?;
    let n = got["installed"].as_array().map_or(0, Vec::len);
    if n != chosen.len() {
        return Err(format!(
            "the npm unpacker installed {n} packages of {}",
            chosen.len()
        ));
    }
    Ok(())
}

fn unpack_error(stderr: &str) -> String {
    format!(
        "the npm tarballs were not installed: {}",
        install::tail(stderr, 3)
            .chars()
            .take(600)
            .collect::<String>()
    )
}

/// Copies the chosen tarballs into `input` (unless already there), writes `plan.json` and
/// creates the empty `staging` (0755). Blocking.
fn stage(input: &Path, plan: &[Value], staging: &Path) -> std::io::Result<()> {
    let mut listed = Vec::new();
    for item in plan {
        let file = item["file"].as_str().unwrap_or_default();
        let from = PathBuf::from(item["from"].as_str().unwrap_or_default());
        let to = input.join(file);
        if from != to {
            std::fs::copy(&from, &to)?;
        }
        listed.push(json!({"name": item["name"], "file": file}));
    }
    let text = serde_json::to_vec(&listed).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(&input.join("plan.json"), &text, 0o644)?;
    std::fs::create_dir(staging)?;
    install::set_mode(staging, 0o755)
}

/// `@scope/name` → `scope-name`, as `npm pack` names tarballs.
pub fn flat_name(name: &str) -> String {
    name.trim_start_matches('@').replace('/', "-")
}

/// The `.tgz` files of the tarball directory. Blocking.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("<RUMI_SKILL_NPM_TARBALLS> cannot be read ({})", e.kind()))?;
    let mut out = Vec::new();
    for e in entries.flatten().take(MAX_DIR_ENTRIES) {
        let name = e.file_name().to_string_lossy().into_owned();
        let plain = e.file_type().is_ok_and(|t| t.is_file());
        if plain && name.ends_with(".tgz") {
            out.push((name, e.path()));
        }
    }
    Ok(out)
}

/// The highest version of `spec` in `list` that matches its range.
fn pick(list: &[(String, PathBuf)], spec: &NpmSpec) -> Option<(semver::Version, PathBuf)> {
    let prefix = format!("{}-", flat_name(&spec.name));
    let req = spec.req();
    list.iter()
        .filter_map(|(name, path)| {
            let v = name.strip_prefix(&prefix)?.strip_suffix(".tgz")?;
            let v = semver::Version::parse(v).ok()?;
            req.matches(&v).then(|| (v, path.clone()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
}

/// `npm pack <spec> --pack-destination <dir>` with the host's npm and its configuration.
async fn npm_pack(spec: &NpmSpec, dir: &Path) -> Result<(semver::Version, PathBuf), String> {
    if !valid_npm_name(&spec.name) {
        return Err(format!("{} is not an npm package name", spec.name));
    }
    let range = spec.range.replace(", ", " ");
    let mut cmd = tokio::process::Command::new("npm");
    cmd.arg("pack")
        .arg(format!("{}@{range}", spec.name))
        .arg("--pack-destination")
        .arg(dir)
        .args(["--ignore-scripts", "--json", "--no-fund", "--no-audit"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8");
    for (k, v) in std::env::vars_os() {
        let n = k.to_string_lossy().to_ascii_lowercase();
        let keep = n.starts_with("npm_config_")
            || matches!(
                n.as_str(),
                "home" | "https_proxy" | "http_proxy" | "no_proxy" | "node_extra_ca_certs"
            );
        if keep {
            cmd.env(&k, &v);
        }
    }
    let (code, out, err) = install::run(cmd, PACK_DEADLINE, "npm pack").await?;
    if code != 0 {
        return Err(format!(
            "npm pack {}@{range} failed (exit {code}): {}",
            spec.name,
            install::tail(&err, 10)
                .chars()
                .take(2000)
                .collect::<String>()
        ));
    }
    let v: Value = serde_json::from_str(&out).map_err(|_| "npm pack gave no JSON answer")?;
    let first = &v[0];
    let file = first["filename"].as_str().unwrap_or_default();
    let version = first["version"].as_str().unwrap_or_default();
    let version = semver::Version::parse(version)
        .map_err(|_| format!("npm pack gave no version for {}", spec.name))?;
    if file.contains('/') || !file.ends_with(".tgz") {
        return Err("npm pack named an unexpected file".into());
    }
    // Under the name the unpacker expects.
    let want = dir.join(format!("{}-{version}.tgz", flat_name(&spec.name)));
    if dir.join(file) != want {
        std::fs::rename(dir.join(file), &want)
            .map_err(|e| format!("the tarball of {} cannot be kept ({})", spec.name, e.kind()))?;
    }
    Ok((version, want))
}

/// The `package.json` at the top directory of a tarball (`package/package.json`). Reads only
/// tar headers and that file, within [`MAX_SCAN_BYTES`] of decompressed data. Blocking.
pub fn read_package_json(path: &Path) -> Result<Value, String> {
    let shown = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let f =
        std::fs::File::open(path).map_err(|e| format!("{shown} cannot be read ({})", e.kind()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if size > MAX_TARBALL_BYTES {
        return Err(format!("{shown} is larger than {MAX_TARBALL_BYTES} bytes"));
    }
    let mut r = flate2::read::GzDecoder::new(f).take(MAX_SCAN_BYTES);
    let bad = |what: &str| format!("{shown} is not a readable npm tarball ({what})");
    let mut header = [0u8; 512];
    let mut extended = false;
    loop {
        if r.read_exact(&mut header).is_err() {
            return Err(bad("no package.json at its top"));
        }
        if header.iter().all(|b| *b == 0) {
            return Err(bad("no package.json at its top"));
        }
        let field = |a: usize, b: usize| {
            let s = &header[a..b];
            let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        let mut name = field(0, 100);
        if &header[257..262] == b"ustar" {
            let prefix = field(345, 500);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let size_text = field(124, 136);
        if header[124] & 0x80 != 0 {
            return Err(bad("an entry too large"));
        }
        let size = u64::from_str_radix(size_text.trim(), 8).map_err(|_| bad("a bad header"))?;
        let kind = header[156];
        let parts: Vec<&str> = name
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let is_meta =
            !extended && matches!(kind, b'0' | 0) && parts.len() == 2 && parts[1] == "package.json";
        extended = matches!(kind, b'x' | b'L' | b'K');
        let padded = size.div_ceil(512) * 512;
        if is_meta {
            if size > MAX_META_BYTES {
                return Err(bad("package.json is too large"));
            }
            let mut buf = vec![0u8; size as usize];
            r.read_exact(&mut buf).map_err(|_| bad("a cut entry"))?;
            return serde_json::from_slice(&buf).map_err(|_| bad("package.json is not JSON"));
        }
        let skipped = std::io::copy(&mut (&mut r).take(padded), &mut std::io::sink())
            .map_err(|_| bad("a cut entry"))?;
        if skipped < padded {
            return Err(bad("a cut entry"));
        }
    }
}
