//! The pack runtime image, built locally without a registry (contract §5.3): a Debian rootfs made
//! with `debootstrap --variant=minbase` (python3 for blocks, nodejs for the skill runtime), trimmed
//! and imported into the daemon as `rumi-pack-runtime:<recipe digest>`. The tag is derived from
//! the recipe, so a build is skipped while the recipe is unchanged and a changed recipe gets a new
//! tag. The block host is not baked in: it is mounted read-only at `/opt/rumi`, so a kernel
//! upgrade does not need a new image.

use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// The image repository.
pub const REPOSITORY: &str = "rumi-pack-runtime";
/// Debian release of the rootfs.
pub const SUITE: &str = "bookworm";
/// Packages added to the minimal base.
pub const PACKAGES: &[&str] = &["python3", "nodejs"];
/// Directories emptied after the bootstrap (caches and documentation).
pub const TRIMMED: &[&str] = &[
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
];
/// Dockerfile-style changes applied at import.
pub const CHANGES: &[&str] = &[
    "ENV LANG=C.UTF-8",
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    "WORKDIR /tmp",
];
/// Bumped whenever the build steps change in a way the values above do not show.
const RECIPE_VERSION: u32 = 1;

/// The recipe in one canonical text; its digest names the image.
pub fn recipe() -> String {
    format!(
        "version {RECIPE_VERSION}\nsuite {SUITE}\nvariant minbase\ninclude {}\ntrim {}\nchanges {}\n",
        PACKAGES.join(","),
        TRIMMED.join(","),
        CHANGES.join(";")
    )
}

/// `rumi-pack-runtime:<first 12 hex digits of the recipe's SHA-256>`.
pub fn default_tag() -> String {
    let digest = Sha256::digest(recipe().as_bytes());
    format!("{REPOSITORY}:{}", &hex::encode(digest)[..12])
}

/// What to tell a user whose image is missing.
pub fn missing_message(image: &str) -> String {
    if image == default_tag() {
        format!(
            "the pack runtime image {image} is not present; build it with `rumi image build` (no registry needed)"
        )
    } else {
        format!(
            "the pack runtime image {image} (RUMI_PACK_IMAGE) is not present on the Docker daemon"
        )
    }
}

/// Whether the daemon has `image`.
pub async fn present(client: &Docker, image: &str) -> Result<bool, String> {
    match client.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(format!(
            "the Docker daemon is not reachable ({})",
            super::describe(&e)
        )),
    }
}

/// How a build went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The image was already there (the recipe is unchanged).
    AlreadyPresent,
    /// A new image was imported.
    Imported,
}

/// Options of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `repository:tag` to create.
    pub tag: String,
    /// The Debian mirror debootstrap downloads from.
    pub mirror: String,
    /// A scratch directory for the rootfs (removed afterwards).
    pub work_dir: PathBuf,
}

/// Builds the image unless it is present; `progress` receives one line per step.
pub async fn build(
    client: &Docker,
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, String> {
    if present(client, &options.tag).await? {
        progress(&format!(
            "{} is present (recipe unchanged); nothing to do",
            options.tag
        ));
        return Ok(Built::AlreadyPresent);
    }
    let debootstrap = find_program("debootstrap").ok_or_else(|| {
        "debootstrap is not installed; install it (Debian/Ubuntu: `apt-get install debootstrap`) and run `rumi image build` again".to_string()
    })?;
    if !super::is_root() {
        return Err(
            "debootstrap needs root: run `rumi image build` as root (e.g. with sudo)".into(),
        );
    }
    let rootfs = options.work_dir.join("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)
            .map_err(|e| format!("cannot clear {}: {e}", rootfs.display()))?;
    }
    std::fs::create_dir_all(&options.work_dir)
        .map_err(|e| format!("cannot create {}: {e}", options.work_dir.display()))?;
    let result = async {
        progress(&format!(
            "debootstrap --variant=minbase --include={} {SUITE} ({})",
            PACKAGES.join(","),
            options.mirror
        ));
        let include = format!("--include={}", PACKAGES.join(","));
        let args = [
            "--variant=minbase",
            include.as_str(),
            SUITE,
            &rootfs.to_string_lossy(),
            options.mirror.as_str(),
        ];
        run_with_progress(&debootstrap, &args, progress).await?;
        for dir in TRIMMED {
            let path = rootfs.join(dir);
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
                let _ = std::fs::create_dir_all(&path);
            }
        }
        progress(&format!("importing the rootfs as {}", options.tag));
        import(client, &rootfs, &options.tag, progress).await?;
        if !present(client, &options.tag).await? {
            return Err(format!(
                "the import finished but {} is not present",
                options.tag
            ));
        }
        progress(&format!("{} is ready", options.tag));
        Ok(Built::Imported)
    }
    .await;
    let _ = std::fs::remove_dir_all(&rootfs);
    result
}

/// Streams `tar` of `rootfs` into the daemon's import (`POST /images/create?fromSrc=-`).
async fn import(
    client: &Docker,
    rootfs: &Path,
    tag: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let mut tar = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(rootfs)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let stdout = tar.stdout.take().ok_or("tar has no stdout")?;
    let body = futures_util::stream::unfold(stdout, |mut out| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match out.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), out))
            }
            Err(e) => Some((Err(e), out)),
        }
    });
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.to_string()),
        tag: Some(version.to_string()),
        changes: CHANGES.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    let mut stream = client.create_image(Some(options), Some(bollard::body_try_stream(body)), None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(status) = info.status.filter(|s| !s.is_empty()) {
                    progress(&format!("import: {status}"));
                }
            }
            Err(e) => return Err(format!("the import failed ({})", super::describe(&e))),
        }
    }
    let status = tar.wait().await.map_err(|e| format!("tar failed: {e}"))?;
    if !status.success() {
        return Err(format!("tar failed ({status})"));
    }
    Ok(())
}

/// Runs a program, passing each line it prints to `progress`; fails with its last lines.
async fn run_with_progress(
    program: &Path,
    args: &[&str],
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    // Both streams feed one channel; it closes when both have ended.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let out = child.stdout.take().ok_or("no stdout")?;
    let err = child.stderr.take().ok_or("no stderr")?;
    let forward = |reader: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    };
    forward(Box::new(out));
    forward(Box::new(err));
    drop(tx);
    let mut tail: Vec<String> = Vec::new();
    while let Some(line) = rx.recv().await {
        progress(&line);
        tail.push(line);
        if tail.len() > 5 {
            tail.remove(0);
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("{} failed: {e}", program.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({status}): {}",
            program.display(),
            tail.join(" | ")
        ))
    }
}

/// Finds a program on PATH or in the sbin directories (debootstrap lives in /usr/sbin, which a
/// non-login PATH may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_follows_the_recipe() {
        let tag = default_tag();
        assert!(tag.starts_with("rumi-pack-runtime:"));
        assert_eq!(tag.len(), "rumi-pack-runtime:".len() + 12);
        assert_eq!(tag, default_tag(), "deterministic");
        let r = recipe();
        assert!(r.contains("include python3,nodejs") && r.contains(SUITE));
        assert!(missing_message(&tag).contains("rumi image build"));
        assert!(missing_message("custom:1").contains("RUMI_PACK_IMAGE"));
    }
}
