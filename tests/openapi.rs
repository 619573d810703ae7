//! `GET /api/openapi.json` against what the kernel really serves: the document describes exactly
//! the routes of the route table (`src/http/table.rs`, included below, is the list actix
//! registers), every operation it describes is served, and real answers match the schemas it
//! declares (`openapi_check.py`, with jsonschema and openapi-spec-validator).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

// The route table itself: `served()` lists every (method, path) actix serves.
include!("../src/http/table.rs");

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The tags an operation may carry.
const TAGS: &[&str] = &[
    "pip",
    "packs",
    "routes",
    "flows",
    "runs",
    "schedules",
    "network",
    "audit",
    "system",
    "docker",
    "capabilities",
    "secrets",
    "stores",
    "skills",
];

/// The endpoints that need no token.
const OPEN: [(&str, &str); 2] = [("GET", "/api/health"), ("GET", "/api/openapi.json")];

/// (METHOD, path) of every operation of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// `template` with every `{param}` replaced by `value`.
fn fill(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str(&rest[..open]);
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out + rest
}

async fn fetch_document(k: &Kernel) -> Value {
    let resp = reqwest::get(k.url("/api/openapi.json")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the document needs no token");
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("application/json"), "{ctype}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_document_describes_exactly_what_is_served() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let k = Kernel::start(home.path(), &[]);
    let doc = fetch_document(&k).await;
    assert_eq!(doc["openapi"], "3.1.0");

    // Every (method, path) actix serves is an operation of the document, and nothing else is.
    // A tail parameter (`{path:.*}`, slashes allowed) is `{path}` in the document.
    let served: BTreeSet<(String, String)> = served()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.replace(":.*}", "}")))
        .collect();
    let documented = operations(&doc);
    let undescribed: Vec<_> = served.difference(&documented).collect();
    assert!(
        undescribed.is_empty(),
        "served but not in the document (add #[utoipa::path] and list it in ApiDoc): \
         {undescribed:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "in the document but not in the route table: {unserved:?}"
    );

    // Every documented operation is served over HTTP: not 405, not the generic 404.
    for (method, path) in &documented {
        let url = fill(path, "openapi_probe");
        let body = (method != "GET").then(|| json!({}));
        let (status, v) = k.req(method, &url, body).await;
        assert_ne!(status, 405, "{method} {url}: {v}");
        assert!(
            !(status == 404 && v["error"] == "no such endpoint"),
            "{method} {url} is documented but not served: {v}"
        );
    }
    // (The probe tells an unserved route apart.)
    let (status, v) = k.get("/api/openapi_probe").await;
    assert_eq!((status, &v["error"]), (404, &json!("no such endpoint")));

    // Every operation: an id, a one-line summary, one known tag, a 200, the bearer scheme and a
    // 401 unless it is open; every error answer is the envelope.
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    let mut ids = BTreeSet::new();
    for (method, path) in &documented {
        let op = &doc["paths"][path][method.to_lowercase()];
        let name = format!("{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_default().to_string();
        assert!(
            !id.is_empty() && ids.insert(id),
            "{name}: missing or duplicate operationId"
        );
        let summary = op["summary"].as_str().unwrap_or_default();
        assert!(
            !summary.is_empty() && !summary.contains('\n'),
            "{name}: summary {summary:?}"
        );
        let tags = op["tags"].as_array().cloned().unwrap_or_default();
        assert!(
            tags.len() == 1 && TAGS.contains(&tags[0].as_str().unwrap_or_default()),
            "{name}: tags {tags:?}"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("200"), "{name}: no 200");
        let open = OPEN.contains(&(method.as_str(), path.as_str()));
        if open {
            assert!(op.get("security").is_none(), "{name} needs no token");
            assert!(!responses.contains_key("401"), "{name} is never 401");
        } else {
            assert_eq!(op["security"], json!([{"bearer": []}]), "{name}");
            assert!(responses.contains_key("401"), "{name}: no 401");
        }
        for (status, r) in responses {
            let schema = &r["content"]["application/json"]["schema"];
            if !status.starts_with('2') {
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{name} {status}"
                );
            } else if path == "/api/skills/runs/{run_id}/artifacts/{path}" {
                // An artifact is served as its raw bytes, no envelope (skill contract §15).
                assert!(
                    r["content"]["application/octet-stream"].is_object(),
                    "{name}: {r}"
                );
            } else if path != "/api/openapi.json" {
                let target = schema["$ref"].as_str().unwrap_or_default();
                assert!(
                    target.starts_with("#/components/schemas/Envelope_"),
                    "{name}: 200 is not the envelope: {schema}"
                );
            }
        }
    }
}

