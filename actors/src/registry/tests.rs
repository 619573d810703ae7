//! The Registry's supervision of pack sandboxes and egress listeners, through approval and
//! rejection.

use super::*;
use crate::audit::AwaitWritten;
use crate::audit_query::{query, AuditQuery};
use crate::config::SecurityMode;
use crate::keys::SigningKey;
use crate::test_support::eventually;
use std::time::Duration;

/// A registry over one approvable pack `p` (strict mode: the engine connects only when a
/// container starts, which no call here does, so neither Docker nor Python is needed).
fn registry_with_one_pack(
    host: ContainerHost,
) -> (
    tempfile::TempDir,
    Addr<Registry>,
    Arc<KernelView>,
    Addr<AuditWriter>,
    Arc<SandboxesPlaced>,
) {
    let placed = Arc::new(SandboxesPlaced::default());
    let home = tempfile::tempdir().unwrap();
    let blocks = home.path().join("ecosystem/p/backend/blocks");
    fs::create_dir_all(&blocks).unwrap();
    fs::write(
        home.path().join("ecosystem/p/backend/ecosystem.json"),
        r#"{"pack_id":"p","pack_identity":"t:p"}"#,
    )
    .unwrap();
    fs::write(blocks.join("b.py"), "def run(i): return 1\n").unwrap();
    let layout = Layout::new(home.path());
    // Strict mode: the engine connects only when a container starts, which no call here does,
    // so the test needs neither Docker nor Python.
    let config = RuntimeConfig::new(SecurityMode::Strict, PathBuf::from("/nonexistent/python3"));
    let view = Arc::new(KernelView::default());
    let approvals = ApprovalStore::new(layout.approvals(), SigningKey::from_bytes(&[1; 32]));
    let writer = AuditWriter::new(layout.audit(), Duration::from_millis(10));
    let audit_queue = writer.queue();
    let audit = writer.start();
    let sandbox = SandboxSettings {
        host_script: PathBuf::new(),
        modules_dir: PathBuf::new(),
        arbiters: vec![Arbiter::current()],
        container_host: host,
        placed: Arc::clone(&placed),
        arbiter_cpus: vec![None],
        docker: Some(crate::docker::DockerEngine::new(
            crate::docker::ContainerSettings::new("rumi-test-image:none".into()),
            "test".into(),
        )),
        proxy: Arc::new(
            Proxy::new(
                Arc::new(
                    crate::egress::grants::NetworkPolicy::load(
                        layout.network_grants(),
                        SigningKey::from_bytes(&[1; 32]),
                        Arc::clone(&view),
                    )
                    .0,
                ),
                &crate::egress::EgressSettings::default(),
                1 << 20,
                audit.clone(),
            )
            .unwrap(),
        ),
        capabilities: Arc::new(
            crate::capability::Capabilities::open(
                &layout,
                SigningKey::from_bytes(&[1; 32]),
                Arc::clone(&view),
                Arc::default(),
            )
            .unwrap()
            .0,
        ),
        processes: Arc::default(),
        audit_queue,
    };
    let registry = Registry::new(
        layout,
        config,
        Arc::clone(&view),
        approvals,
        audit.clone(),
        sandbox,
    )
    .start();
    (home, registry, view, audit, placed)
}

