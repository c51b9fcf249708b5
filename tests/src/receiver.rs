//! A real HTTP receiver for webhook and Slack notifications: an axum
//! server on a loopback port that records every request (arrival time,
//! headers, body) and answers as the test scripts it (a status, a
//! `Retry-After`, a delay), then 200 by default.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

/// `Retry-After` as the receiver sends it.
#[derive(Debug, Clone, Copy)]
pub enum RetryAfter {
    Seconds(u64),
    /// An HTTP-date this far after the request arrived.
    DateIn(Duration),
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<RetryAfter>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        }
    }

    pub fn retry_after(mut self, retry_after: RetryAfter) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as it arrived, and what it was answered.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub wall: SystemTime,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
    /// The `Retry-After` wall-clock time it was answered with, if any.
    pub retry_at: Option<SystemTime>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug)]
struct Inner {
    script: VecDeque<Answer>,
    default: Answer,
    hits: Vec<Hit>,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Answers 200 to everything until scripted otherwise.
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// [`Self::start`] on a given address (a receiver that comes up late).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            script: VecDeque::new(),
            default: Answer::status(200),
            hits: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            addr,
            inner,
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with `answers`, in order, then the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// What to answer once the script is used up.
    pub fn answer_by_default(&self, answer: Answer) {
        self.inner.lock().unwrap().default = answer;
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    /// The requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(Hit::accepted).collect()
    }
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (at, wall) = (Instant::now(), SystemTime::now());
    let answer = {
        let mut inner = inner.lock().unwrap();
        inner
            .script
            .pop_front()
            .unwrap_or_else(|| inner.default.clone())
    };
    let retry_header = answer.retry_after.map(|r| match r {
        RetryAfter::Seconds(s) => s.to_string(),
        RetryAfter::DateIn(d) => httpdate::fmt_http_date(wall + d),
    });
    // What the header says (an HTTP-date has whole seconds).
    let retry_at = answer
        .retry_after
        .zip(retry_header.as_deref())
        .map(|(r, h)| match r {
            RetryAfter::Seconds(s) => wall + Duration::from_secs(s),
            RetryAfter::DateIn(_) => httpdate::parse_http_date(h).unwrap(),
        });
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    inner.lock().unwrap().hits.push(Hit {
        at,
        wall,
        path: uri.path().to_owned(),
        headers,
        body,
        status: answer.status,
        retry_at,
    });
    let status = StatusCode::from_u16(answer.status).unwrap();
    let mut response = (status, format!("scripted {}", answer.status)).into_response();
    if let Some(value) = retry_header {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    response
}
