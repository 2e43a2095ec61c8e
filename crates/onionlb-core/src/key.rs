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
use zeroize::{Zeroize as _, Zeroizing};

use crate::address::OnionAddress;
use crate::revision::RevisionKey;

/// Header of tor's `hs_ed25519_secret_key` file, NUL-padded to 32 bytes.
const TOR_HEADER: &[u8] = b"== ed25519v1-secret: type0 ==";
/// Header of tor's `hs_ed25519_public_key` file, NUL-padded to 32 bytes.
const TOR_PUBLIC_HEADER: &[u8] = b"== ed25519v1-public: type0 ==";
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
///
/// Its secrets are zeroed when it is dropped (the keypair by
/// `ed25519-dalek`'s own `ZeroizeOnDrop`, the copies kept here by
/// [`Drop`]) and never shown by `Debug`.
pub struct MasterKey {
    keypair: HsIdKeypair,
    /// The expanded secret as tor's key file holds it (clamped scalar, not
    /// reduced, then hash prefix), so it is written back byte for byte.
    tor_secret: [u8; 64],
    /// The seed, when the key came from one (PEM, or generated): PKCS#8
    /// stores it, and an expanded key cannot be turned back into it.
    seed: Option<[u8; 32]>,
    format: KeyFormat,
    revision: RevisionKey,
}

/// The files tor keeps in a `HiddenServiceDir` for a service's identity.
#[derive(Clone)]
pub struct TorKeyFiles {
    /// `hs_ed25519_secret_key`.
    pub secret_key: Vec<u8>,
    /// `hs_ed25519_public_key`.
    pub public_key: Vec<u8>,
    /// `hostname`: the address and a newline.
    pub hostname: String,
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
    #[error("PEM key is not an unencrypted PKCS#8 ed25519 private key")]
    Pem(#[source] ed25519_dalek::pkcs8::Error),
    /// Neither format.
    #[error("neither tor's hs_ed25519_secret_key format nor a PEM private key")]
    UnknownFormat,
    /// An all-zero secret: a placeholder or a wiped file, not a key.
    #[error("the secret key is all zeros: this is a placeholder or a wiped file, not a key")]
    AllZero,
    /// PKCS#8 holds a seed, and a key read from tor's format has none.
    #[error("a key read from tor's hs_ed25519_secret_key format cannot be written as PEM (tor keeps no seed); keep the tor format")]
    NoSeed,
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
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(KeyError::Pem)?;
        let seed = Zeroizing::new(signing.to_bytes());
        if seed.iter().all(|&b| b == 0) {
            return Err(KeyError::AllZero);
        }
        let seed = *seed;
        let keypair = ed25519::Keypair::from_bytes(&seed);
        Ok(MasterKey {
            keypair: HsIdKeypair::from(ed25519::ExpandedKeypair::from(&keypair)),
            tor_secret: expand_seed(&seed),
            seed: Some(seed),
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
        let pem = seed_pem(&seed)?;
        let key = Self::from_bytes(pem.as_bytes())?;
        Ok((key, pem))
    }

    fn from_tor_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != TOR_FILE_LEN {
            return Err(KeyError::TorLength(bytes.len()));
        }
        let mut secret = Zeroizing::new([0u8; 64]);
        secret.copy_from_slice(&bytes[TOR_HEADER_LEN..]);
        if secret[..32].iter().all(|&b| b == 0) {
            return Err(KeyError::AllZero);
        }
        let revision = RevisionKey::from_identity_secret(&*secret);
        let expanded =
            ed25519::ExpandedKeypair::from_secret_key_bytes(*secret).ok_or(KeyError::TorSecret)?;
        Ok(MasterKey {
            keypair: HsIdKeypair::from(expanded),
            tor_secret: *secret,
            seed: None,
            format: KeyFormat::Tor,
            revision,
        })
    }

    /// The key as a file in `format`: tor's `hs_ed25519_secret_key`
    /// bytes, or PKCS#8 PEM (only for keys that have a seed).
    pub fn encode(&self, format: KeyFormat) -> Result<Vec<u8>, KeyError> {
        match format {
            KeyFormat::Tor => {
                let mut file = tor_header(TOR_HEADER);
                file.extend_from_slice(&self.tor_secret);
                Ok(file)
            }
            KeyFormat::Pem => {
                let seed = self.seed.ok_or(KeyError::NoSeed)?;
                Ok(seed_pem(&seed)?.into_bytes())
            }
        }
    }

    /// The key as `ADD_ONION` takes it (`ED25519-V3:` and the expanded
    /// secret in base64), to run an onion service with it in a tor we
    /// control.
    pub fn add_onion_key(&self) -> String {
        format!(
            "ED25519-V3:{}",
            data_encoding::BASE64.encode(&self.tor_secret)
        )
    }

    /// What tor's `HiddenServiceDir` holds for this identity, so an
    /// instance tor can be given a key made here.
    pub fn tor_key_files(&self) -> TorKeyFiles {
        let expanded: &ed25519::ExpandedKeypair = self.keypair.as_ref();
        let mut secret_key = tor_header(TOR_HEADER);
        secret_key.extend_from_slice(&self.tor_secret);
        let mut public_key = tor_header(TOR_PUBLIC_HEADER);
        public_key.extend_from_slice(expanded.public().as_bytes());
        TorKeyFiles {
            secret_key,
            public_key,
            hostname: format!("{}\n", self.address()),
        }
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

/// A seed as PKCS#8 v1 PEM (no public key), as OpenSSL and Python's
/// `cryptography` (so `onionbalance-config`) write it.
fn seed_pem(seed: &[u8; 32]) -> Result<String, KeyError> {
    let pkcs8 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: *seed,
        public_key: None,
    };
    let pem = pkcs8
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(KeyError::Pem)?;
    Ok(pem.to_string())
}

/// The expanded secret key of an ed25519 seed, as tor stores it:
/// SHA-512 of the seed with the scalar half clamped (RFC 8032 5.1.5).
fn expand_seed(seed: &[u8; 32]) -> [u8; 64] {
    use sha2::{Digest as _, Sha512};
    let mut expanded: [u8; 64] = Sha512::digest(seed).into();
    expanded[0] &= 248;
    expanded[31] &= 63;
    expanded[31] |= 64;
    expanded
}

/// A tor key file header, NUL-padded to its 32 bytes.
fn tor_header(text: &[u8]) -> Vec<u8> {
    let mut header = text.to_vec();
    header.resize(TOR_HEADER_LEN, 0);
    header
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.tor_secret.zeroize();
        self.seed.zeroize();
    }
}

impl Drop for TorKeyFiles {
    fn drop(&mut self) {
        self.secret_key.zeroize();
    }
}

impl fmt::Debug for TorKeyFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TorKeyFiles")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
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

