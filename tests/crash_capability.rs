//! Crashes of the capability state (contract §15 invariant 9): the real kernel is killed with
//! SIGKILL while secrets are set and deleted, capability grants granted and revoked, and stores
//! created over HTTP; after a restart every acknowledged write is there, nothing revoked or
//! deleted with an answer came back, and no file is corrupt (the kernel starts, every list
//! answers, no grant file reads as tampered, every secret decrypts). Store *values* are written
//! through the `store.set` built-in behind the broker; their durability is tested at the library
//! level (`capability::stores` tests).

mod common;

use common::*;
use rumi_actors::capability::secrets::SecretStore;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// splitmix64: the kill moments replay with `RUMI_CRASH_SEED=<seed>`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One change of a secret: `Some(value)` set, `None` delete.
type SecretOp = Option<String>;

/// What the clients sent, and which of it was answered.
#[derive(Default)]
struct Acked {
    /// Per key: every op sent, in order, and the index of the last one answered.
    secrets: HashMap<String, (Vec<SecretOp>, Option<usize>)>,
    grants_acked: HashSet<(String, String)>,
    revokes_sent: HashSet<(String, String)>,
    revokes_acked: HashSet<(String, String)>,
    stores_acked: HashSet<String>,
}

async fn post(c: &reqwest::Client, base: &str, path: &str, body: Value) -> Option<(u16, Value)> {
    let r = c
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let v = r.json::<Value>().await.ok()?;
    Some((status, v))
}

