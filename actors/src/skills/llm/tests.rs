//! Settings ([`load_config`]), the request shapes of both wires and reply parsing.

use super::*;
use serde_json::json;
use std::collections::HashMap;

const KEY: &str = "sk-test-SECRET123";

struct Setup {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    secrets: HashMap<String, String>,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            env: HashMap::new(),
            secrets: HashMap::new(),
        }
    }
    fn env(mut self, k: &str, v: &str) -> Setup {
        self.env.insert(k.into(), v.into());
        self
    }
    fn file(self, text: &str) -> Setup {
        std::fs::write(self.dir.path().join("llm.json"), text).unwrap();
        self
    }
    fn secret(mut self, k: &str, v: &str) -> Setup {
        self.secrets.insert(k.into(), v.into());
        self
    }
    fn load(&self) -> Result<Option<LlmConfig>, String> {
        let env = |k: &str| self.env.get(k).cloned();
        let secret = |k: &str| self.secrets.get(k).map(|v| SecretValue::new(v.clone()));
        load_config(&env, self.dir.path(), &secret)
    }
    fn err(&self) -> String {
        let e = self.load().unwrap_err();
        assert!(!e.contains("SECRET123"), "the key leaked: {e}");
        assert!(
            !e.contains(&*self.dir.path().to_string_lossy()),
            "a host path leaked: {e}"
        );
        e
    }
}

#[test]
fn nothing_configured_is_none() {
    assert!(Setup::new().load().unwrap().is_none());
    // Empty values count as unset.
    assert!(Setup::new()
        .env("RUMI_LLM_PROVIDER", " ")
        .load()
        .unwrap()
        .is_none());
}

#[test]
fn not_configured_says_how_to_configure() {
    for needle in [
        "RUMI_LLM_PROVIDER",
        "RUMI_LLM_BASE_URL",
        "RUMI_LLM_MODEL",
        "RUMI_LLM_API_KEY",
        "user_data/settings/llm.json",
        "api_key_secret",
        "replay",
        "RUMI_LLM_REPLAY",
    ] {
        assert!(NOT_CONFIGURED.contains(needle), "{needle}");
    }
}

#[test]
fn env_alone_configures_a_model() {
    let c = Setup::new()
        .env("RUMI_LLM_PROVIDER", "OpenAI")
        .env("RUMI_LLM_BASE_URL", "http://127.0.0.1:8080/v1/")
        .env("RUMI_LLM_MODEL", "qwen")
        .env("RUMI_LLM_API_KEY", KEY)
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(c.provider, Provider::OpenAi);
    assert_eq!(c.base_url, "http://127.0.0.1:8080/v1");
    assert_eq!(c.model, "qwen");
    assert_eq!(c.api_key.as_ref().unwrap().expose(), KEY);
    assert_eq!(c.call_timeout, Duration::from_secs(60));
    assert_eq!(c.max_retries, 4);
    assert!(!format!("{c:?}").contains("SECRET123"));
    assert_eq!(c.clone().api_key.unwrap().expose(), KEY);
}

#[test]
fn llm_json_with_a_secret_configures_a_model() {
    let c = Setup::new()
        .file(r#"{"provider": "anthropic", "model": "claude", "api_key_secret": "ANTHROPIC_KEY"}"#)
        .secret("ANTHROPIC_KEY", KEY)
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(c.provider, Provider::Anthropic);
    assert_eq!(c.base_url, "https://api.anthropic.com");
    assert_eq!(c.model, "claude");
    assert_eq!(c.api_key.as_ref().unwrap().expose(), KEY);
}

#[test]
fn env_wins_key_by_key() {
    let s = Setup::new()
        .file(
            r#"{"provider": "anthropic", "base_url": "https://file.example", "model": "file-model",
                "api_key_secret": "FILE_KEY"}"#,
        )
        .secret("FILE_KEY", "from-file")
        .env("RUMI_LLM_MODEL", "env-model")
        .env("RUMI_LLM_API_KEY", "from-env");
    let c = s.load().unwrap().unwrap();
    assert_eq!(c.provider, Provider::Anthropic);
    assert_eq!(c.base_url, "https://file.example");
    assert_eq!(c.model, "env-model");
    assert_eq!(c.api_key.as_ref().unwrap().expose(), "from-env");
    let c = s
        .env("RUMI_LLM_PROVIDER", "openai")
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(c.provider, Provider::OpenAi);
}

