//! Strict mode against real containers (contract §5.3, §15 invariants 2, 4, 8): isolation flags,
//! what a block can and cannot reach, recovery from hostile blocks, container lifecycle and the
//! container API. Needs a Docker daemon and the runtime image (`rumi image build`, which
//! `.ci/run` does first): in CI their absence fails loudly, locally the tests are skipped.
//!
//! Container names are global on a daemon, so every test uses pack ids of its own.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Removes the named packs' containers when created (a leftover of an earlier, aborted test run)
/// and when dropped (a test that panicked kills its kernel with SIGKILL, which leaves them).
/// Pack ids are unique across these tests, so a pack id names one test's container whatever
/// the installation (`rumi-pack-<id>.<instance>`).
struct Containers(Vec<String>);

impl Containers {
    fn of(packs: &[&str]) -> Containers {
        let c = Containers(packs.iter().map(|p| p.to_string()).collect());
        c.remove();
        c
    }
    fn remove(&self) {
        let ids: Vec<String> = self.0.iter().flat_map(|p| containers_of(p)).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// The ids of every container (of any installation) of the pack `pack`.
fn containers_of(pack: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=rumi.pack_id={pack}"))
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `docker inspect` of a pack's container as JSON (None when there is none). `name` is
/// `rumi-pack-<id>`: the installation's suffix is found by the pack label.
fn inspect(name: &str) -> Option<Value> {
    let pack = name.strip_prefix("rumi-pack-").expect("rumi-pack-<id>");
    let id = containers_of(pack).into_iter().next()?;
    let out = Command::new("docker")
        .args(["inspect", &id])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.first().cloned()
}

fn running(name: &str) -> bool {
    inspect(name).is_some_and(|c| c["State"]["Running"] == true)
}

/// Waits up to `secs` for `cond`.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// One flow per block: `<pack>__<block>` runs the block with the run's `arg` input.
fn block_flows(home: &Path, pack: &str, blocks: &[(&str, &str)]) {
    make_pack(home, pack, blocks);
    for (file, _) in blocks {
        let name = file.trim_end_matches(".py");
        write(
            home,
            &format!("user_data/shared/flows/{pack}__{name}.flow.yaml"),
            &format!(
                "flow_id: {pack}__{name}\nphases: [m]\nsteps:\n  - {{id: b, phase: m, type: python_file_call, owner_pack: {pack}, file: {file}, input: '${{ctx.arg}}', timeout_seconds: 8, output: out}}\n"
            ),
        );
    }
}

/// Runs a block's flow; returns the step record and the run's result.
async fn call(k: &Kernel, pack: &str, block: &str, arg: Value) -> (Value, Value) {
    let (s, run) = k
        .run(&format!("{pack}__{block}"), json!({"arg": arg}))
        .await;
    assert_eq!(s, 200, "{run}");
    (step(&run, "b").clone(), run["result"]["out"].clone())
}

async fn call_ok(k: &Kernel, pack: &str, block: &str, arg: Value) -> Value {
    let (st, out) = call(k, pack, block, arg).await;
    assert_eq!(st["status"], "succeeded", "{block}: {st}");
    out
}

fn start_strict(home: &Path, env: &[(&str, &str)]) -> Kernel {
    Kernel::start_mode(home, env, false)
}

const PROBE: &str = r#"
import os, socket
def attempt(fn):
    try:
        fn()
        return "ok"
    except Exception as e:
        return type(e).__name__

def write_to(path):
    def w():
        with open(path, "w") as f:
            f.write("x")
    return w

def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(("172.17.0.1", 80))

def walk_for(needles):
    found = []
    for root in ("/pack", "/data", "/run/rumi", "/opt/rumi", "/tmp", "/etc", "/root", "/home"):
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, "rb") as f:
                        data = f.read(1 << 20)
                except OSError:
                    continue
                for n in needles:
                    if n.encode() in data:
                        found.append(path)
    return found

def run(input_data, context=None):
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mounts.append(parts[4])
    return {
        "uid": os.getuid(), "gid": os.getgid(),
        "connect": attempt(connect),
        "resolve": attempt(lambda: socket.getaddrinfo("example.com", 443)),
        "write_pack": attempt(write_to("/pack/x.txt")),
        "write_data": attempt(write_to("/data/x.txt")),
        "write_root": attempt(write_to("/x.txt")),
        "write_tmp": attempt(write_to("/tmp/x.txt")),
        "write_pip": attempt(write_to("/pip-packages/x.py")),
        "pip_import": attempt(lambda: __import__("rumi_test_dep")),
        "env": dict(os.environ),
        "mounts": mounts,
        "found": walk_for(input_data["needles"]),
        "interfaces": sorted(os.listdir("/sys/class/net")),
    }
"#;

#[tokio::test]
async fn a_block_in_its_container_is_isolated() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["iso_a", "iso_other"]);
    let home = fresh_home();
    let h = home.path();
    block_flows(h, "iso_a", &[("probe.py", PROBE)]);
    make_pack(
        h,
        "iso_other",
        &[("noop.py", "def run(i):\n    return {}\n")],
    );
    write(
        h,
        "user_data/packs/iso_other/secret.txt",
        "other-pack-secret-42",
    );
    write(h, "user_data/packs/iso_a/own.txt", "own data");
    write(
        h,
        "user_data/packs/iso_a/python/site-packages/rumi_test_dep.py",
        "VALUE = 1\n",
    );
    let k = start_strict(h, &[("RUMI_TEST_KERNEL_SECRET", "kernel-env-secret-17")]);
    k.approve("iso_a").await;
    k.approve("iso_other").await;
    let needles = [TOKEN, "kernel-env-secret-17", "other-pack-secret-42"];
    let out = call_ok(&k, "iso_a", "probe", json!({"needles": needles})).await;
    assert_eq!(out["uid"], 65534, "{out}");
    assert_eq!(out["gid"], 65534, "{out}");
    assert_ne!(out["connect"], "ok", "no network: {out}");
    assert_ne!(out["resolve"], "ok", "no name resolution: {out}");
    assert_eq!(out["interfaces"], json!(["lo"]), "only loopback: {out}");
    assert_eq!(
        out["pip_import"], "ok",
        "installed packages import from /pip-packages: {out}"
    );
    for key in ["write_pack", "write_data", "write_root", "write_pip"] {
        assert_eq!(out[key], "OSError", "{key} must be refused: {out}");
    }
    assert_eq!(out["write_tmp"], "ok", "/tmp is writable: {out}");
    let env = out["env"].as_object().unwrap();
    let env_text = serde_json::to_string(env).unwrap();
    for n in needles {
        assert!(
            !env_text.contains(n),
            "{n} leaked into the environment: {env_text}"
        );
    }
    assert!(
        env.keys().all(|k| !k.starts_with("RUMI_")
            || k == "RUMI_PACK_ID"
            || k == "RUMI_MAX_RESULT_BYTES"
            || k == "RUMI_EGRESS_SOCKET"
            || k == "RUMI_CAPABILITY_SOCKET"),
        "{env_text}"
    );
    assert_eq!(env["RUMI_EGRESS_SOCKET"], "/run/rumi/egress.sock");
    assert_eq!(env["RUMI_CAPABILITY_SOCKET"], "/run/rumi/capability.sock");
    assert_eq!(
        out["found"],
        json!([]),
        "nothing visible holds the token, a kernel secret or another pack's data"
    );
    let mounts: Vec<&str> = out["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for m in ["/pack", "/data", "/run/rumi", "/opt/rumi", "/tmp"] {
        assert!(mounts.contains(&m), "{m} mounted: {mounts:?}");
    }
    assert!(mounts.contains(&"/pip-packages"), "{mounts:?}");
    // The pack's own data is visible read-only; the probe's write attempts left nothing.
    assert!(!h.join("ecosystem/iso_a/backend/x.txt").exists());
    assert!(!h.join("user_data/packs/iso_a/x.txt").exists());
}

