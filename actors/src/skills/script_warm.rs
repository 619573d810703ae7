//! One warm script container and its job channel (see `script_container.rs` for the design):
//! the container's PID 1 is the job runner of `script_runner.py`; the kernel attaches to its
//! stdin and stdout before starting it, writes one job per line and reads one answer per line.

use crate::docker::{describe, remove};
use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{AttachContainerOptions, CreateContainerOptions};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The runner's code, given to `python3 -c` (it lives in the runner's memory, never in a file a
/// script could change).
pub const RUNNER: &str = include_str!("script_runner.py");
/// Longest answer line read from the runner (1 MiB of stdout and the stderr tail, in base64).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A running warm container with its attach stream.
pub struct Warm {
    client: Docker,
    name: String,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Output,
    pending: Vec<u8>,
    gone: bool,
}

impl Warm {
    /// Creates `name` from `body`, attaches, starts it and waits for the runner's `ready` line.
    pub async fn start(
        client: &Docker,
        name: &str,
        body: ContainerCreateBody,
        limit: Duration,
    ) -> Result<Warm, String> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        client
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("creating the script container failed ({})", describe(&e)))?;
        // The attach stream lives as long as the container: a client without the request
        // timeout (it bounds the upgrade only, but a long one costs nothing).
        let long = client.clone().with_timeout(Duration::from_secs(24 * 3600));
        let attached = long
            .attach_container(
                name,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await;
        let attached = match attached {
            Ok(a) => a,
            Err(e) => {
                let _ = remove(client, name).await;
                return Err(format!(
                    "attaching to the script container failed ({})",
                    describe(&e)
                ));
            }
        };
        let mut warm = Warm {
            client: client.clone(),
            name: name.to_string(),
            input: attached.input,
            output: attached.output,
            pending: Vec::new(),
            gone: false,
        };
        if let Err(e) = client
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            warm.remove().await;
            return Err(format!(
                "starting the script container failed ({})",
                describe(&e)
            ));
        }
        match tokio::time::timeout(limit, warm.read_line()).await {
            Ok(Ok(v)) if v["ready"] == true => Ok(warm),
            Ok(Ok(_)) | Ok(Err(_)) => {
                warm.remove().await;
                Err("the script container's runner did not start".into())
            }
            Err(_) => {
                warm.remove().await;
                Err(format!(
                    "the script container's runner did not start within {}s",
                    limit.as_secs()
                ))
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one job and reads its answer. An error means the runner is gone or misbehaved:
    /// the caller removes the container.
    pub async fn exchange(&mut self, job: &Value) -> Result<Value, String> {
        let mut line = serde_json::to_vec(job).map_err(|_| "the job cannot be encoded")?;
        line.push(b'\n');
        self.input
            .write_all(&line)
            .await
            .map_err(|e| format!("the script container's runner is gone ({})", e.kind()))?;
        self.input
            .flush()
            .await
            .map_err(|e| format!("the script container's runner is gone ({})", e.kind()))?;
        self.read_line().await
    }

    async fn read_line(&mut self) -> Result<Value, String> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let rest = self.pending.split_off(at + 1);
                let line = std::mem::replace(&mut self.pending, rest);
                return serde_json::from_slice(&line)
                    .map_err(|_| "the script container's runner answered garbage".to_string());
            }
            if self.pending.len() > MAX_ANSWER {
                return Err("the script container's runner answered too much".into());
            }
            match self.output.next().await {
                Some(Ok(LogOutput::StdOut { message })) => self.pending.extend_from_slice(&message),
                Some(Ok(LogOutput::StdErr { message })) => {
                    // The runner itself failed (a traceback): the kernel's log, never the model.
                    tracing::warn!(container = %self.name, "script runner: {}", String::from_utf8_lossy(&message[..message.len().min(2000)]));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(format!(
                        "the script container's stream failed ({})",
                        describe(&e)
                    ))
                }
                None => return Err("the script container stopped".into()),
            }
        }
    }

    /// Removes the container now.
    pub async fn remove(mut self) {
        self.gone = true;
        if let Err(why) = remove(&self.client, &self.name).await {
            tracing::warn!(container = %self.name, "could not remove the script container: {why}");
        }
    }
}

impl Drop for Warm {
    /// A container dropped without [`Warm::remove`] (a cancelled run, a runner dropped without
    /// `finish`) is removed in the background; a crashed kernel's are swept at the next boot.
    fn drop(&mut self) {
        if self.gone {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, name) = (self.client.clone(), std::mem::take(&mut self.name));
            rt.spawn(async move {
                let _ = remove(&client, &name).await;
            });
        }
    }
}
