//! obfs4proxy's server state, `obfs4_state.json` in its state directory:
//! the bridge's obfs4 identity, which the bridge line's `cert=` names.
//!
//! obfs4proxy makes it at first start if absent. `bridge init` writes it
//! first, so the bridge line is known before anything runs, and so an
//! existing bridge's state can be carried over (its users' bridge lines
//! keep working). The file is JSON with hex fields: `node-id` (20 bytes),
//! `private-key` (a Curve25519 secret, 32 bytes, stored unclamped),
//! `public-key` (its X25519 public key), `drbg-seed` (24 bytes) and
//! `iat-mode` (0, 1 or 2). `cert=` is the unpadded base64 of node-id then
//! public-key.

use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::Zeroizing;

/// Bytes [`State::from_random`] takes: node-id, private key, DRBG seed.
pub const RANDOM_LEN: usize = 20 + 32 + 24;
/// Largest state file read.
pub const MAX_FILE: u64 = 4096;

/// Why a state file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Not the JSON object obfs4proxy writes.
    #[error("not obfs4proxy's JSON state (node-id, private-key, public-key, drbg-seed, iat-mode)")]
    NotJson,
    /// A field is not hex of its length.
    #[error("{field}: expected {len} bytes in hex")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// `iat-mode` is not 0, 1 or 2.
    #[error("iat-mode: expected 0, 1 or 2")]
    BadIatMode,
    /// The public key is not the private key's.
    #[error("public-key is not the public key of private-key")]
    KeyMismatch,
}

/// An obfs4 server identity.
pub struct State {
    node_id: [u8; 20],
    private_key: Zeroizing<[u8; 32]>,
    public_key: [u8; 32],
    drbg_seed: Zeroizing<[u8; 24]>,
    iat_mode: u8,
}

/// The file's fields, as text.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    #[serde(rename = "node-id")]
    node_id: String,
    #[serde(rename = "private-key")]
    private_key: String,
    #[serde(rename = "public-key")]
    public_key: String,
    #[serde(rename = "drbg-seed")]
    drbg_seed: String,
    #[serde(rename = "iat-mode")]
    iat_mode: u8,
}

impl State {
    /// A new identity from `random` (node-id, private key, DRBG seed), with
    /// inter-arrival timing off (iat-mode 0), as obfs4proxy makes one.
    pub fn from_random(random: &[u8; RANDOM_LEN]) -> Self {
        let mut node_id = [0; 20];
        let mut private_key = Zeroizing::new([0; 32]);
        let mut drbg_seed = Zeroizing::new([0; 24]);
        node_id.copy_from_slice(&random[..20]);
        private_key.copy_from_slice(&random[20..52]);
        drbg_seed.copy_from_slice(&random[52..]);
        let public_key = public_key(&private_key);
        State {
            node_id,
            private_key,
            public_key,
            drbg_seed,
            iat_mode: 0,
        }
    }

    /// Reads obfs4proxy's `obfs4_state.json`, checking every field and
    /// that the public key is the private key's.
    pub fn parse(text: &[u8]) -> Result<Self, StateError> {
        let fields: Fields = serde_json::from_slice(text).map_err(|_| StateError::NotJson)?;
        // The secrets' text is wiped when these go.
        let private_text = Zeroizing::new(fields.private_key);
        let seed_text = Zeroizing::new(fields.drbg_seed);
        let state = State {
            node_id: unhex("node-id", &fields.node_id)?,
            private_key: Zeroizing::new(unhex("private-key", &private_text)?),
            public_key: unhex("public-key", &fields.public_key)?,
            drbg_seed: Zeroizing::new(unhex("drbg-seed", &seed_text)?),
            iat_mode: fields.iat_mode,
        };
        if state.iat_mode > 2 {
            return Err(StateError::BadIatMode);
        }
        if public_key(&state.private_key) != state.public_key {
            return Err(StateError::KeyMismatch);
        }
        Ok(state)
    }

    /// The file as obfs4proxy writes it.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"node-id\":\"{}\",\"private-key\":\"{}\",\"public-key\":\"{}\",\"drbg-seed\":\"{}\",\"iat-mode\":{}}}",
            hex::encode(self.node_id),
            hex::encode(*self.private_key),
            hex::encode(self.public_key),
            hex::encode(*self.drbg_seed),
            self.iat_mode
        )
    }

    /// The bridge line's `cert=` argument.
    pub fn cert(&self) -> String {
        let mut raw = Vec::with_capacity(52);
        raw.extend_from_slice(&self.node_id);
        raw.extend_from_slice(&self.public_key);
        data_encoding::BASE64
            .encode(&raw)
            .trim_end_matches('=')
            .to_owned()
    }

    /// The bridge line's `iat-mode=` argument.
    pub fn iat_mode(&self) -> u8 {
        self.iat_mode
    }
}

/// X25519 of the base point, the secret clamped as the function does.
fn public_key(private_key: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(*private_key).to_bytes()
}

fn unhex<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], StateError> {
    let mut out = [0; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| StateError::BadField { field, len: N })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A state obfs4proxy 0.0.14 wrote here (a throwaway identity), and the
    /// cert it printed for it.
    const WRITTEN: &str = r#"{"node-id":"d9deebc0acfea34fade3ac18e24827b90cdc12fe","private-key":"94bd14a1eb764a6942e240df67144e1d55171be2ab5b558d7939202c3bf1fa57","public-key":"0b24f0b90aea2b2073afe188f2136d9f235c9f03c1f6f685c1e4f86d9c7cc50a","drbg-seed":"14b94834aff75bec842e42db5dfda37d4743b971de51f7f0","iat-mode":0}"#;
    const CERT: &str = "2d7rwKz+o0+t46wY4kgnuQzcEv4LJPC5CuorIHOv4YjyE22fI1yfA8H29oXB5PhtnHzFCg";

    #[test]
    fn reads_obfs4proxys_state_and_gives_its_cert_and_bytes_back() {
        let state = State::parse(WRITTEN.as_bytes()).unwrap();
        assert_eq!(state.cert(), CERT);
        assert_eq!(state.to_json(), WRITTEN);
    }

    #[test]
    fn a_new_state_reads_back_as_itself() {
        let state = State::from_random(&[0x5a; RANDOM_LEN]);
        let again = State::parse(state.to_json().as_bytes()).unwrap();
        assert_eq!(again.cert(), state.cert());
        assert_eq!(again.to_json(), state.to_json());
    }

    #[test]
    fn refuses_what_obfs4proxy_would_not_have_written() {
        let swapped = WRITTEN.replace("0b24f0b9", "0b24f0b8");
        assert_eq!(
            State::parse(swapped.as_bytes()).err(),
            Some(StateError::KeyMismatch)
        );
        let short = WRITTEN.replace("d9deebc0", "d9de");
        assert_eq!(
            State::parse(short.as_bytes()).err(),
            Some(StateError::BadField {
                field: "node-id",
                len: 20
            })
        );
        let iat = WRITTEN.replace("\"iat-mode\":0", "\"iat-mode\":3");
        assert_eq!(
            State::parse(iat.as_bytes()).err(),
            Some(StateError::BadIatMode)
        );
        assert_eq!(State::parse(b"{}").err(), Some(StateError::NotJson));
        assert_eq!(State::parse(b"\xff").err(), Some(StateError::NotJson));
    }
}
