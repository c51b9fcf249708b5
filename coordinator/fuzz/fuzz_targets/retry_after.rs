//! A `Retry-After` header from arbitrary bytes, at an arbitrary now: never
//! a panic, and never a wait longer than the parser's cap.
#![no_main]

use std::time::{Duration, SystemTime};

use knowton_coordinator::notify::http::retry_after;
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

fuzz_target!(|data: &[u8]| {
    let [a, b, c, d, value @ ..] = data else {
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, value);
    let offset = u64::from(u32::from_le_bytes([*a, *b, *c, *d]));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(offset * 16);
    if let Some(wait) = retry_after(&headers, now) {
        assert!(wait <= Duration::from_secs(366 * 24 * 3600), "{wait:?}");
    }
});
