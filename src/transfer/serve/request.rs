//! What a request gets: the file opened safely with a current hash, then either a
//! `Changed` answer (the requester's copy differs) or the `Ok` header, the file bytes
//! (from the resume offset) and, when the owner hashes, its hash; then the notices that
//! say how it went.

use crate::client::messages as msg;
use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::refuse::{Refusal, refusal_for};
use super::{Conn, PeerStream, describe_io};
use crate::proto::valid_file_name;
use crate::transfer::header::{Request, Response, Status};
use crate::transfer::library::{Stamp, hash_open_file, open_in_dir};
use crate::transfer::{printable, stopped_reading};

/// A file ready to be sent: open, with its current size and hash.
struct Ready {
    file: File,
    size: u64,
    hash: [u8; 32],
}

impl Conn {
    pub(super) async fn serve_request<S: PeerStream>(
        &self,
        stream: &mut S,
        req: &Request,
        who: &str,
    ) {
        let shown = printable(&req.file);
        let Some(ready) = self.answerable(stream, req, who, &shown).await else {
            return;
        };
        let (size, hash) = (ready.size, ready.hash);
        // Resume only from a prefix of *this* version of the file.
        let start = if req.expected_hash == Some(hash) && req.offset <= size {
            req.offset
        } else {
            0
        };
        let resp = Response {
            status: Status::Ok,
            message: String::new(),
            size,
            hash,
            start,
        };
        let Ok(head) = resp.encode() else { return };
        self.notice(msg::transferring(&shown));
        let t0 = Instant::now();
        let result = self
            .send_body(stream, &head, &ready, start, req.owner_hashes)
            .await;
        match result {
            Ok(()) => self.report_sent(&shown, size - start, start, t0.elapsed()),
            Err(e) => self.notice(msg::transfer_failed(&shown, who, describe_io(&e))),
        }
    }

    /// The file the request may have, or `None` once it was refused or answered
    /// `Changed` (with the notice given).
    async fn answerable<S: PeerStream>(
        &self,
        stream: &mut S,
        req: &Request,
        who: &str,
        shown: &str,
    ) -> Option<Ready> {
        if req.owner_hashes && !stream.authenticated() {
            let r = Refusal {
                status: Status::Error,
                message: "owner hashing needs an encrypted connection".into(),
                reason: "owner hashing needs an encrypted connection".into(),
            };
            self.refuse(stream, shown, who, r).await;
            return None;
        }
        let ready = match self.open_checked(&req.file).await {
            Ok(x) => x,
            Err(r) => {
                self.refuse(stream, shown, who, r).await;
                return None;
            }
        };
        if req.if_match && req.expected_hash != Some(ready.hash) {
            self.notice(msg::copy_differs(shown, who));
            let resp = Response {
                status: Status::Changed,
                message: "the file differs from the expected version".into(),
                size: ready.size,
                hash: ready.hash,
                start: 0,
            };
            if let Ok(bytes) = resp.encode() {
                let _ = timeout(self.cfg.stall_timeout, stream.write_all(&bytes)).await;
            }
            return None;
        }
        Some(ready)
    }

    /// Sends the answer `head`, the file from `start`, and (`owner_hashes`) the hash of
    /// what was sent, which must be the announced one.
    async fn send_body<S: PeerStream>(
        &self,
        stream: &mut S,
        head: &[u8],
        ready: &Ready,
        start: u64,
        owner_hashes: bool,
    ) -> io::Result<()> {
        let stall = self.cfg.stall_timeout;
        timeout(stall, stream.write_all(head))
            .await
            .map_err(stopped_reading)??;
        let sent = stream
            .send_file(&ready.file, start, ready.size - start, stall, owner_hashes)
            .await?;
        if let Some(sent) = sent {
            // The requester compares this with `hash`, as if it had hashed itself.
            timeout(stall, stream.write_all(&sent))
                .await
                .map_err(stopped_reading)??;
        }
        timeout(stall, stream.flush())
            .await
            .map_err(stopped_reading)??;
        match sent {
            Some(sent) if sent != ready.hash => {
                Err(io::Error::other("the file changed while it was being sent"))
            }
            _ => Ok(()),
        }
    }

    /// The notices of a transfer that went through: `sent` bytes from `start`.
    fn report_sent(&self, shown: &str, sent: u64, start: u64, elapsed: Duration) {
        self.notice(msg::transferred(shown));
        self.notice(msg::sent_stats(shown, sent, start, elapsed));
    }

    /// Looks the name up, opens it safely and makes sure the hash is current.
    async fn open_checked(&self, name: &str) -> Result<Ready, Refusal> {
        let not_offered = || Refusal {
            status: Status::NotOffered,
            message: format!("'{}' is not offered", printable(name)),
            reason: "not offered".into(),
        };
        if !valid_file_name(name) {
            return Err(not_offered());
        }
        let found = {
            let lib = self.lib.read().unwrap_or_else(|p| p.into_inner());
            lib.lookup(name)
        };
        let Some((dir, cached)) = found else {
            return Err(not_offered());
        };
        let owned = name.to_string();
        let job = tokio::task::spawn_blocking(move || {
            let (file, path, stamp) = open_in_dir(&dir, &owned)?;
            match cached {
                Some((s, h)) if s == stamp => Ok((file, stamp, h, false)),
                _ => {
                    let (stamp, hash) = hash_open_file(&file, &path, &owned)?;
                    Ok((file, stamp, hash, true))
                }
            }
        });
        let (file, stamp, hash, rehashed): (File, Stamp, _, _) = match job.await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(refusal_for(name, e)),
            Err(_) => {
                return Err(Refusal {
                    status: Status::Error,
                    message: "internal error".into(),
                    reason: "internal error while opening the file".into(),
                });
            }
        };
        if rehashed {
            let mut lib = self.lib.write().unwrap_or_else(|p| p.into_inner());
            lib.store_hash(name, stamp, hash);
            drop(lib);
            if cached.is_some() {
                self.notice(msg::rehashed(&printable(name)));
            }
        }
        Ok(Ready {
            file,
            size: stamp.size,
            hash,
        })
    }
}
