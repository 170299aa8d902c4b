//! Peer authentication and encryption: the mode byte exchanged first on every transfer
//! connection, and TLS 1.3 with mutual authentication by pinned Ed25519 keys.
//!
//! Each client's certificate is a self-signed certificate for its identity key (see
//! [`crate::identity`]), made at start. Nothing in a certificate besides its key matters:
//! there are no CAs. The requester accepts the provider iff the provider's certificate
//! carries the key the owner's name is bound to in the index table. The provider checks
//! twice: during the handshake its certificate verifier refuses a key that no name is
//! bound to in *its* table (rustls aborts with an `access_denied` alert, so a stranger
//! never holds a connection slot past the handshake), and once the request names the
//! requester, it checks that the key is the one *that* name is bound to.
//! Both sides verify the handshake signature (TLS 1.3 CertificateVerify) with that key,
//! so presenting a key means holding its private half.
//!
//! See `docs/PROTOCOL.md §2`, "Connection setup".

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, RwLock};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WantsServerCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    AlertDescription, ConfigBuilder, DistinguishedName, ServerConfig, SignatureScheme,
    WantsVerifier,
};

use crate::identity::{Identity, PublicKey, fingerprint};

/// First byte a requester sends, and the first byte a provider sends: "I speak TLS".
pub const MODE_TLS: u8 = 0xF1;
/// ... "I speak plaintext (`--plaintext`)".
pub const MODE_PLAIN: u8 = 0xF0;
/// ... "I speak plaintext inside the QUIC connection under us, whose TLS 1.3 handshake
/// authenticated both pinned keys". Valid only on a punched QUIC stream: on TCP it
/// would be an unauthenticated connection, and is refused.
pub const MODE_QUIC: u8 = 0xF3;
/// Sent by a provider instead of its mode when it has no free slot; it then closes.
pub const MODE_BUSY: u8 = 0xFB;
/// First byte of an owner's reverse connection to a requester (then the 16-byte
/// meeting id); the requester confirms with the same byte (`crate::reach::meet`).
pub const MODE_REVERSE: u8 = 0xF2;
/// The index server's reachability test: it connects, sends this byte and closes.
pub const MODE_PROBE: u8 = 0xF5;

/// The local table's keys, as the provider consults them.
pub trait PeerKeys: Send + Sync {
    /// The key `name` is bound to.
    fn key_of(&self, name: &str) -> Option<PublicKey>;
    /// Is any name bound to `key`? Asked during the TLS handshake, before the request
    /// names the requester.
    fn lists(&self, key: &PublicKey) -> bool;
}

/// The table as the client driver keeps it: name to key.
impl<S: std::hash::BuildHasher + Send + Sync> PeerKeys for RwLock<HashMap<String, PublicKey, S>> {
    fn key_of(&self, name: &str) -> Option<PublicKey> {
        self.read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    fn lists(&self, key: &PublicKey) -> bool {
        self.read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|k| k == key)
    }
}

/// Looks up keys in the local table (see [`PeerKeys`]).
pub type KeyLookup = Arc<dyn PeerKeys>;

/// The alert a provider's verifier aborts the handshake with when the requester's key
/// is not in its table (rustls sends it for `ApplicationVerificationFailure`).
pub const KEY_NOT_LISTED_ALERT: AlertDescription = AlertDescription::AccessDenied;

/// Did the owner abort the TLS connection because it does not list our key? The alert
/// may arrive during the handshake or, in TLS 1.3 where the client finishes first,
/// as the first record after it.
pub fn owner_refused_our_key(e: &io::Error) -> bool {
    let Some(inner) = e.get_ref() else {
        return false;
    };
    if let Some(rustls::Error::AlertReceived(a)) = inner.downcast_ref::<rustls::Error>() {
        return *a == KEY_NOT_LISTED_ALERT;
    }
    matches!(
        inner.downcast_ref::<super::record::RecordError>(),
        Some(super::record::RecordError::Alert(a)) if *a == u8::from(KEY_NOT_LISTED_ALERT)
    )
}

/// How peer connections are made. Cheap to clone.
#[derive(Clone)]
pub enum Security {
    /// TLS 1.3, mutually authenticated with this identity (the default).
    Tls(Arc<TlsIdentity>),
    /// No encryption, no authentication, zero-copy (`--plaintext`).
    Plaintext,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Security::Tls(id) => write!(f, "Tls({})", fingerprint(&id.key)),
            Security::Plaintext => write!(f, "Plaintext"),
        }
    }
}

impl Security {
    /// The byte this side sends first.
    pub fn mode_byte(&self) -> u8 {
        match self {
            Security::Tls(_) => MODE_TLS,
            Security::Plaintext => MODE_PLAIN,
        }
    }
}

