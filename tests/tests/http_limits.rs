//! The REST listener under slow and greedy clients (issue 11, finding 5):
//! header-read and idle timeouts, the connection limit, and a drain that
//! still answers the request in flight.

use std::time::Duration;

use knowton_tests::{ADMIN_TOKEN, Db, TestCoordinator, eventually};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a slowloris client sends, one byte a second: a request head that
/// never ends.
const TRICKLE: &[u8] = b"GET /api/v1/tenants HTTP/1.1\r\nHost: knowton\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Sends `TRICKLE` one byte a second until the server closes the
/// connection; returns how long that took (or `None` if it never did
/// within `give_up`).
async fn trickle(addr: std::net::SocketAddr, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sent = 0;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::sleep(give_up);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let byte = TRICKLE[sent % TRICKLE.len()];
                if stream.write_all(&[byte]).await.is_err() {
                    return Some(started.elapsed());
                }
                sent += 1;
            }
            read = stream.read(&mut buf) => match read {
                // Closed (maybe after a 408 the server chose to send).
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            },
            () = &mut deadline => return None,
        }
    }
}

/// A client that opens a new connection for every request.
fn fresh_connections(within: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(within)
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap()
}

/// `GET /healthz` with `client`.
async fn healthz(kt: &TestCoordinator, client: &reqwest::Client) -> Result<(), String> {
    match client.get(kt.url("/healthz")).send().await {
        Ok(r) if r.status() == StatusCode::OK => Ok(()),
        Ok(r) => Err(format!("/healthz answered {}", r.status())),
        Err(err) => Err(format!("/healthz failed: {err}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_after_the_header_timeout_while_healthz_answers() {
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        args.http.http_header_read_timeout_seconds = 2;
    })
    .await;
    let addr = kt.http_addr();
    const ATTACKERS: usize = 300;
    // Long enough that the old server (no header timeout) fails the test
    // instead of hanging it.
    let give_up = Duration::from_secs(20);
    let attack: Vec<_> = (0..ATTACKERS)
        .map(|_| tokio::spawn(trickle(addr, give_up)))
        .collect();

    // While they trickle, the API answers new clients promptly.
    let client = fresh_connections(Duration::from_secs(2));
    let attacked = Instant::now();
    let mut answered = 0;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    while !attack.iter().all(tokio::task::JoinHandle::is_finished) {
        poll.tick().await;
        if let Err(err) = healthz(&kt, &client).await {
            panic!("under attack, after {:?}: {err}", attacked.elapsed());
        }
        answered += 1;
        assert!(
            attacked.elapsed() < give_up + Duration::from_secs(5),
            "the attack never ended"
        );
    }
    let mut slowest = Duration::ZERO;
    for handle in attack {
        let closed = handle
            .await
            .unwrap()
            .expect("a slowloris connection was never closed");
        slowest = slowest.max(closed);
    }
    // 2 s header timeout; the rest is 300 connections on 2 cores.
    assert!(
        slowest < Duration::from_secs(8),
        "the slowest trickling connection lasted {slowest:?}"
    );
    assert!(answered > 0);
    let metrics = kt.scrape().await;
    let cut: f64 = metric(
        &metrics,
        "knowton_http_connections_closed_total{reason=\"header_timeout\"}",
    );
    assert!(cut >= ATTACKERS as f64, "{cut} counted of {ATTACKERS}");
    healthz(&kt, &client).await.unwrap();
    kt.stop().await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once_and_service_resumes() {
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        args.http.http_max_connections = 8;
        args.http.http_idle_timeout_seconds = 2;
        args.http.http_header_read_timeout_seconds = 2;
    })
    .await;
    let addr = kt.http_addr();
    // Eight connections that made one request each and now sit idle.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: knowton\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        held.push(stream);
    }
    // The ninth is accepted and closed at once, without an answer.
    let mut ninth = TcpStream::connect(addr).await.unwrap();
    let _ = ninth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: knowton\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(1), ninth.read(&mut buf))
        .await
        .expect("the connection over the limit is closed at once");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "over the limit, got {read:?}"
    );
    // The idle ones are cut after the idle timeout, and new clients get in.
    for mut stream in held {
        let read = tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf))
            .await
            .expect("an idle connection is closed after the idle timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let client = fresh_connections(Duration::from_secs(1));
    eventually(
        Duration::from_secs(5),
        "service after the limit",
        || async { healthz(&kt, &client).await.ok() },
    )
    .await;
    let metrics = kt.scrape().await;
    assert!(
        metric(
            &metrics,
            "knowton_http_connections_closed_total{reason=\"over_limit\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "knowton_http_connections_closed_total{reason=\"idle_timeout\"}"
        ) >= 8.0
    );
    kt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_request_timeout_is_answered_503() {
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        args.http.http_request_timeout_seconds = 1;
    })
    .await;
    let addr = kt.http_addr();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A body announced and never sent: the handler waits for it.
    stream
        .write_all(
            format!(
                "POST /api/v1/tenants HTTP/1.1\r\nHost: knowton\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answered after the request timeout")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("request_timeout"), "{head}");
    kt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_request_in_flight_then_stops() {
    let kt = TestCoordinator::start(Db::Sqlite).await;
    let addr = kt.http_addr();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/v1/tenants HTTP/1.1\r\nHost: knowton\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
                 Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // 100 Continue: the handler is reading the body, the request is in flight.
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let state = kt.running_state();
    let stopping = tokio::spawn(kt.stop());
    eventually(Duration::from_secs(5), "draining", || async {
        state
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(())
    })
    .await;
    stream.write_all(b"{}").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered, then closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops once the request is answered")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}
