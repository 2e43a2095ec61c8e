//! `onionlb-bench bridge`: the middle tier of a bridge fleet, measured.
//!
//! Three middle tiers carry the same load between a simulated transport
//! and simulated tors, in one run:
//! - `onionlb bridge extor` with one `--instance` per tor, relaying with
//!   `splice(2)` (its default) and with plain copies;
//! - HAProxy (leastconn) over one `onionlb bridge extor --compat-shim` per
//!   tor, each started with the `TOR_PT_*` variables a tor would give it
//!   (the setup of the Snowflake bridges, with our shim in place of
//!   extor-static-cookie; it splices, as Go's `io.Copy` between TCP
//!   connections does).
//!
//! The simulated tors are Extended ORPort servers in this process (the
//! `extorport` crate's server half with each tor's own cookie file) that
//! answer `OKAY` and then echo every byte; the simulated transport is the
//! client half with the static cookie. What is measured, on the middle
//! tier's processes only (`/proc` CPU times and resident memory):
//! - CPU seconds per GB relayed (both directions counted), bulk (16 KiB
//!   writes) and cell-sized (514-byte ping-pong) at each concurrency;
//! - handshakes per second and their p50/p99 (connect to `OKAY`), and the
//!   p50/p99 of one 514-byte round trip through the tier against the same
//!   round trip straight to a tor (the added latency);
//! - resident memory added per 1000 idle, handshaken connections, on the
//!   tier as it started (before the load runs).
//!
//! The load and the tors share the machine with the tier under test, so
//! wall-clock figures are relative to each other within one run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use extorport::{ClientHandshake, Cookie, Outcome, Request, ServerHandshake};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A cell's size on the wire.
const CELL: usize = 514;
/// Bound on any one connection's handshake or exchange.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The onionlb binary.
    pub onionlb: PathBuf,
    /// Directory for cookies, configs and logs.
    pub dir: PathBuf,
    /// Simulated tors.
    pub tors: usize,
    /// Concurrent connections for the throughput runs.
    pub connections: Vec<usize>,
    /// Bytes each bulk run sends (and gets back), split over its
    /// connections.
    pub bulk_bytes: usize,
    /// Cell round trips each cell-sized run makes, split over its
    /// connections.
    pub cells: usize,
    /// Handshakes for the handshake run.
    pub handshakes: usize,
    /// Idle connections for the memory run.
    pub idle: usize,
}

/// The figures of one middle tier.
#[derive(Debug, Serialize)]
pub struct TierReport {
    /// `onionlb-extor-splice`, `onionlb-extor-copy` or `haproxy+shims`.
    pub tier: String,
    /// One entry per throughput run.
    pub throughput: Vec<Throughput>,
    /// Handshakes per second through the tier.
    pub handshakes_per_second: f64,
    /// Handshake time, p50 and p99, in milliseconds.
    pub handshake_ms: [f64; 2],
    /// One cell's round trip through the tier, p50 and p99, in ms.
    pub round_trip_ms: [f64; 2],
    /// Resident memory the tier gained per 1000 idle connections, KiB.
    pub idle_kib_per_1000: f64,
}

/// One throughput run.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// `bulk` or `cells`.
    pub kind: &'static str,
    /// Concurrent connections.
    pub connections: usize,
    /// Bytes through the tier, both directions.
    pub bytes: u64,
    /// The tier's CPU seconds per GB (10^9 bytes).
    pub cpu_seconds_per_gb: f64,
    /// Wall time of the run.
    pub seconds: f64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// One round trip straight to a simulated tor, p50 and p99, ms.
    pub direct_round_trip_ms: [f64; 2],
    /// Each tier.
    pub tiers: Vec<TierReport>,
}

