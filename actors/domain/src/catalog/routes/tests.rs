use super::pattern::{request_segments, shadowed_kernel_endpoint, Pattern};
use super::request::{inputs, reply, Request};
use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn file(pack: &str, v: Value) -> RoutesFile {
    RoutesFile {
        pack_id: pack.into(),
        file: format!("ecosystem/{pack}/backend/routes.json"),
        bytes: Ok(serde_json::to_vec(&v).unwrap()),
    }
}

fn one(method: &str, path: &str) -> Value {
    json!({"method": method, "path": path, "flow_id": "f"})
}

fn table(files: Vec<RoutesFile>) -> RouteTable {
    build_table(files, Vec::new(), &FlowTable::default())
}

fn refused_reason(v: Value) -> String {
    let t = table(vec![file("p", json!({"routes": [v]}))]);
    assert!(t.routes.is_empty(), "{t:?}");
    assert_eq!(t.refused.len(), 1, "{t:?}");
    t.refused[0].reason.clone()
}

#[test]
fn a_good_route_loads_with_its_fields() {
    let t = table(vec![file(
        "p",
        json!({"routes": [{"method": "get", "path": "/api/p/items/{id}", "flow_id": "f", "description": "d", "timeout": 5}]}),
    )]);
    assert!(t.refused.is_empty(), "{t:?}");
    let r = &t.routes[0];
    assert_eq!(
        (r.method, r.path.as_str(), r.flow_id.as_str()),
        (Method::Get, "/api/p/items/{id}", "f")
    );
    assert_eq!(
        (r.description.as_deref(), r.timeout),
        (Some("d"), Some(5.0))
    );
    match t.lookup("GET", "/api/p/items/a%20b") {
        Lookup::Found(r2, params) => {
            assert_eq!(r2.flow_id, "f");
            assert_eq!(params, vec![("id".to_string(), "a b".to_string())]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn each_bad_route_is_refused_with_a_reason() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"method": "TRACE", "path": "/api/p/x", "flow_id": "f"}),
            "method must be",
        ),
        (
            json!({"path": "/api/p/x", "flow_id": "f"}),
            "method is missing",
        ),
        (json!({"method": "GET", "flow_id": "f"}), "path is missing"),
        (one("GET", "/p/x"), "must start with /api/"),
        (one("GET", "/api/"), "at least one segment"),
        (one("GET", "/api/p//x"), "empty segment"),
        (one("GET", "/api/p/x/"), "empty segment"),
        (one("GET", "/api/p/.."), "not allowed"),
        (one("GET", "/api/p/a b"), "may hold only"),
        (one("GET", "/api/p/{Id}"), "parameter name"),
        (one("GET", "/api/p/{_raw_body}"), "parameter name"),
        (one("GET", "/api/p/{id"), "without closing"),
        (one("GET", "/api/p/{a}/{a}"), "appears twice"),
        (
            one("GET", &format!("/api/{}", "a/".repeat(20) + "a")),
            "segments",
        ),
        (one("GET", &format!("/api/{}", "a".repeat(300))), "bytes"),
        (
            json!({"method": "GET", "path": "/api/p/x"}),
            "flow_id is missing",
        ),
        (
            json!({"method": "GET", "path": "/api/p/x", "flow_id": "a b"}),
            "not a valid flow id",
        ),
        (
            json!({"method": "GET", "path": "/api/p/x", "flow_id": "f", "timeout": 0}),
            "timeout",
        ),
        (
            json!({"method": "GET", "path": "/api/p/x", "flow_id": "f", "timeout": 601}),
            "timeout",
        ),
        (
            json!({"method": "GET", "path": "/api/p/x", "flow_id": "f", "timeout": "5"}),
            "timeout",
        ),
        (
            json!({"method": "GET", "path": "/api/p/x", "flow_id": "f", "description": "x".repeat(1001)}),
            "description",
        ),
        (
            json!({"method": "GET", "path": "/api/p/x", "flow_id": "f", "flowid": "g"}),
            "unknown key",
        ),
        (json!("GET /api/p/x"), "must be an object"),
        (one("GET", "/api/health"), "kernel endpoint /api/health"),
        (one("POST", "/api/{x}"), "kernel endpoint"),
        (
            one("DELETE", "/api/flows/{a}/run"),
            "kernel endpoint /api/flows/{id}/run",
        ),
        (
            one("GET", "/api/routes/reload"),
            "kernel endpoint /api/routes/reload",
        ),
    ];
    for (v, want) in cases {
        let reason = refused_reason(v.clone());
        assert!(reason.contains(want), "{v}: {reason:?} lacks {want:?}");
    }
}

