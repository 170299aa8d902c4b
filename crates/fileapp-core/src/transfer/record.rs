//! The TLS 1.3 record layer (RFC 8446 §5), sans-io, for the data phase of a transfer.
//!
//! rustls runs the handshake (the `fileapp` crate's `transfer::tls`) and hands over the traffic secrets;
//! from then on this module seals and opens records itself, the way kernel TLS does.
//! The bytes on the wire are ordinary TLS 1.3 records, so any TLS 1.3 implementation
//! can talk to us. Doing it here lets the transfer paths encrypt and decrypt *in place*
//! in their own large buffers: a file is read straight into the plaintext slots of a
//! buffer of records, sealed there and written with one syscall; received records are
//! opened where they landed and their plaintext is hashed and written from there. No
//! byte is copied in user space besides the cipher itself.
//!
//! A record is `type(1)=23 | 0x0303 | length(2) | ciphertext(length)`, the ciphertext
//! being AEAD(payload | real content type(1) | zero padding) with a 16-byte tag; the nonce
//! is the traffic IV XOR the 64-bit record sequence number, and the additional data is
//! the 5-byte record header.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

mod control;

pub use control::*;

/// Largest payload of one record.
pub const MAX_PAYLOAD: usize = 1 << 14;
/// Record header: content type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// AEAD tag length of every TLS 1.3 suite.
pub const TAG_LEN: usize = 16;
/// Bytes a record adds to its payload when we seal it (header, content type, tag; no
/// padding).
pub const OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;
/// Largest ciphertext length a peer may send (RFC 8446 §5.2: 2^14 + 256).
pub const MAX_CIPHERTEXT: usize = MAX_PAYLOAD + 256;
/// Largest whole record we may receive.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT;

/// The record's real content type (the last non-zero byte of the inner plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Alert,
    Handshake,
    ApplicationData,
}

impl Content {
    fn byte(self) -> u8 {
        match self {
            Content::Alert => 21,
            Content::Handshake => 22,
            Content::ApplicationData => 23,
        }
    }
}

/// What went wrong with a record. Every one of these ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("malformed TLS record header")]
    BadHeader,
    #[error("TLS record too long ({0} bytes)")]
    TooLong(usize),
    #[error("TLS record failed authentication (corrupted or forged data)")]
    BadRecordMac,
    #[error("TLS record with no content type")]
    NoContentType,
    #[error("unexpected TLS content type {0}")]
    UnexpectedType(u8),
    #[error("malformed TLS handshake message after the handshake")]
    BadHandshake,
    #[error("the peer sent TLS alert {0}")]
    Alert(u8),
    #[error("TLS key update failed: {0}")]
    KeyUpdate(String),
    #[error("payload too long for one record")]
    PayloadTooLong,
    #[error("the record sequence number is exhausted")]
    SequenceExhausted,
    #[error("unexpected TLS handshake message {0} after the handshake")]
    UnexpectedMessage(u8),
    #[error("more than {MAX_WITHOUT_DATA} TLS records in a row without data")]
    TooManyWithoutData,
    #[error("a TLS record interleaved with a split handshake message")]
    Interleaved,
}

/// TLS alert descriptions (RFC 8446 §6).
pub mod alert {
    pub const UNEXPECTED_MESSAGE: u8 = 10;
    pub const BAD_RECORD_MAC: u8 = 20;
    pub const RECORD_OVERFLOW: u8 = 22;
    pub const DECODE_ERROR: u8 = 50;
    pub const INTERNAL_ERROR: u8 = 80;
}

impl RecordError {
    /// The fatal alert that tells the peer about this error, or `None` when the peer
    /// sent an alert itself (one is never answered with another).
    pub fn alert(&self) -> Option<u8> {
        Some(match self {
            RecordError::BadHeader | RecordError::BadHandshake => alert::DECODE_ERROR,
            RecordError::TooLong(_) => alert::RECORD_OVERFLOW,
            RecordError::BadRecordMac => alert::BAD_RECORD_MAC,
            RecordError::NoContentType
            | RecordError::UnexpectedType(_)
            | RecordError::UnexpectedMessage(_)
            | RecordError::TooManyWithoutData
            | RecordError::Interleaved => alert::UNEXPECTED_MESSAGE,
            RecordError::KeyUpdate(_)
            | RecordError::PayloadTooLong
            | RecordError::SequenceExhausted => alert::INTERNAL_ERROR,
            RecordError::Alert(_) => return None,
        })
    }
}

