use super::*;
use std::sync::atomic::AtomicBool;

/// A seeded xorshift: the stress runs the same interleaving choices each time.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_build_each_key_once() {
    for seed in [1u64, 0x9e37_79b9_7f4a_7c15, 42] {
        let once = Arc::new(OnceBuilds::default());
        const KEYS: usize = 6;
        let ready: Arc<Vec<AtomicBool>> =
            Arc::new((0..KEYS).map(|_| AtomicBool::new(false)).collect());
        let built: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let mut rng = Rng(seed);
        let mut tasks = Vec::new();
        for _ in 0..120 {
            let k = (rng.next() % KEYS as u64) as usize;
            let pause = Duration::from_micros(rng.next() % 3000);
            let start = Duration::from_micros(rng.next() % 2000);
            let (once, ready, built) = (Arc::clone(&once), Arc::clone(&ready), Arc::clone(&built));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(start).await;
                let key = format!("k{k}");
                let ready2 = Arc::clone(&ready);
                let r = once
                    .run(
                        &key,
                        || ready[k].load(Ordering::SeqCst).then_some(k),
                        || async move {
                            built[k].fetch_add(1, Ordering::SeqCst);
                            // The build takes a while; callers pile up behind it.
                            tokio::time::sleep(pause).await;
                            ready2[k].store(true, Ordering::SeqCst);
                            Ok::<_, String>(k)
                        },
                    )
                    .await;
                assert_eq!(r, Ok(k));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for (k, n) in built.iter().enumerate() {
            let n = n.load(Ordering::SeqCst);
            assert!(n <= 1, "seed {seed}: key {k} built {n} times");
        }
        assert!(built.iter().any(|n| n.load(Ordering::SeqCst) == 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_is_tried_again_by_the_next_caller() {
    let once = OnceBuilds::default();
    let tries = Arc::new(AtomicU64::new(0));
    let t = Arc::clone(&tries);
    let r: Result<(), String> = once
        .run(
            "k",
            || None,
            || async move {
                t.fetch_add(1, Ordering::SeqCst);
                Err("no".to_string())
            },
        )
        .await;
    assert!(r.is_err());
    let t = Arc::clone(&tries);
    let r: Result<(), String> = once
        .run(
            "k",
            || None,
            || async move {
                t.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        )
        .await;
    assert!(r.is_ok());
    assert_eq!(tries.load(Ordering::SeqCst), 2);
}

#[test]
fn leftovers_of_a_crash_are_removed() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("skill_envs");
    for p in [
        "python/.tmp-aaa-1",
        "python/.tmp-bbb-1",
        "python/ccc",
        ".work/aaa-1",
    ] {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    remove_leftovers(&root, Some("aaa"));
    assert!(!root.join("python/.tmp-aaa-1").exists());
    assert!(!root.join(".work/aaa-1").exists());
    assert!(
        root.join("python/.tmp-bbb-1").exists(),
        "another hash's build is left alone"
    );
    remove_leftovers(&root, None);
    assert!(!root.join("python/.tmp-bbb-1").exists());
    assert!(
        root.join("python/ccc").exists(),
        "a ready environment stays"
    );
}

#[test]
fn package_json_is_read_from_a_tarball() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src/package");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("lib/index.js"), "x".repeat(3000)).unwrap();
    std::fs::write(
        src.join("package.json"),
        r#"{"name":"a","version":"1.2.3","dependencies":{"b":"^1.0.0"}}"#,
    )
    .unwrap();
    let tgz = d.path().join("a-1.2.3.tgz");
    let ok = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(d.path().join("src"))
        .args(["package/lib", "package/package.json"])
        .status()
        .unwrap();
    assert!(ok.success());
    let meta = npm::read_package_json(&tgz).unwrap();
    assert_eq!(meta["version"], "1.2.3");
    assert_eq!(meta["dependencies"]["b"], "^1.0.0");
    std::fs::write(d.path().join("bad.tgz"), b"not gzip").unwrap();
    assert!(npm::read_package_json(&d.path().join("bad.tgz")).is_err());
}

/// Sets its flag when dropped (the build future it lives in was dropped).
struct Dropped(Arc<AtomicBool>);
impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_goes_on_while_someone_waits_and_stops_with_its_last_waiter() {
    let once: Arc<OnceBuilds<(), String>> = Arc::new(OnceBuilds::default());
    let (started, stopped) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(AtomicBool::new(false)),
    );
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let build = {
        let (started, stopped) = (Arc::clone(&started), Arc::clone(&stopped));
        move || async move {
            let _guard = Dropped(stopped);
            started.notify_one();
            let _ = release_rx.await;
            Ok(())
        }
    };
    // Two waiters; the first goes (its deadline), the build goes on for the second.
    let first = {
        let once = Arc::clone(&once);
        tokio::spawn(async move { once.run("k", || None, build).await })
    };
    started.notified().await;
    let second = {
        let once = Arc::clone(&once);
        tokio::spawn(async move {
            once.run("k", || None, || async { Err("a second build".to_string()) })
                .await
        })
    };
    // Wait until the second waiter has joined the build.
    let deadline = Instant::now() + Duration::from_secs(10);
    while once.waiters("k") < 2 {
        assert!(Instant::now() < deadline, "the second waiter never joined");
        tokio::task::yield_now().await;
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert!(
        !stopped.load(Ordering::SeqCst),
        "a waiter is left: the build goes on"
    );
    release_tx.send(()).unwrap();
    assert_eq!(
        second.await.unwrap(),
        Ok(()),
        "the second waiter got the first build"
    );

    // One waiter, dropped: the build is dropped with it.
    let stopped = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stopped);
    let started = Arc::new(tokio::sync::Notify::new());
    let st = Arc::clone(&started);
    let only = {
        let once = Arc::clone(&once);
        tokio::spawn(async move {
            once.run(
                "k2",
                || None,
                move || async move {
                    let _guard = Dropped(s2);
                    st.notify_one();
                    futures_util::future::pending::<Result<(), String>>().await
                },
            )
            .await
        })
    };
    started.notified().await;
    only.abort();
    let _ = only.await;
    assert!(
        stopped.load(Ordering::SeqCst),
        "nobody waits: the build was dropped"
    );
    assert_eq!(once.in_flight(), 0);
}

fn env_dirs(parent: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_store_removes_its_least_recently_used_environments_that_nobody_holds() {
    let d = tempfile::tempdir().unwrap();
    let parent = d.path().join("python");
    std::fs::create_dir(&parent).unwrap();
    let uses = Arc::new(store::Uses::default());
    // MAX_ENVS environments; env-000 is the oldest, env-001 next, …; env-000 is held.
    for i in 0..MAX_ENVS {
        let dir = parent.join(format!("env-{i:03}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("m.py"), "X = 1\n").unwrap();
        let t = filetime(1_000_000 + i as i64);
        set_mtime(&dir, t);
    }
    let held = uses.hold(&store::use_key(EnvRuntime::Python, "env-000"));
    let removed = store::make_room(&parent, EnvRuntime::Python, &uses, 2).unwrap();
    assert_eq!(removed, 2);
    let left = env_dirs(&parent);
    assert_eq!(left.len(), MAX_ENVS - 2);
    assert!(left.contains(&"env-000".to_string()), "held: kept");
    assert!(!left.contains(&"env-001".to_string()) && !left.contains(&"env-002".to_string()));
    assert!(left.contains(&"env-003".to_string()));
    // A used environment becomes the most recent.
    store::stamp(&parent.join("env-003"));
    std::fs::create_dir(parent.join("env-new1")).unwrap();
    std::fs::create_dir(parent.join("env-new2")).unwrap();
    store::make_room(&parent, EnvRuntime::Python, &uses, 2).unwrap();
    let left = env_dirs(&parent);
    assert!(left.contains(&"env-003".to_string()) && !left.contains(&"env-004".to_string()));
    assert!(std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with(".gone-")));
    drop(held);
}

#[test]
fn a_store_full_of_held_environments_refuses_with_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let parent = d.path().join("node");
    std::fs::create_dir(&parent).unwrap();
    let uses = Arc::new(store::Uses::default());
    let mut holds = Vec::new();
    for i in 0..MAX_ENVS {
        let name = format!("h{i:03}");
        std::fs::create_dir(parent.join(&name)).unwrap();
        holds.push(uses.hold(&store::use_key(EnvRuntime::Node, &name)));
    }
    let why = store::make_room(&parent, EnvRuntime::Node, &uses, 2).unwrap_err();
    assert!(why.contains("in use") && why.contains("try again"), "{why}");
    assert_eq!(env_dirs(&parent).len(), MAX_ENVS);
    holds.truncate(10);
    assert_eq!(
        store::make_room(&parent, EnvRuntime::Node, &uses, 2).unwrap(),
        2
    );
    assert_eq!(uses.holders(&store::use_key(EnvRuntime::Node, "h000")), 1);
}

/// Removal against concurrent use of the same hashes: a holder that found its environment
/// ready never sees it go while it holds it.
#[test]
fn removal_never_takes_an_environment_from_under_its_holder() {
    let d = tempfile::tempdir().unwrap();
    let parent = Arc::new(d.path().join("python"));
    std::fs::create_dir(&*parent).unwrap();
    let uses = Arc::new(store::Uses::default());
    let names: Vec<String> = (0..MAX_ENVS + 8).map(|i| format!("e{i:03}")).collect();
    for n in &names {
        std::fs::create_dir(parent.join(n)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let mut users = Vec::new();
    for t in 0..3u64 {
        let (parent, uses, names, stop, checks) = (
            Arc::clone(&parent),
            Arc::clone(&uses),
            names.clone(),
            Arc::clone(&stop),
            Arc::clone(&checks),
        );
        users.push(std::thread::spawn(move || {
            let mut rng = Rng(0x1234_5678 + t);
            while !stop.load(Ordering::SeqCst) {
                let n = &names[(rng.next() % names.len() as u64) as usize];
                // What `ensure` does: hold first, then look; rebuild when missing.
                let hold = uses.hold(&store::use_key(EnvRuntime::Python, n));
                let dir = parent.join(n);
                if !dir.is_dir() {
                    let _ = std::fs::create_dir(&dir);
                }
                for _ in 0..20 {
                    assert!(dir.is_dir(), "{n} was removed while held");
                    std::thread::yield_now();
                }
                checks.fetch_add(1, Ordering::SeqCst);
                drop(hold);
            }
        }));
    }
    // Removals go on until the holders have looked many times (on a busy machine they may
    // start late), at least 200 rounds, while no holder has failed, within a deadline.
    let mut removed = 0;
    let mut rounds = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (checks.load(Ordering::SeqCst) < 600 || rounds < 200)
        && Instant::now() < deadline
        && !users.iter().any(|u| u.is_finished())
    {
        // New environments keep coming (a build each), so the store is always full.
        let extra = parent.join(format!("x{rounds:05}"));
        let _ = std::fs::create_dir(extra);
        removed += store::make_room(&parent, EnvRuntime::Python, &uses, 2).unwrap();
        rounds += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for u in users {
        u.join().unwrap();
    }
    let checked = checks.load(Ordering::SeqCst);
    assert!(
        removed > 0 && checked >= 600,
        "removed {removed}, checked {checked} in {rounds} rounds"
    );
    // The holders recreate what they found missing (a build, in the kernel, makes room first).
    store::make_room(&parent, EnvRuntime::Python, &uses, 2).unwrap();
    assert_eq!(env_dirs(&parent).len(), MAX_ENVS - 2);
}

#[test]
fn a_run_holds_at_most_its_cap_of_environments_until_it_ends() {
    let uses = Arc::new(store::Uses::default());
    let runs = store::RunHolds::default();
    let key = |i: usize| store::use_key(EnvRuntime::Python, &format!("h{i}"));
    for i in 0..store::MAX_ENVS_PER_RUN {
        runs.admit("r1", &[key(i)]).unwrap();
        runs.keep("r1", vec![uses.hold(&key(i))]);
    }
    // Again one it holds: fine; a new one: refused; another run: fine.
    runs.admit("r1", &[key(0)]).unwrap();
    let why = runs.admit("r1", &[key(999)]).unwrap_err();
    assert!(why.contains("most per run"), "{why}");
    runs.admit("r2", &[key(999)]).unwrap();
    runs.keep("r1", vec![uses.hold(&key(0))]);
    assert_eq!(uses.holders(&key(0)), 1, "one hold per environment per run");
    runs.release("r1");
    assert_eq!(uses.holders(&key(0)), 0);
}

fn filetime(secs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    }
}

fn set_mtime(p: &Path, t: libc::timespec) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let times = [t, t];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
}
