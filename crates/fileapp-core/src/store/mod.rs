//! Persistence of the server's table behind the [`Store`] trait.
//!
//! The index ([`crate::index`]) owns the live table in memory and emits [`StoreOp`]s for
//! every change; the server driver hands each batch to [`Store::commit`] and only sends the
//! ACKs of that batch once `commit` returned: an acknowledged change is durable.

use std::net::{IpAddr, SocketAddr};

pub mod follow;

pub use crate::proto::RecordSig;

pub mod memory;

pub use memory::{MemoryStore, NullStore};

/// One owner (registered name) as persisted. Files are stored separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRow {
    pub name: String,
    /// Address the owner's datagrams come from (IP and UDP port).
    pub addr: SocketAddr,
    /// IP address peers reach the owner's TCP port at (advertised, or `addr`'s IP).
    pub peer_ip: IpAddr,
    pub tcp_port: u16,
    pub online: bool,
    /// Session token of the current (or last) session.
    pub token: u128,
    /// Registration instance of the current session (see `Message::Register`).
    pub instance: u64,
    /// Table version at which this owner's header last changed.
    pub ver: u64,
    /// Ed25519 public key the name is bound to, if any.
    pub key: Option<[u8; 32]>,
    /// What the owner's server judged of its reachability. Shared between the servers
    /// of a deployment (PostgreSQL); a server on its own tests again after a restart, so
    /// SQLite does not keep it.
    pub reach: crate::reach::Reach,
}

/// An owner with its offered files and its signed record, as loaded at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    pub row: OwnerRow,
    pub files: Vec<FileRow>,
    /// The owner's signature over its record as it stands (see `crate::records`); `None`
    /// when it changed since it was last signed.
    pub record: Option<RecordSig>,
    /// Table version at which `record` last changed (0 if never).
    pub record_ver: u64,
}

/// One offered file as persisted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileRow {
    pub name: String,
    /// Table version at which it was last (re)announced.
    pub ver: u64,
    pub size: u64,
    pub hash: [u8; 32],
    /// Files in a folder (`name/`); 0 for a file.
    pub files: u64,
}

/// One change to persist. Applied in order within a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Insert or replace the owner's row (files untouched).
    Owner(OwnerRow),
    /// Insert or replace these files of `owner`.
    Files { owner: String, files: Vec<FileRow> },
    /// Remove every file of `owner`.
    ClearFiles { owner: String },
    /// Replace `owner`'s signed record (`None`: its record changed, not yet signed).
    Record {
        owner: String,
        record: Option<RecordSig>,
        /// The table version of the change.
        ver: u64,
    },
}

impl StoreOp {
    /// The owner whose rows the operation changes.
    pub fn owner(&self) -> &str {
        match self {
            StoreOp::Owner(r) => &r.name,
            StoreOp::Files { owner, .. }
            | StoreOp::ClearFiles { owner }
            | StoreOp::Record { owner, .. } => owner,
        }
    }
}

/// Typed store failure; the server treats any of them as fatal for the batch.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (SQLite, or any other backend behind the trait).
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Where the index persists its table.
pub trait Store: Send {
    /// Everything persisted so far.
    fn load(&mut self) -> Result<Vec<OwnerRecord>, StoreError>;
    /// Makes a batch of changes durable, atomically (one transaction).
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
}
