//! Reading an instance's descriptor (rend-spec-v3 [HSDESC-OUTER],
//! [HS-DESC-ENCRYPTION-KEYS], [HS-DESC-FIRST-LAYER], [HS-DESC-SECOND-LAYER]):
//! the outer document and its signature, both encrypted layers, and the
//! intro points, with only the work the manager needs. Writing a master
//! descriptor is the `write` submodule's; both share the layers' keys.
//!
//! tor-netdoc reads descriptors as a client must, which costs the manager
//! more than it needs: for every intro point it decompresses two or three
//! ed25519 points, converts the ntor key to ed25519 (a field inversion)
//! and checks two certificates whose only signer is the descriptor-signing
//! key, over text the outer signature already covers. A master descriptor
//! carries none of that: it certifies each intro point anew with its own
//! signing key. So this reader checks what gives the intro points their
//! authority, and no more:
//!
//! 1. the outer document's shape (`hs-descriptor 3` first, `signature`
//!    last, each required item once, a lifetime tor accepts);
//! 2. the `descriptor-signing-key-cert`: an ed25519 certificate of the
//!    blinded-key-to-signing-key type, signed by the instance's blinded key
//!    for the period (verified with the point the [`Blinding`] already
//!    holds, so no decompression);
//! 3. the outer signature by the certified signing key, over
//!    `"Tor onion service descriptor sig v3"` and everything before the
//!    `signature` item (verified in one batch with the certificate's);
//! 4. both layers decrypted (AES-256-CTR, keyed by the SHAKE-256 KDF of
//!    the blinded key, the subcredential and the revision counter). Their
//!    MACs are not checked: each lies inside what the outer signature
//!    covers, so only the holder of the signing key could make one that
//!    does not match, and it could as well make one that does. A MAC
//!    costs a SHA3-256 pass over the layer, about a sixth of the whole
//!    read. A layer made with another subcredential decrypts to noise,
//!    refused as not text;
//! 5. the inner document's shape: `create2-formats` naming ntor, 1 to 20
//!    intro points each with link specifiers, an ntor onion key, an
//!    `auth-key` certificate and an ntor `enc-key`, and every certificate
//!    inside signed-by the same signing key the outer one certifies; each
//!    auth key an ed25519 point and each `enc-key-cert` certifying the
//!    `enc-key`'s ed25519 form, kept for every master that will certify
//!    it ([`crate::intro`]);
//! 6. validity: the end of the descriptor's life is the earliest expiry of
//!    its certificates.
//!
//! Restricted discovery (client authorization) is not read: an instance
//! behind a balancer publishes for any client.

use std::fmt;
use std::num::NonZeroU8;
use std::time::SystemTime;

use aes::Aes256;
use ctr::cipher::{KeyIvInit as _, StreamCipher as _};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use sha3::digest::{ExtendableOutput as _, Update as _, XofReader as _};
use sha3::{Digest as _, Sha3_256, Shake256};
use tor_cert::{CertType, Ed25519Cert};
use tor_checkable::{SelfSigned as _, Timebound as _};
use tor_linkspec::{EncodedLinkSpec, LinkSpecType};
use tor_llcrypto::pk::ed25519;
use tor_protover::{ProtoKind, Protocols};

use crate::descriptor::Blinding;
use crate::descriptor::MAX_INTRO_POINTS;
use crate::intro::{IntroPoint, IntroPointError, IntroPointKeys};

mod write;

pub(crate) use write::{write, Certified, Document};

/// What the outer signature is prefixed with.
const SIGNATURE_PREFIX: &[u8] = b"Tor onion service descriptor sig v3";
/// The KDF's personalization of the first (superencryption) layer.
const FIRST_LAYER: &[u8] = b"hsdir-superencrypted-data";
/// The KDF's personalization of the second (encryption) layer.
const SECOND_LAYER: &[u8] = b"hsdir-encrypted-data";
const SALT_LEN: usize = 16;
const MAC_LEN: usize = 32;
/// Lifetimes tor accepts, in minutes.
const LIFETIME_MINUTES: std::ops::RangeInclusive<u16> = 30..=720;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// An instance descriptor's content, once read and checked.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    /// Its revision counter.
    pub(crate) revision: u64,
    /// Its intro points.
    pub(crate) intro_points: Vec<IntroPoint>,
    /// When its earliest certificate expires.
    pub(crate) valid_until: SystemTime,
    /// Its `flow-control` line, if it had one.
    pub(crate) flow_control: Option<(Protocols, NonZeroU8)>,
}

