//! The client's copy of the index: owners online and the files they offer, at a version.
//! Deltas arrive in parts ([`crate::proto::Message::Table`]) and are applied atomically,
//! only when complete and only if they move the table forward.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::identity;
use crate::proto::{Item, RecordSig};
use crate::records::statement_bytes;

/// Whether an owner's record, as the table shows it, is what the owner signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Its signature verifies under its key: port, advertised address and every file
    /// (size, hash) are the owner's own word.
    Verified,
    /// No signature yet (it just changed and is being signed), or no key.
    #[default]
    Unsigned,
    /// The signature does not verify, or it is older than one seen before: someone
    /// (the server, or the path to it) altered the record. Never used for transfers.
    Forged,
}

/// One online owner as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerView {
    pub ip: IpAddr,
    pub tcp_port: u16,
    /// The key the owner's name is bound to: its TLS certificate must carry it.
    pub key: Option<[u8; 32]>,
    /// File name -> (size, BLAKE3 hash) as offered.
    pub files: BTreeMap<String, FileMeta>,
    /// The owner's signature over all of the above but `ip` (unless advertised).
    pub record: Option<RecordSig>,
    /// What checking `record` found.
    pub trust: Trust,
    /// What the server judged of its reachability (unsigned: the server's word).
    pub reach: crate::reach::Reach,
}

/// Size and hash of an offered file, as its owner announced them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub size: u64,
    pub hash: [u8; 32],
    /// Files in a folder; 0 for a file.
    pub files: u64,
}

/// One row of `list`: a file and an online owner that offers it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Row {
    pub file: String,
    pub owner: String,
    pub ip: IpAddr,
    pub tcp_port: u16,
    pub size: u64,
    /// BLAKE3 of the file as offered, hex.
    pub hash: String,
    /// The owner's public key, hex (64 digits), if its name is bound to one.
    pub key: Option<String>,
    /// The owner's signed record verified: these are its own port, size and hash.
    pub verified: bool,
    /// A folder's file count (`file` ends with `/`); 0 for a file.
    pub files: u64,
    /// The owner's reachability as the server judged it (`reachable`, `nat-cone`,
    /// `nat-symmetric`, `nat`, `untested`).
    pub reach: &'static str,
}

#[derive(Debug)]
struct Assembly {
    from: u64,
    to: u64,
    parts: Vec<Option<Vec<Item>>>,
    missing: usize,
}

/// What became of one received table part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartOutcome {
    /// Stored; more parts are needed.
    Pending,
    /// The delta was complete and is now applied.
    Applied,
    /// Old, duplicate, or not applicable (a gap): nothing changed.
    Ignored,
}

/// The local table.
#[derive(Debug, Default)]
pub struct ClientTable {
    version: u64,
    owners: BTreeMap<String, OwnerView>,
    assembly: Option<Assembly>,
    /// Highest record number verified per name, kept for the whole process: an older
    /// record shown later is a replay.
    seen_seq: HashMap<String, u64>,
    /// Records that failed verification.
    forged: u64,
}

impl ClientTable {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn owner(&self, name: &str) -> Option<&OwnerView> {
        self.owners.get(name)
    }

    /// Every online owner, by name.
    pub fn owners(&self) -> impl Iterator<Item = (&str, &OwnerView)> {
        self.owners.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Forgets the table (a new session receives a full snapshot); what was verified
    /// before is remembered.
    pub fn reset(&mut self) {
        self.version = 0;
        self.owners.clear();
        self.assembly = None;
    }

    /// Forgets the version but keeps the rows: another server of the deployment will
    /// send a snapshot (its own numbering), which replaces them; until then they are
    /// still the best we know.
    pub fn rebase(&mut self) {
        self.version = 0;
        self.assembly = None;
    }

    /// Records that failed verification since the process started.
    pub fn forged(&self) -> u64 {
        self.forged
    }

    /// Every (file, owner) row, sorted by file name then owner.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .owners
            .iter()
            .flat_map(|(owner, v)| {
                v.files.iter().map(move |(f, m)| Row {
                    file: f.clone(),
                    owner: owner.clone(),
                    ip: v.ip,
                    tcp_port: v.tcp_port,
                    size: m.size,
                    hash: hex::encode(m.hash),
                    key: v.key.map(hex::encode),
                    verified: v.trust == Trust::Verified,
                    files: m.files,
                    reach: v.reach.token(),
                })
            })
            .collect();
        rows.sort();
        rows
    }