#[actix_rt::test]
async fn a_sandbox_that_panics_is_replaced_and_the_restart_audited() {
    let (home, registry, view, audit, placed) = registry_with_one_pack(ContainerHost::Arbiters);
    placed.wait(Duration::from_secs(10)).await;
    assert!(placed.is_set(), "placed at once without a host to wait for");
    approve_p(&registry).await;
    let first = view.container("p").expect("an approved pack has a sandbox");

    let crashed = first.send(crate::pack_container::InjectPanic).await;
    assert!(crashed.is_err(), "the panicking handler never answers");
    assert!(!first.connected(), "the panicked actor is gone");
    lost_p(&registry).await;
    let second = view.container("p").expect("a new sandbox");
    assert!(second.connected());
    let snap = second
        .send(crate::pack_container::GetSnapshot)
        .await
        .unwrap();
    assert_eq!(snap.pack_id, "p");

    audit.send(AwaitWritten).await.unwrap();
    let entries = query(
        &home.path().join("user_data/audit"),
        &AuditQuery {
            category: Some(Category::System),
            date: None,
            limit: 10,
            before: None,
            after: None,
        },
    )
    .unwrap()
    .entries;
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "sandbox_restarted" && e["owner_pack"] == "p"),
        "{entries:?}"
    );
    let diag = registry.send(GetDiagnostics).await.unwrap();
    assert!(diag
        .events
        .iter()
        .any(|e| e["event"] == "sandbox_restarted"));

    // The pack's egress listener is supervised the same way.
    let listener = diag
        .egress
        .first()
        .cloned()
        .expect("an approved pack has a listener");
    let crashed = listener.send(crate::socket_server::InjectPanic).await;
    assert!(crashed.is_err(), "the panicking handler never answers");
    assert!(!listener.connected());
    lost_p(&registry).await;
    let diag = registry.send(GetDiagnostics).await.unwrap();
    assert_eq!(diag.egress.len(), 1);
    let replaced = &diag.egress[0];
    assert!(replaced.connected(), "a new listener");
    let snap = replaced
        .send(crate::egress::listener::GetEgressSnapshot)
        .await
        .unwrap();
    assert_eq!((snap.pack_id.as_str(), snap.accepted), ("p", 0));
    assert!(
        view.container("p") == Some(second.clone()),
        "the healthy sandbox is kept, not replaced"
    );

    // A sandbox stopped on purpose (reject) is not resurrected.
    reject_p(&registry).await;
    lost_p(&registry).await;
    assert!(view.container("p").is_none());
}

async fn reject_p(registry: &Addr<Registry>) {
    registry
        .send(Reject {
            pack_id: "p".into(),
            reason: None,
        })
        .await
        .unwrap()
        .unwrap();
}

async fn lost_p(registry: &Addr<Registry>) {
    registry
        .send(SandboxLost {
            pack_id: "p".into(),
        })
        .await
        .unwrap();
}

/// Whether the sandbox actor answers (it died with its arbiter, or never started, if not).
async fn answers(sandbox: &Addr<crate::pack_container::PackContainer>) -> bool {
    sandbox
        .send(crate::pack_container::GetSnapshot)
        .await
        .is_ok()
}

/// Stops `arbiter` and waits until its thread has ended (every actor on it is gone then).
fn stop_and_join(arbiter: Arbiter) {
    arbiter.stop();
    arbiter.join().unwrap();
}

async fn approve_p(registry: &Addr<Registry>) {
    registry
        .send(Approve {
            pack_id: "p".into(),
        })
        .await
        .unwrap()
        .unwrap();
}

