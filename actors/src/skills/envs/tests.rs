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
                let r = once
                    .run(
                        &key,
                        || ready[k].load(Ordering::SeqCst).then_some(k),
                        || async {
                            built[k].fetch_add(1, Ordering::SeqCst);
                            // The build takes a while; callers pile up behind it.
                            tokio::time::sleep(pause).await;
                            ready[k].store(true, Ordering::SeqCst);
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
    let tries = AtomicU64::new(0);
    let r: Result<(), String> = once
        .run(
            "k",
            || None,
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err("no".to_string())
            },
        )
        .await;
    assert!(r.is_err());
    let r: Result<(), String> = once
        .run(
            "k",
            || None,
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
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
