//! Pack import and apply (contract §2.4, §16 "Import/apply") end to end: a hostile-zip corpus
//! generated here (hand-written headers where a zip writer would refuse to lie), each refused
//! with a clear 4xx, nothing written outside staging and no staging directory left, the kernel
//! still serving; then the happy paths: a folder by path (a symlink in it is not copied), a zip
//! uploaded as the body, apply new → installed, approve, change, re-import and apply → modified
//! with exactly one backup, an identity mismatch → 409 without a backup, malformed and unknown
//! staging ids, and two applies at once.

mod common;
#[path = "pack_import/zips.rs"]
mod zips;

use common::{write, Kernel, TOKEN};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use zips::{crc32, deflated_zeros, eco, entry, good_zip, raw_zip, RawEntry, BLOCK};

// ---- helpers ----------------------------------------------------------------------------------

async fn upload(k: &Kernel, body: Vec<u8>) -> (u16, Value) {
    let resp = k
        .http
        .post(k.url("/api/packs/import"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/zip")
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

/// Every path under `dir` (relative), links not followed; kernel logs and audit files left out
/// (they grow as the kernel works).
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("user_data/audit") || rel.ends_with(".log") {
                continue;
            }
            out.insert(rel);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn staging_entries(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("user_data/pack_staging"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn backups(home: &Path, id: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(home.join("user_data/pack_backups").join(id))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ecosystem")).unwrap();
    std::fs::create_dir_all(dir.path().join("user_data")).unwrap();
    dir
}

// ---- the hostile corpus -----------------------------------------------------------------------

#[tokio::test]
async fn hostile_archives_are_refused_with_the_rule_and_leave_nothing() {
    let home = home();
    let k = Kernel::start(home.path(), &[]);
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    let before = tree(home.path());

    let ok_eco = |p: &str| entry(format!("{p}/ecosystem.json").as_bytes(), &eco(p, "t:p"));
    let mut symlink = entry(b"p/link", b"/etc/passwd");
    symlink.mode = Some(0o120777);
    let mut fifo = entry(b"p/fifo", b"");
    fifo.mode = Some(0o010644);
    let many: Vec<RawEntry> = std::iter::once(ok_eco("p"))
        .chain((0..2001).map(|i| entry(format!("p/f{i}").as_bytes(), b"x")))
        .collect();
    // 1 GiB of zeros in ~6.5 MB, its header honest.
    let gib: u64 = 1 << 30;
    let bomb_data = deflated_zeros(gib);
    let bomb = RawEntry {
        name: b"p/zeros".to_vec(),
        data: bomb_data.clone(),
        method: 8,
        crc: 0,
        size: gib as u32,
        mode: None,
    };
    // The same stream, its header claiming 1000 bytes.
    let liar = RawEntry {
        name: b"p/zeros".to_vec(),
        data: bomb_data,
        method: 8,
        crc: crc32(&[0u8; 1000]),
        size: 1000,
        mode: None,
    };
    // A stored entry whose header claims more than it holds.
    let mut short = entry(b"p/short", b"0123456789");
    short.size = 5000;

    let cases: Vec<(&str, Vec<RawEntry>, u16, &str)> = vec![
        (
            "zip-slip",
            vec![ok_eco("p"), entry(b"p/../../evil", b"x")],
            400,
            "'..'",
        ),
        ("leading ..", vec![entry(b"../evil", b"x")], 400, "'..'"),
        (
            "absolute",
            vec![ok_eco("p"), entry(b"/etc/x", b"x")],
            400,
            "absolute",
        ),
        (
            "backslash",
            vec![ok_eco("p"), entry(b"p\\..\\evil", b"x")],
            400,
            "backslash",
        ),
        ("NUL", vec![ok_eco("p"), entry(b"p/a\0b", b"x")], 400, "NUL"),
        ("symlink", vec![ok_eco("p"), symlink], 400, "symlink"),
        ("fifo", vec![ok_eco("p"), fifo], 400, "symlink or special"),
        ("2001 files", many, 400, "more than 2000 files"),
        ("1 GiB bomb", vec![ok_eco("p"), bomb], 413, "500 MiB"),
        (
            "lying header",
            vec![ok_eco("p"), liar],
            400,
            "more than the 1000 bytes",
        ),
        (
            "short entry",
            vec![ok_eco("p"), short],
            400,
            "forged or damaged",
        ),
        (
            "two top dirs",
            vec![ok_eco("p"), ok_eco("q")],
            400,
            "more than one top-level",
        ),
        (
            "top-level file",
            vec![entry(b"ecosystem.json", &eco("p", "t:p"))],
            400,
            "top level",
        ),
        (
            "duplicate",
            vec![ok_eco("p"), ok_eco("p")],
            400,
            "appears twice",
        ),
        (
            "no metadata",
            vec![entry(b"p/a.py", b"x")],
            400,
            "ecosystem.json",
        ),
        (
            "wrong dir name",
            vec![entry(b"q/ecosystem.json", &eco("p", "t:p"))],
            400,
            "pack_id",
        ),
    ];
    for (what, entries, status, says) in cases {
        let (s, v) = upload(&k, raw_zip(&entries)).await;
        let err = v["error"].as_str().unwrap_or_default();
        assert_eq!(s, status, "{what}: {v}");
        assert_eq!(v["success"], false, "{what}");
        assert!(err.contains(says), "{what}: {err:?} should say {says:?}");
        assert!(
            !err.contains(&*home.path().to_string_lossy()),
            "{what}: a host path: {err}"
        );
        assert_eq!(
            staging_entries(home.path()),
            Vec::<String>::new(),
            "{what}: left something in pack_staging"
        );
    }
    // Not a zip at all, and an empty body.
    let (s, v) = upload(&k, b"hello".to_vec()).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = upload(&k, Vec::new()).await;
    assert_eq!(s, 400, "{v}");
    // Over the compressed cap, declared: 413 before a byte is read.
    let resp = k
        .http
        .post(k.url("/api/packs/import"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/zip")
        .header("content-length", (600u64 << 20).to_string())
        .body(vec![0u8; 16])
        .send()
        .await;
    if let Ok(r) = resp {
        assert_eq!(r.status().as_u16(), 413);
    }

    // Nothing outside staging changed (pack_staging itself may now exist, empty), and the
    // kernel still serves.
    let after: BTreeSet<String> = tree(home.path())
        .into_iter()
        .filter(|p| p != "user_data/pack_staging")
        .collect();
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "the refused imports wrote {new:?}");
    let (s, v) = k.get("/api/packs").await;
    assert_eq!((s, &v["data"]), (200, &json!([])));
    let (s, v) = k.get("/api/audit?category=security&limit=100").await;
    assert_eq!(s, 200);
    assert!(v.to_string().contains("pack_import_refused"), "{v}");
}

#[tokio::test]
async fn bad_requests_name_what_is_wrong() {
    let home = home();
    let k = Kernel::start(home.path(), &[]);
    let other = tempfile::tempdir().unwrap();
    let text_file = other.path().join("notes.txt");
    std::fs::write(&text_file, "x").unwrap();
    for (body, says) in [
        (json!({}), "path"),
        (json!({"path": 3}), "path"),
        (json!({"path": "relative/dir"}), "absolute"),
        (json!({"path": "/no/such/dir/at/all"}), "does not exist"),
        (
            json!({"path": text_file.to_str().unwrap()}),
            "folder, a .zip",
        ),
    ] {
        let (s, v) = k.post("/api/packs/import", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    // The home's user_data is never a source.
    std::fs::create_dir_all(home.path().join("user_data/x")).unwrap();
    let p = home.path().join("user_data/x");
    let (s, v) = k
        .post("/api/packs/import", json!({"path": p.to_str().unwrap()}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("user_data"), "{v}");

    for (body, status) in [
        (json!({}), 400),
        (json!({"staging_id": "../../etc"}), 400),
        (json!({"staging_id": "0123456789ABCDEF"}), 400),
        (json!({"staging_id": "0123456789abcde"}), 400),
        (json!({"staging_id": "0123456789abcdef"}), 404),
    ] {
        let (s, v) = k.post("/api/packs/apply", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    assert!(staging_entries(home.path()).is_empty());
}

// ---- the happy paths --------------------------------------------------------------------------

#[tokio::test]
async fn a_folder_import_copies_files_but_no_symlink() {
    let home = home();
    let src = tempfile::tempdir().unwrap();
    let pack = src.path().join("folder_pack");
    write(
        &pack,
        "ecosystem.json",
        &String::from_utf8(eco("folder_pack", "t:folder")).unwrap(),
    );
    write(&pack, "blocks/hello.py", BLOCK);
    let outside = src.path().join("secret.txt");
    std::fs::write(&outside, "top secret").unwrap();
    std::os::unix::fs::symlink(&outside, pack.join("blocks/leak.txt")).unwrap();
    std::os::unix::fs::symlink("hello.py", pack.join("blocks/inside.py")).unwrap();

    let k = Kernel::start(home.path(), &[]);
    let (s, v) = k
        .post("/api/packs/import", json!({"path": pack.to_str().unwrap()}))
        .await;
    assert_eq!(s, 200, "{v}");
    let d = &v["data"];
    assert_eq!(d["pack_id"], "folder_pack");
    assert_eq!(d["pack_identity"], "t:folder");
    assert_eq!(d["version"], "1.0.0");
    assert_eq!(d["files"], json!(["blocks/hello.py", "ecosystem.json"]));
    let skipped: Vec<&str> = d["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["blocks/inside.py", "blocks/leak.txt"]);
    assert!(d["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("symlink"));
    let sid = d["staging_id"].as_str().unwrap();
    assert!(
        sid.len() == 16
            && sid
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let staged = home.path().join("user_data/pack_staging").join(sid);
    assert!(staged.join("blocks/hello.py").is_file());
    assert!(std::fs::symlink_metadata(staged.join("blocks/leak.txt")).is_err());

    // Apply: a new pack, installed; the staging directory is gone; no backup.
    let (s, v) = k.post("/api/packs/apply", json!({"staging_id": sid})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["pack"]["state"], "installed");
    assert_eq!(v["data"]["backup"], Value::Null);
    assert!(!staged.exists());
    assert!(home
        .path()
        .join("ecosystem/folder_pack/blocks/hello.py")
        .is_file());
    assert!(backups(home.path(), "folder_pack").is_empty());
    // Applying it again: it is gone.
    let (s, _) = k.post("/api/packs/apply", json!({"staging_id": sid})).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn upload_apply_approve_update_gives_modified_and_one_backup() {
    let home = home();
    let k = Kernel::start(home.path(), &[]);

    let (s, v) = upload(&k, good_zip("zpack", "github:ann/zpack", BLOCK)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["data"]["files"],
        json!(["backend/blocks/hello.py", "backend/ecosystem.json"])
    );
    let sid = v["data"]["staging_id"].as_str().unwrap().to_string();
    let (s, v) = k.post("/api/packs/apply", json!({"staging_id": sid})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["pack"]["state"], "installed");
    assert_eq!(v["data"]["replaced"], false);
    k.approve("zpack").await;

    // A changed version: staged, applied → modified, exactly one backup holding the old files.
    let (s, v) = upload(&k, good_zip("zpack", "github:ann/zpack", "# v2\n")).await;
    assert_eq!(s, 200, "{v}");
    let sid2 = v["data"]["staging_id"].as_str().unwrap().to_string();
    let (s, v) = k
        .post("/api/packs/apply", json!({"staging_id": sid2}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["pack"]["state"], "modified", "{v}");
    assert_eq!(v["data"]["replaced"], true);
    let b = backups(home.path(), "zpack");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(
        v["data"]["backup"],
        json!(format!("user_data/pack_backups/zpack/{}", b[0]))
    );
    let old = std::fs::read_to_string(
        home.path()
            .join("user_data/pack_backups/zpack")
            .join(&b[0])
            .join("backend/blocks/hello.py"),
    )
    .unwrap();
    assert_eq!(old, BLOCK);
    let new = std::fs::read_to_string(home.path().join("ecosystem/zpack/backend/blocks/hello.py"))
        .unwrap();
    assert_eq!(new, "# v2\n");
    let (_, v) = k.get("/api/packs/zpack/status").await;
    assert_eq!(v["data"]["state"], "modified");

    // Another update: a second backup, unique, the first untouched.
    let (_, v) = upload(&k, good_zip("zpack", "github:ann/zpack", "# v3\n")).await;
    let sid3 = v["data"]["staging_id"].as_str().unwrap().to_string();
    let (s, _) = k
        .post("/api/packs/apply", json!({"staging_id": sid3}))
        .await;
    assert_eq!(s, 200);
    let b2 = backups(home.path(), "zpack");
    assert_eq!(b2.len(), 2, "{b2:?}");
    assert!(b2.contains(&b[0]));

    // Another identity under the same id: 409, nothing changed, no backup.
    let (_, v) = upload(&k, good_zip("zpack", "github:mallory/zpack", "# evil\n")).await;
    let evil = v["data"]["staging_id"].as_str().unwrap().to_string();
    let (s, v) = k
        .post("/api/packs/apply", json!({"staging_id": evil}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("pack_identity mismatch"),
        "{v}"
    );
    assert_eq!(backups(home.path(), "zpack"), b2);
    let kept = std::fs::read_to_string(home.path().join("ecosystem/zpack/backend/blocks/hello.py"))
        .unwrap();
    assert_eq!(kept, "# v3\n");
    // The refused staging stays, to inspect (it is evicted later).
    assert!(home
        .path()
        .join("user_data/pack_staging")
        .join(&evil)
        .is_dir());
}

#[tokio::test]
async fn two_applies_at_once_one_wins_and_the_tree_is_whole() {
    let home = home();
    let k = Kernel::start(home.path(), &[]);
    let (_, v) = upload(&k, good_zip("twice", "t:twice", BLOCK)).await;
    let sid = v["data"]["staging_id"].as_str().unwrap().to_string();
    let (a, b) = tokio::join!(
        k.post("/api/packs/apply", json!({"staging_id": sid})),
        k.post("/api/packs/apply", json!({"staging_id": sid})),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 404], "{a:?} {b:?}");

    // Two different imports of one pack at once: serialized, each with its own backup.
    let (_, v1) = upload(&k, good_zip("twice", "t:twice", "# one\n")).await;
    let (_, v2) = upload(&k, good_zip("twice", "t:twice", "# two\n")).await;
    let (s1, s2) = (
        v1["data"]["staging_id"].as_str().unwrap().to_string(),
        v2["data"]["staging_id"].as_str().unwrap().to_string(),
    );
    let (a, b) = tokio::join!(
        k.post("/api/packs/apply", json!({"staging_id": s1})),
        k.post("/api/packs/apply", json!({"staging_id": s2})),
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(backups(home.path(), "twice").len(), 2);
    let now = std::fs::read_to_string(home.path().join("ecosystem/twice/backend/blocks/hello.py"))
        .unwrap();
    assert!(now == "# one\n" || now == "# two\n");
    assert_eq!(
        tree(&home.path().join("ecosystem/twice")),
        BTreeSet::from([
            "backend".to_string(),
            "backend/blocks".to_string(),
            "backend/blocks/hello.py".to_string(),
            "backend/ecosystem.json".to_string()
        ])
    );
}

#[tokio::test]
async fn an_apply_cut_by_a_crash_is_finished_at_boot() {
    // The state a kill -9 between the two renames leaves: the old pack in its backup, the new one
    // staged, the journal naming both, nothing at the pack's place.
    let home = home();
    let h = home.path();
    let sid = "00112233445566aa";
    write(
        h,
        &format!("user_data/pack_staging/{sid}/ecosystem.json"),
        &String::from_utf8(eco("cut", "t:cut")).unwrap(),
    );
    write(
        h,
        "user_data/pack_backups/cut/20260101T000000.000000000Z/ecosystem.json",
        &String::from_utf8(eco("cut", "t:cut")).unwrap(),
    );
    write(
        h,
        &format!("user_data/pack_staging/.apply-{sid}.json"),
        &json!({"staging_id": sid, "pack_id": "cut", "legacy": false,
                "backup": "20260101T000000.000000000Z"})
        .to_string(),
    );
    // A swap that never started (crash after the journal and the empty backup directory): the
    // pack stays, the empty backup goes, the staged import stays to apply again.
    let sid2 = "00112233445566bb";
    write(
        h,
        &format!("user_data/pack_staging/{sid2}/ecosystem.json"),
        &String::from_utf8(eco("kept", "t:kept")).unwrap(),
    );
    write(
        h,
        "ecosystem/kept/ecosystem.json",
        &String::from_utf8(eco("kept", "t:kept")).unwrap(),
    );
    std::fs::create_dir_all(h.join("user_data/pack_backups/kept/20260101T000000.000000000Z"))
        .unwrap();
    write(
        h,
        &format!("user_data/pack_staging/.apply-{sid2}.json"),
        &json!({"staging_id": sid2, "pack_id": "kept", "legacy": false,
                "backup": "20260101T000000.000000000Z"})
        .to_string(),
    );
    // And leftovers of an interrupted import and upload.
    write(h, "user_data/pack_staging/.partial-0011223344556677/x", "x");
    write(h, "user_data/pack_staging/.upload-0011223344556677", "x");
    let k = Kernel::start(h, &[]);
    let (s, v) = k.get("/api/packs/cut").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["state"], "installed");
    assert!(h.join("ecosystem/cut/ecosystem.json").is_file());
    assert_eq!(backups(h, "cut").len(), 1);
    assert!(h.join("ecosystem/kept/ecosystem.json").is_file());
    assert!(backups(h, "kept").is_empty());
    assert_eq!(staging_entries(h), [sid2.to_string()]);
    let (s, v) = k
        .post("/api/packs/apply", json!({"staging_id": sid2}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(backups(h, "kept").len(), 1);
    assert!(staging_entries(h).is_empty(), "{:?}", staging_entries(h));
}

#[tokio::test]
async fn the_cli_imports_a_zip_and_a_folder_and_applies_them() {
    use common::cli::{fails, ok, rumi};
    let home = home();
    let k = Kernel::start(home.path(), &[]);
    let src = tempfile::tempdir().unwrap();
    // An archive: uploaded (6 MiB of incompressible bytes: over the progress bar's threshold).
    let archive = src.path().join("clipack.rumipack");
    let mut x: u32 = 7;
    let big: String = (0..6 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let mut z = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    z.start_file("clipack/ecosystem.json", opts).unwrap();
    z.write_all(&eco("clipack", "t:cli")).unwrap();
    z.start_file("clipack/data.txt", opts).unwrap();
    z.write_all(big.as_bytes()).unwrap();
    z.finish().unwrap();
    let staged = ok(
        rumi(&k),
        &["--json", "pack", "import", archive.to_str().unwrap()],
    )
    .json();
    assert_eq!(staged["pack_id"], "clipack");
    assert_eq!(
        staged["bytes"],
        json!(big.len() + eco("clipack", "t:cli").len())
    );
    let sid = staged["staging_id"].as_str().unwrap();
    let out = ok(rumi(&k), &["pack", "apply", sid]);
    assert!(out.stdout.contains("installed clipack"), "{}", out.stdout);
    assert!(
        out.stdout.contains("rumi pack approve clipack"),
        "{}",
        out.stdout
    );

    // A folder: sent as its absolute path, given relative on the command line.
    let folder = src.path().join("clifolder");
    write(
        &folder,
        "ecosystem.json",
        &String::from_utf8(eco("clifolder", "t:cli2")).unwrap(),
    );
    let mut cmd = rumi(&k);
    cmd.current_dir(src.path());
    let out = ok(cmd, &["pack", "import", "clifolder"]);
    assert!(
        out.stdout.contains("staged clifolder 1.0.0"),
        "{}",
        out.stdout
    );
    let sid = out
        .stdout
        .split("rumi pack apply ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let applied = ok(rumi(&k), &["--json", "pack", "apply", &sid]).json();
    assert_eq!(applied["pack"]["state"], "installed");

    // Refusals name the problem and exit non-zero.
    let out = fails(rumi(&k), &["pack", "apply", "nothex"]);
    assert!(out.stderr.contains("16 lowercase hex"), "{}", out.stderr);
    let bad = src.path().join("bad.zip");
    std::fs::write(&bad, raw_zip(&[entry(b"p/../x", b"x")])).unwrap();
    let out = fails(rumi(&k), &["pack", "import", bad.to_str().unwrap()]);
    assert!(out.stderr.contains("'..'"), "{}", out.stderr);
}

#[tokio::test]
async fn a_folder_swapped_for_a_link_while_importing_never_leaks() {
    // A hostile folder flips `sub` between a directory and a symlink to a directory holding a
    // secret, as fast as it can, while the kernel imports it: no staged import ever holds the
    // secret (the walk opens each directory O_NOFOLLOW and never resolves a name again).
    let home = home();
    let k = Kernel::start(home.path(), &[]);
    let src = tempfile::tempdir().unwrap();
    let pack = src.path().join("racer");
    write(
        &pack,
        "ecosystem.json",
        &String::from_utf8(eco("racer", "t:racer")).unwrap(),
    );
    write(&pack, "sub/a.txt", "plain");
    let secret_dir = src.path().join("secret");
    write(&secret_dir, "a.txt", "SECRET");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (pack, secret_dir, stop) = (pack.clone(), secret_dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let (sub, real, link) = (pack.join("sub"), pack.join(".real"), pack.join(".link"));
            std::fs::rename(&sub, &real).unwrap();
            std::os::unix::fs::symlink(&secret_dir, &link).unwrap();
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // sub is the real directory, then the link, by atomic renames.
                let _ = std::fs::rename(&real, &sub);
                let _ = std::fs::rename(&sub, &real);
                let _ = std::fs::rename(&link, &sub);
                let _ = std::fs::rename(&sub, &link);
                flips += 1;
            }
            flips
        })
    };
    let mut imported = 0;
    for _ in 0..40 {
        let (s, v) = k
            .post("/api/packs/import", json!({"path": pack.to_str().unwrap()}))
            .await;
        assert!(s == 200 || s == 400, "{v}");
        if s == 200 {
            imported += 1;
            let sid = v["data"]["staging_id"].as_str().unwrap();
            let staged = home.path().join("user_data/pack_staging").join(sid);
            if let Ok(text) = std::fs::read_to_string(staged.join("sub/a.txt")) {
                assert_eq!(
                    text, "plain",
                    "the import followed a link out of the folder"
                );
            }
            std::fs::remove_dir_all(staged).unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(flipper.join().unwrap() > 0);
    assert!(imported > 0, "no import got through the flipping");
}

#[tokio::test]
async fn an_upload_cut_off_or_over_the_cap_leaves_no_file() {
    let home = home();
    let k = Kernel::start(home.path(), &[]);
    let staging = home.path().to_path_buf();
    let upload_there = |want: bool| {
        let staging = staging.clone();
        move || {
            let staging = staging.clone();
            async move {
                let any = staging_entries(&staging)
                    .iter()
                    .any(|n| n.starts_with(".upload-"));
                (any == want).then_some(())
            }
        }
    };
    // A client that sends 1 MiB of a declared 10 MiB and goes away.
    {
        let addr = k.base.trim_start_matches("http://").to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /api/packs/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/zip\r\nContent-Length: 10485760\r\n\r\n"
        )
        .unwrap();
        s.write_all(&vec![0u8; 1 << 20]).unwrap();
        common::until(20, "the upload file", upload_there(true)).await;
    }
    common::until(20, "the cut upload removed", upload_there(false)).await;

    // A chunked body (no Content-Length) past 500 MiB: 413 once the count passes the cap.
    let chunk = vec![0u8; 1 << 20];
    let stream =
        futures_util::stream::iter((0..501).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = k
        .http
        .post(k.url("/api/packs/import"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/zip")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(r) = resp {
        assert_eq!(r.status().as_u16(), 413);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("500 MiB"), "{v}");
    }
    common::until(20, "the over-cap upload removed", upload_there(false)).await;
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200);
}
