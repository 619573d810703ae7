//! pip installs (contract §9 "pip"), end to end with real pip and real Python: an offline install
//! from a local wheel directory (`RUMI_PIP_FIND_LINKS`) followed by a block importing the package,
//! in permissive mode and in strict mode (a real network-less builder container; skipped locally
//! with the reason when Docker or the image is missing, a failure under CI=true); a failed
//! download keeps the old packages; concurrent approvals install once; what a crash leaves is
//! removed at start; malicious wheels are refused without a byte written outside the target.

mod common;

use common::pip::*;
use common::*;
use serde_json::json;
use std::process::Command;

#[tokio::test]
async fn an_offline_install_is_imported_by_a_block_in_permissive_mode() {
    if !python_available() {
        return;
    }
    let wheels = wheel_dir();
    let home = fresh_home();
    importing_pack(home.path(), "pip_perm", "tinypkg", "tinypkg==1.0\n");
    let k = Kernel::start(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
    );
    k.approve("pip_perm").await;
    install_and_import(&k, "pip_perm").await;
    let (_, run) = k.run("pip_perm_use", json!({})).await;
    assert!(
        run["result"]["got"]["file"]
            .as_str()
            .unwrap()
            .contains("/python/site-packages/tinypkg/"),
        "{run}"
    );

    // With RUMI_PIP_FIND_LINKS an index_url is refused (the kernel installs only from there).
    let key = candidate_of(&scan(&k).await, "pip_perm")["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = k
        .post(
            &format!("/api/pip/requests/{}/approve", enc(&key)),
            json!({"index_url": "https://pypi.org/simple"}),
        )
        .await;
    assert_eq!(s, 400);

    // A pin the directory does not hold: the approval answers `failed` with pip's reason, and the
    // packages installed before stay.
    write(
        home.path(),
        "ecosystem/pip_perm/backend/requirements.lock",
        "tinypkg==2.0\n",
    );
    k.approve("pip_perm").await;
    let key = candidate_of(&scan(&k).await, "pip_perm")["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = k
        .post(
            &format!("/api/pip/requests/{}/approve", enc(&key)),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "failed", "{v}");
    let reason = v["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("pip download failed"), "{reason}");
    assert!(
        !reason.contains(wheels.path().to_str().unwrap()),
        "no host path: {reason}"
    );
    let site = home
        .path()
        .join("user_data/packs/pip_perm/python/site-packages");
    assert!(
        site.join("tinypkg/__init__.py").exists(),
        "the old tree is kept"
    );
    // A failed candidate is offered again by the next scan.
    assert_eq!(
        candidate_of(&scan(&k).await, "pip_perm")["status"],
        "pending"
    );
    // No download or half tree is left behind.
    assert!(
        !home.path().join("user_data/pip/work").exists()
            || std::fs::read_dir(home.path().join("user_data/pip/work"))
                .unwrap()
                .next()
                .is_none()
    );
    k.stop();
}

#[tokio::test]
async fn concurrent_approvals_install_once_and_leftovers_of_a_crash_are_removed_at_start() {
    if !python_available() {
        return;
    }
    let wheels = wheel_dir();
    let home = fresh_home();
    importing_pack(home.path(), "pip_race", "tinypkg", "tinypkg==1.0\n");
    // What a kill -9 in the middle of an install leaves: a download and a half-filled tree.
    write(
        home.path(),
        "user_data/pip/work/pip_race-0123/wheels/x.whl",
        "partial",
    );
    write(
        home.path(),
        "user_data/packs/pip_race/python/site-packages.new-0123/half.py",
        "",
    );
    let k = Kernel::start(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
    );
    assert!(!home
        .path()
        .join("user_data/pip/work/pip_race-0123")
        .exists());
    assert!(!home
        .path()
        .join("user_data/packs/pip_race/python/site-packages.new-0123")
        .exists());
    k.approve("pip_race").await;
    let key = candidate_of(&scan(&k).await, "pip_race")["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("/api/pip/requests/{}/approve", enc(&key));
    let answers = futures_like_join(&k, &url, 6).await;
    let installed = answers
        .iter()
        .filter(|(s, v)| *s == 200 && v["data"]["status"] == "installed")
        .count();
    assert_eq!(installed, 1, "exactly one approval installs: {answers:?}");
    for (s, v) in &answers {
        assert!(*s == 200 || *s == 409, "the others are refused, 409: {v}");
    }
    k.stop();
}

#[tokio::test]
async fn a_malicious_wheel_is_refused_and_writes_nothing_outside() {
    if !python_available() {
        return;
    }
    let wheels = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let abs = outside.path().join("abs_escape.py");
    build_wheel(
        wheels.path(),
        "evilpkg",
        "1.0",
        &[
            ("evilpkg/__init__.py", "VALUE = 1\n"),
            ("../../escape_rel.py", "pwned\n"),
            (abs.to_str().unwrap(), "pwned\n"),
        ],
    );
    build_wheel(
        wheels.path(),
        "sneaky",
        "1.0",
        &[
            ("sneaky/__init__.py", "VALUE = 2\n"),
            ("sneaky.data/purelib/../../../escape_data.py", "pwned\n"),
        ],
    );
    let home = fresh_home();
    importing_pack(home.path(), "pip_evil", "evilpkg", "evilpkg==1.0\n");
    importing_pack(home.path(), "pip_sneak", "sneaky", "sneaky==1.0\n");
    let k = Kernel::start(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
    );
    for pack in ["pip_evil", "pip_sneak"] {
        k.approve(pack).await;
        let key = candidate_of(&scan(&k).await, pack)["candidate_key"]
            .as_str()
            .unwrap()
            .to_string();
        let (s, v) = k
            .post(
                &format!("/api/pip/requests/{}/approve", enc(&key)),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["data"]["status"], "failed", "{v}");
        let reason = v["data"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("escapes the target") || reason.contains("absolute"),
            "{reason}"
        );
        let data = home.path().join(format!("user_data/packs/{pack}"));
        assert!(
            !data.join("python/site-packages").exists(),
            "nothing installed"
        );
        // Nothing beside the target either.
        let left: Vec<_> = walk(&data).into_iter().filter(|p| p.is_file()).collect();
        assert!(left.is_empty(), "files left: {left:?}");
    }
    for name in ["escape_rel.py", "escape_data.py"] {
        assert!(
            walk(home.path()).iter().all(|p| !p.ends_with(name)),
            "{name} was written"
        );
    }
    assert!(!abs.exists());
    k.stop();
}

#[tokio::test]
async fn strict_mode_installs_in_a_network_less_builder_and_a_block_imports_it() {
    if !python_available() || !docker_ready() {
        return;
    }
    let pack = "pip_strict_t1";
    remove_containers(pack);
    let wheels = wheel_dir();
    let home = fresh_home();
    importing_pack(home.path(), pack, "tinypkg", "tinypkg==1.0\n");
    let k = Kernel::start_mode(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
        false,
    );
    k.approve(pack).await;
    install_and_import(&k, pack).await;
    let (_, run) = k.run(&format!("{pack}_use"), json!({})).await;
    assert!(
        run["result"]["got"]["file"]
            .as_str()
            .unwrap()
            .starts_with("/pip-packages/tinypkg/"),
        "the container imports it from /pip-packages: {run}"
    );
    // A malicious wheel through the builder container: refused, nothing installed.
    let evil = "pip_strict_t2";
    remove_containers(evil);
    build_wheel(
        wheels.path(),
        "evilpkg",
        "1.0",
        &[
            ("evilpkg/__init__.py", ""),
            ("../../escape_strict.py", "pwned\n"),
        ],
    );
    importing_pack(home.path(), evil, "evilpkg", "evilpkg==1.0\n");
    let (s, _) = k.post("/api/packs/scan", json!({})).await;
    assert_eq!(s, 200);
    k.approve(evil).await;
    let key = candidate_of(&scan(&k).await, evil)["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = k
        .post(
            &format!("/api/pip/requests/{}/approve", enc(&key)),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "failed", "{v}");
    assert!(
        v["data"]["reason"].as_str().unwrap().contains("escapes"),
        "{v}"
    );
    assert!(walk(home.path())
        .iter()
        .all(|p| !p.ends_with("escape_strict.py")));
    assert!(!home
        .path()
        .join(format!("user_data/packs/{evil}/python/site-packages"))
        .exists());
    // The builder container is gone.
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name=rumi-pip-{pack}")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    k.stop();
    remove_containers(pack);
    remove_containers(evil);
}
