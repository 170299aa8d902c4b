//! The Ed25519 key a peer's certificate is for: the one thing in a certificate that
//! matters here (see `fileapp::transfer::secure`). Pure parsing, no I/O: the TLS
//! verifiers in the `fileapp` crate call it on whatever certificate DER a peer sent,
//! before any authentication, so it must take arbitrary bytes.

use rustls::pki_types::CertificateDer;

use crate::identity::PublicKey;

/// DER of an Ed25519 SubjectPublicKeyInfo up to the key: SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) }.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The Ed25519 key a certificate is for, if it parses and its key is Ed25519.
pub fn ed25519_key_of(cert: &CertificateDer<'_>) -> Option<PublicKey> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    key.try_into().ok()
}
