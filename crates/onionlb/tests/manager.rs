//! The manager end to end on a private Tor network: real C tor instances,
//! HSDirs and client; onionlb run as an operator runs it, with a Python
//! Onionbalance style config, without agents: through an instance's death,
//! an application's, an instance tor's restart and the management tor's
//! restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{
    fetch_until_served, free_port, manager_port, scrape, ten_requests_in_a_row, testnet_config,
    tmp_dir, Manager,
};
use onionlb_core::MasterKey;
use testnet::app::served_by;
use testnet::Testnet;

#[tokio::test(flavor = "multi_thread")]
async fn clients_reach_every_instance_through_the_master_and_survive_a_dead_one() {
    let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
    let master = key.address();
    let mut config = testnet_config("manager-test");
    config.masters = vec![master];
    let mut net = Testnet::start(config).await.unwrap();
    let control_port = manager_port(&net);
    let dir = tmp_dir("manager-test-onionlb");
    let socket = dir.join("status.sock");
    let metrics_port = free_port();
    let manager = Manager::start(
        &dir,
        &net,
        &pem,
        control_port,
        // Short enough that the instance restarted below is fetched soon,
        // and that a hung tor is noticed soon.
        &format!(
            "fetch-interval: 15\ncontrol-timeout: 5\nstatus-socket-location: {}\nmetrics-listen: 127.0.0.1:{metrics_port}\n",
            socket.display()
        ),
    );
    let mut cookies = vec![std::fs::read(net.manager_control().cookie).unwrap()];
    let url = format!("http://{master}/");

    // The master address becomes reachable once onionlb has published.
    fetch_until_served(&net, &url, None, Duration::from_secs(180)).await;

    // The status socket: Python Onionbalance's JSON fields, and the table.
    let json = onionlb_status(&dir, &["--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let service = &status["services"][0];
    assert_eq!(service["onionAddress"], master.to_string());
    assert!(
        service["publishAttemptFirstDescriptor"].is_string(),
        "{json}"
    );
    assert!(
        service["publishAttemptSecondDescriptor"].is_string(),
        "{json}"
    );
    let instances = service["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "{json}");
    for (instance, address) in instances.iter().zip(net.instance_addresses()) {
        assert_eq!(instance["onionAddress"], address.to_string());
        // tor's three intro points per descriptor; the manager keeps one
        // or both of an instance's descriptors (current and next period).
        assert!(
            [3, 6].contains(&instance["introPointsNum"].as_u64().unwrap_or(0)),
            "{json}"
        );
        assert!(instance["descriptorReceived"].is_string(), "{json}");
        assert_eq!(instance["live"], true, "{json}");
    }
    assert_eq!(status["manager"]["controlConnected"], true);
    let table = onionlb_status(&dir, &[]);
    assert!(
        table.contains(&format!("{master}: 3 of 3 instance(s) live")),
        "{table}"
    );
    assert!(table.contains("first descriptor: period"), "{table}");

    // A metrics scrape.
    let metrics = scrape(metrics_port);
    let first_publications = [
        format!(
            "onionlb_publications_total{{service=\"{master}\",slot=\"first\",reason=\"first\"}} 1"
        ),
        format!(
            "onionlb_publications_total{{service=\"{master}\",slot=\"second\",reason=\"first\"}} 1"
        ),
    ];
    for line in [
        format!("onionlb_live_instances{{service=\"{master}\"}} 3"),
        "onionlb_control_reconnects_total 0".to_owned(),
    ]
    .iter()
    .chain(&first_publications)
    {
        assert!(
            metrics.contains(line.as_str()),
            "no {line:?} in:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("result=\"attempted\"} ") && metrics.contains("result=\"accepted\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("onionlb_instance_descriptor_age_seconds{"),
        "{metrics}"
    );
    // Each descriptor carries at most one intro point per relay, so how
    // many of the 9 it carries depends on where the instances put them.
    let published =
        format!("onionlb_intro_points_published{{service=\"{master}\",slot=\"first\"}} ");
    let count: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix(published.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {published:?} in:\n{metrics}"));
    assert!((3..=54).contains(&count), "{count} intro points published");

    // SIGHUP: a renamed instance keeps its descriptor and the service its
    // publications; an invalid config changes nothing and says where.
    let config = std::fs::read_to_string(manager.config()).unwrap();
    let first_name = net.layout().instances().next().unwrap().name.clone();
    std::fs::write(
        manager.config(),
        config.replace(&format!("name: {first_name}\n"), "name: renamed\n"),
    )
    .unwrap();
    manager.signal(nix::sys::signal::Signal::SIGHUP);
    let status = manager.wait_for_status(Duration::from_secs(10), |s| {
        s["manager"]["configReloads"] == 1
    });
    let json = status.to_string();
    let renamed = &status["services"][0]["instances"][0];
    assert_eq!(renamed["name"], "renamed", "{json}");
    assert_eq!(renamed["live"], true, "{json}");
    // One or both of its descriptors, as above: not lost to the rename.
    assert!(
        [3, 6].contains(&renamed["introPointsNum"].as_u64().unwrap_or(0)),
        "{json}"
    );
    std::fs::write(manager.config(), "services:\n- instances: []\n").unwrap();
    manager.signal(nix::sys::signal::Signal::SIGHUP);
    let status = manager.wait_for_status(Duration::from_secs(10), |s| {
        s["manager"]["configReloadsRefused"] == 1
    });
    let refused = status["manager"]["configRefusedBecause"]
        .as_str()
        .unwrap_or_default();
    assert!(refused.contains("config.yaml:2: services[0]"), "{status}");
    assert_eq!(status["manager"]["configReloads"], 1, "{status}");
    std::fs::write(manager.config(), &config).unwrap();
    manager.signal(nix::sys::signal::Signal::SIGHUP);
    let status = manager.wait_for_status(Duration::from_secs(10), |s| {
        s["manager"]["configReloads"] == 2
    });
    assert!(
        status["manager"]["configRefusedBecause"].is_null(),
        "{status}"
    );
    let metrics = scrape(metrics_port);
    for line in first_publications.iter().chain(&[
        "onionlb_config_reloads_total{result=\"applied\"} 2".to_owned(),
        "onionlb_config_reloads_total{result=\"refused\"} 1".to_owned(),
    ]) {
        // A reload that dropped what was published would publish anew
        // as a first publication.
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }

    // (a) With fresh circuits, every instance answers at least once in 30
    // answers. A request may fail now and then (an 8-minute period can end
    // here, and the instances change intro points with it): up to 5 are
    // tried again.
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    while served.values().sum::<usize>() < 30 {
        match net.fetch(&url).await {
            Ok(response) => {
                let who = served_by(&response.body).unwrap().to_owned();
                *served.entry(who).or_default() += 1;
            }
            Err(e) => failures.push(e.to_string()),
        }
        assert!(failures.len() <= 5, "requests failed: {failures:?}");
    }
    let instances: Vec<String> = net.layout().instances().map(|n| n.name.clone()).collect();
    for instance in &instances {
        assert!(
            served.contains_key(instance),
            "{instance} never answered: {served:?}"
        );
    }

    // (b) No agents: the manager probes every instance through its tor's
    // SOCKS port. instance0's tor is killed: within 30 s a master
    // descriptor without it is on every HSDir, and 10 requests in a row
    // succeed, each answered by a live instance.
    let out_of_both = |gone: usize, live: usize| {
        move |s: &serde_json::Value| {
            let service = &s["services"][0];
            service["instances"][gone]["live"] == false
                && common::both_descriptors_carry(service, live)
                && common::every_upload_accepted(service)
        }
    };
    let killed = Instant::now();
    net.stop_instance(0).unwrap();
    let status = manager.wait_for_status(Duration::from_secs(60), out_of_both(0, 2));
    let out = killed.elapsed();
    println!(
        "without an agent, killed tor: out of every HSDir's descriptor {:.1} s after the kill",
        out.as_secs_f64()
    );
    assert!(out <= Duration::from_secs(30), "out after {out:?}");
    let problem = status["services"][0]["instances"][0]["problem"].to_string();
    assert!(problem.contains("probe"), "{status}");
    let ten_ok =
        ten_requests_in_a_row(&net, &url, &instances[0], killed, Duration::from_secs(120)).await;
    println!(
        "without an agent: 10 requests in a row succeeded {:.1} s after the kill",
        ten_ok.as_secs_f64()
    );
    let metrics = scrape(metrics_port);
    assert!(
        metrics.contains("onionlb_probes_total{result=\"passed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("onionlb_probes_total{result=\"refused\"}")
            || metrics.contains("onionlb_probes_total{result=\"timeout\"}"),
        "{metrics}"
    );

    // (c) Only instance2's application stops (its tor stays up): its
    // probes' streams are refused, and it is out as quickly.
    let stopped = Instant::now();
    net.stop_app(2).unwrap();
    manager.wait_for_status(Duration::from_secs(60), out_of_both(2, 1));
    let out = stopped.elapsed();
    println!(
        "without an agent, stopped app: out {:.1} s after",
        out.as_secs_f64()
    );
    assert!(out <= Duration::from_secs(30), "out after {out:?}");
    ten_requests_in_a_row(&net, &url, &instances[2], stopped, Duration::from_secs(120)).await;

    // (d) instance1, the one live instance left, has its tor restarted:
    // within 60 s no HSDir's master descriptor carries an intro point of
    // its old run (all that the master descriptors hold now), and it
    // serves clients again.
    let before = common::master_keys_on_hsdirs(&net, &key, Duration::from_secs(60)).await;
    let old_run: BTreeSet<[u8; 32]> = before.values().flatten().copied().collect();
    assert!(!old_run.is_empty(), "no HSDir holds a master descriptor");
    let restarted = Instant::now();
    net.stop_instance(1).unwrap();
    net.start_instance(1, Duration::from_secs(60))
        .await
        .unwrap();
    let deadline = restarted + Duration::from_secs(120);
    loop {
        let held = common::master_keys_on_hsdirs(&net, &key, Duration::from_secs(30)).await;
        let stale = held
            .values()
            .flatten()
            .filter(|k| old_run.contains(*k))
            .count();
        if stale == 0 && !held.is_empty() && held.values().all(|k| !k.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stale} intro point(s) of instance1's old run still on HSDirs {:?}",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let gone = restarted.elapsed();
    println!("without an agent, restarted tor: old run's intro points gone from every HSDir {:.1} s after", gone.as_secs_f64());
    assert!(
        gone <= Duration::from_secs(60),
        "old run gone after {gone:?}"
    );
    fetch_until_served(&net, &url, Some(&instances[1]), Duration::from_secs(120)).await;
    net.start_app(2).unwrap();
    manager.wait_for_status(Duration::from_secs(60), |s| {
        s["services"][0]["instances"][2]["live"] == true
    });

    // The management tor restarts while the dead instance comes back with
    // new intro points: onionlb reconnects, subscribes to its events again,
    // fetches the new descriptor and publishes the new intro points, and
    // clients reach the returned instance through the master address.
    let modified =
        |s: &serde_json::Value| s["services"][0]["instances"][0]["introSetModified"].clone();
    let before = modified(&manager.wait_for_status(Duration::from_secs(10), |_| true));
    net.stop_manager();
    net.start_instance(0, Duration::from_secs(60))
        .await
        .unwrap();
    net.start_manager(Duration::from_secs(60)).await.unwrap();
    manager.wait_for_status(Duration::from_secs(60), |s| {
        s["manager"]["controlReconnects"] == 1 && s["manager"]["controlConnected"] == true
    });
    // The returned instance's new intro points are taken in (published as
    // changed intro points, or as a new period's should the 8-minute
    // period end meanwhile), and clients reach it.
    manager.wait_for_status(Duration::from_secs(120), |s| {
        modified(s) != before && s["services"][0]["instances"][0]["live"] == true
    });
    fetch_until_served(&net, &url, Some(&instances[0]), Duration::from_secs(120)).await;
    let table = onionlb_status(&dir, &[]);
    assert!(table.contains("(1 reconnect(s))"), "{table}");
    assert!(scrape(metrics_port).contains("onionlb_control_reconnects_total 1"));

    cookies.push(std::fs::read(net.manager_control().cookie).unwrap());

    // (e) Planned maintenance: instance0 is drained, then stopped. First
    // 20 requests over fresh circuits (the client's cached master
    // descriptor) give the latencies before; then `onionlb drain` returns
    // once every HSDir has a master descriptor without instance0 (checked
    // against every intro point of it the HSDirs and its tor show), the
    // client fetches it, and 30 fresh-circuit requests span instance0's
    // stop: none fails and none is answered by instance0. Latencies are
    // printed, not judged: on a loaded loopback network they run from
    // 0.15 s to over 6 s with nothing being drained.
    net.newnym().await.unwrap();
    let mut before = Vec::new();
    let mut failed = 0;
    while before.len() < 20 {
        let started = Instant::now();
        match net.fetch(&url).await {
            Ok(_) => before.push(started.elapsed()),
            Err(_) => failed += 1,
        }
        assert!(failed <= 5, "requests fail before the drain");
    }
    let drained_keys = common::instance_keys(&net, 0).await;
    assert!(!drained_keys.is_empty());
    before.sort();
    let p95 = before[18];
    let drain = std::process::Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["drain", &instances[0], "--timeout", "120", "-c"])
        .arg(manager.config())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&drain.stdout).into_owned();
    assert!(
        drain.status.success(),
        "onionlb drain failed: {said}{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    assert!(said.contains("safe to stop"), "{said}");
    // Right after a time period starts, a client whose consensus is
    // older still fetches the previous period's descriptor, which the
    // manager no longer publishes (a gap drain does not close yet; the
    // operator guide says so): wait until the client's consensus is in
    // the period of the manager's first descriptor.
    let status = manager.wait_for_status(Duration::from_secs(10), |_| true);
    let first_period = status["services"][0]["descriptors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["slot"] == "first")
        .and_then(|d| d["period"].as_u64())
        .unwrap();
    let caught_up = Instant::now() + Duration::from_secs(120);
    let client_period = loop {
        let period = common::client_period(&net).await;
        if period >= first_period {
            break period;
        }
        assert!(
            Instant::now() < caught_up,
            "the client's consensus stays before period {first_period}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // The HSDirs responsible for the client's period are those the status
    // lists uploads of that period's descriptor to. A relay outside them
    // may still serve a copy from a time it was responsible (the ring of
    // a blinded key moves when the shared random value does; clients no
    // longer ask it), so it is left out, even when it is responsible for
    // the other period's descriptor.
    let responsible: std::collections::BTreeSet<String> = status["services"][0]["descriptors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["period"].as_u64() == Some(client_period))
        .flat_map(|d| d["hsdirs"].as_array().unwrap())
        .map(|u| {
            u["fingerprint"]
                .as_str()
                .unwrap()
                .trim_start_matches('$')
                .to_uppercase()
        })
        .collect();
    let held = common::master_keys_on_hsdirs(&net, &key, Duration::from_secs(60)).await;
    let mut checked = 0;
    for (hsdir, keys) in &held {
        let stale = !keys.is_disjoint(&drained_keys);
        if !responsible.contains(&hsdir.to_uppercase()) {
            if stale {
                println!(
                    "HSDir {hsdir}, not responsible now, still holds an older master descriptor"
                );
            }
            continue;
        }
        checked += 1;
        assert!(
            !stale && !keys.is_empty(),
            "HSDir {hsdir} still has instance0's intro points when drain says drained"
        );
    }
    assert!(checked > 0, "no responsible HSDir answered: {held:?}");
    assert_eq!(
        status["services"][0]["instances"][0]["drain"], "drained",
        "{status}"
    );
    assert!(scrape(metrics_port).contains(&format!(
        "onionlb_drained_instances{{service=\"{master}\"}} 1"
    )));
    net.newnym().await.unwrap();
    let mut during = Vec::new();
    for request in 0..30 {
        if request == 15 {
            net.stop_instance(0).unwrap();
        }
        let started = Instant::now();
        let response = net.fetch(&url).await.unwrap_or_else(|e| {
            panic!("request {request} around the drained instance's stop failed: {e}")
        });
        during.push(started.elapsed());
        let who = served_by(&response.body).unwrap();
        assert_ne!(
            who, instances[0],
            "request {request} reached the drained instance"
        );
    }
    let worst = *during.iter().max().unwrap();
    let mut sorted = during.clone();
    sorted.sort();
    println!(
        "drain: before, p95 {:.2} s of 20; around the stop, p95 {:.2} s and slowest {:.2} s of 30, none failed",
        p95.as_secs_f64(),
        sorted[28].as_secs_f64(),
        worst.as_secs_f64()
    );

    // The management tor hangs (SIGSTOP; its port still accepts): the next
    // command passes the control timeout, and the manager drops the
    // connection, says why in status and metrics, and keeps trying.
    net.pause_manager(true);
    let status = manager.wait_for_status(Duration::from_secs(60), |s| {
        s["manager"]["controlConnected"] == false
    });
    let why = status["manager"]["controlDownBecause"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("no answer from tor to"), "{status}");
    let metrics = scrape(metrics_port);
    for line in [
        "onionlb_control_connected 0",
        "onionlb_control_disconnects_total{reason=\"timeout\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
    // tor goes on: the manager is back without anyone's help.
    net.pause_manager(false);
    let status = manager.wait_for_status(Duration::from_secs(120), |s| {
        s["manager"]["controlConnected"] == true
    });
    assert_eq!(status["manager"]["controlReconnects"], 2, "{status}");
    assert!(
        status["manager"]["controlDownBecause"].is_null(),
        "{status}"
    );

    // Hung again, while the manager waits on tor (a command or a
    // reconnection): SIGTERM is honoured within 2 s.
    net.pause_manager(true);
    manager.wait_for_status(Duration::from_secs(60), |s| {
        s["manager"]["controlConnected"] == false
    });
    manager.stop_within(Duration::from_secs(2));
    net.pause_manager(false);

    // No key material in the log of the whole run, at debug level: not
    // the master key's seed or expanded secret, not a control cookie.
    let log = std::fs::read(dir.join("onionlb.log")).unwrap();
    let key_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = data_encoding::BASE64.decode(key_body.as_bytes()).unwrap();
    let seed = &der[der.len() - 32..];
    let expanded = &key.encode(onionlb_core::KeyFormat::Tor).unwrap()[32..];
    common::assert_no_secret(&log, seed, "the manager's log (seed)");
    common::assert_no_secret(&log, expanded, "the manager's log (expanded key)");
    for cookie in &cookies {
        common::assert_no_secret(&log, cookie, "the manager's log (control cookie)");
    }
    assert!(!String::from_utf8_lossy(&log).contains(&key_body));
    assert!(!socket.exists(), "the status socket outlived the manager");
    net.stop();
}

/// The status JSON once `ready` holds of it, polled until `bound`.
/// `onionlb status --status-socket DIR/status.sock ARGS`, which must succeed
/// (by the socket, as the configuration is made invalid for a while).
fn onionlb_status(dir: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .arg("status")
        .arg("--status-socket")
        .arg(dir.join("status.sock"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "onionlb status failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}
