//! A listing request (`docs/PROTOCOL.md` §3.4): a folder request whose start is
//! [`TreeStart::LISTING`]. The owner answers with the manifest part of the tree stream
//! (header, every entry without bytes, end) and opens no file; only for the version of
//! the folder the requester names, so it can check what it gets against the table.

use std::sync::Arc;

use fileapp_core::tree::stream::{put_end, put_entry};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::{Conn, PeerStream, describe_io};
use crate::client::messages as msg;
use crate::transfer::header::{Request, Response, Status};
use crate::transfer::tree::Folder;
use crate::transfer::{printable, stopped_reading};

/// A write goes out once this much is gathered.
const WRITE_AT: usize = 1 << 20;

impl Conn {
    /// Answers a listing of `folder`: `Changed` (no stream) unless the request expects
    /// its current hash, else `Ok` and the manifest as a tree stream.
    pub(super) async fn send_listing<S: PeerStream>(
        &self,
        stream: &mut S,
        req: &Request,
        who: &str,
        folder: Arc<Folder>,
    ) {
        let shown = printable(&folder.name);
        let stall = self.cfg.stall_timeout;
        let current = req.expected_hash == Some(folder.hash);
        let resp = Response {
            status: if current { Status::Ok } else { Status::Changed },
            message: if current {
                String::new()
            } else {
                "the folder changed since it was listed".into()
            },
            size: folder.header.bytes,
            hash: folder.hash,
            start: 0,
        };
        let Ok(mut buf) = resp.encode() else { return };
        if !current {
            self.notice(msg::listing_stale(&shown, who));
            let _ = timeout(stall, stream.write_all(&buf)).await;
            return;
        }
        let sent = async {
            buf.extend_from_slice(&folder.header.encode());
            for e in &folder.entries {
                put_entry(e, &mut buf);
                if buf.len() >= WRITE_AT {
                    timeout(stall, stream.write_all(&buf))
                        .await
                        .map_err(stopped_reading)??;
                    buf.clear();
                }
            }
            put_end(&mut buf);
            timeout(stall, stream.write_all(&buf))
                .await
                .map_err(stopped_reading)??;
            timeout(stall, stream.flush())
                .await
                .map_err(stopped_reading)?
        };
        match sent.await {
            Ok(()) => self.notice(msg::listing_sent(&shown, who, folder.header.entries)),
            Err(e) => self.notice(msg::transfer_failed(&shown, who, describe_io(&e))),
        }
    }
}
