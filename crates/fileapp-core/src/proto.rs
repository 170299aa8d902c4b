//! The control-plane datagram codec: every UDP datagram between a client and the
//! index server. No I/O here: bytes in, [`Message`] out, and back.
//!
//! Layout of every datagram (see `docs/PROTOCOL.md`):
//!
//! ```text
//! +------+------+---------+----------------------------------+
//! | 'F'  | 'A'  | version | postcard-encoded `Message`        |
//! +------+------+---------+----------------------------------+
//! ```
//!
//! A datagram is never longer than [`MAX_DATAGRAM`] bytes; large tables travel as
//! several [`Message::Table`] parts.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::reach::{Nat, Via};

/// First two bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"FA";
/// Protocol version carried in the third byte. A datagram of another version is dropped.
pub const VERSION: u8 = 1;
/// Largest control message either side ever sends or accepts: what one control-channel
/// datagram carries ([`crate::channel::MAX_PAYLOAD`]), so that the sealed datagram stays
/// within [`crate::channel::MAX_DATAGRAM`] (1200 bytes, an IPv6 minimum-MTU path).
pub const MAX_DATAGRAM: usize = crate::channel::MAX_PAYLOAD;
/// Longest client name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest offered file name, in bytes.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// Identifies one request; the reply echoes it so a late reply never confirms the wrong
/// operation. Chosen by the client, unique within its process.
pub type ReqId = u64;
/// Secret handed out by the server at registration; every later request carries it.
pub type Token = u128;

/// Every control message. Requests carry a `req` id echoed by their reply.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Message {
    // ---- client -> server -------------------------------------------------------------
    /// Take `name` and go online. `instance` is random per registration attempt: a
    /// retransmission carries the same value and is answered with the same welcome.
    /// `keep_offers = false` (a fresh process) drops offers stored under the name from
    /// an earlier holder; `true` (`reg`, automatic re-registration) keeps them.
    Register {
        req: ReqId,
        name: String,
        instance: u64,
        tcp_port: u16,
        keep_offers: bool,
        /// Address peers should use to reach this client's TCP port, when the source
        /// address of its datagrams is not it (NAT, several interfaces). `None`: the
        /// server records the datagram's source address.
        advertise: Option<IpAddr>,
        /// The client's Ed25519 public key: the name is bound to it.
        key: Option<[u8; 32]>,
        /// Proof of possession of `key`: a signature over the server's nonce and this
        /// request's fields. Without it the server answers [`Message::Challenge`].
        proof: Option<Proof>,
        /// With a proven key bound to this name: take the name even from a session the
        /// server believes online (the client knows its previous run is gone). `false`
        /// when another process on this machine may still be using the key.
        evict: bool,
    },
    /// Add files to the sender's offered set (idempotent set union; a file offered again
    /// with another size or hash is updated).
    Offer {
        req: ReqId,
        token: Token,
        files: Vec<FileEntry>,
    },
    /// Go offline. Offers are kept, hidden, until the name registers again.
    Dereg { req: ReqId, token: Token },
    /// "I am alive, and my table is at `table_version`." Also starts table pushes.
    Heartbeat {
        req: ReqId,
        token: Token,
        table_version: u64,
    },
    /// Acknowledges one part of a table push.
    TableAck { token: Token, to: u64, part: u16 },

    // ---- server -> client -------------------------------------------------------------
    /// Registration accepted.
    Welcome {
        req: ReqId,
        token: Token,
        /// How often the server expects a heartbeat, in milliseconds.
        heartbeat_ms: u32,
        /// Table version at registration (see `Ack::version`).
        version: u64,
    },
    /// Request refused; nothing was changed.
    Rejected { req: ReqId, reason: Reject },
    /// Request applied (or was already applied: duplicates are answered, not re-applied).
    /// `version` is the table version that includes the change: a client that waits for
    /// its table to reach it reads its own writes.
    Ack { req: ReqId, version: u64 },
    /// One part of a table delta taking a client from version `from` to version `to`.
    /// A delta is applied only once all `parts` parts have arrived.
    Table {
        from: u64,
        to: u64,
        part: u16,
        parts: u16,
        items: Vec<Item>,
    },
    /// Sign this nonce to register with a key (answer to a `Register` without proof).
    Challenge { req: ReqId, nonce: [u8; 16] },

    // ---- client -> server, appended (variant 10) -------------------------------------
    /// "My record, as the server now holds it, is signed": the owner's signature over
    /// its statement (`crate::records`) at sequence number `seq`, with the server's view
    /// of its name, key, TCP port, advertised address and offered files. The server
    /// checks it against that view and relays it to every client (`Item::Record`).
    Record {
        req: ReqId,
        token: Token,
        seq: u64,
        /// Ed25519 signature, 64 bytes.
        sig: Vec<u8>,
    },

    // ---- reach (variants 11-14): a path through NAT ---------------------------------
    /// Requester -> server: "have `owner` meet me `via` this path" (reverse, punched or
    /// relayed; never direct). `id` is random per attempt; a retransmission carries the
    /// same one and is answered the same way.
    Connect {
        req: ReqId,
        token: Token,
        owner: String,
        via: Via,
        id: [u8; 16],
    },
    /// Server -> owner: requester `from` wants a transfer connection `via` this path.
    /// Reverse: connect to `addr` (the requester's TCP address). Relayed: connect to the
    /// relay at `addr` (`None`: the server's own address, TCP, same port) with `ticket`.
    /// Punched: probe the server with `secret` from a fresh UDP socket.
    Dial {
        id: [u8; 16],
        from: String,
        via: Via,
        addr: Option<SocketAddr>,
        ticket: Option<Vec<u8>>,
        secret: Option<[u8; 16]>,
    },
    /// Server -> requester: the answer to `Connect`. Relayed: the relay (`addr` as in
    /// `Dial`) and the requester's `ticket`; punched: the requester's probe `secret`;
    /// reverse: nothing more (the owner connects).
    Connected {
        req: ReqId,
        via: Via,
        addr: Option<SocketAddr>,
        ticket: Option<Vec<u8>>,
        secret: Option<[u8; 16]>,
    },
    /// Server -> both sides of a punch: the other side's public UDP endpoint, learned
    /// from its probes (`None`: a side's NAT maps per destination; punching cannot work).
    PunchPeer {
        id: [u8; 16],
        peer: Option<SocketAddr>,
    },
}

