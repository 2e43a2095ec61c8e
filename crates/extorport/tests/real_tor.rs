//! The client handshake against a real C tor's Extended ORPort: a bridge
//! tor on loopback (no network: its only directory authority is a closed
//! loopback port) with `ExtORPort` and a cookie file, as a bridge in a
//! fleet runs. Needs Debian's `tor` (`scripts/test` installs it).
//!
//! Checked against tor itself: the handshake with tor's cookie ends at
//! `OKAY` and what follows is tor's OR link (a TLS ServerHello answers a
//! ClientHello); a wrong cookie is caught by tor's own server hash before
//! anything of ours is sent; tor answers a wrong client hash with status 0;
//! and a restarted tor has a new cookie, which works once re-read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use extorport::{ClientHandshake, Cookie, Error, Outcome, Request};

/// How long tor gets to write its cookie and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Every read from tor ends within this.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A tor we started; killed by its PID when dropped.
struct Tor {
    child: Child,
    cookie: PathBuf,
    ext_or: SocketAddr,
}

impl Drop for Tor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A bridge's torrc, every port on loopback; the one authority is a
/// closed port, so tor reaches nothing.
fn write_torrc(dir: &Path, or_port: u16, ext_or_port: u16) -> PathBuf {
    let dead = free_port();
    let torrc = format!(
        "DataDirectory {data}\n\
         RunAsDaemon 0\n\
         SocksPort 0\n\
         ORPort 127.0.0.1:{or_port}\n\
         ExtORPort 127.0.0.1:{ext_or_port}\n\
         ExtORPortCookieAuthFile {dir}/extor_cookie\n\
         BridgeRelay 1\n\
         BridgeDistribution none\n\
         PublishServerDescriptor 0\n\
         AssumeReachable 1\n\
         TestingTorNetwork 1\n\
         DirAuthority nowhere orport={dead} no-v2 v3ident=0000000000000000000000000000000000000000 127.0.0.1:{dead} 0000000000000000000000000000000000000000\n\
         UseDefaultFallbackDirs 0\n\
         Address 127.0.0.1\n\
         OutboundBindAddress 127.0.0.1\n\
         ClientUseIPv6 0\n\
         ShutdownWaitLength 0\n\
         Log notice file {dir}/notice.log\n",
        data = dir.join("data").display(),
        dir = dir.display(),
    );
    let path = dir.join("torrc");
    std::fs::write(&path, torrc).expect("torrc written");
    path
}