#[tokio::test]
async fn docker_inspect_shows_every_flag_and_two_packs_get_two_containers() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["flags_a", "flags_b"]);
    let home = fresh_home();
    let h = home.path();
    let hello = "def run(input_data, context=None):\n    return {'pack': context['owner_pack']}\n";
    block_flows(h, "flags_a", &[("who.py", hello)]);
    block_flows(h, "flags_b", &[("who.py", hello)]);
    let k = start_strict(h, &[("RUMI_TEST_KERNEL_SECRET", "kernel-env-secret-99")]);
    k.approve("flags_a").await;
    k.approve("flags_b").await;
    assert_eq!(
        call_ok(&k, "flags_a", "who", json!(null)).await["pack"],
        "flags_a"
    );
    assert_eq!(
        call_ok(&k, "flags_b", "who", json!(null)).await["pack"],
        "flags_b"
    );
    let a = inspect("rumi-pack-flags_a").expect("flags_a has a container");
    let b = inspect("rumi-pack-flags_b").expect("flags_b has a container");
    assert_ne!(a["Id"], b["Id"], "two packs, two containers");
    let hc = &a["HostConfig"];
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    assert!(
        hc["SecurityOpt"].to_string().contains("no-new-privileges"),
        "{hc}"
    );
    assert_eq!(hc["Memory"], 256 * 1024 * 1024);
    assert_eq!(
        hc["MemorySwap"],
        256 * 1024 * 1024,
        "no swap beyond the limit"
    );
    assert_eq!(hc["PidsLimit"], 100);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Privileged"], false);
    assert!(hc["Tmpfs"]["/tmp"].is_string(), "{hc}");
    let cfg = &a["Config"];
    assert_eq!(cfg["User"], "65534:65534");
    assert_eq!(cfg["Labels"]["rumi.managed"], "true");
    assert_eq!(cfg["Labels"]["rumi.pack_id"], "flags_a");
    let env = cfg["Env"].to_string();
    assert!(
        !env.contains(TOKEN) && !env.contains("kernel-env-secret-99"),
        "{env}"
    );
    let mounts = a["Mounts"].as_array().unwrap();
    let mount = |dest: &str| {
        mounts
            .iter()
            .find(|m| m["Destination"] == dest)
            .unwrap_or_else(|| panic!("no {dest} mount: {mounts:?}"))
    };
    for dest in ["/pack", "/data", "/run/rumi", "/opt/rumi"] {
        assert_eq!(mount(dest)["RW"], false, "{dest} is read-only");
    }
    let pack_source = mount("/pack")["Source"].as_str().unwrap().to_string();
    // The pack subdir (the directory holding ecosystem.json), not the whole pack directory.
    assert!(
        pack_source.ends_with("ecosystem/flags_a/backend"),
        "{pack_source}"
    );
    assert!(mount("/data")["Source"]
        .as_str()
        .unwrap()
        .ends_with("user_data/packs/flags_a"));
    assert_eq!(a["State"]["Running"], true);
    // The socket directory is reachable by the pack's group, not by everyone.
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::metadata(h.join("user_data/sockets/flags_a")).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o750);
    assert_eq!(dir.gid(), 65534);
    // The channel socket is unlinked once the block host connected: nothing can connect again.
    assert!(!h.join("user_data/sockets/flags_a/host.sock").exists());
    // Warm calls reuse the container.
    for _ in 0..5 {
        call_ok(&k, "flags_a", "who", json!(null)).await;
    }
    let again = inspect("rumi-pack-flags_a").unwrap();
    assert_eq!(again["Id"], a["Id"], "one long-lived container");
    // Shutdown removes every managed container.
    let log = k.stderr_log.clone();
    let t = Instant::now();
    k.stop();
    let left = inspect("rumi-pack-flags_a");
    assert!(
        left.is_none(),
        "removed at shutdown (stop took {:?}): {} {}",
        t.elapsed(),
        left.map(|c| c["State"].to_string()).unwrap_or_default(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        inspect("rumi-pack-flags_b").is_none(),
        "removed at shutdown"
    );
}