#[test]
fn a_refusal_names_the_pack_method_and_path() {
    let t = table(vec![file(
        "p",
        json!({"routes": [one("GET", "/api/health")]}),
    )]);
    assert_eq!(t.refused[0].pack_id, "p");
    assert_eq!(t.refused[0].method, "GET");
    assert_eq!(t.refused[0].path, "/api/health");
}

#[test]
fn a_file_that_is_not_json_refuses_the_file_and_nothing_else() {
    let bad = RoutesFile {
        pack_id: "bad".into(),
        file: "ecosystem/bad/backend/routes.json".into(),
        bytes: Ok(b"{not json".to_vec()),
    };
    let t = table(vec![
        bad,
        file("good", json!({"routes": [one("GET", "/api/good/x")]})),
    ]);
    assert_eq!(t.routes.len(), 1);
    assert_eq!(t.refused.len(), 1);
    assert!(t.refused[0].reason.contains("not valid JSON"));
    assert_eq!(t.refused[0].pack_id, "bad");
    for v in [json!([]), json!({"routes": 3})] {
        let t = table(vec![file("p", v)]);
        assert!(t.refused[0].reason.contains("\"routes\" array"));
    }
    let unread = RoutesFile {
        pack_id: "p".into(),
        file: "f".into(),
        bytes: Err("cannot be read".into()),
    };
    assert!(table(vec![unread]).refused[0]
        .reason
        .contains("cannot be read"));
}

#[test]
fn caps_on_file_size_and_route_count() {
    let big = RoutesFile {
        pack_id: "p".into(),
        file: "f".into(),
        bytes: Ok(vec![b' '; file::MAX_FILE_BYTES + 1]),
    };
    assert!(table(vec![big]).refused[0].reason.contains("limit"));
    let many: Vec<Value> = (0..150)
        .map(|i| one("GET", &format!("/api/p/r{i}")))
        .collect();
    let t = table(vec![file("p", json!({"routes": many}))]);
    assert_eq!(t.routes.len(), file::MAX_ROUTES_PER_PACK);
    assert!(t.refused[0].reason.contains("only the first 100"));
    // Refusals of one pack are bounded too.
    let bad: Vec<Value> = (0..100).map(|_| one("GET", "/bad")).collect();
    let t = table(vec![file("p", json!({"routes": bad}))]);
    assert_eq!(t.refused.len(), MAX_REFUSALS_PER_PACK + 1);
}

