//! `ConcurrencyLimiter`: owns the flow permits (default 10) and the bounded FIFO queue of runs
//! waiting for one (contract §12). Every trigger takes a permit; nested flows run inside their
//! parent's.
//!
//! A [`Permit`] gives itself back when dropped, so no path — error, panic, timeout, client gone —
//! can leak a slot.
//!
//! **One lock, one invariant.** The free-slot count and the wait queue live together in one
//! [`Slots`] behind one mutex, and every decision (grant, queue, refuse, hand a freed slot on) is
//! taken under it. Invariant: `free > 0` only while the queue is empty — a freed slot goes to the
//! oldest waiter first. An earlier version checked `free` under one lock and enqueued under
//! another, so a permit dropped in between returned its slot to `free` while a waiter was being
//! queued, and that waiter was never woken (a lost wake-up that jammed the kernel for good).
//!
//! **The caller owns the wait.** A queued caller gets a [`Ticket::Queued`] holding the receiving
//! end of its channel and awaits it itself. Giving up (its deadline, its client gone) drops the
//! receiver, which closes the channel: the waiter stops counting as queued at once, and a slot
//! handed to it later comes straight back. An earlier version awaited the receiver inside the
//! actor's response future, which outlived the caller, so abandoned waiters filled the queue
//! until every run was answered 429 on an idle kernel.
//!
//! Fast path: [`LimiterHandle::try_acquire`] takes a free slot without a message — on this 2-core
//! machine each cross-thread message costs a wake-up of tens of microseconds, which is most of a
//! `set`-only run. Only a caller that has to wait goes through the actor ([`Acquire`]).

use actix::prelude::*;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;

// ---- messages ---------------------------------------------------------------------------------

/// Asks for a permit: granted at once, queued, or refused when the queue is full.
#[derive(Message)]
#[rtype(result = "Result<Ticket, LimiterError>")]
pub struct Acquire {
    pub run_id: String,
    pub span: tracing::Span,
}

/// Observable counters.
#[derive(Message)]
#[rtype(result = "LimiterSnapshot")]
pub struct GetSnapshot;

/// The limiter's counters.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct LimiterSnapshot {
    pub max_concurrent: usize,
    pub queue_limit: usize,
    pub running: usize,
    pub queued: usize,
    pub granted_total: u64,
    pub rejected_total: u64,
}

/// Why a permit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    #[error(
        "too many flows are running and the queue of {limit} waiting runs is full; retry later"
    )]
    QueueFull { limit: usize },
    #[error("the kernel is shutting down")]
    Closed,
}

/// The answer to [`Acquire`].
pub enum Ticket {
    /// A slot was free.
    Granted(Permit),
    /// In the queue: await [`Waiter::wait`]; dropping the waiter leaves the queue.
    Queued(Waiter),
}

impl Ticket {
    /// The permit, waiting for it if queued. Dropping this future gives up the place in the queue.
    pub async fn into_permit(self) -> Result<Permit, LimiterError> {
        match self {
            Ticket::Granted(p) => Ok(p),
            Ticket::Queued(w) => w.wait().await,
        }
    }
}

/// A place in the queue, owned by the caller.
pub struct Waiter {
    rx: oneshot::Receiver<Permit>,
}

impl Waiter {
    /// Waits for a freed slot.
    pub async fn wait(self) -> Result<Permit, LimiterError> {
        self.rx.await.map_err(|_| LimiterError::Closed)
    }
}

// ---- the shared slots (pure locking logic, tested without actix) -------------------------------

/// The free-slot count and the FIFO queue, always changed together under one lock.
#[derive(Debug)]
struct SlotState {
    max: usize,
    queue_limit: usize,
    /// Invariant: `free > 0` implies `queue` is empty.
    free: usize,
    queue: VecDeque<oneshot::Sender<Permit>>,
    granted: u64,
    rejected: u64,
}

/// The limiter's state, shared by the actor, the fast path and every [`Permit`].
#[derive(Debug, Clone)]
pub struct Slots(Arc<Mutex<SlotState>>);

impl Slots {
    /// `max` permits (at least one) and room for `queue_limit` waiters.
    pub fn new(max: usize, queue_limit: usize) -> Slots {
        let max = max.max(1);
        Slots(Arc::new(Mutex::new(SlotState {
            max,
            queue_limit,
            free: max,
            queue: VecDeque::new(),
            granted: 0,
            rejected: 0,
        })))
    }

    fn permit(&self) -> Permit {
        Permit {
            slots: Some(self.clone()),
        }
    }