#[tokio::test]
async fn hostile_blocks_are_contained_and_the_pack_recovers() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["hostile", "bystander"]);
    let home = fresh_home();
    let h = home.path();
    block_flows(
        h,
        "hostile",
        &[
            ("ok.py", "import os\ndef run(i):\n    return {'pid': os.getpid()}\n"),
            ("memory.py", "def run(i):\n    blob = b'x' * (1 << 30)\n    return {'len': len(blob)}\n"),
            ("forks.py", "import os\ndef run(i):\n    while True:\n        os.fork()\n"),
            ("leaves_child.py", "import os, time\ndef run(i):\n    if os.fork() == 0:\n        time.sleep(300)\n        os._exit(0)\n    return {'parent': True}\n"),
            // A daemon: the child forks a grandchild, exits and is reaped, so only the orphaned
            // grandchild is left (the host's child as its subreaper: it must still be found).
            ("leaves_orphan.py", "import os, time\ndef run(i):\n    pid = os.fork()\n    if pid == 0:\n        os.setsid()\n        if os.fork() == 0:\n            time.sleep(300)\n        os._exit(0)\n    os.waitpid(pid, 0)\n    return {'parent': True}\n"),
            // A child that has exited but was not waited for: a zombie still counts.
            ("leaves_zombie.py", "import os, time\ndef run(i):\n    if os.fork() == 0:\n        os._exit(0)\n    time.sleep(0.2)\n    return {'parent': True}\n"),
            ("sleeps.py", "import time\ndef run(i):\n    time.sleep(60)\n"),
            ("dies.py", "import os\ndef run(i):\n    os._exit(7)\n"),
        ],
    );
    make_pack(
        h,
        "bystander",
        &[("ok.py", "def run(i):\n    return {'fine': True}\n")],
    );
    write(
        h,
        "user_data/shared/flows/bystander__ok.flow.yaml",
        "flow_id: bystander__ok\nphases: [m]\nsteps:\n  - {id: b, phase: m, type: python_file_call, owner_pack: bystander, file: ok.py, output: out}\n",
    );
    write(
        h,
        "user_data/shared/flows/hostile__sleeps_short.flow.yaml",
        "flow_id: hostile__sleeps_short\nphases: [m]\nsteps:\n  - {id: b, phase: m, type: python_file_call, owner_pack: hostile, file: sleeps.py, timeout_seconds: 2, output: out}\n",
    );
    let k = start_strict(h, &[]);
    k.approve("hostile").await;
    k.approve("bystander").await;
    call_ok(&k, "hostile", "ok", json!(null)).await;
    call_ok(&k, "bystander", "ok", json!(null)).await;
    let bystander = inspect("rumi-pack-bystander").unwrap()["Id"].clone();

    // A fork storm meets the pids limit; its hundred copies of the host may also meet the memory
    // limit first, and the kernel reports whichever killed it.
    let cases: [(&str, &[&str]); 7] = [
        ("memory", &["memory_limit"]),
        ("forks", &["process_limit", "memory_limit"]),
        ("leaves_child", &["process_limit"]),
        ("leaves_orphan", &["process_limit"]),
        ("leaves_zombie", &["process_limit"]),
        ("dies", &["worker_crashed"]),
        ("sleeps_short", &["timeout"]),
    ];
    for (block, want) in cases {
        let before = inspect("rumi-pack-hostile").map(|c| c["Id"].clone());
        let started = Instant::now();
        let (st, _) = call(&k, "hostile", block, json!(null)).await;
        assert_eq!(st["status"], "failed", "{block}: {st}");
        assert!(
            want.contains(&st["error_type"].as_str().unwrap_or_default()),
            "{block}: {st}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{block} took {:?}",
            started.elapsed()
        );
        // The pack answers its next call, from a fresh container.
        call_ok(&k, "hostile", "ok", json!(null)).await;
        let after = inspect("rumi-pack-hostile").map(|c| c["Id"].clone());
        assert_ne!(before, after, "{block}: the container was replaced");
    }
    let (st, _) = call(&k, "hostile", "sleeps_short", json!(null)).await;
    assert!(
        st["error"].as_str().unwrap().contains("longer than 2s"),
        "{st}"
    );
    // The other pack was never touched.
    assert_eq!(inspect("rumi-pack-bystander").unwrap()["Id"], bystander);
    call_ok(&k, "bystander", "ok", json!(null)).await;
    let (_, v) = k.get("/api/health").await;
    assert_eq!(v["success"], true, "the kernel keeps serving");
}

