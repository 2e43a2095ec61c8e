//! The status report: what the status socket sends and `onionlb status`
//! prints.
//!
//! The JSON keeps Python Onionbalance v3's field names and layout, so its
//! users' scripts go on working: `services[].onionAddress`,
//! `publishAttemptFirstDescriptor`, `publishAttemptSecondDescriptor`, and
//! per instance `onionAddress`, `introPointsNum`, `introSetModified`,
//! `descriptorReceived` (`received` when its intro points were never
//! seen), with times as `YYYY-MM-DD HH:MM:SS` (we write UTC). Everything
//! onionlb adds sits under keys Python Onionbalance does not use.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The balanced services.
    pub services: Vec<ServiceStatus>,
    /// The manager itself (ours).
    #[serde(rename = "manager")]
    pub manager: ManagerStatus,
}

/// The manager process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagerStatus {
    /// onionlb's version.
    pub version: String,
    /// When this report was made.
    pub generated_at: String,
    /// Whether the control connection to the management tor is up.
    pub control_connected: bool,
    /// How often it was re-established since start.
    pub control_reconnects: u64,
    /// While it is down: why the last connection ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_down_because: Option<String>,
    /// Configurations taken on reload (SIGHUP) since start.
    #[serde(default)]
    pub config_reloads: u64,
    /// Reloads refused since start: the running configuration stayed.
    #[serde(default)]
    pub config_reloads_refused: u64,
    /// Why the last reload was refused, until one is taken: the running
    /// configuration is not the file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_refused_because: Option<String>,
}

/// One balanced service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The master address, with `.onion`.
    pub onion_address: String,
    /// Its instances.
    pub instances: Vec<InstanceStatus>,
    /// When the first descriptor was last published.
    pub publish_attempt_first_descriptor: Option<String>,
    /// When the second descriptor was last published.
    pub publish_attempt_second_descriptor: Option<String>,
    /// Both descriptors in detail (ours).
    pub descriptors: Vec<DescriptorStatus>,
    /// When the next publication is planned at the latest: a retry, or
    /// the periodic republication (ours).
    pub next_publish: Option<String>,
}

/// One backend instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Its address, with `.onion`.
    pub onion_address: String,
    /// Intro points in its descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intro_points_num: Option<usize>,
    /// When its intro points last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intro_set_modified: Option<String>,
    /// When its descriptor was last received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descriptor_received: Option<String>,
    /// Python Onionbalance's field for an instance without intro points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<String>,
    /// Its name in the configuration (ours).
    pub name: String,
    /// Whether its intro points are being published (ours).
    pub live: bool,
    /// Why not, or the last problem with its descriptors (ours).
    pub problem: Option<String>,
    /// Its descriptor's revision counter (ours).
    pub revision: Option<u64>,
    /// When its descriptor expires (ours).
    pub valid_until: Option<String>,
    /// Its agent, if it has one: `connected (from)` or `not connected`
    /// (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `draining` or `drained` if it was drained (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<String>,
    /// The last probe through Tor, if it was probed (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeStatus>,
}

/// How an instance's last probe through Tor went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStatus {
    /// When it ended.
    pub at: String,
    /// `passed`, or how it failed.
    pub result: String,
}

/// One of a service's two descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorStatus {
    /// `first` or `second`.
    pub slot: String,
    /// Its time period number.
    pub period: u64,
    /// Its revision counter.
    pub revision: u64,
    /// When it was published.
    pub published_at: String,
    /// Why.
    pub reason: String,
    /// How many distinct descriptors (more than one beyond 20 intro
    /// points).
    pub distinct: usize,
    /// Intro points over all distinct descriptors.
    pub intro_points: usize,
    /// Instances with intro points to put in them.
    #[serde(default)]
    pub instances: usize,
    /// Each HSDir's upload.
    pub hsdirs: Vec<UploadStatus>,
}

/// One HSDir's upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadStatus {
    /// Its fingerprint.
    pub fingerprint: String,
    /// `sent`, `accepted` or `failed`.
    pub state: String,
    /// Which attempt.
    pub attempt: u32,
    /// When that state was reached.
    pub at: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it is retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
}

