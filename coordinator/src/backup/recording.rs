//! Long work (a backup, a restore) that records its progress every few
//! seconds as it goes.
//!
//! The record runs beside the work, never instead of it. Had the work
//! waited while a record was written (a `select!` whose branch awaits the
//! store), a work paused inside a write transaction would hold the very
//! lock the record waits for: on SQLite, every writer of the coordinator
//! then stalled for the busy timeout, once per missed tick, long enough
//! for the leader to lose its lease (CI found it after a restore's safety
//! backup).

use std::future::Future;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

/// Runs `work` to its end, calling `record` `every` after the start and
/// then `every` after each record ended; a record still running when the
/// work ends is dropped.
pub async fn while_recording<T, R: Future<Output = ()>>(
    work: impl Future<Output = T>,
    every: Duration,
    mut record: impl FnMut() -> R,
) -> T {
    let recorder = async {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            record().await;
            // The next one `every` after this one ended: ticks missed
            // while it waited are not made up.
            tick.reset();
        }
    };
    tokio::select! {
        done = work => done,
        never = recorder => match never {},
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Regression: a record that waits for what the work holds (a write
    /// lock, here a mutex held across the work's own waits) neither stops
    /// the work nor is stopped for good.
    #[tokio::test(start_paused = true)]
    async fn a_record_waiting_on_the_works_lock_does_not_stop_the_work() {
        let lock = tokio::sync::Mutex::new(());
        let records = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let work = async {
            let held = lock.lock().await;
            // Its I/O inside the transaction, across several ticks.
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(held);
            tokio::time::sleep(Duration::from_secs(5)).await;
            "done"
        };
        let done = tokio::time::timeout(
            Duration::from_secs(60),
            while_recording(work, Duration::from_secs(2), || async {
                let _written = lock.lock().await;
                records.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .await
        .expect("the work ends while records wait for its lock");
        assert_eq!(done, "done");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // The record waiting since 2 s got the lock at 5 s; then at 7 s
        // and 9 s: no burst of missed ticks.
        assert_eq!(records.load(Ordering::Relaxed), 3);
    }
}
