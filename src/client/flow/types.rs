//! What goes into the command flow and what comes out of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::error::ClientError;
use crate::proto::FileEntry;

/// Longest wait for the table to catch up before a command goes on anyway: for our own
/// change to appear in it, or for the signed record of an owner we `request` from when
/// the table shows a change the owner has not signed yet.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// What the flow needs besides the core.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our key's fingerprint, for `whoami`.
    pub fingerprint: String,
    /// Where downloads land (named in the "already present" line).
    pub download_dir: PathBuf,
    /// Commands run before any input is read (`--exec`).
    pub exec: Vec<String>,
    /// Leave once `exec` is done (`--exit`).
    pub exit_when_done: bool,
    /// Offers of a previous run that crashed.
    pub restore: Option<Restore>,
    /// See [`READ_YOUR_WRITES_WAIT`].
    pub sync_wait: Duration,
    /// The server's address as the user gave it (named when its key is refused).
    pub server: String,
    /// The user named the server's key (`--server-key`): pin what matched it.
    pub server_pin_given: bool,
    /// Our own public key: the table must bind our name to it.
    pub key: Option<[u8; 32]>,
}

/// The crash journal's folder and offers: registered with `register_resuming`, and
/// offered again once registered if the folder still exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub dir: PathBuf,
    pub offers: Vec<String>,
}

/// What the driver must do, in this order.
#[derive(Debug)]
pub enum Action {
    /// Send this datagram to the server.
    Send(Vec<u8>),
    /// The server moved (failover): datagrams go to this address from now on, and only
    /// its datagrams are the server's.
    UseServer(std::net::SocketAddr),
    /// `trust <name>`: remember this key for that peer from now on.
    TrustPeer { name: String, key: [u8; 32] },
    /// The server proved it holds this key, and it is to be pinned for its address
    /// (first contact, or the key the user named with `--server-key`).
    PinServer([u8; 32]),
    /// Print one line.
    Say(String),
    /// The command is over: show the prompt.
    Prompt,
    /// Accept peers' downloads (if not already).
    StartServing,
    /// Stop accepting downloads.
    StopServing,
    /// The table changed: refresh completion and the peers' keys.
    TableChanged,
    /// `setdir`: resolve this folder and answer with
    /// [`Flow::dir_checked`](super::Flow::dir_checked).
    CheckDir(String),
    /// Registered while restoring a crashed run: is this still a folder? Answer with
    /// [`Flow::restore_checked`](super::Flow::restore_checked).
    CheckRestore(PathBuf),
    /// Offer files from this folder from now on.
    SetLibraryDir(PathBuf),
    /// Write the crash journal (folder and offers).
    SaveJournal,
    /// Check and hash these files (names unique), then
    /// [`Flow::offer_checked`](super::Flow::offer_checked).
    /// `restoring`: the crash re-offer, which prints nothing about missing files.
    CheckOffer {
        dir: PathBuf,
        files: Vec<String>,
        restoring: bool,
    },
    /// Start these downloads; each ends with
    /// [`Flow::download_done`](super::Flow::download_done).
    Download(Vec<Order>),
    /// Leave cleanly: forget the journal, cancel downloads, send `goodbye`, exit 0.
    Leave { goodbye: Option<Vec<u8>> },
    /// Stop with this error (its line was already said).
    Fail(ClientError),
    /// Send this NAT test datagram, in clear, from the control socket to the server's
    /// probe port (its port + 1).
    SendProbe(Vec<u8>),
    /// The server's answer to the meeting we asked for with [`Flow::connect`](super::Flow::connect):
    /// its details, or why not (`None`: no answer).
    Met {
        id: [u8; 16],
        result: Result<Meeting, Option<crate::proto::Reject>>,
    },
    /// Requester `from` (in our table, record not forged, key `key`) wants a
    /// transfer connection along `meeting`: connect out and serve it.
    Dial {
        from: String,
        key: Option<[u8; 32]>,
        meeting: Meeting,
    },
    /// A punch can start: the peer's public UDP endpoint (`None`: it cannot).
    PunchPeer {
        id: [u8; 16],
        peer: Option<SocketAddr>,
    },
}

pub use crate::client::core::Meeting;

/// One download to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub peer: SocketAddr,
    pub owner: String,
    pub file: String,
    pub key: Option<[u8; 32]>,
    pub force: bool,
    /// `--json`: the download prints no lines of its own, its result is one JSON line.
    pub json: bool,
    /// For a folder (`file` ends in `/`): the hash the table lists for it.
    pub hash: Option<[u8; 32]>,
    /// The paths to try, in order (from what the server judged of both sides).
    pub plan: Vec<fileapp_core::reach::Via>,
}

/// The result of [`Action::CheckOffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferChecked {
    /// The files that can be offered.
    pub ok: Vec<FileEntry>,
    /// False when names were given but none could be offered.
    pub send: bool,
    pub restoring: bool,
}

/// How one download ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    AlreadyPresent {
        hash: [u8; 32],
    },
    Done {
        size: u64,
        hash: [u8; 32],
        elapsed: Duration,
        /// Bytes that came over the network (not resumed).
        moved: u64,
    },
    /// A folder: verified and in place at `path`.
    TreeDone {
        files: u64,
        size: u64,
        elapsed: Duration,
        moved: u64,
        path: std::path::PathBuf,
    },
    /// The destination already was this folder.
    TreeAlreadyPresent,
    Failed(String),
}

/// How a `request` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestOpts {
    /// `--force`: replace a different file of the same name.
    pub force: bool,
    /// `--json`: one JSON line per download.
    pub json: bool,
}

/// The result of one [`Order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadDone {
    pub file: String,
    pub owner: String,
    /// A connection to the owner was made (its close is announced).
    pub connected: bool,
    /// The path the connection took.
    pub via: Option<fileapp_core::reach::Via>,
    /// The order's `json`: report as one JSON line.
    pub json: bool,
    pub outcome: DownloadOutcome,
}