#[tokio::test]
async fn a_container_that_dies_by_itself_is_replaced() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["selfdie"]);
    let home = fresh_home();
    let h = home.path();
    block_flows(
        h,
        "selfdie",
        &[(
            "ok.py",
            "import os\ndef run(i):\n    return {'host': os.uname().nodename}\n",
        )],
    );
    let k = start_strict(h, &[("RUMI_CONTAINER_START", "approval")]);
    k.approve("selfdie").await;
    assert!(
        wait_for(15, || running("rumi-pack-selfdie")),
        "RUMI_CONTAINER_START=approval starts the container without a call"
    );
    let first = call_ok(&k, "selfdie", "ok", json!(null)).await["host"].clone();
    let name = inspect("rumi-pack-selfdie").unwrap()["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    assert!(
        name.starts_with("rumi-pack-selfdie.") && name.len() == "rumi-pack-selfdie.".len() + 12,
        "rumi-pack-<id>.<installation digest>: {name}"
    );
    let status = Command::new("docker")
        .args(["kill", &name])
        .output()
        .unwrap();
    assert!(status.status.success());
    // Replaced without waiting for a call.
    assert!(
        wait_for(15, || inspect("rumi-pack-selfdie")
            .is_some_and(
                |c| c["State"]["Running"] == true && c["Config"]["Hostname"] != first
            )),
        "a fresh container runs again"
    );
    let second = call_ok(&k, "selfdie", "ok", json!(null)).await["host"].clone();
    assert_ne!(first, second, "the call ran in the new container");
}