#[test]
fn a_clash_is_kept_by_the_earlier_pack_and_reported() {
    let t = table(vec![
        file("a", json!({"routes": [one("GET", "/api/shared/{id}")]})),
        file(
            "b",
            json!({"routes": [one("GET", "/api/shared/{key}"), one("POST", "/api/shared/{key}")]}),
        ),
    ]);
    assert_eq!(t.routes.len(), 2);
    assert_eq!(
        t.clashes,
        vec![Clash {
            method: Method::Get,
            path: "/api/shared/{id}".into(),
            kept_by: "a".into(),
            refused_for: "b".into()
        }]
    );
    match t.lookup("GET", "/api/shared/1") {
        Lookup::Found(r, _) => assert_eq!(r.pack_id, "a"),
        o => panic!("{o:?}"),
    }
    match t.lookup("POST", "/api/shared/1") {
        Lookup::Found(r, _) => assert_eq!(r.pack_id, "b"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_route_declared_twice_in_one_file_is_refused() {
    let t = table(vec![file(
        "a",
        json!({"routes": [one("GET", "/api/a/{x}"), one("GET", "/api/a/{y}")]}),
    )]);
    assert_eq!(t.routes.len(), 1);
    assert!(t.refused[0].reason.contains("twice"));
    assert!(t.clashes.is_empty());
}

#[test]
fn other_method_is_405_unknown_is_404_unapproved_is_403() {
    let unapproved = vec![file("late", json!({"routes": [one("GET", "/api/late/x")]}))];
    let t = build_table(
        vec![file("a", json!({"routes": [one("POST", "/api/a/x")]}))],
        unapproved,
        &FlowTable::default(),
    );
    assert!(
        matches!(t.lookup("GET", "/api/a/x"), Lookup::MethodNotAllowed { allowed } if allowed == vec![Method::Post])
    );
    assert!(matches!(t.lookup("GET", "/api/a/y"), Lookup::NotFound));
    assert!(matches!(
        t.lookup("get", "/api/a/x"),
        Lookup::MethodNotAllowed { .. }
    ));
    assert!(matches!(
        t.lookup("GET", "/api/late/x"),
        Lookup::Unapproved { pack_id: "late" }
    ));
    assert!(matches!(t.lookup("GET", "/other"), Lookup::NotFound));
    // An unapproved route that would shadow a kernel endpoint answers nothing.
    let t = build_table(
        Vec::new(),
        vec![file("late", json!({"routes": [one("GET", "/api/{x}")]}))],
        &FlowTable::default(),
    );
    assert!(matches!(t.lookup("GET", "/api/zzz"), Lookup::NotFound));
}

#[test]
fn an_unapproved_route_never_claims_a_path() {
    let t = build_table(
        vec![file("a", json!({"routes": [one("GET", "/api/x/{id}")]}))],
        vec![file("late", json!({"routes": [one("GET", "/api/x/y")]}))],
        &FlowTable::default(),
    );
    assert!(matches!(t.lookup("GET", "/api/x/y"), Lookup::Found(r, _) if r.pack_id == "a"));
    assert!(t.clashes.is_empty());
}

#[test]
fn every_kernel_endpoint_is_protected() {
    for (_, path) in pattern::KERNEL_ENDPOINTS {
        let p = Pattern::parse(
            &path
                .replace("{run_id}", "{x}")
                .replace("{candidate_key}", "{x}"),
        )
        .unwrap();
        assert!(shadowed_kernel_endpoint(&p).is_some(), "{path}");
    }
    assert!(shadowed_kernel_endpoint(&Pattern::parse("/api/packs/{id}/extra").unwrap()).is_none());
    assert!(shadowed_kernel_endpoint(&Pattern::parse("/api/mine/health").unwrap()).is_none());
}

#[test]
fn inputs_merge_query_body_and_params_in_that_order() {
    let req = Request {
        method: "POST",
        path: "/api/p/items/7",
        query: "tag=a&tag=b%20c&single=x+y&id=q&_method=forged",
        headers: vec![
            ("Authorization".into(), "Bearer secret".into()),
            ("X-Thing".into(), "1".into()),
            ("x-thing".into(), "2".into()),
            ("Content-Type".into(), "application/json".into()),
        ],
        content_type: Some("application/json; charset=utf-8"),
        body: br#"{"single": "from body", "id": "body", "n": 3}"#,
    };
    let m = inputs(&req, vec![("id".into(), "7".into())]).unwrap();
    assert_eq!(m["tag"], json!(["a", "b c"]));
    assert_eq!(m["single"], json!("from body"));
    assert_eq!(m["n"], json!(3));
    assert_eq!(m["id"], json!("7"));
    assert_eq!(m["_method"], json!("POST"));
    assert_eq!(m["_path"], json!("/api/p/items/7"));
    assert_eq!(
        m["_headers"],
        json!({"x-thing": "1, 2", "content-type": "application/json"})
    );
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(m["_raw_body"].as_str().unwrap())
            .unwrap(),
        req.body
    );
    let text = Request {
        content_type: Some("text/plain"),
        body: b"{not json",
        ..Request::default()
    };
    assert!(inputs(&text, vec![]).is_ok());
    let bad = Request {
        content_type: Some("application/json"),
        body: b"{not json",
        ..Request::default()
    };
    assert!(inputs(&bad, vec![]).unwrap_err().contains("malformed JSON"));
    let arr = Request {
        content_type: Some("application/vnd.x+json"),
        body: b"[1]",
        ..Request::default()
    };
    assert!(inputs(&arr, vec![]).unwrap_err().contains("object"));
}

#[test]
fn reply_takes_a_status_and_safe_headers_and_drops_the_rest() {
    let r = reply(Some(&json!({"status": 201, "headers": {
        "X-Custom": "yes", "Connection": "close", "Transfer-Encoding": "chunked",
        "content-length": "1", "Content-Type": "text/html", "Proxy-Authenticate": "x",
        "x-bad": "a\r\nb", "x-num": 3, "bad name": "v", "Access-Control-Allow-Origin": "*"
    }})));
    assert_eq!(r.status, Some(201));
    assert_eq!(r.headers, vec![("x-custom".to_string(), "yes".to_string())]);
    assert_eq!(r.refused.len(), 9, "{:?}", r.refused);
    for bad in [
        json!({"status": 700}),
        json!({"status": 199}),
        json!({"status": "201"}),
        json!({"status": 200.5}),
    ] {
        let r = reply(Some(&bad));
        assert_eq!(r.status, None);
        assert_eq!(r.refused.len(), 1);
    }
    assert_eq!(reply(None), request::Reply::default());
    assert_eq!(reply(Some(&json!("x"))).refused.len(), 1);
    let many: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("x-{i}"), json!("v"))).collect();
    let r = reply(Some(&json!({"headers": many})));
    assert_eq!(r.headers.len(), request::MAX_REPLY_HEADERS);
}

