//! Owner records signed by their owners, so that the index server relays them but cannot
//! forge them.
//!
//! A client signs, with the Ed25519 key its name is bound to, one statement of
//! everything peers rely on: its name and key, its TCP port, the address it advertises
//! (if any), every file it offers with size and BLAKE3 hash, and a sequence number that
//! only grows. Clients verify each record against the key they know for that name, keep
//! the newest by sequence number, and drop (and count) one whose signature fails. The
//! one unsigned field of a table entry is the address the server observed: a wrong one
//! can only make a transfer fail (TLS pins the key), never redirect it.
//!
//! The statement's bytes (little-endian integers):
//!
//! ```text
//! "fileapp record v1\0" | seq u64 | name_len u8 | name | key [32] | tcp_port u16
//!   | advertise: 0 | 4 [4] | 6 [16]
//!   | file_count u32 | per file, sorted by name: name_len u8 | name | size u64 | hash [32]
//!     | files u64 (a folder's file count, 0 for a file)
//! ```

use std::net::IpAddr;

use crate::identity::{self, Identity, PublicKey};
use crate::proto::{FileEntry, MAX_FILE_NAME_LEN, MAX_NAME_LEN};

/// Domain separator: these bytes are never a registration or any other statement.
const CONTEXT: &[u8] = b"fileapp record v1\0";

/// What an owner states about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerStatement {
    pub name: String,
    pub key: PublicKey,
    pub tcp_port: u16,
    pub advertise: Option<IpAddr>,
    /// Grows with every new statement of this owner; a client keeps the highest.
    pub seq: u64,
    /// Sorted by name, no duplicates (see [`OwnerStatement::new`]).
    pub files: Vec<FileEntry>,
}

/// A statement and its owner's signature over [`OwnerStatement::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    pub statement: OwnerStatement,
    pub signature: [u8; 64],
}

/// Why a statement cannot be encoded or a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("name or file name too long for a record")]
    TooLong,
    #[error("the owner's signature does not verify")]
    BadSignature,
    #[error("signed with key {presented}, but {name} is known with key {expected}")]
    OtherKey {
        name: String,
        expected: String,
        presented: String,
    },
}

impl OwnerStatement {
    /// A statement with its files put in the canonical order (sorted by name, the last
    /// of duplicate names kept), so equal content always signs the same bytes.
    pub fn new(
        name: String,
        key: PublicKey,
        tcp_port: u16,
        advertise: Option<IpAddr>,
        seq: u64,
        mut files: Vec<FileEntry>,
    ) -> OwnerStatement {
        files.reverse();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files.dedup_by(|a, b| a.name == b.name);
        OwnerStatement {
            name,
            key,
            tcp_port,
            advertise,
            seq,
            files,
        }
    }

    /// The bytes that are signed.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        statement_bytes(
            &self.name,
            &self.key,
            self.tcp_port,
            self.advertise,
            self.seq,
            self.files
                .iter()
                .map(|f| (f.name.as_str(), f.size, &f.hash, f.files)),
        )
    }

    /// Signs the statement with `id`, which must hold the statement's key.
    pub fn sign(self, id: &Identity) -> Result<SignedRecord, RecordError> {
        let signature = id.sign(&self.encode()?);
        Ok(SignedRecord {
            statement: self,
            signature,
        })
    }
}

/// The signed bytes of an owner's statement, from its parts; `files` in name order with
/// no duplicates (as a `BTreeMap` keeps them), each `(name, size, hash, files)`. The one
/// encoder: the owner signs these bytes, the server and every client check them.
pub fn statement_bytes<'a>(
    name: &str,
    key: &PublicKey,
    tcp_port: u16,
    advertise: Option<IpAddr>,
    seq: u64,
    files: impl ExactSizeIterator<Item = (&'a str, u64, &'a [u8; 32], u64)>,
) -> Result<Vec<u8>, RecordError> {
    if name.len() > MAX_NAME_LEN {
        return Err(RecordError::TooLong);
    }
    let mut m =
        Vec::with_capacity(CONTEXT.len() + 8 + 1 + name.len() + 32 + 2 + 17 + 4 + files.len() * 48);
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&seq.to_le_bytes());
    m.push(name.len() as u8);
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(key);
    m.extend_from_slice(&tcp_port.to_le_bytes());
    identity::push_addr(&mut m, advertise);
    m.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for (f, size, hash, count) in files {
        if f.len() > MAX_FILE_NAME_LEN {
            return Err(RecordError::TooLong);
        }
        m.push(f.len() as u8);
        m.extend_from_slice(f.as_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(hash);
        m.extend_from_slice(&count.to_le_bytes());
    }
    Ok(m)
}

