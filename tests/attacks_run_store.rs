//! Attacks on where a finished run is stored (the run writes its record and audit entry itself,
//! on the thread that runs it): a write that never returns — a sick disk, here `runs.jsonl`
//! replaced by a FIFO whose buffer is full — must not leave the caller waiting for ever, nor
//! stop the API from answering.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// With one CPU for the kernel (the `half` policy on this machine's two), a run runs on its
/// pack's arbiter, not on the HTTP worker: a store stuck in `write` holds that thread, and the
/// caller is answered 500 ("not stored") by its own deadline plus the store deadline, while
/// the API keeps answering (not `GET /api/runs`: the history it reads is what the disk holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_answers_the_caller_by_its_deadline_and_the_api_stays_up() {
    if !python_available() {
        eprintln!("skipped: no python3");
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > 3 {
        // `half` leaves the kernel more than one CPU: runs then stay on the HTTP worker, and a
        // hung write holds that worker (README, decisions: "A finished run writes its own
        // record").
        eprintln!("skipped: {cpus} CPUs give the kernel more than one (the case this pins)");
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("my_pack").await;
    // No run was stored yet: the history opens its file at the first store, and finds a FIFO
    // whose buffer is full, so the write blocks for as long as nobody reads.
    let path = home.path().join("user_data/runs/runs.jsonl");
    assert!(!path.exists(), "no run stored yet");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let chunk = [b'x'; 4096];
    while std::io::Write::write(&mut pipe, &chunk).is_ok() {}

    let t = Instant::now();
    let run = k.post(
        "/api/flows/hello/run",
        json!({"inputs": {"name": "Ann"}, "timeout": 1}),
    );
    // While the run's thread is stuck, the API answers.
    let api = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s, _) = k.get("/api/health").await;
        let (p, _) = k.get("/api/packs").await;
        (s, p)
    };
    // Bounded here too, so a regression fails instead of hanging the suite.
    let run = tokio::time::timeout(Duration::from_secs(30), run);
    let (answered, (health, packs)) = tokio::join!(run, api);
    let (status, body) = answered.expect("the caller was not answered within 30 s");
    let took = t.elapsed();
    assert_eq!((health, packs), (200, 200), "the API answers meanwhile");
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("internal error"),
        "{body}"
    );
    // 1 s of deadline, 0.2 s of grace, 10 s of store deadline, 1 s more.
    assert!(
        took >= Duration::from_secs(12) && took < Duration::from_secs(20),
        "answered after {took:?}"
    );
    let log = std::fs::read_to_string(&k.stderr_log).unwrap();
    assert!(log.contains("is the disk hung?"), "{log}");
    // Unstick the thread before the kernel is killed.
    let mut buf = vec![0u8; 1 << 16];
    while std::io::Read::read(&mut pipe, &mut buf).is_ok() {}
}