    /// Whether the part should be acknowledged: everything we hold or stored is acked, so
    /// the server stops resending it; a part we cannot use (a gap) is not.
    pub fn handle_part(
        &mut self,
        from: u64,
        to: u64,
        part: u16,
        parts: u16,
        items: Vec<Item>,
    ) -> (PartOutcome, bool) {
        if parts == 0 || part >= parts || from >= to {
            return (PartOutcome::Ignored, false);
        }
        // A snapshot (from 0) replaces whatever we hold; a delta must start at or before
        // our version and lead beyond it.
        if from != 0 && (from > self.version || to <= self.version) {
            return (PartOutcome::Ignored, to <= self.version);
        }
        if from == 0 && to <= self.version && self.assembly.is_none() && self.version != 0 {
            // A snapshot no newer than what we hold, e.g. a retransmission after we applied.
            return (PartOutcome::Ignored, true);
        }
        let fresh = match &self.assembly {
            Some(a) => a.from != from || a.to != to || a.parts.len() != parts as usize,
            None => true,
        };
        if fresh {
            if let Some(a) = &self.assembly
                && a.to > to
            {
                return (PartOutcome::Ignored, false); // we are assembling something newer
            }
            self.assembly = Some(Assembly {
                from,
                to,
                parts: vec![None; parts as usize],
                missing: parts as usize,
            });
        }
        let a = self.assembly.as_mut().expect("set above");
        let slot = &mut a.parts[part as usize];
        if slot.is_none() {
            *slot = Some(items);
            a.missing -= 1;
        }
        if a.missing > 0 {
            return (PartOutcome::Pending, true);
        }
        let a = self.assembly.take().expect("set above");
        if a.from == 0 {
            self.owners.clear();
        }
        let items: Vec<Item> = a.parts.into_iter().flatten().flatten().collect();
        self.apply(items);
        self.version = a.to;
        (PartOutcome::Applied, true)
    }

    fn apply(&mut self, items: Vec<Item>) {
        // Owners first: a file item for an owner that goes offline in the same delta
        // must not resurrect it.
        let (owners, files): (Vec<Item>, Vec<Item>) = items
            .into_iter()
            .partition(|i| matches!(i, Item::Owner { .. }));
        let touched: BTreeSet<String> = owners
            .iter()
            .chain(&files)
            .map(|i| match i {
                Item::Owner { name, .. } => name.clone(),
                Item::File { owner, .. }
                | Item::Record { owner, .. }
                | Item::Reach { owner, .. } => owner.clone(),
            })
            .collect();
        for item in owners {
            if let Item::Owner {
                name,
                ip,
                tcp_port,
                online,
                key,
            } = item
            {
                if online {
                    let v = self.owners.entry(name).or_insert(OwnerView {
                        ip,
                        tcp_port,
                        key,
                        files: BTreeMap::new(),
                        record: None,
                        trust: Trust::Unsigned,
                        reach: Default::default(),
                    });
                    v.ip = ip;
                    v.tcp_port = tcp_port;
                    v.key = key;
                } else {
                    self.owners.remove(&name);
                }
            }
        }
        for item in files {
            match item {
                Item::File {
                    owner,
                    file,
                    size,
                    hash,
                    files,
                } => {
                    if let Some(v) = self.owners.get_mut(&owner) {
                        v.files.insert(file, FileMeta { size, hash, files });
                    }
                }
                Item::Record { owner, record } => {
                    if let Some(v) = self.owners.get_mut(&owner) {
                        v.record = record;
                    }
                }
                Item::Reach { owner, tcp, nat } => {
                    if let Some(v) = self.owners.get_mut(&owner) {
                        v.reach = crate::reach::Reach { tcp, nat };
                    }
                }
                Item::Owner { .. } => {}
            }
        }
        for name in touched {
            self.verify(&name);
        }
    }

