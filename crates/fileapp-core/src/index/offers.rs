//! Offers and deregistration: a session adds files to its offered set (set union; a file
//! offered again with another size or hash is updated) or goes offline, keeping its
//! offers hidden until the name registers again. Duplicates are answered, not applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::proto::{FileEntry, Reject, ReqId, Token};
use crate::store::{FileRow, StoreOp};

use super::{FileState, Index};

impl Index {
    pub(super) fn on_offer(
        &mut self,
        now: Instant,
        src: SocketAddr,
        req: ReqId,
        token: Token,
        files: Vec<FileEntry>,
    ) {
        let Some(id) = self
            .session(src, token)
            .filter(|&id| self.owners[id].online)
        else {
            return self.reject(src, req, Reject::NotRegistered);
        };
        if !files.iter().all(|f| crate::tree::valid_offer_name(&f.name)) {
            return self.reject(src, req, Reject::InvalidName);
        }
        let o = &mut self.owners[id];
        o.last_seen = now;
        // New names, and names whose content changed since their offer; the rest are
        // duplicates, answered but not applied.
        let mut changed: BTreeMap<String, FileEntry> = BTreeMap::new();
        for f in files {
            let same = o
                .files
                .get(&f.name)
                .is_some_and(|s| s.size == f.size && s.hash == f.hash && s.files == f.files);
            if !same {
                changed.insert(f.name.clone(), f);
            }
        }
        let added = changed.keys().filter(|n| !o.files.contains_key(n)).count();
        if self.files_full(id, added) {
            return self.reject(src, req, Reject::LimitExceeded);
        }
        if !changed.is_empty() {
            let v = self.bump();
            let o = &mut self.owners[id];
            let mut rows = Vec::with_capacity(changed.len());
            let new_names = changed.keys().filter(|n| !o.files.contains_key(n));
            o.files.reserve(added, new_names.map(|n| n.len()).sum());
            let state = |f: &FileEntry| FileState {
                ver: v,
                size: f.size,
                hash: f.hash,
                files: f.files,
            };
            o.files
                .insert_all(changed.iter().map(|(name, f)| (name.as_str(), state(f))));
            for (name, f) in changed {
                rows.push(FileRow {
                    name,
                    ver: v,
                    size: f.size,
                    hash: f.hash,
                    files: f.files,
                });
            }
            self.ops.push(StoreOp::Files {
                owner: o.name.clone(),
                files: rows,
            });
            self.unsign(id, v);
            self.set_latest(id, v);
            let signs = self.owners[id].key.is_some();
            self.schedule_push_signed_soon(now, signs);
        }
        self.ack(src, req);
    }

    pub(super) fn on_dereg(&mut self, now: Instant, src: SocketAddr, req: ReqId, token: Token) {
        let Some(id) = self.session(src, token) else {
            return self.reject(src, req, Reject::NotRegistered);
        };
        if self.owners[id].online {
            self.go_offline(id);
            self.schedule_push(now);
        }
        // Already offline: the ACK was lost, answer again.
        self.ack(src, req);
    }
}
