//! The system clock behind the domain's [`rumi_domain::engine::Clock`].

use std::time::Instant;

/// Wall time from the OS, monotonic time from an `Instant` taken at start.
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl rumi_domain::engine::Clock for SystemClock {
    fn wall(&self) -> String {
        now_rfc3339()
    }
    fn monotonic_ms(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1000.0
    }
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
