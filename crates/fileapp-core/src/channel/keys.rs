//! A session's two ChaCha20-Poly1305 keys, raw, for the server's many sessions.
//!
//! snow's transport state holds each direction's cipher as a boxed ring `LessSafeKey`,
//! an enum sized for AES-GCM's key schedule: about 1.1 KB of heap a session, so 22 MB
//! for the 20,000 live sessions of the load generator's memory phase. The server keeps
//! the 64 bytes of key instead and builds ring's key for each packet (copying 32 bytes;
//! the AEAD over the datagram costs far more). The cipher is exactly Noise's
//! ChaChaPoly as snow's ring resolver runs it: nonce = 4 zero bytes || counter
//! (little-endian), empty associated data, the tag after the ciphertext, so the wire
//! does not change (the channel tests speak to snow's client side).

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::TAG_LEN;

/// One AEAD per direction, as used by `seal` and `open` in the channel.
pub(super) trait Transport {
    /// Seals `payload` under `counter` into `out` (`payload.len() + TAG_LEN` bytes).
    fn write(&self, counter: u64, payload: &[u8], out: &mut [u8]) -> Result<(), ()>;
    /// Opens `sealed` under `counter` into `out`; the plaintext's length.
    fn read(&self, counter: u64, sealed: &[u8], out: &mut [u8]) -> Result<usize, ()>;
}

impl Transport for snow::StatelessTransportState {
    fn write(&self, counter: u64, payload: &[u8], out: &mut [u8]) -> Result<(), ()> {
        self.write_message(counter, payload, out)
            .map(|_| ())
            .map_err(|_| ())
    }

    fn read(&self, counter: u64, sealed: &[u8], out: &mut [u8]) -> Result<usize, ()> {
        self.read_message(counter, sealed, out).map_err(|_| ())
    }
}

/// The responder's keys of one session: what it seals with and what it opens with.
pub(super) struct SessionKeys {
    send: [u8; 32],
    recv: [u8; 32],
}

impl SessionKeys {
    /// The responder's keys from Noise's split `(k1, k2)`: the initiator sends with
    /// `k1`, the responder with `k2`.
    pub(super) fn responder((k1, k2): ([u8; 32], [u8; 32])) -> SessionKeys {
        SessionKeys { send: k2, recv: k1 }
    }
}

fn key(raw: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for ChaCha20-Poly1305.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, raw).expect("a 32-byte key"))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Transport for SessionKeys {
    fn write(&self, counter: u64, payload: &[u8], out: &mut [u8]) -> Result<(), ()> {
        // Noise reserves the last nonce (rekeying); the channel stops far earlier.
        if counter == u64::MAX || out.len() < payload.len() + TAG_LEN {
            return Err(());
        }
        let (body, rest) = out.split_at_mut(payload.len());
        body.copy_from_slice(payload);
        let tag = key(&self.send)
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), body)
            .map_err(|_| ())?;
        rest[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(())
    }

    fn read(&self, counter: u64, sealed: &[u8], out: &mut [u8]) -> Result<usize, ()> {
        if counter == u64::MAX || sealed.len() < TAG_LEN || out.len() < sealed.len() {
            return Err(());
        }
        let in_out = &mut out[..sealed.len()];
        in_out.copy_from_slice(sealed);
        let plain = key(&self.recv)
            .open_in_place(nonce(counter), Aad::empty(), in_out)
            .map_err(|_| ())?;
        Ok(plain.len())
    }
}
