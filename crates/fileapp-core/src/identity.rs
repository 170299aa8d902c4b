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
const REGISTER_CONTEXT: &[u8] = b"fileapp register v1\0";

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

    /// Signs the registration statement for `nonce` (see [`registration_statement`]).
    pub fn sign_registration(
        &self,
        nonce: &[u8; 16],
        name: &str,
        instance: u64,
        tcp_port: u16,
    ) -> Vec<u8> {
        let msg = registration_statement(nonce, name, instance, tcp_port);
        self.pair.sign(&msg).as_ref().to_vec()
    }
}

/// The bytes a client signs to register: context, nonce, then the request's fields.
pub fn registration_statement(
    nonce: &[u8; 16],
    name: &str,
    instance: u64,
    tcp_port: u16,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(REGISTER_CONTEXT.len() + 16 + 1 + name.len() + 10);
    m.extend_from_slice(REGISTER_CONTEXT);
    m.extend_from_slice(nonce);
    m.push(name.len() as u8);
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(&instance.to_le_bytes());
    m.extend_from_slice(&tcp_port.to_le_bytes());
    m
}

/// Checks a registration signature.
pub fn verify_registration(
    key: &PublicKey,
    sig: &[u8],
    nonce: &[u8; 16],
    name: &str,
    instance: u64,
    tcp_port: u16,
) -> bool {
    let msg = registration_statement(nonce, name, instance, tcp_port);
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&msg, sig)
        .is_ok()
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
    fn sign_and_verify_registration() {
        let id = Identity::generate().unwrap();
        let nonce = [9u8; 16];
        let sig = id.sign_registration(&nonce, "B", 42, 1401);
        let pk = id.public_key();
        assert!(verify_registration(&pk, &sig, &nonce, "B", 42, 1401));
        assert!(!verify_registration(&pk, &sig, &[8u8; 16], "B", 42, 1401));
        assert!(!verify_registration(&pk, &sig, &nonce, "C", 42, 1401));
        assert!(!verify_registration(&pk, &sig, &nonce, "B", 43, 1401));
        let other = Identity::generate().unwrap().public_key();
        assert!(!verify_registration(&other, &sig, &nonce, "B", 42, 1401));
        assert!(!verify_registration(&pk, &[0u8; 3], &nonce, "B", 42, 1401));
    }

    #[test]
    fn fingerprint_format() {
        let fp = fingerprint(&[1u8; 32]);
        assert_eq!(fp.len(), 39);
        assert_eq!(fp.split(':').count(), 8);
        assert_ne!(fp, fingerprint(&[2u8; 32]));
    }
}
