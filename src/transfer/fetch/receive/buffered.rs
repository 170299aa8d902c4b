//! The portable receive path, for any byte stream (plaintext where `splice` is
//! unavailable: another OS, or the punched QUIC stream):
//! this task reads into a small pool of large buffers, a blocking thread hashes and
//! writes them, so hashing overlaps with the network.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::{CHECK_OWNER_HASH, Landing, hash_prefix, incomplete, settle_hash};
use crate::transfer::fetch::config::{BUFFER_SIZE, BUFFERS, PROGRESS_BYTES, PROGRESS_INTERVAL};
use crate::transfer::fetch::{Closed, FetchError, FetchEvent, cancelled};

/// A filled buffer and how many of its bytes are data.
type Filled = (Vec<u8>, usize);

/// Receives `size - offset` bytes into `file` (which holds `offset` verified-by-hash-later
/// bytes), returning the BLAKE3 hash of the whole file: ours, or with a `trailer` (the
/// owner's hash after the data, on an authenticated stream) the owner's. On failure or
/// cancel, everything received so far is on disk in the partial.
pub(crate) async fn receive_buffered<R: AsyncRead + Unpin>(
    mut stream: R,
    leftover: Vec<u8>,
    land: Landing,
    trailer: usize,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<[u8; 32], FetchError> {
    let Landing {
        file,
        part,
        offset,
        size,
        stall,
    } = land;
    let (full_tx, full_rx) = mpsc::channel::<Filled>(BUFFERS);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>(BUFFERS);
    let written = Arc::new(AtomicU64::new(offset));
    // When the owner hashes, only builds that check it hash here too.
    let hash = trailer == 0 || CHECK_OWNER_HASH;
    let writer = {
        let written = written.clone();
        let part = part.clone();
        tokio::task::spawn_blocking(move || {
            write_loop(file, &part, offset, hash, full_rx, empty_tx, &written)
        })
    };
    let mut pending = leftover;
    pending.truncate((size - offset + trailer as u64).min(pending.len() as u64) as usize);
    let mut reader = Reader {
        stream: &mut stream,
        stall,
        size,
        pending,
        full_tx,
        empty_rx,
        allocated: 0,
    };
    let mut outcome = reader.read_all(offset, &written, on_event, cancel).await;
    let mut owners = None;
    if outcome.is_ok() && trailer > 0 {
        let mut h = [0u8; 32];
        outcome = reader.read_trailer(&mut h[..trailer.min(32)], cancel).await;
        owners = Some(h);
    }
    // Closing the channel ends the writer.
    drop(reader);
    drop(stream);
    let hashed = writer
        .await
        .map_err(|e| FetchError::Io(io::Error::other(e)))?;
    outcome?;
    let hasher = hashed?;
    let done = written.load(Ordering::Relaxed);
    if done != size {
        return Err(incomplete(done, size));
    }
    on_event(FetchEvent::Progress { done });
    // The owner's hash of what it sent, or ours of what came.
    settle_hash(owners, || match hasher {
        Some(h) => *h.finalize().as_bytes(),
        // Not hashed only when there is a trailer and the build does not check it.
        None => [0; 32],
    })
}

/// The reading side: fills buffers from the stream (after the `pending` bytes that came
/// with the answer) and hands them to the writer.
struct Reader<'s, R> {
    stream: &'s mut R,
    stall: Duration,
    size: u64,
    pending: Vec<u8>,
    full_tx: mpsc::Sender<Filled>,
    empty_rx: mpsc::Receiver<Vec<u8>>,
    /// Buffers made so far; past [`BUFFERS`], the writer's returned ones are reused.
    allocated: usize,
}

