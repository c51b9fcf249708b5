//! The engine's "now": the wall clock read once at start, advanced by tokio's clock, so paused-time tests drive every timer.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use tokio::time::Instant;

/// Wall-clock time derived from tokio time. Sweeps, reminders, flap
/// windows, hysteresis and the tenant cache all read it, so
/// `#[tokio::test(start_paused = true)]` moves them with
/// `tokio::time::advance` instead of real waits.
#[derive(Debug, Clone, Copy)]
pub(super) struct EngineClock {
    wall: DateTime<Utc>,
    started: Instant,
}

impl EngineClock {
    /// A clock starting at the wall clock's time now.
    pub(super) fn start() -> Self {
        Self::starting_at(crate::store::now())
    }

    /// A clock that reads `wall` now.
    pub(super) fn starting_at(wall: DateTime<Utc>) -> Self {
        EngineClock {
            wall,
            started: Instant::now(),
        }
    }

    /// Now, to the microsecond (as the store keeps times).
    pub(super) fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.started.elapsed()).unwrap_or(TimeDelta::MAX);
        (self.wall + elapsed).trunc_subsecs(6)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn now_moves_with_tokio_time_only() {
        let wall: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let clock = EngineClock::starting_at(wall);
        assert_eq!(clock.now(), wall);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), wall + TimeDelta::seconds(90));
        tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
        assert_eq!(clock.now(), wall + TimeDelta::seconds(90 + 4 * 3600));
    }
}
