//! The slow verdict: given when the threshold passes with no answer to API
//! health on either of its two connections, before the slow answer comes;
//! never for answers within the threshold. On paused tokio time over real
//! loopback sockets (time moves on only while everything waits).

#[allow(dead_code)]
#[path = "../../coordinator/src/sim.rs"]
mod pods;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use knowton_agent::discover::Target;
use knowton_agent::probe::{ProbeSettings, Prober};
use knowton_proto::agent::v1::PodResult;
use pods::{Behaviour, SimPod};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const SLOW: Duration = Duration::from_secs(1);

fn prober() -> Prober {
    Prober::new(ProbeSettings {
        timeout: Duration::from_secs(5),
        slow_threshold: SLOW,
        confirm: true,
    })
}

fn target(url: String) -> Target {
    Target {
        tenant: "acme".into(),
        pod: "web-0".into(),
        url,
        storage_path: None,
    }
}

/// What the slow verdict callback got: when, the verdict, and how many
/// API health requests the pod had received by then.
type Verdicts = Arc<Mutex<Vec<(Duration, PodResult, u64)>>>;

#[tokio::test(start_paused = true)]
async fn a_slow_pod_is_called_slow_at_the_threshold_and_its_time_follows() {
    let pod = Arc::new(SimPod::start(Ipv4Addr::new(127, 0, 2, 2), 0));
    pod.set(Behaviour::Slow(Duration::from_millis(1500))).await;
    let prober = prober();
    let target = target(pod.url());
    let verdicts = Verdicts::default();
    let started = Instant::now();
    let result = prober
        .probe_reporting(&target, {
            let (verdicts, pod) = (verdicts.clone(), pod.clone());
            move |verdict| {
                let asked = pod.requests("/api/health");
                verdicts
                    .lock()
                    .unwrap()
                    .push((started.elapsed(), verdict, asked));
            }
        })
        .await;
    let finished = started.elapsed();

    let verdicts = verdicts.lock().unwrap();
    assert_eq!(verdicts.len(), 1, "one verdict");
    let (at, verdict, asked) = &verdicts[0];
    assert!(
        *at >= SLOW && *at < SLOW + Duration::from_millis(50),
        "the verdict came at {at:?}, not at the threshold"
    );
    assert_eq!(
        *asked, 2,
        "API health and its confirmation were both out before the verdict"
    );
    let api = verdict.api_health.as_ref().unwrap();
    assert!(api.pending && api.ok && api.confirmed, "{api:?}");
    assert!(api.latency_us >= 1_000_000, "{api:?}");
    assert!(
        verdict.metrics.is_none(),
        "only what is known at the threshold"
    );
    assert!(verdict.liveness.as_ref().unwrap().ok);
    assert_eq!(
        (verdict.tenant.as_str(), verdict.pod.as_str()),
        ("acme", "web-0")
    );

    // The answers: both requests ran side by side (1.5 s, not twice that).
    assert!(
        finished >= Duration::from_millis(1500) && finished < Duration::from_millis(1600),
        "{finished:?}"
    );
    let api = result.api_health.as_ref().unwrap();
    assert!(api.ok && !api.pending && api.confirmed, "{api:?}");
    assert!(api.latency_us >= 1_500_000, "{api:?}");
    assert!(result.metrics.as_ref().unwrap().scraped);
    assert_eq!(pod.requests("/api/health"), 2);
}

/// Answers jittering up to 500 ms, under the 1 s threshold: no verdict,
/// nothing confirmed, whatever the jitter of each round.
#[tokio::test(start_paused = true)]
async fn answers_within_the_threshold_get_no_verdict() {
    let pod = SimPod::start(Ipv4Addr::new(127, 0, 2, 3), 0);
    let prober = prober();
    let target = target(pod.url());
    for delay in [0, 500, 120, 480, 250, 10, 499] {
        pod.set(Behaviour::Slow(Duration::from_millis(delay))).await;
        let called = Arc::new(Mutex::new(false));
        let result = prober
            .probe_reporting(&target, {
                let called = called.clone();
                move |_| *called.lock().unwrap() = true
            })
            .await;
        assert!(!*called.lock().unwrap(), "a verdict at {delay} ms");
        let api = result.api_health.as_ref().unwrap();
        assert!(
            api.ok && !api.confirmed && !api.pending,
            "{delay} ms: {api:?}"
        );
    }
}

/// Only one of the two API health requests is slow (a stuck connection, a
/// lost packet): the other answers in time, so there is no verdict and the
/// pod is reported healthy with that answer's time. (Which of the two the
/// pod sees first is a race: when it is the agent's first request that is
/// stuck, the answer reported is the confirmation's, marked confirmed.)
#[tokio::test(start_paused = true)]
async fn a_confirmation_that_answers_in_time_clears_the_pod() {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::new(127, 0, 2, 4), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(0_u32));
    let server = tokio::spawn({
        let asked = asked.clone();
        async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve_first_api_request_late(stream, asked.clone()));
            }
        }
    });
    let called = Arc::new(Mutex::new(false));
    let result = prober()
        .probe_reporting(&target(format!("http://{addr}")), {
            let called = called.clone();
            move |_| *called.lock().unwrap() = true
        })
        .await;
    assert!(!*called.lock().unwrap(), "no slow verdict");
    let api = result.api_health.as_ref().unwrap();
    assert!(api.ok && !api.pending, "{api:?}");
    assert!(api.latency_us < 1_000_000, "{api:?}");
    assert_eq!(*asked.lock().unwrap(), 2);
    server.abort();
}

/// Answers every request at once, except the first `/api/health` it
/// reads, which waits 1.5 s.
async fn serve_first_api_request_late(mut stream: tokio::net::TcpStream, asked: Arc<Mutex<u32>>) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0_u8; 1024];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let body = if head.starts_with("GET /api/health ") {
                let first = {
                    let mut asked = asked.lock().unwrap();
                    *asked += 1;
                    *asked == 1
                };
                if first {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                r#"{"status":"ok","database":true}"#
            } else if head.starts_with("GET /metrics ") {
                "http_requests_total{code=\"200\"} 1\n"
            } else {
                "ok"
            };
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}
