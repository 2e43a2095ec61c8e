//! The balancer's Prometheus metrics: counters bumped where things happen,
//! per-instance gauges set from the pool when a scrape comes.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use onionlb_core::bridge::Pool;

type Labels = Vec<(&'static str, String)>;

/// Every metric `onionlb bridge extor` exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    transport_failures: Family<Labels, Counter>,
    dial_failures: Family<Labels, Counter>,
    denied: Family<Labels, Counter>,
    refused: Counter,
    open: Family<Labels, Gauge>,
    up: Family<Labels, Gauge>,
    drained: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("onionlb_bridge"),
            connections: Family::default(),
            bytes: Family::default(),
            transport_failures: Family::default(),
            dial_failures: Family::default(),
            denied: Family::default(),
            refused: Counter::default(),
            open: Family::default(),
            up: Family::default(),
            drained: Family::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "connections",
            "Transport connections handed to an instance (its tor said OKAY)",
            metrics.connections.clone(),
        );
        r.register(
            "bytes",
            "Bytes relayed, per instance and direction (to_tor, from_tor)",
            metrics.bytes.clone(),
        );
        r.register(
            "transport_handshake_failures",
            "Transport connections closed before DONE, by reason",
            metrics.transport_failures.clone(),
        );
        r.register(
            "dial_failures",
            "Attempts to hand a connection to an instance that failed (another was tried), by reason",
            metrics.dial_failures.clone(),
        );
        r.register(
            "denied",
            "Connections an instance's tor answered with DENY",
            metrics.denied.clone(),
        );
        r.register(
            "refused",
            "Transport connections closed at once: too many open, or no instance left to try",
            metrics.refused.clone(),
        );
        r.register(
            "open_connections",
            "Connections open now, per instance",
            metrics.open.clone(),
        );
        r.register(
            "instance_up",
            "1 if the instance's health checks pass",
            metrics.up.clone(),
        );
        r.register(
            "instance_drained",
            "1 if the instance is drained (takes no new connections)",
            metrics.drained.clone(),
        );
        metrics
    }
}

fn instance(name: &str) -> Labels {
    vec![("instance", name.to_owned())]
}

impl Metrics {
    /// A connection went to `name`.
    pub fn connected(&self, name: &str) {
        self.connections.get_or_create(&instance(name)).inc();
    }

    /// The byte counters of `name`, to give the relay.
    pub fn byte_counters(&self, name: &str) -> (Counter, Counter) {
        let counter = |direction: &str| {
            let labels = vec![
                ("instance", name.to_owned()),
                ("direction", direction.to_owned()),
            ];
            self.bytes.get_or_create(&labels).clone()
        };
        (counter("to_tor"), counter("from_tor"))
    }

    /// A transport's handshake failed for `reason`.
    pub fn transport_failed(&self, reason: &'static str) {
        self.transport_failures
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Handing a connection to `name` failed for `reason`.
    pub fn dial_failed(&self, name: &str, reason: &'static str) {
        let labels = vec![("instance", name.to_owned()), ("reason", reason.to_owned())];
        self.dial_failures.get_or_create(&labels).inc();
    }

    /// `name`'s tor denied a connection.
    pub fn denied(&self, name: &str) {
        self.denied.get_or_create(&instance(name)).inc();
    }

    /// A transport connection was closed unserved.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// The OpenMetrics text, with the gauges read from `pool`.
    pub fn render(&self, pool: &Pool) -> String {
        for member in pool.members() {
            let labels = instance(member.name());
            let open = i64::try_from(member.open()).unwrap_or(i64::MAX);
            self.open.get_or_create(&labels).set(open);
            self.up
                .get_or_create(&labels)
                .set(i64::from(member.is_up()));
            self.drained
                .get_or_create(&labels)
                .set(i64::from(member.is_drained()));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
