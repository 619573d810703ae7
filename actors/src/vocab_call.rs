//! The vocabulary handlers of flows (contract §9): `kernel:vocab.normalize` answers from the
//! published vocabulary at once; `kernel:vocab.convert` normalises both terms, finds the
//! converter and runs it in its pack's sandbox (a [`PackContainer`] call with
//! [`Entry::Convert`]), never in the kernel.

use crate::pack_container::{BlockOutput, Entry, ExecuteBlock, PackContainer};
use crate::view::KernelView;
use actix::Addr;
use rumi_domain::engine::VocabCall;
use rumi_domain::handler::KernelHandler;
use rumi_domain::run::{ErrorType, StepFailure};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Longest a converter may run (less when the run's deadline is nearer).
pub const CONVERT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a vocabulary step needs next.
pub enum VocabWork {
    /// Answered from the vocabulary.
    Done(Result<Value, StepFailure>),
    /// A converter to run: send `msg` to `container` (pack `pack_id`).
    Convert {
        pack_id: String,
        container: Addr<PackContainer>,
        msg: Box<ExecuteBlock>,
    },
}

/// Where a conversion runs and for whom (for the audit and the trace; the converter itself is
/// given only its terms, its pack and the time: nothing of the calling run).
pub struct RunInfo<'a> {
    pub run_id: &'a str,
    pub flow_id: &'a str,
    pub phase: &'a str,
    /// The run's time left.
    pub remaining: Duration,
    pub span: tracing::Span,
}

fn arg<'a>(call: &'a VocabCall, name: &str) -> Result<&'a str, StepFailure> {
    call.args
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            StepFailure::new(
                ErrorType::HandlerError,
                format!(
                    "{}: args.{name} (non-empty string) is required",
                    call.handler
                ),
            )
        })
}

/// Starts a vocabulary step (see the module docs).
pub fn start(view: &KernelView, call: VocabCall, run: RunInfo<'_>) -> VocabWork {
    let vocab = view.vocab();
    match call.handler {
        KernelHandler::VocabNormalize => VocabWork::Done(
            arg(&call, "term").map(|t| json!({"term": t, "preferred": vocab.normalize(t)})),
        ),
        _ => {
            let (from, to) = match (arg(&call, "from_term"), arg(&call, "to_term")) {
                (Ok(f), Ok(t)) => (f, t),
                (Err(e), _) | (_, Err(e)) => return VocabWork::Done(Err(e)),
            };
            if let Some(owners) = vocab.conflict(from, to) {
                return VocabWork::Done(Err(StepFailure::new(
                    ErrorType::HandlerError,
                    format!(
                        "kernel:vocab.convert: packs {} all offer a converter from {:?} to {:?}; \
                         it is refused until only one of them offers it (uninstall or change the others); \
                         `GET /api/vocab` lists the conflicts",
                        owners.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", "),
                        vocab.preferred(&rumi_domain::vocab::clean(from)),
                        vocab.preferred(&rumi_domain::vocab::clean(to)),
                    ),
                )));
            }
            let Some(conv) = vocab.converter(from, to) else {
                let (f, t) = (
                    rumi_domain::vocab::clean(from),
                    rumi_domain::vocab::clean(to),
                );
                let (f, t) = (vocab.preferred(&f), vocab.preferred(&t));
                return VocabWork::Done(Err(StepFailure::new(
                    ErrorType::HandlerError,
                    format!(
                        "kernel:vocab.convert: no approved pack offers a converter from {f:?} to {t:?} \
                         (a pack adds one as converters/<from>_to_<to>.py); `GET /api/vocab` lists them"
                    ),
                )));
            };
            let Some(container) = view.container(&conv.pack_id) else {
                return VocabWork::Done(Err(StepFailure::new(
                    ErrorType::ApprovalRejected,
                    format!(
                        "kernel:vocab.convert: pack {:?}, which offers the converter, is not approved",
                        conv.pack_id
                    ),
                )));
            };
            let (timeout, bound) = if run.remaining < CONVERT_TIMEOUT {
                (run.remaining, true)
            } else {
                (CONVERT_TIMEOUT, false)
            };
            let msg = ExecuteBlock {
                run_id: run.run_id.to_string(),
                flow_id: run.flow_id.to_string(),
                step_id: call.step_id.clone(),
                phase: run.phase.to_string(),
                file: conv.file.clone(),
                input: call.args.get("data").cloned().unwrap_or(Value::Null),
                inputs: Arc::new(Value::Null),
                timeout,
                run_deadline_bound: bound,
                span: run.span,
                entry: Entry::Convert {
                    from: conv.from.clone(),
                    to: conv.to.clone(),
                },
            };
            VocabWork::Convert {
                pack_id: conv.pack_id.clone(),
                container,
                msg: Box::new(msg),
            }
        }
    }
}

/// The step's result from a converter's answer.
pub fn converted(
    answer: Result<BlockOutput, StepFailure>,
) -> (Result<Value, StepFailure>, Option<String>) {
    match answer {
        Ok(BlockOutput { result, log }) => (Ok(result), Some(log).filter(|l| !l.is_empty())),
        Err(f) => (Err(f), None),
    }
}
