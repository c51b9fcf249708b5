//! The open-loop load generator (as wrk2): requests due at a fixed rate,
//! each measured from when it was due, with the HTTP client and the
//! classification of answers the benchmarks share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// An HTTP/1.1 client with a pool as large as the load needs.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    knowton_coordinator::certs::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// 429: the tenant's plan rate was exceeded.
    RateLimited,
    /// Any other unexpected status.
    Status(u16),
    /// No answer: connection error or timeout.
    Transport,
}

/// One request: how long it took from when it was due (or sent), when it
/// was answered, and how.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub latency: Duration,
    pub done: Instant,
    pub outcome: Outcome,
}

impl Sample {
    /// A sample answered now, measured from `from`.
    pub fn new(from: Instant, outcome: Outcome) -> Self {
        let done = Instant::now();
        Sample {
            latency: done.saturating_duration_since(from),
            done,
            outcome,
        }
    }
}

/// Reads the whole body (so the latency covers it) and classifies the answer.
pub async fn finish(response: reqwest::Result<reqwest::Response>, expected: StatusCode) -> Outcome {
    match response {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status == expected => Outcome::Ok,
                Ok(_) if status == StatusCode::TOO_MANY_REQUESTS => Outcome::RateLimited,
                Ok(_) => Outcome::Status(status.as_u16()),
                Err(err) => transport_error(&err),
            }
        }
        Err(err) => transport_error(&err),
    }
}

/// Reports the first transport error on stderr (the rest are only counted).
fn transport_error(err: &reqwest::Error) -> Outcome {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    REPORTED.call_once(|| {
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            chain.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("first transport error: {chain}");
    });
    Outcome::Transport
}

/// The pace of an open-loop run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Requests per second.
    pub rate: u32,
    /// Requests in flight at most.
    pub connections: usize,
    /// Sent but not measured, first.
    pub warmup: Duration,
    /// Measured, after the warm-up.
    pub duration: Duration,
}

/// What an open-loop run measured after its warm-up.
#[derive(Debug)]
pub struct OpenRun {
    /// Each measured request, its latency counted from when it was due.
    pub samples: Vec<Sample>,
    /// From the first measured request's due time to the last answer.
    pub window: Duration,
    /// How late each measured request was picked up by the load generator
    /// (its own scheduling delay, included in the latency).
    pub send_lags: Vec<Duration>,
    /// The slowest latency among the requests due in each measured second:
    /// shows whether slow requests are spread out or come in stalls.
    pub per_second_max: Vec<Duration>,
}

impl OpenRun {
    pub fn count(&self, outcome: impl Fn(Outcome) -> bool) -> usize {
        self.samples.iter().filter(|s| outcome(s.outcome)).count()
    }
}

/// Sends a request made by `request` at `schedule.rate` per second for
/// `warmup + duration`. Request `i` is due at `start + i / rate` and its
/// latency is measured from then, so a stalled server is charged for the
/// requests it delayed.
///
/// At most `connections` requests are in flight (as wrk2 keeps a fixed set
/// of connections): a request due while all are busy waits for one, and
/// that wait counts in its latency. Without a bound, a brief stall turns
/// into a storm of new connections that the stall did not deserve.
///
/// The pacing runs on this thread (a sleep is precise to tens of
/// microseconds, tokio timers to a millisecond), and so do the calls of
/// `request`; the requests run on `runtime`.
pub fn run<F, Fut>(runtime: &Runtime, schedule: Schedule, mut request: F) -> OpenRun
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let Schedule {
        rate,
        connections,
        warmup,
        duration,
    } = schedule;
    let in_flight = Arc::new(Semaphore::new(connections.max(1)));
    let rate = u64::from(rate.max(1));
    let due = |i: u64| Duration::from_nanos(i * 1_000_000_000 / rate);
    let warm_count = (warmup.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
    let total = warm_count + (duration.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
    let mut tasks = Vec::with_capacity(total as usize);
    let start = Instant::now() + Duration::from_millis(10);
    for i in 0..total {
        let scheduled = start + due(i);
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let answer = request();
        let in_flight = in_flight.clone();
        tasks.push(runtime.spawn(async move {
            let lag = scheduled.elapsed();
            let _permit = in_flight.acquire().await;
            let outcome = answer.await;
            (i, Sample::new(scheduled, outcome), lag)
        }));
    }
    let measured_start = start + due(warm_count);
    runtime.block_on(async move {
        let mut run = OpenRun {
            samples: Vec::with_capacity(tasks.len()),
            window: Duration::ZERO,
            send_lags: Vec::with_capacity(tasks.len()),
            per_second_max: vec![Duration::ZERO; duration.as_secs_f64().ceil() as usize],
        };
        let mut end = measured_start;
        for task in tasks {
            let Ok((i, sample, lag)) = task.await else {
                continue;
            };
            if i >= warm_count {
                end = end.max(sample.done);
                if let Some(max) = run
                    .per_second_max
                    .get_mut(((i - warm_count) / rate) as usize)
                {
                    *max = (*max).max(sample.latency);
                }
                run.samples.push(sample);
                run.send_lags.push(lag);
            }
        }
        run.window = end.saturating_duration_since(measured_start);
        run
    })
}