impl SignedRecord {
    /// Checks the signature against the key the record names.
    pub fn verify(&self) -> Result<(), RecordError> {
        let msg = self.statement.encode()?;
        if identity::verify(&self.statement.key, &msg, &self.signature) {
            Ok(())
        } else {
            Err(RecordError::BadSignature)
        }
    }

    /// Checks the signature, and that the record is signed by `known` (the key this
    /// client already knows for the name) when there is one.
    pub fn verify_for(&self, known: Option<&PublicKey>) -> Result<(), RecordError> {
        if let Some(k) = known
            && *k != self.statement.key
        {
            return Err(RecordError::OtherKey {
                name: self.statement.name.clone(),
                expected: identity::fingerprint(k),
                presented: identity::fingerprint(&self.statement.key),
            });
        }
        self.verify()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, n: u8) -> FileEntry {
        FileEntry {
            name: name.into(),
            size: n as u64 * 1000,
            hash: [n; 32],
            files: 0,
        }
    }

    fn statement(id: &Identity, seq: u64) -> OwnerStatement {
        OwnerStatement::new(
            "alice".into(),
            id.public_key(),
            1401,
            Some("192.0.2.7".parse().unwrap()),
            seq,
            vec![file("foo", 1), file("bar", 2)],
        )
    }

    #[test]
    fn a_signed_record_verifies_and_every_field_is_covered() {
        let id = Identity::generate().unwrap();
        let rec = statement(&id, 1).sign(&id).unwrap();
        rec.verify().unwrap();
        type Tamper = Box<dyn Fn(&mut OwnerStatement)>;
        let tamper: Vec<Tamper> = vec![
            Box::new(|s| s.name = "mallory".into()),
            Box::new(|s| s.tcp_port = 1402),
            Box::new(|s| s.advertise = None),
            Box::new(|s| s.advertise = Some("192.0.2.8".parse().unwrap())),
            Box::new(|s| s.seq = 2),
            Box::new(|s| s.files[0].hash[0] ^= 1),
            Box::new(|s| s.files[1].size += 1),
            Box::new(|s| s.files[0].files += 1),
            Box::new(|s| s.files[0].name = "baz".into()),
            Box::new(|s| {
                s.files.pop();
            }),
            Box::new(|s| s.files.push(file("zzz", 9))),
        ];
        for (i, t) in tamper.iter().enumerate() {
            let mut bad = rec.clone();
            t(&mut bad.statement);
            assert_eq!(
                bad.verify(),
                Err(RecordError::BadSignature),
                "change {i} went unnoticed"
            );
        }
    }

    #[test]
    fn another_key_cannot_sign_for_a_known_name() {
        let alice = Identity::generate().unwrap();
        let mallory = Identity::generate().unwrap();
        // Mallory's record for "alice" with her own key verifies on its own...
        let mut s = statement(&alice, 5);
        s.key = mallory.public_key();
        let forged = s.sign(&mallory).unwrap();
        forged.verify().unwrap();
        // ...but not for a client that knows alice's key.
        assert!(matches!(
            forged.verify_for(Some(&alice.public_key())),
            Err(RecordError::OtherKey { .. })
        ));
        // And a record claiming alice's key but signed by mallory fails outright.
        let mut claimed = forged.clone();
        claimed.statement.key = alice.public_key();
        assert_eq!(claimed.verify(), Err(RecordError::BadSignature));
    }

    #[test]
    fn the_order_files_were_offered_in_does_not_change_the_bytes() {
        let id = Identity::generate().unwrap();
        let a = OwnerStatement::new(
            "b".into(),
            id.public_key(),
            1,
            None,
            1,
            vec![file("x", 1), file("a", 2)],
        );
        let b = OwnerStatement::new(
            "b".into(),
            id.public_key(),
            1,
            None,
            1,
            vec![file("a", 2), file("x", 1)],
        );
        assert_eq!(a.encode().unwrap(), b.encode().unwrap());
        let dup = OwnerStatement::new(
            "b".into(),
            id.public_key(),
            1,
            None,
            1,
            vec![file("a", 1), file("a", 2)],
        );
        assert_eq!(
            dup.files,
            vec![file("a", 2)],
            "the later offer of a name wins"
        );
    }
}
