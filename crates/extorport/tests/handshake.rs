//! Both handshakes against each other and against hand-made peers: the
//! client half plays the transport towards the server half playing tor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use extorport::{
    client_hash, code, server_hash, ClientHandshake, Cookie, Error, Frame, Outcome, Request,
    ServerHandshake, MAX_COMMANDS,
};
use proptest::prelude::*;

const CLIENT_NONCE: [u8; 32] = [0xc1; 32];
const SERVER_NONCE: [u8; 32] = [0x5e; 32];

fn cookie(byte: u8) -> Cookie {
    Cookie::from_secret([byte; 32])
}

fn frame(command: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::new(command, body.to_vec())
        .expect("short")
        .encode(&mut out);
    out
}

/// What a transport sends after the auth types: type, nonce, then (once
/// it has the server's nonce) its hash and its commands.
fn transport_bytes(cookie: &Cookie, commands: &[u8]) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(&CLIENT_NONCE);
    out.extend_from_slice(&client_hash(cookie, &CLIENT_NONCE, &SERVER_NONCE));
    out.extend_from_slice(commands);
    out
}

fn obfs4_commands() -> Vec<u8> {
    [
        frame(code::USERADDR, b"192.0.2.7:41000"),
        frame(code::TRANSPORT, b"obfs4"),
        frame(code::DONE, b""),
    ]
    .concat()
}

#[test]
fn the_server_follows_the_spec_byte_for_byte() {
    let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
    assert_eq!(server.take_outgoing(), [1, 0], "SAFE_COOKIE, then the end");
    assert_eq!(server.handle(&[1]), Ok(None));
    assert_eq!(server.handle(&CLIENT_NONCE), Ok(None));
    let mut expected = server_hash(&cookie(1), &CLIENT_NONCE, &SERVER_NONCE).to_vec();
    expected.extend_from_slice(&SERVER_NONCE);
    assert_eq!(server.take_outgoing(), expected);
    let hash = client_hash(&cookie(1), &CLIENT_NONCE, &SERVER_NONCE);
    assert_eq!(server.handle(&hash), Ok(None));
    assert_eq!(server.take_outgoing(), [1], "status: accepted");
    let mut commands = obfs4_commands();
    commands.extend_from_slice(b"\x16\x03\x01");
    let request = server.handle(&commands).expect("valid").expect("DONE seen");
    assert_eq!(
        request.user_addr(),
        Some("192.0.2.7:41000".parse().unwrap())
    );
    assert_eq!(request.transport(), Some("obfs4"));
    assert_eq!(request.frames().len(), 2);
    assert_eq!(request.early_data, b"\x16\x03\x01");
    assert_eq!(server.handle(b"more"), Err(Error::Ended));
    assert_eq!(ServerHandshake::okay(), [0x10, 0, 0, 0]);
    assert_eq!(ServerHandshake::deny(), [0x10, 1, 0, 0]);
}

#[test]
fn a_wrong_client_hash_gets_status_zero_and_an_error() {
    let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
    server.take_outgoing();
    let result = server.handle(&transport_bytes(&cookie(2), &obfs4_commands()));
    assert_eq!(result, Err(Error::ClientHashMismatch));
    let out = server.take_outgoing();
    assert_eq!(out.last(), Some(&0), "status 0 queued for the transport");
    assert_eq!(server.handle(b""), Err(Error::Ended));
}

#[test]
fn the_server_refuses_other_auth_types() {
    for auth_type in [0u8, 2, 255] {
        let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
        assert_eq!(
            server.handle(&[auth_type]),
            Err(Error::UnsupportedAuthType(auth_type))
        );
    }
}

