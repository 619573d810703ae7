//! The model providers against the scripted model server (both flavors): tool-call round trips,
//! usage (reported and estimated), retries, deadlines, key scrubbing, and the replay provider.

#[path = "../../tests/common/llm_server.rs"]
mod llm_server;

use llm_server::{Flavor, Move, Policy, ScriptedModel, Turn};
use rumi_actors::capability::secrets::SecretValue;
use rumi_actors::skills::llm::{
    ChatMessage, ChatRequest, LlmClient, LlmConfig, LlmError, Provider, ToolSpec,
};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

const KEY: &str = "sk-test-SECRET123";

fn config(flavor: Flavor, server: &ScriptedModel, key: Option<&str>) -> LlmConfig {
    LlmConfig {
        provider: match flavor {
            Flavor::OpenAi => Provider::OpenAi,
            Flavor::Anthropic => Provider::Anthropic,
        },
        base_url: server.base_url(),
        model: "test-model".into(),
        api_key: key.map(|k| SecretValue::new(k.to_string())),
        replay_file: None,
        call_timeout: Duration::from_secs(10),
        max_retries: 4,
    }
}

fn tools() -> Vec<ToolSpec> {
    let path = json!({"type": "object", "properties": {"path": {"type": "string"}}});
    vec![
        ToolSpec {
            name: "read_ref",
            description: "Read a reference file",
            parameters: path.clone(),
        },
        ToolSpec {
            name: "list_files",
            description: "List files",
            parameters: json!({"type": "object", "properties": {}}),
        },
        ToolSpec {
            name: "finish",
            description: "Finish the run",
            parameters: json!({"type": "object", "properties": {"summary": {"type": "string"}}}),
        },
    ]
}

fn request(flavor: Flavor, messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        system: "You run the skill demo.".into(),
        messages,
        tools: tools(),
        seed: (flavor == Flavor::OpenAi).then_some(42),
        max_tokens: 1024,
    }
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn two_calls_policy() -> Policy {
    Policy {
        supervisor: vec![
            Move::Turn(Turn::calls(&[
                ("read_ref", json!({"path": "refs/a.md"})),
                ("list_files", json!({})),
            ])),
            Move::IfLastError {
                error_type: "not_found".into(),
                then: Turn::text("missing"),
                otherwise: Turn::calls(&[("finish", json!({"summary": "ok"}))]),
            },
        ],
        ..Policy::default()
    }
}

