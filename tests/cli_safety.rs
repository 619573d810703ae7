//! Attacks on the CLI: text from a pack shown escaped, the token never sent through a proxy or to
//! a server that cannot prove it holds it, a planted home and strange token files refused.

mod common;

use common::cli::*;
use common::{python_available, write, Kernel};
use std::sync::mpsc;
use std::time::Duration;

/// Text from a pack (its description, a file name, an error) never reaches the terminal as
/// control characters; the token never goes through a proxy of the environment; numbers that are
/// not numbers are refused by clap, not panicked on.
#[test]
fn hostile_text_is_shown_escaped_and_the_token_stays_local() {
    if !python_available() {
        return;
    }
    let home = common::fresh_home();
    write(
        home.path(),
        "ecosystem/evil/backend/ecosystem.json",
        r#"{"pack_id":"evil","pack_identity":"x:evil","description":"fine\u001b]52;c;ZXZpbA==\u0007\nstate: approved\u001b[2K"}"#,
    );
    let k = Kernel::start(home.path(), &[]);
    // A proxy that answers nothing: a request sent through it would fail.
    let o = run(
        {
            let mut c = rumi(&k);
            c.env("http_proxy", "http://127.0.0.1:9")
                .env("HTTP_PROXY", "http://127.0.0.1:9")
                .env("ALL_PROXY", "http://127.0.0.1:9");
            c
        },
        &["pack", "show", "evil"],
    );
    assert_eq!(
        o.code, 0,
        "the proxy of the environment was not used: {}",
        o.stderr
    );
    assert!(
        !o.stdout.contains('\u{1b}') && !o.stdout.contains('\u{7}'),
        "{:?}",
        o.stdout
    );
    assert!(
        o.stdout.contains("\\u{1b}]52"),
        "shown, escaped: {}",
        o.stdout
    );
    assert!(
        !o.stdout.lines().any(|l| l.starts_with("state: approved")),
        "a newline in a description cannot forge a line: {}",
        o.stdout
    );
    let o = ok(rumi(&k), &["pack", "list"]);
    assert!(!o.stdout.contains('\u{1b}'), "{:?}", o.stdout);
    for bad in ["NaN", "inf", "-1"] {
        let o = run(rumi(&k), &["runs", "show", "x", "--follow", "--wait", bad]);
        assert_eq!(o.code, 2, "clap refuses --wait {bad}: {}", o.stderr);
        let o = run(rumi(&k), &["flow", "run", "hello", "--timeout", bad]);
        assert_eq!(o.code, 2, "clap refuses --timeout {bad}: {}", o.stderr);
    }
}

/// A home found above the current directory must be the user's own and not writable by anyone;
/// a token file that is not a small regular file is never read (a FIFO would hang the CLI).
#[test]
fn a_planted_home_and_a_strange_token_file_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let planted = root.path().join("user_data");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join("api_token"), "planted").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let work = root.path().join("project/src");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = bare();
    cmd.current_dir(&work);
    let o = fails(cmd, &["token"]);
    assert!(
        o.stderr.contains("may be written by anyone") && o.stderr.contains("RUMI_HOME"),
        "{}",
        o.stderr
    );
    let mut cmd = bare();
    cmd.current_dir(&work);
    assert!(fails(cmd, &["pack", "new", "x"])
        .stderr
        .contains("refusing the home"));
    assert!(
        !root.path().join("ecosystem").exists(),
        "nothing written into the planted home"
    );

    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(planted.join("api_token")).unwrap();
    let fifo = std::ffi::CString::new(planted.join("api_token").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut cmd = bare();
    cmd.current_dir(&work).timeout(Duration::from_secs(20));
    let o = fails(cmd, &["token"]);
    assert!(
        o.stderr.contains("no token"),
        "a FIFO is not read: {}",
        o.stderr
    );
    std::fs::remove_file(planted.join("api_token")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", planted.join("api_token")).unwrap();
    let mut cmd = bare();
    cmd.current_dir(&work).timeout(Duration::from_secs(20));
    assert!(fails(cmd, &["token"]).stderr.contains("no token"));
    let mut cmd = bare();
    cmd.env("RUMI_HOME", planted.join("api_token"));
    assert!(fails(cmd, &["token"]).stderr.contains("RUMI_HOME"));
}

/// A program that took the kernel's port (while the kernel was down) never receives the token:
/// the CLI asks for a proof that the server holds it first.
#[test]
fn the_token_is_sent_only_to_a_server_that_proves_it_holds_it() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body = r#"{"success":true,"data":{"status":"ok","version":"0.1.0","mode":"strict","proof":"00"},"error":null}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let home = tempfile::tempdir().unwrap();
    let mut cmd = bare();
    cmd.env("RUMI_API_PORT", port.to_string())
        .env("RUMI_API_TOKEN", "the-operators-token")
        .env("RUMI_HOME", home.path());
    let o = fails(cmd, &["pack", "list"]);
    assert!(o.stderr.contains("did not prove"), "{}", o.stderr);
    let seen: Vec<String> = rx.try_iter().collect();
    assert!(!seen.is_empty(), "the CLI asked the impostor for its proof");
    for request in &seen {
        assert!(
            !request.to_ascii_lowercase().contains("authorization")
                && !request.contains("the-operators-token"),
            "the token reached the impostor: {request}"
        );
    }
}
