//! The Linux fast path for plaintext TCP: one thread `splice`s socket -> pipe -> partial
//! file (no copy through user space) while a second thread reads back what was just
//! written (still in the page cache) through a mapping and hashes it.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Landing, incomplete, run_receiver, socket_error};
use crate::sys::FileWindow;
use crate::transfer::fetch::config::{
    HASH_QUEUE, HASH_STEP, HASH_WINDOW, SPLICE_PIPE, SPLICE_PIPE_FALLBACK,
};
use crate::transfer::fetch::space::Reserve;
use crate::transfer::fetch::{Closed, FetchError, FetchEvent};

/// Receives the data of a plaintext TCP connection by splicing; see the module comment.
pub(super) async fn receive_splice(
    stream: TcpStream,
    leftover: Vec<u8>,
    land: Landing,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<[u8; 32], FetchError> {
    run_receiver(
        crate::transfer::link::blocking_tcp(stream, land.stall)?,
        land,
        on_event,
        cancel,
        move |sock, land, written, stop| splice_and_hash(sock, &leftover, land, written, stop),
    )
    .await
}

/// Blocking body of [`receive_splice`]: splices into the file at `offset..size` and hashes
/// the whole file (prefix included) on a second thread, returning the hash.
fn splice_and_hash(
    sock: &mut std::net::TcpStream,
    leftover: &[u8],
    land: &Landing,
    written: &AtomicU64,
    stop: &AtomicBool,
) -> Result<[u8; 32], FetchError> {
    let disk = land.disk();
    // The splicer tells the hasher how far the file is written.
    let (tx, rx) = sync_channel::<u64>(HASH_QUEUE);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(|| hash_behind(&land.file, rx));
        let copied = splice_all(sock, leftover, land, written, stop, &tx);
        drop(tx);
        let hashed = hasher
            .join()
            .map_err(|_| FetchError::Io(io::Error::other("hash thread panicked")))?;
        copied?;
        let (hash, n) = hashed.map_err(&disk)?;
        if n != land.size {
            return Err(incomplete(n, land.size));
        }
        land.file.sync_all().map_err(&disk)?;
        Ok(hash)
    })
}

/// Hashes `file` from its start up to each offset received on `rx` (every byte below it
/// is written), straight from the page cache through a sliding read-only window: no
/// copy, and the pages were just written so they are still cached. Only bytes below
/// `upto` (already written) are touched, so the mapping never faults beyond the end of
/// the file; the partial is locked, so no other fileapp truncates it under us. Returns
/// the hash and how far it got.
#[allow(unsafe_code)] // the one mapping of the crate outside `sys`; see the SAFETY below
fn hash_behind(file: &File, rx: Receiver<u64>) -> io::Result<([u8; 32], u64)> {
    let mut h = blake3::Hasher::new();
    let mut hashed = 0u64;
    let mut window: Option<FileWindow<'_>> = None;
    while let Ok(upto) = rx.recv() {
        while hashed < upto {
            let base = hashed - hashed % HASH_WINDOW;
            let w = match &mut window {
                Some(w) if w.base() == base => w,
                slot => {
                    // Unmap the old window before mapping the next.
                    *slot = None;
                    // SAFETY: `file` is the partial this download created and holds
                    // locked until it is published; nothing of ours writes below
                    // `upto` again or truncates it while the window lives. (Another
                    // program that ignores the lock and truncates it could still make
                    // a read fault: the contract of every file mapping.)
                    slot.insert(unsafe { FileWindow::map(file, base, HASH_WINDOW as usize) }?)
                }
            };
            let end = upto.min(base + HASH_WINDOW);
            h.update(w.bytes(hashed, end)?);
            hashed = end;
        }
    }
    Ok((*h.finalize().as_bytes(), hashed))
}