/// The Python packages the usability check needs: skipped locally when missing, a failure in CI.
fn openapi_tools_available() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import jsonschema, openapi_spec_validator, referencing",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "the Python packages jsonschema and openapi-spec-validator are required in CI \
                 (.ci/run installs them with pip)"
            );
        }
        eprintln!(
            "SKIPPED: the Python packages jsonschema and openapi-spec-validator are not \
             installed (pip install jsonschema openapi-spec-validator)"
        );
    }
    ok
}

/// A flow with `set`, `handler` and block steps that is not fail-soft: its run fails while
/// my_pack is not approved.
const STRICT_FLOW: &str = r#"
flow_id: openapi_strict
phases: [prepare, main]
defaults: {fail_soft: false}
steps:
  - id: remember
    phase: prepare
    type: set
    input: {key: who, value: "${ctx.name}"}
  - id: nothing
    phase: prepare
    type: handler
    input: {handler: "kernel:noop"}
  - id: call_hello
    phase: main
    type: python_file_call
    owner_pack: my_pack
    file: blocks/hello.py
    input: {name: "${ctx.who}"}
    output: greeting
"#;

#[tokio::test]
async fn real_answers_match_the_schemas_the_document_declares() {
    if !python_available() || !openapi_tools_available() {
        return;
    }
    let home = fresh_home();
    write(
        home.path(),
        "user_data/shared/flows/openapi_strict.flow.yaml",
        STRICT_FLOW,
    );
    // One modifier applied and one skipped, so `modifiers_applied` and `placed_by` are checked
    // against their schemas with values in them.
    write(
        home.path(),
        "user_data/shared/flows/modifiers/openapi_applied.modifier.yaml",
        "modifier_id: openapi_applied\ntarget_flow_id: openapi_strict\nphase: prepare\naction: inject_after\ntarget_step_id: remember\nstep: {id: placed, type: set, input: {key: placed, value: 1}}\n",
    );
    write(
        home.path(),
        "user_data/shared/flows/modifiers/openapi_skipped.modifier.yaml",
        "modifier_id: openapi_skipped\ntarget_flow_id: \"openapi_*\"\nphase: main\naction: remove\ntarget_step_id: no_such_step\n",
    );
    // Schedules of each shape for GET /api/schedules: a cron (it never fires during the check),
    // a raised interval and an invalid one.
    for (id, schedule) in [
        (
            "openapi_cron",
            r#"{cron: "0 0 1 1 *", timezone: "Asia/Tokyo"}"#,
        ),
        ("openapi_interval", "{interval: 3600}"),
        ("openapi_bad", "{every: 3}"),
    ] {
        write(
            home.path(),
            &format!("user_data/shared/flows/{id}.flow.yaml"),
            &format!(
                "flow_id: {id}\nschedule: {schedule}\nphases: [m]\nsteps:\n  - id: a\n    \
                 phase: m\n    type: set\n    input: {{key: x, value: 1}}\n"
            ),
        );
    }
    // Lib, a component, vocab and a converter, for their answers' schemas.
    for (file, text) in [
        (
            "lib/install.py",
            "def run(context):\n    return {'ok': 1}\n",
        ),
        ("components/c1/manifest.json", r#"{"component_id": "c1"}"#),
        (
            "components/c1/setup.py",
            "def setup(context=None):\n    return {'ready': 1}\n",
        ),
        ("vocab.txt", "hello, hi\n"),
        (
            "converters/hi_to_bye.py",
            "def convert(data, context=None):\n    return data\n",
        ),
    ] {
        write(
            home.path(),
            &format!("ecosystem/my_pack/backend/{file}"),
            text,
        );
    }
    // A pip candidate and a refused lock line, for the pip endpoints and the diagnostics.
    write(
        home.path(),
        "ecosystem/openapi_pip/backend/ecosystem.json",
        r#"{"pack_id":"openapi_pip","pack_identity":"test:openapi_pip"}"#,
    );
    write(
        home.path(),
        "ecosystem/openapi_pip/requirements.lock",
        "six[x]==1.16.0\n",
    );
    write(
        home.path(),
        "ecosystem/openapi_pip/backend/requirements.lock",
        "six>=1\n",
    );
    // The shipped skills and their recorded exchange, for the skill endpoints.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(
        &repo.join("user_data/skills"),
        &home.path().join("user_data/skills"),
    );
    copy_dir(
        &repo.join("user_data/replays"),
        &home.path().join("user_data/replays"),
    );
    let k = Kernel::start(
        home.path(),
        &[
            ("RUMI_LLM_PROVIDER", "replay"),
            ("RUMI_LLM_REPLAY", "user_data/replays/release-notes.json"),
        ],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi_check.py");
    let out = tokio::task::spawn_blocking({
        let base = k.base.clone();
        move || {
            Command::new("python3")
                .arg(script)
                .arg(base)
                .arg(TOKEN)
                .output()
                .expect("run python3")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "openapi_check.py failed:\n{stdout}\n{stderr}"
    );
}
