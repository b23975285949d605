//! Prometheus metrics: request counts and latency per route, orders by state, outbox
//! depth. Each box instance owns its registry (no global state), so tests can run many.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub orders: IntGaugeVec,
    pub outbox_depth: IntGauge,
    pub outbox_last_seq: IntGauge,
    pub sync_connected: IntGauge,
    pub sync_unacked_events: IntGauge,
    pub sync_oldest_unacked_age: IntGauge,
    pub sync_last_success: IntGauge,
    pub login_failures: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_refused: prometheus::IntCounter,
    pub login_refused: IntCounterVec,
    pub login_accounts_backing_off: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ],
            ),
            &["method", "route"],
        )
        .expect("valid metric");
        let orders = IntGaugeVec::new(
            Opts::new("orders", "Orders of the current service day by state"),
            &["state"],
        )
        .expect("valid metric");
        let outbox_depth = IntGauge::new(
            "outbox_depth",
            "Outbox events not yet acknowledged by the cloud",
        )
        .expect("valid metric");
        let outbox_last_seq = IntGauge::new("outbox_last_seq", "Highest outbox sequence number")
            .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let sync_connected = gauge(
            "sync_connected",
            "1 while the link to the campus cloud is up",
        );
        let sync_unacked_events = gauge(
            "sync_unacked_events",
            "Outbox events the cloud has not acknowledged",
        );
        let sync_oldest_unacked_age = gauge(
            "sync_oldest_unacked_age_seconds",
            "Age of the oldest outbox event the cloud has not acknowledged",
        );
        let sync_last_success = gauge(
            "sync_last_success_timestamp_seconds",
            "Unix time of the last successful exchange with the cloud",
        );
        let login_failures = IntCounterVec::new(
            Opts::new(
                "login_failures_total",
                "Logins refused for a wrong secret or an unknown account, by space (student, staff)",
            ),
            &["space"],
        )
        .expect("valid metric");
        let login_refused = IntCounterVec::new(
            Opts::new(
                "login_refused_total",
                "Logins refused before the secret was checked, by space and reason \
                 (source_rate, source_backoff, account_backoff); a rising rate means guessing",
            ),
            &["space", "reason"],
        )
        .expect("valid metric");
        let login_accounts_backing_off = IntGaugeVec::new(
            Opts::new(
                "login_accounts_backing_off",
                "Accounts whose recent failed logins make failing sources wait",
            ),
            &["space"],
        )
        .expect("valid metric");
        let connections_open = gauge("http_connections_open", "Open HTTP connections");
        let connections_refused = prometheus::IntCounter::new(
            "http_connections_refused_total",
            "Connections closed on arrival because the connection cap was reached",
        )
        .expect("valid metric");
        for c in [
            Box::new(login_failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(login_refused.clone()),
            Box::new(login_accounts_backing_off.clone()),
            Box::new(sync_connected.clone()),
            Box::new(sync_unacked_events.clone()),
            Box::new(sync_oldest_unacked_age.clone()),
            Box::new(sync_last_success.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(orders.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(outbox_last_seq.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            latency,
            orders,
            outbox_depth,
            outbox_last_seq,
            sync_connected,
            sync_unacked_events,
            sync_oldest_unacked_age,
            sync_last_success,
            login_failures,
            connections_open,
            connections_refused,
            login_refused,
            login_accounts_backing_off,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
