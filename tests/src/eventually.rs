//! Waiting for a condition by polling it against a deadline, instead of
//! sleeping.

use std::future::Future;
use std::time::Duration;

use knowton_coordinator::sim::SimPod;

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_showing(timeout, what, || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// [`eventually`] for a `check` that says what it saw instead (`Err`): the
/// last of which the panic shows.
pub async fn eventually_showing<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}{}{seen}",
            if seen.is_empty() { "" } else { "; last seen: " }
        );
    }
}

/// Waits until `gone` is no longer probed: `kept` went through three more
/// rounds (probes of `/health`) since `gone` last was.
pub async fn until_no_longer_probed(gone: &SimPod, kept: &SimPod, what: &str) {
    let mut last = (gone.requests("/health"), kept.requests("/health"));
    eventually(Duration::from_secs(20), what, || {
        let now = (gone.requests("/health"), kept.requests("/health"));
        if now.0 != last.0 {
            last = now;
        }
        let quiet_rounds = now.1 - last.1;
        async move { (quiet_rounds >= 3).then_some(()) }
    })
    .await;
}
