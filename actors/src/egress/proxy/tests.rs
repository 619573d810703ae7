//! The proxy's unit tests.

use super::*;
use crate::audit::AuditWriter;
use crate::keys::SigningKey;
use crate::view::{KernelView, PackState};
use actix::Actor;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A resolver from a table, counting its calls.
fn table(entries: &[(&str, &[&str])], calls: Arc<AtomicUsize>) -> Resolver {
    let map: HashMap<String, Vec<IpAddr>> = entries
        .iter()
        .map(|(n, ips)| {
            (
                n.to_string(),
                ips.iter().map(|i| i.parse().unwrap()).collect(),
            )
        })
        .collect();
    Arc::new(move |name, _| {
        calls.fetch_add(1, Ordering::SeqCst);
        let found = map.get(&name).cloned();
        Box::pin(async move { found.ok_or_else(|| io::Error::other("unknown name")) })
    })
}

fn proxy(dir: &Path, ca: Option<&Path>, resolver: Resolver) -> Proxy {
    let settings = EgressSettings {
        allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        extra_ca_file: ca.map(Path::to_path_buf),
        ..EgressSettings::default()
    };
    build(dir, &settings, resolver)
}

/// A proxy for pack "p" (granted `*`, every port), limit 1 MiB.
fn build(dir: &Path, settings: &EgressSettings, resolver: Resolver) -> Proxy {
    let view = Arc::new(KernelView::default());
    view.publish_states(HashMap::from([("p".to_string(), PackState::Approved)]));
    let (policy, _) =
        NetworkPolicy::load(dir.join("grants"), SigningKey::from_bytes(&[3; 32]), view);
    policy.grant("p", &["*".into()], &[0], "").unwrap();
    let audit = AuditWriter::new(dir.join("audit"), std::time::Duration::from_millis(50)).start();
    Proxy::new(Arc::new(policy), settings, 1 << 20, audit)
        .unwrap()
        .with_resolver(resolver)
}

fn get(url: &str) -> EgressRequest {
    let frame = json!({"method": "GET", "url": url}).to_string();
    rumi_domain::egress::parse_request(frame.as_bytes()).unwrap()
}

async fn fetch(p: &Proxy, url: &str) -> ProxyResponse {
    match p.handle("p", get(url), &p.budget().for_pack()).await.reply {
        Reply::Http(r) => *r,
        other => panic!("{other:?}"),
    }
}

/// Answers every request with "ok", over TLS when `tls` is given.
async fn server(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
    serve_body(tls, b"ok".to_vec()).await
}

/// Answers every request with `body`.
async fn serve_body(tls: Option<tokio_rustls::TlsAcceptor>, body: Vec<u8>) -> u16 {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let response: &'static [u8] = Box::leak(response.into_boxed_slice());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, r: &[u8]) {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(r).await;
                    let _ = s.shutdown().await;
                }
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(s).await {
                            answer(s, response).await
                        }
                    }
                    None => answer(s, response).await,
                }
            });
        }
    });
    port
}

#[actix_rt::test]
async fn tls_goes_to_the_checked_address_and_verifies_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["upstream.test".into()]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let port = server(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let resolver = table(
        &[
            ("upstream.test", &["127.0.0.1"]),
            ("wrong.test", &["127.0.0.1"]),
        ],
        Arc::clone(&calls),
    );
    let p = proxy(dir.path(), Some(&ca), resolver);
    let ok = fetch(&p, &format!("https://upstream.test:{port}/")).await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.body, "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "resolved once");
    // The same address under a name the certificate does not carry.
    let bad = fetch(&p, &format!("https://wrong.test:{port}/")).await;
    assert_eq!(bad.error_type.as_deref(), Some("tls_error"), "{bad:?}");
    // Without the extra root the certificate is not trusted at all.
    let strict = proxy(
        &dir.path().join("b"),
        None,
        table(&[("upstream.test", &["127.0.0.1"])], calls),
    );
    let untrusted = fetch(&strict, &format!("https://upstream.test:{port}/")).await;
    assert_eq!(untrusted.error_type.as_deref(), Some("tls_error"));
}

#[actix_rt::test]
async fn any_internal_address_among_the_resolved_ones_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let port = server(None).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let resolver = table(
        &[
            ("plain.test", &["127.0.0.1"]),
            ("mixed.test", &["93.184.216.34", "10.1.2.3"]),
            ("rebind.test", &["93.184.216.34", "::ffff:169.254.169.254"]),
            ("inner.test", &["192.168.0.10"]),
        ],
        Arc::clone(&calls),
    );
    let p = proxy(dir.path(), None, resolver);
    let ok = fetch(&p, &format!("http://plain.test:{port}/")).await;
    assert!(ok.success && ok.body == "ok", "{ok:?}");
    for name in ["mixed.test", "rebind.test", "inner.test"] {
        let r = fetch(&p, &format!("http://{name}:{port}/")).await;
        assert_eq!(r.error_type.as_deref(), Some("security_blocked"), "{name}");
        assert_eq!(r.error.as_deref(), Some(BLOCKED));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "one resolution per request"
    );
    let r = fetch(&p, &format!("http://nowhere.test:{port}/")).await;
    assert_eq!(r.error_type.as_deref(), Some("dns_error"));
}

#[actix_rt::test]
async fn response_memory_is_bounded_and_released_with_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let port = serve_body(None, vec![b'a'; 600 << 10]).await;
    let resolver = table(&[], Arc::new(AtomicUsize::new(0)));
    // Room for one 600 KiB body (charged 1.8 MiB) in all: the pack's share is the total.
    let settings = EgressSettings {
        allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        buffer_bytes: Some(3 << 20),
        ..EgressSettings::default()
    };
    let p = build(dir.path(), &settings, resolver);
    let share = p.budget().for_pack();
    let url = format!("http://127.0.0.1:{port}/");
    let first = p.handle("p", get(&url), &share).await;
    assert!(matches!(&first.reply, Reply::Http(r) if r.success && r.body.len() == 600 << 10));
    assert_eq!(
        share.in_use(),
        3 * (600 << 10),
        "held until the answer is dropped"
    );
    // While the first answer is unwritten, a second one finds no room and fails at once.
    let second = p.handle("p", get(&url), &share).await;
    match &second.reply {
        Reply::Http(r) => {
            assert_eq!(r.error_type.as_deref(), Some("busy"), "{r:?}");
            assert!(r.error.as_deref().unwrap().contains("retry"), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(second.hold.bytes(), 0, "a refused response holds nothing");
    drop((first, second));
    assert_eq!(share.in_use(), 0);
    let third = p.handle("p", get(&url), &share).await;
    assert!(
        matches!(&third.reply, Reply::Http(r) if r.success),
        "{third:?}"
    );
}