/// A simulated tor: its ExtORPort and cookie file.
struct Tor {
    addr: SocketAddr,
    cookie_file: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Processes of a tier, killed when dropped.
struct Tier {
    name: &'static str,
    listen: SocketAddr,
    children: Vec<Child>,
}

impl Tier {
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the plan.
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&plan.dir)?;
    let static_cookie = Cookie::from_secret(rand_bytes());
    let static_path = plan.dir.join("static_cookie");
    std::fs::write(&static_path, &*static_cookie.file_bytes())?;
    let mut tors = Vec::new();
    for i in 0..plan.tors {
        tors.push(start_tor(&plan.dir.join(format!("tor{i}_cookie"))).await?);
    }
    let direct = round_trips_direct(&tors[0], 200).await?;
    let mut tiers = Vec::new();
    for kind in [
        "onionlb-extor-splice",
        "onionlb-extor-copy",
        "haproxy+shims",
    ] {
        let tier = start_tier(kind, plan, &tors, &static_path)?;
        wait_listening(tier.listen).await?;
        let report = measure(plan, &tier, &static_cookie).await?;
        println!(
            "{}: handshakes {:.0}/s (p50 {:.2} ms, p99 {:.2} ms), round trip p50 {:.2} ms p99 {:.2} ms, idle {:.0} KiB per 1000",
            report.tier,
            report.handshakes_per_second,
            report.handshake_ms[0],
            report.handshake_ms[1],
            report.round_trip_ms[0],
            report.round_trip_ms[1],
            report.idle_kib_per_1000
        );
        for t in &report.throughput {
            println!(
                "    {} x{}: {:.2} CPU s per GB ({:.1} MB in {:.1} s)",
                t.kind,
                t.connections,
                t.cpu_seconds_per_gb,
                t.bytes as f64 / 1e6,
                t.seconds
            );
        }
        tiers.push(report);
    }
    Ok(Report {
        direct_round_trip_ms: percentiles(direct),
        tiers,
    })
}

async fn measure(plan: &Plan, tier: &Tier, cookie: &Cookie) -> anyhow::Result<TierReport> {
    // Idle connections first, on the tier as it started: after the
    // throughput runs its allocator would hand the idle connections
    // memory the load left free, and they would seem to cost nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(&tier.pids())?;
    let mut idle = Vec::new();
    for _ in 0..plan.idle {
        idle.push(connect(tier.listen, cookie.clone()).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(&tier.pids())?;
    drop(idle);
    let mut throughput = Vec::new();
    for &connections in &plan.connections {
        for kind in ["bulk", "cells"] {
            let before = cpu_seconds(&tier.pids())?;
            let started = Instant::now();
            let tasks: Vec<_> = (0..connections)
                .map(|_| {
                    let cookie = cookie.clone();
                    let listen = tier.listen;
                    let bulk = plan.bulk_bytes / connections;
                    let cells = (plan.cells / connections).max(1);
                    tokio::spawn(async move {
                        let mut stream = connect(listen, cookie).await?;
                        if kind == "bulk" {
                            bulk_exchange(&mut stream, bulk).await
                        } else {
                            cell_exchange(&mut stream, cells)
                                .await
                                .map(|_| cells * CELL * 2)
                        }
                    })
                })
                .collect();
            let mut bytes = 0u64;
            for task in tasks {
                bytes += task.await?? as u64;
            }
            let seconds = started.elapsed().as_secs_f64();
            let cpu = cpu_seconds(&tier.pids())? - before;
            throughput.push(Throughput {
                kind,
                connections,
                bytes,
                cpu_seconds_per_gb: cpu / (bytes as f64 / 1e9),
                seconds,
            });
        }
    }
    // Handshakes, a few at a time.
    let started = Instant::now();
    let mut times = Vec::new();
    for _ in 0..plan.handshakes / 10 {
        let batch: Vec<_> = (0..10)
            .map(|_| {
                let cookie = cookie.clone();
                let listen = tier.listen;
                tokio::spawn(async move {
                    let begun = Instant::now();
                    connect(listen, cookie).await.map(|_| begun.elapsed())
                })
            })
            .collect();
        for task in batch {
            times.push(task.await??);
        }
    }
    let handshakes_per_second = times.len() as f64 / started.elapsed().as_secs_f64();
    let mut stream = connect(tier.listen, cookie.clone()).await?;
    let round_trips = cell_exchange(&mut stream, 200).await?;
    drop(stream);
    Ok(TierReport {
        tier: tier.name.to_owned(),
        throughput,
        handshakes_per_second,
        handshake_ms: percentiles(times),
        round_trip_ms: percentiles(round_trips),
        idle_kib_per_1000: (after.saturating_sub(before)) as f64 * 1000.0 / plan.idle.max(1) as f64,
    })
}

/// Starts a simulated tor: an ExtORPort that answers `OKAY` and echoes.
async fn start_tor(cookie_file: &Path) -> anyhow::Result<Tor> {
    let cookie = Cookie::from_secret(rand_bytes());
    std::fs::write(cookie_file, &*cookie.file_bytes())?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    let cookie = Arc::new(cookie);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let cookie = Arc::clone(&cookie);
            tokio::spawn(async move {
                let _ = serve_tor(stream, &cookie).await;
            });
        }
    });
    Ok(Tor {
        addr,
        cookie_file: cookie_file.to_owned(),
        task,
    })
}

