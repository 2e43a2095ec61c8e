//! The fleet's tors' own metrics, on the balancer's endpoint.
//!
//! Tor Metrics and an operator's dashboards see one bridge, but each tor
//! counts only its own share. With `--tor-metrics NAME=ADDR:PORT` (each
//! tor's `MetricsPort`), a scrape of the balancer also reads every tor's
//! metrics and serves each sample twice over: per tor with a `tor="NAME"`
//! label, and summed over the tors with `tor="all"`. (The label is not
//! `instance`: Prometheus sets that one to the scraped target.) Summary
//! quantiles are not summed; everything else tor exports (counters,
//! gauges, histogram buckets, sums and counts) adds up across processes.
//! A tor that does not answer within [`FETCH_TIMEOUT`] is left out of that
//! scrape and counted in `onionlb_bridge_tor_metrics_unreachable`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Time one tor's MetricsPort has to answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes read from one tor's MetricsPort.
const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Reads `addr`'s metrics text (the body of `GET /metrics`). Tor may keep
/// the connection open after its answer, so the body ends at its
/// `Content-Length`, or at the end of the connection without one.
pub async fn fetch(addr: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            raw.extend_from_slice(&buf[..n]);
            if raw.len() as u64 > MAX_BYTES {
                return None;
            }
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                if n == 0 {
                    return None;
                }
                continue;
            };
            let head = std::str::from_utf8(&raw[..end]).ok()?;
            if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
                return None;
            }
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            });
            let body = &raw[end + 4..];
            let done = match length {
                Some(length) => body.len() >= length,
                None => n == 0,
            };
            if done {
                let body = match length {
                    Some(length) => &body[..length],
                    None => body,
                };
                return String::from_utf8(body.to_vec()).ok();
            }
            if n == 0 {
                return None;
            }
        }
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// One sample line taken apart: metric name, its labels as written
/// (without braces, possibly empty), and its value.
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            if close < open {
                return None;
            }
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_at(line.find(' ')?),
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.strip_suffix('}')?),
        None => (series, ""),
    };
    Some((name, labels, value))
}

/// Reads every tor's MetricsPort at once and returns their merged text
/// ([`merge`]) with `onionlb_bridge_tor_metrics_unreachable` per tor.
pub async fn scrape(tors: &[(String, SocketAddr)]) -> String {
    let fetched = futures::future::join_all(tors.iter().map(|(_, addr)| fetch(*addr))).await;
    let mut sources = Vec::new();
    for ((name, _), text) in tors.iter().zip(&fetched) {
        if let Some(text) = text {
            sources.push((name.as_str(), text.as_str()));
        }
    }
    let mut text = merge(&sources);
    text.push_str("# HELP onionlb_bridge_tor_metrics_unreachable 1 if the tor's MetricsPort did not answer this scrape\n");
    text.push_str("# TYPE onionlb_bridge_tor_metrics_unreachable gauge\n");
    for ((name, _), fetched) in tors.iter().zip(&fetched) {
        let down = u8::from(fetched.is_none());
        text.push_str(&format!(
            "onionlb_bridge_tor_metrics_unreachable{{tor=\"{name}\"}} {down}\n"
        ));
    }
    text
}

/// Serves only the tors' metrics on `addr` until SIGTERM or SIGINT: the
/// summed endpoint for a fleet without the balancer (HAProxy over
/// compatibility shims).
pub async fn serve_alone(addr: SocketAddr, tors: Vec<(String, SocketAddr)>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let tors = std::sync::Arc::new(tors);
    let _server = crate::metrics::serve_with(addr, crate::metrics::PROMETHEUS_TEXT, move || {
        let tors = std::sync::Arc::clone(&tors);
        async move { scrape(&tors).await }
    })
    .await?;
    tracing::info!("the tors' metrics at http://{addr}/metrics");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("handling SIGTERM")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
    Ok(())
}