fn spawn_load(
    base: String,
    cycle: usize,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let c = reqwest::Client::new();
    let mut tasks = Vec::new();
    // Secrets: five keys set over and over, one change in seven a delete.
    {
        let (c, base, acked, stop) = (c.clone(), base.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("KEY_{}", i % 5);
                let op: SecretOp = (i % 7 != 6).then(|| format!("c{cycle}-v{i}"));
                i += 1;
                let index = {
                    let mut a = acked.lock().unwrap();
                    let e = a.secrets.entry(key.clone()).or_default();
                    e.0.push(op.clone());
                    e.0.len() - 1
                };
                let answer = match &op {
                    Some(v) => {
                        post(
                            &c,
                            &base,
                            "/api/secrets/set",
                            json!({"key": key, "value": v}),
                        )
                        .await
                    }
                    None => post(&c, &base, "/api/secrets/delete", json!({"key": key})).await,
                };
                match answer {
                    // A delete of a deleted key (404) leaves it deleted: acknowledged too.
                    Some((200, _)) | Some((404, _)) => {
                        acked.lock().unwrap().secrets.get_mut(&key).unwrap().1 = Some(index)
                    }
                    Some((s, v)) => panic!("a secret change was refused ({s}): {v}"),
                    None => return,
                }
            }
        }));
    }
    // Grants: new permissions to three principals; every fourth step revokes an earlier one.
    {
        let (c, base, acked, stop) = (c.clone(), base.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let principal = format!("p{}", i % 3);
                let permission = format!("perm.c{cycle}.n{i}");
                i += 1;
                if i % 4 == 0 {
                    let earlier = {
                        let a = acked.lock().unwrap();
                        a.grants_acked
                            .iter()
                            .find(|g| !a.revokes_sent.contains(*g))
                            .cloned()
                    };
                    if let Some(g) = earlier {
                        acked.lock().unwrap().revokes_sent.insert(g.clone());
                        let body = json!({"principal_id": g.0, "permission_id": g.1});
                        match post(&c, &base, "/api/capability/grants/revoke", body).await {
                            Some((200, _)) => {
                                acked.lock().unwrap().revokes_acked.insert(g);
                            }
                            Some((s, v)) => panic!("a revoke was refused ({s}): {v}"),
                            None => return,
                        }
                        continue;
                    }
                }
                let body = json!({"principal_id": principal, "permission_id": permission,
                                  "config": {"allowed_store_ids": ["s"], "n": i}});
                match post(&c, &base, "/api/capability/grants/grant", body).await {
                    Some((200, _)) => {
                        acked
                            .lock()
                            .unwrap()
                            .grants_acked
                            .insert((principal, permission));
                    }
                    Some((s, v)) => panic!("a grant was refused ({s}): {v}"),
                    None => return,
                }
            }
        }));
    }
    // Stores: a new store each step.
    {
        let (c, base, acked, stop) = (c.clone(), base.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("c{cycle}-s{i}");
                i += 1;
                let body = json!({"store_id": id, "root_path": format!("user_data/stores/{id}")});
                match post(&c, &base, "/api/stores/create", body).await {
                    Some((200, _)) => {
                        acked.lock().unwrap().stores_acked.insert(id);
                    }
                    Some((s, v)) => panic!("a store creation was refused ({s}): {v}"),
                    None => return,
                }
            }
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_capability_writes_survive_kill_9() {
    let seed = std::env::var("RUMI_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("crash test seed: {seed} (replay with RUMI_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let home = fresh_home();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let started = Instant::now();
    for cycle in 0..6 {
        let mut k = Kernel::start(home.path(), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = spawn_load(k.base.clone(), cycle, acked.clone(), stop.clone());
        // Wait until every kind of write has been answered once, so each is in flight at the kill.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let a = acked.lock().unwrap();
                if a.secrets.values().any(|s| s.1.is_some())
                    && !a.grants_acked.is_empty()
                    && !a.stores_acked.is_empty()
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "no writes answered within 20 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.between(10, 300))).await;
        k.child.kill().expect("SIGKILL the kernel");
        let _ = k.child.wait();
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(25), t)
                .await
                .expect("a client task ends once the kernel is gone")
                .expect("client task");
        }
        drop(k);

        // Every acknowledged secret change, read back by the library with the kernel down: the
        // value of the last answered op, or of one sent after it whose answer the kill cut off.
        let secrets_dir = home.path().join("user_data/secrets");
        let store = SecretStore::open(secrets_dir.clone(), home.path().join("user_data/keys"))
            .expect("the secrets open after the crash");
        {
            let a = acked.lock().unwrap();
            for (key, (ops, last)) in &a.secrets {
                let Some(last) = *last else { continue };
                let now = store.get(key).map(|v| v.expose().to_string());
                let ok = ops[last..].contains(&now);
                assert!(
                    ok,
                    "cycle {cycle}: {key} reads {now:?}; the last acknowledged change was {:?}",
                    ops[last]
                );
            }
        }
        let files = std::fs::read_dir(&secrets_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".secret"))
            .count();
        assert_eq!(
            store.list().len(),
            files,
            "cycle {cycle}: a secret file is damaged"
        );
        drop(store);

        let k = Kernel::start(home.path(), &[]);
        for path in [
            "/api/capability/grants",
            "/api/secrets",
            "/api/stores",
            "/api/audit?category=permission&limit=1000",
        ] {
            let (s, v) = k.get(path).await;
            assert_eq!(s, 200, "cycle {cycle}: {path} after the crash: {v}");
        }
        let (_, sec) = k.get("/api/audit?category=security&limit=1000").await;
        assert!(
            !sec.to_string().contains("capability_grant_tampered"),
            "cycle {cycle}: a grant file reads as tampered after the crash: {sec}"
        );
        let (_, g) = k.get("/api/capability/grants").await;
        let held: HashSet<(String, String)> = g["data"]["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["principal_id"].as_str().unwrap().to_string(),
                    g["permission_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let (_, s) = k.get("/api/stores").await;
        let stores: HashMap<String, bool> = s["data"]["stores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["store_id"].as_str().unwrap().to_string(),
                    s["available"] == json!(true),
                )
            })
            .collect();
        let (_, listed) = k.get("/api/secrets").await;
        {
            let a = acked.lock().unwrap();
            for grant in &a.grants_acked {
                if !a.revokes_sent.contains(grant) {
                    assert!(
                        held.contains(grant),
                        "cycle {cycle}: acknowledged grant {grant:?} lost"
                    );
                }
            }
            for grant in &a.revokes_acked {
                assert!(
                    !held.contains(grant),
                    "cycle {cycle}: revoked grant {grant:?} is back"
                );
            }
            for id in &a.stores_acked {
                assert_eq!(
                    stores.get(id),
                    Some(&true),
                    "cycle {cycle}: store {id} lost"
                );
            }
            for (key, (ops, last)) in &a.secrets {
                let Some(last) = *last else { continue };
                let item = listed["data"]["secrets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["key"] == key.as_str());
                // A key only ever deleted (404) has no file.
                let deleted = item.is_none_or(|i| i["deleted"] == json!(true));
                assert!(
                    ops[last..].iter().any(|op| op.is_none() == deleted),
                    "cycle {cycle}: {key} listed {item:?}"
                );
            }
            eprintln!(
                "cycle {cycle}: {} grants, {} revokes, {} stores, {} secret keys acknowledged",
                a.grants_acked.len(),
                a.revokes_acked.len(),
                a.stores_acked.len(),
                a.secrets.len()
            );
        }
        k.stop();
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the crash test must stay well under a minute"
    );
}
