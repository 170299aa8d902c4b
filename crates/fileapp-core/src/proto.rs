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

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// First two bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"FA";
/// Protocol version carried in the third byte. A datagram of another version is dropped.
pub const VERSION: u8 = 1;
/// Largest datagram either side ever sends or accepts. Fits an IPv6 minimum-MTU path.
pub const MAX_DATAGRAM: usize = 1200;
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
    /// `owner` offers `file`, of this size and BLAKE3 hash (as of its offer).
    File {
        owner: String,
        file: String,
        size: u64,
        hash: [u8; 32],
    },
}

/// An offered file: name, size and BLAKE3 hash when it was offered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub hash: [u8; 32],
}

impl FileEntry {
    /// An entry with no content information (tests, tools).
    pub fn named(name: impl Into<String>) -> FileEntry {
        FileEntry {
            name: name.into(),
            size: 0,
            hash: [0; 32],
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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
            | Message::Challenge { req, .. } => Some(*req),
            Message::TableAck { .. } | Message::Table { .. } => None,
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

/// Splits `items` into table parts, each encoding to at most [`MAX_DATAGRAM`] bytes.
/// Always returns at least one (possibly empty) part so a client can learn a version.
pub fn pack_table(from: u64, to: u64, items: Vec<Item>) -> Vec<Vec<u8>> {
    let mut groups: Vec<Vec<Item>> = vec![Vec::new()];
    let mut used = TABLE_OVERHEAD;
    for item in items {
        let size = item_size(&item);
        if used + size > MAX_DATAGRAM && !groups.last().is_some_and(Vec::is_empty) {
            groups.push(Vec::new());
            used = TABLE_OVERHEAD;
        }
        used += size;
        groups.last_mut().expect("never empty").push(item);
    }
    let parts = groups.len().min(u16::MAX as usize) as u16;
    groups
        .into_iter()
        .take(parts as usize)
        .enumerate()
        .filter_map(|(i, items)| {
            Message::Table {
                from,
                to,
                part: i as u16,
                parts,
                items,
            }
            .encode()
            .ok()
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.-]{1,64}"
    }

    fn arb_item() -> impl Strategy<Value = Item> {
        prop_oneof![
            (arb_name(), any::<[u8; 4]>(), any::<u16>(), any::<bool>()).prop_map(
                |(name, ip, tcp_port, online)| Item::Owner {
                    name,
                    ip: IpAddr::from(ip),
                    tcp_port,
                    online,
                    key: Some([online as u8; 32]),
                }
            ),
            (
                arb_name(),
                "[^/\\x00-\\x1f]{1,100}",
                any::<u64>(),
                any::<[u8; 32]>()
            )
                .prop_map(|(owner, file, size, hash)| Item::File {
                    owner,
                    file,
                    size,
                    hash
                }),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                any::<u64>(),
                arb_name(),
                any::<u64>(),
                any::<u16>(),
                any::<bool>(),
                any::<Option<[u8; 16]>>()
            )
                .prop_map(|(req, name, instance, tcp_port, keep_offers, adv)| {
                    Message::Register {
                        req,
                        name,
                        instance,
                        tcp_port,
                        keep_offers,
                        advertise: adv.map(IpAddr::from),
                        evict: keep_offers,
                        key: adv.map(|_| [7; 32]),
                        proof: adv.map(|a| Proof {
                            nonce: a,
                            sig: vec![1; 64],
                        }),
                    }
                }),
            (
                any::<u64>(),
                any::<u128>(),
                prop::collection::vec("[a-z]{1,20}", 0..10)
            )
                .prop_map(|(req, token, files)| Message::Offer {
                    req,
                    token,
                    files: files.into_iter().map(FileEntry::named).collect()
                }),
            (any::<u64>(), any::<u128>()).prop_map(|(req, token)| Message::Dereg { req, token }),
            (any::<u64>(), any::<u128>(), any::<u64>()).prop_map(|(req, token, v)| {
                Message::Heartbeat {
                    req,
                    token,
                    table_version: v,
                }
            }),
            (any::<u128>(), any::<u64>(), any::<u16>())
                .prop_map(|(token, to, part)| Message::TableAck { token, to, part }),
            (any::<u64>(), any::<u128>(), any::<u32>(), any::<u64>()).prop_map(
                |(req, token, heartbeat_ms, version)| Message::Welcome {
                    req,
                    token,
                    heartbeat_ms,
                    version,
                }
            ),
            any::<u64>().prop_map(|req| Message::Rejected {
                req,
                reason: Reject::NameInUse
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(req, version)| Message::Ack { req, version }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u16>(),
                any::<u16>(),
                prop::collection::vec(arb_item(), 0..3)
            )
                .prop_map(|(from, to, part, parts, items)| Message::Table {
                    from,
                    to,
                    part,
                    parts,
                    items
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(msg in arb_message()) {
            let bytes = msg.encode().unwrap();
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            prop_assert_eq!(Message::decode(&bytes).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn valid_prefix_with_garbage_never_panics(tail in prop::collection::vec(any::<u8>(), 0..1300)) {
            let mut bytes = vec![b'F', b'A', VERSION];
            bytes.extend(tail);
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn packing_respects_datagram_limit(items in prop::collection::vec(arb_item(), 0..200)) {
            let parts = pack_table(3, 9, items.clone());
            let mut seen = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                prop_assert!(p.len() <= MAX_DATAGRAM);
                match Message::decode(p).unwrap() {
                    Message::Table { from: 3, to: 9, part, parts: n, items } => {
                        prop_assert_eq!(part as usize, i);
                        prop_assert_eq!(n as usize, parts.len());
                        seen.extend(items);
                    }
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            prop_assert_eq!(seen, items);
        }
    }

    #[test]
    fn rejects_wrong_magic_version_and_trailing_bytes() {
        let mut ok = Message::Ack { req: 7, version: 3 }.encode().unwrap();
        assert_eq!(
            Message::decode(&ok),
            Ok(Message::Ack { req: 7, version: 3 })
        );
        let mut bad = ok.clone();
        bad[0] = b'X';
        assert_eq!(Message::decode(&bad), Err(DecodeError::BadMagic));
        bad = ok.clone();
        bad[2] = 99;
        assert_eq!(Message::decode(&bad), Err(DecodeError::Version(99)));
        ok.push(0);
        assert_eq!(Message::decode(&ok), Err(DecodeError::Malformed));
        assert_eq!(Message::decode(&[0; 1300]), Err(DecodeError::TooLong));
        assert_eq!(Message::decode(b"FA"), Err(DecodeError::TooShort));
    }

    #[test]
    fn three_hundred_long_names_pack_into_limit() {
        let items: Vec<Item> = (0..300)
            .map(|i| Item::File {
                owner: "B".into(),
                file: format!("{i:0>100}"),
                size: u64::MAX,
                hash: [0xff; 32],
            })
            .collect();
        let parts = pack_table(0, 1, items);
        assert!(parts.len() >= 35, "300*~150 bytes need many parts");
        assert!(parts.iter().all(|p| p.len() <= MAX_DATAGRAM));
    }

    #[test]
    fn name_rules() {
        assert!(valid_client_name("B"));
        assert!(!valid_client_name(""));
        assert!(!valid_client_name("a b"));
        assert!(!valid_client_name(&"x".repeat(65)));
        assert!(valid_file_name("foo.txt"));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "/etc/passwd",
            "a\\b",
            "a\nb",
            "a\0b",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }
}
