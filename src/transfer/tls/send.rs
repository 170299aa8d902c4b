//! The bulk send path, [`TlsStream::send_file`]: a blocking thread reads the file
//! straight into the payload slots of a buffer of records, hashes them if asked, and
//! seals them in place, while the task writes sealed buffers to the socket. Buffers go
//! round between the two, so the path allocates [`SEND_BUFFERS`] of them once.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::record::{self, Content, KEY_UPDATE, MAX_PAYLOAD, OVERHEAD, Sealer};
use super::stream::TlsStream;
use super::{Keys, SEAL_STEP, SEND_BUFFERS, SEND_RECORDS, next_tx};

/// Bytes from one record's start to the next's in a sending buffer.
const STRIDE: usize = MAX_PAYLOAD + OVERHEAD;

/// A buffer of sealed records, ready for the socket.
struct Sealed {
    buf: Vec<u8>,
    /// Bytes of `buf` to send.
    len: usize,
    /// File bytes they carry.
    payload: u64,
}

/// What [`seal_file`] sends: `len` bytes of `file` from `offset`, shown to `hasher` (if
/// any) as they are read.
struct Sending<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
    hasher: Option<&'a mut blake3::Hasher>,
}

impl TlsStream {
    /// Sends `len` bytes of `file` from `offset`: a blocking thread reads the file
    /// straight into the payload slots of a buffer of records and seals them in place,
    /// while this task writes sealed buffers to the socket. With `hash`, the thread also
    /// hashes each record's bytes (BLAKE3, in cache) just before sealing them, and the
    /// hash of everything sent is returned.
    pub async fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> io::Result<Option<[u8; 32]>> {
        // Whatever is queued (the answer header, a key update we owe) goes first.
        if self.update_owed {
            self.queue(&[], Content::Handshake)?;
        }
        timeout(stall, self.flush())
            .await
            .map_err(crate::transfer::stopped_reading)??;
        let mut sealer = self
            .sealer
            .take()
            .ok_or_else(|| io::Error::other("TLS sender busy"))?;
        let file = file.try_clone()?;
        let keys = self.keys.clone();
        let (full_tx, mut full_rx) = mpsc::channel::<io::Result<Sealed>>(SEND_BUFFERS);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SEND_BUFFERS);
        let sealer_job = tokio::task::spawn_blocking(move || {
            let mut hasher = hash.then(blake3::Hasher::new);
            let to = Sending {
                file: &file,
                offset,
                len,
                hasher: hasher.as_mut(),
            };
            if let Err(e) = seal_file(to, &mut sealer, &keys, &full_tx, empty_rx) {
                let _ = full_tx.blocking_send(Err(e));
            }
            (sealer, hasher)
        });
        let result = self.write_sealed(&mut full_rx, &empty_tx, len, stall).await;
        drop(full_rx);
        drop(empty_tx);
        let hasher = match sealer_job.await {
            Ok((s, h)) => {
                self.sealer = Some(s);
                h
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        result.map(|()| hasher.map(|h| *h.finalize().as_bytes()))
    }

    /// Writes what the sealing thread sends until it is done (or failed: its error is
    /// the last item), handing data buffers back to it; checks that all `len` bytes went.
    async fn write_sealed(
        &mut self,
        full_rx: &mut mpsc::Receiver<io::Result<Sealed>>,
        empty_tx: &std::sync::mpsc::SyncSender<Vec<u8>>,
        len: u64,
        stall: Duration,
    ) -> io::Result<()> {
        let mut sent = 0u64;
        while let Some(item) = timeout(stall, full_rx.recv())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "disk read stalled"))?
        {
            let sealed = item?;
            timeout(stall, self.sock.write_all(&sealed.buf[..sealed.len]))
                .await
                .map_err(crate::transfer::stopped_reading)??;
            sent += sealed.payload;
            if sealed.payload > 0 {
                // A data buffer (not a key update): reuse it.
                let _ = empty_tx.try_send(sealed.buf);
            }
        }
        if sent != len {
            return Err(io::Error::other("file reader stopped"));
        }
        Ok(())
    }
}

