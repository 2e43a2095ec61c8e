//! The master identity key of a balanced service, read from the formats
//! operators already have.
//!
//! Two formats are accepted, as Python Onionbalance accepts them:
//!
//! * tor's `hs_ed25519_secret_key`: a 32-byte header
//!   `== ed25519v1-secret: type0 ==` padded with NULs, then the 64-byte
//!   expanded secret key (clamped scalar, then hash prefix);
//! * PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), holding the 32-byte seed,
//!   as `onionbalance-config` writes it.
//!
//! Only bytes go in; reading the file (and checking its permissions) is the
//! caller's business.

use std::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use thiserror::Error;
use tor_hscrypto::pk::{HsIdKey, HsIdKeypair};
use tor_llcrypto::pk::ed25519;

use crate::address::OnionAddress;
use crate::revision::RevisionKey;

/// Header of tor's `hs_ed25519_secret_key` file, NUL-padded to 32 bytes.
const TOR_HEADER: &[u8] = b"== ed25519v1-secret: type0 ==";
const TOR_HEADER_LEN: usize = 32;
const TOR_FILE_LEN: usize = TOR_HEADER_LEN + 64;

/// How a key was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// tor's `hs_ed25519_secret_key`.
    Tor,
    /// PKCS#8 PEM.
    Pem,
}

/// The identity keypair of an onion service we publish descriptors for.
pub struct MasterKey {
    keypair: HsIdKeypair,
    format: KeyFormat,
    revision: RevisionKey,
}

/// Why bytes are not a usable master key.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum KeyError {
    /// A tor-format key with the right header but the wrong length.
    #[error("tor key file has {0} bytes, expected 96")]
    TorLength(usize),
    /// A tor-format key whose secret is not a valid expanded key.
    #[error("tor key file holds an invalid ed25519 secret key")]
    TorSecret,
    /// PEM that is not an unencrypted PKCS#8 ed25519 key.
    #[error("PEM key is not an unencrypted PKCS#8 ed25519 private key: {0}")]
    Pem(String),
    /// Neither format.
    #[error("neither tor's hs_ed25519_secret_key format nor a PEM private key")]
    UnknownFormat,
}

impl MasterKey {
    /// Reads a key in either format, telling them apart by their first
    /// bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.starts_with(TOR_HEADER) {
            return Self::from_tor_bytes(bytes);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| KeyError::UnknownFormat)?;
        if !text.trim_start().starts_with("-----BEGIN") {
            return Err(KeyError::UnknownFormat);
        }
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        let seed = signing.to_bytes();
        let keypair = ed25519::Keypair::from_bytes(&seed);
        Ok(MasterKey {
            keypair: HsIdKeypair::from(ed25519::ExpandedKeypair::from(&keypair)),
            format: KeyFormat::Pem,
            revision: RevisionKey::from_identity_secret(&seed),
        })
    }

    /// A new random key, and its PKCS#8 PEM encoding to store (the format
    /// `onionbalance-config` writes).
    pub fn generate<R: rand::Rng + rand::CryptoRng>(
        rng: &mut R,
    ) -> Result<(Self, String), KeyError> {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let pem = signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        let key = Self::from_bytes(pem.as_bytes())?;
        Ok((key, pem.to_string()))
    }

    fn from_tor_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != TOR_FILE_LEN {
            return Err(KeyError::TorLength(bytes.len()));
        }
        let mut secret = [0u8; 64];
        secret.copy_from_slice(&bytes[TOR_HEADER_LEN..]);
        let revision = RevisionKey::from_identity_secret(&secret);
        let expanded =
            ed25519::ExpandedKeypair::from_secret_key_bytes(secret).ok_or(KeyError::TorSecret)?;
        Ok(MasterKey {
            keypair: HsIdKeypair::from(expanded),
            format: KeyFormat::Tor,
            revision,
        })
    }

    /// The service's onion address.
    pub fn address(&self) -> OnionAddress {
        OnionAddress::from(HsIdKey::from(&self.keypair).id())
    }

    /// The format it was read from.
    pub fn format(&self) -> KeyFormat {
        self.format
    }

    /// The keypair, for blinding and signing.
    pub fn keypair(&self) -> &HsIdKeypair {
        &self.keypair
    }

    /// The key of its revision counters, derived as Python Onionbalance
    /// derives it from the same file.
    pub fn revision_key(&self) -> &RevisionKey {
        &self.revision
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret: only what it is for.
        f.debug_struct("MasterKey")
            .field("address", &self.address())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Vectors made with Python's `cryptography` and `hashlib` from the seed
    // 00 01 02 ... 1f: its PKCS#8 PEM, its tor-format expanded key, and the
    // onion address of its public key.
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n-----END PRIVATE KEY-----\n";
    const TOR_SECRET_HEX: &str = "3894eea49c580aef816935762be049559d6d1440dede12e6a125f1841fff8e6fa9d71862a3e5746b571be3d187b0041046f52ebd850c7cbd5fde8ee38473b649";
    const ADDRESS: &str = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead.onion";

    fn tor_file() -> Vec<u8> {
        let mut file = TOR_HEADER.to_vec();
        file.resize(TOR_HEADER_LEN, 0);
        file.extend(
            (0..64).map(|i| u8::from_str_radix(&TOR_SECRET_HEX[2 * i..2 * i + 2], 16).unwrap()),
        );
        file
    }

    #[test]
    fn both_formats_give_the_same_address() {
        let pem = MasterKey::from_bytes(PEM.as_bytes()).unwrap();
        let tor = MasterKey::from_bytes(&tor_file()).unwrap();
        assert_eq!(pem.format(), KeyFormat::Pem);
        assert_eq!(tor.format(), KeyFormat::Tor);
        assert_eq!(pem.address().to_string(), ADDRESS);
        assert_eq!(tor.address().to_string(), ADDRESS);
        // Python Onionbalance keys its counters by the bytes as stored, so
        // the two files of one identity count differently (vectors in
        // revision.rs).
        assert_eq!(pem.revision_key().encrypt(1000), 32711276);
        assert_eq!(tor.revision_key().encrypt(1000), 33153415);
    }

    #[test]
    fn generated_keys_round_trip_through_pem() {
        let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = MasterKey::from_bytes(pem.as_bytes()).unwrap();
        assert_eq!(again.address(), key.address());
        let (other, _) = MasterKey::generate(&mut rand::rng()).unwrap();
        assert_ne!(other.address(), key.address());
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = MasterKey::from_bytes(PEM.as_bytes()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(ADDRESS));
        assert!(!shown.to_lowercase().contains(&TOR_SECRET_HEX[..16]));
    }

    #[test]
    fn bad_keys_are_refused() {
        let mut short = tor_file();
        short.pop();
        assert_eq!(
            MasterKey::from_bytes(&short).unwrap_err(),
            KeyError::TorLength(95)
        );
        assert_eq!(
            MasterKey::from_bytes(b"hello").unwrap_err(),
            KeyError::UnknownFormat
        );
        assert_eq!(
            MasterKey::from_bytes(&[0xff; 96]).unwrap_err(),
            KeyError::UnknownFormat
        );
        let rsa = "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            MasterKey::from_bytes(rsa.as_bytes()),
            Err(KeyError::Pem(_))
        ));
    }
}