async fn round_trip(flavor: Flavor) {
    let server = ScriptedModel::start(flavor, two_calls_policy());
    let client = LlmClient::new(config(flavor, &server, Some(KEY))).unwrap();
    let mut messages = vec![ChatMessage::User("Write the report".into())];
    let first = client
        .chat(&request(flavor, messages.clone()), soon(10_000))
        .await
        .unwrap();
    let prefix = if flavor == Flavor::OpenAi {
        "call"
    } else {
        "toolu"
    };
    assert_eq!(first.text, None);
    assert_eq!(first.tool_calls.len(), 2);
    assert_eq!(first.tool_calls[0].id, format!("{prefix}_0_0"));
    assert_eq!(first.tool_calls[0].name, "read_ref");
    assert_eq!(first.tool_calls[0].arguments, json!({"path": "refs/a.md"}));
    assert_eq!(first.tool_calls[1].id, format!("{prefix}_0_1"));
    assert_eq!(first.tool_calls[1].arguments, json!({}));
    // Usage is what the server measured of the request the client really sent.
    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].answered_status, 200);
    assert!(!first.usage_estimated);
    assert_eq!(first.usage.input_tokens, (sent[0].input_bytes() / 4) as u64);
    assert!(first.usage.output_tokens > 0);
    assert_eq!(sent[0].system_prompt(), "You run the skill demo.");
    assert_eq!(sent[0].tool_names(), ["read_ref", "list_files", "finish"]);
    assert!(!sent[0].is_sub_agent());

    let results = [
        json!({"ok": true, "path": "refs/a.md", "content": "A"}),
        json!({"ok": true, "files": ["SKILL.md"]}),
    ];
    messages.push(ChatMessage::Assistant {
        text: first.text.clone(),
        tool_calls: first.tool_calls.clone(),
    });
    for (call, result) in first.tool_calls.iter().zip(&results) {
        messages.push(ChatMessage::ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: result.to_string(),
        });
    }
    let second = client
        .chat(&request(flavor, messages), soon(10_000))
        .await
        .unwrap();
    let sent = server.requests();
    assert_eq!(sent[1].answered_status, 200, "{:?}", sent[1].body);
    assert_eq!(sent[1].tool_results(), results);
    // The last result was not a not_found error: the `otherwise` branch.
    assert_eq!(second.tool_calls.len(), 1);
    assert_eq!(second.tool_calls[0].name, "finish");
    assert_eq!(second.tool_calls[0].id, format!("{prefix}_1_0"));
    let body = &sent[1].body;
    match flavor {
        Flavor::OpenAi => {
            let m = body["messages"].as_array().unwrap();
            assert_eq!(m.len(), 5);
            assert_eq!(
                m[2]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(|a| serde_json::from_str::<Value>(a).unwrap()),
                Some(json!({"path": "refs/a.md"}))
            );
            assert_eq!(m[3]["role"], "tool");
            assert_eq!(m[3]["tool_call_id"], "call_0_0");
            assert_eq!(m[4]["tool_call_id"], "call_0_1");
            assert_eq!(body["seed"], 42);
            assert_eq!(body["temperature"], 0);
            assert_eq!(
                sent[1].header("authorization"),
                Some(&*format!("Bearer {KEY}"))
            );
        }
        Flavor::Anthropic => {
            let m = body["messages"].as_array().unwrap();
            // user, assistant (two tool_use), ONE user message with both results.
            assert_eq!(m.len(), 3);
            assert_eq!(m[2]["role"], "user");
            assert_eq!(m[2]["content"].as_array().unwrap().len(), 2);
            assert_eq!(m[2]["content"][1]["tool_use_id"], "toolu_0_1");
            assert!(body.get("seed").is_none());
            assert_eq!(sent[1].header("x-api-key"), Some(KEY));
            assert_eq!(sent[1].header("anthropic-version"), Some("2023-06-01"));
        }
    }
}

#[tokio::test]
async fn two_tool_calls_round_trip_openai() {
    round_trip(Flavor::OpenAi).await;
}

#[tokio::test]
async fn two_tool_calls_round_trip_anthropic() {
    round_trip(Flavor::Anthropic).await;
}

#[tokio::test]
async fn conditional_move_follows_the_last_error() {
    for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
        let server = ScriptedModel::start(flavor, two_calls_policy());
        let client = LlmClient::new(config(flavor, &server, None)).unwrap();
        let mut messages = vec![ChatMessage::User("go".into())];
        let first = client
            .chat(&request(flavor, messages.clone()), soon(10_000))
            .await
            .unwrap();
        messages.push(ChatMessage::Assistant {
            text: None,
            tool_calls: first.tool_calls.clone(),
        });
        for c in &first.tool_calls {
            messages.push(ChatMessage::ToolResult {
                call_id: c.id.clone(),
                name: c.name.clone(),
                content: json!({"ok": false, "error": "no such file", "error_type": "not_found"})
                    .to_string(),
            });
        }
        let second = client
            .chat(&request(flavor, messages), soon(10_000))
            .await
            .unwrap();
        assert_eq!(second.text.as_deref(), Some("missing"));
        assert!(second.tool_calls.is_empty());
        // No key configured: no credential header at all.
        let sent = server.requests();
        assert!(sent
            .iter()
            .all(|r| r.header("authorization").is_none() && r.header("x-api-key").is_none()));
    }
}