    /// A free slot, or `None` (without queueing).
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut s = self.0.lock();
        if s.free == 0 {
            return None;
        }
        s.free -= 1;
        s.granted += 1;
        drop(s);
        Some(self.permit())
    }

    /// Grants, queues or refuses — decided under the one lock, so no release can slip between
    /// the check and the enqueue.
    pub fn acquire(&self) -> Result<Ticket, LimiterError> {
        let mut s = self.0.lock();
        if s.free > 0 {
            // The invariant says nobody waits, so granting cannot overtake the queue.
            s.free -= 1;
            s.granted += 1;
            drop(s);
            return Ok(Ticket::Granted(self.permit()));
        }
        if s.queue.len() >= s.queue_limit {
            // Waiters who gave up do not hold queue room.
            s.queue.retain(|tx| !tx.is_closed());
            if s.queue.len() >= s.queue_limit {
                s.rejected += 1;
                return Err(LimiterError::QueueFull {
                    limit: s.queue_limit,
                });
            }
        }
        let (tx, rx) = oneshot::channel();
        s.queue.push_back(tx);
        Ok(Ticket::Queued(Waiter { rx }))
    }

    /// A slot came back: hand it to the oldest live waiter, or mark it free when none is left.
    ///
    /// The send happens outside the lock: a permit refused by a waiter that has just gone (or
    /// dropped by the channel as it closes) runs its own `Drop` — which takes this lock — on this
    /// thread, and must not deadlock. The slot in transit is counted nowhere, so no other caller
    /// can take it meanwhile; if the send fails the loop offers it to the next waiter, still in
    /// FIFO order, and only an empty queue makes it free.
    fn release(&self) {
        loop {
            let tx = {
                let mut s = self.0.lock();
                match s.queue.pop_front() {
                    Some(tx) => tx,
                    None => {
                        s.free += 1;
                        debug_assert!(s.free <= s.max, "more slots than permits");
                        return;
                    }
                }
            };
            if tx.is_closed() {
                continue;
            }
            match tx.send(self.permit()) {
                Ok(()) => {
                    self.0.lock().granted += 1;
                    return;
                }
                // The waiter left between the check and the send: disarm this permit (its slot
                // is still ours to hand on) and try the next waiter.
                Err(mut refused) => refused.slots = None,
            }
        }
    }

    /// The counters; `queued` counts only waiters still waiting.
    pub fn snapshot(&self) -> LimiterSnapshot {
        let s = self.0.lock();
        LimiterSnapshot {
            max_concurrent: s.max,
            queue_limit: s.queue_limit,
            running: s.max - s.free,
            queued: s.queue.iter().filter(|t| !t.is_closed()).count(),
            granted_total: s.granted,
            rejected_total: s.rejected,
        }
    }
}

/// A running slot; released when dropped.
#[derive(Debug)]
pub struct Permit {
    /// `None` only for a permit that was never handed out (see `Slots::release`).
    slots: Option<Slots>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
    }
}

// ---- actor ------------------------------------------------------------------------------------

/// The flow concurrency limiter (see the module docs).
pub struct ConcurrencyLimiter {
    slots: Slots,
}

/// What callers hold: the limiter's address and its slots, for [`LimiterHandle::try_acquire`].
#[derive(Clone)]
pub struct LimiterHandle {
    pub addr: Addr<ConcurrencyLimiter>,
    slots: Slots,
}

impl LimiterHandle {
    /// The fast path: a free slot without a message. `None` means "ask the actor".
    pub fn try_acquire(&self) -> Option<Permit> {
        self.slots.try_acquire()
    }
}

impl ConcurrencyLimiter {
    pub fn new(max: usize, queue_limit: usize) -> Self {
        ConcurrencyLimiter {
            slots: Slots::new(max, queue_limit),
        }
    }

    /// Starts the actor on the current arbiter and returns the handle callers use.
    pub fn start_handle(self) -> LimiterHandle {
        let slots = self.slots.clone();
        LimiterHandle {
            addr: self.start(),
            slots,
        }
    }
}

impl Actor for ConcurrencyLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Acquire> for ConcurrencyLimiter {
    type Result = Result<Ticket, LimiterError>;

    /// Grants at once when a slot is free (nobody waits then: FIFO), queues when the queue has
    /// room, refuses otherwise. Answers at once either way; the caller waits on its ticket.
    fn handle(&mut self, msg: Acquire, _: &mut Self::Context) -> Self::Result {
        let _span =
            tracing::debug_span!(parent: &msg.span, "limiter.acquire", run_id = %msg.run_id)
                .entered();
        let ticket = self.slots.acquire();
        if let Ok(Ticket::Queued(_)) = &ticket {
            tracing::debug!("run queued");
        }
        ticket
    }
}

impl Handler<GetSnapshot> for ConcurrencyLimiter {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.slots.snapshot())
    }
}

#[cfg(test)]
mod tests;