    #[test]
    fn an_all_zero_key_is_refused() {
        let mut zero = TOR_HEADER.to_vec();
        zero.resize(TOR_FILE_LEN, 0);
        assert_eq!(MasterKey::from_bytes(&zero).unwrap_err(), KeyError::AllZero);
        let zero_pem = seed_pem(&[0; 32]).unwrap();
        assert_eq!(
            MasterKey::from_bytes(zero_pem.as_bytes()).unwrap_err(),
            KeyError::AllZero
        );
    }

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
    fn keys_are_written_in_both_formats_as_they_are_read() {
        let pem = MasterKey::from_bytes(PEM.as_bytes()).unwrap();
        assert_eq!(pem.encode(KeyFormat::Tor).unwrap(), tor_file());
        assert_eq!(pem.encode(KeyFormat::Pem).unwrap(), PEM.as_bytes());
        let tor = MasterKey::from_bytes(&tor_file()).unwrap();
        assert_eq!(tor.encode(KeyFormat::Tor).unwrap(), tor_file());
        assert_eq!(tor.encode(KeyFormat::Pem).unwrap_err(), KeyError::NoSeed);

        let files = tor.tor_key_files();
        assert_eq!(files.secret_key, tor_file());
        assert_eq!(files.hostname, format!("{ADDRESS}\n"));
        assert_eq!(files.public_key.len(), 64);
        assert!(files
            .public_key
            .starts_with(b"== ed25519v1-public: type0 ==\0\0\0"));
        let address: OnionAddress = ADDRESS.parse().unwrap();
        assert_eq!(&files.public_key[32..], address.hs_id().as_ref());
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
