//! A started sandbox of a pack: a host worker or a container, called the same way.

use super::worker::{CallError, Worker};
use crate::docker::sandbox::DockerSandbox;
use serde_json::Value;
use std::time::Duration;

/// A started sandbox: a host worker or a container.
pub(super) enum Sandbox {
    Host(Worker),
    Container(DockerSandbox),
}

impl Sandbox {
    /// A host worker's pid.
    pub(super) fn pid(&self) -> Option<i32> {
        match self {
            Sandbox::Host(w) => Some(w.pid()),
            Sandbox::Container(_) => None,
        }
    }

    /// For spans and snapshots: the worker's pid or the container's id.
    pub(super) fn label(&self) -> String {
        match self {
            Sandbox::Host(w) => w.pid().to_string(),
            Sandbox::Container(c) => c.id().to_string(),
        }
    }

    pub(super) async fn call(
        self,
        id: u64,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> (Option<Sandbox>, Result<Value, CallError>) {
        match self {
            Sandbox::Host(w) => {
                let (w, r) = w.call(id, frame, timeout).await;
                (w.map(Sandbox::Host), r)
            }
            Sandbox::Container(c) => {
                let (c, r) = c.call(id, frame, timeout).await;
                (c.map(Sandbox::Container), r)
            }
        }
    }
}
