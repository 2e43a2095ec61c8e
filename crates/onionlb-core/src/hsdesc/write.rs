//! Writing a master descriptor (rend-spec-v3 [HSDESC-OUTER],
//! [HS-DESC-FIRST-LAYER], [HS-DESC-SECOND-LAYER]) from certificates made
//! beforehand.
//!
//! The certificates are the dear part of a descriptor: per intro point an
//! `auth-key` and an `enc-key-cert` certificate, each an ed25519 signature
//! by the descriptor-signing key (made in batches by [`crate::sign`]; the
//! ntor key's ed25519 form comes converted from reading, [`crate::intro`]).
//! The writer only lays out text and encrypts, so a caller that keeps
//! certificates per signing key (as [`crate::descriptor::PeriodSigner`]
//! does) pays for an intro point once per period, not once per
//! publication.
//!
//! What is written is what C tor writes for a service without restricted
//! discovery: 16 made-up `auth-client` lines and a fresh ephemeral key in
//! the middle layer, whose plaintext is padded with NULs to a multiple of
//! 10,000 bytes, so HSDirs see sizes like any C tor service's.

use std::fmt::Write as _;

use tor_bytes::Writer as _;
use tor_llcrypto::pk::curve25519;
use tor_protover::Protocols;

use crate::intro::IntroPoint;
use crate::sign::SigningKey;

use super::{LayerKeys, FIRST_LAYER, SALT_LEN, SECOND_LAYER, SIGNATURE_PREFIX};

/// C tor pads the middle layer's plaintext to a multiple of this
/// (`HS_DESC_PLAINTEXT_PADDING_MULTIPLE`).
const MIDDLE_PADDING: usize = 10_000;
/// Made-up `auth-client` lines a descriptor without restricted discovery
/// carries (C tor's `HS_DESC_AUTH_CLIENT_MULTIPLE`).
const FAKE_CLIENTS: usize = 16;
/// Characters of base64 per line inside an object.
const OBJECT_LINE: usize = 64;

/// An intro point and the certificates that vouch for it.
pub(crate) struct Certified<'a> {
    pub(crate) point: &'a IntroPoint,
    /// Its `auth-key` certificate, encoded.
    pub(crate) auth_key_cert: &'a [u8],
    /// Its `enc-key-cert` certificate, encoded.
    pub(crate) enc_key_cert: &'a [u8],
}

/// Everything a descriptor says.
pub(crate) struct Document<'a> {
    pub(crate) lifetime_minutes: u16,
    /// The `descriptor-signing-key-cert`, encoded.
    pub(crate) signing_key_cert: &'a [u8],
    pub(crate) revision: u64,
    /// The blinded key and the subcredential, which key both layers.
    pub(crate) blinded: &'a [u8],
    pub(crate) subcredential: &'a [u8],
    pub(crate) flow_control: Option<&'a (Protocols, u8)>,
    pub(crate) intro_points: &'a [Certified<'a>],
}

