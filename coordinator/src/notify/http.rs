//! Webhook and Slack delivery: one HTTP POST of a pre-rendered JSON body,
//! signed when the channel has a secret, and the response classified
//! (2xx delivered; 429 and 5xx and network errors retried, honouring
//! `Retry-After`; any other status permanent).
//!
//! Receivers are outsiders: at most [`MAX_RESPONSE_BODY`] bytes of a
//! response are read (for the error message), then the connection is
//! dropped; bodies are never decompressed. A tenant's URL goes through a
//! client that connects only to addresses its [`AddressPolicy`] allows
//! (checked after DNS resolution, and for literal addresses before
//! sending), over https, with no proxy; the operator's URLs through one
//! without that policy.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use sha2::Sha256;

use super::address::{AddressPolicy, HostRefused, PolicyResolver};
use super::{Attempt, HttpDelivery, NotifySettings};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Knowton-Signature";
/// Header carrying the message's idempotency key (also in webhook bodies).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Most characters of a response body kept in `last_error`.
const ERROR_BODY_CHARS: usize = 200;
/// Most bytes of a response body ever read, from any receiver.
pub const MAX_RESPONSE_BODY: usize = 4096;
/// Longest wait for those bytes once the status line has arrived.
const BODY_WAIT: Duration = Duration::from_secs(2);
/// Longest `Retry-After` honoured as given (a longer one is this long).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(366 * 86_400);

/// Sends webhook and Slack messages.
#[derive(Debug, Clone)]
pub struct HttpSender {
    /// For the operator's URLs (`serve` flags): any address.
    operator: reqwest::Client,
    /// For tenants' URLs: https, addresses checked by the policy.
    tenant: reqwest::Client,
    policy: Arc<AddressPolicy>,
    /// The operator's URLs: a row written before rows recorded whose
    /// channel they are ([`HttpDelivery::operator`]) counts as the
    /// operator's if its URL is one of these.
    operator_urls: Vec<String>,
}

impl HttpSender {
    /// Clients with the delivery timeout for the whole request; redirects
    /// are not followed (a POST must not turn into a GET somewhere else,
    /// nor a tenant's request go where the policy did not look).
    pub fn new(settings: &NotifySettings) -> Self {
        crate::certs::install_crypto_provider();
        let policy = Arc::new(settings.tenant_addresses.clone());
        let builder = || {
            let timeout = settings.timeout;
            let builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("knowton-coordinator/", env!("CARGO_PKG_VERSION")));
            if settings.extra_roots.is_empty() {
                builder
            } else {
                builder.tls_certs_merge(settings.extra_roots.iter().map(|der| {
                    reqwest::Certificate::from_der(der).expect("a DER certificate is taken as is")
                }))
            }
        };
        // (Extra roots were checked to be usable trust anchors when the
        // flags were validated.)
        let operator = builder()
            .build()
            .expect("the HTTP client configuration is static and valid");
        let tenant = builder()
            .https_only(true)
            // A proxy would resolve and connect where the policy cannot see.
            .no_proxy()
            .dns_resolver(PolicyResolver::new(policy.clone()))
            .build()
            .expect("the HTTP client configuration is static and valid");
        let global = &settings.global;
        let operator_urls = global
            .webhook
            .iter()
            .map(|w| w.url.clone())
            .chain(global.slack.iter().map(|s| s.url.clone()))
            .collect();
        HttpSender {
            operator,
            tenant,
            policy,
            operator_urls,
        }
    }

    /// The client for `delivery`, or why it must not be sent: a tenant's
    /// URL must be https to an address the policy allows.
    fn client_for(&self, delivery: &HttpDelivery) -> Result<&reqwest::Client, Attempt> {
        if delivery.operator || self.operator_urls.contains(&delivery.url) {
            return Ok(&self.operator);
        }
        let permanent = |error: String| Attempt::Permanent { error };
        let url = Url::parse(&delivery.url)
            .map_err(|_| permanent("the receiver's URL does not parse".to_owned()))?;
        if url.scheme() != "https" {
            return Err(permanent(
                "tenant notification URLs must use https".to_owned(),
            ));
        }
        self.policy
            .check_url(&url)
            .map_err(|refusal| permanent(refusal.to_string()))?;
        Ok(&self.tenant)
    }

    /// POSTs `delivery.body` to `delivery.url` with the idempotency key.
    pub async fn post(&self, delivery: &HttpDelivery, key: &str) -> Attempt {
        let client = match self.client_for(delivery) {
            Ok(client) => client,
            Err(refused) => return refused,
        };
        let mut request = client
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
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                let err = err.without_url();
                if let Some(refused) = find_cause::<HostRefused>(&err) {
                    return Attempt::Permanent {
                        error: refused.to_string(),
                    };
                }
                // Never the URL in an error: it may hold a token.
                return Attempt::Retry {
                    error: knowton_common::error_chain(&err),
                    after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            // Dropped unread: the connection closes.
            return Attempt::Delivered;
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let head = read_capped(&mut response, MAX_RESPONSE_BODY, BODY_WAIT).await;
        drop(response);
        let error = describe(status, &String::from_utf8_lossy(&head));
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
        knowton_common::hex(&mac.finalize().into_bytes())
    )
}

/// At most the first `cap` bytes of `response`'s body, waiting at most
/// `wait` for them; the rest is never read. Drop the response afterwards:
/// that closes an HTTP/1.1 connection (or resets an HTTP/2 stream), so a
/// receiver sending an endless body costs at most `cap` bytes.
pub async fn read_capped(response: &mut reqwest::Response, cap: usize, wait: Duration) -> Vec<u8> {
    let mut head = Vec::new();
    let read = async {
        while head.len() < cap {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap - head.len();
                    head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
    };
    // Too slow: what arrived is enough for an error message.
    let _ = tokio::time::timeout(wait, read).await;
    head
}

/// The first cause of type `E` in `err`'s chain.
fn find_cause<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(found) = cause.downcast_ref::<E>() {
            return Some(found);
        }
        next = cause.source();
    }
    None
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP-date
/// (a date in the past means now), at most [`MAX_RETRY_AFTER`]. `None`
/// when absent or malformed.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "very long".
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
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
