//! The end-to-end harness: a real `rumi` binary in a temporary `RUMI_HOME`, spoken to over real
//! HTTP. Each test gets its own kernel (its own port, files and workers), so tests run in
//! parallel and never share state.
#![allow(dead_code)]

pub mod cli;
pub mod deps;
pub mod pip;

pub mod llm_server;
pub mod skills;
pub mod warm;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Python is needed for blocks: in CI its absence fails loudly, locally the test is skipped.
pub fn python_available() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3 is required for the end-to-end tests and is missing in CI");
        }
        eprintln!("SKIPPED: python3 is not installed; blocks cannot run");
    }
    ok
}

/// The 5-step block flow `five` (five calls of `my_pack`'s `blocks/hello.py`) the kernel bench
/// measures and `tests/run_pin.rs` pins.
pub fn five_step_flow() -> String {
    "flow_id: five\nphases: [m]\nsteps:\n".to_string()
        + &(0..5)
            .map(|i| format!("  - {{id: s{i}, phase: m, priority: {i}, type: python_file_call, owner_pack: my_pack, file: blocks/hello.py, input: {{name: \"${{ctx.name}}\"}}, output: g{i}}}\n"))
            .collect::<String>()
}

/// Copies the repository's example packs and shared flows into a fresh home.
pub fn fresh_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&repo.join("ecosystem"), &dir.path().join("ecosystem"));
    copy_dir(
        &repo.join("user_data/shared"),
        &dir.path().join("user_data/shared"),
    );
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Writes `text` to `home/rel`, creating directories.
pub fn write(home: &Path, rel: &str, text: &str) {
    let p = home.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Creates a pack with the given blocks (name → code).
pub fn make_pack(home: &Path, id: &str, blocks: &[(&str, &str)]) {
    write(
        home,
        &format!("ecosystem/{id}/backend/ecosystem.json"),
        &format!(r#"{{"pack_id":"{id}","pack_identity":"test:{id}"}}"#),
    );
    for (name, code) in blocks {
        write(home, &format!("ecosystem/{id}/backend/blocks/{name}"), code);
    }
}

/// Polls `f` every 100 ms until it gives a value; fails the test naming `what` after `secs`.
pub async fn until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running kernel.
pub struct Kernel {
    pub home: PathBuf,
    pub base: String,
    pub child: Child,
    pub http: reqwest::Client,
    pub stderr_log: PathBuf,
}

impl Kernel {
    /// Starts `rumi serve --permissive` in `home` with extra environment variables.
    pub fn start(home: &Path, env: &[(&str, &str)]) -> Kernel {
        Self::start_mode(home, env, true)
    }

    pub fn start_mode(home: &Path, env: &[(&str, &str)], permissive: bool) -> Kernel {
        let log = home.join("kernel-stderr.log");
        let mut cmd = serve_command(home, permissive);
        // One HTTP worker hosting the sandboxes, the default on this project's 2-CPU machines,
        // forced so that a CI machine with more CPUs tests the same.
        cmd.env("RUMI_HTTP_WORKERS", "1")
            .env("RUMI_SANDBOX_HOST", "http")
            .env("RUMI_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start rumi");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("rumi listening on ") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(url);
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the kernel did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Kernel {
            home: home.to_path_buf(),
            base,
            child,
            http: reqwest::Client::new(),
            stderr_log: log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with the token; returns (status, body as JSON).
    pub async fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.req("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req("POST", path, Some(body)).await
    }

    pub async fn approve(&self, pack: &str) {
        let (s, v) = self
            .post(&format!("/api/packs/{pack}/approve"), json!({}))
            .await;
        assert_eq!(s, 200, "approve {pack}: {v}");
        assert_eq!(v["data"]["state"], "approved");
    }

    /// Runs a flow; returns (status, data).
    pub async fn run(&self, flow: &str, inputs: Value) -> (u16, Value) {
        let (s, v) = self
            .post(&format!("/api/flows/{flow}/run"), json!({"inputs": inputs}))
            .await;
        (s, v["data"].clone())
    }

    pub async fn reload(&self) {
        let (s, _) = self.post("/api/flows/reload", json!({})).await;
        assert_eq!(s, 200);
    }

    /// Stops the kernel (SIGTERM) and waits.
    pub fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and error_type of a run's step.
pub fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

/// A local upstream HTTP server for the egress tests, on its own thread and runtime. Routes:
/// `/echo` (method, path, Host, body as hex), `/bin` (bytes 00 01 02 ff fe), `/big` and
/// `/big-chunked` (5 MiB, with and without a length), `/stall` (never answers), `/hop/<n>`
/// (redirects down to `/hop/0`), `/to?<url>` (302 to `<url>`), `/post-redirect` (307).
pub struct Upstream {
    pub addr: std::net::SocketAddr,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub fn start(ip: &str) -> Upstream {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind upstream");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        continue;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve_upstream(sock, addr));
                }
            });
        });
        Upstream { addr, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn serve_upstream(mut sock: tokio::net::TcpStream, me: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    let (method, target) = (
        first[0].to_string(),
        first.get(1).unwrap_or(&"/").to_string(),
    );
    let mut headers = serde_json::Map::new();
    let mut length = 0usize;
    for l in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            headers.insert(k, Value::String(v));
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let respond = |status: &str, extra: &str, body: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let out = match path {
        "/echo" => {
            let v = json!({"method": method, "path": target, "headers": headers, "body_hex": hex(&body)});
            respond(
                "200 OK",
                "Content-Type: application/json\r\n",
                v.to_string().as_bytes(),
            )
        }
        "/bin" => respond(
            "200 OK",
            "Content-Type: application/octet-stream\r\n",
            &[0, 1, 2, 0xff, 0xfe],
        ),
        "/big" => respond("200 OK", "", &vec![b'x'; 5 << 20]),
        "/big-chunked" => {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                )
                .await;
            let piece = vec![b'y'; 64 * 1024];
            for _ in 0..80 {
                let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                c.extend_from_slice(&piece);
                c.extend_from_slice(b"\r\n");
                if sock.write_all(&c).await.is_err() {
                    return;
                }
            }
            let _ = sock.write_all(b"0\r\n\r\n").await;
            return;
        }
        "/stall" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        "/post-redirect" => respond("307 Temporary Redirect", "Location: /echo\r\n", b""),
        "/to" => respond("302 Found", &format!("Location: {query}\r\n"), b""),
        p if p.starts_with("/hop/") => {
            let n: u32 = p[5..].parse().unwrap_or(0);
            if n == 0 {
                respond("200 OK", "", b"landed")
            } else {
                respond(
                    "302 Found",
                    &format!("Location: http://{me}/hop/{}\r\n", n - 1),
                    b"",
                )
            }
        }
        _ => respond("404 Not Found", "", b"no such route"),
    };
    let _ = sock.write_all(&out).await;
    let _ = sock.shutdown().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One frame to a Unix socket and its answer (the pack side of the egress protocol).
pub fn socket_exchange(path: &Path, payload: &[u8]) -> Option<Value> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    // A socket that refuses the connection (busy, not the pack's process) answers and closes
    // without reading: the write may then fail, and the answer is still there to read.
    let _ = s.write_all(&frame);
    read_frame(&mut s)
}

/// Reads one length-prefixed JSON frame (None at EOF or on a bad frame).
pub fn read_frame(s: &mut impl std::io::Read) -> Option<Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// `rumi serve` in `home` on any free port with the test token; the test's own RUMI_* settings
/// never leak into the kernel under test.
fn serve_command(home: &Path, permissive: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rumi"));
    cmd.arg("serve");
    if permissive {
        cmd.arg("--permissive");
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("RUMI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUMI_HOME", home)
        .env("RUMI_API_PORT", "0")
        .env("RUMI_API_TOKEN", TOKEN);
    cmd
}

/// Runs `rumi serve` in `home` expecting it to refuse to start: waits (20 s deadline) for it to
/// exit, asserts it failed, and returns what it printed on stderr. A kernel that starts instead
/// is killed and the test fails.
pub fn serve_refused(home: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = serve_command(home, true);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start rumi");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`rumi serve` started where it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "refused with a failure status: {err}");
    err
}

/// The port a running kernel listens on.
pub fn port_of(k: &Kernel) -> u16 {
    k.base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the kernel's port")
}

/// The names of the containers (running or not) `docker ps` shows with these `--filter`s.
pub fn container_names(filters: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-a", "--format", "{{.Names}}"]);
    for f in filters {
        cmd.args(["--filter", f]);
    }
    let out = cmd.output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Docker and the image are there; in CI their absence is a failure.
pub fn docker_ready() -> bool {
    let docker = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let image = docker
        && Command::new(env!("CARGO_BIN_EXE_rumi"))
            .args(["image", "show"])
            .env("RUMI_HOME", tempfile::tempdir().unwrap().path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !(docker && image) {
        let why = if docker {
            "the pack runtime image is missing (run `rumi image build`)"
        } else {
            "no Docker daemon is reachable"
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("strict-mode tests need Docker and the image in CI: {why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    docker && image
}
