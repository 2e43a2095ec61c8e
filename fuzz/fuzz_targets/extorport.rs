//! Both Extended ORPort handshakes on arbitrary bytes, split at arbitrary
//! points: never a panic, the caps on commands and bodies held, and an
//! ended handshake takes no more input.

#![no_main]

use extorport::{
    ClientHandshake, Cookie, Error, Outcome, Request, ServerHandshake, MAX_BODY, MAX_COMMANDS,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses where the input is split into reads, its low
    // bit which side reads it.
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split >> 1).max(1);
    if split & 1 == 0 {
        server(bytes, chunk);
    } else {
        client(bytes, chunk);
    }
});

/// The side facing the transport: a request, if one comes, holds no more
/// commands or body bytes than the caps allow.
fn server(bytes: &[u8], chunk: usize) {
    let mut handshake = ServerHandshake::new(Cookie::from_secret([7; 32]), [9; 32]);
    let _ = handshake.take_outgoing();
    for piece in bytes.chunks(chunk) {
        match handshake.handle(piece) {
            Ok(None) => {
                let _ = handshake.take_outgoing();
            }
            Ok(Some(request)) => {
                assert!(request.frames().len() <= MAX_COMMANDS);
                assert!(request.frames().iter().all(|f| f.body().len() <= MAX_BODY));
                assert_eq!(handshake.handle(b"x"), Err(Error::Ended));
                return;
            }
            Err(_) => {
                assert_eq!(handshake.handle(b"x"), Err(Error::Ended));
                return;
            }
        }
    }
}

/// The side facing tor: what it queues stays small, and `OKAY` ends it.
fn client(bytes: &[u8], chunk: usize) {
    let mut handshake =
        ClientHandshake::new(Cookie::from_secret([7; 32]), [3; 32], &Request::default());
    for piece in bytes.chunks(chunk) {
        let result = handshake.handle(piece);
        assert!(handshake.take_outgoing().len() <= 1 + 32 + 32 + 4);
        match result {
            Ok(None) => {}
            Ok(Some(Outcome::Okay { .. } | Outcome::Denied)) | Err(_) => {
                assert_eq!(handshake.handle(b"x"), Err(Error::Ended));
                return;
            }
        }
    }
}
