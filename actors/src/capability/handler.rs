//! One actor per trusted third-party handler, owning its warm host worker (contract §7.2).
//! STUB: signatures fixed.

use actix::prelude::*;
use serde_json::{Map, Value};
use std::time::Duration;

/// One call: `execute(context, args)` in the handler's worker.
#[derive(Message)]
#[rtype(result = "Result<Value, HandlerFailure>")]
pub struct Execute {
    /// `{principal_id, permission_id, handler_id, grant_config, request_id, ts}`.
    pub context: Value,
    pub args: Map<String, Value>,
    /// The call's deadline (≤ 120 s); past it the worker is killed and replaced.
    pub timeout: Duration,
}

/// Why a handler call failed (`error_type`: `handler_error`, `timeout`, `handler_crashed`, ...).
#[derive(Debug, Clone)]
pub struct HandlerFailure {
    pub error: String,
    pub error_type: String,
}

pub struct CapabilityHandler;

impl Actor for CapabilityHandler {
    type Context = Context<Self>;
}

impl Handler<Execute> for CapabilityHandler {
    type Result = Result<Value, HandlerFailure>;
    fn handle(&mut self, _: Execute, _: &mut Self::Context) -> Self::Result {
        Err(HandlerFailure {
            error: "not built yet".into(),
            error_type: "handler_error".into(),
        })
    }
}