#[tokio::test]
async fn a_modified_or_rejected_pack_loses_its_container() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["modpack", "rejpack", "gonepack", "delpack"]);
    let home = fresh_home();
    let h = home.path();
    block_flows(
        h,
        "modpack",
        &[("ok.py", "def run(i):\n    return {'v': 1}\n")],
    );
    block_flows(
        h,
        "rejpack",
        &[("ok.py", "def run(i):\n    return {'v': 1}\n")],
    );
    block_flows(h, "gonepack", &[("ok.py", "def run(i):\n    return {}\n")]);
    block_flows(h, "delpack", &[("ok.py", "def run(i):\n    return {}\n")]);
    let k = start_strict(h, &[]);
    k.approve("modpack").await;
    k.approve("rejpack").await;
    call_ok(&k, "modpack", "ok", json!(null)).await;
    call_ok(&k, "rejpack", "ok", json!(null)).await;
    assert!(running("rumi-pack-modpack") && running("rumi-pack-rejpack"));
    // The file changes under the running container: the next call is refused and the container goes.
    std::thread::sleep(Duration::from_millis(2100));
    write(
        h,
        "ecosystem/modpack/backend/blocks/ok.py",
        "def run(i):\n    return {'v': 'evil'}\n",
    );
    let (st, out) = call(&k, "modpack", "ok", json!(null)).await;
    assert_eq!(st["error_type"], "hash_verification_failed", "{st}");
    assert!(
        !out.to_string().contains("evil"),
        "the changed code never ran: {out}"
    );
    assert!(
        wait_for(10, || inspect("rumi-pack-modpack").is_none()),
        "the modified pack's container is gone"
    );
    let (s, _) = k
        .post("/api/packs/rejpack/reject", json!({"reason": "test"}))
        .await;
    assert_eq!(s, 200);
    assert!(
        wait_for(10, || inspect("rumi-pack-rejpack").is_none()),
        "the rejected pack's container is gone"
    );
    // Uninstalled: its directory removed, then a scan.
    k.approve("gonepack").await;
    call_ok(&k, "gonepack", "ok", json!(null)).await;
    assert!(running("rumi-pack-gonepack"));
    std::fs::remove_dir_all(h.join("ecosystem/gonepack")).unwrap();
    let (s, v) = k.post("/api/packs/scan", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        wait_for(10, || inspect("rumi-pack-gonepack").is_none()),
        "the uninstalled pack's container is gone"
    );
    // Uninstalled through the API: the container goes, the files stay.
    k.approve("delpack").await;
    call_ok(&k, "delpack", "ok", json!(null)).await;
    assert!(running("rumi-pack-delpack"));
    let (s, v) = k.req("DELETE", "/api/packs/delpack", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        wait_for(10, || inspect("rumi-pack-delpack").is_none()),
        "DELETE /api/packs/delpack removed its container"
    );
    assert!(h.join("ecosystem/delpack").exists());
    let (st, _) = call(&k, "delpack", "ok", json!(null)).await;
    assert_eq!(st["error_type"], "approval_rejected", "{st}");
}

