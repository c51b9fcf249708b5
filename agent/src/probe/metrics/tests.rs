//! Tests of the Prometheus text parser and of the rates derived between scrapes.

use std::time::Duration;

use super::*;

const NODE_APP: &str = r#"# HELP http_requests_total Total HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="GET",route="/api/courses",code="200"} 1027
http_requests_total{code="200",method="POST",route="/api/login"} 73
http_requests_total{route="/api/courses",code="503",method="GET"} 4
http_requests_total { method = "GET" , code = "500" , } 1 1712345678000
http_requests_total{code="404",method="GET",route="/missing"} 9
# HELP knowton_tenant_users Users of the tenant.
# TYPE knowton_tenant_users gauge
knowton_tenant_users 42
process_cpu_seconds_total 12.5
http_request_duration_seconds_bucket{le="+Inf",code="200"} 1100
nodejs_heap_size_used_bytes 1.2e7
"#;

#[test]
fn sums_request_counters_and_reads_the_user_gauge() {
    let scrape = parse(NODE_APP).unwrap();
    assert_eq!(
        scrape,
        Scrape {
            requests_total: Some(1027.0 + 73.0 + 4.0 + 1.0 + 9.0),
            errors_5xx_total: Some(5.0),
            users: Some(42.0),
        }
    );
}

#[test]
fn labels_may_come_in_any_order_and_hold_escaped_quotes() {
    let text = concat!(
        r#"http_requests_total{path="/say \"hi\"\\",code="502"} 3"#,
        "\n",
        r#"http_requests_total{code="200",path="a,b} \"c\"=d"} 7"#,
        "\n",
    );
    let scrape = parse(text).unwrap();
    assert_eq!(scrape.requests_total, Some(10.0));
    assert_eq!(scrape.errors_5xx_total, Some(3.0));

    let sample = parse_line(r#"m{a="x\"y\\z\nw",b=""} 1"#).unwrap();
    assert_eq!(sample.label("a"), Some("x\"y\\z\nw"));
    assert_eq!(sample.label("b"), Some(""));
}

#[test]
fn missing_metrics_stay_missing_not_zero() {
    let scrape = parse("knowton_tenant_users 3\n").unwrap();
    assert_eq!(scrape.requests_total, None);
    assert_eq!(scrape.errors_5xx_total, None);
    assert_eq!(scrape.users, Some(3.0));

    let scrape = parse("http_requests_total{code=\"200\"} 5\n").unwrap();
    assert_eq!(scrape.requests_total, Some(5.0));
    assert_eq!(scrape.errors_5xx_total, Some(0.0), "exposed, none failed");
    assert_eq!(scrape.users, None);

    assert_eq!(parse("").unwrap(), Scrape::default());
    assert_eq!(parse("# only comments\n\n").unwrap(), Scrape::default());
}

#[test]
fn similar_names_are_not_confused() {
    let text = "http_requests_total_created{code=\"500\"} 1.7e9\n\
                knowton_tenant_users_max 99\n\
                xhttp_requests_total{code=\"500\"} 1\n";
    assert_eq!(parse(text).unwrap(), Scrape::default());
}

#[test]
fn special_values_parse() {
    assert_eq!(parse_line("m +Inf").unwrap().value, f64::INFINITY);
    assert!(parse_line("m NaN").unwrap().value.is_nan());
    assert_eq!(parse_line("m{} -1.5e3").unwrap().value, -1500.0);
}

#[test]
fn malformed_lines_fail_the_scrape() {
    for (text, line) in [
        ("<html><body>502 Bad Gateway</body></html>", 1),
        ("{\"status\":\"ok\"}", 1),
        ("knowton_tenant_users 1\nok", 2),
        ("m{code=\"200\" 1", 1),
        ("m{code=\"200} 1", 1),
        ("m{code=200} 1", 1),
        ("m{=\"x\"} 1", 1),
        ("m abc", 1),
        ("m 1 2 3", 1),
        ("m 1 12.5", 1),
        ("m{a=\"b\"}1", 1),
        ("m", 1),
    ] {
        let err = parse(text).expect_err(text);
        assert_eq!(err.line, line, "{text}: {err}");
    }
}

fn counters(at: Instant, requests: Option<f64>, errors: Option<f64>) -> Counters {
    Counters {
        at,
        requests_total: requests,
        errors_5xx_total: errors,
    }
}

#[test]
fn rate_and_ratio_come_from_the_increase_between_scrapes() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(10);
    let (rate, ratio) = derive(
        &counters(t0, Some(100.0), Some(10.0)),
        &counters(t1, Some(300.0), Some(60.0)),
    );
    assert_eq!(rate, Some(20.0));
    assert_eq!(ratio, Some(0.25));

    let (rate, ratio) = derive(
        &counters(t0, Some(100.0), Some(10.0)),
        &counters(t1, Some(100.0), Some(10.0)),
    );
    assert_eq!(rate, Some(0.0));
    assert_eq!(ratio, None, "no requests, no ratio");
}

