//! Outside attacks on strict mode's warm script containers (`script_container.rs`,
//! `script_runner.py`). Each test is a finding of an outside review: it failed on the code as
//! reviewed, is fixed since, and stays as a regression test. Needs Docker and the image (`rumi
//! image build`): skipped locally without them, a failure in CI.

mod common;

use common::skills::calls;
use common::warm::*;
use common::*;
use serde_json::{json, Value};

/// Creates a System V shared memory segment of 180 MiB (of the container's 256 MiB), fills it
/// and exits without removing it, plus a POSIX message queue.
const SYSV: &str = "import ctypes, json\n\
libc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\n\
size = 180 * 1024 * 1024\n\
sid = libc.shmget(0x5254, ctypes.c_size_t(size), 0o1000 | 0o600)\n\
addr = libc.shmat(sid, None, 0)\nctypes.memset(addr, 7, size)\n\
open('/dev/mqueue/left', 'w').close()\n\
print(json.dumps({'segment': sid}))\n";

/// What the previous script left in the IPC namespace; then allocates 100 MiB (well within the
/// container's memory limit for a script that starts from a clean container).
const AFTER_SYSV: &str = "import json, os, sys\n\
segments = open('/proc/sysvipc/shm').read().splitlines()[1:]\n\
queues = os.listdir('/dev/mqueue')\n\
print(json.dumps({'segments': len(segments), 'queues': queues}), flush=True)\n\
b = bytearray(100 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n\
print(json.dumps({'allocated': True}))\n";

/// Finding 1: a System V shared memory segment (and a POSIX message queue) outlives its script:
/// `kill_all` ends processes but IPC objects live in the container's IPC namespace until it
/// goes. The segment keeps its memory charged to the container, so every later script of the
/// run is OOM-killed at a fraction of its memory limit (the container is reported clean and
/// reused).
#[tokio::test]
async fn ipc_objects_of_a_script_do_not_outlive_it() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("sysv.py", SYSV), ("after.py", AFTER_SYSV)]);
    let plan = vec![script("scripts/sysv.py"), script("scripts/after.py")];
    let (_, results) = strict_run(home.path(), plan, json!({})).await;
    assert!(
        results[0]["stdout_json"]["segment"].is_i64(),
        "{results:#?}"
    );
    // Two JSON lines: the answer is `stdout_text`; the first says what the script found.
    let out = results[1]["stdout_text"].as_str().unwrap_or_default();
    let seen: Value = out
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| results[1]["stdout_json"].clone());
    assert_eq!(
        (&seen["segments"], &seen["queues"]),
        (&json!(0), &json!([])),
        "IPC objects of the previous script are still there: {results:#?}"
    );
    assert_eq!(
        results[1]["exit_code"], 0,
        "the next script could not use the container's memory: {results:#?}"
    );
    assert!(
        results[1]["stdout_text"]
            .as_str()
            .unwrap_or_default()
            .contains("allocated"),
        "{results:#?}"
    );
}

/// Leaves a directory it cannot write in /tmp and in /dev/shm, each with a file inside.
const LOCKED: &str = "import json, os\n\
for top in ('/tmp', '/dev/shm'):\n    os.makedirs(top + '/keep', exist_ok=True)\n\
\x20   open(top + '/keep/f', 'w').write('left by the previous script')\n\
\x20   os.chmod(top + '/keep', 0o500)\n\
print(json.dumps({'locked': True}))\n";
const LOOK: &str = "import json, os\n\
print(json.dumps({'tmp': sorted(os.listdir('/tmp')), 'shm': sorted(os.listdir('/dev/shm'))}))\n";

/// Finding 2: "/tmp and /dev/shm are emptied after every script" does not hold for a
/// directory the script made read-only: `scratch()` calls `rmtree(ignore_errors=True)`, which
/// cannot unlink inside a mode-0500 directory (no capability, no chmod first), so its files
/// carry over to the next script of the run (and keep their share of the tmpfs).
#[tokio::test]
async fn tmp_is_emptied_even_when_a_script_locks_a_directory() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("locked.py", LOCKED), ("look.py", LOOK)]);
    let plan = vec![script("scripts/locked.py"), script("scripts/look.py")];
    let (_, results) = strict_run(home.path(), plan, json!({})).await;
    assert_eq!(results[0]["stdout_json"]["locked"], true, "{results:#?}");
    assert_eq!(
        results[1]["stdout_json"],
        json!({"tmp": [], "shm": []}),
        "scratch of the previous script carried over: {results:#?}"
    );
}

const SAY: &str = "print('the first script says 7b1d-secret')\n";
/// Walks up its own stack into the runner's frames (the fork carries them) and reads the
/// runner's global `result`: the previous job's answer.
const PEEK: &str = "import base64, json, sys\n\
f = sys._getframe()\nwhile f.f_back is not None:\n    f = f.f_back\n\
prev = f.f_globals.get('result') or {}\n\
print(json.dumps({'previous_stdout': base64.b64decode(prev.get('stdout', '')).decode()}))\n";