#[tokio::test]
async fn leftovers_of_a_crashed_kernel_are_removed_at_start() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["crashleft"]);
    let home = fresh_home();
    let h = home.path();
    block_flows(h, "crashleft", &[("ok.py", "def run(i):\n    return {}\n")]);
    let mut k = start_strict(h, &[]);
    k.approve("crashleft").await;
    call_ok(&k, "crashleft", "ok", json!(null)).await;
    assert!(running("rumi-pack-crashleft"));
    // SIGKILL: no orderly shutdown, the container stays behind.
    k.child.kill().unwrap();
    k.child.wait().unwrap();
    assert!(!k.alive());
    // The block host exits when its channel closes; the stopped container stays behind.
    assert!(
        inspect("rumi-pack-crashleft").is_some(),
        "a crash leaves the container"
    );
    let k2 = start_strict(h, &[]);
    assert!(
        inspect("rumi-pack-crashleft").is_none(),
        "removed before the kernel served"
    );
    // And the pack works again with a fresh container.
    call_ok(&k2, "crashleft", "ok", json!(null)).await;
    assert!(running("rumi-pack-crashleft"));
}

/// Two installations on one daemon run the same pack id side by side: each container carries its
/// installation's digest in its name (`rumi-pack-<id>.<digest>`). A second kernel started on one
/// of the homes is refused before it touches that home's container.
#[tokio::test]
async fn two_homes_run_the_same_pack_id_and_a_second_kernel_changes_nothing() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["twin"]);
    let (home_a, home_b) = (fresh_home(), fresh_home());
    let ok = [(
        "ok.py",
        "import os\ndef run(i):\n    return {'host': os.uname().nodename}\n",
    )];
    block_flows(home_a.path(), "twin", &ok);
    block_flows(home_b.path(), "twin", &ok);
    let a = start_strict(home_a.path(), &[]);
    let b = start_strict(home_b.path(), &[]);
    a.approve("twin").await;
    b.approve("twin").await;
    let host_a = call_ok(&a, "twin", "ok", json!(null)).await["host"].clone();
    let host_b = call_ok(&b, "twin", "ok", json!(null)).await["host"].clone();
    assert_ne!(host_a, host_b, "two containers");
    assert_eq!(containers_of("twin").len(), 2);
    let ids_before = containers_of("twin");
    let err = serve_refused(home_a.path(), &[]);
    assert!(
        err.contains(&format!("another kernel (pid {})", a.child.id())),
        "{err}"
    );
    // Neither container was removed or replaced, and both kernels still call their own.
    assert_eq!(containers_of("twin"), ids_before);
    assert_eq!(call_ok(&a, "twin", "ok", json!(null)).await["host"], host_a);
    assert_eq!(call_ok(&b, "twin", "ok", json!(null)).await["host"], host_b);
    // Stopping one kernel removes its own container only.
    a.stop();
    assert!(wait_for(15, || containers_of("twin").len() == 1));
    assert_eq!(call_ok(&b, "twin", "ok", json!(null)).await["host"], host_b);
}