#[test]
fn a_counter_reset_gives_no_rate_for_that_interval() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(10);
    let t2 = t1 + Duration::from_secs(10);
    let before = counters(t0, Some(5000.0), Some(40.0));
    let restarted = counters(t1, Some(12.0), Some(1.0));
    assert_eq!(derive(&before, &restarted), (None, None));
    let later = counters(t2, Some(112.0), Some(6.0));
    assert_eq!(derive(&restarted, &later), (Some(10.0), Some(0.05)));
}

#[test]
fn a_missing_counter_gives_no_rate() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        derive(
            &counters(t0, None, None),
            &counters(t1, Some(5.0), Some(0.0))
        ),
        (None, None)
    );
    assert_eq!(
        derive(
            &counters(t0, Some(1.0), Some(0.0)),
            &counters(t1, None, None)
        ),
        (None, None)
    );
}

#[test]
fn history_derives_per_pod_and_forgets_removed_pods() {
    let history = History::default();
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(2);
    let scrape = |requests| Scrape {
        requests_total: Some(requests),
        errors_5xx_total: Some(0.0),
        users: None,
    };
    let first = history.sample("acme", "web-0", t0, scrape(10.0));
    assert!(first.scraped);
    assert_eq!(first.request_rate_per_second, None);
    assert_eq!(first.users, None);
    let other = history.sample("globex", "web-0", t0, scrape(999.0));
    assert_eq!(other.request_rate_per_second, None);
    let second = history.sample("acme", "web-0", t1, scrape(30.0));
    assert_eq!(second.request_rate_per_second, Some(10.0));
    assert_eq!(second.error_ratio, Some(0.0));

    history.retain(|tenant, _| tenant == "globex");
    let again = history.sample("acme", "web-0", t1, scrape(40.0));
    assert_eq!(again.request_rate_per_second, None);
}

mod properties {
    //! Whatever a pod exposes: no panic; and what a valid exposition says is
    //! what is read, whatever the label order, escapes and timestamps.

    use proptest::prelude::*;

    use super::*;

    /// One series: (metric: 0 requests, 1 users, 2 other), status code,
    /// value, a free label value, labels reversed, a timestamp.
    type Series = (u8, u16, u32, String, bool, Option<i64>);

    fn escape(value: &str) -> String {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    fn render(series: &[Series]) -> String {
        let mut text = String::from("# HELP http_requests_total Requests.\n");
        for (metric, code, value, free, reversed, timestamp) in series {
            let name = match metric % 3 {
                0 => "http_requests_total",
                1 => "knowton_tenant_users",
                _ => "process_open_fds",
            };
            let mut labels = [
                format!("code=\"{code}\""),
                format!("path=\"{}\"", escape(free)),
            ];
            if *reversed {
                labels.reverse();
            }
            text.push_str(&format!("{name}{{{}}} {value}", labels.join(",")));
            if let Some(ts) = timestamp {
                text.push_str(&format!(" {ts}"));
            }
            text.push('\n');
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn text_near_the_format_never_panics(
            text in "[a-z_:{}=\",\\\\ \t\n#0-9.eE+-]{0,400}",
        ) {
            let _ = parse(&text);
        }

        #[test]
        fn a_valid_exposition_reads_back_its_sums(
            series in proptest::collection::vec(
                (any::<u8>(), 100u16..600, 0u32..1_000_000, "\\PC{0,10}", any::<bool>(), any::<Option<i64>>()),
                0..40,
            ),
        ) {
            let scrape = parse(&render(&series)).unwrap();
            let sum = |keep: &dyn Fn(&Series) -> bool| -> f64 {
                series.iter().filter(|s| keep(s)).map(|s| f64::from(s.2)).sum()
            };
            let any_requests = series.iter().any(|s| s.0 % 3 == 0);
            let any_users = series.iter().any(|s| s.0 % 3 == 1);
            prop_assert_eq!(scrape.requests_total, any_requests.then(|| sum(&|s| s.0 % 3 == 0)));
            prop_assert_eq!(
                scrape.errors_5xx_total,
                any_requests.then(|| sum(&|s| s.0 % 3 == 0 && (500..600).contains(&s.1)))
            );
            prop_assert_eq!(scrape.users, any_users.then(|| sum(&|s| s.0 % 3 == 1)));
        }
    }
}