async fn serve_tor(mut stream: TcpStream, cookie: &Cookie) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut handshake = ServerHandshake::new(cookie.clone(), rand_bytes());
    let mut buf = vec![0u8; 16 * 1024];
    let early = loop {
        stream.write_all(&handshake.take_outgoing()).await?;
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if let Some(request) = handshake.handle(&buf[..n])? {
            break request.early_data;
        }
    };
    stream.write_all(&handshake.take_outgoing()).await?;
    stream.write_all(&ServerHandshake::okay()).await?;
    stream.write_all(&early).await?;
    let (mut read, mut write) = stream.split();
    tokio::io::copy(&mut read, &mut write).await?;
    Ok(())
}

fn start_tier(
    kind: &'static str,
    plan: &Plan,
    tors: &[Tor],
    static_cookie: &Path,
) -> anyhow::Result<Tier> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let log = |name: &str| -> anyhow::Result<std::fs::File> {
        Ok(std::fs::File::create(plan.dir.join(format!("{name}.log")))?)
    };
    let spawn = |command: &mut Command, name: &str| -> anyhow::Result<Child> {
        let log = log(name)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))
    };
    if let Some(relay) = kind.strip_prefix("onionlb-extor-") {
        let mut command = Command::new(&plan.onionlb);
        command
            .args([
                "bridge",
                "extor",
                "--relay",
                relay,
                "--listen",
                &listen.to_string(),
            ])
            .arg("--static-cookie")
            .arg(static_cookie)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_TIER_LOG").unwrap_or_else(|_| "warn".into()),
            );
        for (i, tor) in tors.iter().enumerate() {
            command.arg("--instance").arg(format!(
                "tor{i},{},{}",
                tor.addr,
                tor.cookie_file.display()
            ));
        }
        let child = spawn(&mut command, kind)?;
        return Ok(Tier {
            name: kind,
            listen,
            children: vec![child],
        });
    }
    let mut children = Vec::new();
    let mut servers = String::new();
    for (i, tor) in tors.iter().enumerate() {
        let port = free_port()?;
        let mut command = Command::new(&plan.onionlb);
        command
            .args(["bridge", "extor", "--compat-shim", "--static-cookie"])
            .arg(static_cookie)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_TIER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
            .env("TOR_PT_SERVER_TRANSPORTS", "extor_static_cookie")
            .env(
                "TOR_PT_SERVER_BINDADDR",
                format!("extor_static_cookie-127.0.0.1:{port}"),
            )
            .env("TOR_PT_EXTENDED_SERVER_PORT", tor.addr.to_string())
            .env("TOR_PT_AUTH_COOKIE_FILE", &tor.cookie_file)
            .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "0");
        children.push(spawn(&mut command, &format!("shim{i}"))?);
        servers.push_str(&format!(
            "    server shim{i} 127.0.0.1:{port} check inter 1s\n"
        ));
    }
    let config = format!(
        "global\n    maxconn 8000\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\
         frontend extor\n    bind {listen}\n    default_backend tors\nbackend tors\n    balance leastconn\n{servers}"
    );
    let path = plan.dir.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    children.push(spawn(
        Command::new("haproxy").arg("-db").arg("-f").arg(&path),
        "haproxy",
    )?);
    Ok(Tier {
        name: kind,
        listen,
        children,
    })
}

