//! The cookie file tor writes for its Extended ORPort, and the static
//! cookie a balancer presents to its transport in the same format
//! (extor-static-cookie's, made by its `gen-auth-cookie`).
//!
//! A file is exactly 64 bytes: a fixed 32-byte header, then the 32-byte
//! secret. Clients must check the header before using the secret
//! (ext-orport-spec 2.1.2), so that a path pointing at some other 64-byte
//! file is refused instead of used as a key.

use zeroize::{Zeroize, Zeroizing};

/// The header every cookie file starts with.
pub const COOKIE_HEADER: &[u8; 32] = b"! Extended ORPort Auth Cookie !\n";

/// The length of a cookie file: header and secret.
pub const COOKIE_FILE_LEN: usize = 64;

/// The shared secret of the SAFE_COOKIE handshake. Zeroed on drop; its
/// `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie([u8; 32]);

/// Why a cookie file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// The file is not 64 bytes long.
    #[error("a cookie file is {COOKIE_FILE_LEN} bytes; this one has {len}")]
    WrongLength {
        /// The length found.
        len: usize,
    },
    /// The first 32 bytes are not the Extended ORPort cookie header.
    #[error("the file does not start with the Extended ORPort cookie header")]
    BadHeader,
}

impl Cookie {
    /// Wraps a secret (from a random source, for a new static cookie).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Cookie(secret)
    }

    /// Reads a cookie file's contents, refusing anything but a header and a
    /// 32-byte secret.
    pub fn parse_file(bytes: &[u8]) -> Result<Self, CookieError> {
        if bytes.len() != COOKIE_FILE_LEN {
            return Err(CookieError::WrongLength { len: bytes.len() });
        }
        let (header, secret) = bytes.split_at(COOKIE_HEADER.len());
        if header != COOKIE_HEADER {
            return Err(CookieError::BadHeader);
        }
        let mut cookie = [0u8; 32];
        cookie.copy_from_slice(secret);
        Ok(Cookie(cookie))
    }

    /// The cookie as a file's contents (zeroed when dropped).
    pub fn file_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(COOKIE_FILE_LEN));
        bytes.extend_from_slice(COOKIE_HEADER);
        bytes.extend_from_slice(&self.0);
        bytes
    }

    /// The secret, as the handshake's HMAC key.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for Cookie {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cookie(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_32_bytes_ending_in_a_newline() {
        assert_eq!(COOKIE_HEADER.len(), 32);
        assert_eq!(COOKIE_HEADER[31], b'\n');
    }

    #[test]
    fn a_file_round_trips() {
        let cookie = Cookie::from_secret([7; 32]);
        let bytes = cookie.file_bytes();
        assert_eq!(bytes.len(), COOKIE_FILE_LEN);
        assert_eq!(Cookie::parse_file(&bytes), Ok(cookie));
    }

    #[test]
    fn wrong_files_are_refused() {
        let good = Cookie::from_secret([7; 32]).file_bytes();
        assert_eq!(
            Cookie::parse_file(&good[..63]),
            Err(CookieError::WrongLength { len: 63 })
        );
        assert_eq!(
            Cookie::parse_file(&[good.as_slice(), b"\n"].concat()),
            Err(CookieError::WrongLength { len: 65 })
        );
        let mut other = good.to_vec();
        other[2] = b'e';
        assert_eq!(Cookie::parse_file(&other), Err(CookieError::BadHeader));
        // A control-port cookie is 32 bytes of secret and no header.
        assert_eq!(
            Cookie::parse_file(&[9; 32]),
            Err(CookieError::WrongLength { len: 32 })
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        assert_eq!(
            format!("{:?}", Cookie::from_secret([0xab; 32])),
            "Cookie(..)"
        );
    }
}
