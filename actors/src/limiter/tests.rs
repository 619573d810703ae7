//! The limiter's tests: the actor's behaviour, the two jams an outside review found, and a seeded
//! stress test of the locking with thousands of acquire / drop / give-up interleavings.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    assert!(matches!(p1, Ticket::Granted(_)) && matches!(p2, Ticket::Granted(_)));
    // Two waiters fit in the queue, the third is refused.
    let w1 = l.send(acquire()).await.unwrap().unwrap();
    let w2 = l.send(acquire()).await.unwrap().unwrap();
    assert!(matches!(w1, Ticket::Queued(_)) && matches!(w2, Ticket::Queued(_)));
    let snap = l.send(GetSnapshot).await.unwrap();
    assert_eq!((snap.running, snap.queued), (2, 2));
    let refused = l.send(acquire()).await.unwrap();
    assert_eq!(refused.err(), Some(LimiterError::QueueFull { limit: 2 }));
    // FIFO: the first freed slot goes to the first waiter.
    let (w1, w2) = (
        actix_rt::spawn(w1.into_permit()),
        actix_rt::spawn(w2.into_permit()),
    );
    drop(p1);
    let got1 = w1.await.unwrap().unwrap();
    drop(p2);
    let got2 = w2.await.unwrap().unwrap();
    drop((got1, got2));
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

/// Defect 1b of the hardening review: a waiter that gave up stayed in the queue (its receiver
/// lived on in the actor's response future), so abandoned waiters filled the queue and every
/// later run was refused. Now the queue empties as they give up and new runs queue again.
#[actix_rt::test]
async fn waiters_that_give_up_leave_the_queue_at_once() {
    let h = ConcurrencyLimiter::new(1, 5).start_handle();
    let held = h.try_acquire().expect("free slot");
    for _ in 0..5 {
        let give_up = async {
            let ticket = h.addr.send(acquire()).await.unwrap().unwrap();
            ticket.into_permit().await
        };
        let r = tokio::time::timeout(Duration::from_millis(5), give_up).await;
        assert!(r.is_err(), "nobody can get the held slot");
    }
    let snap = h.addr.send(GetSnapshot).await.unwrap();
    assert_eq!((snap.running, snap.queued), (1, 0), "{snap:?}");
    // The queue has room again: a sixth caller is queued, not refused.
    let ticket = h.addr.send(acquire()).await.unwrap();
    assert!(
        matches!(ticket, Ok(Ticket::Queued(_))),
        "refused: queue jammed"
    );
    drop(held);
    let p = ticket.unwrap().into_permit().await.expect("the freed slot");
    drop(p);
    // Idle: the fast path grants at once.
    assert!(h.try_acquire().is_some());
}

#[actix_rt::test]
async fn fast_path_never_overtakes_waiters() {
    let h = ConcurrencyLimiter::new(1, 5).start_handle();
    let l = h.addr.clone();
    let p = h.try_acquire().expect("free slot");
    assert!(h.try_acquire().is_none(), "cap of one");
    let waiter = l.send(acquire()).await.unwrap().unwrap();
    drop(p);
    // The freed slot went to the waiter, not back to the fast path.
    assert!(h.try_acquire().is_none());
    let got = waiter.into_permit().await.unwrap();
    drop(got);
    assert!(h.try_acquire().is_some(), "the slot is free again");
    let snap = l.send(GetSnapshot).await.unwrap();
    assert_eq!(snap.granted_total, 3);
}

/// A slot handed to a waiter that has just gone comes back: to the next waiter, else free.
#[test]
fn a_slot_offered_to_a_departed_waiter_goes_to_the_next() {
    let s = Slots::new(1, 10);
    let held = s.try_acquire().unwrap();
    let Ok(Ticket::Queued(gone)) = s.acquire() else {
        panic!("queued")
    };
    let Ok(Ticket::Queued(next)) = s.acquire() else {
        panic!("queued")
    };
    assert_eq!(s.snapshot().queued, 2);
    drop(gone);
    assert_eq!(s.snapshot().queued, 1, "queued counts live waiters only");
    drop(held);
    let mut rx = next.rx;
    let p = rx.try_recv().expect("handed on at once");
    drop(p);
    assert_eq!(s.snapshot().running, 0);
    assert!(s.try_acquire().is_some());
}

