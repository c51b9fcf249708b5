//! Webhook and Slack delivery: one HTTP POST of a pre-rendered JSON body,
//! signed when the channel has a secret, and the response classified
//! (2xx delivered; 429 and 5xx and network errors retried, honouring
//! `Retry-After`; any other status permanent).

use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use sha2::Sha256;

use super::{Attempt, HttpDelivery};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Knowton-Signature";
/// Header carrying the message's idempotency key (also in webhook bodies).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Most characters of a response body kept in `last_error`.
const ERROR_BODY_CHARS: usize = 200;

/// Sends webhook and Slack messages.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    /// A client with `timeout` for the whole request; redirects are not
    /// followed (a POST must not turn into a GET somewhere else).
    pub fn new(timeout: Duration) -> Self {
        crate::client::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("knowton-coordinator/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is static and valid");
        HttpSender { client }
    }

    /// POSTs `delivery.body` to `delivery.url` with the idempotency key.
    pub async fn post(&self, delivery: &HttpDelivery, key: &str) -> Attempt {
        let mut request = self
            .client
            .post(&delivery.url)
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, key)
            .body(delivery.body.clone());
        if let Some(secret) = &delivery.secret {
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret, delivery.body.as_bytes()),
            );
        }
        let response = match request.send().await {
            Ok(response) => response,
            // Never the URL in an error: it may hold a token.
            Err(err) => {
                return Attempt::Retry {
                    error: error_chain(&err.without_url()),
                    after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let text = response.text().await.unwrap_or_default();
        let error = describe(status, &text);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retry {
                error,
                after: retry_after,
            }
        } else {
            Attempt::Permanent { error }
        }
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, as receivers verify it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!(
        "sha256={}",
        super::render::hex(&mac.finalize().into_bytes())
    )
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP-date
/// (a date in the past means now).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn describe(status: StatusCode, body: &str) -> String {
    let body: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_BODY_CHARS)
        .collect();
    let body = body.trim();
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    }
}

/// `err` and its causes, one line.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
