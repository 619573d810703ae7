//! A pack author's first five minutes through the real binary: `rumi pack new`, `rumi pack test`
//! (what it keeps from the caller, and its clean-up on interrupt), approval and a run.

mod common;

use common::cli::*;
use common::{python_available, write, Kernel};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_new_pack_passes_its_test_runs_when_approved_and_a_broken_one_fails() {
    if !python_available() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("user_data")).unwrap();
    let mut cmd = bare();
    cmd.current_dir(home.path());
    let o = ok(cmd, &["pack", "new", "demo"]);
    assert!(o.stdout.contains("rumi pack test demo"), "{}", o.stdout);
    let pack = home.path().join("ecosystem/demo");
    for f in [
        "backend/ecosystem.json",
        "backend/blocks/greet.py",
        "backend/flows/demo.hello.flow.yaml",
        "backend/tests/hello.test.json",
    ] {
        assert!(pack.join(f).is_file(), "{f}");
    }
    let block = std::fs::read_to_string(pack.join("backend/blocks/greet.py")).unwrap();
    assert!(block.contains("import rumi_syscall") && block.contains("rumi_capability.call("));
    assert!(block.contains("-> Dict[str, Any]"), "type hints");
    let mut again = bare();
    again.current_dir(home.path());
    let o = fails(again, &["pack", "new", "demo"]);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    let mut bad = bare();
    bad.current_dir(home.path());
    assert!(fails(bad, &["pack", "new", "../escape"])
        .stderr
        .contains("not a valid pack id"));

    let test = |sub: &str| {
        let mut cmd = bare();
        cmd.current_dir(home.path().join(sub));
        run(cmd, &["pack", "test", "demo"])
    };
    let o = test("ecosystem/demo");
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("pack demo: 1 passed, 0 failed"),
        "{}",
        o.stderr
    );
    // The throw-away kernel left nothing in the author's home.
    assert!(!home.path().join("user_data/permissions").exists());
    assert!(!home.path().join("user_data/api_token").exists());

    // Approved and run on a real kernel, as the author's next step says.
    let k = Kernel::start(home.path(), &[]);
    ok(rumi(&k), &["pack", "approve", "demo"]);
    let run_out = ok(
        rumi(&k),
        &["flow", "run", "demo.hello", "-i", "name=Ada", "--json"],
    )
    .json();
    assert_eq!(run_out["result"]["greeting"]["greeting"], "Hello, Ada!");
    k.stop();

    // A failing expectation, a failing step and a flow that does not load each fail the test.
    let case = pack.join("backend/tests/hello.test.json");
    let text = std::fs::read_to_string(&case).unwrap();
    std::fs::write(&case, text.replace("Hello, Ada!", "Goodbye")).unwrap();
    let o = test(".");
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("result.greeting"), "{}", o.stdout);
    std::fs::write(&case, text).unwrap();
    let block_path = pack.join("backend/blocks/greet.py");
    std::fs::write(
        &block_path,
        block.replace(
            "name = str(",
            "raise RuntimeError('broken')\n    name = str(",
        ),
    )
    .unwrap();
    let o = test(".");
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("broken"), "{}", o.stdout);
    std::fs::write(&block_path, &block).unwrap();
    write(
        home.path(),
        "ecosystem/demo/backend/flows/bad.flow.yaml",
        "flow_id: demo.bad\nphases: []\nsteps: []\n",
    );
    let o = test(".");
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("bad.flow.yaml"), "{}", o.stdout);
}

/// `rumi pack test` keeps the operator's side out of the test kernel: no environment variable
/// and no open descriptor of the caller reaches a block, its working directory is the throw-away
/// home, and an interrupt stops the kernel and removes the home (exit 130).
#[test]
fn pack_test_keeps_the_callers_environment_and_descriptors_and_cleans_up_on_interrupt() {
    if !python_available() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("user_data")).unwrap();
    common::make_pack(
        home.path(),
        "probe",
        &[(
            "probe.py",
            "import os\ndef run(d, c=None):\n    fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n    kernel = os.getppid()\n    env = open(f'/proc/{kernel}/environ', 'rb').read().split(b'\\0')\n    return {'secret': any(e.startswith(b'PROBE_SECRET=') for e in env), 'fds': fds,\n            'kernel_cwd': os.readlink(f'/proc/{kernel}/cwd')}\n",
        ), ("slow.py", "import time\ndef run(d, c=None):\n    time.sleep(60)\n    return {}\n")],
    );
    write(
        home.path(),
        "ecosystem/probe/backend/flows/probe.flow.yaml",
        "flow_id: probe.env\nphases: [m]\nsteps:\n  - {id: p, phase: m, type: python_file_call, file: probe.py, output: out}\n",
    );
    write(
        home.path(),
        "ecosystem/probe/backend/tests/env.test.json",
        r#"{"flow": "probe.env", "expect": {"out": {"secret": false, "fds": [0, 1, 2, 3], "kernel_cwd": "?"}}}"#,
    );
    // Descriptor 7 is open (not close-on-exec) in the shell that runs the command.
    let bin = assert_cmd::cargo::cargo_bin("rumi");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 7</etc/hostname; '{}' pack test probe --json",
            bin.display()
        ))
        .current_dir(home.path())
        .env("PROBE_SECRET", "s3cret")
        .env_remove("RUMI_HOME")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let problem = report["results"][0]["problem"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The case expects kernel_cwd "?", so it fails and its problem shows what the block saw.
    eprintln!("what the block saw: {problem}");
    assert!(problem.contains("\"secret\":false"), "{problem}");
    assert!(
        !problem.contains(",7"),
        "descriptor 7 reached the block: {problem}"
    );
    assert!(
        problem.contains("rumi-pack-test-"),
        "the kernel runs in the throw-away home: {problem}"
    );
    assert!(
        !problem.contains(home.path().to_str().unwrap()),
        "{problem}"
    );

    // An interrupt while a flow runs: the kernel stops, the home goes, exit 130.
    write(
        home.path(),
        "ecosystem/probe/backend/flows/slow.flow.yaml",
        "flow_id: probe.slow\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: python_file_call, file: slow.py}\n",
    );
    let mut child = std::process::Command::new(&bin)
        .args(["pack", "test", "probe"])
        .current_dir(home.path())
        .env_remove("RUMI_HOME")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the throw-away kernel has recorded probe.env (flows run in id order, so
    // probe.slow is running or about to), then interrupt.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut kernel_home = None;
    while kernel_home.is_none() && std::time::Instant::now() < deadline {
        kernel_home = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("rumi-pack-test-{pid}-"))
                    && std::fs::read_to_string(p.join("user_data/runs/runs.jsonl"))
                        .is_ok_and(|t| t.contains("probe.env"))
            });
        std::thread::sleep(Duration::from_millis(50));
    }
    let kernel_home = kernel_home.expect("the throw-away home appeared");
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!kernel_home.exists(), "the throw-away home was removed");
}
