//! One build per key at a time, shared by the callers that wait for it, and stopped when the
//! last of them stops waiting.
//!
//! A build is a future shared by its waiters ([`futures_util::future::Shared`]); the map keeps
//! only a weak handle. It is polled by the waiters themselves, so when every waiter is gone (a
//! run's deadline passed, its tool call was dropped) the build future is dropped: what it had
//! started is stopped by the guards of the code it was running (processes killed, a builder
//! container removed, temporary directories removed — see [`super::SkillEnvs`]). A caller that
//! comes while the build runs joins it; one that comes after finds the result ready (or, after
//! a failure, builds again).

use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;

type Build<T, E> = BoxFuture<'static, Result<T, E>>;

/// Builds in flight, by key (weak handles: the waiters own the builds).
pub struct OnceBuilds<T, E> {
    inflight: Mutex<HashMap<String, WeakShared<Build<T, E>>>>,
}

impl<T, E> Default for OnceBuilds<T, E> {
    fn default() -> Self {
        OnceBuilds {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<T, E> OnceBuilds<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// `ready()` if it answers; else joins `key`'s build in flight, or — `ready()` asked again
    /// under the map's lock (a build may have ended meanwhile) — starts `build()` and waits for
    /// it. Dropping the returned future stops waiting; the build stops with its last waiter.
    pub async fn run<F, Fut>(
        &self,
        key: &str,
        ready: impl Fn() -> Option<T>,
        build: F,
    ) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        if let Some(t) = ready() {
            return Ok(t);
        }
        let shared: Shared<Build<T, E>> = {
            let mut map = self.inflight.lock();
            match map.get(key).and_then(WeakShared::upgrade) {
                Some(s) => s,
                None => {
                    if let Some(t) = ready() {
                        return Ok(t);
                    }
                    if map.len() >= 64 {
                        map.retain(|_, w| w.upgrade().is_some());
                    }
                    let s = build().boxed().shared();
                    if let Some(w) = s.downgrade() {
                        map.insert(key.to_string(), w);
                    }
                    s
                }
            }
        };
        shared.await
    }

    /// Builds in flight now (some waiter still waits for each).
    pub fn in_flight(&self) -> usize {
        self.inflight
            .lock()
            .values()
            .filter(|w| w.upgrade().is_some())
            .count()
    }

    /// How many callers wait for `key`'s build now.
    pub fn waiters(&self, key: &str) -> usize {
        let shared = self.inflight.lock().get(key).and_then(WeakShared::upgrade);
        shared
            .and_then(|s| s.strong_count())
            .map_or(0, |n| n.saturating_sub(1))
    }
}
