//! Per-pack rate windows (contract §7.1: `secrets.get` at most `RUMI_SECRET_GET_RATE_LIMIT` calls
//! a minute per pack, 60 by default).
//!
//! The attack: a pack guessing secret key names (or hammering the secrets file) as fast as it
//! can. The window is a token bucket: `limit` calls at once, then one more every `60 s / limit`;
//! time is passed in, so the rule is tested without a clock.

use std::time::{Duration, Instant};

/// A token bucket refilled at `limit` tokens a minute, holding at most `limit`.
#[derive(Debug, Clone)]
pub struct RateWindow {
    limit: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl RateWindow {
    /// `limit` calls a minute (0 refuses every call).
    pub fn per_minute(limit: u32) -> Self {
        RateWindow {
            limit,
            tokens: f64::from(limit),
            last: None,
        }
    }

    /// Takes one call at `now`; `false` when the window is spent.
    pub fn admit(&mut self, now: Instant) -> bool {
        let per_sec = f64::from(self.limit) / 60.0;
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * per_sec).min(f64::from(self.limit));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next call would be admitted (zero when it would be now).
    pub fn retry_after(&self) -> Duration {
        if self.tokens >= 1.0 || self.limit == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) * 60.0 / f64::from(self.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_a_minute_then_one_a_second() {
        let t0 = Instant::now();
        let mut w = RateWindow::per_minute(60);
        assert_eq!(
            (0..100).filter(|_| w.admit(t0)).count(),
            60,
            "a burst of the limit"
        );
        assert!(!w.admit(t0 + Duration::from_millis(500)));
        assert!(
            w.admit(t0 + Duration::from_millis(1600)),
            "one a second comes back"
        );
        assert!(!w.admit(t0 + Duration::from_millis(1700)));
        // A quiet minute refills the window, never beyond the limit.
        let later = t0 + Duration::from_secs(600);
        assert_eq!((0..100).filter(|_| w.admit(later)).count(), 60);
    }

    #[test]
    fn a_zero_limit_refuses_everything_and_time_going_back_grants_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut w = RateWindow::per_minute(0);
        assert!(!w.admit(t0));
        let mut w = RateWindow::per_minute(2);
        assert!(w.admit(t0) && w.admit(t0));
        assert!(
            !w.admit(t0 - Duration::from_secs(5)),
            "an earlier instant adds no tokens"
        );
    }
}
