//! The versioned table: version numbers, the delta a client at version `v` lacks, the
//! rows persisted for an owner, and restoring the table from the store at start.
//!
//! Every change takes the next table version ([`Index::bump`]). Each owner records the
//! version at which its header last changed and each file the version at which it was
//! (re)offered; `by_ver` keys each owner under its highest one, so the delta since `v` is
//! a range scan over the current state, with no log.

use std::time::Instant;

use crate::proto::Item;
use crate::store::{OwnerRecord, OwnerRow};

use super::files::FileSet;
use super::{FileState, Index, Owner, OwnerId};

fn file_item(owner: &str, file: &str, st: &FileState) -> Item {
    Item::File {
        owner: owner.to_string(),
        file: file.to_string(),
        size: st.size,
        hash: st.hash,
        files: st.files,
    }
}

fn record_item(o: &Owner) -> Item {
    Item::Record {
        owner: o.name.clone(),
        record: o.record.clone(),
    }
}

impl Index {
    /// Loads what the store holds. Clients that were online stay online, with
    /// `offline_after` from `now` to come back by heartbeat.
    pub(super) fn restore(&mut self, records: Vec<OwnerRecord>, now: Instant) {
        for rec in records {
            let row = rec.row;
            let files: FileSet = rec
                .files
                .into_iter()
                .map(|f| {
                    let st = FileState {
                        ver: f.ver,
                        size: f.size,
                        hash: f.hash,
                        files: f.files,
                    };
                    (f.name, st)
                })
                .collect();
            let latest = files
                .iter()
                .map(|(_, f)| f.ver)
                .fold(row.ver.max(rec.record_ver), u64::max);
            self.version = self.version.max(latest);
            let id = self.owners.len();
            self.by_name.insert(row.name.clone(), id);
            self.restored.insert(row.token, id);
            self.by_ver.insert(latest, id);
            if row.online {
                self.online.insert(id);
                self.count_ip(row.addr.ip(), true);
            }
            self.owners.push(Owner {
                name: row.name,
                addr: row.addr,
                peer_ip: row.peer_ip,
                tcp_port: row.tcp_port,
                online: row.online,
                token: 0,
                token_at_rest: row.token,
                instance: row.instance,
                ver: row.ver,
                latest,
                files,
                last_seen: now,
                verified: false,
                acked: 0,
                push: None,
                key: row.key,
                advertised: rec.record.as_ref().is_some_and(|r| r.advertise.is_some()),
                seq: rec.record.as_ref().map_or(0, |r| r.seq),
                rec_ver: rec.record_ver.max(row.ver),
                record: rec.record,
                reach: Default::default(),
                reach_ver: 0,
            });
        }
    }

    /// Takes the next table version.
    pub(super) fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Files `id` under `v`, its new highest version.
    pub(super) fn set_latest(&mut self, id: OwnerId, v: u64) {
        let o = &mut self.owners[id];
        self.by_ver.remove(&o.latest);
        o.latest = v;
        self.by_ver.insert(v, id);
    }

    /// The owner's row as persisted.
    pub(super) fn row(&self, id: OwnerId) -> OwnerRow {
        let o = &self.owners[id];
        OwnerRow {
            name: o.name.clone(),
            addr: o.addr,
            peer_ip: o.peer_ip,
            tcp_port: o.tcp_port,
            online: o.online,
            token: o.token_at_rest,
            instance: o.instance,
            ver: o.ver,
            key: o.key,
            reach: o.reach,
        }
    }

    /// Everything a client at version `from` lacks, as absolute items. A delta from
    /// version 0 is a full snapshot of online owners.
    pub(super) fn delta(&self, from: u64) -> Vec<Item> {
        let mut items = Vec::new();
        for (_, &id) in self.by_ver.range(from + 1..) {
            let o = &self.owners[id];
            if o.ver > from {
                if from == 0 && !o.online {
                    continue; // a snapshot lists online owners only
                }
                items.push(Item::Owner {
                    name: o.name.clone(),
                    ip: o.peer_ip,
                    tcp_port: o.tcp_port,
                    online: o.online,
                    key: o.key,
                });
                if o.online {
                    // The header changed (came back, moved): the client may hold none
                    // of its files, so send them all, and the record's signature.
                    items.extend(o.files.iter().map(|(f, st)| file_item(&o.name, f, st)));
                    items.push(record_item(o));
                    items.push(o.reach_item());
                }
            } else if o.online {
                items.extend(
                    o.files
                        .iter()
                        .filter(|(_, st)| st.ver > from)
                        .map(|(f, st)| file_item(&o.name, f, st)),
                );
                if o.rec_ver > from {
                    items.push(record_item(o));
                }
                if o.reach_ver > from {
                    items.push(o.reach_item());
                }
            }
        }
        items
    }
}
