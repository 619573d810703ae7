//! Helpers shared by the crate's unit tests.

use std::time::{Duration, Instant};

/// Polls `f` every 5 ms until it holds; fails the test naming `what` after 10 s.
pub(crate) async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
