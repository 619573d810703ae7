//! The workflow and the lookup against real files: scan, approve (pack state, TOCTOU, slugs),
//! reject/block/unblock, trust re-verified on every lookup, restarts, supervision.

use super::*;
use crate::capability::handler::{Execute, InjectPanic};
use crate::capability::workflow::WorkflowError;
use rumi_domain::capability::candidate::CandidateStatus;
use serde_json::json;
use std::fs;
use std::time::{Duration, Instant};

const MANIFEST: &str =
    r#"{"handler_id":"echo","permission_id":"test.echo","entrypoint":"handler.py:execute"}"#;
const SOURCE: &str = "def execute(context, args):\n    return {'echo': args}\n";

struct Home {
    dir: tempfile::TempDir,
    layout: Layout,
    view: Arc<KernelView>,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        crate::blockhost::install(&layout.runtime_python()).unwrap();
        Home {
            dir,
            layout,
            view: Arc::new(KernelView::default()),
        }
    }
    fn pack(&self, pack: &str, slug: &str, manifest: &str, source: &str) -> PathBuf {
        let d = self
            .dir
            .path()
            .join(format!("ecosystem/{pack}/share/capability_handlers/{slug}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("handler.json"), manifest).unwrap();
        fs::write(d.join("handler.py"), source).unwrap();
        d
    }
    fn state(&self, pack: &str, state: PackState) {
        let mut states = HashMap::new();
        states.insert(pack.to_string(), state);
        self.view.publish_states(states);
    }
    fn table(&self) -> HandlerTable {
        let t = HandlerTable::open(&self.layout, Arc::clone(&self.view)).unwrap();
        if let Some(py) = crate::capability::handler::tests::python() {
            t.set_python(py);
        }
        t
    }
}

fn key_of(t: &HandlerTable) -> String {
    t.list(Some(CandidateStatus::Pending)).items[0]
        .candidate_key
        .clone()
}

fn untrusted(l: Lookup) -> String {
    match l {
        Lookup::Untrusted { reason, .. } => reason,
        Lookup::Ready { .. } => panic!("expected untrusted, got ready"),
        Lookup::NotFound => panic!("expected untrusted, got not found"),
    }
}

#[actix_rt::test]
async fn scan_approve_install_and_verify_on_every_lookup() {
    let home = Home::new();
    let src = home.pack("p", "echo", MANIFEST, SOURCE);
    let t = home.table();
    assert!(matches!(t.lookup("test.echo"), Lookup::NotFound));
    let (report, _) = t.scan().unwrap();
    assert_eq!(report.new, 1);
    let key = key_of(&t);
    assert!(key.starts_with("p:echo:echo:"));

    // The pack is not approved: 409, nothing installed.
    let e = t.approve(&key, "").err().unwrap();
    assert!(
        matches!(e, WorkflowError::Conflict(ref m) if m.contains("not installed") || m.contains("approve the pack")),
        "{e}"
    );
    home.state("p", PackState::Approved);

    // TOCTOU: the file changes after the scan.
    fs::write(
        src.join("handler.py"),
        "import os\ndef execute(c, a): return os.environ\n",
    )
    .unwrap();
    let e = t.approve(&key, "").err().unwrap();
    assert!(
        matches!(e, WorkflowError::Conflict(ref m) if m.contains("changed since the scan")),
        "{e}"
    );
    assert!(
        !home.layout.capabilities().join("handlers/echo").exists(),
        "nothing installed"
    );
    fs::write(src.join("handler.py"), SOURCE).unwrap();

    let (decision, permission) = t.approve(&key, "looks fine").unwrap();
    assert_eq!(decision.item.status, CandidateStatus::Installed);
    assert_eq!(permission, "test.echo");
    let installed = home.layout.capabilities().join("handlers/echo/handler.py");
    assert_eq!(fs::read_to_string(&installed).unwrap(), SOURCE);
    assert!(t.approve(&key, "").is_err(), "approved once");

    let actor = match t.lookup("test.echo") {
        Lookup::Ready { actor, .. } => actor,
        _ => panic!("trusted"),
    };
    if crate::capability::handler::tests::python().is_some() {
        let out = actor
            .send(Execute {
                context: json!({}),
                args: json!({"a": 1}).as_object().cloned().unwrap(),
                timeout: Duration::from_secs(30),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, json!({"echo": {"a": 1}}));
    }

    // The installed copy edited: untrusted, at once, and its actor stopped.
    fs::write(&installed, "def execute(c, a): return 'evil'\n").unwrap();
    assert!(untrusted(t.lookup("test.echo")).contains("no longer matches"));
    fs::write(&installed, SOURCE).unwrap();
    assert!(matches!(t.lookup("test.echo"), Lookup::Ready { .. }));
    // Replaced by a symlink to an identical file elsewhere: refused all the same.
    let elsewhere = home.dir.path().join("copy.py");
    fs::write(&elsewhere, SOURCE).unwrap();
    fs::remove_file(&installed).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &installed).unwrap();
    assert!(untrusted(t.lookup("test.echo")).contains("not a regular file"));
    fs::remove_file(&installed).unwrap();
    fs::write(&installed, SOURCE).unwrap();

    // The pack modified (or rejected): never trusted meanwhile.
    home.state("p", PackState::Modified);
    assert!(untrusted(t.lookup("test.echo")).contains("modified"));
    home.state("p", PackState::Approved);
    assert!(matches!(t.lookup("test.echo"), Lookup::Ready { .. }));

    // A restart finds the handler and the records.
    drop(t);
    let t = home.table();
    assert!(matches!(t.lookup("test.echo"), Lookup::Ready { .. }));
    assert_eq!(t.list(Some(CandidateStatus::Installed)).count, 1);

    // The trust record edited by hand: untrusted (and at the next boot too).
    let record = home.layout.capabilities().join("trust/echo.json");
    let text = fs::read_to_string(&record).unwrap();
    fs::write(&record, text.replace("test.echo", "test.other")).unwrap();
    assert!(untrusted(t.lookup("test.echo")).contains("signature"));
    let t = home.table();
    assert!(untrusted(t.lookup("test.echo")).contains("signature"));
    // Its slug is not silently reused: the operator is told to clear it first.
    fs::write(src.join("handler.py"), "def execute(c, a):\n    return 3\n").unwrap();
    t.scan().unwrap();
    let e = t.approve(&key_of(&t), "").err().unwrap();
    assert!(e.to_string().contains("signature check"), "{e}");
}

#[actix_rt::test]
async fn reject_three_times_blocks_and_unblock_resets() {
    let home = Home::new();
    home.pack("p", "echo", MANIFEST, SOURCE);
    home.state("p", PackState::Approved);
    let t = home.table();
    t.scan().unwrap();
    let key = key_of(&t);
    for n in 1..=2 {
        let d = t.reject(&key, "not now").unwrap();
        assert_eq!(
            (d.item.status, d.item.reject_count),
            (CandidateStatus::Rejected, n)
        );
        assert!(d.item.cooldown_until.is_some());
        // Within the cooldown a scan leaves it rejected.
        t.scan().unwrap();
        assert_eq!(t.list(Some(CandidateStatus::Rejected)).count, 1);
    }
    let d = t.reject(&key, "never").unwrap();
    assert_eq!(d.item.status, CandidateStatus::Blocked);
    assert_eq!(
        t.list(Some(CandidateStatus::Blocked)).items[0].candidate_key,
        key
    );
    assert!(matches!(
        t.approve(&key, ""),
        Err(WorkflowError::Conflict(_))
    ));
    assert!(matches!(
        t.reject(&key, ""),
        Err(WorkflowError::Conflict(_))
    ));
    let d = t.unblock(&key, "changed my mind").unwrap();
    assert_eq!(
        (d.item.status, d.item.reject_count),
        (CandidateStatus::Pending, 0)
    );
    assert!(matches!(
        t.unblock(&key, ""),
        Err(WorkflowError::Conflict(_))
    ));
    // Survives a restart.
    drop(t);
    assert_eq!(home.table().list(Some(CandidateStatus::Pending)).count, 1);
    // Bad and unknown keys.
    assert!(matches!(
        home.table().reject("x", ""),
        Err(WorkflowError::BadKey(_))
    ));
    let unknown = format!("p:echo:echo:{}", "0".repeat(64));
    assert!(matches!(
        home.table().reject(&unknown, ""),
        Err(WorkflowError::NotFound(_))
    ));
}

#[actix_rt::test]
async fn a_different_handler_never_overwrites_an_installed_slug() {
    let home = Home::new();
    home.pack("a", "echo", MANIFEST, SOURCE);
    let other =
        r#"{"handler_id":"echo2","permission_id":"test.two","entrypoint":"handler.py:execute"}"#;
    home.pack("b", "echo", other, SOURCE);
    home.pack(
        "c",
        "dup",
        MANIFEST.replace("\"echo\"", "\"dup\"").as_str(),
        SOURCE,
    );
    let mut states = HashMap::new();
    for p in ["a", "b", "c"] {
        states.insert(p.to_string(), PackState::Approved);
    }
    home.view.publish_states(states);
    let t = home.table();
    t.scan().unwrap();
    let keys: Vec<String> = t
        .list(None)
        .items
        .into_iter()
        .map(|i| i.candidate_key)
        .collect();
    let key = |p: &str| keys.iter().find(|k| k.starts_with(p)).unwrap().clone();
    t.approve(&key("a:"), "").unwrap();
    let e = t.approve(&key("b:"), "").err().unwrap();
    assert!(e.to_string().contains("different handler"), "{e}");
    let e = t.approve(&key("c:"), "").err().unwrap();
    assert!(e.to_string().contains("already provided"), "{e}");

    // A new version of the same handler replaces the old one.
    home.pack("a", "echo", MANIFEST, "def execute(c, a):\n    return 2\n");
    t.scan().unwrap();
    let new_key = t
        .list(Some(CandidateStatus::Pending))
        .items
        .into_iter()
        .find(|i| i.pack_id == "a")
        .unwrap()
        .candidate_key;
    t.approve(&new_key, "v2").unwrap();
    let installed = t.list(Some(CandidateStatus::Installed));
    assert_eq!(installed.count, 1);
    assert_eq!(installed.items[0].candidate_key, new_key);
}

#[actix_rt::test]
async fn a_panicked_actor_is_replaced_at_the_next_lookup_and_lookups_are_cheap() {
    let home = Home::new();
    home.pack("p", "echo", MANIFEST, SOURCE);
    home.state("p", PackState::Approved);
    let t = home.table();
    t.scan().unwrap();
    t.approve(&key_of(&t), "").unwrap();
    let Lookup::Ready { actor: first, .. } = t.lookup("test.echo") else {
        panic!("ready")
    };
    let _ = first.send(InjectPanic).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!first.connected(), "the panicked actor is gone");
    let Lookup::Ready { actor: second, .. } = t.lookup("test.echo") else {
        panic!("ready")
    };
    assert!(second.connected(), "a new actor");

    // The warm path, once the files are older than the 2 s a stat needs to be trusted: stat
    // checks and lock reads, no hashing.
    let t = t.with_clock(|| std::time::SystemTime::now() + Duration::from_secs(10));
    let n = 2000;
    let started = Instant::now();
    for _ in 0..n {
        assert!(matches!(t.lookup("test.echo"), Lookup::Ready { .. }));
    }
    let per = started.elapsed() / n;
    eprintln!("lookup: {per:?} per call");
    assert!(per < Duration::from_micros(200), "{per:?}");
}