/// Lays out, encrypts and signs `doc` with `signing`, the key its
/// `signing_key_cert` certifies.
pub(crate) fn write<R>(doc: &Document<'_>, signing: &SigningKey, rng: &mut R) -> String
where
    R: rand::Rng + rand::CryptoRng,
{
    let keys = LayerKeys {
        blinded: doc.blinded,
        subcredential: doc.subcredential,
        revision: doc.revision,
    };
    let inner = inner_text(doc);
    let encrypted = keys.encrypt(inner.as_bytes(), SECOND_LAYER, &salt(rng));
    let mut middle = middle_text(&encrypted, rng).into_bytes();
    let padded = middle.len().div_ceil(MIDDLE_PADDING) * MIDDLE_PADDING;
    middle.resize(padded, 0);
    let superencrypted = keys.encrypt(&middle, FIRST_LAYER, &salt(rng));

    let mut text = String::with_capacity(superencrypted.len() * 4 / 3 + 1024);
    text.push_str("hs-descriptor 3\n");
    let _ = writeln!(text, "descriptor-lifetime {}", doc.lifetime_minutes);
    text.push_str("descriptor-signing-key-cert\n");
    object(&mut text, "ED25519 CERT", doc.signing_key_cert);
    let _ = writeln!(text, "revision-counter {}", doc.revision);
    text.push_str("superencrypted\n");
    object(&mut text, "MESSAGE", &superencrypted);
    let mut message = Vec::with_capacity(SIGNATURE_PREFIX.len() + text.len());
    message.extend_from_slice(SIGNATURE_PREFIX);
    message.extend_from_slice(text.as_bytes());
    let signature = signing.sign(&message);
    text.push_str("signature ");
    text.push_str(&data_encoding::BASE64_NOPAD.encode(&signature));
    text.push('\n');
    text
}

/// The second layer: the handshake, flow control and the intro points.
fn inner_text(doc: &Document<'_>) -> String {
    let mut text = String::with_capacity(1024 * doc.intro_points.len() + 64);
    text.push_str("create2-formats 2\n");
    if let Some((versions, sendme_inc)) = doc.flow_control {
        let versions = versions.to_string();
        let versions = versions.strip_prefix("FlowCtrl=").unwrap_or(&versions);
        let _ = writeln!(text, "flow-control {versions} {sendme_inc}");
    }
    for certified in doc.intro_points {
        let point = certified.point;
        let mut specs = Vec::with_capacity(64);
        specs.write_u8(u8::try_from(point.link_specifiers().len()).unwrap_or(u8::MAX));
        for spec in point.link_specifiers() {
            // Writing into a Vec cannot fail.
            let _ = specs.write(spec);
        }
        let _ = writeln!(
            text,
            "introduction-point {}",
            data_encoding::BASE64.encode(&specs)
        );
        let _ = writeln!(
            text,
            "onion-key ntor {}",
            data_encoding::BASE64.encode(point.onion_key())
        );
        text.push_str("auth-key\n");
        object(&mut text, "ED25519 CERT", certified.auth_key_cert);
        let _ = writeln!(
            text,
            "enc-key ntor {}",
            data_encoding::BASE64.encode(point.enc_key())
        );
        text.push_str("enc-key-cert\n");
        object(&mut text, "ED25519 CERT", certified.enc_key_cert);
    }
    text
}

/// The first layer: no client is authorized, so the ephemeral key and the
/// clients are made up, then the second layer.
fn middle_text<R>(encrypted: &[u8], rng: &mut R) -> String
where
    R: rand::Rng + rand::CryptoRng,
{
    let ephemeral =
        curve25519::PublicKey::from(&curve25519::EphemeralSecret::random_from_rng(&mut *rng));
    let mut text = String::with_capacity(encrypted.len() * 4 / 3 + 2048);
    text.push_str("desc-auth-type x25519\n");
    let _ = writeln!(
        text,
        "desc-auth-ephemeral-key {}",
        data_encoding::BASE64.encode(ephemeral.as_bytes())
    );
    for _ in 0..FAKE_CLIENTS {
        let mut client = [0u8; 8 + 16 + 16];
        rng.fill_bytes(&mut client);
        let (id, rest) = client.split_at(8);
        let (iv, cookie) = rest.split_at(16);
        let _ = writeln!(
            text,
            "auth-client {} {} {}",
            data_encoding::BASE64.encode(id),
            data_encoding::BASE64.encode(iv),
            data_encoding::BASE64.encode(cookie)
        );
    }
    text.push_str("encrypted\n");
    object(&mut text, "MESSAGE", encrypted);
    text
}

/// Appends `bytes` as an object tagged `tag`: base64 in lines of 64.
fn object(text: &mut String, tag: &str, bytes: &[u8]) {
    let encoded = data_encoding::BASE64.encode(bytes);
    let _ = writeln!(text, "-----BEGIN {tag}-----");
    for line in encoded.as_bytes().chunks(OBJECT_LINE) {
        // Base64 is ASCII: every chunk is a str.
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    let _ = writeln!(text, "-----END {tag}-----");
}

fn salt<R: rand::Rng>(rng: &mut R) -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rng.fill_bytes(&mut salt);
    salt
}