// ---- properties ------------------------------------------------------------------------------

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
        2 => prop::sample::select(vec!["{x}", "{y}"]).prop_map(String::from),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..4).prop_map(|s| {
        let mut seen = std::collections::HashSet::new();
        // distinct parameter names within one path
        let s: Vec<String> = s
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                if x.starts_with('{') {
                    format!("{{p{i}}}")
                } else {
                    x
                }
            })
            .filter(|x| seen.insert(x.clone()) || !x.starts_with('{'))
            .collect();
        format!("/api/{}", s.join("/"))
    })
}

fn decls() -> impl Strategy<Value = Vec<(usize, String, String)>> {
    prop::collection::vec(
        (
            0usize..3,
            prop::sample::select(vec!["GET", "POST"]).prop_map(String::from),
            path(),
        ),
        0..12,
    )
}

fn files_of(decls: &[(usize, String, String)]) -> Vec<RoutesFile> {
    (0..3)
        .map(|p| {
            let routes: Vec<Value> = decls
                .iter()
                .filter(|(q, _, _)| *q == p)
                .map(|(_, m, path)| one(m, path))
                .collect();
            file(&format!("pack{p}"), json!({"routes": routes}))
        })
        .collect()
}

fn request_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "z"]), 1..4)
        .prop_map(|s| format!("/api/{}", s.join("/")))
}

