//! A request for a folder (`photos/`) or for one file in it (`photos/a/b.jpg`): the
//! folder is looked up among the offered ones, its tree stream produced on a blocking
//! thread (`transfer::tree::serve`) and written here, one connection for the whole tree.

use crate::client::messages as msg;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use fileapp_core::tree::stream::START_LEN;
use fileapp_core::tree::{TreeStart, split_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::refuse::Refusal;
use super::{Conn, PeerStream, describe_io};
use crate::transfer::header::{Request, Response, Status};
use crate::transfer::tree::serve::{Chunk, Stopped, open_checked, produce};
use crate::transfer::tree::{Folder, open_root};
use crate::transfer::{printable, stopped_reading};

/// Buffers in flight between the reading thread and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;

impl Conn {
    /// Whether `req` names a folder or a file in one; if so, it is answered here.
    pub(super) async fn serve_tree_request<S: PeerStream>(
        &self,
        stream: &mut S,
        req: &Request,
        rest: Vec<u8>,
        who: &str,
    ) -> bool {
        let Some((folder, path)) = split_request(&req.file) else {
            return false;
        };
        let shown = printable(&req.file);
        let found = {
            let lib = self.lib.read().unwrap_or_else(|p| p.into_inner());
            lib.folder(folder).zip(lib.dir().map(|d| d.to_path_buf()))
        };
        let not_offered = |m: String| Refusal {
            status: Status::NotOffered,
            message: m,
            reason: "not offered".into(),
        };
        let Some((f, dir)) = found else {
            let r = not_offered(format!("'{shown}' is not offered"));
            self.refuse(stream, &shown, who, r).await;
            return true;
        };
        let bare = folder.trim_end_matches('/').to_string();
        let root = match tokio::task::spawn_blocking(move || open_root(&dir, &bare)).await {
            Ok(Ok(r)) => r,
            _ => {
                let r = not_offered(format!("'{shown}' is no longer there"));
                self.refuse(stream, &shown, who, r).await;
                return true;
            }
        };
        match path {
            None => self.send_tree(stream, req, rest, who, f, root).await,
            Some(p) => match f.find(p) {
                Some((i, e)) if e.is_file() => {
                    self.send_member(stream, req, who, &f, i, root).await
                }
                _ => {
                    let r = not_offered(format!("'{shown}' is not a file of the folder"));
                    self.refuse(stream, &shown, who, r).await;
                }
            },
        }
        true
    }

    /// The whole tree: read the requester's start, answer, stream.
    async fn send_tree<S: PeerStream>(
        &self,
        stream: &mut S,
        req: &Request,
        mut rest: Vec<u8>,
        who: &str,
        folder: Arc<Folder>,
        root: std::fs::File,
    ) {
        let shown = printable(&folder.name);
        let start = timeout(self.cfg.header_timeout, async {
            while rest.len() < START_LEN {
                let mut more = [0u8; START_LEN];
                let n = stream.read(&mut more).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                rest.extend_from_slice(&more[..n]);
            }
            TreeStart::decode(&rest[..START_LEN])
                .ok()
                .flatten()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad folder start"))
        })
        .await;
        let Ok(Ok(start)) = start else {
            return self.notice(msg::no_request_within(self.ip(), self.cfg.header_timeout));
        };
        if start == TreeStart::LISTING {
            return self.send_listing(stream, req, who, folder).await;
        }
        // Resume only within *this* version of the folder.
        let resume = (req.expected_hash == Some(folder.hash)).then_some(start);
        let resp = Response {
            status: Status::Ok,
            message: String::new(),
            size: folder.header.bytes,
            hash: folder.hash,
            start: 0,
        };
        let Ok(head) = resp.encode() else { return };
        self.notice(msg::transferring(&shown));
        let t0 = Instant::now();
        match self.pump(stream, &head, folder.clone(), root, resume).await {
            Ok(()) => {
                self.notice(msg::transferred(&shown));
                let (files, bytes) = (folder.header.files, folder.header.bytes);
                self.notice(msg::tree_sent_stats(&shown, files, bytes, t0.elapsed()));
            }
            Err(e) => self.notice(msg::transfer_failed(&shown, who, describe_io(&e))),
        }
    }

    /// Writes the answer, then what the producer thread makes, until it is done.
    async fn pump<S: PeerStream>(
        &self,
        stream: &mut S,
        head: &[u8],
        folder: Arc<Folder>,
        root: std::fs::File,
        resume: Option<TreeStart>,
    ) -> io::Result<()> {
        let stall = self.cfg.stall_timeout;
        let (tx, mut rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let (back, recycle) = std::sync::mpsc::channel();
        let producer =
            tokio::task::spawn_blocking(move || produce(folder, root, resume, tx, recycle));
        let mut first = Some(head.to_vec());
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Chunk::Bytes(mut b) => {
                    if let Some(mut h) = first.take() {
                        // The answer and the first buffer go out together.
                        h.extend_from_slice(&b);
                        b = h;
                    }
                    timeout(stall, stream.write_all(&b))
                        .await
                        .map_err(stopped_reading)??;
                    b.clear();
                    let _ = back.send(b);
                }
                Chunk::File { file, start, len } => {
                    stream.send_file(&file, start, len, stall, false).await?;
                }
            }
        }
        timeout(stall, stream.flush())
            .await
            .map_err(stopped_reading)??;
        match producer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Stopped::Aborted(why))) => Err(io::Error::other(why)),
            Ok(Err(Stopped::Gone)) => Err(io::Error::other("the connection went away")),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// One file of the folder, answered as a single-file request is.
    async fn send_member<S: PeerStream>(
        &self,
        stream: &mut S,
        req: &Request,
        who: &str,
        folder: &Folder,
        i: usize,
        root: std::fs::File,
    ) {
        let shown = printable(&req.file);
        let entry = folder.entries[i].clone();
        let stamp = folder.stamps[i];
        let path = entry.path.clone();
        let opened = tokio::task::spawn_blocking(move || open_checked(&root, &path, stamp)).await;
        let refused = match opened {
            Ok(Ok(f)) => Ok(f),
            Ok(Err(why)) => Err(why),
            Err(_) => Err("internal error while opening the file".to_string()),
        };
        let refused = refused.and_then(|f| {
            if req.owner_hashes && !stream.authenticated() {
                return Err("owner hashing needs an encrypted connection".into());
            }
            Ok(f)
        });
        let file = match refused {
            Ok(f) => f,
            Err(why) => {
                let r = Refusal {
                    status: Status::Error,
                    message: why.clone(),
                    reason: why,
                };
                return self.refuse(stream, &shown, who, r).await;
            }
        };
        let start = if req.expected_hash == Some(entry.hash) && req.offset <= entry.size {
            req.offset
        } else {
            0
        };
        if req.if_match && req.expected_hash != Some(entry.hash) {
            self.notice(msg::copy_differs(&shown, who));
            let resp = Response {
                status: Status::Changed,
                message: "the file differs from the expected version".into(),
                size: entry.size,
                hash: entry.hash,
                start: 0,
            };
            if let Ok(bytes) = resp.encode() {
                let _ = timeout(self.cfg.stall_timeout, stream.write_all(&bytes)).await;
            }
            return;
        }
        let resp = Response {
            status: Status::Ok,
            message: String::new(),
            size: entry.size,
            hash: entry.hash,
            start,
        };
        let Ok(head) = resp.encode() else { return };
        self.notice(msg::transferring(&shown));
        let t0 = Instant::now();
        let stall = self.cfg.stall_timeout;
        let sent = async {
            timeout(stall, stream.write_all(&head))
                .await
                .map_err(stopped_reading)??;
            let len = entry.size - start;
            let owner = req.owner_hashes;
            if let Some(h) = stream.send_file(&file, start, len, stall, owner).await? {
                timeout(stall, stream.write_all(&h))
                    .await
                    .map_err(stopped_reading)??;
            }
            timeout(stall, stream.flush())
                .await
                .map_err(stopped_reading)?
        };
        match sent.await {
            Ok(()) => {
                self.notice(msg::transferred(&shown));
                let n = entry.size - start;
                self.notice(msg::sent_stats(&shown, n, start, t0.elapsed()));
            }
            Err(e) => self.notice(msg::transfer_failed(&shown, who, describe_io(&e))),
        }
    }
}
