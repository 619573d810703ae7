//! `ConcurrencyLimiter`: owns the flow permits (default 10) and the bounded FIFO queue of runs
//! waiting for one (contract §12). Every trigger takes a permit; nested flows run inside their
//! parent's.
//!
//! A [`Permit`] gives itself back when dropped, so no path — error, panic, timeout, client gone —
//! can leak a slot. A queued caller that gives up simply drops its receiver; when its turn comes
//! the permit handed to it is dropped with the channel and released at once.
//!
//! Fast path: the actor publishes its free-slot count in a small shared [`Gate`]. When slots are
//! free and nobody waits, [`ConcurrencyLimiter::try_acquire`] takes one without a message, and a
//! permit dropped while nobody waits puts it back the same way — on this 2-core machine each
//! cross-thread message costs a wake-up of tens of microseconds, which is most of a `set`-only
//! run. As soon as anyone has to wait, everything goes through the actor: it owns the FIFO queue,
//! decides 429s, and hands freed slots to waiters in order, so newcomers never overtake the queue.

use actix::prelude::*;
use serde::Serialize;
use std::collections::VecDeque;
use tokio::sync::oneshot;

// ---- messages ---------------------------------------------------------------------------------

/// Asks for a permit; waits in the FIFO queue when all are taken.
#[derive(Message)]
#[rtype(result = "Result<Permit, LimiterError>")]
pub struct Acquire {
    pub run_id: String,
    pub span: tracing::Span,
}

/// Gives a permit back (sent by [`Permit`]'s `Drop`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release;

/// Observable counters.
#[derive(Message)]
#[rtype(result = "LimiterSnapshot")]
pub struct GetSnapshot;

/// The limiter's counters.
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

/// The counters the actor shares with the fast path. Invariant: a slot is free in `free` only
/// while `waiting` is 0 (the actor hands freed slots straight to waiters instead).
#[derive(Debug, Default)]
pub struct GateState {
    free: usize,
    waiting: usize,
    /// Permits taken on the fast path (the actor counts its own).
    granted_fast: u64,
}

/// The shared gate (see the module docs).
pub type Gate = std::sync::Arc<parking_lot::Mutex<GateState>>;

/// A running slot; released when dropped.
pub struct Permit {
    limiter: Addr<ConcurrencyLimiter>,
    gate: Gate,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut g = self.gate.lock();
        if g.waiting == 0 {
            g.free += 1;
        } else {
            drop(g);
            self.limiter.do_send(Release);
        }
    }
}

// ---- actor ------------------------------------------------------------------------------------

/// The flow concurrency limiter (see the module docs).
pub struct ConcurrencyLimiter {
    max: usize,
    queue_limit: usize,
    gate: Gate,
    queue: VecDeque<oneshot::Sender<Permit>>,
    granted_slow: u64,
    rejected: u64,
}

/// What callers hold: the limiter's address and its gate, for [`LimiterHandle::try_acquire`].
#[derive(Clone)]
pub struct LimiterHandle {
    pub addr: Addr<ConcurrencyLimiter>,
    gate: Gate,
}

impl LimiterHandle {
    /// The fast path: a free slot while nobody waits, without a message. `None` means "ask the
    /// actor" (it may still grant at once).
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut g = self.gate.lock();
        if g.waiting == 0 && g.free > 0 {
            g.free -= 1;
            g.granted_fast += 1;
            return Some(Permit {
                limiter: self.addr.clone(),
                gate: self.gate.clone(),
            });
        }
        None
    }
}

impl ConcurrencyLimiter {
    pub fn new(max: usize, queue_limit: usize) -> Self {
        let max = max.max(1);
        ConcurrencyLimiter {
            max,
            queue_limit,
            gate: std::sync::Arc::new(parking_lot::Mutex::new(GateState {
                free: max,
                waiting: 0,
                granted_fast: 0,
            })),
            queue: VecDeque::new(),
            granted_slow: 0,
            rejected: 0,
        }
    }

    /// Starts the actor on the current arbiter and returns the handle callers use.
    pub fn start_handle(self) -> LimiterHandle {
        let gate = self.gate.clone();
        LimiterHandle {
            addr: self.start(),
            gate,
        }
    }

    fn permit(&mut self, ctx: &Context<Self>) -> Permit {
        self.granted_slow += 1;
        Permit {
            limiter: ctx.address(),
            gate: self.gate.clone(),
        }
    }

    /// Drops waiters who gave up, keeping `waiting` equal to the live queue.
    fn prune(&mut self) {
        self.queue.retain(|tx| !tx.is_closed());
        self.gate.lock().waiting = self.queue.len();
    }
}

impl Actor for ConcurrencyLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Acquire> for ConcurrencyLimiter {
    type Result = ResponseFuture<Result<Permit, LimiterError>>;