#[tokio::test]
async fn missing_usage_is_estimated_from_bytes() {
    for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
        let policy = Policy {
            report_usage: false,
            ..two_calls_policy()
        };
        let server = ScriptedModel::start(flavor, policy);
        let client = LlmClient::new(config(flavor, &server, None)).unwrap();
        let reply = client
            .chat(
                &request(flavor, vec![ChatMessage::User("go".into())]),
                soon(10_000),
            )
            .await
            .unwrap();
        assert!(reply.usage_estimated);
        let sent = server.requests();
        assert_eq!(reply.usage.input_tokens, (sent[0].input_bytes() / 4) as u64);
        assert!(reply.usage.output_tokens > 0);
    }
}

#[tokio::test]
async fn tool_less_request_gets_the_reflect_text() {
    for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
        let policy = Policy {
            reflect_text: "lesson: read first".into(),
            ..two_calls_policy()
        };
        let server = ScriptedModel::start(flavor, policy);
        let client = LlmClient::new(config(flavor, &server, None)).unwrap();
        let mut req = request(flavor, vec![ChatMessage::User("reflect".into())]);
        req.tools.clear();
        let reply = client.chat(&req, soon(10_000)).await.unwrap();
        assert_eq!(reply.text.as_deref(), Some("lesson: read first"));
        let sent = server.requests();
        assert_eq!(sent[0].answered_status, 200);
        assert!(
            sent[0].body.get("tools").is_none(),
            "empty tool lists are omitted"
        );
    }
}

#[tokio::test]
async fn retries_429_then_500_then_answers() {
    for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
        let policy = Policy {
            faults: vec![(0, 429), (1, 500)],
            ..two_calls_policy()
        };
        let server = ScriptedModel::start(flavor, policy);
        let client = LlmClient::new(config(flavor, &server, Some(KEY))).unwrap();
        let reply = client
            .chat(
                &request(flavor, vec![ChatMessage::User("go".into())]),
                soon(10_000),
            )
            .await
            .unwrap();
        assert_eq!(reply.tool_calls.len(), 2);
        let statuses: Vec<u16> = server
            .requests()
            .iter()
            .map(|r| r.answered_status)
            .collect();
        assert_eq!(statuses, [429, 500, 200]);
    }
}

#[tokio::test]
async fn always_500_fails_with_http_within_the_deadline() {
    for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
        let policy = Policy {
            faults: (0..50).map(|n| (n, 500)).collect(),
            ..two_calls_policy()
        };
        let server = ScriptedModel::start(flavor, policy);
        let client = LlmClient::new(config(flavor, &server, None)).unwrap();
        let start = Instant::now();
        // Backoffs 250, 500, 1000 ms: the next wait (2 s) would outlive the deadline, so the last
        // HTTP error comes back at ~1.75 s, before the deadline.
        let deadline = start + Duration::from_millis(3000);
        let err = client
            .chat(
                &request(flavor, vec![ChatMessage::User("go".into())]),
                deadline,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Http { status: 500, .. }), "{err:?}");
        assert!(Instant::now() <= deadline + Duration::from_millis(500));
        assert!(server.requests().len() >= 2, "it retried");
    }
}

