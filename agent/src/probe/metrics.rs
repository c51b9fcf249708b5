//! Reads request counters and the user gauge from a pod's Prometheus text
//! exposition, and derives rates between consecutive scrapes of the same pod.

use std::collections::HashMap;
use std::sync::Mutex;

use knowton_proto::agent::v1::MetricsSample;
use tokio::time::Instant;

/// Counter of HTTP requests served, labelled with the status `code`.
const REQUESTS: &str = "http_requests_total";
/// Gauge of the tenant's users.
const USERS: &str = "knowton_tenant_users";

/// The values a scrape found; `None` when the metric was absent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Scrape {
    /// Sum of every `http_requests_total` series.
    pub(crate) requests_total: Option<f64>,
    /// Sum of the `http_requests_total` series with a 5xx `code` (0 when
    /// requests are exposed but none failed).
    pub(crate) errors_5xx_total: Option<f64>,
    /// Sum of the `knowton_tenant_users` series.
    pub(crate) users: Option<f64>,
}

/// A line that is not in the text format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) reason: &'static str,
}

/// Parses a text exposition; any malformed line fails the whole scrape, as
/// it does for Prometheus.
pub(crate) fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| ParseError {
            line: index + 1,
            reason,
        })?;
        match sample.name {
            REQUESTS => {
                *scrape.requests_total.get_or_insert(0.0) += sample.value;
                let errors = scrape.errors_5xx_total.get_or_insert(0.0);
                if sample.label("code").is_some_and(is_5xx) {
                    *errors += sample.value;
                }
            }
            USERS => *scrape.users.get_or_insert(0.0) += sample.value,
            _ => {}
        }
    }
    Ok(scrape)
}

fn is_5xx(code: &str) -> bool {
    code.len() == 3 && code.starts_with('5') && code.bytes().all(|b| b.is_ascii_digit())
}

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_line(line: &str) -> Result<Sample<'_>, &'static str> {
    let (name, mut rest) = take_name(line, true);
    if name.is_empty() {
        return Err("expected a metric name");
    }
    let mut labels = Vec::new();
    if let Some(after) = rest.trim_start().strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = take_name(rest, false);
            if label.is_empty() {
                return Err("expected a label name");
            }
            let Some(after) = after.trim_start().strip_prefix('=') else {
                return Err("expected `=` after a label name");
            };
            let Some(after) = after.trim_start().strip_prefix('"') else {
                return Err("expected a quoted label value");
            };
            let (value, after) = take_quoted(after)?;
            labels.push((label, value));
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("expected `,` or `}` after a label");
            }
        }
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value");
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or("expected a value")?
        .parse::<f64>()
        .map_err(|_| "the value is not a number")?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| "the timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value");
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Splits off a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or, without
/// `colons`, a label name.
fn take_name(text: &str, colons: bool) -> (&str, &str) {
    let end = text
        .char_indices()
        .find(|&(i, c)| {
            let ok = c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
            !(ok || (i > 0 && c.is_ascii_digit()))
        })
        .map_or(text.len(), |(i, _)| i);
    text.split_at(end)
}

/// Reads a label value up to its closing quote, undoing `\\`, `\"` and `\n`.
fn take_quoted(text: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, c)) => value.push(c),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("unterminated label value")
}

/// The counters of one scrape, kept to derive rates at the next one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) at: Instant,
    pub(crate) requests_total: Option<f64>,
    pub(crate) errors_5xx_total: Option<f64>,
}

/// Request rate and 5xx ratio between two scrapes; none across a counter
/// reset (a value that went down) or when a counter is missing.
pub(crate) fn derive(previous: &Counters, now: &Counters) -> (Option<f64>, Option<f64>) {
    let increase = |before: Option<f64>, after: Option<f64>| {
        let delta = after? - before?;
        (delta >= 0.0).then_some(delta)
    };
    let seconds = now.at.saturating_duration_since(previous.at).as_secs_f64();
    let requests = increase(previous.requests_total, now.requests_total);
    let rate = requests.filter(|_| seconds > 0.0).map(|r| r / seconds);
    let errors = increase(previous.errors_5xx_total, now.errors_5xx_total);
    let ratio = match (requests, errors) {
        (Some(requests), Some(errors)) if requests > 0.0 => Some((errors / requests).min(1.0)),
        _ => None,
    };
    (rate, ratio)
}

/// The previous scrape of each pod, keyed by tenant and pod.
#[derive(Debug, Default)]
pub(crate) struct History {
    previous: Mutex<HashMap<(String, String), Counters>>,
}

impl History {
    /// The sample for a successful scrape, with rates since the pod's
    /// previous successful scrape.
    pub(crate) fn sample(
        &self,
        tenant: &str,
        pod: &str,
        at: Instant,
        scrape: Scrape,
    ) -> MetricsSample {
        let now = Counters {
            at,
            requests_total: scrape.requests_total,
            errors_5xx_total: scrape.errors_5xx_total,
        };
        let previous = self.lock().insert((tenant.to_owned(), pod.to_owned()), now);
        let (rate, ratio) = previous.map_or((None, None), |p| derive(&p, &now));
        MetricsSample {
            scraped: true,
            requests_total: scrape.requests_total,
            errors_5xx_total: scrape.errors_5xx_total,
            users: scrape.users,
            request_rate_per_second: rate,
            error_ratio: ratio,
            ..MetricsSample::default()
        }
    }

    /// Forgets the pods for which `keep` is false.
    pub(crate) fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.lock().retain(|(tenant, pod), _| keep(tenant, pod));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Counters>> {
        // The map stays consistent even if a holder panicked.
        self.previous.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
