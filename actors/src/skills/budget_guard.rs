//! The BudgetGuard (contract §6): one per skill run. It owns the run's ledger (the domain's
//! [`Ledger`]) and answers before anything is spent: every tool call is admitted or refused
//! **before** it runs, every model response is charged as it arrives, every write is admitted
//! against the disk limit. The Supervisor and the Sub Agents ask it; nobody else holds the
//! numbers, so no agent can spend what another already did.
//!
//! The time budget is a deadline the run's futures are raced against (model calls, scripts,
//! agent answers); the guard is the one place that says whether it has passed.

use actix::prelude::*;
use rumi_domain::skill::budget::{Budgets, Ledger, RemainingBudgets, Which};
use std::collections::BTreeMap;
use std::time::Instant;

/// Admit one tool call (by its model-facing name) before it runs.
#[derive(Message)]
#[rtype(result = "Result<(), Which>")]
pub struct AdmitToolCall {
    pub tool: String,
}

/// Charge one model response's tokens; `Err(Tokens)` when the budget is now passed.
#[derive(Message)]
#[rtype(result = "Result<(), Which>")]
pub struct ChargeTokens {
    pub input: u64,
    pub output: u64,
}

/// Admit a model request of (at least) `tokens` before it is sent: `Err(Tokens)` when the
/// budget left cannot pay for it.
#[derive(Message)]
#[rtype(result = "Result<(), Which>")]
pub struct AdmitRequest {
    pub tokens: u64,
}

/// Admit a write of `bytes` (counted only when admitted).
#[derive(Message)]
#[rtype(result = "Result<(), Which>")]
pub struct ChargeDisk {
    pub bytes: u64,
}

/// Count bytes already written (by a script): `Err(Disk)` when the limit is now passed.
#[derive(Message)]
#[rtype(result = "Result<(), Which>")]
pub struct ChargeWritten {
    pub bytes: u64,
}

/// Disk bytes the run may still write.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct DiskLeft;

impl Handler<DiskLeft> for BudgetGuard {
    type Result = u64;
    fn handle(&mut self, _: DiskLeft, _: &mut Self::Context) -> Self::Result {
        if self.over_disk {
            0
        } else {
            self.ledger.disk_left()
        }
    }
}

/// What is left, and what was spent.
#[derive(Message)]
#[rtype(result = "Spent")]
pub struct Remaining;

/// The guard's answer to [`Remaining`].
#[derive(Debug, Clone)]
pub struct Spent {
    pub remaining: RemainingBudgets,
    pub calls: u32,
    pub by_name: BTreeMap<String, u32>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub disk_bytes: u64,
    pub elapsed_ms: u64,
}

/// The guard of one run.
pub struct BudgetGuard {
    ledger: Ledger,
    started: Instant,
    /// Written bytes beyond the limit (a script's files are counted after the fact).
    over_disk: bool,
}

impl BudgetGuard {
    pub fn new(budgets: Budgets, started: Instant) -> Self {
        BudgetGuard {
            ledger: Ledger::new(budgets),
            started,
            over_disk: false,
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

impl Actor for BudgetGuard {
    type Context = Context<Self>;
}

/// Admission order is the ledger's: time, then tokens, then the call count.
impl Handler<AdmitToolCall> for BudgetGuard {
    type Result = Result<(), Which>;
    fn handle(&mut self, msg: AdmitToolCall, _: &mut Self::Context) -> Self::Result {
        if self.over_disk {
            return Err(Which::Disk);
        }
        let elapsed = self.elapsed_ms();
        self.ledger.admit(&msg.tool, elapsed)
    }
}

impl Handler<ChargeTokens> for BudgetGuard {
    type Result = Result<(), Which>;
    fn handle(&mut self, msg: ChargeTokens, _: &mut Self::Context) -> Self::Result {
        self.ledger.charge_tokens(msg.input, msg.output)
    }
}

impl Handler<AdmitRequest> for BudgetGuard {
    type Result = Result<(), Which>;
    fn handle(&mut self, msg: AdmitRequest, _: &mut Self::Context) -> Self::Result {
        self.ledger.admit_request(msg.tokens)
    }
}

impl Handler<ChargeDisk> for BudgetGuard {
    type Result = Result<(), Which>;
    fn handle(&mut self, msg: ChargeDisk, _: &mut Self::Context) -> Self::Result {
        self.ledger.admit_disk(msg.bytes)
    }
}

/// A script already wrote its files: they are counted whatever the limit says, and a run past
/// the limit admits nothing more.
impl Handler<ChargeWritten> for BudgetGuard {
    type Result = Result<(), Which>;
    fn handle(&mut self, msg: ChargeWritten, _: &mut Self::Context) -> Self::Result {
        if self.ledger.admit_disk(msg.bytes).is_err() {
            self.over_disk = true;
            return Err(Which::Disk);
        }
        Ok(())
    }
}

impl Handler<Remaining> for BudgetGuard {
    type Result = MessageResult<Remaining>;
    fn handle(&mut self, _: Remaining, _: &mut Self::Context) -> Self::Result {
        let elapsed_ms = self.elapsed_ms();
        let (input_tokens, output_tokens) = self.ledger.tokens();
        MessageResult(Spent {
            remaining: self.ledger.remaining(elapsed_ms),
            calls: self.ledger.calls(),
            by_name: self.ledger.calls_by_name().clone(),
            input_tokens,
            output_tokens,
            disk_bytes: self.ledger.disk_bytes(),
            elapsed_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn refuses_before_running_and_counts_by_name() {
        let b = Budgets {
            max_tool_calls: 2,
            ..Budgets::default()
        };
        let g = BudgetGuard::new(b, Instant::now()).start();
        let admit = |t: &str| g.send(AdmitToolCall { tool: t.into() });
        assert_eq!(admit("read_ref").await.unwrap(), Ok(()));
        assert_eq!(admit("read_ref").await.unwrap(), Ok(()));
        assert_eq!(admit("validate").await.unwrap(), Err(Which::Calls));
        let spent = g.send(Remaining).await.unwrap();
        assert_eq!(spent.calls, 2);
        assert_eq!(spent.by_name.get("read_ref"), Some(&2));
        assert_eq!(spent.remaining.max_tool_calls, 0);
    }

    #[actix_rt::test]
    async fn a_script_past_the_disk_limit_stops_admissions() {
        let b = Budgets {
            disk_write_limit_mb: 1,
            ..Budgets::default()
        };
        let g = BudgetGuard::new(b, Instant::now()).start();
        assert_eq!(
            g.send(ChargeWritten { bytes: 2 << 20 }).await.unwrap(),
            Err(Which::Disk)
        );
        assert_eq!(
            g.send(AdmitToolCall { tool: "x".into() }).await.unwrap(),
            Err(Which::Disk)
        );
    }
}
