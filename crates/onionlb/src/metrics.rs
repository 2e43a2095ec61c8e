//! Prometheus metrics, served on loopback when the configuration asks for
//! them (`metrics-listen: 127.0.0.1:PORT`).
//!
//! Counters are bumped where things happen; gauges are set from the
//! manager's state when a scrape comes. The endpoint speaks just enough HTTP for
//! a scraper: any request gets the OpenMetrics text.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

type Labels = Vec<(&'static str, String)>;

/// Every metric onionlb exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    live_instances: Family<Labels, Gauge>,
    drained_instances: Family<Labels, Gauge>,
    intro_points: Family<Labels, Gauge>,
    master_age: Family<Labels, Gauge>,
    instance_age: Family<Labels, Gauge>,
    uploads: Family<Labels, Counter>,
    fetch_failures: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    reconnects: Counter,
    control_connected: Gauge,
    disconnects: Family<Labels, Counter>,
    publications: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    probes: Family<Labels, Counter>,
}

/// One service's gauges, set together.
#[derive(Debug, Clone, Default)]
pub struct ServiceGauges {
    /// The master address.
    pub service: String,
    /// Instances whose intro points are published.
    pub live_instances: i64,
    /// Instances drained on purpose.
    pub drained_instances: i64,
    /// Intro points published per slot (first, second).
    pub intro_points: [Option<i64>; 2],
    /// Seconds since each slot's descriptor was published.
    pub master_age: [Option<i64>; 2],
    /// Seconds since each instance's descriptor was received, by name.
    pub instance_age: Vec<(String, i64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("onionlb"),
            live_instances: Family::default(),
            drained_instances: Family::default(),
            intro_points: Family::default(),
            master_age: Family::default(),
            instance_age: Family::default(),
            uploads: Family::default(),
            fetch_failures: Family::default(),
            refused: Family::default(),
            reconnects: Counter::default(),
            control_connected: Gauge::default(),
            disconnects: Family::default(),
            publications: Family::default(),
            reloads: Family::default(),
            probes: Family::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "live_instances",
            "Instances whose intro points are in the master descriptors",
            metrics.live_instances.clone(),
        );
        r.register(
            "drained_instances",
            "Instances drained on purpose (onionlb drain), out of the master descriptors until undrained",
            metrics.drained_instances.clone(),
        );
        r.register(
            "intro_points_published",
            "Intro points in the last published master descriptor(s), per slot",
            metrics.intro_points.clone(),
        );
        r.register(
            "master_descriptor_age_seconds",
            "Seconds since the master descriptor of a slot was published",
            metrics.master_age.clone(),
        );
        r.register(
            "instance_descriptor_age_seconds",
            "Seconds since an instance's descriptor was last received",
            metrics.instance_age.clone(),
        );
        r.register(
            "uploads",
            "Master descriptor uploads per HSDir, by result: attempted, accepted, failed",
            metrics.uploads.clone(),
        );
        r.register(
            "fetch_failures",
            "Failed fetches of an instance's descriptor from an HSDir",
            metrics.fetch_failures.clone(),
        );
        r.register(
            "descriptors_refused",
            "Instance descriptors refused, by instance and reason: replay, wrong_key, too_large, untimely, invalid",
            metrics.refused.clone(),
        );
        r.register(
            "control_reconnects",
            "Reconnections to the management tor's control port",
            metrics.reconnects.clone(),
        );
        r.register(
            "control_connected",
            "1 while the control connection to the management tor is up",
            metrics.control_connected.clone(),
        );
        r.register(
            "control_disconnects",
            "Control connections to the management tor that ended, by reason: timeout, protocol, event_queue_full, io, closed",
            metrics.disconnects.clone(),
        );
        r.register(
            "publications",
            "Master descriptors built and sent, per service and slot, by reason: first, new_period, intro_points_changed, hsdirs_changed, age",
            metrics.publications.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by result: applied, refused (the running configuration stays)",
            metrics.reloads.clone(),
        );
        r.register(
            "probes",
            "Probes of instances without an agent through the management tor, by result: passed, refused, timeout, unreachable (the SOCKS port failed)",
            metrics.probes.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// An upload of `service`'s descriptor to `hsdir` was sent, accepted
    /// or refused (`result`).
    pub fn upload(&self, service: &str, hsdir: &str, result: &'static str) {
        self.uploads
            .get_or_create(&vec![
                ("service", service.to_owned()),
                ("hsdir", hsdir.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    /// A fetch of `instance`'s descriptor failed.
    pub fn fetch_failed(&self, instance: &str) {
        self.fetch_failures
            .get_or_create(&vec![("instance", instance.to_owned())])
            .inc();
    }

    /// A descriptor of `instance` was refused, for `reason`.
    pub fn refused(&self, instance: &str, reason: &'static str) {
        self.refused
            .get_or_create(&vec![
                ("instance", instance.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// `service`'s descriptor for `slot` was published, for `reason`.
    pub fn published(&self, service: &str, slot: &'static str, reason: &'static str) {
        self.publications
            .get_or_create(&vec![
                ("service", service.to_owned()),
                ("slot", slot.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// A configuration reload was applied or refused (`result`).
    pub fn reloaded(&self, result: &'static str) {
        self.reloads
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// A probe ended with `result`.
    pub fn probed(&self, result: &'static str) {
        self.probes
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// The control connection was re-established.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// The control connection ended, for `reason`.
    pub fn disconnected(&self, reason: &'static str) {
        self.disconnects
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Whether the control connection is up.
    pub fn set_control_connected(&self, connected: bool) {
        self.control_connected.set(i64::from(connected));
    }

    /// Replaces every gauge with `services`' values, so services and
    /// instances that went away vanish from the output.
    pub fn set_gauges(&self, services: &[ServiceGauges]) {
        self.live_instances.clear();
        self.drained_instances.clear();
        self.intro_points.clear();
        self.master_age.clear();
        self.instance_age.clear();
        for s in services {
            let service = || ("service", s.service.clone());
            self.live_instances
                .get_or_create(&vec![service()])
                .set(s.live_instances);
            self.drained_instances
                .get_or_create(&vec![service()])
                .set(s.drained_instances);
            for (slot, name) in ["first", "second"].into_iter().enumerate() {
                let labels = vec![service(), ("slot", name.to_owned())];
                if let Some(n) = s.intro_points[slot] {
                    self.intro_points.get_or_create(&labels).set(n);
                }
                if let Some(age) = s.master_age[slot] {
                    self.master_age.get_or_create(&labels).set(age);
                }
            }
            for (instance, age) in &s.instance_age {
                self.instance_age
                    .get_or_create(&vec![service(), ("instance", instance.clone())])
                    .set(*age);
            }
        }
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Serves `metrics` on `addr`, which must be a loopback address: the
/// metrics name every instance and HSDir, which is nobody else's business.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    daemon: crate::answer::Asker,
) -> anyhow::Result<MetricsServer> {
    serve_with(addr, OPENMETRICS, move || {
        let metrics = Arc::clone(&metrics);
        let daemon = daemon.clone();
        async move {
            // A daemon too busy to answer in time: the last gauges.
            daemon.refresh_gauges().await;
            metrics.render()
        }
    })
    .await
}

/// The content type of what [`Metrics::render`] writes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of Prometheus's plain text format, which tor's
/// MetricsPort writes.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the text `render` makes for each scrape on `addr`, which must be
/// a loopback address, as `content_type`, to at most
/// [`crate::answer::MAX_CLIENTS`] scrapers at once.
pub async fn serve_with<F, Fut>(
    addr: SocketAddr,
    content_type: &'static str,
    render: F,
) -> anyhow::Result<MetricsServer>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    if !addr.ip().is_loopback() {
        bail!(
            "metrics-listen {addr} is not a loopback address; metrics are served on loopback only"
        );
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics scrapes on {addr}"))?;
    tracing::info!("metrics at http://{addr}/metrics");
    let task = tokio::spawn(async move {
        let places = crate::answer::Places::default();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let Some(place) = places.take() else {
                continue;
            };
            let body = render();
            tokio::spawn(async move {
                let _place = place;
                // The request itself does not matter; read what is there.
                let mut request = [0u8; 1024];
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut request),
                )
                .await;
                let body = body.await;
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                crate::answer::send_and_close(stream, &[head.as_bytes(), body.as_bytes()]).await;
            });
        }
    });
    Ok(MetricsServer {
        task: Mutex::new(Some(task)),
    })
}

/// The running endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn gauges_and_counters_render_with_labels_and_vanish_when_gone() {
        let metrics = Metrics::default();
        metrics.upload("m.onion", "AA", "attempted");
        metrics.upload("m.onion", "AA", "accepted");
        metrics.fetch_failed("web1");
        metrics.refused("web1", "replay");
        metrics.reconnected();
        metrics.published("m.onion", "first", "first");
        metrics.reloaded("refused");
        metrics.probed("timeout");
        metrics.set_gauges(&[ServiceGauges {
            service: "m.onion".into(),
            live_instances: 2,
            drained_instances: 1,
            intro_points: [Some(6), None],
            master_age: [Some(30), None],
            instance_age: vec![("web1".into(), 12)],
        }]);
        let text = metrics.render();
        for line in [
            "onionlb_live_instances{service=\"m.onion\"} 2",
            "onionlb_drained_instances{service=\"m.onion\"} 1",
            "onionlb_probes_total{result=\"timeout\"} 1",
            "onionlb_intro_points_published{service=\"m.onion\",slot=\"first\"} 6",
            "onionlb_master_descriptor_age_seconds{service=\"m.onion\",slot=\"first\"} 30",
            "onionlb_instance_descriptor_age_seconds{service=\"m.onion\",instance=\"web1\"} 12",
            "onionlb_uploads_total{service=\"m.onion\",hsdir=\"AA\",result=\"accepted\"} 1",
            "onionlb_fetch_failures_total{instance=\"web1\"} 1",
            "onionlb_descriptors_refused_total{instance=\"web1\",reason=\"replay\"} 1",
            "onionlb_control_reconnects_total 1",
            "onionlb_publications_total{service=\"m.onion\",slot=\"first\",reason=\"first\"} 1",
            "onionlb_config_reloads_total{result=\"refused\"} 1",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        assert!(!text.contains("slot=\"second\""), "{text}");
        metrics.set_gauges(&[]);
        assert!(!metrics.render().contains("onionlb_live_instances{"));
    }

    /// The series names a scrape can hold: each gauge's name, each
    /// counter's with `_total`, read from the `# TYPE` lines of a render
    /// where every family has a sample (an empty family is not rendered).
    fn exported() -> std::collections::BTreeSet<String> {
        let metrics = Metrics::default();
        metrics.upload("m.onion", "AA", "accepted");
        metrics.fetch_failed("web1");
        metrics.refused("web1", "replay");
        metrics.published("m.onion", "first", "first");
        metrics.reloaded("applied");
        metrics.probed("passed");
        metrics.reconnected();
        metrics.disconnected("timeout");
        metrics.set_gauges(&[ServiceGauges {
            service: "m.onion".into(),
            live_instances: 1,
            drained_instances: 0,
            intro_points: [Some(3), Some(3)],
            master_age: [Some(1), Some(1)],
            instance_age: vec![("web1".into(), 1)],
        }]);
        metrics
            .render()
            .lines()
            .filter_map(|line| {
                let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
                let (name, kind) = (words.next()?, words.next()?);
                Some(match kind {
                    "counter" => format!("{name}_total"),
                    _ => name.to_owned(),
                })
            })
            .collect()
    }

    /// Every `onionlb_...` name in a PromQL expression.
    fn queried(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("onionlb_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_grafana_dashboard_queries_only_metrics_onionlb_exports() {
        let text = include_str!("../../../contrib/grafana/onionlb.json");
        let dashboard: serde_json::Value = serde_json::from_str(text).unwrap();
        let exported = exported();
        assert!(exported.contains("onionlb_uploads_total"), "{exported:?}");
        let mut seen = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let names = queried(expr);
                assert!(!names.is_empty(), "{expr}");
                for name in names {
                    assert!(
                        exported.contains(&name),
                        "panel {:?} queries {name}, which onionlb does not export",
                        panel["title"]
                    );
                    seen.insert(name);
                }
            }
        }
        // And every metric has a panel.
        let missing: Vec<_> = exported.difference(&seen).collect();
        assert!(missing.is_empty(), "no panel shows {missing:?}");
    }

    #[tokio::test]
    async fn only_loopback_is_served() {
        let addr: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let (asker, _daemon) = crate::answer::Asker::new();
        let err = serve(addr, Arc::new(Metrics::default()), asker)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
    }
}