#[test]
fn env_key_wins_even_over_a_missing_secret() {
    let c = Setup::new()
        .file(r#"{"provider": "openai", "model": "m", "api_key_secret": "GONE"}"#)
        .env("RUMI_LLM_API_KEY", KEY)
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(c.api_key.unwrap().expose(), KEY);
}

#[test]
fn replay_needs_only_the_file() {
    let c = Setup::new()
        .env("RUMI_LLM_REPLAY", "/tmp/demo.json")
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(c.provider, Provider::Replay);
    assert_eq!(c.replay_file.as_deref(), Some(Path::new("/tmp/demo.json")));
    let e = Setup::new().env("RUMI_LLM_PROVIDER", "replay").err();
    assert!(e.contains("RUMI_LLM_REPLAY"), "{e}");
}

#[test]
fn every_misconfiguration_says_what_to_fix() {
    let key = |s: Setup| s.env("RUMI_LLM_API_KEY", KEY);
    let e = key(Setup::new().env("RUMI_LLM_PROVIDER", "gemini")).err();
    assert!(
        e.contains("RUMI_LLM_PROVIDER") && e.contains("openai"),
        "{e}"
    );
    let e = key(Setup::new().file(r#"{"provider": "gemini", "model": "m"}"#)).err();
    assert!(e.contains("llm.json"), "{e}");
    for bad in [
        "ftp://host/v1",
        "not a url",
        "file:///etc/passwd",
        "http://h/v1?x=1",
    ] {
        let e = key(Setup::new()
            .env("RUMI_LLM_PROVIDER", "openai")
            .env("RUMI_LLM_MODEL", "m")
            .env("RUMI_LLM_BASE_URL", bad))
        .err();
        assert!(
            e.contains("RUMI_LLM_BASE_URL") && e.contains("http"),
            "{bad}: {e}"
        );
    }
    let e = Setup::new().file("{not json").err();
    assert!(
        e.contains("llm.json") && e.contains("not valid JSON"),
        "{e}"
    );
    let e = Setup::new().file("[1]").err();
    assert!(e.contains("JSON object"), "{e}");
    let e = Setup::new()
        .file(&format!("{{\"model\": \"{}\"}}", "x".repeat(70 * 1024)))
        .err();
    assert!(e.contains("64 KiB"), "{e}");
    let e = Setup::new()
        .file(r#"{"provider": "openai", "model": "m", "api_key_secret": "OPENAI_KEY"}"#)
        .err();
    assert!(e.contains("OPENAI_KEY") && e.contains("secret"), "{e}");
    // The key pasted into the file is refused without being quoted.
    let e = Setup::new()
        .file(&format!(
            r#"{{"provider": "openai", "model": "m", "api_key": "{KEY}"}}"#
        ))
        .err();
    assert!(e.contains("api_key_secret"), "{e}");
    let e = Setup::new()
        .file(r#"{"provider": "openai", "modle": "m"}"#)
        .err();
    assert!(e.contains("modle"), "{e}");
    let e = Setup::new()
        .file(r#"{"provider": "openai", "model": 5}"#)
        .err();
    assert!(e.contains("\"model\" must be a string"), "{e}");
    let e = key(Setup::new().env("RUMI_LLM_PROVIDER", "openai")).err();
    assert!(e.contains("RUMI_LLM_MODEL"), "{e}");
    let e = key(Setup::new().env("RUMI_LLM_MODEL", "m")).err();
    assert!(e.contains("RUMI_LLM_PROVIDER"), "{e}");
}

#[test]
fn a_key_that_cannot_be_a_header_is_refused_without_quoting_it() {
    let c = LlmConfig {
        provider: Provider::OpenAi,
        base_url: "http://127.0.0.1:1/v1".into(),
        model: "m".into(),
        api_key: Some(SecretValue::new(format!("{KEY}\nx"))),
        replay_file: None,
        call_timeout: DEFAULT_CALL_TIMEOUT,
        max_retries: 0,
    };
    let e = LlmClient::new(c).unwrap_err();
    assert!(!e.contains("SECRET123") && e.contains("header"), "{e}");
}

fn history() -> ChatRequest {
    ChatRequest {
        system: "sys".into(),
        messages: vec![
            ChatMessage::User("goal".into()),
            ChatMessage::Assistant {
                text: Some("thinking".into()),
                tool_calls: vec![
                    ToolCall {
                        id: "a".into(),
                        name: "read_ref".into(),
                        arguments: json!({"path": "x"}),
                    },
                    ToolCall {
                        id: "b".into(),
                        name: "list_files".into(),
                        arguments: Value::String("{broken".into()),
                    },
                ],
            },
            ChatMessage::ToolResult {
                call_id: "a".into(),
                name: "read_ref".into(),
                content: r#"{"ok":true}"#.into(),
            },
            ChatMessage::ToolResult {
                call_id: "b".into(),
                name: "list_files".into(),
                content: r#"{"ok":false}"#.into(),
            },
            ChatMessage::User("more".into()),
        ],
        tools: vec![],
        seed: Some(7),
        max_tokens: 100,
    }
}

use serde_json::Value;

#[test]
fn openai_body_shape() {
    let b = openai::request_body("m", &history());
    let m = b["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        r#"{"path":"x"}"#
    );
    // Unparsable arguments go back verbatim.
    assert_eq!(m[2]["tool_calls"][1]["function"]["arguments"], "{broken");
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "a", "content": "{\"ok\":true}"})
    );
    assert_eq!(b["seed"], 7);
    assert_eq!(b["temperature"], 0);
    assert!(b.get("tools").is_none());
}

#[test]
fn anthropic_body_merges_user_side_items_and_sends_no_seed() {
    let b = anthropic::request_body("m", &history());
    let m = b["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[0], json!({"role": "user", "content": "goal"}));
    assert_eq!(
        m[1]["content"][0],
        json!({"type": "text", "text": "thinking"})
    );
    assert_eq!(m[1]["content"][2]["input"], json!({}));
    let user = m[2]["content"].as_array().unwrap();
    assert_eq!(user.len(), 3);
    assert_eq!(user[1]["tool_use_id"], "b");
    assert_eq!(user[2], json!({"type": "text", "text": "more"}));
    assert!(b.get("seed").is_none());
    assert_eq!(b["system"], "sys");
}

#[test]
fn openai_replies_parse_leniently_but_within_caps() {
    let reply = json!({"choices": [{"message": {"content": "", "tool_calls": [
        {"id": "", "function": {"name": "a", "arguments": "not json"}},
        {"id": "x", "function": {"name": "b", "arguments": {"k": 1}}},
        {"id": "y", "function": {"name": "c", "arguments": ""}},
        {"id": "z", "function": {"name": "d", "arguments": "[1]"}}
    ]}}]});
    let r = openai::parse_reply(reply.to_string().as_bytes(), 400).unwrap();
    assert_eq!(r.text, None);
    assert_eq!(r.tool_calls[0].id, "call_0");
    assert_eq!(r.tool_calls[0].arguments, Value::String("not json".into()));
    assert_eq!(r.tool_calls[1].arguments, json!({"k": 1}));
    assert_eq!(r.tool_calls[2].arguments, json!({}));
    assert_eq!(r.tool_calls[3].arguments, Value::String("[1]".into()));
    assert!(r.usage_estimated);
    assert_eq!(r.usage.input_tokens, 100);

    let long = "x".repeat(10_000);
    let reply = json!({"choices": [{"message": {"tool_calls": [
        {"id": "i", "function": {"name": "a", "arguments": long}}]}}]});
    let r = openai::parse_reply(reply.to_string().as_bytes(), 0).unwrap();
    assert_eq!(
        r.tool_calls[0].arguments.as_str().unwrap().len(),
        MAX_RAW_ARGUMENTS
    );

    let calls: Vec<Value> = (0..33)
        .map(|i| json!({"id": format!("c{i}"), "function": {"name": "a", "arguments": "{}"}}))
        .collect();
    let reply = json!({"choices": [{"message": {"tool_calls": calls}}]});
    let e = openai::parse_reply(reply.to_string().as_bytes(), 0).unwrap_err();
    assert!(
        matches!(e, LlmError::Protocol(ref m) if m.contains("33")),
        "{e}"
    );
    assert!(matches!(
        openai::parse_reply(b"<html>", 0),
        Err(LlmError::Protocol(_))
    ));
    assert!(matches!(
        openai::parse_reply(b"{\"choices\": []}", 0),
        Err(LlmError::Protocol(_))
    ));
}

#[test]
fn anthropic_replies_count_cached_input() {
    let reply = json!({"content": [
        {"type": "thinking", "thinking": "…"},
        {"type": "text", "text": "ok"},
        {"type": "tool_use", "id": "t", "name": "n", "input": {"a": 1}}],
        "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 90}});
    let r = anthropic::parse_reply(reply.to_string().as_bytes(), 0).unwrap();
    assert_eq!(r.text.as_deref(), Some("ok"));
    assert_eq!(r.tool_calls[0].arguments, json!({"a": 1}));
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 100,
            output_tokens: 3
        }
    );
    assert!(!r.usage_estimated);
}

#[test]
fn providers_serialize_lowercase_and_the_client_is_shareable() {
    assert_eq!(
        serde_json::to_value(Provider::OpenAi).unwrap(),
        json!("openai")
    );
    assert_eq!(
        serde_json::to_value(Provider::Anthropic).unwrap(),
        json!("anthropic")
    );
    assert_eq!(
        serde_json::to_value(Provider::Replay).unwrap(),
        json!("replay")
    );
    // The Supervisor may hold the client across awaits on a multi-threaded runtime.
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let client = LlmClient::new(LlmConfig {
        provider: Provider::OpenAi,
        base_url: "http://127.0.0.1:1/v1".into(),
        model: "m".into(),
        api_key: None,
        replay_file: None,
        call_timeout: DEFAULT_CALL_TIMEOUT,
        max_retries: 0,
    })
    .unwrap();
    send_sync(&client);
    let req = history();
    send(client.chat(&req, Instant::now()));
}

#[test]
fn an_empty_assistant_turn_keeps_its_place_on_both_wires() {
    let req = ChatRequest {
        messages: vec![
            ChatMessage::User("go".into()),
            ChatMessage::Assistant {
                text: None,
                tool_calls: vec![],
            },
            ChatMessage::User("again".into()),
        ],
        ..history()
    };
    let b = openai::request_body("m", &req);
    assert_eq!(b["messages"][2]["content"], "");
    let b = anthropic::request_body("m", &req);
    assert_eq!(b["messages"][1]["content"][0]["text"], "(no reply)");
    assert_eq!(b["messages"].as_array().unwrap().len(), 3);
}