/// The metrics text of every tor, each sample labelled with its tor and
/// summed over them (`tor="all"`); `HELP` and `TYPE` lines once per
/// metric, as the first tor wrote them.
pub fn merge(sources: &[(&str, &str)]) -> String {
    let mut comments: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut per_tor: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut totals: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for (tor, text) in sources {
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.split_whitespace();
                if let (Some("HELP" | "TYPE"), Some(name)) = (words.next(), words.next()) {
                    let seen = comments.entry(name).or_default();
                    if !seen
                        .iter()
                        .any(|l| l.split_whitespace().nth(1) == line.split_whitespace().nth(1))
                    {
                        seen.push(line);
                    }
                }
                continue;
            }
            let Some((name, labels, value)) = sample(line) else {
                continue;
            };
            let tor_label = format!("tor=\"{tor}\"");
            let labelled = if labels.is_empty() {
                format!("{name}{{{tor_label}}} {value}")
            } else {
                format!("{name}{{{labels},{tor_label}}} {value}")
            };
            per_tor.entry(name).or_default().push(labelled);
            if !labels.contains("quantile=") {
                *totals.entry((name, labels)).or_default() += value;
            }
        }
    }
    let mut out = String::new();
    let family = |name: &str| {
        // Comments are keyed by family name; a sample's name may carry a
        // histogram or counter suffix.
        ["_total", "_bucket", "_sum", "_count", ""]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| comments.contains_key(f))
            })
            .unwrap_or(name)
            .to_owned()
    };
    let mut families: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for name in per_tor.keys() {
        families.entry(family(name)).or_default().push(name);
    }
    for (family, names) in families {
        for comment in comments.get(family.as_str()).into_iter().flatten() {
            out.push_str(comment);
            out.push('\n');
        }
        for name in names {
            for line in &per_tor[name] {
                out.push_str(line);
                out.push('\n');
            }
            for ((total_name, labels), value) in totals.range((name, "")..) {
                if *total_name != name {
                    break;
                }
                if labels.is_empty() {
                    out.push_str(&format!("{name}{{tor=\"all\"}} {value}\n"));
                } else {
                    out.push_str(&format!("{name}{{{labels},tor=\"all\"}} {value}\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    const TOR_A: &str = "# HELP tor_relay_connections Total number of opened connections\n\
        # TYPE tor_relay_connections gauge\n\
        tor_relay_connections{type=\"OR\",direction=\"received\",state=\"opened\",family=\"ipv4\"} 3\n\
        # HELP tor_relay_traffic_bytes Traffic related counters\n\
        # TYPE tor_relay_traffic_bytes counter\n\
        tor_relay_traffic_bytes{direction=\"read\"} 1000\n\
        tor_relay_load_onionskins_total 7\n";
    const TOR_B: &str = "# HELP tor_relay_connections Total number of opened connections\n\
        # TYPE tor_relay_connections gauge\n\
        tor_relay_connections{type=\"OR\",direction=\"received\",state=\"opened\",family=\"ipv4\"} 4\n\
        tor_relay_traffic_bytes{direction=\"read\"} 500\n\
        latency{quantile=\"0.5\"} 2\n";

    #[test]
    fn samples_are_kept_per_tor_and_summed() {
        let merged = merge(&[("b1", TOR_A), ("b2", TOR_B)]);
        let lines: Vec<&str> = merged.lines().collect();
        for expected in [
            "tor_relay_connections{type=\"OR\",direction=\"received\",state=\"opened\",family=\"ipv4\",tor=\"b1\"} 3",
            "tor_relay_connections{type=\"OR\",direction=\"received\",state=\"opened\",family=\"ipv4\",tor=\"b2\"} 4",
            "tor_relay_connections{type=\"OR\",direction=\"received\",state=\"opened\",family=\"ipv4\",tor=\"all\"} 7",
            "tor_relay_traffic_bytes{direction=\"read\",tor=\"all\"} 1500",
            "tor_relay_load_onionskins_total{tor=\"b1\"} 7",
            "tor_relay_load_onionskins_total{tor=\"all\"} 7",
            "latency{quantile=\"0.5\",tor=\"b2\"} 2",
        ] {
            assert!(lines.contains(&expected), "{expected} missing from\n{merged}");
        }
        assert!(!merged.contains("quantile=\"0.5\",tor=\"all\""), "{merged}");
        assert_eq!(
            merged.matches("# TYPE tor_relay_connections gauge").count(),
            1,
            "{merged}"
        );
        let help = merged.find("# HELP tor_relay_connections").unwrap();
        let first = merged.find("tor_relay_connections{").unwrap();
        assert!(help < first, "comments come before their samples");
    }

    #[test]
    fn lines_that_are_not_samples_are_left_out() {
        let merged = merge(&[("b1", "garbage\nname{unclosed 1\nname{a=\"1\"} x\n\n")]);
        assert_eq!(merged, "");
    }
}