/// The payload of the fatal alert `description`.
pub fn fatal_alert(description: u8) -> [u8; 2] {
    [2, description]
}

impl From<RecordError> for std::io::Error {
    fn from(e: RecordError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// One direction's AEAD key, IV and sequence number.
struct Cipher {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Cipher {
    fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Cipher, RecordError> {
        let bad = || RecordError::KeyUpdate("unusable traffic secret".into());
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(bad()),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| bad())?;
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| bad())?;
        Ok(Cipher {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The nonce for the current sequence number, which is then advanced.
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(RecordError::SequenceExhausted)?;
        Ok(Nonce::assume_unique_for_key(n))
    }
}

fn header(len: usize) -> [u8; HEADER_LEN] {
    let l = (len as u16).to_be_bytes();
    [23, 3, 3, l[0], l[1]]
}

/// The sending direction.
pub struct Sealer {
    cipher: Cipher,
    /// Records to send under one key before a key update is due.
    limit: u64,
}

impl Sealer {
    /// `seq` is the next sequence number (rustls reports it with the secrets); `limit`
    /// is how many records one key may seal before [`Sealer::wants_key_update`].
    pub fn new(
        secrets: &ConnectionTrafficSecrets,
        seq: u64,
        limit: u64,
    ) -> Result<Sealer, RecordError> {
        Ok(Sealer {
            cipher: Cipher::new(secrets, seq)?,
            limit,
        })
    }

    /// True if sealing `records` more records would take this key past `limit`: send
    /// [`KEY_UPDATE`] (with this key) and [`Sealer::rekey`] first.
    pub fn wants_key_update(&self, records: u64) -> bool {
        self.cipher.seq.saturating_add(records) > self.limit
    }

    /// Changes how many records one key may seal (tests use tiny limits).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_limit(&mut self, records: u64) {
        self.limit = records;
    }

    /// Switches to the next traffic secret (after a key update was sealed).
    pub fn rekey(
        &mut self,
        secrets: &ConnectionTrafficSecrets,
        seq: u64,
    ) -> Result<(), RecordError> {
        self.cipher = Cipher::new(secrets, seq)?;
        Ok(())
    }

    /// Seals one record in place. `record` is laid out as header (5 bytes, overwritten),
    /// `payload_len` bytes of payload, then 1 + [`TAG_LEN`] bytes that are overwritten;
    /// its length must be exactly `payload_len + OVERHEAD`.
    pub fn seal_in_place(
        &mut self,
        record: &mut [u8],
        payload_len: usize,
        content: Content,
    ) -> Result<(), RecordError> {
        if payload_len > MAX_PAYLOAD || record.len() != payload_len + OVERHEAD {
            return Err(RecordError::PayloadTooLong);
        }
        let hdr = header(payload_len + 1 + TAG_LEN);
        record[..HEADER_LEN].copy_from_slice(&hdr);
        let inner_end = HEADER_LEN + payload_len + 1;
        record[inner_end - 1] = content.byte();
        let nonce = self.cipher.next_nonce()?;
        let tag = self
            .cipher
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(hdr), &mut record[HEADER_LEN..inner_end])
            .map_err(|_| RecordError::PayloadTooLong)?;
        record[inner_end..].copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals `inner` (payload, content type, padding: anything, even what no peer may
    /// send) as one record onto `out`; for tests that build edge cases stock TLS stacks
    /// never produce. `inner` is at most `u16::MAX - TAG_LEN` bytes.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn seal_inner(&mut self, inner: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let len = u16::try_from(inner.len() + TAG_LEN).map_err(|_| RecordError::PayloadTooLong)?;
        let hdr = [23, 3, 3, (len >> 8) as u8, len as u8];
        let start = out.len();
        out.extend_from_slice(&hdr);
        out.extend_from_slice(inner);
        let nonce = self.cipher.next_nonce()?;
        let tag = self
            .cipher
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(hdr), &mut out[start + HEADER_LEN..])
            .map_err(|_| RecordError::PayloadTooLong)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Appends `payload` to `out` as records of at most [`MAX_PAYLOAD`] bytes (one empty
    /// record if `payload` is empty and `content` is not application data).
    pub fn seal_to(
        &mut self,
        payload: &[u8],
        content: Content,
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            let start = out.len();
            out.resize(start + n + OVERHEAD, 0);
            out[start + HEADER_LEN..start + HEADER_LEN + n].copy_from_slice(&rest[..n]);
            self.seal_in_place(&mut out[start..], n, content)?;
            rest = &rest[n..];
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

/// The receiving direction.
pub struct Opener {
    cipher: Cipher,
}

/// One opened record: its content type and where its payload now lies (plaintext) in
/// the buffer given to [`Opener::open_within`] (always at its start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub content: Content,
    pub payload: Range<usize>,
}

impl Opener {
    pub fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Opener, RecordError> {
        Ok(Opener {
            cipher: Cipher::new(secrets, seq)?,
        })
    }

    /// Switches to the next traffic secret (after the peer's key update).
    pub fn rekey(
        &mut self,
        secrets: &ConnectionTrafficSecrets,
        seq: u64,
    ) -> Result<(), RecordError> {
        self.cipher = Cipher::new(secrets, seq)?;
        Ok(())
    }

    /// The length of the record at the start of `buf` if it is all there, `None` if more
    /// bytes are needed, or an error if the header is not a TLS 1.3 protected record.
    pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        // Protected records always say application_data and legacy version 1.2.
        if buf[0] != 23 || buf[1] != 3 || buf[2] != 3 {
            return Err(if buf[0] == 21 {
                // A plaintext alert (the peer failed before it could encrypt).
                RecordError::Alert(buf.get(6).copied().unwrap_or(0))
            } else {
                RecordError::BadHeader
            });
        }
        let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
        if len > MAX_CIPHERTEXT {
            return Err(RecordError::TooLong(len));
        }
        if len < TAG_LEN + 1 {
            return Err(RecordError::BadHeader);
        }
        Ok((buf.len() >= HEADER_LEN + len).then_some(HEADER_LEN + len))
    }

    /// Opens the one whole record that `record` is (as measured by
    /// [`Opener::record_len`]), decrypting it in place.
    pub fn open_in_place(&mut self, record: &mut [u8]) -> Result<Opened, RecordError> {
        self.open_within(record, 0)
    }

    /// Opens the whole record that `buf[from..]` is and moves its plaintext to the start
    /// of `buf` as it decrypts (no extra pass): records opened one after another this way
    /// leave their payloads side by side, with no headers or tags between them.
    pub fn open_within(&mut self, buf: &mut [u8], from: usize) -> Result<Opened, RecordError> {
        let record = buf.get(from..).ok_or(RecordError::BadHeader)?;
        if Self::record_len(record)? != Some(record.len()) {
            return Err(RecordError::BadHeader);
        }
        let hdr: [u8; HEADER_LEN] = record[..HEADER_LEN]
            .try_into()
            .map_err(|_| RecordError::BadHeader)?;
        let nonce = self.cipher.next_nonce()?;
        let plain_len = self
            .cipher
            .key
            .open_within(nonce, Aad::from(hdr), buf, from + HEADER_LEN..)
            .map_err(|_| RecordError::BadRecordMac)?
            .len();
        // RFC 8446 §5.4: the inner plaintext (payload, type, padding) is at most 2^14 + 1
        // bytes; a longer one is a record_overflow, whatever its padding.
        if plain_len > MAX_PAYLOAD + 1 {
            return Err(RecordError::TooLong(plain_len));
        }
        let inner = &buf[..plain_len];
        // The real type is the last non-zero byte; zeros after it are padding.
        let Some(at) = inner.iter().rposition(|&b| b != 0) else {
            return Err(RecordError::NoContentType);
        };
        let content = match inner[at] {
            21 => Content::Alert,
            22 => Content::Handshake,
            23 => Content::ApplicationData,
            t => return Err(RecordError::UnexpectedType(t)),
        };
        Ok(Opened {
            content,
            payload: 0..at,
        })
    }
}

/// Bytes a buffer of records needs to carry `payload` bytes of data.
pub fn sealed_len(payload: usize) -> usize {
    payload + payload.div_ceil(MAX_PAYLOAD) * OVERHEAD
}

#[cfg(test)]
mod tests;
