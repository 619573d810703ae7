//! Vocabulary and converters (contract §9, §16 "Vocab"): approved packs' vocab.txt merge into
//! groups; `kernel:vocab.normalize` and `kernel:vocab.convert` from any flow; converters run in
//! their pack's sandbox and never see the kernel's environment; no converter is a clear step
//! error; `GET /api/vocab`.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn vocab_merges_normalizes_and_converts_through_flows() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "units1", &[]);
    write(
        home.path(),
        "ecosystem/units1/backend/vocab.txt",
        "# temperatures\nCelsius, c, centigrade\nfahrenheit, F\n",
    );
    write(
        home.path(),
        "ecosystem/units1/backend/converters/celsius_to_fahrenheit.py",
        "import os\ndef convert(data, context=None):\n    return {'value': data * 9 / 5 + 32, 'secret': os.environ.get('RUMI_TEST_SECRET'), 'from': context['from_term'], 'env': sorted(k for k in os.environ if k.startswith('RUMI_API'))}\n",
    );
    make_pack(home.path(), "units2", &[]);
    write(
        home.path(),
        "ecosystem/units2/backend/vocab.txt",
        "degc, centigrade\nkm, kilometre\n",
    );
    write(
        home.path(),
        "user_data/shared/flows/vocab_use.flow.yaml",
        "flow_id: vocab_use\nphases: [m]\nsteps:\n  \
         - {id: n, phase: m, type: handler, input: {handler: \"kernel:vocab.normalize\", args: {term: \" DegC \"}}, output: n}\n  \
         - {id: u, phase: m, type: handler, input: {handler: \"kernel:vocab.normalize\", args: {term: \"Parsec\"}}, output: u}\n  \
         - {id: c, phase: m, type: handler, input: {handler: \"kernel:vocab.convert\", args: {from_term: \"centigrade\", to_term: \"F\", data: 100}}, output: conv}\n",
    );
    write(
        home.path(),
        "user_data/shared/flows/vocab_missing.flow.yaml",
        "flow_id: vocab_missing\nphases: [m]\nsteps:\n  \
         - {id: c, phase: m, type: handler, on_error: abort, input: {handler: \"kernel:vocab.convert\", args: {from_term: \"kilometre\", to_term: \"miles\", data: 1}}, output: conv}\n",
    );
    let k = Kernel::start(home.path(), &[("RUMI_TEST_SECRET", "vocab-secret-77")]);
    // Nothing before approval.
    let (_, v) = k.get("/api/vocab").await;
    assert_eq!(v["data"], json!({"groups": [], "converters": []}));
    k.approve("units1").await;
    k.approve("units2").await;
    let (status, v) = k.get("/api/vocab").await;
    assert_eq!(status, 200);
    let groups = v["data"]["groups"].as_array().unwrap();
    assert!(
        groups.contains(&json!(["celsius", "c", "centigrade", "degc"])),
        "{v}"
    );
    assert!(groups.contains(&json!(["fahrenheit", "f"])), "{v}");
    assert!(groups.contains(&json!(["km", "kilometre"])), "{v}");
    assert_eq!(
        v["data"]["converters"],
        json!([{"from": "celsius", "to": "fahrenheit", "pack_id": "units1"}])
    );

    // The CLI: the API's JSON with --json, a table otherwise.
    assert_eq!(
        cli::ok(cli::rumi(&k), &["vocab", "--json"]).json(),
        v["data"]
    );
    let table = cli::ok(cli::rumi(&k), &["vocab"]).stdout;
    assert!(
        table.contains("celsius") && table.contains("degc") && table.contains("units1"),
        "{table}"
    );

    let (status, run) = k.run("vocab_use", json!({})).await;
    assert_eq!(status, 200);
    let r = &run;
    assert_eq!(r["status"], "succeeded", "{run}");
    assert_eq!(
        r["result"]["n"],
        json!({"term": " DegC ", "preferred": "celsius"})
    );
    assert_eq!(
        r["result"]["u"],
        json!({"term": "Parsec", "preferred": "Parsec"})
    );
    let conv = &r["result"]["conv"];
    assert_eq!(conv["value"], json!(212.0), "{conv}");
    assert_eq!(conv["from"], "celsius");
    assert!(
        conv["secret"].is_null(),
        "the converter saw the kernel's environment: {conv}"
    );
    assert_eq!(conv["env"], json!([]));

    let (_, run) = k.run("vocab_missing", json!({})).await;
    assert_eq!(run["status"], "failed", "{run}");
    let err = step(&run, "c")["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("no approved pack offers a converter from \"km\" to \"miles\""),
        "{err}"
    );

    // Rejecting the pack that offers the converter removes it and its synonyms.
    k.post("/api/packs/units1/reject", json!({"reason": "test"}))
        .await;
    let (_, v) = k.get("/api/vocab").await;
    assert_eq!(v["data"]["converters"], json!([]));
    assert!(
        v["data"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!(["degc", "centigrade"])),
        "{v}"
    );
    let (_, run) = k.run("vocab_use", json!({})).await;
    assert_eq!(run["result"]["n"]["preferred"], "degc", "{run}");
    assert_eq!(step(&run, "c")["status"], "failed", "{run}");
    assert!(
        step(&run, "c")["error"]
            .as_str()
            .unwrap()
            .contains("from \"degc\" to \"f\""),
        "{run}"
    );
}

/// A vocab.txt changed after approval is not read as approved (the pack is `modified` and
/// leaves the vocabulary); a hostile vocab.txt (huge, a link) is refused, the kernel keeps going.
#[tokio::test]
async fn hostile_vocab_files_are_bounded() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    make_pack(home.path(), "huge", &[]);
    let big = "a,b\n".repeat(100_000); // 400 KB: over the cap
    write(home.path(), "ecosystem/huge/backend/vocab.txt", &big);
    make_pack(home.path(), "linked", &[]);
    std::os::unix::fs::symlink(
        "/etc/passwd",
        home.path().join("ecosystem/linked/backend/vocab.txt"),
    )
    .unwrap();
    make_pack(home.path(), "fine", &[]);
    write(home.path(), "ecosystem/fine/backend/vocab.txt", "x, y\n");
    let k = Kernel::start(home.path(), &[]);
    for p in ["huge", "linked", "fine"] {
        k.approve(p).await;
    }
    let (_, v) = k.get("/api/vocab").await;
    assert_eq!(v["data"]["groups"], json!([["x", "y"]]), "{v}");
    let (_, d) = k.get("/api/diagnostics").await;
    let text = d["data"]["pack_problems"].to_string();
    assert!(text.contains("larger than"), "{text}");
    assert!(text.contains("a link or unreadable"), "{text}");
}
