//! Delivery outcomes and latencies of notifications, by channel (rendered by the metrics).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// Delivery outcomes of notifications, by channel.
#[derive(Debug, Clone)]
pub struct NotifyMetrics {
    pub outcomes: IntCounterVec,
    /// From enqueue (the commit of what caused it) to delivery.
    pub delay: HistogramVec,
    /// From what caused an alert notification (its breaching result's
    /// arrival) to the first delivery attempt starting.
    pub first_attempt: HistogramVec,
}

impl Default for NotifyMetrics {
    fn default() -> Self {
        NotifyMetrics {
            outcomes: IntCounterVec::new(
                Opts::new(
                    "knowton_notifications_total",
                    "Notification delivery attempts by channel and outcome (delivered, retried, failed).",
                ),
                &["channel", "outcome"],
            )
            .expect("valid metric"),
            delay: HistogramVec::new(
                HistogramOpts::new(
                    "knowton_notification_delivery_delay_seconds",
                    "Time from a notification's enqueue to its delivery.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ]),
                &["channel"],
            )
            .expect("valid metric"),
            first_attempt: HistogramVec::new(
                HistogramOpts::new(
                    "knowton_alert_notification_latency_seconds",
                    "From a breaching result's arrival to its alert notification's first delivery attempt.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0,
                ]),
                &["channel"],
            )
            .expect("valid metric"),
        }
    }
}
