//! The pack lifecycle around approval (contract §2.2, §2.3, §2.5, §16 "Uninstall", "Load
//! order"): uninstall removes what a pack was given and a re-installed pack starts with nothing;
//! the load order and its problems; the pending summary on disk.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

const ECHO: &str = "def run(input_data, context=None):\n    return {'ok': True}\n";

fn flow(home: &Path, pack: &str, name: &str) {
    write(
        home,
        &format!("ecosystem/{pack}/backend/flows/{name}.flow.yaml"),
        &format!("flow_id: {pack}.{name}\nphases: [m]\nsteps:\n  - {{id: e, phase: m, type: python_file_call, file: blocks/echo.py, input: {{}}, output: got}}\n"),
    );
}

fn summary(home: &Path) -> Value {
    let bytes = std::fs::read(home.join("user_data/pending/summary.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn network_grant(k: &Kernel, pack: &str) -> Option<Value> {
    let (s, v) = k.get("/api/network/list").await;
    assert_eq!(s, 200, "{v}");
    let list = v["data"].as_array().cloned().unwrap();
    list.into_iter().find(|g| g["pack_id"] == pack)
}

async fn capability_grants(k: &Kernel, principal: &str) -> Vec<Value> {
    let (s, v) = k
        .get(&format!("/api/capability/grants?principal_id={principal}"))
        .await;
    assert_eq!(s, 200, "{v}");
    v["data"]["grants"].as_array().cloned().unwrap()
}

#[tokio::test]
async fn uninstall_removes_grants_record_sockets_and_routes_and_a_reinstall_starts_from_nothing() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "gone", &[("echo.py", ECHO)]);
    flow(h, "gone", "hello");
    write(
        h,
        "ecosystem/gone/backend/routes.json",
        &json!({"routes": [{"method": "GET", "path": "/api/gone/hello", "flow_id": "gone.hello"}]})
            .to_string(),
    );
    // A pack of its own below it keeps its grants.
    make_pack(h, "gone__child", &[("echo.py", ECHO)]);
    let k = Kernel::start(h, &[]);
    k.approve("gone").await;
    k.approve("gone__child").await;

    let (s, v) = k
        .post(
            "/api/network/grant",
            json!({"pack_id": "gone", "allowed_domains": ["example.com"], "allowed_ports": [443]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for principal in ["gone", "gone__tool", "gone__child"] {
        let (s, v) = k
            .post(
                "/api/capability/grants/grant",
                json!({"principal_id": principal, "permission_id": "store.get", "config": {}}),
            )
            .await;
        assert_eq!(s, 200, "{principal}: {v}");
    }
    let (s, v) = k.get("/api/gone/hello").await;
    assert_eq!((s, &v["data"]["got"]["ok"]), (200, &json!(true)), "{v}");
    let sockets = h.join("user_data/sockets/gone");
    until(10, "the pack's sockets", || async {
        sockets.exists().then_some(())
    })
    .await;
    assert!(network_grant(&k, "gone").await.is_some());

    // Uninstall: files kept, state installed, everything given is gone.
    let (s, v) = k.req("DELETE", "/api/packs/gone", None).await;
    assert_eq!(s, 200, "{v}");
    let d = &v["data"];
    assert_eq!(d["purged"], false);
    assert_eq!(d["network_grant_removed"], true);
    assert_eq!(
        d["capability_principals_removed"], 2,
        "gone and gone__tool: {d}"
    );
    assert_eq!(d["pack"]["state"], "installed");
    assert!(d["pack"]["decided_at"].is_null() && d["pack"]["manifest_hash"].is_null());
    assert!(h.join("ecosystem/gone/backend/blocks/echo.py").exists());
    assert!(!h.join("user_data/permissions/approvals/gone.json").exists());
    assert!(
        network_grant(&k, "gone").await.is_none(),
        "removed, not kept revoked"
    );
    assert!(capability_grants(&k, "gone").await.is_empty());
    assert!(capability_grants(&k, "gone__tool").await.is_empty());
    assert_eq!(
        capability_grants(&k, "gone__child").await.len(),
        1,
        "another pack's grant stays"
    );
    until(10, "the socket directory to go", || async {
        (!sockets.exists()).then_some(())
    })
    .await;
    let (s, _) = k.get("/api/gone/hello").await;
    assert_eq!(s, 403, "the route of a pack that is not approved");
    let (_, routes) = k.get("/api/routes").await;
    assert!(!routes["data"]["routes"]
        .to_string()
        .contains("/api/gone/hello"));
    let (s, _) = k.run("gone.hello", json!({})).await;
    assert_eq!(s, 404, "its flows unloaded");
    let (_, audit) = k.get("/api/audit?category=approval").await;
    assert!(audit.to_string().contains("pack_uninstalled"), "{audit}");
    assert_eq!(
        summary(h)["packs"]["pending_ids"],
        json!(["gone", "my_pack", "text_tools"])
    );

    // Installed again (approved again): nothing of the old grants comes back.
    k.approve("gone").await;
    assert!(network_grant(&k, "gone").await.is_none());
    assert!(capability_grants(&k, "gone").await.is_empty());
    let (s, v) = k
        .post(
            "/api/network/check",
            json!({"pack_id": "gone", "domain": "example.com", "port": 443}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["allowed"], false, "{v}");
    let (s, v) = k.get("/api/gone/hello").await;
    assert_eq!(s, 200, "the route is back with the approval: {v}");

    // Purge: files and data go, the pack is unknown.
    std::fs::create_dir_all(h.join("user_data/packs/gone")).unwrap();
    std::fs::write(h.join("user_data/packs/gone/state.txt"), "x").unwrap();
    let (s, v) = k.req("DELETE", "/api/packs/gone?purge=true", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["purged"], true);
    assert!(v["data"]["pack"].is_null());
    assert!(!h.join("ecosystem/gone").exists());
    assert!(!h.join("user_data/packs/gone").exists());
    let (s, _) = k.get("/api/packs/gone").await;
    assert_eq!(s, 404);
    let (s, _) = k.post("/api/packs/scan", json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = k.get("/api/packs/gone").await;
    assert_eq!(s, 404, "a scan does not bring it back");
    until(10, "the purged files to be deleted", || async {
        std::fs::read_dir(h.join("user_data/pack_trash"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
            .then_some(())
    })
    .await;
    let (s, v) = k.run("hello", json!({"name": "x"})).await;
    assert_eq!(s, 200, "the kernel still serves: {v}");
}

#[tokio::test]
async fn uninstall_refuses_bad_requests_and_changes_nothing() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    let k = Kernel::start(h, &[]);
    k.approve("my_pack").await;
    for (path, status, says) in [
        ("/api/packs/nope", 404, "nope"),
        ("/api/packs/..%2Fetc", 400, "not a valid pack id"),
        ("/api/packs/my_pack?purge=maybe", 400, "purge"),
        ("/api/packs/my_pack?purge=true&purge=false", 400, "once"),
        ("/api/packs/my_pack?force=1", 400, "unknown query parameter"),
    ] {
        let (s, v) = k.req("DELETE", path, None).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{path}: {v}");
    }
    let (_, v) = k.get("/api/packs/my_pack").await;
    assert_eq!(v["data"]["state"], "approved", "nothing changed");
    let (s, v) = k.run("hello", json!({"name": "Ann"})).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "succeeded", "{v}");
}

#[tokio::test]
async fn packs_list_in_load_order_and_report_cycles_and_unmet_requirements() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    let meta = |id: &str, extra: Value| {
        let mut m = json!({"pack_id": id, "pack_identity": format!("test:{id}")});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        write(h, &format!("ecosystem/{id}/ecosystem.json"), &m.to_string());
    };
    meta("zz_first", json!({"load_order": -5}));
    meta(
        "client",
        json!({"connectivity": {"requires": ["ai.model"]}}),
    );
    meta(
        "provider",
        json!({"connectivity": {"provides": ["ai.model"]}}),
    );
    meta(
        "loop_a",
        json!({"connectivity": {"provides": ["a"], "requires": ["b"]}}),
    );
    meta(
        "loop_b",
        json!({"connectivity": {"provides": ["b"], "requires": ["a"]}}),
    );
    meta(
        "lonely",
        json!({"connectivity": {"requires": ["nobody.provides.this"]}}),
    );
    let k = Kernel::start(h, &[]);
    let (s, v) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    let packs = v["data"].as_array().unwrap();
    let ids: Vec<&str> = packs
        .iter()
        .map(|p| p["pack_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "zz_first",
            "lonely",
            "my_pack",
            "provider",
            "client",
            "text_tools",
            "loop_a",
            "loop_b"
        ]
    );
    for (i, p) in packs.iter().enumerate() {
        assert_eq!(p["load_index"], i, "{p}");
    }
    let problems = |id: &str| {
        packs.iter().find(|p| p["pack_id"] == id).unwrap()["load_problems"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(problems("lonely")[0]
        .as_str()
        .unwrap()
        .contains("nobody.provides.this"));
    assert!(problems("loop_a")[0].as_str().unwrap().contains("cycle"));
    assert!(problems("client").is_empty() && problems("provider").is_empty());

    let (_, d) = k.get("/api/diagnostics").await;
    let entries = d["data"]["load_problems"].as_array().unwrap();
    let mut seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["kind"], "load_order", "{e}");
            (
                e["pack_id"].as_str().unwrap(),
                e["problem"].as_str().unwrap_or(""),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 3, "{entries:?}");
    assert_eq!(
        entries.iter().filter(|e| e["pack_id"] == "loop_b").count(),
        1
    );
    let (_, one) = k.get("/api/packs/loop_b").await;
    assert!(one["data"]["load_problems"][0]
        .as_str()
        .unwrap()
        .contains("loop_a"));
}

#[tokio::test]
async fn the_pending_summary_follows_every_state_change() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    let k = Kernel::start(h, &[]);
    let s = summary(h);
    assert_eq!(s["version"], "1.0");
    assert!(s["ts"].as_str().unwrap().ends_with('Z') || s["ts"].as_str().unwrap().contains('+'));
    assert_eq!(
        s["packs"],
        json!({"pending_count": 2, "pending_ids": ["my_pack", "text_tools"],
               "modified_count": 0, "modified_ids": [], "blocked_count": 0, "blocked_ids": []})
    );
    for key in [
        "pending_count",
        "rejected_count",
        "blocked_count",
        "failed_count",
        "installed_count",
    ] {
        assert!(s["capability"][key].is_u64(), "capability.{key}: {s}");
    }
    k.approve("my_pack").await;
    let (st, _) = k
        .post("/api/packs/text_tools/reject", json!({"reason": "no"}))
        .await;
    assert_eq!(st, 200);
    let s = summary(h);
    assert_eq!(s["packs"]["pending_ids"], json!([]));
    assert_eq!(s["packs"]["blocked_ids"], json!(["text_tools"]));
    write(h, "ecosystem/my_pack/backend/blocks/extra.py", "x = 1\n");
    let (st, _) = k.post("/api/packs/scan", json!({})).await;
    assert_eq!(st, 200);
    let s = summary(h);
    assert_eq!(s["packs"]["modified_ids"], json!(["my_pack"]));
    assert_eq!(s["packs"]["modified_count"], 1);
    let (st, _) = k.req("DELETE", "/api/packs/text_tools", None).await;
    assert_eq!(st, 200);
    let s = summary(h);
    assert_eq!(s["packs"]["blocked_ids"], json!([]));
    assert_eq!(s["packs"]["pending_ids"], json!(["text_tools"]));
}

/// Invariant 9: an acknowledged uninstall survives a SIGKILL right after its answer (the grant
/// files and the approval record are removed with their directories synced).
#[tokio::test]
async fn an_acknowledged_uninstall_survives_kill_9() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    let mut k = Kernel::start(h, &[]);
    k.approve("my_pack").await;
    let (s, v) = k
        .post(
            "/api/network/grant",
            json!({"pack_id": "my_pack", "allowed_domains": ["example.com"], "allowed_ports": [443]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = k
        .post(
            "/api/capability/grants/grant",
            json!({"principal_id": "my_pack", "permission_id": "store.get", "config": {}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = k.req("DELETE", "/api/packs/my_pack", None).await;
    assert_eq!(s, 200, "{v}");
    k.child.kill().expect("SIGKILL the kernel");
    let _ = k.child.wait();
    drop(k);

    let k = Kernel::start(h, &[]);
    let (_, v) = k.get("/api/packs/my_pack").await;
    assert_eq!(v["data"]["state"], "installed", "{v}");
    assert!(network_grant(&k, "my_pack").await.is_none());
    assert!(capability_grants(&k, "my_pack").await.is_empty());
    let (_, audit) = k.get("/api/audit?category=approval").await;
    assert!(audit.to_string().contains("pack_uninstalled"), "{audit}");
}

fn lib_record(home: &Path, pack: &str) -> Option<Value> {
    let bytes = std::fs::read(home.join("user_data/settings/lib_records.json")).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get(pack).cloned()
}

/// A re-installed pack starts from nothing: its lib install runs again after the next approval.
#[tokio::test]
async fn an_uninstalled_pack_runs_its_lib_install_again_when_approved_again() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let h = home.path();
    make_pack(h, "libbed", &[("echo.py", ECHO)]);
    write(
        h,
        "ecosystem/libbed/backend/lib/install.py",
        "import os\ndef run(context):\n    p = os.path.join(context['data_dir'], 'installs')\n    n = int(open(p).read()) if os.path.exists(p) else 0\n    open(p, 'w').write(str(n + 1))\n    return {'n': n + 1}\n",
    );
    let k = Kernel::start(h, &[]);
    k.approve("libbed").await;
    until(30, "the first install", || async {
        lib_record(h, "libbed").filter(|r| r["success"] == true)
    })
    .await;
    let (s, v) = k.req("DELETE", "/api/packs/libbed", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        lib_record(h, "libbed").is_none(),
        "the record went with the pack"
    );
    k.approve("libbed").await;
    // The script writes its count before the kernel records the run: wait for both.
    let r = until(30, "the second install and its record", || async {
        let n = std::fs::read_to_string(h.join("user_data/packs/libbed/installs")).ok()?;
        if n != "2" {
            return None;
        }
        lib_record(h, "libbed")
    })
    .await;
    assert_eq!(
        (r["lib_type"].as_str(), &r["success"]),
        (Some("install"), &json!(true))
    );
}