#[tokio::test]
async fn the_container_api() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["apipack"]);
    let home = fresh_home();
    let h = home.path();
    block_flows(h, "apipack", &[("ok.py", "def run(i):\n    return {}\n")]);
    let k = start_strict(h, &[]);
    let (s, v) = k.get("/api/docker/status").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["available"], true, "{v}");
    assert_eq!(v["data"]["mode"], "strict");
    assert!(v["data"]["version"].is_string());
    assert!(v["data"]["image"]
        .as_str()
        .unwrap()
        .starts_with("rumi-pack-runtime:"));
    assert_eq!(v["data"]["image_present"], true);

    let (s, v) = k.post("/api/containers/apipack/start", json!({})).await;
    assert_eq!(s, 404, "not approved yet: {v}");
    assert!(v["error"].as_str().unwrap().contains("apipack"));
    k.approve("apipack").await;
    let (s, v) = k.get("/api/containers").await;
    assert_eq!(s, 200);
    assert_eq!(
        v["data"],
        json!([]),
        "started at the first call, not before"
    );
    let (s, v) = k.post("/api/containers/apipack/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(running("rumi-pack-apipack"));
    let (_, v) = k.get("/api/containers").await;
    let list = v["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["pack_id"], "apipack");
    assert!(
        list[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("rumi-pack-apipack."),
        "{v}"
    );
    assert_eq!(list[0]["state"], "running");
    call_ok(&k, "apipack", "ok", json!(null)).await;

    let (s, v) = k.post("/api/containers/apipack/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(!running("rumi-pack-apipack"), "stopped");
    assert!(
        inspect("rumi-pack-apipack").is_some(),
        "stop keeps the container"
    );
    // The next call starts a fresh one.
    call_ok(&k, "apipack", "ok", json!(null)).await;
    assert!(running("rumi-pack-apipack"));

    let (s, v) = k.req("DELETE", "/api/containers/apipack", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(inspect("rumi-pack-apipack").is_none(), "removed");
    let (s, v) = k.req("DELETE", "/api/containers/no_such_pack", None).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = k.post("/api/containers/bad%20id/start", json!({})).await;
    assert_eq!(s, 400, "{v}");
}

#[test]
fn doctor_and_image_build_report_what_strict_mode_needs() {
    if !docker_ready() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let rumi = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rumi"));
        cmd.args(args).env("RUMI_HOME", home.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = rumi(&["doctor"], &[]);
    assert_eq!(code, Some(0), "{text}");
    for want in [
        "security mode      strict",
        "docker             reachable",
        "(present)",
        "ready",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    // The image is present: building again is a no-op that says so.
    let (code, text) = rumi(&["image", "build"], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to do"), "{text}");
    // Without a daemon, strict mode is not ready and the doctor says why.
    let (code, text) = rumi(
        &["doctor"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("!!  docker") && text.contains("not reachable"),
        "{text}"
    );
    // A custom image that is not there is named as such.
    let (code, text) = rumi(
        &["image", "show"],
        &[("RUMI_PACK_IMAGE", "rumi-test-absent:1")],
    );
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("RUMI_PACK_IMAGE"), "{text}");
    let (code, text) = rumi(&["doctor"], &[("RUMI_PACK_IMAGE", "bad image!")]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("RUMI_PACK_IMAGE"), "{text}");
}

#[tokio::test]
async fn a_missing_image_is_named_and_refused() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["noimage"]);
    let home = fresh_home();
    let h = home.path();
    block_flows(h, "noimage", &[("ok.py", "def run(i):\n    return {}\n")]);
    let k = start_strict(h, &[("RUMI_PACK_IMAGE", "rumi-test-absent:1")]);
    k.approve("noimage").await;
    let (st, _) = call(&k, "noimage", "ok", json!(null)).await;
    assert_eq!(st["error_type"], "docker_required", "{st}");
    let error = st["error"].as_str().unwrap();
    assert!(
        error.contains("rumi-test-absent:1") && error.contains("not present"),
        "{error}"
    );
    assert!(
        inspect("rumi-pack-noimage").is_none(),
        "nothing was started"
    );
    let (_, v) = k.get("/api/docker/status").await;
    assert_eq!(v["data"]["available"], true);
    assert_eq!(v["data"]["image_present"], false, "{v}");
}

#[tokio::test]
async fn without_a_daemon_strict_mode_refuses_and_keeps_serving() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = start_strict(
        home.path(),
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    k.approve("my_pack").await;
    let (s, run) = k.run("hello", json!({"name": "Ann"})).await;
    assert_eq!(s, 200);
    let st = step(&run, "call_hello");
    assert_eq!(st["error_type"], "docker_required", "{run}");
    let error = st["error"].as_str().unwrap();
    assert!(
        error.contains("not reachable") && error.contains("never"),
        "{error}"
    );
    assert!(!error.contains("/nonexistent"), "no host path: {error}");
    // A refusal of §5.1: audited in the security category.
    let (s, v) = k.get("/api/audit?category=security").await;
    assert_eq!(s, 200);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["error_type"] == "docker_required" && e["owner_pack"] == "my_pack"),
        "{v}"
    );
    let (s, v) = k.get("/api/docker/status").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["available"], false);
    assert!(v["data"]["reason"].is_string());
    let (s, v) = k.get("/api/containers").await;
    assert_eq!(s, 503, "{v}");
    let (s, _) = k.get("/api/flows").await;
    assert_eq!(s, 200, "the kernel keeps serving");
    // Permissive kernels have no containers to manage.
    let home2 = fresh_home();
    let p = Kernel::start(home2.path(), &[]);
    let (s, v) = p.get("/api/docker/status").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["mode"], "permissive");
    let (s, v) = p.get("/api/containers").await;
    assert_eq!(s, 409, "{v}");
}

/// The only way out of a container: its egress socket at `/run/rumi/egress.sock`, which reaches
/// exactly what the pack's grant allows — the container itself has no network.
const EGRESS: &str = r#"
import os, rumi_syscall

def run(arg, context=None):
    sock = os.environ.get("RUMI_EGRESS_SOCKET")
    allowed = rumi_syscall.get(arg["url"], timeout_seconds=10)
    internal = rumi_syscall.get(arg["internal"], timeout_seconds=10)
    return {
        "sock": sock,
        "exists": os.path.exists(sock or ""),
        "status": allowed.get("status_code"),
        "body": allowed.get("body"),
        "internal": internal.get("error_type"),
        "check": context["network_check"]("127.0.0.2", int(arg["port"])),
    }
"#;

#[tokio::test]
async fn a_container_reaches_granted_hosts_only_through_its_egress_socket() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["egress_box"]);
    let up = Upstream::start("127.0.0.2");
    let home = fresh_home();
    block_flows(home.path(), "egress_box", &[("net.py", EGRESS)]);
    let k = start_strict(home.path(), &[("RUMI_EGRESS_ALLOW_CIDRS", "127.0.0.2/32")]);
    k.approve("egress_box").await;
    let (s, v) = k
        .post(
            "/api/network/grant",
            json!({"pack_id": "egress_box", "allowed_domains": ["127.0.0.2", "169.254.169.254"], "allowed_ports": [up.addr.port(), 80]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let arg = json!({"url": up.url("/hop/1"), "internal": "http://169.254.169.254/latest/meta-data/", "port": up.addr.port()});
    let out = call_ok(&k, "egress_box", "net", arg).await;
    assert_eq!(out["sock"], "/run/rumi/egress.sock", "{out}");
    assert_eq!(out["exists"], true);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "landed");
    assert_eq!(out["internal"], "security_blocked");
    assert_eq!(out["check"]["allowed"], true, "{out}");
}

/// `rumi pack test --strict` runs a new pack's flows in containers (no network, the pack's code
/// never on the host), passes, and leaves no container behind.
#[test]
fn pack_test_strict_runs_a_new_pack_in_a_container_and_removes_it() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["strict_demo"]);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("user_data")).unwrap();
    let rumi = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rumi"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUMI_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.args(args).current_dir(home.path()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = rumi(&["pack", "new", "strict_demo"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = rumi(&["pack", "test", "strict_demo", "--strict", "--json"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("\"passed\": 1") && !text.contains("without isolation"),
        "{text}"
    );
    assert!(
        containers_of("strict_demo").is_empty(),
        "the test kernel removed its container"
    );
}