#[test]
fn bad_fields_close_the_handshake() {
    let cases: [(&[u8], Error); 7] = [
        (b"192.0.2.7", Error::BadUserAddr),
        (b"example.org:80", Error::BadUserAddr),
        (b"[fe80::1%eth0]:80", Error::BadUserAddr),
        (b"192.0.2.7:80\0", Error::BadUserAddr),
        (b"\xff\xfe", Error::BadUserAddr),
        (b"", Error::BadUserAddr),
        (b" 192.0.2.7:80", Error::BadUserAddr),
    ];
    for (body, error) in cases {
        let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
        let input = transport_bytes(&cookie(1), &frame(code::USERADDR, body));
        assert_eq!(server.handle(&input), Err(error), "USERADDR {body:?}");
    }
    for body in [&b""[..], b"obfs-4", b"4bfs", b"obfs4\0", b"obfs4 "] {
        let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
        let input = transport_bytes(&cookie(1), &frame(code::TRANSPORT, body));
        assert_eq!(
            server.handle(&input),
            Err(Error::BadTransport),
            "TRANSPORT {body:?}"
        );
    }
}

#[test]
fn ipv6_and_underscores_are_accepted() {
    let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
    let commands = [
        frame(code::USERADDR, b"[2001:db8::7]:443"),
        frame(code::TRANSPORT, b"_snow_flake2"),
        frame(code::DONE, b""),
    ]
    .concat();
    let request = server
        .handle(&transport_bytes(&cookie(1), &commands))
        .expect("valid")
        .expect("DONE seen");
    assert_eq!(
        request.user_addr(),
        Some("[2001:db8::7]:443".parse().unwrap())
    );
    assert_eq!(request.transport(), Some("_snow_flake2"));
}

#[test]
fn commands_are_bounded() {
    let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
    let many = frame(0x0042, b"x").repeat(MAX_COMMANDS + 1);
    assert_eq!(
        server.handle(&transport_bytes(&cookie(1), &many)),
        Err(Error::TooManyCommands)
    );
    let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
    let long = [0x00, 0x01, 0xff, 0xff];
    assert_eq!(
        server.handle(&transport_bytes(&cookie(1), &long)),
        Err(Error::BodyTooLong {
            command: code::USERADDR,
            len: 0xffff
        })
    );
}

/// Runs a client against a server through byte chunks of `chunk` bytes,
/// the test playing tor's part after `DONE`.
fn converse(
    transport_cookie: Cookie,
    tor_cookie: Cookie,
    request: &Request,
    tor_answer: &[u8],
    chunk: usize,
) -> Result<(Request, Outcome), Error> {
    let mut tor = ServerHandshake::new(tor_cookie, SERVER_NONCE);
    let mut us = ClientHandshake::new(transport_cookie, CLIENT_NONCE, request);
    let mut received = None;
    for _ in 0..1000 {
        let to_us = tor.take_outgoing();
        for part in to_us.chunks(chunk.max(1)) {
            if let Some(outcome) = us.handle(part)? {
                return Ok((received.expect("tor saw DONE first"), outcome));
            }
        }
        let to_tor = us.take_outgoing();
        for part in to_tor.chunks(chunk.max(1)) {
            if let Some(request) = tor.handle(part)? {
                received = Some(request);
            }
        }
        if let Some(seen) = &received {
            for part in tor_answer.chunks(chunk.max(1)) {
                if let Some(outcome) = us.handle(part)? {
                    return Ok((seen.clone(), outcome));
                }
            }
            panic!("the client did not finish on tor's answer");
        }
    }
    panic!("no progress");
}

fn parsed_request(commands: &[u8]) -> Request {
    let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
    server
        .handle(&transport_bytes(&cookie(1), commands))
        .expect("valid")
        .expect("DONE seen")
}

#[test]
fn the_request_is_replayed_as_it_came_and_okay_ends_it() {
    let commands = [
        frame(code::USERADDR, b"192.0.2.7:41000"),
        frame(0x0077, b"from the future"),
        frame(code::TRANSPORT, b"obfs4"),
        frame(code::DONE, b""),
    ]
    .concat();
    let request = parsed_request(&commands);
    let mut answer = frame(code::CONTROL, b"ignored");
    answer.extend_from_slice(&frame(0x1777, b"unknown, ignored"));
    answer.extend_from_slice(&ServerHandshake::okay());
    answer.extend_from_slice(b"tor's first bytes");
    for chunk in [1, 3, 64, 4096] {
        let (seen, outcome) = converse(cookie(9), cookie(9), &request, &answer, chunk)
            .expect("the handshake completes");
        assert_eq!(seen.frames(), request.frames(), "chunk {chunk}");
        let Outcome::Okay { leftover } = outcome else {
            panic!("OKAY expected");
        };
        let expected: &[u8] = if chunk == 4096 {
            b"tor's first bytes"
        } else {
            b""
        };
        // Bytes after OKAY come back only from the read that held OKAY.
        assert!(leftover == expected || b"tor's first bytes".starts_with(&leftover));
    }
}