/// Why a descriptor could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// A layer is not a document of the expected shape.
    Malformed {
        /// Which layer (`outer`, `middle`, `inner`).
        layer: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// The signing-key certificate is not signed by the blinded key.
    BadCertificate,
    /// The outer signature does not verify.
    BadSignature,
    /// A layer does not decrypt to text: not made with this instance's
    /// subcredential.
    Undecryptable {
        /// Which layer.
        layer: &'static str,
    },
    /// A certificate inside is signed by another key than the one the
    /// outer certificate certifies.
    ForeignCertificate,
    /// Outside its validity.
    Expired,
    /// Well formed, but lists no intro point. C tor never uploads such a
    /// descriptor, but builds one (`GETINFO hs/service/desc/id/`) while
    /// none of its intro circuits is open.
    NoIntroPoints,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Malformed { layer, what } => write!(f, "{layer} layer: {what}"),
            ReadError::BadCertificate => {
                f.write_str("the signing-key certificate is not signed by the blinded key")
            }
            ReadError::BadSignature => f.write_str("the outer signature does not verify"),
            ReadError::Undecryptable { layer } => write!(
                f,
                "the {layer} layer does not decrypt to text (another subcredential)"
            ),
            ReadError::ForeignCertificate => {
                f.write_str("an intro point certificate is signed by another key")
            }
            ReadError::Expired => f.write_str("a certificate has expired"),
            ReadError::NoIntroPoints => f.write_str("inner layer: no intro points"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads `text` as a descriptor of the identity `blinding` is for, at
/// `now`.
pub(crate) fn read(text: &str, blinding: &Blinding, now: SystemTime) -> Result<Content, ReadError> {
    let outer = Outer::parse(text)?;
    let malformed = |what| ReadError::Malformed {
        layer: "outer",
        what,
    };
    // 2. The signing-key certificate, by the blinded key.
    let cert = Ed25519Cert::decode(&outer.cert)
        .map_err(|_| malformed("unreadable descriptor-signing-key-cert"))?
        .should_have_signing_key()
        .map_err(|_| ReadError::BadCertificate)?;
    if cert.peek_signing_key().as_bytes() != blinding.blinded.as_ref() {
        return Err(ReadError::BadCertificate);
    }
    // Verified below with the blinded key's point, already at hand.
    let cert = cert
        .dangerously_assume_wellsigned()
        .dangerously_assume_timely();
    if cert.cert_type() != CertType::HS_BLINDED_ID_V_SIGNING {
        return Err(malformed("the signing-key certificate has the wrong type"));
    }
    let (signed, signature) = split_certificate(&outer.cert)?;
    let signer = *cert
        .subject_key()
        .as_ed25519()
        .ok_or(malformed("the certified key is not ed25519"))?;
    let mut valid_until = cert.expiry();
    // 3. The outer signature, by the certified signing key.
    let signing_key =
        VerifyingKey::try_from(signer.as_bytes()).map_err(|_| ReadError::BadSignature)?;
    let mut message = Vec::with_capacity(SIGNATURE_PREFIX.len() + outer.signed.len());
    message.extend_from_slice(SIGNATURE_PREFIX);
    message.extend_from_slice(outer.signed.as_bytes());
    verify_both(
        (&blinding.public, signed, &signature),
        (&signing_key, &message, &outer.signature),
    )?;
    // 4. Both layers.
    let keys = LayerKeys {
        blinded: blinding.blinded.as_ref(),
        subcredential: blinding.subcredential.as_ref(),
        revision: outer.revision,
    };
    let middle = keys.decrypt(&outer.superencrypted, FIRST_LAYER, "middle")?;
    let middle = std::str::from_utf8(trim_padding(&middle))
        .map_err(|_| ReadError::Undecryptable { layer: "middle" })?;
    let encrypted = middle_encrypted(middle)?;
    let inner = keys.decrypt(&encrypted, SECOND_LAYER, "inner")?;
    let inner = std::str::from_utf8(trim_padding(&inner))
        .map_err(|_| ReadError::Undecryptable { layer: "inner" })?;
    // 5. and 6.
    let inner = Inner::parse(inner, &signer)?;
    valid_until = valid_until.min(inner.valid_until);
    if now > valid_until {
        return Err(ReadError::Expired);
    }
    Ok(Content {
        revision: outer.revision,
        intro_points: inner.intro_points,
        valid_until,
        flow_control: inner.flow_control,
    })
}

/// Runs each layer's parser on `text`, for the fuzz targets: the middle
/// and inner parsers are otherwise reached only past a signature. The
/// inner one takes the signing key of the first certificate in
/// `text` as the descriptor's.
#[cfg(feature = "fuzzing")]
pub fn fuzz_layers(text: &str) {
    let _ = Outer::parse(text);
    let _ = middle_encrypted(text);
    let mut items = Items::new(text, "inner");
    let signer = std::iter::from_fn(|| items.next_item().ok().flatten())
        .find_map(|item| {
            let bytes = item.object("ED25519 CERT").ok()?;
            let cert = Ed25519Cert::decode(&bytes)
                .ok()?
                .should_have_signing_key()
                .ok()?;
            Some(*cert.peek_signing_key())
        })
        .unwrap_or_else(|| ed25519::Ed25519Identity::from([0x55; 32]));
    let _ = Inner::parse(text, &signer);
}

/// The middle and inner documents of `text`, decrypted, for the fuzz
/// targets' seeds.
#[cfg(feature = "fuzzing")]
pub fn fuzz_plaintexts(text: &str, blinding: &Blinding) -> Option<(String, String)> {
    let outer = Outer::parse(text).ok()?;
    let keys = LayerKeys {
        blinded: blinding.blinded.as_ref(),
        subcredential: blinding.subcredential.as_ref(),
        revision: outer.revision,
    };
    let middle = keys
        .decrypt(&outer.superencrypted, FIRST_LAYER, "middle")
        .ok()?;
    let middle = String::from_utf8(trim_padding(&middle).to_vec()).ok()?;
    let inner = keys
        .decrypt(&middle_encrypted(&middle).ok()?, SECOND_LAYER, "inner")
        .ok()?;
    let inner = String::from_utf8(trim_padding(&inner).to_vec()).ok()?;
    Some((middle, inner))
}

/// The outer document, split into what the checks need.
struct Outer<'a> {
    /// Everything before the `signature` item.
    signed: &'a str,
    cert: Vec<u8>,
    revision: u64,
    superencrypted: Vec<u8>,
    signature: Signature,
}

impl<'a> Outer<'a> {
    fn parse(text: &'a str) -> Result<Self, ReadError> {
        let malformed = |what| ReadError::Malformed {
            layer: "outer",
            what,
        };
        if !text.starts_with("hs-descriptor 3\n") {
            return Err(malformed("does not start with hs-descriptor 3"));
        }
        let mut items = Items::new(text, "outer");
        let (mut lifetime, mut cert, mut revision, mut body) = (None, None, None, None);
        let mut signature = None;
        while let Some(item) = items.next_item()? {
            if signature.is_some() {
                return Err(malformed("an item after the signature"));
            }
            match item.keyword {
                "hs-descriptor" if item.offset == 0 => {}
                "descriptor-lifetime" => {
                    once(&lifetime)?;
                    let minutes: u16 = item
                        .arg(0)
                        .and_then(|a| a.parse().ok())
                        .ok_or(malformed("descriptor-lifetime is not a number"))?;
                    if !LIFETIME_MINUTES.contains(&minutes) {
                        return Err(malformed("descriptor-lifetime out of range"));
                    }
                    lifetime = Some(minutes);
                }
                "descriptor-signing-key-cert" => {
                    once(&cert)?;
                    cert = Some(item.object("ED25519 CERT")?);
                }
                "revision-counter" => {
                    once(&revision)?;
                    revision = Some(
                        item.arg(0)
                            .and_then(|a| a.parse::<u64>().ok())
                            .ok_or(malformed("revision-counter is not a number"))?,
                    );
                }
                "superencrypted" => {
                    once(&body)?;
                    body = Some(item.object("MESSAGE")?);
                }
                "signature" => {
                    let bytes = item
                        .arg(0)
                        .and_then(base64_unpadded)
                        .and_then(|b| <[u8; 64]>::try_from(b).ok())
                        .ok_or(malformed("unreadable signature"))?;
                    signature = Some((item.offset, Signature::from_bytes(&bytes)));
                }
                "hs-descriptor" => return Err(malformed("an item appears twice")),
                // Unknown items are allowed, as tor allows them.
                _ => {}
            }
        }
        let (Some(_), Some(cert), Some(revision), Some(superencrypted), Some((at, signature))) =
            (lifetime, cert, revision, body, signature)
        else {
            return Err(malformed("a required item is missing"));
        };
        Ok(Outer {
            signed: &text[..at],
            cert,
            revision,
            superencrypted,
            signature,
        })
    }
}

/// Refuses an outer item seen before.
fn once<T>(slot: &Option<T>) -> Result<(), ReadError> {
    match slot {
        Some(_) => Err(ReadError::Malformed {
            layer: "outer",
            what: "an item appears twice",
        }),
        None => Ok(()),
    }
}

/// The `encrypted` object of the middle document.
fn middle_encrypted(middle: &str) -> Result<Vec<u8>, ReadError> {
    let mut items = Items::new(middle, "middle");
    let mut found = None;
    while let Some(item) = items.next_item()? {
        if item.keyword == "encrypted" {
            if found.is_some() {
                return Err(ReadError::Malformed {
                    layer: "middle",
                    what: "two encrypted items",
                });
            }
            found = Some(item.object("MESSAGE")?);
        }
    }
    found.ok_or(ReadError::Malformed {
        layer: "middle",
        what: "no encrypted item",
    })
}

/// The inner document: the intro points.
struct Inner {
    intro_points: Vec<IntroPoint>,
    valid_until: SystemTime,
    flow_control: Option<(Protocols, NonZeroU8)>,
}

/// One intro point's items, as they are read.
#[derive(Default)]
struct PointItems {
    link_specifiers: Option<Vec<EncodedLinkSpec>>,
    onion_key: Option<[u8; 32]>,
    auth_key: Option<[u8; 32]>,
    enc_key: Option<[u8; 32]>,
    enc_key_cert: Option<[u8; 32]>,
}

impl Inner {
    fn parse(text: &str, signer: &ed25519::Ed25519Identity) -> Result<Self, ReadError> {
        let malformed = |what| ReadError::Malformed {
            layer: "inner",
            what,
        };
        let mut items = Items::new(text, "inner");
        let mut create2 = false;
        let mut flow_control = None;
        let mut valid_until = None::<SystemTime>;
        let mut points = Vec::new();
        let mut current: Option<PointItems> = None;
        // Each certificate inside: the right type, signed by `signer`;
        // its expiry bounds the descriptor's.
        let mut certified = |bytes: &[u8], kind: CertType| -> Result<[u8; 32], ReadError> {
            let cert = Ed25519Cert::decode(bytes)
                .map_err(|_| malformed("unreadable certificate"))?
                .should_have_signing_key()
                .map_err(|_| malformed("a certificate without its signing key"))?;
            if cert.peek_signing_key() != signer {
                return Err(ReadError::ForeignCertificate);
            }
            // Not verified: see the module doc.
            let cert = cert
                .dangerously_assume_wellsigned()
                .dangerously_assume_timely();
            if cert.cert_type() != kind {
                return Err(malformed("a certificate of the wrong type"));
            }
            let expiry = cert.expiry();
            valid_until = Some(valid_until.map_or(expiry, |v| v.min(expiry)));
            let subject = cert
                .subject_key()
                .as_ed25519()
                .ok_or(malformed("a certified key that is not ed25519"))?;
            subject
                .as_bytes()
                .try_into()
                .map_err(|_| malformed("a certified key that is not ed25519"))
        };
        while let Some(item) = items.next_item()? {
            match item.keyword {
                "introduction-point" => {
                    if let Some(done) = current.take() {
                        points.push(done);
                    }
                    if points.len() == MAX_INTRO_POINTS {
                        return Err(malformed("more than 20 intro points"));
                    }
                    let bytes = item
                        .arg(0)
                        .and_then(base64_unpadded)
                        .ok_or(malformed("unreadable link specifiers"))?;
                    current = Some(PointItems {
                        link_specifiers: Some(
                            link_specifiers(&bytes)
                                .ok_or(malformed("unreadable link specifiers"))?,
                        ),
                        ..PointItems::default()
                    });
                }
                "onion-key" | "auth-key" | "enc-key" | "enc-key-cert" if current.is_none() => {
                    return Err(malformed("an intro point item before introduction-point"));
                }
                "onion-key" if item.arg(0) == Some("ntor") => {
                    let point = current.as_mut().ok_or(malformed("misplaced onion-key"))?;
                    if point.onion_key.is_some() {
                        return Err(malformed("two ntor onion-keys"));
                    }
                    point.onion_key = Some(key32(item.arg(1)).ok_or(malformed("bad onion-key"))?);
                }
                "auth-key" => {
                    let bytes = item.object("ED25519 CERT")?;
                    let point = current.as_mut().ok_or(malformed("misplaced auth-key"))?;
                    if point.auth_key.is_some() {
                        return Err(malformed("two auth-keys"));
                    }
                    point.auth_key = Some(certified(&bytes, CertType::HS_IP_V_SIGNING)?);
                }
                "enc-key" if item.arg(0) == Some("ntor") => {
                    let point = current.as_mut().ok_or(malformed("misplaced enc-key"))?;
                    if point.enc_key.is_some() {
                        return Err(malformed("two ntor enc-keys"));
                    }
                    point.enc_key = Some(key32(item.arg(1)).ok_or(malformed("bad enc-key"))?);
                }
                "enc-key-cert" => {
                    let bytes = item.object("ED25519 CERT")?;
                    let point = current
                        .as_mut()
                        .ok_or(malformed("misplaced enc-key-cert"))?;
                    if point.enc_key_cert.is_some() {
                        return Err(malformed("two enc-key-certs"));
                    }
                    point.enc_key_cert = Some(certified(&bytes, CertType::HS_IP_CC_SIGNING)?);
                }
                "create2-formats" if current.is_none() => {
                    create2 = item.args().any(|a| a == "2");
                }
                "flow-control" if current.is_none() => {
                    let versions = item.arg(0).ok_or(malformed("bad flow-control"))?;
                    let versions = Protocols::from_kind_and_versions(ProtoKind::FlowCtrl, versions)
                        .map_err(|_| malformed("bad flow-control"))?;
                    let sendme: NonZeroU8 = item
                        .arg(1)
                        .and_then(|a| a.parse().ok())
                        .ok_or(malformed("bad flow-control"))?;
                    flow_control = Some((versions, sendme));
                }
                // Legacy keys, PoW parameters, intro-auth-required,
                // single-onion-service and what later tors add: not ours to
                // use.
                _ => {}
            }
        }
        points.extend(current);
        if !create2 {
            return Err(malformed("create2-formats does not list ntor"));
        }
        if points.is_empty() {
            return Err(ReadError::NoIntroPoints);
        }
        let intro_points = points
            .into_iter()
            .map(|point| {
                let (
                    Some(link_specifiers),
                    Some(onion_key),
                    Some(auth_key),
                    Some(enc_key),
                    Some(enc_key_certified),
                ) = (
                    point.link_specifiers,
                    point.onion_key,
                    point.auth_key,
                    point.enc_key,
                    point.enc_key_cert,
                )
                else {
                    return Err(malformed("an intro point lacks a required item"));
                };
                Ok(IntroPointKeys {
                    link_specifiers,
                    onion_key,
                    auth_key,
                    enc_key,
                    enc_key_certified: Some(enc_key_certified),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let intro_points = IntroPoint::from_keys(intro_points).map_err(|e| match e {
            IntroPointError::AuthKey => malformed("an auth-key that is not a point"),
            IntroPointError::EncKeyCert => {
                malformed("an enc-key-cert that does not certify the enc-key")
            }
            _ => malformed("an enc-key without an ed25519 form"),
        })?;
        Ok(Inner {
            intro_points,
            valid_until: valid_until.ok_or(malformed("no certificates"))?,
            flow_control,
        })
    }
}

/// The keys of one layer: rend-spec-v3 [HS-DESC-ENCRYPTION-KEYS], with
/// no descriptor cookie (no client authorization).
struct LayerKeys<'a> {
    blinded: &'a [u8],
    subcredential: &'a [u8],
    revision: u64,
}

impl LayerKeys<'_> {
    /// Decrypts `blob` (salt, ciphertext, MAC), leaving its MAC
    /// unchecked (see the module doc).
    fn decrypt(
        &self,
        blob: &[u8],
        constant: &[u8],
        layer: &'static str,
    ) -> Result<Vec<u8>, ReadError> {
        if blob.len() < SALT_LEN + MAC_LEN {
            return Err(ReadError::Malformed {
                layer,
                what: "too short to be encrypted",
            });
        }
        let (salt, rest) = blob.split_at(SALT_LEN);
        let ciphertext = &rest[..rest.len() - MAC_LEN];
        let stream = self.stream(salt, constant);
        let mut plain = ciphertext.to_vec();
        stream.apply(&mut plain);
        Ok(plain)
    }

    /// Encrypts `plain` with `salt`: the salt, the ciphertext and its MAC,
    /// as a layer's object holds them.
    fn encrypt(&self, plain: &[u8], constant: &[u8], salt: &[u8; SALT_LEN]) -> Vec<u8> {
        let stream = self.stream(salt, constant);
        let mut blob = Vec::with_capacity(SALT_LEN + plain.len() + MAC_LEN);
        blob.extend_from_slice(salt);
        blob.extend_from_slice(plain);
        stream.apply(&mut blob[SALT_LEN..]);
        let mac = stream.mac(salt, &blob[SALT_LEN..]);
        blob.extend_from_slice(&mac);
        blob
    }

    /// The layer's cipher key, IV and MAC key for `salt`: SHAKE-256 of the
    /// blinded key, the subcredential, the revision counter, the salt and
    /// the layer's constant.
    fn stream(&self, salt: &[u8], constant: &[u8]) -> LayerStream {
        let mut kdf = Shake256::default();
        kdf.update(self.blinded);
        kdf.update(self.subcredential);
        kdf.update(&self.revision.to_be_bytes());
        kdf.update(salt);
        kdf.update(constant);
        let mut output = kdf.finalize_xof();
        let mut stream = LayerStream {
            key: zeroize::Zeroizing::new([0u8; 32]),
            iv: zeroize::Zeroizing::new([0u8; 16]),
            mac_key: zeroize::Zeroizing::new([0u8; 32]),
        };
        output.read(&mut stream.key[..]);
        output.read(&mut stream.iv[..]);
        output.read(&mut stream.mac_key[..]);
        stream
    }
}

/// One layer's keys for one salt.
struct LayerStream {
    key: zeroize::Zeroizing<[u8; 32]>,
    iv: zeroize::Zeroizing<[u8; 16]>,
    mac_key: zeroize::Zeroizing<[u8; 32]>,
}

impl LayerStream {
    /// SHA3-256 of the MAC key and the salt (each after its length as 8
    /// bytes) and the ciphertext.
    fn mac(&self, salt: &[u8], ciphertext: &[u8]) -> [u8; MAC_LEN] {
        let mut hash = Sha3_256::new();
        sha3::Digest::update(&mut hash, (self.mac_key.len() as u64).to_be_bytes());
        sha3::Digest::update(&mut hash, &self.mac_key[..]);
        sha3::Digest::update(&mut hash, (salt.len() as u64).to_be_bytes());
        sha3::Digest::update(&mut hash, salt);
        sha3::Digest::update(&mut hash, ciphertext);
        hash.finalize().into()
    }

    /// Encrypts or decrypts `data` in place (AES-256-CTR).
    fn apply(&self, data: &mut [u8]) {
        Aes256Ctr::new((&*self.key).into(), (&*self.iv).into()).apply_keystream(data);
    }
}

/// The text of a layer without the NUL padding its maker added.
fn trim_padding(plain: &[u8]) -> &[u8] {
    let end = plain.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
    &plain[..end]
}

/// An ed25519 certificate's signed part and its signature: the last 64
/// bytes are the signature of all before them (tor's cert-spec).
fn split_certificate(cert: &[u8]) -> Result<(&[u8], Signature), ReadError> {
    let at = cert
        .len()
        .checked_sub(64)
        .ok_or(ReadError::BadCertificate)?;
    let (signed, signature) = cert.split_at(at);
    let bytes: [u8; 64] = signature
        .try_into()
        .map_err(|_| ReadError::BadCertificate)?;
    Ok((signed, Signature::from_bytes(&bytes)))
}

/// A key, a message and its signature.
type Signed<'a> = (&'a VerifyingKey, &'a [u8], &'a Signature);

/// Verifies the certificate's signature and the outer one together: one
/// batch verification costs less than two single ones. When the batch
/// fails, each alone tells which was bad; a pair that passes alone but not
/// together is refused as well (only a signer crafting signatures with
/// small-order parts makes one).
fn verify_both(cert: Signed<'_>, outer: Signed<'_>) -> Result<(), ReadError> {
    let batch = ed25519_dalek::verify_batch(
        &[cert.1, outer.1],
        &[*cert.2, *outer.2],
        &[*cert.0, *outer.0],
    );
    if batch.is_ok() {
        return Ok(());
    }
    cert.0
        .verify(cert.1, cert.2)
        .map_err(|_| ReadError::BadCertificate)?;
    outer
        .0
        .verify(outer.1, outer.2)
        .map_err(|_| ReadError::BadSignature)?;
    Err(ReadError::BadSignature)
}

/// `n`, then `n` link specifiers of (type, length, body).
fn link_specifiers(bytes: &[u8]) -> Option<Vec<EncodedLinkSpec>> {
    let (&n, mut rest) = bytes.split_first()?;
    let mut specs = Vec::with_capacity(n.into());
    for _ in 0..n {
        let (&kind, after) = rest.split_first()?;
        let (&len, after) = after.split_first()?;
        let len = usize::from(len);
        if after.len() < len {
            return None;
        }
        specs.push(EncodedLinkSpec::new(
            LinkSpecType::from(kind),
            &after[..len],
        ));
        rest = &after[len..];
    }
    rest.is_empty().then_some(specs)
}

/// A 32-byte key in base64 (padded or not).
fn key32(arg: Option<&str>) -> Option<[u8; 32]> {
    base64_unpadded(arg?)?.try_into().ok()
}

/// Base64 with or without its `=` padding, as tor writes either.
fn base64_unpadded(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    data_encoding::BASE64_NOPAD.decode(trimmed.as_bytes()).ok()
}

/// One item of a document: a keyword line and the object after it.
struct Item<'a> {
    keyword: &'a str,
    /// The line after the keyword.
    rest: &'a str,
    /// Where the line starts in the document.
    offset: usize,
    object: Option<(&'a str, &'a str)>,
    layer: &'static str,
}

impl<'a> Item<'a> {
    fn args(&self) -> impl Iterator<Item = &'a str> {
        self.rest.split(' ').filter(|a| !a.is_empty())
    }

    fn arg(&self, index: usize) -> Option<&'a str> {
        self.args().nth(index)
    }

    /// Its object's bytes, which must be tagged `tag`.
    fn object(&self, tag: &str) -> Result<Vec<u8>, ReadError> {
        let malformed = |what| ReadError::Malformed {
            layer: self.layer,
            what,
        };
        let (found, body) = self.object.ok_or(malformed("an object is missing"))?;
        if found != tag {
            return Err(malformed("an object of the wrong type"));
        }
        let mut joined = Vec::with_capacity(body.len());
        for line in body.split('\n') {
            joined.extend_from_slice(line.as_bytes());
        }
        data_encoding::BASE64
            .decode(&joined)
            .map_err(|_| malformed("an object is not base64"))
    }
}

