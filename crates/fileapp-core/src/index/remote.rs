//! Several servers on one database: owners whose sessions live on another server.
//!
//! The driver follows the shared change log and hands the index the current row of every
//! owner another server changed ([`Index::apply_remote`]), with that row's home server.
//! Such an owner is *remote*: it is in the table (pushed to local clients like any other)
//! but has no session here: its token is not accepted here, no local heartbeat timer
//! marks it offline, and its changes are not persisted again (its home server did).
//!
//! Rules, each the server that owns a session staying authoritative for its liveness:
//! - A row from elsewhere about a name whose session is live *here*: an online row with
//!   another token means the client registered elsewhere (it moved): the local session
//!   ends and the owner becomes remote. An offline row is stale (a sweep that lost a race
//!   with the move here): this server writes its own row again, so the log converges.
//! - A server that stops beating is down ([`crate::store::follow::Peers`]); the driver
//!   calls [`Index::home_down`] and its clients are marked offline here, and persisted,
//!   unless they reappear through another server first.
//! - A name whose row was deleted elsewhere, or written offline without its key (an
//!   operator released it), is released here.
//!
//! Remote changes take local table versions like any other change: each server numbers
//! its own table, and a client only ever follows one server's numbers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::store::{OwnerRecord, StoreOp};

use super::{FileState, Index, Owner, OwnerId};

impl Index {
    /// Applies the current row of an owner that server `home` wrote.
    pub fn apply_remote(&mut self, now: Instant, rec: OwnerRecord, home: &str) {
        let id = match self.by_name.get(&rec.row.name) {
            Some(&id) => id,
            None => self.add_remote(now, &rec),
        };
        if self.is_local_session(id) {
            if rec.row.online && rec.row.token != self.owners[id].token {
                self.end_local_session(id);
            } else if !rec.row.online && rec.row.key.is_none() && self.owners[id].key.is_some() {
                // An operator released the name through another server.
                self.end_local_session(id);
                return self.unbind(now, id);
            } else {
                return self.reassert(id);
            }
        }
        self.set_remote_state(now, id, rec);
        // After the state: going online clears the mark (see `set_online`).
        self.remote.insert(id, Arc::from(home));
    }

    /// A name another server deleted: released here too (offline, no key, no files).
    pub fn released_elsewhere(&mut self, now: Instant, name: &str) {
        if let Some(&id) = self.by_name.get(name) {
            if self.is_local_session(id) {
                self.end_local_session(id);
            }
            self.unbind(now, id);
        }
    }

