//! Serving a folder, the blocking half: walks the offered manifest and turns it into the
//! tree stream (`docs/PROTOCOL.md` §3.2). Small files are read straight into large
//! buffers behind their entries (many files per write); a large file is handed to the
//! connection to be sent as single files are (`PeerStream::send_file`). Every file is
//! opened below the folder and must still be the file that was hashed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use fileapp_core::tree::TreeStart;
use fileapp_core::tree::stream::{put_abort, put_end, put_entry, start_of};
use tokio::sync::mpsc;

use super::{Folder, open_beneath};
use crate::transfer::library::Stamp;

/// Files up to this size travel inside the buffers; larger ones are sent on their own.
pub const INLINE_MAX: u64 = 256 << 10;
/// A buffer is handed to the connection once it holds this much.
pub const FLUSH_AT: usize = 1 << 20;

/// What the connection sends next.
#[derive(Debug)]
pub enum Chunk {
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `start`.
    File {
        file: File,
        start: u64,
        len: u64,
    },
}

/// Why the stream stopped early: the text of the abort record sent, or the connection
/// went away.
#[derive(Debug)]
pub enum Stopped {
    Aborted(String),
    Gone,
}

/// Produces the stream of `folder` (opened at `root`) into `tx`, honouring `resume`.
/// Buffers come back through `recycle` to be reused. Blocking.
pub fn produce(
    folder: Arc<Folder>,
    root: File,
    resume: Option<TreeStart>,
    tx: mpsc::Sender<Chunk>,
    recycle: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), Stopped> {
    let fresh = || Vec::with_capacity(FLUSH_AT + INLINE_MAX as usize + 8192);
    let mut buf = fresh();
    buf.extend_from_slice(&folder.header.encode());
    let send = |c: Chunk| tx.blocking_send(c).map_err(|_| Stopped::Gone);
    for (i, e) in folder.entries.iter().enumerate() {
        let before = buf.len();
        put_entry(e, &mut buf);
        if e.is_file() {
            let start = start_of(resume, i as u64, e.size);
            let len = e.size - start;
            // An empty file is checked too: it may have been deleted.
            if len > 0 || e.size == 0 {
                let opened = open_checked(&root, &e.path, folder.stamps[i]);
                let file = match opened {
                    Ok(f) => f,
                    Err(why) => {
                        buf.truncate(before);
                        return abort(buf, why, &send);
                    }
                };
                if len <= INLINE_MAX {
                    let at = buf.len();
                    buf.resize(at + len as usize, 0);
                    if let Err(err) = file.read_exact_at(&mut buf[at..], start) {
                        buf.truncate(before);
                        let why = format!("cannot read '{}': {err}", shown(&e.path));
                        return abort(buf, why, &send);
                    }
                } else {
                    send(Chunk::Bytes(std::mem::replace(&mut buf, fresh())))?;
                    send(Chunk::File { file, start, len })?;
                    buf = recycle.try_recv().unwrap_or_else(|_| fresh());
                }
            }
        }
        if buf.len() >= FLUSH_AT {
            send(Chunk::Bytes(std::mem::take(&mut buf)))?;
            buf = recycle.try_recv().unwrap_or_else(|_| fresh());
            buf.clear();
        }
    }
    put_end(&mut buf);
    send(Chunk::Bytes(buf))
}

fn abort(
    mut buf: Vec<u8>,
    why: String,
    send: &impl Fn(Chunk) -> Result<(), Stopped>,
) -> Result<(), Stopped> {
    put_abort(&why, &mut buf);
    send(Chunk::Bytes(buf))?;
    Err(Stopped::Aborted(why))
}

fn shown(path: &str) -> String {
    crate::transfer::printable(path)
}

/// Opens the file at `path` below `root`; it must be the very file that was hashed
/// (same inode, size and mtime). The error is the line the requester gets.
pub(crate) fn open_checked(root: &File, path: &str, stamp: Option<Stamp>) -> Result<File, String> {
    let file = open_beneath(root, path, false).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("'{}' was deleted after the folder was offered", shown(path))
        }
        _ => format!("cannot open '{}': {e}", shown(path)),
    })?;
    let now = file.metadata().ok().map(|m| Stamp::of(&m));
    if now.is_none() || now != stamp {
        return Err(format!(
            "'{}' changed after the folder was offered (offer it again)",
            shown(path)
        ));
    }
    Ok(file)
}