    /// Grants at once when a slot is free and nobody waits (FIFO: newcomers never overtake the
    /// queue); queues when the queue has room; refuses otherwise.
    fn handle(&mut self, msg: Acquire, ctx: &mut Self::Context) -> Self::Result {
        let _span =
            tracing::debug_span!(parent: &msg.span, "limiter.acquire", run_id = %msg.run_id)
                .entered();
        // Drop waiters who gave up, so they do not hold queue room.
        self.prune();
        {
            let mut g = self.gate.lock();
            if g.waiting == 0 && g.free > 0 {
                g.free -= 1;
                drop(g);
                let permit = self.permit(ctx);
                return Box::pin(async move { Ok(permit) });
            }
        }
        if self.queue.len() >= self.queue_limit {
            self.rejected += 1;
            let limit = self.queue_limit;
            return Box::pin(async move { Err(LimiterError::QueueFull { limit }) });
        }
        let (tx, rx) = oneshot::channel();
        self.queue.push_back(tx);
        self.gate.lock().waiting = self.queue.len();
        tracing::debug!(queued = self.queue.len(), "run queued");
        Box::pin(async move { rx.await.map_err(|_| LimiterError::Closed) })
    }
}

impl Handler<Release> for ConcurrencyLimiter {
    type Result = ();

    /// A slot was freed while runs wait: hand it to the oldest waiter still waiting, or back to
    /// the gate when every waiter gave up.
    fn handle(&mut self, _: Release, ctx: &mut Self::Context) {
        while let Some(tx) = self.queue.pop_front() {
            self.gate.lock().waiting = self.queue.len();
            if tx.is_closed() {
                continue;
            }
            let permit = self.permit(ctx);
            // If the waiter went away in between, the permit comes back through its Drop.
            let _ = tx.send(permit);
            return;
        }
        let mut g = self.gate.lock();
        g.waiting = 0;
        g.free += 1;
    }
}

impl Handler<GetSnapshot> for ConcurrencyLimiter {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        let (free, granted_fast) = {
            let g = self.gate.lock();
            (g.free, g.granted_fast)
        };
        MessageResult(LimiterSnapshot {
            max_concurrent: self.max,
            queue_limit: self.queue_limit,
            running: self.max - free,
            queued: self.queue.iter().filter(|t| !t.is_closed()).count(),
            granted_total: self.granted_slow + granted_fast,
            rejected_total: self.rejected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn acquire() -> Acquire {
        Acquire {
            run_id: "r".into(),
            span: tracing::Span::none(),
        }
    }

    #[actix_rt::test]
    async fn cap_queue_fifo_and_release() {
        let l = ConcurrencyLimiter::new(2, 2).start();
        let p1 = l.send(acquire()).await.unwrap().unwrap();
        let p2 = l.send(acquire()).await.unwrap().unwrap();
        // Two waiters fit in the queue, the third is refused.
        let w1 = l.send(acquire());
        let w2 = l.send(acquire());
        let (w1, w2) = (actix_rt::spawn(w1), actix_rt::spawn(w2));
        tokio::task::yield_now().await;
        let snap = l.send(GetSnapshot).await.unwrap();
        assert_eq!((snap.running, snap.queued), (2, 2));
        let refused = l.send(acquire()).await.unwrap();
        assert_eq!(refused.err(), Some(LimiterError::QueueFull { limit: 2 }));
        drop(p1);
        let got1 = w1.await.unwrap().unwrap().unwrap();
        drop(p2);
        let got2 = w2.await.unwrap().unwrap().unwrap();
        drop((got1, got2));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let snap = l.send(GetSnapshot).await.unwrap();
        assert_eq!(
            (
                snap.running,
                snap.queued,
                snap.granted_total,
                snap.rejected_total
            ),
            (0, 0, 4, 1)
        );
    }

    #[actix_rt::test]
    async fn a_waiter_that_gives_up_does_not_leak_the_slot() {
        let l = ConcurrencyLimiter::new(1, 5).start();
        let p = l.send(acquire()).await.unwrap().unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(20), l.send(acquire())).await;
        assert!(gave_up.is_err());
        drop(p);
        let again = tokio::time::timeout(Duration::from_secs(2), l.send(acquire())).await;
        assert!(again.unwrap().unwrap().is_ok(), "the slot came back");
    }

    #[actix_rt::test]
    async fn fast_path_never_overtakes_waiters() {
        let h = ConcurrencyLimiter::new(1, 5).start_handle();
        let l = h.addr.clone();
        let p = h.try_acquire().expect("free slot");
        assert!(h.try_acquire().is_none(), "cap of one");
        let waiter = actix_rt::spawn(l.send(acquire()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(p);
        // The freed slot went to the waiter, not back to the fast path.
        assert!(h.try_acquire().is_none());
        let got = waiter.await.unwrap().unwrap().unwrap();
        drop(got);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(h.try_acquire().is_some(), "the slot is free again");
        let snap = l.send(GetSnapshot).await.unwrap();
        assert_eq!(snap.granted_total, 3);
    }
}
