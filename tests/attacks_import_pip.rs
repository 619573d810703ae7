//! Outside review of pack import/apply and pip dependencies: each test proves one finding and is
//! `#[ignore]`d with its number until the kernel is fixed (run one with
//! `cargo test --test attacks_import_pip -- --ignored <name>`).

mod common;

use common::pip::*;
use common::*;
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn bare_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ecosystem")).unwrap();
    std::fs::create_dir_all(dir.path().join("user_data")).unwrap();
    dir
}

/// A small valid pack folder `<parent>/<id>/` (an import source).
fn pack_folder(parent: &Path, id: &str) -> std::path::PathBuf {
    let dir = parent.join(id);
    std::fs::create_dir_all(dir.join("backend/blocks")).unwrap();
    std::fs::write(
        dir.join("backend/ecosystem.json"),
        format!(r#"{{"pack_id":"{id}","pack_identity":"t:{id}","version":"1.0.0"}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("backend/blocks/hello.py"),
        "def run(input_data, context=None):\n    return {}\n",
    )
    .unwrap();
    dir
}

/// A valid pack as a zip (deflate).
fn pack_zip(id: &str) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file(format!("{id}/backend/ecosystem.json"), opts)
        .unwrap();
    z.write_all(
        format!(r#"{{"pack_id":"{id}","pack_identity":"t:{id}","version":"1.0.0"}}"#).as_bytes(),
    )
    .unwrap();
    z.finish().unwrap().into_inner()
}

async fn import_path(k: &Kernel, path: &Path, timeout: Duration) -> Option<(u16, Value)> {
    let resp = k
        .http
        .post(k.url("/api/packs/import"))
        .bearer_auth(TOKEN)
        .json(&json!({"path": path.to_str().unwrap()}))
        .timeout(timeout)
        .send()
        .await
        .ok()?;
    let s = resp.status().as_u16();
    Some((s, resp.json().await.unwrap_or(Value::Null)))
}

// ---- finding 1 ----------------------------------------------------------------------------------

/// Two authenticated clients that open a zip upload and then send one byte every few seconds
/// (well inside the per-chunk idle timeout) hold both import slots for up to UPLOAD_DEADLINE
/// (30 minutes); every other import — even a `{path}` import, which uploads nothing — gets 429
/// for that long. Two sockets and a few bytes a minute disable import.
#[tokio::test]

async fn f1_two_slow_uploads_lock_every_import_out() {
    let home = bare_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    let port = port_of(&k);
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        c.write_all(
            format!(
                "POST /api/packs/import HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \
                 {TOKEN}\r\nContent-Type: application/zip\r\nContent-Length: 100000000\r\n\r\nP"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        slow.push(c);
    }
    let src = tempfile::tempdir().unwrap();
    let folder = pack_folder(src.path(), "victim_pack");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Trickle one byte every 2 s for 40 s: longer than the 30 s idle timeout of a body read.
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < Duration::from_secs(40) {
        // (Fixed: a trickle is cut off after a grace period; its writes then fail, and it held
        // an upload slot, never an import slot.)
        for c in slow.iter_mut() {
            let _ = c.write_all(b"K").await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        if answers.len() < 3 && started.elapsed() > Duration::from_secs(18 * answers.len() as u64) {
            let (s, v) = import_path(&k, &folder, Duration::from_secs(20))
                .await
                .unwrap();
            answers.push((started.elapsed().as_secs(), s, v));
        }
    }
    let refused: Vec<String> = answers
        .iter()
        .filter(|(_, s, _)| *s != 200)
        .map(|(t, s, v)| format!("at {t}s: {s} {}", v["error"]))
        .collect();
    assert!(
        refused.is_empty(),
        "a {{path}} import of a valid folder was refused while two clients trickle one byte \
         every 2 s into uploads (past the 30 s idle timeout): {refused:#?}"
    );
}

// ---- finding 2 ----------------------------------------------------------------------------------

/// `import_path` checks `fs::metadata(path).is_file()` and then `File::open(path)` — two lookups
/// of the name, the open blocking (no O_NONBLOCK). A caller who swaps a FIFO in between (a
/// rename, retried until it lands) leaves the import thread blocked in open(2) forever, holding
/// an import slot: two wins and every later import answers 429 until the kernel restarts.
#[tokio::test]

async fn f2_a_fifo_swapped_in_after_the_check_hangs_the_import_slots() {
    let home = bare_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    let src = tempfile::tempdir().unwrap();
    let target = src.path().join("p.zip");
    let file_tmp = src.path().join("file.tmp");
    let fifo_tmp = src.path().join("fifo.tmp");
    // The flipper: the name alternates between a regular zip and a FIFO, atomically.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (target, file_tmp, fifo_tmp, stop) = (
            target.clone(),
            file_tmp.clone(),
            fifo_tmp.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let zip = pack_zip("p");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&file_tmp, &zip).unwrap();
                std::fs::rename(&file_tmp, &target).unwrap();
                let c = std::ffi::CString::new(fifo_tmp.to_str().unwrap()).unwrap();
                unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
                std::fs::rename(&fifo_tmp, &target).unwrap();
            }
        })
    };
    // Fire imports; each hung one keeps its request (and the slot) open. (Before the fix the
    // race was won within about 10 s.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut hung = Vec::new();
    let mut tries = 0;
    while Instant::now() < deadline {
        tries += 1;
        let (kk_url, path) = (k.url("/api/packs/import"), target.clone());
        let http = k.http.clone();
        let req = tokio::spawn(async move {
            http.post(kk_url)
                .bearer_auth(TOKEN)
                .json(&json!({"path": path.to_str().unwrap()}))
                .timeout(Duration::from_secs(600))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !req.is_finished() {
            hung.push(req);
            if hung.len() >= 2 {
                break;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    // (Never opened for writing: a writer would release the blocked open.)
    let _ = std::fs::remove_file(&target);
    let folder = pack_folder(src.path(), "victim_pack");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s, v) = import_path(&k, &folder, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        s,
        200,
        "after {tries} tries, {} imports hang in open(2) on a FIFO and a valid import is \
         refused: {v}",
        hung.len()
    );
}

/// `bigpkg-1.0`, its module holding `size` bytes (stored: pip and the installer copy it all).
fn big_wheel(dir: &Path, size: usize) {
    let script = r#"
import sys, zipfile
d, size = sys.argv[1], int(sys.argv[2])
di = "bigpkg-1.0.dist-info"
with zipfile.ZipFile(f"{d}/bigpkg-1.0-py3-none-any.whl", "w") as z:
    z.writestr("bigpkg/__init__.py", "VALUE = 1\n")
    z.writestr("bigpkg/big.py", "x = '" + "a" * size + "'\n")
    z.writestr(f"{di}/METADATA", "Metadata-Version: 2.1\nName: bigpkg\nVersion: 1.0\n")
    z.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(f"{di}/RECORD", "")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(size.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- finding 3 ----------------------------------------------------------------------------------

/// A pip install runs for seconds to minutes after its approval was begun (download, unpack) and
/// nothing stops it when the pack is uninstalled with `?purge=true` meanwhile: the install then
/// recreates `user_data/packs/<id>/python/site-packages` (ensure_dir of its parent) and swaps the
/// packages in for a pack that no longer exists, and its candidate stays `installed`. A pack
/// installed later under the same id (any publisher: purge freed the id and its identity) is
/// mounted those packages at /pip-packages without its lock ever being reviewed.
#[tokio::test]
async fn f3_a_pip_install_racing_a_purge_resurrects_the_packages() {
    if !python_available() {
        return;
    }
    let wheels = wheel_dir();
    // A large wheel makes the install take long enough to race.
    big_wheel(wheels.path(), 128 << 20);
    let home = fresh_home();
    importing_pack(
        home.path(),
        "pip_race",
        "tinypkg",
        "tinypkg==1.0\nbigpkg==1.0\n",
    );
    let k = Kernel::start(
        home.path(),
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
    );
    k.approve("pip_race").await;
    let key = candidate_of(&scan(&k).await, "pip_race")["candidate_key"]
        .as_str()
        .unwrap()
        .to_string();
    let approve = {
        let (url, http) = (
            k.url(&format!("/api/pip/requests/{}/approve", enc(&key))),
            k.http.clone(),
        );
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!approve.is_finished(), "the install ended before the purge");
    // (Fixed: an uninstall waits for no install: it is refused while one runs.)
    let (s, v) = k
        .req("DELETE", "/api/packs/pip_race?purge=true", None)
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("under way"), "{v}");
    let (s, text) = approve.await.unwrap();
    let (s2, v) = k
        .req("DELETE", "/api/packs/pip_race?purge=true", None)
        .await;
    assert_eq!(s2, 200, "{v}");
    assert!(!home.path().join("user_data/packs/pip_race").exists());
    let (_, list) = k.get("/api/pip/requests").await;
    assert!(
        !list.to_string().contains("pip_race:"),
        "its candidates are forgotten: {list}"
    );
    let data = home.path().join("user_data/packs/pip_race");
    let resurrected = data.join("python/site-packages/tinypkg").exists();
    // Another publisher's pack under the freed id, with no requirements.lock at all: once
    // approved, its block imports the purged pack's packages.
    write(
        home.path(),
        "ecosystem/pip_race/backend/ecosystem.json",
        r#"{"pack_id":"pip_race","pack_identity":"someone-else:pip_race"}"#,
    );
    write(
        home.path(),
        "ecosystem/pip_race/backend/blocks/use.py",
        "import tinypkg\n\ndef run(input_data, context=None):\n    return {\"value\": tinypkg.VALUE, \"file\": tinypkg.__file__}\n",
    );
    let (_, _) = k.post("/api/packs/scan", json!({})).await;
    k.approve("pip_race").await;
    k.reload().await;
    let (_, run) = k.run("pip_race_use", json!({})).await;
    assert!(
        !resurrected && run["result"]["got"]["value"] != 42,
        "the install ({s}: {text}) finished after the purge and recreated {}; a new pack under \
         the id (no lock reviewed) imports the purged pack's packages: {run}",
        data.display()
    );
}

// ---- finding 4 ----------------------------------------------------------------------------------

/// `entry_path` refuses control characters so that "names lie on a terminal" cannot happen, but
/// only `Cc` characters: bidi overrides (U+202E RIGHT-TO-LEFT OVERRIDE, U+2066..U+2069 isolates),
/// zero-width characters (U+200B) and two spellings of one name (NFC `É` and NFD `E` + U+0301)
/// are accepted, so the staged file list a person reviews shows `blocks/evil<U+202E>yp.txt` as
/// `blocks/eviltxt.py`, and two entries that print identically.
#[tokio::test]
async fn f4_names_that_lie_on_a_screen_are_accepted() {
    let home = bare_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    for (what, names) in [
        (
            "a right-to-left override",
            vec!["p/backend/blocks/evil\u{202E}yp.txt"],
        ),
        (
            "a zero-width space",
            vec!["p/backend/blocks/hel\u{200B}lo.py"],
        ),
        // (Still accepted, a known limit: two spellings of one name, NFC `É` and NFD `E` +
        // U+0301, stage as two files that print alike; refusing NFD would refuse archives made
        // on macOS, and catching only the twins needs Unicode normalisation tables.)
    ] {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("p/backend/ecosystem.json", opts).unwrap();
        z.write_all(br#"{"pack_id":"p","pack_identity":"t:p","version":"1.0.0"}"#)
            .unwrap();
        for n in &names {
            z.start_file(*n, opts).unwrap();
            z.write_all(b"x = 1\n").unwrap();
        }
        let body = z.finish().unwrap().into_inner();
        let resp = k
            .http
            .post(k.url("/api/packs/import"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/zip")
            .body(body)
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(s, 400, "an archive with {what} was staged: {v}");
    }
}

// ---- finding 5 ----------------------------------------------------------------------------------

async fn upload_zip(k: &Kernel, body: Vec<u8>) -> (u16, Value) {
    let resp = k
        .http
        .post(k.url("/api/packs/import"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/zip")
        .body(body)
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap())
}

/// A zip whose one file is `n` zero bytes (deflated: ~1 KB per MiB).
fn zeros_zip(id: &str, n: usize, salt: &str) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file(format!("{id}/backend/ecosystem.json"), opts)
        .unwrap();
    z.write_all(
        format!(r#"{{"pack_id":"{id}","pack_identity":"t:{id}","version":"{salt}"}}"#).as_bytes(),
    )
    .unwrap();
    z.start_file(format!("{id}/backend/zeros.bin"), opts)
        .unwrap();
    z.write_all(&vec![0u8; n]).unwrap();
    z.finish().unwrap().into_inner()
}

/// Every apply over an existing pack keeps a full copy of the old one in
/// `user_data/pack_backups/<id>/`, with no cap and no pruning, and `DELETE
/// /api/packs/{id}?purge=true` ("removes its files and data") leaves them all: a purged pack's
/// code stays on disk, and import+apply of a small zip bomb (~500 KB → 500 MiB) fills the disk
/// by 500 MiB per two requests, for good.
#[tokio::test]

async fn f5_backups_pile_up_and_survive_a_purge() {
    let home = bare_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    let mut compressed = 0usize;
    for i in 0..4 {
        let zip = zeros_zip("bk", 8 << 20, &format!("1.0.{i}"));
        compressed += zip.len();
        let (s, v) = upload_zip(&k, zip).await;
        assert_eq!(s, 200, "{v}");
        let id = v["data"]["staging_id"].as_str().unwrap().to_string();
        let (s, v) = k.post("/api/packs/apply", json!({"staging_id": id})).await;
        assert_eq!(s, 200, "{v}");
    }
    let backups = home.path().join("user_data/pack_backups/bk");
    let n = std::fs::read_dir(&backups).map(|d| d.count()).unwrap_or(0);
    eprintln!("{n} backups of 8 MiB each kept from {compressed} bytes uploaded");
    let (s, v) = k.req("DELETE", "/api/packs/bk?purge=true", None).await;
    assert_eq!(s, 200, "{v}");
    until(10, "the purge to finish", || async {
        (!home.path().join("ecosystem/bk").exists()).then_some(())
    })
    .await;
    assert!(
        !backups.exists(),
        "the purged pack's {n} old copies are still in user_data/pack_backups/bk"
    );
}

// ---- finding 6 ----------------------------------------------------------------------------------

/// `rumi pack import` prints every field through `output::text` (control characters escaped) but
/// the archive's `version`, printed raw: a publisher's ecosystem.json with
/// `"version": "1.0\r\u001b[2Kstaged official_pack ..."` rewrites the operator's terminal line
/// (or sets the title, OSC 52 clipboard, ...) while they decide whether to apply.
#[tokio::test]

async fn f6_the_cli_prints_the_archives_version_raw() {
    use common::cli::{ok, rumi};
    let home = bare_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    let src = tempfile::tempdir().unwrap();
    let archive = src.path().join("evil.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    z.start_file(
        "evil/ecosystem.json",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    z.write_all(
        br#"{"pack_id":"evil","pack_identity":"t:evil","version":"6.6.6\r\u001b[2K\u001b]0;owned\u0007staged trusted 1.0"}"#,
    )
    .unwrap();
    z.finish().unwrap();
    let out = ok(rumi(&k), &["pack", "import", archive.to_str().unwrap()]);
    assert!(
        !out.stdout.contains('\u{1b}') && !out.stdout.contains('\r'),
        "the operator's terminal got raw escapes: {:?}",
        out.stdout
    );
}

// ---- finding 7 ----------------------------------------------------------------------------------

/// An archive whose real central directory (N entries, zip64 when N > 65534) and end record sit
/// more than 64 KiB before the end, followed by zeros and a bogus end record (1 entry, a central
/// directory offset past itself). The kernel's pre-parse count check (`check_entry_count`) reads
/// only the last 64 KiB: it sees the bogus record (1 entry) and lets the archive through; the zip
/// crate (7.x) searches the whole file backwards, rejects the bogus record and falls back to the
/// real one — and parses all N entries before the kernel's `zip.len() > 4000` check.
fn fallback_eocd_zip(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 60 + 80_000);
    let name = |i: usize| format!("p/{i:x}");
    for i in 0..n {
        let nm = name(i);
        out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // made, needed, flags, method, time, date
        out.extend_from_slice(&[0; 12]); // crc, sizes
        out.extend_from_slice(&(nm.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 8]); // extra, comment, disk, internal
        out.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // local header offset
        out.extend_from_slice(nm.as_bytes());
    }
    let cd_size = out.len() as u64;
    if n < 0xFFFF {
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(cd_size as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
    } else {
        let eocd64 = out.len() as u64;
        out.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[45, 3, 45, 0]);
        out.extend_from_slice(&[0; 8]); // disk, cd disk
        out.extend_from_slice(&(n as u64).to_le_bytes());
        out.extend_from_slice(&(n as u64).to_le_bytes());
        out.extend_from_slice(&cd_size.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&eocd64.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&[0xFF; 12]);
        out.extend_from_slice(&0u16.to_le_bytes());
    }
    out.extend_from_slice(&vec![0u8; 70_000]);
    // The bogus record the kernel reads: one entry, its directory "after" itself.
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend_from_slice(&46u32.to_le_bytes());
    out.extend_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test]

async fn f7_an_earlier_end_record_bypasses_the_entry_count_check() {
    let home = bare_home();
    let k = Kernel::start(home.path(), &[]);
    let (s, _) = k.get("/api/packs").await;
    assert_eq!(s, 200);
    let src = tempfile::tempdir().unwrap();
    // Small: the refusal comes from the post-parse check (the crate read 5000 entries).
    let small = src.path().join("small.zip");
    std::fs::write(&small, fallback_eocd_zip(5000)).unwrap();
    let (s, v) = import_path(&k, &small, Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!("5000 entries: {s} {}", v["error"]);
    // Large: 2 million minimal entries (~95 MB), parsed whole by the crate.
    let big = src.path().join("big.zip");
    std::fs::write(&big, fallback_eocd_zip(2_000_000)).unwrap();
    let pid = k.child.id();
    let before = peak_rss_kib(pid);
    let t = Instant::now();
    let (s2, v2) = import_path(&k, &big, Duration::from_secs(300))
        .await
        .unwrap();
    let after = peak_rss_kib(pid);
    eprintln!(
        "2M entries: {s2} {} in {:?}; kernel peak RSS {} MiB -> {} MiB",
        v2["error"],
        t.elapsed(),
        before >> 10,
        after >> 10
    );
    let small_error = v["error"].as_str().unwrap_or_default();
    assert!(
        small_error.contains("a pack may hold at most") && after - before < 100 << 10,
        "the pre-parse count check was bypassed: {small_error:?}; parsing 2M entries took {:?} \
         and raised the kernel's peak RSS from {} MiB to {} MiB",
        t.elapsed(),
        before >> 10,
        after >> 10
    );
}