/// Starts tor and waits until its cookie file is whole and its ExtORPort
/// accepts connections. `previous` is a cookie it must no longer have
/// (tor deletes its file at stop and writes a new one at start).
fn start(dir: &Path, torrc: &Path, ext_or: SocketAddr, previous: Option<&[u8]>) -> Tor {
    let empty = dir.join("defaults-torrc");
    std::fs::write(&empty, "").expect("defaults written");
    let child = Command::new("tor")
        .arg("--defaults-torrc")
        .arg(&empty)
        .arg("-f")
        .arg(torrc)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tor runs (scripts/test installs Debian's tor)");
    let mut tor = Tor {
        child,
        cookie: dir.join("extor_cookie"),
        ext_or,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = tor.child.try_wait() {
            let log = std::fs::read_to_string(dir.join("notice.log")).unwrap_or_default();
            panic!("tor exited with {status}:\n{log}");
        }
        let cookie = std::fs::read(&tor.cookie).unwrap_or_default();
        let fresh = cookie.len() == 64 && previous != Some(cookie.as_slice());
        if fresh && TcpStream::connect_timeout(&ext_or, Duration::from_secs(1)).is_ok() {
            return tor;
        }
        assert!(
            Instant::now() < deadline,
            "tor did not write a new cookie and listen within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(tor: &Tor) -> TcpStream {
    let stream = TcpStream::connect_timeout(&tor.ext_or, READ_TIMEOUT).expect("ExtORPort");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

fn read_cookie(tor: &Tor) -> Cookie {
    Cookie::parse_file(&std::fs::read(&tor.cookie).unwrap()).expect("tor's cookie file")
}

fn request() -> Request {
    Request::new(Some("192.0.2.7:41000".parse().unwrap()), Some("obfs4")).unwrap()
}

/// Runs our client handshake over `stream` to its end.
fn handshake(stream: &mut TcpStream, cookie: Cookie) -> Result<Outcome, Error> {
    let nonce: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
    let mut client = ClientHandshake::new(cookie, nonce, &request());
    let mut buf = [0u8; 512];
    loop {
        let n = stream
            .read(&mut buf)
            .expect("tor answers within the timeout");
        assert!(n > 0, "tor closed the connection during the handshake");
        let result = client.handle(&buf[..n]);
        stream.write_all(&client.take_outgoing()).unwrap();
        if let Some(outcome) = result? {
            return Ok(outcome);
        }
    }
}

/// A TLS 1.2 ClientHello as a link-protocol client sends one (the suites
/// and groups OpenSSL servers take), made by hand: the test only needs
/// tor's first answer.
fn client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x42; 32]);
    hello.push(0);
    let suites: [u16; 6] = [0xc02f, 0xc030, 0xc02b, 0xc02c, 0x009e, 0x009f];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]);
    let extensions: [(u16, &[u8]); 3] = [
        // supported_groups: x25519, secp256r1
        (0x000a, &[0, 4, 0, 0x1d, 0, 0x17]),
        // ec_point_formats: uncompressed
        (0x000b, &[1, 0]),
        // signature_algorithms: rsa_pss_rsae_sha256, rsa_pkcs1_sha256,
        // ecdsa_secp256r1_sha256
        (0x000d, &[0, 6, 0x08, 0x04, 0x04, 0x01, 0x04, 0x03]),
    ];
    let mut ext = Vec::new();
    for (kind, body) in extensions {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
        ext.extend_from_slice(body);
    }
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn a_real_tor_accepts_the_handshake_and_each_cookie_only_while_it_is_current() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("extorport-real-tor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ext_or: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let torrc = write_torrc(&dir, free_port(), ext_or.port());
    let tor = start(&dir, &torrc, ext_or, None);

    // With tor's cookie: OKAY, then tor's OR link answers a ClientHello
    // with a TLS handshake record (0x16), not an alert (0x15).
    let mut stream = connect(&tor);
    match handshake(&mut stream, read_cookie(&tor)) {
        Ok(Outcome::Okay { leftover }) => assert!(leftover.is_empty(), "{leftover:?}"),
        other => panic!("tor did not accept the handshake: {other:?}"),
    }
    stream.write_all(&client_hello()).unwrap();
    let mut first = [0u8; 3];
    stream.read_exact(&mut first).expect("tor's TLS answer");
    assert_eq!(
        first[..2],
        [0x16, 0x03],
        "tor's first TLS record: {first:?}"
    );

    // Another cookie: tor's server hash gives it away; nothing of ours
    // beyond the nonce was sent.
    let mut stream = connect(&tor);
    assert_eq!(
        handshake(&mut stream, Cookie::from_secret([0x33; 32])),
        Err(Error::ServerHashMismatch)
    );

    // Tor's side of a wrong client hash, which the static-cookie server
    // half mirrors: status 0.
    let mut stream = connect(&tor);
    let mut types = [0u8; 2];
    stream.read_exact(&mut types).unwrap();
    assert_eq!(types, [1, 0], "tor offers SAFE_COOKIE only");
    stream.write_all(&[1]).unwrap();
    stream.write_all(&[0x77; 32]).unwrap();
    let mut server = [0u8; 64];
    stream.read_exact(&mut server).unwrap();
    stream.write_all(&[0x55; 32]).unwrap();
    let mut status = [0u8; 1];
    stream.read_exact(&mut status).unwrap();
    assert_eq!(status, [0], "tor refuses a wrong client hash");

    // A restarted tor has a new cookie: the old one is refused, the new
    // one, read again, is accepted.
    let old = std::fs::read(&tor.cookie).unwrap();
    let old_cookie = read_cookie(&tor);
    drop(tor);
    let tor = start(&dir, &torrc, ext_or, Some(&old));
    let mut stream = connect(&tor);
    assert_eq!(
        handshake(&mut stream, old_cookie),
        Err(Error::ServerHashMismatch)
    );
    let mut stream = connect(&tor);
    assert!(matches!(
        handshake(&mut stream, read_cookie(&tor)),
        Ok(Outcome::Okay { .. })
    ));
    drop(tor);
    let _ = std::fs::remove_dir_all(&dir);
}
