//! TLS 1.3 connections for transfers: rustls runs the handshake (its unbuffered API,
//! driven here over a tokio socket), then hands the traffic secrets to our own record
//! layer ([`super::record`]), the way kernel TLS offload does. The result is a
//! [`TlsStream`]: an `AsyncRead + AsyncWrite` for the small headers, plus two bulk paths
//! that encrypt and decrypt in place in large buffers on blocking threads:
//! [`TlsStream::send_file`] (provider) and `TlsStream::into_receiver` (requester).
//!
//! Key updates (RFC 8446 §4.6.3) are sent before a key reaches its confidentiality
//! limit and followed when the peer sends one; rustls' [`KernelConnection`] derives the
//! next secrets.
//!
//! One job per file:
//! - `handshake`: rustls' unbuffered handshake over the socket, [`connect`] / [`accept`];
//! - `stream`: [`TlsStream`], the record-by-record `AsyncRead + AsyncWrite`;
//! - `send`: the bulk send path ([`TlsStream::send_file`]: read, hash, seal in place);
//! - [`unpack`]: sans-io, opens a buffer of received records and packs their data;
//! - `receive`: the blocking read loop around [`unpack`] (`Receiver`).
//!
//! Every buffer size of these paths is defined below, once.

// System calls go through `crate::sys`, the one place allowed `unsafe`.
#![forbid(unsafe_code)]

use std::io;
use std::sync::{Arc, Mutex};

use rustls::ConnectionTrafficSecrets;
use rustls::kernel::KernelConnection;

use super::record::{self, MAX_RECORD, RecordError, Sealer};
// The tests below seal their own records.
#[cfg(test)]
use super::record::{Content, MAX_PAYLOAD, Opener};

mod handshake;
mod receive;
mod send;
mod stream;

/// The sans-io half of the receive path lives in the core, where it is fuzzed.
pub use fileapp_core::transfer::unpack;
pub use handshake::{accept, connect};
pub(crate) use receive::{Plaintext, ReceiveError, Receiver};
pub use stream::TlsStream;

// Buffer sizes, all in bytes unless said otherwise.

/// Ciphertext read buffer of [`TlsStream`] (header exchange; bulk data has its own).
const READ_BUFFER: usize = 64 << 10;
/// Sealed bytes [`TlsStream`]'s `poll_write` buffers before it waits for the socket.
const WRITE_HIGH: usize = 256 << 10;
/// Handshake bytes read before rustls decides (it grows when a flight is larger).
const HANDSHAKE_IN: usize = 2 * MAX_RECORD;
/// Handshake bytes encoded before they are written (grows on demand).
const HANDSHAKE_OUT: usize = 4096;
/// Sealed buffers in flight on the sending side (the send queue depth, in buffers).
const SEND_BUFFERS: usize = 4;
/// Records per sending buffer (in records: 1 MiB of payload).
const SEND_RECORDS: usize = 64;
/// Records read and sealed in one step (in records: 256 KiB, which stays in cache
/// between the read and the seal).
const SEAL_STEP: usize = 16;
/// Buffers the requester's reader fills: about 1 MiB of records, plus room for the one
/// incomplete record carried over from the buffer before.
pub(crate) const RECEIVE_BUFFER: usize = (1 << 20) + MAX_RECORD;
/// Bytes read from the socket before they are opened: small enough to stay in cache.
const READ_STEP: usize = 256 << 10;

/// Derives the next traffic secrets at a key update.
pub(crate) trait Rekey: Send {
    fn next_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
    fn next_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
}

impl<D: Send> Rekey for KernelConnection<D> {
    fn next_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_tx_secret()
    }
    fn next_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_rx_secret()
    }
}

/// The one key schedule of a connection, shared by its sending and receiving halves
/// (which may run on different threads).
type Keys = Arc<Mutex<Box<dyn Rekey>>>;

fn rekey_error(e: impl std::fmt::Display) -> RecordError {
    RecordError::KeyUpdate(e.to_string())
}

/// The peer's next traffic secrets, for the opener, after its key update.
fn next_rx_secrets(keys: &Keys) -> Result<(u64, ConnectionTrafficSecrets), RecordError> {
    keys.lock()
        .map_err(rekey_error)?
        .next_rx()
        .map_err(rekey_error)
}

/// Switches `sealer` to our next traffic secret (after sending a key update).
fn next_tx(keys: &Keys, sealer: &mut Sealer) -> io::Result<()> {
    let (seq, secrets) = keys
        .lock()
        .map_err(rekey_error)?
        .next_tx()
        .map_err(rekey_error)?;
    Ok(sealer.rekey(&secrets, seq)?)
}

/// A rustls error as an `io::Error` that callers can downcast back.
fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests;