/// Blocking body of [`TlsStream::send_file`].
fn seal_file(
    to: Sending<'_>,
    sealer: &mut Sealer,
    keys: &Keys,
    full_tx: &mpsc::Sender<io::Result<Sealed>>,
    empty_rx: std::sync::mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let Sending {
        file,
        offset,
        len,
        mut hasher,
    } = to;
    let mut pos = offset;
    let end = offset.saturating_add(len);
    let mut allocated = 0;
    while pos < end {
        let mut buf = if allocated < SEND_BUFFERS {
            allocated += 1;
            vec![0u8; SEND_RECORDS * STRIDE]
        } else {
            match empty_rx.recv() {
                Ok(b) => b,
                Err(_) => return Ok(()), // the writer gave up; it reports why
            }
        };
        let want = (end - pos).min((SEND_RECORDS * MAX_PAYLOAD) as u64) as usize;
        let records = want.div_ceil(MAX_PAYLOAD);
        if sealer.wants_key_update(records as u64) {
            let update = key_update(sealer, keys)?;
            if full_tx.blocking_send(Ok(update)).is_err() {
                return Ok(());
            }
        }
        fill_and_seal(file, &mut buf, pos, want, sealer, hasher.as_deref_mut())?;
        pos += want as u64;
        let sealed = Sealed {
            buf,
            len: record::sealed_len(want),
            payload: want as u64,
        };
        if full_tx.blocking_send(Ok(sealed)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Seals our key update under the old key and switches `sealer` to the next one.
fn key_update(sealer: &mut Sealer, keys: &Keys) -> io::Result<Sealed> {
    let mut ku = Vec::new();
    sealer.seal_to(&KEY_UPDATE, Content::Handshake, &mut ku)?;
    next_tx(keys, sealer)?;
    let len = ku.len();
    Ok(Sealed {
        buf: ku,
        len,
        payload: 0,
    })
}

/// Reads `want` bytes of `file` from `pos` into the records of `buf` and seals them, a
/// cache-sized step at a time: read, then hash and seal while the bytes are hot.
fn fill_and_seal(
    file: &File,
    buf: &mut [u8],
    pos: u64,
    want: usize,
    sealer: &mut Sealer,
    mut hasher: Option<&mut blake3::Hasher>,
) -> io::Result<()> {
    let records = want.div_ceil(MAX_PAYLOAD);
    for first in (0..records).step_by(SEAL_STEP) {
        let last = records.min(first + SEAL_STEP);
        let from = first * MAX_PAYLOAD;
        let bytes = want.min(last * MAX_PAYLOAD) - from;
        read_into_records(file, &mut buf[first * STRIDE..], pos + from as u64, bytes)?;
        for i in first..last {
            let payload = (want - i * MAX_PAYLOAD).min(MAX_PAYLOAD);
            let at = i * STRIDE;
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[at + record::HEADER_LEN..at + record::HEADER_LEN + payload]);
            }
            sealer.seal_in_place(
                &mut buf[at..at + payload + OVERHEAD],
                payload,
                Content::ApplicationData,
            )?;
        }
    }
    Ok(())
}

/// Most slices one `preadv` takes (Linux's `IOV_MAX`).
const MAX_IOV: usize = 1024;

/// Fills the payload slots of the records in `buf` (stride `MAX_PAYLOAD + OVERHEAD`,
/// payload after each 5-byte header) with `want` bytes of `file` from `pos`, using
/// `preadv` so one syscall fills many records.
fn read_into_records(file: &File, buf: &mut [u8], pos: u64, want: usize) -> io::Result<()> {
    let mut done = 0;
    while done < want {
        let mut iov = payload_slots(buf, done, want);
        match crate::sys::pread_vectored(file, &mut iov, pos + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The payload bytes `from..want` of the records in `buf`, as slices for `preadv` (at
/// most [`MAX_IOV`]). Each record's slot is its own slice; they never overlap.
fn payload_slots(buf: &mut [u8], from: usize, want: usize) -> Vec<IoSliceMut<'_>> {
    let mut iov = Vec::with_capacity(SEND_RECORDS.min(MAX_IOV));
    let mut at = from;
    for (rec, slot) in buf.chunks_mut(STRIDE).enumerate().skip(from / MAX_PAYLOAD) {
        if at >= want || iov.len() == MAX_IOV {
            break;
        }
        let within = at - rec * MAX_PAYLOAD;
        let n = (want - at).min(MAX_PAYLOAD - within);
        let start = record::HEADER_LEN + within;
        iov.push(IoSliceMut::new(&mut slot[start..start + n]));
        at += n;
    }
    iov
}

#[cfg(test)]
mod tests;