/// Finding 3: a Python script runs in a fork of the runner, and the fork carries the runner's
/// state: its frames and globals, among them `result`, the previous script's whole answer
/// (stdout and stderr). "Every fork starts from the same clean state" does not hold; what one
/// script printed for the model is readable by the next one (same run, so one trust domain:
/// low severity, but the claim in the module doc is wrong).
#[tokio::test]
async fn a_forked_script_cannot_read_the_previous_answer() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("say.py", SAY), ("peek.py", PEEK)]);
    let plan = vec![script("scripts/say.py"), script("scripts/peek.py")];
    let (_, results) = strict_run(home.path(), plan, json!({})).await;
    assert!(
        results[0]["stdout_text"]
            .as_str()
            .unwrap_or_default()
            .contains("7b1d-secret"),
        "{results:#?}"
    );
    assert_eq!(
        results[1]["stdout_json"]["previous_stdout"], "",
        "the runner handed the previous answer to the next script: {results:#?}"
    );
}

/// Leaves a 250 MiB System V segment behind (it is itself OOM-killed while filling it).
const SYSV_FULL: &str = "import ctypes\n\
libc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\n\
size = 250 * 1024 * 1024\n\
sid = libc.shmget(0x5255, ctypes.c_size_t(size), 0o1000 | 0o600)\n\
addr = libc.shmat(sid, None, 0)\nctypes.memset(addr, 7, size)\n";
/// A megabyte of output: the runner needs a few MiB to answer it.
const MEGABYTE: &str = "head -c 700000 /dev/urandom | base64 -w0\n";
const HELLO: &str = "print('{\"hello\": 1}')\n";

/// Finding 1, its worst case: with the memory the previous script left in a segment, the runner
/// (PID 1) itself is OOM-killed while it buffers the next, innocent script's output: that script's
/// result is lost ("the script container stopped"); only the one after runs, in a new container.
#[tokio::test]
async fn a_script_after_a_memory_hog_keeps_its_output() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(
        home.path(),
        &[
            ("full.py", SYSV_FULL),
            ("mega.sh", MEGABYTE),
            ("hello.py", HELLO),
        ],
    );
    let plan = vec![
        script("scripts/full.py"),
        script("scripts/mega.sh"),
        script("scripts/hello.py"),
    ];
    let (_, results) = strict_run(home.path(), plan, json!({})).await;
    // The next script must run whatever happens (a fresh container is fine).
    assert_eq!(
        results[2]["stdout_json"],
        json!({"hello": 1}),
        "{results:#?}"
    );
    let out = results[1]["stdout_text"].as_str().map_or(0, str::len);
    assert_eq!(
        (&results[1]["exit_code"], out > 0),
        (&json!(0), true),
        "the innocent script's result was lost: {:#}",
        json!({"error": results[1]["error"], "exit_code": results[1]["exit_code"]})
    );
}

/// What a new interpreter would differ in from run to run, and its flags.
const INTERP: &str = "import json, sys\n\
print(json.dumps({'hash': hash('abc'), 'isolated': sys.flags.isolated, 'no_site': sys.flags.no_site, 'ignore_environment': sys.flags.ignore_environment}))\n";
const BOOM: &str = "raise ValueError('kaboom')\n";

/// Finding 4 (low): a forked Python script is not quite `python3 script.py`. Fixed: its
/// tracebacks showed the runner's own frames (`File "<string>", line …, in child`, `<frozen
/// runpy>`) to the model; they start at the script's frames now. Accepted and documented in
/// `script_container.rs`: the scripts of one run share the runner's string-hash seed, and
/// `sys.flags` shows the runner's `-I -S` (the search path and `PYTHONPATH` are set as a new
/// interpreter's would be) — one run's scripts are one trust domain.
#[tokio::test]
async fn a_forked_scripts_traceback_shows_only_its_own_frames() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("interp.py", INTERP), ("boom.py", BOOM)]);
    let plan = vec![
        script("scripts/interp.py"),
        calls(&[(
            "run_script",
            json!({"path": "scripts/interp.py", "argv": ["again"]}),
        )]),
        script("scripts/boom.py"),
    ];
    let (_, results) = strict_run(home.path(), plan, json!({})).await;
    assert_eq!(results[0]["exit_code"], 0, "{results:#?}");
    let tail = results[2]["stderr_tail"].as_str().unwrap_or_default();
    assert!(tail.contains("ValueError: kaboom"), "{results:#?}");
    assert!(
        !tail.contains("in child") && !tail.contains("runpy"),
        "the runner's frames are in the script's traceback: {tail}"
    );
}

/// Leaves a directory tree 1500 levels deep in /tmp and succeeds.
const DEEP: &str =
    "import os\nos.chdir('/tmp')\nfor i in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\n\
print('{\"deep\": true}')\n";

/// Finding 5: `scratch()` empties /tmp with `shutil.rmtree`, which recurses once per level
/// (Python 3.11): a tree deeper than the recursion limit raises `RecursionError`, which is not
/// the `OSError` it catches; the job fails in the runner's catch-all, the script's real result
/// (exit 0, its stdout) is lost, and the model is told "the interpreter python3 could not start
/// (RecursionError: …)". (The container is then removed, since the answer is not "clean"; a
/// runner reused without the kernel's check would fail every later job the same way.)
#[tokio::test]
async fn a_deep_tree_in_tmp_does_not_cost_the_script_its_result() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("deep.py", DEEP), ("hello.py", HELLO)]);
    let plan = vec![script("scripts/deep.py"), script("scripts/hello.py")];
    let (_, results) = strict_run(home.path(), plan, json!({})).await;
    assert_eq!(
        results[1]["stdout_json"],
        json!({"hello": 1}),
        "{results:#?}"
    );
    assert_eq!(
        (&results[0]["exit_code"], &results[0]["stdout_json"]),
        (&json!(0), &json!({"deep": true})),
        "the script's result was lost: {:#}",
        results[0]
    );
}