/// Capabilities from inside a container: its socket at `/run/rumi/capability.sock` answers the
/// pack's granted calls and refuses the rest; a spoofed principal changes nothing.
const CAPS: &str = r#"
import os, rumi_capability

def run(arg, context=None):
    return {
        "sock": os.environ.get("RUMI_CAPABILITY_SOCKET"),
        "answers": [rumi_capability.call(p, args=a) for p, a in arg["calls"]],
    }
"#;

#[tokio::test]
async fn a_container_calls_stores_through_its_capability_socket() {
    if !docker_ready() {
        return;
    }
    let _containers = Containers::of(&["cap_box"]);
    let home = fresh_home();
    block_flows(home.path(), "cap_box", &[("caps.py", CAPS)]);
    let k = start_strict(home.path(), &[]);
    k.approve("cap_box").await;
    let (s, v) = k
        .post(
            "/api/stores/create",
            json!({"store_id": "box", "root_path": "user_data/stores/box"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let set = json!(["store.set", {"store_id": "box", "key": "a/b", "value": {"n": 1}}]);
    let get = json!(["store.get", {"store_id": "box", "key": "a/b"}]);
    let out = call_ok(&k, "cap_box", "caps", json!({"calls": [set, get]})).await;
    assert_eq!(out["sock"], "/run/rumi/capability.sock", "{out}");
    assert_eq!(out["answers"][0]["error_type"], "grant_denied", "{out}");
    for p in ["store.set", "store.get"] {
        let (s, v) = k
            .post(
                "/api/capability/grants/grant",
                json!({"principal_id": "cap_box", "permission_id": p, "config": {"allowed_store_ids": ["box"]}}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let out = call_ok(&k, "cap_box", "caps", json!({"calls": [set, get]})).await;
    assert_eq!(out["answers"][0]["success"], true, "{out}");
    assert_eq!(
        out["answers"][1]["output"]["value"],
        json!({"n": 1}),
        "{out}"
    );
}
