//! The CLI's client of a running kernel: `rumi pack …` and `rumi flow …` talk to the REST API
//! with the token from `RUMI_API_TOKEN` or `user_data/api_token`.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// A client of the local API.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn from_env() -> Result<Client> {
        let (host, port) = crate::config::api_address()?;
        let home = crate::config::home()?;
        let token =
            crate::token::read(&rumi_actors::Layout::new(home).api_token()).ok_or_else(|| {
                anyhow!("no API token: start the kernel once (`rumi serve`) or set RUMI_API_TOKEN")
            })?;
        Ok(Client {
            base: format!("http://{host}:{port}"),
            token,
            http: reqwest::Client::new(),
        })
    }

    /// Sends a request and returns `data` of a successful envelope, or the envelope's error.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the kernel at {} (is `rumi serve` running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let env: Value = resp
            .json()
            .await
            .with_context(|| format!("the kernel answered {status} without a JSON body"))?;
        if env["success"] == Value::Bool(true) || (status.is_success() && env["data"].is_object()) {
            return Ok(env["data"].clone());
        }
        let err = env["error"].as_str().unwrap_or("unknown error");
        if env["data"].is_object() {
            // A failed or timed-out run still has a record worth showing.
            println!("{}", serde_json::to_string_pretty(&env["data"])?);
        }
        bail!("{status}: {err}")
    }
}