/// What the provider side needs to accept connections: its mode and, for TLS, how to
/// find the key a requester's name is bound to.
#[derive(Clone)]
pub struct PeerAuth {
    pub security: Security,
    /// Consulted during the handshake (is the key listed at all?) and after it with the
    /// requester's claimed name.
    pub keys: KeyLookup,
    /// For TLS: the server configuration whose verifier consults `keys`.
    server: Option<Arc<ServerConfig>>,
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerAuth({:?})", self.security)
    }
}

impl PeerAuth {
    /// Encrypted and authenticated: requesters must hold the key `keys` gives for their
    /// name.
    pub fn tls(id: Arc<TlsIdentity>, keys: KeyLookup) -> PeerAuth {
        let server = id.server_config_for(keys.clone());
        PeerAuth {
            security: Security::Tls(id),
            keys,
            server: Some(server),
        }
    }

    /// `--plaintext`: no encryption, requesters are not authenticated.
    pub fn plaintext() -> PeerAuth {
        PeerAuth {
            security: Security::Plaintext,
            keys: Arc::new(RwLock::new(HashMap::new())),
            server: None,
        }
    }

    /// The provider-side TLS configuration (`None` in plaintext mode): it refuses, during
    /// the handshake, a requester whose key is not in the table.
    pub(crate) fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.server.clone()
    }
}

/// Why TLS could not be set up from an identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot make a certificate for the identity key: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The certificate and key of this client, and the provider-side TLS configuration.
pub struct TlsIdentity {
    key: PublicKey,
    cert: CertificateDer<'static>,
    pkcs8: Vec<u8>,
    provider: Arc<CryptoProvider>,
    /// The server configuration up to its verifier (which depends on the table).
    server_builder: ConfigBuilder<ServerConfig, WantsVerifier>,
    /// With a verifier that accepts any Ed25519 key: for tests of the TLS layer.
    server: Arc<ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsIdentity({})", fingerprint(&self.key))
    }
}

/// The ring provider, TLS 1.3 suites only, AES-128-GCM first (fastest with AES-NI,
/// and the server side enforces this order).
fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// What the server presented during the handshake, filled in by the verifier.
pub(crate) type SeenKey = Arc<Mutex<Option<Presented>>>;

impl TlsIdentity {
    /// Makes a self-signed certificate for `id`'s key and the provider-side config.
    pub fn new(id: &Identity) -> Result<TlsIdentity, TlsSetupError> {
        let pair = rcgen::KeyPair::try_from(id.pkcs8())?;
        let params = rcgen::CertificateParams::new(vec!["fileapp-peer".to_string()])?;
        let cert = params.self_signed(&pair)?.der().clone();
        let provider = crypto_provider();
        let pkcs8 = id.pkcs8().to_vec();
        let verifier = Arc::new(Ed25519Client {
            provider: provider.clone(),
            keys: None,
        });
        let server_builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let mut server = server_builder
            .clone()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.clone())),
            )?;
        tune_server(&mut server);
        Ok(TlsIdentity {
            key: id.public_key(),
            cert,
            pkcs8,
            provider,
            server_builder,
            server: Arc::new(server),
        })
    }

    /// The provider-side config whose verifier accepts only keys `keys` lists.
    fn server_config_for(&self, keys: KeyLookup) -> Arc<ServerConfig> {
        Arc::new(self.server_config_listing(keys))
    }

    /// [`Self::server_config_for`], not yet shared.
    fn server_config_listing(&self, keys: KeyLookup) -> ServerConfig {
        let verifier = Arc::new(Ed25519Client {
            provider: self.provider.clone(),
            keys: Some(keys),
        });
        let builder: ConfigBuilder<ServerConfig, WantsServerCert> = self
            .server_builder
            .clone()
            .with_client_cert_verifier(verifier);
        // Same certificate and key as the checked `with_single_cert` in `new`.
        let mut server = builder.with_cert_resolver(self.server.cert_resolver.clone());
        tune_server(&mut server);
        server
    }

    /// The owner's TLS configuration for QUIC on a punched path (`src/reach/quic`): the
    /// same certificate and verifier as over TCP, requiring a key `keys` lists, with
    /// `alpn` and without secret extraction (QUIC keeps its keys).
    pub(crate) fn quic_server_config(&self, keys: KeyLookup, alpn: &[u8]) -> ServerConfig {
        let mut server = self.server_config_listing(keys);
        server.alpn_protocols = vec![alpn.to_vec()];
        server.enable_secret_extraction = false;
        server
    }

    /// The requester's TLS configuration for QUIC: [`Self::client_config`]'s pinning of
    /// `expected` and certificate, with `alpn`.
    pub(crate) fn quic_client_config(
        &self,
        expected: PublicKey,
        alpn: &[u8],
    ) -> Result<(rustls::ClientConfig, SeenKey), rustls::Error> {
        let (mut cfg, seen) = self.pinned_client_config(expected)?;
        cfg.alpn_protocols = vec![alpn.to_vec()];
        cfg.enable_secret_extraction = false;
        Ok((cfg, seen))
    }

    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// A provider-side config that accepts any Ed25519 key in the handshake (for tests
    /// of the TLS layer; serving uses [`PeerAuth::server_config`]).
    #[cfg(test)]
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// A requester-side config that accepts only a provider presenting `expected`.
    /// The returned slot receives the key presented if it was refused.
    pub(crate) fn client_config(
        &self,
        expected: PublicKey,
    ) -> Result<(Arc<rustls::ClientConfig>, SeenKey), rustls::Error> {
        let (cfg, seen) = self.pinned_client_config(expected)?;
        Ok((Arc::new(cfg), seen))
    }

    /// [`Self::client_config`], not yet shared.
    fn pinned_client_config(
        &self,
        expected: PublicKey,
    ) -> Result<(rustls::ClientConfig, SeenKey), rustls::Error> {
        let seen = Arc::new(Mutex::new(None));
        let verifier = Arc::new(PinnedServer {
            expected,
            provider: self.provider.clone(),
            seen: seen.clone(),
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone())),
            )?;
        cfg.enable_sni = false;
        cfg.resumption = rustls::client::Resumption::disabled();
        cfg.enable_secret_extraction = true;
        Ok((cfg, seen))
    }
}

