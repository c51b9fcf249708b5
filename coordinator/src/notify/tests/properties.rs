//! Property tests of Retry-After parsing and the retry policy.

use proptest::prelude::*;

use super::*;

/// Latest instant an HTTP-date can name (31 Dec 9999 23:59:59 UTC).
const LAST_HTTP_DATE: u64 = 253_402_300_799;

fn header(value: &str) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_str(value).ok()?);
    Some(headers)
}

proptest! {
    /// Whatever a receiver sends, parsing never panics and never asks
    /// for more than the cap.
    #[test]
    fn retry_after_never_panics(value in any::<Vec<u8>>(), now in 0..LAST_HTTP_DATE) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value);
            let wait = http::retry_after(&headers, now);
            prop_assert!(wait.is_none_or(|w| w <= http::MAX_RETRY_AFTER));
        }
    }

    /// Text that merely looks like a header value is handled the same.
    #[test]
    fn retry_after_of_printable_text_never_panics(value in "\\PC{0,64}") {
        if let Some(headers) = header(&value) {
            let _ = http::retry_after(&headers, SystemTime::now());
        }
    }

    /// Any number of digits: the number of seconds, capped; numbers
    /// past u64 do not overflow.
    #[test]
    fn delay_seconds_are_capped_not_overflowed(digits in "[0-9]{1,60}") {
        let headers = header(&digits).unwrap();
        let wait = http::retry_after(&headers, SystemTime::now()).unwrap();
        let expected = digits
            .parse::<u128>()
            .ok()
            .filter(|&s| s <= http::MAX_RETRY_AFTER.as_secs() as u128)
            .map_or(http::MAX_RETRY_AFTER, |s| Duration::from_secs(s as u64));
        prop_assert_eq!(wait, expected);
    }

    /// A date before now is now; a date after now is the time until it.
    #[test]
    fn dates_in_the_past_are_zero_and_future_dates_the_wait(
        at in 0..LAST_HTTP_DATE,
        offset in 0u64..10_000_000_000,
    ) {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
        let headers = header(&httpdate::fmt_http_date(at)).unwrap();
        let later = at + Duration::from_secs(offset);
        prop_assert_eq!(http::retry_after(&headers, later), Some(Duration::ZERO));
        if let Some(earlier) = at.checked_sub(Duration::from_secs(offset)) {
            prop_assert_eq!(
                http::retry_after(&headers, earlier),
                Some(Duration::from_secs(offset).min(http::MAX_RETRY_AFTER))
            );
        }
    }

    /// Whatever wait a receiver asks for and however many attempts
    /// were made, the retry decision never panics and never schedules
    /// past the maximum age.
    #[test]
    fn outcomes_never_overflow(
        asked in proptest::option::of(any::<u64>()),
        attempts in any::<i64>(),
        max_age in any::<u64>(),
        elapsed in 0i64..1_000_000,
    ) {
        let p = RetryPolicy {
            base: Duration::from_millis(1),
            max: Duration::from_secs(u64::MAX / 2),
            max_age: Duration::from_secs(max_age),
        };
        let created = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let now = created + chrono::Duration::seconds(elapsed);
        let attempt = Attempt::Retry {
            error: "HTTP 503".into(),
            after: asked.map(Duration::from_secs),
        };
        match p.outcome(attempt, attempts, created, now) {
            DeliveryOutcome::Retry { at, .. } => {
                prop_assert!(at >= now);
                let deadline = i64::try_from(max_age)
                    .ok()
                    .and_then(chrono::Duration::try_seconds)
                    .and_then(|age| created.checked_add_signed(age));
                if let Some(deadline) = deadline {
                    prop_assert!(at <= deadline);
                }
            }
            DeliveryOutcome::Failed { .. } => {}
            DeliveryOutcome::Delivered => prop_assert!(false, "a retry is never delivered"),
        }
    }
}