/// Connects to a tier as the transport does, up to tor's `OKAY`.
async fn connect(addr: SocketAddr, cookie: Cookie) -> anyhow::Result<TcpStream> {
    tokio::time::timeout(STEP_TIMEOUT, async move {
        let mut stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let request = Request::new(Some("192.0.2.7:41000".parse()?), Some("obfs4"))?;
        let mut handshake = ClientHandshake::new(cookie, rand_bytes(), &request);
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!("the tier closed the connection during the handshake");
            }
            let outcome = handshake.handle(&buf[..n])?;
            stream.write_all(&handshake.take_outgoing()).await?;
            match outcome {
                Some(Outcome::Okay { .. }) => return Ok(stream),
                Some(Outcome::Denied) => bail!("denied"),
                None => {}
            }
        }
    })
    .await
    .context("a handshake took too long")?
}

/// Sends `bytes` in 16 KiB writes while reading the echo; returns the
/// bytes through the tier (both ways).
async fn bulk_exchange(stream: &mut TcpStream, bytes: usize) -> anyhow::Result<usize> {
    let (mut read, mut write) = stream.split();
    let chunk = vec![0x5au8; 16 * 1024];
    let send = async {
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            write.write_all(&chunk[..n]).await?;
            sent += n;
        }
        anyhow::Ok(())
    };
    let receive = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < bytes {
            let n = read.read(&mut buf).await?;
            if n == 0 {
                bail!("closed after {got} of {bytes} bytes");
            }
            got += n;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(STEP_TIMEOUT * 5, async { tokio::try_join!(send, receive) })
        .await
        .context("a bulk exchange took too long")??;
    Ok(bytes * 2)
}

/// Makes `count` round trips of one cell; returns each one's time.
async fn cell_exchange(stream: &mut TcpStream, count: usize) -> anyhow::Result<Vec<Duration>> {
    let cell = [0x42u8; CELL];
    let mut back = [0u8; CELL];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        tokio::time::timeout(STEP_TIMEOUT, async {
            stream.write_all(&cell).await?;
            stream.read_exact(&mut back).await?;
            anyhow::Ok(())
        })
        .await
        .context("a round trip took too long")??;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// Round trips straight to a simulated tor.
async fn round_trips_direct(tor: &Tor, count: usize) -> anyhow::Result<Vec<Duration>> {
    let cookie_bytes = std::fs::read(&tor.cookie_file)?;
    let cookie = Cookie::parse_file(&cookie_bytes)?;
    let mut stream = connect(tor.addr, cookie).await?;
    cell_exchange(&mut stream, count).await
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // HAProxy's checks need a moment to call its servers up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// p50 and p99 in milliseconds.
fn percentiles(mut times: Vec<Duration>) -> [f64; 2] {
    if times.is_empty() {
        return [0.0; 2];
    }
    times.sort();
    let at = |q: f64| {
        let index = ((times.len() - 1) as f64 * q).round() as usize;
        times[index].as_secs_f64() * 1000.0
    };
    [at(0.50), at(0.99)]
}

/// The summed CPU seconds of `pids`.
fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for pid in pids {
        total += crate::scale::Usage::of(*pid)?.cpu_seconds;
    }
    Ok(total)
}

/// The summed resident memory (`VmRSS`) of `pids`, KiB.
fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        total += status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmRSS")?;
    }
    Ok(total)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn rand_bytes() -> [u8; 32] {
    use rand::Rng as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}