#[test]
fn deny_is_an_outcome_not_an_error() {
    let request = parsed_request(&obfs4_commands());
    let (_, outcome) = converse(cookie(9), cookie(9), &request, &ServerHandshake::deny(), 64)
        .expect("the handshake completes");
    assert_eq!(outcome, Outcome::Denied);
}

#[test]
fn a_stale_cookie_is_a_server_hash_mismatch() {
    let request = parsed_request(&obfs4_commands());
    assert_eq!(
        converse(cookie(8), cookie(9), &request, &ServerHandshake::okay(), 64).map(|_| ()),
        Err(Error::ServerHashMismatch)
    );
}

#[test]
fn the_client_needs_safe_cookie_and_a_good_status() {
    let request = parsed_request(&obfs4_commands());
    let mut us = ClientHandshake::new(cookie(1), CLIENT_NONCE, &request);
    assert_eq!(
        us.handle(&[2, 3, 0]),
        Err(Error::NoSafeCookie {
            offered: vec![2, 3]
        })
    );
    let mut us = ClientHandshake::new(cookie(1), CLIENT_NONCE, &request);
    assert_eq!(us.handle(&[7; 255]), Ok(None));
    assert_eq!(us.handle(&[7]), Err(Error::TooManyAuthTypes));

    for (status, error) in [(0u8, Error::Refused), (2, Error::BadStatus(2))] {
        let mut us = ClientHandshake::new(cookie(1), CLIENT_NONCE, &request);
        assert_eq!(us.handle(&[1, 0]), Ok(None));
        let mut reply = server_hash(&cookie(1), &CLIENT_NONCE, &SERVER_NONCE).to_vec();
        reply.extend_from_slice(&SERVER_NONCE);
        reply.push(status);
        assert_eq!(us.handle(&reply), Err(error));
    }
}

#[test]
fn tor_may_not_chatter_forever() {
    let request = parsed_request(&obfs4_commands());
    let chatter = frame(code::CONTROL, b"").repeat(MAX_COMMANDS + 1);
    assert_eq!(
        converse(cookie(9), cookie(9), &request, &chatter, 64).map(|_| ()),
        Err(Error::TooManyCommands)
    );
}

proptest! {
    /// Arbitrary bytes from a transport never panic the server, and an
    /// accepted request was the only way to get past the client hash.
    #[test]
    fn the_server_survives_any_input(input in proptest::collection::vec(any::<u8>(), 0..2000),
                                     cut in 0usize..2000) {
        let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
        let (a, b) = input.split_at(cut.min(input.len()));
        let first = server.handle(a);
        if first.is_ok() {
            let _ = server.handle(b);
        }
        let out = server.take_outgoing();
        prop_assert!(out.len() <= 2 + 64 + 1);
    }

    /// Arbitrary bytes from a tor never panic the client.
    #[test]
    fn the_client_survives_any_input(input in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let request = parsed_request(&obfs4_commands());
        let mut us = ClientHandshake::new(cookie(1), CLIENT_NONCE, &request);
        for part in input.chunks(7) {
            if us.handle(part).is_err() {
                break;
            }
        }
    }

    /// Where the stream is cut does not change the request.
    #[test]
    fn chunking_does_not_matter(chunk in 1usize..80) {
        let input = transport_bytes(&cookie(1), &obfs4_commands());
        let mut server = ServerHandshake::new(cookie(1), SERVER_NONCE);
        let mut request = None;
        for part in input.chunks(chunk) {
            if let Some(done) = server.handle(part).expect("valid") {
                request = Some(done);
            }
        }
        prop_assert_eq!(request, Some(parsed_request(&obfs4_commands())));
    }
}