/// Why a request was refused.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The name is held by another online client.
    NameInUse,
    /// Name or file name empty, too long, or containing forbidden characters.
    InvalidName,
    /// The token is unknown, belongs to an offline session, or arrived from another address.
    NotRegistered,
    /// A resource limit (files per client, clients per address) would be exceeded.
    LimitExceeded,
    /// Too many datagrams from this source address; try later.
    RateLimited,
    /// The registration's proof of key possession is invalid or its nonce expired.
    BadProof,
    /// `Connect`: the owner is not online, or the server cannot arrange that path (no
    /// relay, the owner's or the requester's NAT rules it out).
    Unreachable,
}

/// A signature over the registration statement (see `crate::identity`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub nonce: [u8; 16],
    /// Ed25519 signature, 64 bytes.
    pub sig: Vec<u8>,
}

/// One entry of a table delta. Items are absolute states, so applying one twice is harmless.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An owner's address and status. `online = false` removes the owner and its files
    /// from the client's view.
    Owner {
        name: String,
        ip: IpAddr,
        tcp_port: u16,
        online: bool,
        /// The public key the name is bound to (peers pin it for TLS).
        key: Option<[u8; 32]>,
    },
    /// `owner` offers `file`, of this size and BLAKE3 hash (as of its offer); a folder
    /// (`name/`) also says how many files it holds.
    File {
        owner: String,
        file: String,
        size: u64,
        hash: [u8; 32],
        files: u64,
    },
    /// The owner's signature over its record (everything of `Owner` and `File` items but
    /// the observed address and the online flag), or `None` while its record changed
    /// and is not yet signed. Clients verify it against the owner's key.
    Record {
        owner: String,
        record: Option<RecordSig>,
    },
    /// What the server judged of the owner's reachability: does its TCP port accept
    /// connections from outside (`None`: not tested yet), and how its NAT maps UDP.
    Reach {
        owner: String,
        tcp: Option<bool>,
        nat: Nat,
    },
}

/// An owner's signature over its statement, as the server relays it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RecordSig {
    /// Grows with every statement of this owner's key.
    pub seq: u64,
    /// The address the owner advertised, as signed (`None`: peers use the address the
    /// server observed, which is unsigned).
    pub advertise: Option<IpAddr>,
    /// Ed25519 signature, 64 bytes.
    pub sig: Vec<u8>,
}

/// An offered file: name, size and BLAKE3 hash when it was offered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub hash: [u8; 32],
    /// For a folder (`name/`): how many files it holds (its manifest's count); 0 for a
    /// file.
    pub files: u64,
}

impl FileEntry {
    /// An entry with no content information (tests, tools).
    pub fn named(name: impl Into<String>) -> FileEntry {
        FileEntry {
            name: name.into(),
            size: 0,
            hash: [0; 32],
            files: 0,
        }
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("datagram too short")]
    TooShort,
    #[error("datagram longer than {MAX_DATAGRAM} bytes")]
    TooLong,
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("malformed message")]
    Malformed,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("message does not fit in one datagram")]
    TooLarge,
}