/// Writes `leftover`, then splices the rest of the file from `sock`, at `offset..size`;
/// tells the hasher (`tx`) how far the file is written and `written` for progress.
fn splice_all(
    sock: &mut std::net::TcpStream,
    leftover: &[u8],
    land: &Landing,
    written: &AtomicU64,
    stop: &AtomicBool,
    tx: &SyncSender<u64>,
) -> Result<(), FetchError> {
    let (file, size) = (&land.file, land.size);
    let disk = land.disk();
    let mut pos = land.offset;
    // A failed send means the hasher stopped (its error is reported after the join):
    // stop too, rather than splice the rest of the file for nothing.
    if tx.send(pos).is_err() {
        return Ok(()); // the existing prefix
    }
    if !leftover.is_empty() {
        file.write_all_at(leftover, pos).map_err(&disk)?;
        pos += leftover.len() as u64;
        written.store(pos, Ordering::Relaxed);
    }
    let pipe = Pipe::new()?;
    let mut told = pos;
    let mut reserve = Reserve::new(file, pos, size);
    while pos < size {
        reserve.ahead(file, pos).map_err(&disk)?;
        let want = (size - pos).min(pipe.cap as u64) as usize;
        let n = pipe.fill_from(sock, want, stop).map_err(|e| match e {
            Filling::Closed => FetchError::PeerClosed(Closed::During {
                received: pos,
                size,
            }),
            Filling::Failed(e) => e,
        })?;
        pipe.drain_into(file, &mut pos, n).map_err(&disk)?;
        written.store(pos, Ordering::Relaxed);
        if pos - told >= HASH_STEP || pos == size {
            if tx.send(pos).is_err() {
                return Ok(());
            }
            told = pos;
        }
    }
    let _ = tx.send(pos); // the hasher's answer, error or not, comes with the join
    Ok(())
}

/// Why a socket-to-pipe splice moved nothing.
enum Filling {
    /// The owner closed the connection (and we were not cancelling).
    Closed,
    Failed(FetchError),
}

/// The pipe the data passes through on its way from the socket to the file.
struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    /// Its capacity: the most one splice moves.
    cap: usize,
}

impl Pipe {
    fn new() -> Result<Pipe, FetchError> {
        let (rd, wr) = pipe_with(PipeFlags::CLOEXEC).map_err(io::Error::from)?;
        // A larger pipe halves the syscalls; the default still works if refused.
        let cap = match fcntl_setpipe_size(&wr, SPLICE_PIPE) {
            Ok(n) if n > 0 => n,
            _ => SPLICE_PIPE_FALLBACK,
        };
        Ok(Pipe { rd, wr, cap })
    }

    /// Moves up to `want` bytes from `sock` into the (empty) pipe; how many it moved.
    fn fill_from(
        &self,
        sock: &std::net::TcpStream,
        want: usize,
        stop: &AtomicBool,
    ) -> Result<usize, Filling> {
        let flags = SpliceFlags::MOVE | SpliceFlags::MORE;
        loop {
            // Sockets and pipes have no offsets.
            match splice(sock, None, &self.wr, None, want, flags) {
                // Cancel shuts the socket down, which reads as the end of the data.
                Ok(0) if stop.load(Ordering::SeqCst) => {
                    return Err(Filling::Failed(FetchError::Cancelled));
                }
                Ok(0) => return Err(Filling::Closed),
                Ok(n) => return Ok(n),
                Err(Errno::INTR) if !stop.load(Ordering::SeqCst) => continue,
                Err(e) => return Err(Filling::Failed(socket_error(e.into(), stop))),
            }
        }
    }

    /// Moves all `n` bytes in the pipe into `file` at `*pos`, advancing it.
    fn drain_into(&self, file: &File, pos: &mut u64, mut n: usize) -> io::Result<()> {
        let flags = SpliceFlags::MOVE | SpliceFlags::MORE;
        while n > 0 {
            // The kernel advances `off`; `pos` is advanced by what it reports.
            let mut off = *pos;
            match splice(&self.rd, None, file, Some(&mut off), n, flags) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => {
                    n -= m;
                    *pos += m as u64;
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