    /// Checks `name`'s record against everything the table shows of it.
    fn verify(&mut self, name: &str) {
        let Some(v) = self.owners.get_mut(name) else {
            return;
        };
        let (Some(key), Some(rec)) = (v.key, &v.record) else {
            v.trust = Trust::Unsigned;
            return;
        };
        let seen = self.seen_seq.get(name).copied().unwrap_or(0);
        let good = rec.seq >= seen
            && statement_bytes(
                name,
                &key,
                v.tcp_port,
                rec.advertise,
                rec.seq,
                v.files
                    .iter()
                    .map(|(f, m)| (f.as_str(), m.size, &m.hash, m.files)),
            )
            .is_ok_and(|m| identity::verify(&key, &m, &rec.sig));
        if good {
            v.trust = Trust::Verified;
            if let Some(ip) = rec.advertise {
                // The owner's own word for where to reach it.
                v.ip = ip;
            }
            self.seen_seq.insert(name.to_string(), rec.seq);
        } else {
            v.trust = Trust::Forged;
            self.forged += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn owner(name: &str, online: bool) -> Item {
        Item::Owner {
            name: name.into(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tcp_port: 5000,
            online,
            key: None,
        }
    }
    fn file(o: &str, f: &str) -> Item {
        Item::File {
            owner: o.into(),
            file: f.into(),
            size: 1,
            hash: [0; 32],
            files: 0,
        }
    }

    #[test]
    fn applies_only_complete_deltas() {
        let mut t = ClientTable::default();
        assert_eq!(
            t.handle_part(0, 3, 1, 2, vec![file("B", "foo")]),
            (PartOutcome::Pending, true)
        );
        assert!(t.rows().is_empty());
        assert_eq!(
            t.handle_part(0, 3, 0, 2, vec![owner("B", true)]),
            (PartOutcome::Applied, true)
        );
        assert_eq!(t.version(), 3);
        assert_eq!(t.rows().len(), 1);
        assert_eq!(t.rows()[0].file, "foo");
    }

    #[test]
    fn older_update_never_overwrites_newer() {
        let mut t = ClientTable::default();
        t.handle_part(0, 5, 0, 1, vec![owner("B", true), file("B", "new")]);
        // A late delta 2->4 and a late snapshot 0->4 change nothing.
        assert_eq!(
            t.handle_part(2, 4, 0, 1, vec![owner("B", false)]),
            (PartOutcome::Ignored, true)
        );
        assert_eq!(
            t.handle_part(0, 4, 0, 1, vec![owner("C", true)]),
            (PartOutcome::Ignored, true)
        );
        assert_eq!(t.version(), 5);
        assert_eq!(t.rows().len(), 1);
    }

    #[test]
    fn gap_is_not_applied_nor_acked() {
        let mut t = ClientTable::default();
        t.handle_part(0, 2, 0, 1, vec![owner("B", true)]);
        assert_eq!(
            t.handle_part(4, 6, 0, 1, vec![file("B", "x")]),
            (PartOutcome::Ignored, false)
        );
        assert_eq!(t.version(), 2);
    }

    #[test]
    fn offline_owner_disappears_and_duplicate_parts_count_once() {
        let mut t = ClientTable::default();
        t.handle_part(
            0,
            2,
            0,
            1,
            vec![owner("B", true), file("B", "a"), owner("C", true)],
        );
        assert_eq!(
            t.handle_part(2, 3, 0, 2, vec![owner("B", false)]),
            (PartOutcome::Pending, true)
        );
        assert_eq!(
            t.handle_part(2, 3, 0, 2, vec![owner("B", false)]),
            (PartOutcome::Pending, true)
        );
        assert_eq!(
            t.handle_part(2, 3, 1, 2, vec![file("B", "a")]),
            (PartOutcome::Applied, true)
        );
        assert!(t.owner("B").is_none());
        assert!(t.owner("C").is_some());
        assert!(t.rows().is_empty());
    }

    #[test]
    fn rows_sorted_by_file_then_owner() {
        let mut t = ClientTable::default();
        t.handle_part(
            0,
            1,
            0,
            1,
            vec![
                owner("C", true),
                owner("B", true),
                file("C", "foo"),
                file("B", "foo"),
                file("B", "bar"),
            ],
        );
        let r: Vec<(String, String)> = t.rows().into_iter().map(|r| (r.file, r.owner)).collect();
        assert_eq!(
            r,
            vec![
                ("bar".into(), "B".into()),
                ("foo".into(), "B".into()),
                ("foo".into(), "C".into())
            ]
        );
    }

    #[test]
    fn malformed_part_numbers_are_ignored() {
        let mut t = ClientTable::default();
        assert_eq!(t.handle_part(0, 1, 3, 2, vec![]).0, PartOutcome::Ignored);
        assert_eq!(t.handle_part(0, 1, 0, 0, vec![]).0, PartOutcome::Ignored);
        assert_eq!(t.handle_part(5, 5, 0, 1, vec![]).0, PartOutcome::Ignored);
    }

    /// The budget: a client joining a table of 10,000 owners with 10 files each
    /// verifies every record within 1 s of one core. Ignored in the suite (a timing);
    /// run with `cargo test --release -p fileapp-core --lib ten_thousand -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore]
    fn ten_thousand_owners_with_ten_files_verify_within_a_second() {
        use crate::identity::Identity;
        let id = Identity::generate().unwrap();
        let key = id.public_key();
        let mut items = Vec::new();
        for i in 0..10_000u32 {
            let name = format!("owner-{i}");
            items.push(Item::Owner {
                name: name.clone(),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                tcp_port: 1401,
                online: true,
                key: Some(key),
            });
            let files: Vec<(String, u64, [u8; 32])> = (0..10u8)
                .map(|f| (format!("file-{f:02}"), f as u64 * 1000, [f; 32]))
                .collect();
            let m = statement_bytes(
                &name,
                &key,
                1401,
                None,
                7,
                files.iter().map(|(n, s, h)| (n.as_str(), *s, h, 0)),
            )
            .unwrap();
            for (file, size, hash) in files {
                items.push(Item::File {
                    owner: name.clone(),
                    file,
                    size,
                    hash,
                    files: 0,
                });
            }
            items.push(Item::Record {
                owner: name,
                record: Some(RecordSig {
                    seq: 7,
                    advertise: None,
                    sig: id.sign(&m).to_vec(),
                }),
            });
        }
        let mut t = ClientTable::default();
        let t0 = std::time::Instant::now();
        assert_eq!(t.handle_part(0, 1, 0, 1, items).0, PartOutcome::Applied);
        let took = t0.elapsed();
        println!("10,000 owners x 10 files applied and verified in {took:?}");
        assert!(t.owners().all(|(_, o)| o.trust == Trust::Verified));
        assert_eq!(t.rows().len(), 100_000);
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    }
}