/// `time` as Python Onionbalance writes times, in UTC:
/// `YYYY-MM-DD HH:MM:SS`.
pub fn timestamp(time: SystemTime) -> String {
    onionlb_core::consensus::format_time(time)
}

impl StatusReport {
    /// The report as a table for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = &self.manager;
        let _ = writeln!(
            out,
            "onionlb {} at {} UTC; management tor {}{}",
            m.version,
            m.generated_at,
            if m.control_connected {
                "connected".to_owned()
            } else {
                match &m.control_down_because {
                    Some(why) => format!("NOT CONNECTED ({why})"),
                    None => "NOT CONNECTED".to_owned(),
                }
            },
            match m.control_reconnects {
                0 => String::new(),
                n => format!(" ({n} reconnect(s))"),
            }
        );
        for service in &self.services {
            let live = service.instances.iter().filter(|i| i.live).count();
            let _ = writeln!(
                out,
                "\n{}: {live} of {} instance(s) live",
                service.onion_address,
                service.instances.len()
            );
            let _ = writeln!(
                out,
                "  {:<16} {:<5} {:>6} {:<20} PROBLEM",
                "INSTANCE", "LIVE", "INTROS", "RECEIVED"
            );
            for instance in &service.instances {
                let _ = writeln!(
                    out,
                    "  {:<16} {:<5} {:>6} {:<20} {}",
                    instance.name,
                    if instance.live { "yes" } else { "no" },
                    instance
                        .intro_points_num
                        .map_or("-".into(), |n| n.to_string()),
                    instance
                        .descriptor_received
                        .as_deref()
                        .or(instance.received.as_deref())
                        .unwrap_or("never"),
                    match (&instance.drain, &instance.problem) {
                        (Some(drain), _) => format!("{drain} (onionlb undrain brings it back)"),
                        (None, problem) => problem.clone().unwrap_or_default(),
                    }
                );
            }
            if service.descriptors.is_empty() {
                out.push_str("  nothing published yet\n");
            }
            for descriptor in &service.descriptors {
                let accepted = descriptor
                    .hsdirs
                    .iter()
                    .filter(|h| h.state == "accepted")
                    .count();
                let _ = writeln!(
                    out,
                    "  {} descriptor: period {}, revision {}, {} intro point(s) in {} distinct, published {} ({}); {accepted} of {} HSDirs accepted",
                    descriptor.slot,
                    descriptor.period,
                    descriptor.revision,
                    descriptor.intro_points,
                    descriptor.distinct,
                    descriptor.published_at,
                    descriptor.reason,
                    descriptor.hsdirs.len()
                );
                for upload in descriptor.hsdirs.iter().filter(|h| h.state != "accepted") {
                    let _ = writeln!(
                        out,
                        "    HSDir {}: {} (attempt {}) at {}{}{}",
                        upload.fingerprint,
                        upload.state,
                        upload.attempt,
                        upload.at,
                        upload
                            .reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default(),
                        upload
                            .retry_at
                            .as_deref()
                            .map(|r| format!("; retry at {r}"))
                            .unwrap_or_default()
                    );
                }
            }
            if let Some(next) = &service.next_publish {
                let _ = writeln!(out, "  next publication at the latest: {next}");
            }
        }
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn timestamps_are_utc_in_python_onionbalance_format() {
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00");
        let at = |s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(timestamp(at(951_782_400)), "2000-02-29 00:00:00");
        assert_eq!(timestamp(at(1_592_337_568)), "2020-06-16 19:59:28");
        assert_eq!(timestamp(at(1_795_289_034)), "2026-11-21 19:23:54");
        assert_eq!(timestamp(at(4_102_444_799)), "2099-12-31 23:59:59");
    }