#[actix_rt::test]
async fn sandboxes_wait_for_their_host_start_on_it_and_move_when_it_stops() {
    let (_home, registry, view, _audit, placed) = registry_with_one_pack(ContainerHost::Awaiting {
        wait: Duration::from_secs(3600),
    });
    approve_p(&registry).await;
    assert!(
        view.container("p").is_none(),
        "no sandbox starts before its host is named"
    );
    assert!(!placed.is_set());

    let host = Arbiter::new();
    registry.send(HostContainers(host.handle())).await.unwrap();
    let hosted = view.container("p").expect("started once the host is named");
    assert!(
        placed.is_set(),
        "the HTTP gate opens once the host is named"
    );
    let snap = hosted
        .send(crate::pack_container::GetSnapshot)
        .await
        .unwrap();
    assert_eq!(snap.pack_id, "p");

    // A second naming changes nothing: a sandbox started later (here: after a reject and a
    // new approval) still goes to the first host, which the stop below proves.
    let other = Arbiter::new();
    registry.send(HostContainers(other.handle())).await.unwrap();
    assert!(view.container("p") == Some(hosted.clone()));
    reject_p(&registry).await;
    approve_p(&registry).await;
    let hosted = view.container("p").expect("started again on approval");
    assert!(answers(&hosted).await);
    stop_and_join(other);
    assert!(
        answers(&hosted).await,
        "the second arbiter named did not get the sandbox"
    );

    // The sandbox lived on the named arbiter: stopping that arbiter stops it...
    stop_and_join(host);
    eventually("the hosted sandbox stops with its arbiter", || {
        !hosted.connected()
    })
    .await;
    // ... and its replacement goes to the pack arbiters, not to the stopped one.
    lost_p(&registry).await;
    let replaced = view.container("p").expect("a replacement");
    assert!(replaced != hosted);
    let snap = replaced
        .send(crate::pack_container::GetSnapshot)
        .await
        .unwrap();
    assert_eq!(snap.pack_id, "p");
}

#[actix_rt::test]
async fn sandboxes_whose_host_is_never_named_start_on_the_pack_arbiters() {
    let (_home, registry, view, _audit, placed) = registry_with_one_pack(ContainerHost::Awaiting {
        wait: Duration::from_millis(50),
    });
    approve_p(&registry).await;
    eventually("the sandbox starts after the wait", || {
        view.container("p").is_some()
    })
    .await;
    let started = view.container("p").unwrap();
    assert!(placed.is_set());
    assert!(answers(&started).await);
    // Named too late: it stays where it is.
    let late = Arbiter::new();
    registry.send(HostContainers(late.handle())).await.unwrap();
    stop_and_join(late);
    assert!(view.container("p") == Some(started.clone()));
    assert!(answers(&started).await);
}

#[actix_rt::test]
async fn a_large_pack_keeps_its_sandbox_on_the_pack_arbiters() {
    let (home, registry, view, _audit, _placed) = registry_with_one_pack(ContainerHost::Awaiting {
        wait: Duration::from_secs(3600),
    });
    // Empty directories: no manifest lists them, the verifier stats them all the same.
    let blocks = home.path().join("ecosystem/p/backend/blocks");
    for i in 0..sandbox::HOSTED_MAX_ENTRIES {
        fs::create_dir(blocks.join(format!("d{i}"))).unwrap();
    }
    approve_p(&registry).await;
    let host = Arbiter::new();
    registry.send(HostContainers(host.handle())).await.unwrap();
    let started = view.container("p").expect("started once the host is named");
    stop_and_join(host);
    assert!(
        answers(&started).await,
        "a pack whose every call stats over {} entries is not hosted on the HTTP worker",
        sandbox::HOSTED_MAX_ENTRIES
    );
}

/// `SandboxesPlaced` is an atomic flag and a `Notify`: a waiter that checks the flag just
/// before `set` and parks just after it must still be woken (the HTTP gate would otherwise hold
/// that request for its whole bound). Seeded by the scheduler: 300 rounds of 8 waiters racing a
/// `set` from another thread; a lost wake-up shows as a waiter held for the full 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_racing_the_placement_are_all_released() {
    for round in 0..300 {
        let placed = Arc::new(SandboxesPlaced::default());
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let placed = Arc::clone(&placed);
                tokio::spawn(async move {
                    let t = std::time::Instant::now();
                    placed.wait(Duration::from_secs(30)).await;
                    t.elapsed()
                })
            })
            .collect();
        let setter = Arc::clone(&placed);
        std::thread::spawn(move || setter.set());
        for w in waiters {
            let waited = w.await.unwrap();
            assert!(
                waited < Duration::from_secs(10),
                "round {round}: a waiter missed the wake-up ({waited:?})"
            );
        }
        assert!(placed.is_set());
    }
}