/// A permit dropped inside the channel (sent, never received) is released, not lost.
#[test]
fn a_permit_sent_but_never_received_is_released() {
    let s = Slots::new(1, 10);
    let held = s.try_acquire().unwrap();
    let Ok(Ticket::Queued(w)) = s.acquire() else {
        panic!("queued")
    };
    drop(held); // sent to `w`, who never reads it
    assert_eq!(s.snapshot().running, 1);
    drop(w);
    assert_eq!(s.snapshot().running, 0);
    assert!(s.try_acquire().is_some());
}

/// A tiny seeded generator (xorshift64*), so a failing interleaving can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Waits for a queued permit with a deadline: a lost wake-up shows as a failure, not a hang.
fn wait_bounded(w: Waiter, deadline: Instant) -> Permit {
    let mut rx = w.rx;
    loop {
        match rx.try_recv() {
            Ok(p) => return p,
            Err(oneshot::error::TryRecvError::Empty) => {
                assert!(
                    Instant::now() < deadline,
                    "a queued waiter was never woken (lost wake-up)"
                );
                std::thread::yield_now();
            }
            Err(oneshot::error::TryRecvError::Closed) => panic!("the limiter dropped a waiter"),
        }
    }
}

/// Seeded stress test of the locking: threads race acquire (fast path and queued), drop, and
/// give up at random, thousands of times per seed. Checked throughout: never more than `cap`
/// permits held. Checked after each seed: nothing running, nobody queued, and an idle limiter
/// grants every slot at once. Both defects of the review (lost wake-up, abandoned waiters
/// counted forever) fail it: the first as a waiter never woken, the second as `queued > 0`.
#[test]
fn seeded_stress_keeps_the_cap_and_never_jams() {
    const THREADS: u64 = 6;
    const OPS: usize = 1500;
    for seed in 1..=8u64 {
        let cap = 1 + (seed as usize % 3);
        let slots = Slots::new(cap, 4);
        let held_now = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(30);
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (slots, held_now) = (slots.clone(), Arc::clone(&held_now));
                std::thread::spawn(move || {
                    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t + 1));
                    let mut mine: Vec<Permit> = Vec::new();
                    let take = |p: Permit, mine: &mut Vec<Permit>| {
                        let n = held_now.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= cap, "seed {seed}: {n} permits held, cap {cap}");
                        mine.push(p);
                    };
                    for _ in 0..OPS {
                        match rng.below(5) {
                            0 => {
                                if let Some(p) = slots.try_acquire() {
                                    take(p, &mut mine);
                                }
                            }
                            1 | 2 => match slots.acquire() {
                                Ok(Ticket::Granted(p)) => take(p, &mut mine),
                                // Wait only with empty hands, so holders always make progress.
                                Ok(Ticket::Queued(w)) if mine.is_empty() && rng.below(2) == 0 => {
                                    take(wait_bounded(w, deadline), &mut mine)
                                }
                                // Give up: sometimes at once, sometimes after a moment.
                                Ok(Ticket::Queued(w)) => {
                                    if rng.below(2) == 0 {
                                        std::thread::yield_now();
                                    }
                                    drop(w);
                                }
                                Err(LimiterError::QueueFull { .. }) => {}
                                Err(e) => panic!("seed {seed}: {e}"),
                            },
                            _ => {
                                if !mine.is_empty() {
                                    let i = rng.below(mine.len() as u64) as usize;
                                    held_now.fetch_sub(1, Ordering::SeqCst);
                                    drop(mine.swap_remove(i));
                                }
                            }
                        }
                    }
                    held_now.fetch_sub(mine.len(), Ordering::SeqCst);
                    drop(mine);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a stress thread failed");
        }
        let snap = slots.snapshot();
        assert_eq!(
            (snap.running, snap.queued),
            (0, 0),
            "seed {seed}: idle limiter {snap:?}"
        );
        let all: Vec<_> = (0..cap).map(|_| slots.try_acquire()).collect();
        assert!(
            all.iter().all(Option::is_some),
            "seed {seed}: an idle limiter grants every slot at once"
        );
        assert!(
            slots.try_acquire().is_none(),
            "seed {seed}: never more than cap"
        );
    }
}
