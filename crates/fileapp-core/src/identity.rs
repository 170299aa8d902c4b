//! Client identity: an Ed25519 key pair that a name is bound to.
//!
//! The server binds a name to the public key that first registered it with a proof of
//! possession: the client signs a server nonce (see `docs/PROTOCOL.md`, "Identity").
//! The same key serves as the client's TLS identity for peer transfers.

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// Raw Ed25519 public key.
pub type PublicKey = [u8; 32];

/// Domain separator of the signed registration statement.
const REGISTER_CONTEXT: &[u8] = b"fileapp register v2\0";

/// Why an identity could not be created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no random numbers from the system")]
    Random,
}

/// A key pair and its PKCS#8 encoding (for TLS certificates). Where it is stored is the
/// driver's business (`fileapp::identity`); this type only holds and uses the key.
pub struct Identity {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", fingerprint(&self.public_key()))
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Result<Identity, IdentityError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::Random)?;
        Identity::from_pkcs8(doc.as_ref()).ok_or(IdentityError::Random)
    }

    /// Parses a PKCS#8 document.
    pub fn from_pkcs8(der: &[u8]) -> Option<Identity> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).ok()?;
        Some(Identity {
            pkcs8: der.to_vec(),
            pair,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        pk
    }

    /// Signs `msg` (callers put a domain separator first; see [`crate::records`]).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The X25519 static secret of the control channel, derived from this key pair: a
    /// server's one key file holds both its channel identity and its signing key.
    pub fn channel_secret(&self) -> [u8; 32] {
        blake3::derive_key("fileapp server channel key v1", &self.pkcs8)
    }

    /// Signs the registration statement of `reg` (see [`registration_statement`]).
    pub fn sign_registration(&self, reg: &Registration<'_>) -> Vec<u8> {
        let msg = registration_statement(reg);
        self.pair.sign(&msg).as_ref().to_vec()
    }
}

/// Everything a registration asks for, and what it is bound to: the signature covers
/// every field, so nothing of it can be rewritten on the path.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The control channel's handshake hash (unique to the session: a proof cannot be
    /// moved to another session).
    pub binding: &'a [u8; 32],
    /// The server's nonce (fresh: a proof cannot be kept for later).
    pub nonce: &'a [u8; 16],
    pub name: &'a str,
    pub instance: u64,
    pub tcp_port: u16,
    pub keep_offers: bool,
    pub advertise: Option<std::net::IpAddr>,
    pub key: &'a PublicKey,
    pub evict: bool,
}

/// The bytes a client signs to register (little-endian integers):
///
/// ```text
/// "fileapp register v2\0" | binding [32] | nonce [16] | name_len u8 | name
///   | instance u64 | tcp_port u16 | keep_offers u8 | advertise: 0 | 4 [4] | 6 [16]
///   | key [32] | evict u8
/// ```
pub fn registration_statement(reg: &Registration<'_>) -> Vec<u8> {
    let name = reg.name.as_bytes();
    let mut m = Vec::with_capacity(REGISTER_CONTEXT.len() + 48 + 1 + name.len() + 12 + 17 + 33);
    m.extend_from_slice(REGISTER_CONTEXT);
    m.extend_from_slice(reg.binding);
    m.extend_from_slice(reg.nonce);
    m.push(name.len().min(255) as u8);
    m.extend_from_slice(&name[..name.len().min(255)]);
    m.extend_from_slice(&reg.instance.to_le_bytes());
    m.extend_from_slice(&reg.tcp_port.to_le_bytes());
    m.push(u8::from(reg.keep_offers));
    push_addr(&mut m, reg.advertise);
    m.extend_from_slice(reg.key);
    m.push(u8::from(reg.evict));
    m
}

/// An optional address as signed statements carry it: `0`, `4 [4]` or `6 [16]`.
pub fn push_addr(m: &mut Vec<u8>, addr: Option<std::net::IpAddr>) {
    match addr {
        None => m.push(0),
        Some(std::net::IpAddr::V4(a)) => {
            m.push(4);
            m.extend_from_slice(&a.octets());
        }
        Some(std::net::IpAddr::V6(a)) => {
            m.push(6);
            m.extend_from_slice(&a.octets());
        }
    }
}

/// Checks a registration signature by the key the registration names.
pub fn verify_registration(reg: &Registration<'_>, sig: &[u8]) -> bool {
    verify(reg.key, &registration_statement(reg), sig)
}

/// Checks an Ed25519 signature of `msg` by `key`.
pub fn verify(key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, key)
        .verify(msg, sig)
        .is_ok()
}

/// The human form of a public key: BLAKE3 of the key, first 16 bytes, as 8 groups of 4
/// hex digits, e.g. `3f2a:9c1e:0b7d:55aa:e019:42c3:7d10:aa01`.
pub fn fingerprint(key: &PublicKey) -> String {
    let h = blake3::hash(key);
    h.as_bytes()[..16]
        .chunks(2)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_signature_covers_every_field() {
        let id = Identity::generate().unwrap();
        let key = id.public_key();
        let reg = Registration {
            binding: &[7u8; 32],
            nonce: &[9u8; 16],
            name: "B",
            instance: 42,
            tcp_port: 1401,
            keep_offers: false,
            advertise: None,
            key: &key,
            evict: false,
        };
        let sig = id.sign_registration(&reg);
        assert!(verify_registration(&reg, &sig));
        let other_key = Identity::generate().unwrap().public_key();
        let altered = [
            Registration {
                binding: &[8u8; 32],
                ..reg
            },
            Registration {
                nonce: &[8u8; 16],
                ..reg
            },
            Registration { name: "C", ..reg },
            Registration {
                instance: 43,
                ..reg
            },
            Registration {
                tcp_port: 1402,
                ..reg
            },
            Registration {
                keep_offers: true,
                ..reg
            },
            Registration {
                advertise: Some([10, 0, 0, 1].into()),
                ..reg
            },
            Registration {
                key: &other_key,
                ..reg
            },
            Registration { evict: true, ..reg },
        ];
        for a in &altered {
            assert!(!verify_registration(a, &sig), "{a:?} verified");
        }
        assert!(!verify_registration(&reg, &[0u8; 3]));
    }

    #[test]
    fn fingerprint_format() {
        let fp = fingerprint(&[1u8; 32]);
        assert_eq!(fp.len(), 39);
        assert_eq!(fp.split(':').count(), 8);
        assert_ne!(fp, fingerprint(&[2u8; 32]));
    }
}