/// The items of a document, in order.
struct Items<'a> {
    text: &'a str,
    at: usize,
    layer: &'static str,
}

impl<'a> Items<'a> {
    fn new(text: &'a str, layer: &'static str) -> Self {
        Items { text, at: 0, layer }
    }

    fn next_item(&mut self) -> Result<Option<Item<'a>>, ReadError> {
        let malformed = |what| ReadError::Malformed {
            layer: self.layer,
            what,
        };
        if self.at >= self.text.len() {
            return Ok(None);
        }
        let offset = self.at;
        let (line, next) = self
            .line(offset)
            .ok_or(malformed("a line without its end"))?;
        if line.is_empty() || line.starts_with(' ') || line.starts_with("-----") {
            return Err(malformed("a line that is not an item"));
        }
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        self.at = next;
        let mut object = None;
        if let Some((begin, after)) = self.line(self.at) {
            if let Some(tag) = begin
                .strip_prefix("-----BEGIN ")
                .and_then(|t| t.strip_suffix("-----"))
            {
                let end = format!("-----END {tag}-----");
                let body_start = after;
                let mut cursor = after;
                loop {
                    let (line, next) = self.line(cursor).ok_or(malformed("an unended object"))?;
                    if line == end {
                        object = Some((tag, self.text[body_start..cursor].trim_end_matches('\n')));
                        self.at = next;
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(Some(Item {
            keyword,
            rest,
            offset,
            object,
            layer: self.layer,
        }))
    }

    /// The line at `from` and where the next starts; `None` at the end.
    /// The last line may lack its newline: C tor ends its encrypted layers
    /// with `-----END MESSAGE-----` and the padding.
    fn line(&self, from: usize) -> Option<(&'a str, usize)> {
        let rest = self.text.get(from..).filter(|r| !r.is_empty())?;
        Some(match rest.find('\n') {
            Some(end) => (&rest[..end], from + end + 1),
            None => (rest, self.text.len()),
        })
    }
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]

    use tor_checkable::Timebound as _;
    use tor_hscrypto::pk::HsIdKey;
    use tor_netdoc::doc::hsdesc::HsDesc;

    use super::*;
    use crate::test_support::{build_with, fixture, intro_point};
    use std::time::SystemTime;

    fn blinding(identity: &HsIdKey, f: &crate::test_support::Fixture) -> Blinding {
        Blinding::derive(identity, f.period).unwrap()
    }

    #[test]
    fn a_master_descriptor_looks_like_a_c_tor_services_to_hsdirs() {
        let f = fixture();
        let desc = build_with(&f, 9, &f.intro_points);
        let b = blinding(&f.identity, &f);
        let outer = Outer::parse(&desc.text).unwrap();
        let keys = LayerKeys {
            blinded: b.blinded.as_ref(),
            subcredential: b.subcredential.as_ref(),
            revision: 9,
        };
        let middle = keys
            .decrypt(&outer.superencrypted, FIRST_LAYER, "middle")
            .unwrap();
        // The middle layer is padded to C tor's multiple and, with no
        // client authorized, carries C tor's count of made-up clients.
        assert_eq!(middle.len() % 10_000, 0, "{}", middle.len());
        let middle = std::str::from_utf8(trim_padding(&middle)).unwrap();
        assert!(middle.starts_with("desc-auth-type x25519\ndesc-auth-ephemeral-key "));
        assert_eq!(middle.matches("\nauth-client ").count(), 16);
        assert!(desc.text.ends_with('\n'));
    }

    #[test]
    fn reads_what_tor_netdoc_reads() {
        let f = fixture();
        let mut rng = rand::rng();
        for n in [1, 3, 20] {
            let points: Vec<_> = (0..n).map(|i| intro_point(&mut rng, 9000 + i)).collect();
            let desc = build_with(&f, 7, &points);
            let ours = assert_reads_alike(&desc.text, &blinding(&f.identity, &f), f.now);
            assert_eq!(ours.intro_points.len(), n as usize);
        }
    }

    /// Reads `text` with both readers, asserts they agree, and returns
    /// ours.
    fn assert_reads_alike(text: &str, b: &Blinding, now: SystemTime) -> Content {
        let ours = read(text, b, now).unwrap();
        let bound =
            HsDesc::parse_decrypt_validate(text, &b.blinded, &b.subcredential, None).unwrap();
        let (_, end) = bound.bounds_start_end();
        let theirs = bound.if_valid_at(&now).unwrap();
        assert_eq!(ours.revision, u64::from(theirs.revision()));
        assert_eq!(Some(ours.valid_until), end);
        assert_eq!(ours.flow_control, theirs.flow_control());
        assert_eq!(ours.intro_points.len(), theirs.intro_points().len());
        for (a, b) in ours.intro_points.iter().zip(theirs.intro_points()) {
            assert_eq!(*a.auth_key(), b.ipt_sid_key().to_bytes());
            assert_eq!(a.onion_key(), b.ipt_ntor_key().as_bytes());
            assert_eq!(a.enc_key(), b.svc_ntor_key().as_bytes());
            assert_eq!(a.link_specifiers(), b.link_specifiers());
        }
        ours
    }

    /// A descriptor C tor 0.4.9 made on the private network (a period is
    /// 480 s there, offset by 240 s), as `GETINFO hs/service/desc/id`
    /// returned it.
    #[test]
    fn reads_a_c_tor_descriptor_as_tor_netdoc_does() {
        let text = include_str!("../testdata/c-tor-instance-descriptor.txt");
        let meta = include_str!("../testdata/c-tor-instance-descriptor.meta");
        let field = |name: &str| {
            meta.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap()
        };
        let address: crate::OnionAddress = field("address").parse().unwrap();
        let identity = HsIdKey::try_from(address.hs_id()).unwrap();
        let secs = |name| std::time::Duration::from_secs(field(name).parse().unwrap());
        let now = SystemTime::UNIX_EPOCH + secs("captured");
        let current = tor_hscrypto::time::TimePeriod::new(
            secs("period-length"),
            now,
            secs("rotation-offset"),
        )
        .unwrap();
        let b = [current.prev().unwrap(), current, current.next().unwrap()]
            .into_iter()
            .filter_map(|p| Blinding::derive(&identity, p))
            .find(|b| {
                crate::descriptor::validate_blinded(text, std::slice::from_ref(b), now, 50_000)
                    .is_ok()
            })
            .expect("the descriptor is for one of the periods around its capture");
        let ours = assert_reads_alike(text, &b, now);
        assert!(!ours.intro_points.is_empty());
    }

    #[test]
    fn a_descriptor_of_another_key_or_subcredential_or_shape_is_refused() {
        let f = fixture();
        let desc = build_with(&f, 7, &f.intro_points);
        let good = blinding(&f.identity, &f);
        // Another identity's blinded key did not sign the certificate.
        let (other, _) = crate::MasterKey::generate(&mut rand::rng()).unwrap();
        let stranger = blinding(&HsIdKey::from(other.keypair()), &f);
        assert_eq!(
            read(&desc.text, &stranger, f.now).unwrap_err(),
            ReadError::BadCertificate
        );
        // The right blinded key with another subcredential: the first
        // layer decrypts to noise.
        let wrong = Blinding {
            subcredential: stranger.subcredential,
            ..good.clone()
        };
        assert_eq!(
            read(&desc.text, &wrong, f.now).unwrap_err(),
            ReadError::Undecryptable { layer: "middle" }
        );
        // An item twice, or after the signature.
        let twice = desc.text.replacen(
            "revision-counter 7\n",
            "revision-counter 7\nrevision-counter 7\n",
            1,
        );
        assert!(matches!(
            read(&twice, &good, f.now).unwrap_err(),
            ReadError::Malformed { layer: "outer", .. }
        ));
        let after = format!("{}revision-counter 8\n", desc.text);
        assert!(matches!(
            read(&after, &good, f.now).unwrap_err(),
            ReadError::Malformed { layer: "outer", .. }
        ));
        // A flipped byte in the encrypted body breaks the signature.
        let at = desc.text.find("-----BEGIN MESSAGE-----\n").unwrap() + 30;
        let mut flipped = desc.text.clone().into_bytes();
        flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            read(&flipped, &good, f.now).unwrap_err(),
            ReadError::BadSignature
        );
        // Expired.
        let late = f.now + std::time::Duration::from_secs(3 * 86_400);
        assert_eq!(
            read(&desc.text, &good, late).unwrap_err(),
            ReadError::Expired
        );
    }

    #[test]
    fn an_inner_layer_without_intro_points_is_told_apart() {
        let signer = ed25519::Ed25519Identity::from([7; 32]);
        assert_eq!(
            Inner::parse("create2-formats 2\n", &signer).err(),
            Some(ReadError::NoIntroPoints)
        );
        assert!(matches!(
            Inner::parse("flow-control 1-2 31\n", &signer).err(),
            Some(ReadError::Malformed { layer: "inner", .. })
        ));
    }

    #[test]
    fn a_layer_may_end_without_a_newline_as_c_tor_writes_them() {
        let middle = "desc-auth-type x25519\nencrypted\n-----BEGIN MESSAGE-----\nAAEC\n-----END MESSAGE-----";
        assert_eq!(middle_encrypted(middle).unwrap(), vec![0, 1, 2]);
        let unended = "encrypted\n-----BEGIN MESSAGE-----\nAAEC";
        assert!(matches!(
            middle_encrypted(unended).unwrap_err(),
            ReadError::Malformed {
                layer: "middle",
                ..
            }
        ));
    }

    #[test]
    fn link_specifiers_are_read_exactly() {
        assert_eq!(link_specifiers(&[0]), Some(vec![]));
        let one = link_specifiers(&[1, 2, 3, 9, 9, 9]).unwrap();
        assert_eq!(
            one,
            vec![EncodedLinkSpec::new(LinkSpecType::from(2), [9, 9, 9])]
        );
        // Too short, or bytes left over.
        assert_eq!(link_specifiers(&[1, 2, 3, 9, 9]), None);
        assert_eq!(link_specifiers(&[1, 2, 1, 9, 0]), None);
        assert_eq!(link_specifiers(&[]), None);
    }
}