impl<R: AsyncRead + Unpin> Reader<'_, R> {
    /// Reads until the file is complete (`offset` bytes are on disk already), reporting
    /// progress from the writer's count. Ends early, without error, if the writer
    /// stopped: its error is the one to report.
    async fn read_all(
        &mut self,
        offset: u64,
        written: &AtomicU64,
        on_event: &mut (impl FnMut(FetchEvent) + Send),
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), FetchError> {
        let mut remaining = self.size - offset;
        let mut last_report = (Instant::now(), offset);
        while remaining > 0 {
            let Some(mut buf) = self.next_buffer().await else {
                break; // the writer failed; the caller collects its error
            };
            let want = (remaining.min(BUFFER_SIZE as u64)) as usize;
            let (filled, result) = self.fill(&mut buf, want, remaining, cancel).await;
            remaining -= filled as u64;
            // Keep what did arrive even on failure: it is a valid prefix for a resume.
            let handed = self.full_tx.send((buf, filled)).await.is_ok();
            result?;
            if !handed {
                break;
            }
            let done = written.load(Ordering::Relaxed);
            if last_report.0.elapsed() >= PROGRESS_INTERVAL
                || done - last_report.1 >= PROGRESS_BYTES
            {
                on_event(FetchEvent::Progress { done });
                last_report = (Instant::now(), done);
            }
        }
        Ok(())
    }

    /// Reads the owner's hash that follows the data into `out`.
    async fn read_trailer(
        &mut self,
        out: &mut [u8],
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), FetchError> {
        let (filled, result) = self.fill(out, out.len(), out.len() as u64, cancel).await;
        result?;
        debug_assert_eq!(filled, out.len());
        Ok(())
    }

    /// A new buffer while fewer than [`BUFFERS`] exist, else one the writer is done
    /// with; `None` if the writer is gone.
    async fn next_buffer(&mut self) -> Option<Vec<u8>> {
        if self.allocated < BUFFERS {
            self.allocated += 1;
            Some(vec![0u8; BUFFER_SIZE])
        } else {
            self.empty_rx.recv().await
        }
    }

    /// Fills `buf[..want]`, `remaining` bytes of the file being still to come. Returns
    /// how much it filled, and why it stopped short if it did.
    async fn fill(
        &mut self,
        buf: &mut [u8],
        want: usize,
        remaining: u64,
        cancel: &mut watch::Receiver<bool>,
    ) -> (usize, Result<(), FetchError>) {
        let mut filled = 0;
        if !self.pending.is_empty() {
            let n = self.pending.len().min(want);
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            filled = n;
        }
        while filled < want {
            let r = tokio::select! {
                r = timeout(self.stall, self.stream.read(&mut buf[filled..want])) => r,
                _ = cancelled(cancel) => return (filled, Err(FetchError::Cancelled)),
            };
            let failed = match r {
                Err(_) => FetchError::Timeout("waiting for data from the owner"),
                Ok(Err(e)) => FetchError::Io(e),
                Ok(Ok(0)) => FetchError::PeerClosed(Closed::During {
                    received: self.size - remaining + filled as u64,
                    size: self.size,
                }),
                Ok(Ok(n)) => {
                    filled += n;
                    continue;
                }
            };
            return (filled, Err(failed));
        }
        (filled, Ok(()))
    }
}

/// The hash+write stage: with `hash`, hashes the existing prefix, then every buffer as
/// it is written. Fsyncs at the end so a published file is durable. Blocking.
fn write_loop(
    mut file: File,
    part: &Path,
    offset: u64,
    hash: bool,
    mut full_rx: mpsc::Receiver<Filled>,
    empty_tx: mpsc::Sender<Vec<u8>>,
    written: &AtomicU64,
) -> Result<Option<blake3::Hasher>, FetchError> {
    let disk = |e| FetchError::Disk(part.to_path_buf(), e);
    // Nothing is appended until this returns, so the prefix is still `offset` long.
    let mut hasher = match hash {
        true => Some(hash_prefix(part, offset).map_err(disk)?),
        false => None,
    };
    file.seek(io::SeekFrom::Start(offset)).map_err(disk)?;
    while let Some((buf, n)) = full_rx.blocking_recv() {
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n]).map_err(disk)?;
        written.fetch_add(n as u64, Ordering::Relaxed);
        let _ = empty_tx.try_send(buf);
    }
    file.sync_all().map_err(disk)?;
    Ok(hasher)
}