impl Message {
    /// Encodes into a fresh datagram of at most [`MAX_DATAGRAM`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        let buf = postcard::to_extend(self, buf).map_err(|_| EncodeError::TooLarge)?;
        if buf.len() > MAX_DATAGRAM {
            return Err(EncodeError::TooLarge);
        }
        Ok(buf)
    }

    /// Encodes into `buf` (at least 3 bytes), returning the length used.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let limit = buf.len().min(MAX_DATAGRAM);
        if limit < 3 {
            return Err(EncodeError::TooLarge);
        }
        buf[..2].copy_from_slice(&MAGIC);
        buf[2] = VERSION;
        let used = postcard::to_slice(self, &mut buf[3..limit])
            .map_err(|_| EncodeError::TooLarge)?
            .len();
        Ok(3 + used)
    }

    /// Decodes one datagram. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLong);
        }
        if bytes.len() < 4 {
            return Err(DecodeError::TooShort);
        }
        if bytes[..2] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[2] != VERSION {
            return Err(DecodeError::Version(bytes[2]));
        }
        match postcard::take_from_bytes::<Message>(&bytes[3..]) {
            Ok((msg, [])) => Ok(msg),
            _ => Err(DecodeError::Malformed),
        }
    }

    /// The request id of a request or reply, if it has one.
    pub fn req_id(&self) -> Option<ReqId> {
        match self {
            Message::Register { req, .. }
            | Message::Offer { req, .. }
            | Message::Dereg { req, .. }
            | Message::Heartbeat { req, .. }
            | Message::Welcome { req, .. }
            | Message::Rejected { req, .. }
            | Message::Ack { req, .. }
            | Message::Challenge { req, .. }
            | Message::Record { req, .. }
            | Message::Connect { req, .. }
            | Message::Connected { req, .. } => Some(*req),
            Message::TableAck { .. }
            | Message::Table { .. }
            | Message::Dial { .. }
            | Message::PunchPeer { .. } => None,
        }
    }
}

/// Encoded size of an item inside a [`Message::Table`], used to pack parts.
pub fn item_size(item: &Item) -> usize {
    postcard::to_stdvec(item).map_or(MAX_DATAGRAM, |v| v.len())
}

/// Bytes a [`Message::Table`] part needs besides its items (header, varints, list length),
/// rounded up generously so packing never overflows a datagram.
pub const TABLE_OVERHEAD: usize = 3 + 1 + 10 + 10 + 3 + 3 + 3;

/// Most parts one table delta may have: the part counter is a `u16`.
pub const MAX_TABLE_PARTS: usize = u16::MAX as usize;

/// Why a table delta could not be packed into parts. Nothing of it is sent: a partial
/// delta would be applied as if it were whole.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    /// The delta needs more parts than the part counter counts.
    #[error("table needs {parts} parts, more than the {MAX_TABLE_PARTS} a delta may have")]
    TooManyParts { parts: usize },
    /// One item alone does not fit in a part.
    #[error("table item {index} ({size} bytes) does not fit in one datagram")]
    ItemTooLarge { index: usize, size: usize },
    /// A part did not encode (the packing estimate was wrong).
    #[error("table part {part} does not encode: {source}")]
    Encode {
        part: usize,
        #[source]
        source: EncodeError,
    },
}

/// Splits `items` into table parts, each encoding to at most [`MAX_DATAGRAM`] bytes.
/// Always returns at least one (possibly empty) part so a client can learn a version.
/// Fails, sending nothing, past [`MAX_TABLE_PARTS`] parts or for an item that cannot fit.
pub fn pack_table(from: u64, to: u64, items: Vec<Item>) -> Result<Vec<Vec<u8>>, PackError> {
    let mut groups: Vec<Vec<Item>> = vec![Vec::new()];
    let mut used = TABLE_OVERHEAD;
    for (index, item) in items.into_iter().enumerate() {
        let size = item_size(&item);
        if TABLE_OVERHEAD + size > MAX_DATAGRAM {
            return Err(PackError::ItemTooLarge { index, size });
        }
        if used + size > MAX_DATAGRAM && !groups.last().is_some_and(Vec::is_empty) {
            groups.push(Vec::new());
            used = TABLE_OVERHEAD;
        }
        used += size;
        if let Some(last) = groups.last_mut() {
            last.push(item);
        }
    }
    let parts = u16::try_from(groups.len()).map_err(|_| PackError::TooManyParts {
        parts: groups.len(),
    })?;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, items)| {
            Message::Table {
                from,
                to,
                part: i as u16,
                parts,
                items,
            }
            .encode()
            .map_err(|source| PackError::Encode { part: i, source })
        })
        .collect()
}

/// Is `name` acceptable as a client name? Printable, no white space, 1..=64 bytes.
pub fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// Is `name` acceptable as an offered file name? A plain name: no `/`, `\`, not `.` or
/// `..`, no control characters, no NUL, 1..=255 bytes.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests;
