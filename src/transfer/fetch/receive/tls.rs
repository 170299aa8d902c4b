//! The TLS receive path: the stream's socket is read on a blocking thread that opens
//! the records in place (and hashes their plaintext unless the owner does: `trailer` is
//! then the length of its hash after the data); a second thread writes it (see
//! [`tls::Receiver`]).

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use tokio::sync::watch;

use super::{
    CHECK_OWNER_HASH, Landing, hash_prefix, incomplete, run_receiver, settle_hash, socket_error,
};
use crate::transfer::fetch::config::TLS_BUFFERS;
use crate::transfer::fetch::space::Reserve;
use crate::transfer::fetch::{Closed, FetchError, FetchEvent, ProtocolError};
use crate::transfer::link::BlockingLink;
use crate::transfer::tls::{self, ReceiveError, TlsStream};

/// Receives the data of a TLS connection; see the module comment.
pub(super) async fn receive_tls(
    stream: TlsStream,
    leftover: Vec<u8>,
    land: Landing,
    trailer: usize,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<[u8; 32], FetchError> {
    let (sock, mut rx) = stream.into_receiver();
    // What `read_header` read past the answer comes before what the stream still holds.
    let mut plain = leftover;
    plain.extend_from_slice(&rx.plain);
    rx.plain = plain;
    run_receiver(
        sock.into_blocking(land.stall)?,
        land,
        on_event,
        cancel,
        move |sock, land, written, stop| open_and_hash(rx, sock, land, trailer, written, stop),
    )
    .await
}

/// Blocking body of [`receive_tls`]: this thread reads and opens records and, without a
/// `trailer`, hashes them (while still in cache, after the existing prefix); a second
/// thread writes them at `offset..size`. Returns our hash, or the owner's trailer.
fn open_and_hash(
    rx: tls::Receiver,
    sock: &mut BlockingLink,
    land: &Landing,
    trailer: usize,
    written: &AtomicU64,
    stop: &AtomicBool,
) -> Result<[u8; 32], FetchError> {
    let (offset, size) = (land.offset, land.size);
    let disk = land.disk();
    let mut hasher = hash_prefix(&land.part, offset).map_err(&disk)?;
    let (full_tx, full_rx) = sync_channel::<tls::Plaintext>(TLS_BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(TLS_BUFFERS);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_opened(land, full_rx, empty_tx, written));
        let mut allocated = 0;
        let fresh = || {
            if allocated < TLS_BUFFERS {
                allocated += 1;
                Some(vec![0u8; tls::RECEIVE_BUFFER])
            } else {
                empty_rx.recv().ok()
            }
        };
        // When the owner hashes (`trailer` is its hash), there is nothing to do here
        // but in debug and test builds, which check the owner's hash against ours.
        let hash = |piece: &[u8]| {
            if trailer == 0 || CHECK_OWNER_HASH {
                hasher.update(piece);
            }
        };
        let deliver = |o: tls::Plaintext| full_tx.send(o).is_ok();
        let received = rx.run(sock, size - offset, trailer, fresh, hash, deliver);
        drop(full_tx);
        let wrote = writer
            .join()
            .map_err(|_| FetchError::Io(io::Error::other("writer thread panicked")))?;
        let owners = match received {
            Ok(tail) => <[u8; 32]>::try_from(tail.as_slice()).ok(),
            // The writer stopped: its error says why.
            Err(ReceiveError::Stopped) => {
                wrote?;
                return Err(FetchError::Io(io::Error::other("the writer stopped")));
            }
            Err(e) => return Err(receive_error(e, offset, size, stop)),
        };
        wrote?;
        let done = written.load(Ordering::Relaxed);
        if done != size {
            return Err(incomplete(done, size));
        }
        // The owner's hash of what it sent, or ours of what came.
        settle_hash(owners, || *hasher.finalize().as_bytes())
    })
}

/// The writer thread: writes each opened buffer at its place, reserving space ahead,
/// and hands the buffer back; fsyncs at the end so a published file is durable.
fn write_opened(
    land: &Landing,
    full_rx: Receiver<tls::Plaintext>,
    empty_tx: SyncSender<Vec<u8>>,
    written: &AtomicU64,
) -> Result<(), FetchError> {
    let (file, disk) = (&land.file, land.disk());
    let mut pos = land.offset;
    let mut reserve = Reserve::new(file, pos, land.size);
    while let Ok(opened) = full_rx.recv() {
        reserve.ahead(file, pos).map_err(&disk)?;
        file.write_all_at(&opened.buf[..opened.len], pos)
            .map_err(&disk)?;
        pos += opened.len as u64;
        written.store(pos, Ordering::Relaxed);
        let _ = empty_tx.try_send(opened.buf);
    }
    file.sync_all().map_err(&disk)
}

/// Why the TLS reader stopped early (not because the writer did), as the fetch error
/// it means: `offset` bytes were on disk before it started, of `size`.
fn receive_error(e: ReceiveError, offset: u64, size: u64, stop: &AtomicBool) -> FetchError {
    match e {
        ReceiveError::Io(e) => socket_error(e, stop),
        _ if stop.load(Ordering::SeqCst) => FetchError::Cancelled,
        ReceiveError::Closed(n) => FetchError::PeerClosed(Closed::During {
            received: offset + n,
            size,
        }),
        ReceiveError::TooMuch => ProtocolError::TooMuchData.into(),
        ReceiveError::Record(e) => FetchError::Io(e.into()),
        // Handled by the caller, which has the writer's error.
        ReceiveError::Stopped => FetchError::Io(io::Error::other("the writer stopped")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test builds hash on this side too: the owner's hash is taken only if it is ours.
    #[test]
    fn an_owner_hash_that_is_not_ours_is_refused_in_test_builds() {
        const { assert!(CHECK_OWNER_HASH) };
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(matches!(
            settle_hash(Some(a), || b),
            Err(FetchError::HashMismatch)
        ));
        assert_eq!(settle_hash(Some(a), || a).unwrap(), a);
        assert_eq!(settle_hash(None, || b).unwrap(), b);
    }
}