    /// Server `home` is down: its clients that are still online here go offline, and
    /// this server persists that (every survivor may; the rows agree).
    pub fn home_down(&mut self, now: Instant, home: &str) -> usize {
        let ids: Vec<OwnerId> = self
            .remote
            .iter()
            .filter(|(id, h)| &***h == home && self.owners[**id].online)
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            self.go_offline(id);
        }
        if !ids.is_empty() {
            self.schedule_push(now);
        }
        ids.len()
    }

    /// Operator: frees `name` while running (offline, no key, no files), persisted.
    /// Returns whether the name existed.
    pub fn release_name(&mut self, now: Instant, name: &str) -> bool {
        let Some(&id) = self.by_name.get(name) else {
            return false;
        };
        if self.is_local_session(id) {
            self.end_local_session(id);
        }
        self.remote.remove(&id);
        self.unbind(now, id);
        self.ops.push(StoreOp::ClearFiles {
            owner: name.to_string(),
        });
        self.ops.push(StoreOp::Owner(self.row(id)));
        true
    }

    /// Operator: ends the session of `name` if it lives here (as if it went silent); its
    /// offers are kept. Returns whether there was one.
    pub fn drop_client(&mut self, now: Instant, name: &str) -> bool {
        let Some(&id) = self.by_name.get(name) else {
            return false;
        };
        if !self.is_local_session(id) {
            return false;
        }
        self.end_local_session(id);
        self.go_offline(id);
        self.schedule_push(now);
        true
    }

    /// Raises the table version to at least `floor` (a server sharing a database starts
    /// above any version it handed out before a restart: remote changes were numbered
    /// without being persisted).
    pub fn raise_version(&mut self, floor: u64) {
        self.version = self.version.max(floor);
    }

    /// Online owners whose sessions live here.
    pub fn local_online(&self) -> usize {
        self.online
            .iter()
            .filter(|id| !self.remote.contains_key(id))
            .count()
    }

    /// The home servers of remote owners, each with its count of online owners.
    pub fn remote_homes(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (id, home) in &self.remote {
            let n = out.entry(home.to_string()).or_insert(0);
            if self.owners[*id].online {
                *n += 1;
            }
        }
        out
    }

    /// Number of offered files of online owners.
    pub fn online_files(&self) -> usize {
        self.online
            .iter()
            .map(|&id| self.owners[id].files.len())
            .sum()
    }

    /// Is `name` a remote owner, and whose? (For tests and diagnostics.)
    pub fn home_of(&self, name: &str) -> Option<&str> {
        self.remote.get(self.by_name.get(name)?).map(|h| &**h)
    }

    pub(super) fn is_local_session(&self, id: OwnerId) -> bool {
        self.owners[id].online && !self.remote.contains_key(&id)
    }

    /// Forgets the local session of `id`: its token no longer works here.
    fn end_local_session(&mut self, id: OwnerId) {
        let token = self.owners[id].token;
        if self.by_token.get(&token) == Some(&id) {
            self.by_token.remove(&token);
        }
        self.listeners.remove(&id);
        self.cancel_push(id);
    }

    /// Writes this server's row (and files) of `id` again.
    fn reassert(&mut self, id: OwnerId) {
        let o = &self.owners[id];
        let files = o
            .files
            .iter()
            .map(|(name, f)| crate::store::FileRow {
                name: name.to_string(),
                ver: f.ver,
                size: f.size,
                hash: f.hash,
                files: f.files,
            })
            .collect();
        let owner = o.name.clone();
        self.ops.push(StoreOp::Owner(self.row(id)));
        self.ops.push(StoreOp::ClearFiles {
            owner: owner.clone(),
        });
        self.ops.push(StoreOp::Files { owner, files });
    }

    /// An unknown name, added offline with no files; its state follows.
    fn add_remote(&mut self, now: Instant, rec: &OwnerRecord) -> OwnerId {
        let v = self.bump();
        let row = &rec.row;
        let id = self.owners.len();
        self.owners.push(Owner {
            name: row.name.clone(),
            addr: row.addr,
            peer_ip: row.peer_ip,
            tcp_port: row.tcp_port,
            online: false,
            // The session lives on another server: no token of it works here.
            token: 0,
            token_at_rest: row.token,
            instance: row.instance,
            ver: v,
            latest: v,
            files: super::files::FileSet::new(),
            last_seen: now,
            verified: false,
            acked: 0,
            push: None,
            key: row.key,
            advertised: false,
            record: None,
            rec_ver: v,
            seq: 0,
            reach: row.reach,
            reach_ver: v,
        });
        self.by_name.insert(row.name.clone(), id);
        self.by_ver.insert(v, id);
        self.schedule_push(now);
        id
    }

    /// Makes `id` look as `rec` says, at a new version if anything a client sees changed.
    fn set_remote_state(&mut self, now: Instant, id: OwnerId, rec: OwnerRecord) {
        let row = rec.row;
        let files: BTreeMap<String, (u64, [u8; 32], u64)> = rec
            .files
            .into_iter()
            .map(|f| (f.name, (f.size, f.hash, f.files)))
            .collect();
        let o = &mut self.owners[id];
        o.token_at_rest = row.token;
        o.instance = row.instance;
        let header = o.addr != row.addr
            || o.peer_ip != row.peer_ip
            || o.tcp_port != row.tcp_port
            || o.online != row.online
            || o.key != row.key;
        let removed = o.files.keys().any(|k| !files.contains_key(k));
        let changed: Vec<String> = files
            .iter()
            .filter(|(k, (size, hash, count))| {
                o.files
                    .get(k)
                    .is_none_or(|f| f.size != *size || f.hash != *hash || f.files != *count)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let resigned = o.record != rec.record;
        let reach = o.reach != row.reach;
        let record = header || removed || !changed.is_empty() || resigned;
        if !record && !reach {
            return;
        }
        let v = self.bump();
        self.set_online(id, row.online);
        let o = &mut self.owners[id];
        if header || removed {
            // Clients replace an owner's files when its header changes.
            o.ver = v;
            o.addr = row.addr;
            o.peer_ip = row.peer_ip;
            o.tcp_port = row.tcp_port;
            o.key = row.key;
        }
        if removed {
            o.files.retain(|k, _| files.contains_key(k));
        }
        o.files.insert_all(changed.iter().map(|name| {
            let (size, hash, count) = files[name];
            let st = FileState {
                ver: v,
                size,
                hash,
                files: count,
            };
            (name.as_str(), st)
        }));
        // The owner's signature as its home server holds it (clients check it); a
        // change of reach alone leaves the record as clients have it.
        if record {
            o.advertised = rec.record.as_ref().is_some_and(|r| r.advertise.is_some());
            o.seq = o.seq.max(rec.record.as_ref().map_or(0, |r| r.seq));
            o.record = rec.record;
            o.rec_ver = v;
        }
        if reach {
            o.reach = row.reach;
            o.reach_ver = v;
        }
        self.set_latest(id, v);
        self.schedule_push(now);
    }

    /// Offline, no key, no files, at a new version; not persisted here.
    fn unbind(&mut self, now: Instant, id: OwnerId) {
        let v = self.bump();
        self.set_online(id, false);
        let o = &mut self.owners[id];
        o.key = None;
        o.files.clear();
        o.ver = v;
        self.set_latest(id, v);
        self.schedule_push(now);
    }
}

#[cfg(test)]
mod tests;