/// The settings every provider-side config shares.
fn tune_server(server: &mut ServerConfig) {
    server.ignore_client_order = true;
    // One connection, one transfer: no resumption, so every connection presents
    // (and proves) its certificate.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    // After the handshake our own record layer takes over (see `super::tls`).
    server.enable_secret_extraction = true;
}

/// What the provider presented, when the requester refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented {
    /// A certificate for this (wrong) Ed25519 key.
    Key(PublicKey),
    /// A certificate whose key is not Ed25519 (or that does not parse).
    NotEd25519,
}

/// The Ed25519 key a certificate is for (pure parsing, in the sans-io core).
pub use fileapp_core::transfer::cert::ed25519_key_of;

fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    }
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn tls12_refused() -> rustls::Error {
    rustls::PeerIncompatible::Tls12NotOffered.into()
}

fn bad_cert() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

/// Requester side: the provider must present exactly the expected key.
#[derive(Debug)]
struct PinnedServer {
    expected: PublicKey,
    provider: Arc<CryptoProvider>,
    seen: SeenKey,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refuse = |p: Presented| {
            if let Ok(mut s) = self.seen.lock() {
                *s = Some(p);
            }
        };
        match ed25519_key_of(end_entity) {
            Some(k) if k == self.expected => Ok(ServerCertVerified::assertion()),
            Some(k) => {
                refuse(Presented::Key(k));
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            None => {
                refuse(Presented::NotEd25519);
                Err(bad_cert())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Provider side: an Ed25519 certificate for a key the table lists (any Ed25519 key when
/// `keys` is `None`), whose holder proves it; whether the key is the one the requester's
/// name is bound to is decided once the request names it.
struct Ed25519Client {
    provider: Arc<CryptoProvider>,
    keys: Option<KeyLookup>,
}

impl fmt::Debug for Ed25519Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Client(listed only: {})", self.keys.is_some())
    }
}

impl ClientCertVerifier for Ed25519Client {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match (ed25519_key_of(end_entity), &self.keys) {
            (None, _) => Err(bad_cert()),
            (Some(_), None) => Ok(ClientCertVerified::assertion()),
            (Some(k), Some(keys)) if keys.lists(&k) => Ok(ClientCertVerified::assertion()),
            // Sent as KEY_NOT_LISTED_ALERT.
            (Some(_), Some(_)) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The name to put in a ClientHello; never checked (keys are pinned instead).
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from("fileapp-peer").unwrap_or(ServerName::IpAddress(
        std::net::IpAddr::from([127, 0, 0, 1]).into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_identity_key() {
        let id = Identity::generate().unwrap();
        let tls = TlsIdentity::new(&id).unwrap();
        assert_eq!(ed25519_key_of(&tls.cert), Some(id.public_key()));
        assert_eq!(tls.public_key(), id.public_key());
    }

    #[test]
    fn garbage_certificates_are_not_keys() {
        assert_eq!(ed25519_key_of(&CertificateDer::from(vec![])), None);
        assert_eq!(ed25519_key_of(&CertificateDer::from(vec![0x30; 100])), None);
        let id = Identity::generate().unwrap();
        let tls = TlsIdentity::new(&id).unwrap();
        let der = tls.cert.as_ref().to_vec();
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            assert_eq!(
                ed25519_key_of(&CertificateDer::from(der[..cut].to_vec())),
                None
            );
        }
    }
}
