//! The Noise primitives, with randomness the caller provides.
//!
//! snow draws ephemeral keys from its resolver's random source; by default that is the
//! operating system. Here every handshake gets a resolver whose source is a ChaCha
//! stream seeded by the caller, so the core reads nothing from the system and tests are
//! reproducible. The drivers seed from the OS once at start.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// The one protocol: the responder (server) sends its static key, encrypted, and proves
/// it holds it; the initiator (client) is anonymous to Noise and proves its identity
/// inside the channel with an Ed25519 signature over the handshake hash.
pub const NOISE_PARAMS: &str = "Noise_NX_25519_ChaChaPoly_BLAKE2s";

/// Bytes the Noise prologue binds into the handshake: a handshake of another protocol or
/// version can never be taken for ours.
pub const PROLOGUE: &[u8] = b"fileapp control v1";

pub fn params() -> NoiseParams {
    // A constant string that snow parses; a failure here is a bug in this file.
    NOISE_PARAMS.parse().expect("valid Noise parameters")
}

/// A random source seeded by the caller.
struct Seeded(StdRng);

impl Random for Seeded {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// snow's default primitives, with our random source.
pub struct SeededResolver {
    seed: std::sync::Mutex<Option<[u8; 32]>>,
}

impl SeededResolver {
    /// A resolver whose random source, asked for once, is seeded with `seed`.
    pub fn new(seed: [u8; 32]) -> Box<SeededResolver> {
        Box::new(SeededResolver {
            seed: std::sync::Mutex::new(Some(seed)),
        })
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        // Handing the same seed out twice would repeat ephemeral keys: the second ask
        // gets nothing, and snow fails the build instead.
        let seed = self.seed.lock().ok()?.take()?;
        Some(Box::new(Seeded(StdRng::from_seed(seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        // ring's ChaCha20-Poly1305 (hand-tuned assembly) seals and opens our small
        // datagrams at about twice the rate of the portable implementation; the
        // cipher is the same (Noise's ChaChaPoly, nonce = 4 zero bytes || counter LE).
        RingResolver.resolve_cipher(choice)
    }
}

/// The public half of an X25519 static key.
pub fn static_public(secret: &[u8; 32]) -> [u8; 32] {
    let mut dh = DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .expect("X25519 is built in");
    dh.set(secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(dh.pubkey());
    out
}