proptest! {
    /// A literal beats a parameter: the route found is at least as specific as every other
    /// route of the method that matches, and no other matching route is as specific (no
    /// ambiguity).
    #[test]
    fn the_most_specific_route_wins_and_is_unique(d in decls(), req in request_path(), m in prop::sample::select(vec!["GET", "POST"])) {
        let t = table(files_of(&d));
        let segs = request_segments(&req).unwrap();
        let matching: Vec<&Route> = t.routes.iter()
            .filter(|r| r.method.as_str() == m && r.pattern.matches(&segs).is_some())
            .collect();
        match t.lookup(m, &req) {
            Lookup::Found(r, _) => {
                for other in &matching {
                    prop_assert!(other.pattern.specificity() <= r.pattern.specificity());
                    if !std::ptr::eq(*other, r) {
                        prop_assert!(other.pattern.specificity() != r.pattern.specificity());
                    }
                }
            }
            _ => prop_assert!(matching.is_empty()),
        }
    }

    /// Which route serves a request does not depend on the order of routes within the files:
    /// only load order (the order of the packs) decides clashes.
    #[test]
    fn matching_is_independent_of_file_order(d in decls(), req in request_path(), m in prop::sample::select(vec!["GET", "POST"])) {
        let mut shuffled = d.clone();
        shuffled.reverse();
        // Routes declared twice within one pack depend on the file's order by design (the
        // first is kept): leave such sets out.
        let dup = d.iter().enumerate().any(|(i, (p, m1, a))| d.iter().skip(i + 1).any(|(q, m2, b)| p == q && m1 == m2 && Pattern::parse(a).unwrap().equivalent(&Pattern::parse(b).unwrap())));
        prop_assume!(!dup);
        let a = table(files_of(&d));
        let b = table(files_of(&shuffled));
        let pick = |t: &RouteTable| match t.lookup(m, &req) {
            Lookup::Found(r, p) => Some((r.pack_id.clone(), r.path.clone(), p)),
            _ => None,
        };
        prop_assert_eq!(pick(&a), pick(&b));
        prop_assert_eq!(a.clashes.len(), b.clashes.len());
    }

    /// No two routes of one method in the table are equivalent; every clash names the earlier
    /// pack as the keeper.
    #[test]
    fn the_table_never_holds_equivalent_routes(d in decls()) {
        let t = table(files_of(&d));
        for (i, a) in t.routes.iter().enumerate() {
            for b in &t.routes[i + 1..] {
                prop_assert!(!(a.method == b.method && a.pattern.equivalent(&b.pattern)));
            }
        }
        for c in &t.clashes {
            prop_assert!(c.kept_by < c.refused_for);
        }
    }

    /// Any bytes as a routes.json: never a panic, and nothing beyond the caps.
    #[test]
    fn any_file_is_handled(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let t = table(vec![RoutesFile { pack_id: "p".into(), file: "f".into(), bytes: Ok(bytes) }]);
        prop_assert!(t.routes.len() <= file::MAX_ROUTES_PER_PACK);
    }

    /// Percent-decoding never panics and inverts encoding of unreserved text.
    #[test]
    fn decoding_is_total(s in ".{0,40}") {
        let _ = pattern::percent_decode(&s);
    }
}

#[test]
fn the_callers_underscore_keys_and_other_credentials_never_reach_the_flow() {
    let req = Request {
        method: "POST",
        path: "/api/p/x",
        query: "_http=forged&_raw_body=x&ok=1",
        headers: vec![
            ("Proxy-Authorization".into(), "Basic abc".into()),
            ("Cookie".into(), "session=other-app".into()),
            ("X-Kept".into(), "yes".into()),
        ],
        content_type: Some("application/json"),
        body: br#"{"_http": {"status": 302, "headers": {"location": "https://evil.example/"}}, "_private": 1, "fine": 2}"#,
    };
    let got = inputs(&req, vec![]).unwrap();
    assert!(
        got.get("_http").is_none() && got.get("_private").is_none(),
        "{got:?}"
    );
    assert_eq!(got["ok"], "1");
    assert_eq!(got["fine"], 2);
    assert_eq!(got["_raw_body"], base64_of(req.body));
    let headers = got["_headers"].as_object().unwrap();
    assert!(!headers.contains_key("proxy-authorization") && !headers.contains_key("cookie"));
    assert_eq!(headers["x-kept"], "yes");
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn statuses_without_a_body_are_refused() {
    for s in [204, 205, 304] {
        let r = reply(Some(&json!({"status": s})));
        assert_eq!(r.status, None, "{s}");
        assert_eq!(r.refused.len(), 1, "{s}");
    }
    assert_eq!(reply(Some(&json!({"status": 206}))).status, Some(206));
}