#[tokio::test]
async fn retries_stop_after_max_retries() {
    let policy = Policy {
        faults: (0..50).map(|n| (n, 503)).collect(),
        ..two_calls_policy()
    };
    let server = ScriptedModel::start(Flavor::OpenAi, policy);
    let mut cfg = config(Flavor::OpenAi, &server, None);
    cfg.max_retries = 1;
    let client = LlmClient::new(cfg).unwrap();
    let err = client
        .chat(
            &request(Flavor::OpenAi, vec![ChatMessage::User("go".into())]),
            soon(10_000),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Http { status: 503, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    // A malformed request (temperature is checked; here the seed is missing) answers 400 once.
    let server = ScriptedModel::start(Flavor::OpenAi, two_calls_policy());
    let client = LlmClient::new(config(Flavor::OpenAi, &server, None)).unwrap();
    let mut req = request(Flavor::OpenAi, vec![ChatMessage::User("go".into())]);
    req.seed = None;
    let err = client.chat(&req, soon(10_000)).await.unwrap_err();
    match err {
        LlmError::Http {
            status: 400,
            message,
        } => assert!(message.contains("seed"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_slow_model_past_the_deadline_times_out_fast() {
    for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
        let policy = Policy {
            delay: Duration::from_secs(5),
            ..two_calls_policy()
        };
        let server = ScriptedModel::start(flavor, policy);
        let client = LlmClient::new(config(flavor, &server, None)).unwrap();
        let start = Instant::now();
        let err = client
            .chat(
                &request(flavor, vec![ChatMessage::User("go".into())]),
                soon(300),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Timeout), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
    }
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error_within_the_deadline() {
    // A port nothing listens on: bind, note, drop.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = LlmConfig {
        provider: Provider::OpenAi,
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "m".into(),
        api_key: Some(SecretValue::new(KEY.into())),
        replay_file: None,
        call_timeout: Duration::from_secs(5),
        max_retries: 4,
    };
    let client = LlmClient::new(cfg).unwrap();
    let start = Instant::now();
    let err = client
        .chat(
            &request(Flavor::OpenAi, vec![ChatMessage::User("go".into())]),
            soon(1000),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Transport(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert!(!format!("{err} {err:?}").contains("SECRET123"));
}

#[tokio::test]
async fn the_key_never_appears_in_errors_or_debug() {
    for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
        let policy = Policy {
            faults: (0..50).map(|n| (n, 500)).collect(),
            ..two_calls_policy()
        };
        let server = ScriptedModel::start(flavor, policy);
        let cfg = config(flavor, &server, Some(KEY));
        assert!(!format!("{cfg:?}").contains("SECRET123"));
        let mut cfg = cfg;
        cfg.max_retries = 0;
        let client = LlmClient::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains("SECRET123"));
        let err = client
            .chat(
                &request(flavor, vec![ChatMessage::User("go".into())]),
                soon(10_000),
            )
            .await
            .unwrap_err();
        // The server did echo the key in its body…
        let sent = server.requests();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].headers.iter().any(|(_, v)| v.contains(KEY)));
        // …and the client kept the message without it.
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRET123"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(matches!(err, LlmError::Http { status: 500, .. }));
    }
}

#[tokio::test]
async fn sub_agent_conversations_follow_their_own_script() {
    let mut policy = two_calls_policy();
    policy.agents.insert(
        "fs_read".into(),
        vec![Move::Turn(Turn::calls(&[(
            "done",
            json!({"result": {"ok": true}}),
        )]))],
    );
    let server = ScriptedModel::start(Flavor::OpenAi, policy);
    let client = LlmClient::new(config(Flavor::OpenAi, &server, None)).unwrap();
    let mut req = request(
        Flavor::OpenAi,
        vec![ChatMessage::User("read refs/a.md".into())],
    );
    req.tools = vec![
        ToolSpec {
            name: "fs_read",
            description: "read",
            parameters: json!({"type": "object"}),
        },
        ToolSpec {
            name: "done",
            description: "end",
            parameters: json!({"type": "object"}),
        },
    ];
    let reply = client.chat(&req, soon(10_000)).await.unwrap();
    assert_eq!(reply.tool_calls[0].name, "done");
    assert!(server.requests()[0].is_sub_agent());
}

#[tokio::test]
async fn replay_plays_in_order_and_exhausts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.json");
    std::fs::write(
        &file,
        json!({"provider": "replay", "skill_id": "demo", "note": "two turns",
        "turns": [
          {"tool_calls": [{"id": "c1", "name": "read_skill_md", "arguments": {}}],
           "usage": {"input_tokens": 100, "output_tokens": 7}},
          {"text": "reflected"}
        ]})
        .to_string(),
    )
    .unwrap();
    let client = LlmClient::new(LlmConfig {
        provider: Provider::Replay,
        base_url: String::new(),
        model: "replay".into(),
        api_key: None,
        replay_file: Some(file),
        call_timeout: Duration::from_secs(1),
        max_retries: 0,
    })
    .unwrap();
    assert_eq!(client.provider(), Provider::Replay);
    let req = request(Flavor::OpenAi, vec![ChatMessage::User("go".into())]);
    let first = client.chat(&req, soon(1000)).await.unwrap();
    assert_eq!(first.tool_calls[0].id, "c1");
    assert_eq!(first.tool_calls[0].name, "read_skill_md");
    assert_eq!(first.usage.input_tokens, 100);
    assert!(!first.usage_estimated);
    // A tool-less request (the micro-reflect) consumes a turn too.
    let mut reflect = req.clone();
    reflect.tools.clear();
    let second = client.chat(&reflect, soon(1000)).await.unwrap();
    assert_eq!(second.text.as_deref(), Some("reflected"));
    assert!(second.usage_estimated);
    assert!(second.usage.input_tokens > 0);
    assert!(matches!(
        client.chat(&req, soon(1000)).await,
        Err(LlmError::ReplayExhausted)
    ));
}

#[test]
fn replay_files_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let replay = |text: &str| {
        let file = dir.path().join("r.json");
        std::fs::write(&file, text).unwrap();
        LlmClient::new(LlmConfig {
            provider: Provider::Replay,
            base_url: String::new(),
            model: "replay".into(),
            api_key: None,
            replay_file: Some(file),
            call_timeout: Duration::from_secs(1),
            max_retries: 0,
        })
    };
    assert!(replay("{").unwrap_err().contains("not a recording"));
    assert!(replay(r#"{"provider": "openai", "turns": []}"#)
        .unwrap_err()
        .contains("\"replay\""));
    let many: Vec<Value> = (0..33)
        .map(|i| json!({"id": format!("c{i}"), "name": "x"}))
        .collect();
    let err = replay(&json!({"turns": [{"tool_calls": many}]}).to_string()).unwrap_err();
    assert!(err.contains("at most 32"), "{err}");
    let big = format!(
        "{{\"note\": \"{}\", \"turns\": []}}",
        "x".repeat(4 * 1024 * 1024)
    );
    assert!(replay(&big).unwrap_err().contains("4 MiB"));
    let err = LlmClient::new(LlmConfig {
        provider: Provider::Replay,
        base_url: String::new(),
        model: "replay".into(),
        api_key: None,
        replay_file: Some(dir.path().join("missing.json")),
        call_timeout: Duration::from_secs(1),
        max_retries: 0,
    })
    .unwrap_err();
    assert!(
        !err.contains(&*dir.path().to_string_lossy()),
        "no host path: {err}"
    );
}

#[tokio::test]
async fn each_attempt_stops_at_the_call_timeout_and_is_retried() {
    let policy = Policy {
        delay: Duration::from_secs(5),
        ..two_calls_policy()
    };
    let server = ScriptedModel::start(Flavor::OpenAi, policy);
    let mut cfg = config(Flavor::OpenAi, &server, None);
    cfg.call_timeout = Duration::from_millis(200);
    cfg.max_retries = 1;
    let client = LlmClient::new(cfg).unwrap();
    let start = Instant::now();
    let err = client
        .chat(
            &request(Flavor::OpenAi, vec![ChatMessage::User("go".into())]),
            soon(10_000),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Timeout), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The second attempt reached the server (polled: the server records on its own thread).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while server.requests().len() < 2 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_reply_over_8_mib_is_refused() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        // Read the request head and body, then claim and send 9 MiB.
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let size = 9 * 1024 * 1024;
        let _ =
            s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").as_bytes());
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let client = LlmClient::new(LlmConfig {
        provider: Provider::OpenAi,
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "m".into(),
        api_key: None,
        replay_file: None,
        call_timeout: Duration::from_secs(10),
        max_retries: 0,
    })
    .unwrap();
    let err = client
        .chat(
            &request(Flavor::OpenAi, vec![ChatMessage::User("go".into())]),
            soon(20_000),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Protocol(ref m) if m.contains("8 MiB")),
        "{err:?}"
    );
}