    fn sample() -> StatusReport {
        StatusReport {
            services: vec![ServiceStatus {
                onion_address: "master.onion".into(),
                instances: vec![
                    InstanceStatus {
                        onion_address: "a.onion".into(),
                        intro_points_num: Some(3),
                        intro_set_modified: Some("2020-06-16 19:59:28".into()),
                        descriptor_received: Some("2020-06-16 19:59:28".into()),
                        received: None,
                        name: "web1".into(),
                        live: true,
                        problem: None,
                        revision: Some(7),
                        valid_until: Some("2020-06-16 22:59:28".into()),
                        agent: Some("connected (the agent socket)".into()),
                        drain: None,
                        probe: None,
                    },
                    InstanceStatus {
                        onion_address: "b.onion".into(),
                        intro_points_num: None,
                        intro_set_modified: None,
                        descriptor_received: None,
                        received: None,
                        name: "web2".into(),
                        live: false,
                        problem: Some("rejected a descriptor: bad signature".into()),
                        revision: None,
                        valid_until: None,
                        agent: None,
                        drain: Some("drained".into()),
                        probe: Some(ProbeStatus {
                            at: "2020-06-16 20:00:01".into(),
                            result: "SOCKS reply 0x05 (connection refused)".into(),
                        }),
                    },
                ],
                publish_attempt_first_descriptor: Some("2020-06-16 20:00:12".into()),
                publish_attempt_second_descriptor: None,
                descriptors: vec![DescriptorStatus {
                    slot: "first".into(),
                    period: 19000,
                    revision: 123,
                    published_at: "2020-06-16 20:00:12".into(),
                    reason: "first publication".into(),
                    distinct: 1,
                    intro_points: 3,
                    instances: 1,
                    hsdirs: vec![
                        UploadStatus {
                            fingerprint: "AA".into(),
                            state: "accepted".into(),
                            attempt: 1,
                            at: "2020-06-16 20:00:13".into(),
                            reason: None,
                            retry_at: None,
                        },
                        UploadStatus {
                            fingerprint: "BB".into(),
                            state: "failed".into(),
                            attempt: 2,
                            at: "2020-06-16 20:00:14".into(),
                            reason: Some("UPLOAD_REJECTED".into()),
                            retry_at: Some("2020-06-16 20:00:24".into()),
                        },
                    ],
                }],
                next_publish: Some("2020-06-16 20:00:24".into()),
            }],
            manager: ManagerStatus {
                version: "0.1.0".into(),
                generated_at: "2020-06-16 20:00:15".into(),
                control_connected: true,
                control_reconnects: 1,
                control_down_because: None,
                config_reloads: 2,
                config_reloads_refused: 1,
                config_refused_because: None,
            },
        }
    }

    #[test]
    fn json_keeps_python_onionbalance_names_and_round_trips() {
        let report = sample();
        let json = serde_json::to_value(&report).unwrap();
        let service = &json["services"][0];
        assert_eq!(service["onionAddress"], "master.onion");
        assert_eq!(
            service["publishAttemptFirstDescriptor"],
            "2020-06-16 20:00:12"
        );
        assert!(service["publishAttemptSecondDescriptor"].is_null());
        let instance = &service["instances"][0];
        assert_eq!(instance["onionAddress"], "a.onion");
        assert_eq!(instance["introPointsNum"], 3);
        assert_eq!(instance["introSetModified"], "2020-06-16 19:59:28");
        assert_eq!(instance["descriptorReceived"], "2020-06-16 19:59:28");
        // An instance never seen has none of Python Onionbalance's
        // per-descriptor fields.
        let unseen = service["instances"][1].as_object().unwrap();
        assert!(!unseen.contains_key("introPointsNum"));
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&text).unwrap(), report);
    }

    #[test]
    fn the_table_shows_liveness_problems_and_failed_uploads() {
        let table = sample().render();
        assert!(
            table.contains("master.onion: 1 of 2 instance(s) live"),
            "{table}"
        );
        assert!(table.contains("web2"), "{table}");
        assert!(
            table.contains("drained (onionlb undrain brings it back)"),
            "{table}"
        );
        assert!(table.contains("1 of 2 HSDirs accepted"), "{table}");
        assert!(
            table.contains("HSDir BB: failed (attempt 2) at 2020-06-16 20:00:14: UPLOAD_REJECTED; retry at 2020-06-16 20:00:24"),
            "{table}"
        );
        assert!(table.contains("(1 reconnect(s))"), "{table}");
    }
}
