//! Why a download failed: variants a caller can branch on, each of whose `Display` is
//! the one line the user sees (the client prints it as is, and tests compare it).

use std::io;
use std::path::PathBuf;

use crate::transfer::header::HeaderError;

/// Why a download failed. The message is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, io::Error),
    /// No path to the owner worked: each one tried and why it failed.
    #[error("no path to {0} worked ({1})")]
    NoPath(String, String),
    /// The owner answered, but refused: see [`Refusal::kind`] for why.
    #[error("{0}")]
    Refused(Refusal),
    /// The owner closed the connection before it had sent everything it announced.
    #[error("connection lost: {0}")]
    PeerClosed(Closed),
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("hash mismatch: the received data does not match the owner's file")]
    HashMismatch,
    #[error("cancelled")]
    Cancelled,
    #[error("{} already exists and differs from the owner's copy (use force to replace it)", .0.display())]
    Exists(PathBuf),
    #[error("'{0}' is not a valid file name")]
    BadName(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The owner sent something this version of the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("cannot write {}: {}", .0.display(), .1)]
    Disk(PathBuf, io::Error),
    #[error("another download of {} is in progress", .0.display())]
    Locked(PathBuf),
    #[error(
        "{0} has no key in the table, so it cannot be authenticated; refusing an unencrypted, unauthenticated transfer"
    )]
    NoPeerKey(String),
    #[error(
        "{owner} presented key {presented}, not the key {owner} is registered with ({expected}); refusing the connection (possible man-in-the-middle)"
    )]
    WrongKey {
        owner: String,
        expected: String,
        presented: String,
    },
    /// The owner runs in the other mode (`--plaintext` on one side only).
    #[error("{}", mode_mismatch_text(owner, *theirs))]
    ModeMismatch {
        owner: String,
        ours: Mode,
        theirs: Mode,
    },
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, String),
    /// The owner gave up on a folder midway (a file changed or vanished since the offer).
    #[error("{owner} stopped sending the folder: {why}")]
    OwnerAborted { owner: String, why: String },
    /// A folder holds a name this side's file system cannot hold; nothing is written
    /// anywhere else instead.
    #[error("cannot hold '{0}' here: {1}")]
    CannotHold(String, String),
    /// A file of a folder does not match its manifest entry.
    #[error(
        "'{0}' does not match the owner's hash (it changed on the owner's side, or was corrupted)"
    )]
    TreeFileMismatch(String),
}

/// A request the owner turned down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{owner} refused the request: {detail}")]
pub struct Refusal {
    /// The owner's name, printable.
    pub owner: String,
    /// Why, to branch on (e.g. retry later when [`RefusalKind::Busy`]).
    pub kind: RefusalKind,
    /// The owner's words (printable), or the status name when it sent none.
    pub detail: String,
}

/// Why the owner refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No free transfer slot (its busy mode byte, or a `Busy` status): try later.
    Busy,
    /// The file is not, or no longer, offered.
    NotOffered,
    /// Anything else (see the detail), e.g. our key is not the one our name is bound to.
    Error,
}

/// How far the owner got before it closed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    /// Before it sent its mode byte or its answer to the request.
    #[error("the owner closed the connection without answering")]
    WithoutAnswer,
    /// During the data: the file holds `received` of `size` bytes (a resumable prefix).
    #[error("the owner closed the connection after {received} of {size} bytes")]
    During { received: u64, size: u64 },
}

/// A side's transfer mode, from its mode byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--plaintext`: no encryption, no authentication.
    Plaintext,
    /// TLS 1.3 with pinned keys (the default).
    Tls,
}

/// What about the owner's bytes broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Our own request could not be encoded (a field out of range).
    #[error("{0}")]
    Request(HeaderError),
    /// The owner's answer is not a valid response header.
    #[error("{0}")]
    Response(HeaderError),
    /// Its first byte is none of the mode bytes.
    #[error(
        "unexpected first byte 0x{byte:02x} from {owner} (not a fileapp peer of this version?)"
    )]
    UnknownMode { owner: String, byte: u8 },
    /// A mode byte this connection cannot carry: TLS inside a punched QUIC stream, or
    /// the QUIC mode (no TLS of its own) on a TCP connection, which would be plaintext.
    #[error("{owner} chose mode 0x{byte:02x}, which this connection cannot carry securely")]
    ModeNotForLink { owner: String, byte: u8 },
    /// It answered `Changed` to a request that compared nothing.
    #[error("unexpected 'changed' answer")]
    UnaskedChanged,
    /// It agreed that our copy matches, but did not send what a match means.
    #[error("the owner agreed to a comparison it should have refused")]
    BadComparison,
    /// It would start the data at an offset we did not ask for.
    #[error("the owner wants to start at byte {0} which we did not ask for")]
    UnaskedStart(u64),
    /// The folder stream broke its rules.
    #[error("bad folder stream: {0}")]
    Tree(fileapp_core::tree::TreeError),
    /// It sent more data than its header announced.
    #[error("the owner sent more data than it announced")]
    TooMuchData,
}

/// The mismatch line. Only the owner's mode is needed: ours is the other one.
fn mode_mismatch_text(owner: &str, theirs: Mode) -> String {
    match theirs {
        Mode::Tls => format!(
            "{owner} requires encryption; this client runs with --plaintext (both sides must use the same mode)"
        ),
        Mode::Plaintext => format!(
            "{owner} accepts only plaintext transfers (it runs with --plaintext); this client requires encryption"
        ),
    }
}
