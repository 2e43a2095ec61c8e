//! The SAFE_COOKIE computations (ext-orport-spec 2.1.3): both hashes are
//! HMAC-SHA256 keyed with the cookie over a fixed label, the client's nonce
//! and the server's nonce. The labels differ per direction, so neither side
//! can reflect the other's hash.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Cookie;

/// The authentication type SAFE_COOKIE, the only one defined.
pub const SAFE_COOKIE: u8 = 1;

/// The length of either party's nonce.
pub const NONCE_LEN: usize = 32;

const SERVER_LABEL: &[u8] = b"ExtORPort authentication server-to-client hash";
const CLIENT_LABEL: &[u8] = b"ExtORPort authentication client-to-server hash";

/// The hash the server (tor) sends to prove it knows the cookie.
pub fn server_hash(
    cookie: &Cookie,
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
) -> [u8; 32] {
    mac(cookie, SERVER_LABEL, client_nonce, server_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// The hash the client (the transport) sends to prove it knows the cookie.
pub fn client_hash(
    cookie: &Cookie,
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
) -> [u8; 32] {
    mac(cookie, CLIENT_LABEL, client_nonce, server_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `hash` is the server's hash, compared in constant time.
pub(crate) fn server_hash_matches(
    cookie: &Cookie,
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
    hash: &[u8],
) -> bool {
    mac(cookie, SERVER_LABEL, client_nonce, server_nonce)
        .verify_slice(hash)
        .is_ok()
}

/// Whether `hash` is the client's hash, compared in constant time.
pub(crate) fn client_hash_matches(
    cookie: &Cookie,
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
    hash: &[u8],
) -> bool {
    mac(cookie, CLIENT_LABEL, client_nonce, server_nonce)
        .verify_slice(hash)
        .is_ok()
}

fn mac(
    cookie: &Cookie,
    label: &[u8],
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
) -> Hmac<Sha256> {
    // HMAC takes a key of any length; a 32-byte key cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(cookie.secret()) else {
        unreachable!("HMAC accepts keys of every length")
    };
    mac.update(label);
    mac.update(client_nonce);
    mac.update(server_nonce);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// HMAC-SHA256 written out from its definition (RFC 2104) over SHA-256,
    /// to check the construction independently of the `hmac` crate.
    fn reference_hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, byte) in key.iter().enumerate() {
            ipad[i] ^= byte;
            opad[i] ^= byte;
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize()
            .into()
    }

    #[test]
    fn hashes_follow_the_spec_construction() {
        let secret = [0x11u8; 32];
        let cookie = Cookie::from_secret(secret);
        let client_nonce = [0x22u8; 32];
        let server_nonce = [0x33u8; 32];
        let message = |label: &str| [label.as_bytes(), &client_nonce, &server_nonce].concat();
        assert_eq!(
            server_hash(&cookie, &client_nonce, &server_nonce),
            reference_hmac(
                &secret,
                &message("ExtORPort authentication server-to-client hash")
            )
        );
        assert_eq!(
            client_hash(&cookie, &client_nonce, &server_nonce),
            reference_hmac(
                &secret,
                &message("ExtORPort authentication client-to-server hash")
            )
        );
    }

    #[test]
    fn matching_is_per_direction() {
        let cookie = Cookie::from_secret([1; 32]);
        let (c, s) = ([2; 32], [3; 32]);
        let server = server_hash(&cookie, &c, &s);
        let client = client_hash(&cookie, &c, &s);
        assert!(server_hash_matches(&cookie, &c, &s, &server));
        assert!(!server_hash_matches(&cookie, &c, &s, &client));
        assert!(client_hash_matches(&cookie, &c, &s, &client));
        assert!(!client_hash_matches(&cookie, &c, &s, &server));
        assert!(!client_hash_matches(
            &Cookie::from_secret([9; 32]),
            &c,
            &s,
            &client
        ));
        assert!(!client_hash_matches(&cookie, &c, &s, &client[..31]));
    }
}
