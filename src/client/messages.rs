//! Every line the client shows its user, in one place.
//!
//! **This is a contract.** The bracketed texts copy the Python original ("the seed") word
//! for word, and scripts and tests read them: `>>> [Welcome, You are registered.]`,
//! `>>> [Client table updated.]`, `>>> [Invalid Request]`, `>>> [You are Offline. Bye.]`,
//! `< Connection with client B established. >`, the rejection texts, and so on. Change a
//! text here only on purpose, together with the README and the integration tests.
//!
//! Lines printed at the prompt start with `>>> `; lines about a download are wrapped in
//! `< ... >`; start-up failures (printed before the console runs) are bare `[...]`.

use fileapp_core::reach::Via;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::proto::Reject;
use crate::transfer::human_rate;

/// The prompt of terminal mode; every line said at the prompt starts with it too.
pub const PROMPT: &str = ">>> ";

// ---- registration and the server ----------------------------------------------------

pub const WELCOME: &str = ">>> [Welcome, You are registered.]";
/// The body of the name-in-use rejection (also the text of `ClientError::NameInUse`).
pub const NAME_IN_USE: &str = "[Registration rejected: Client username already in use.]";
/// The body of the no-answer line (also the text of `ClientError::ServerNotResponding`).
pub const SERVER_NOT_RESPONDING: &str = "[Server not responding]";
pub const EXITING: &str = ">>> [Exiting]";
pub const ALREADY_REGISTERED: &str = ">>> [Already registered.]";
pub const OFFLINE_BYE: &str = ">>> [You are Offline. Bye.]";
pub const TABLE_UPDATED: &str = ">>> [Client table updated.]";
pub const SERVER_LOST: &str = ">>> [Server not responding; reconnecting automatically.]";
pub const SERVER_BACK: &str = ">>> [Connection to server restored.]";

/// A client given several servers moved to another one (said once per move, when the
/// new server has registered us again).
pub fn server_moved(from: std::net::SocketAddr, to: std::net::SocketAddr) -> String {
    format!(">>> [Server {from} not responding; moved to {to}]")
}
pub const OFFLINE_REFUSED: &str = ">>> [You are offline. Use reg to come back online.]";
pub const NOT_CONNECTED: &str = ">>> [Not connected to the server right now; try again shortly.]";

/// A line at the prompt: `>>> ` and `body`.
pub fn prompt_line(body: impl Display) -> String {
    format!("{PROMPT}{body}")
}

/// The body of a registration refused for another reason than the name.
pub fn register_rejected(r: Reject) -> String {
    format!("[Registration rejected: {}]", reject_text(r))
}

/// The server's key is not the one pinned for its address: the line names both and
/// says how to accept the new one. Nothing was sent to that server but a handshake.
pub fn server_key_changed(server: &str, pinned: &str, presented: &str) -> String {
    format!(
        "[Server {server} presented key {presented}, but key {pinned} is pinned for it. \
         Not connecting: this may be someone else posing as the server. If its operator \
         changed the key, run again with --server-key {presented}]"
    )
}

/// The table binds a peer we knew to another key.
pub fn peer_key_changed(name: &str, pinned: &str, presented: &str) -> String {
    format!(
        "[Warning: the table binds {name} to key {presented}, but you knew {name} by key \
         {pinned}. Downloads from {name} are refused. If {name} really has a new key \
         (ask them), type: trust {name}]"
    )
}

/// The table binds our own name to a key that is not ours.
pub fn own_name_bound_elsewhere(name: &str, presented: &str, ours: &str) -> String {
    format!(
        "[WARNING: the table binds YOUR name {name} to key {presented}, not to your key \
         {ours}. Someone may be impersonating you.]"
    )
}

/// `request` from an owner whose record is not verified.
pub fn owner_not_verified(owner: &str, forged: bool) -> String {
    if forged {
        format!(
            "[Not downloading from {owner}: the table's record of {owner} does not match \
             {owner}'s signature; the server or the path to it altered it]"
        )
    } else {
        format!(
            "[Not downloading from {owner}: its record is not signed yet (it just changed); \
             try again in a moment]"
        )
    }
}

/// `request` from a peer whose key changed and was not accepted.
pub fn peer_key_refused(owner: &str) -> String {
    format!(
        "[Not downloading from {owner}: its key changed; see the warning above, or type: trust {owner}]"
    )
}

pub fn peer_trusted(name: &str, fingerprint: &str) -> String {
    format!("[{name} is now known by key {fingerprint}]")
}

pub fn nothing_to_trust(name: &str) -> String {
    format!("[{name}'s key has not changed: nothing to accept]")
}

pub fn known_peers_failed(e: &crate::known::KnownError) -> String {
    format!("[Cannot save the peers' keys: {e}]")
}

/// First contact with a server: its key is pinned from now on.
pub fn server_pinned(server: &str, fingerprint: &str) -> String {
    format!("[Server {server} has key {fingerprint}; pinned for later connections]")
}

/// The key named with `--server-key` replaced the one pinned before.
pub fn server_pin_replaced(server: &str, fingerprint: &str) -> String {
    format!("[Server {server}: now pinned to key {fingerprint}]")
}

pub fn known_servers_failed(e: &crate::known::KnownError) -> String {
    format!("[Cannot use the pinned server keys: {e}]")
}

/// How the server's reasons read.
pub fn reject_text(r: Reject) -> &'static str {
    match r {
        Reject::NameInUse => "name already in use",
        Reject::InvalidName => "invalid name",
        Reject::NotRegistered => "not registered (session expired)",
        Reject::LimitExceeded => "limit exceeded",
        Reject::RateLimited => "too many requests",
        Reject::BadProof => "the proof of identity was not accepted",
        Reject::Unreachable => "the server cannot arrange that path",
    }
}

pub fn dereg_not_you(given: &str, me: &str) -> String {
    format!(">>> [dereg failed: {given} is not you; you can only deregister yourself ({me}).]")
}

pub fn whoami(name: &str, state: &str, fingerprint: &str) -> String {
    format!(">>> [You are {name} ({state}), key fingerprint {fingerprint}]")
}

/// `whoami`'s second line: what the server judged of our reachability.
pub fn reachability(how: &str) -> String {
    format!(">>> [Reachability: {how}]")
}

pub const STATE_ONLINE: &str = "online";
pub const STATE_RECONNECTING: &str = "reconnecting";
pub const STATE_OFFLINE: &str = "offline";

// ---- setdir and offer -----------------------------------------------------------------

pub fn setdir_ok(dir: &Path) -> String {
    format!(
        ">>> [Successfully set {} as the directory for searching offered files.]",
        dir.display()
    )
}

pub fn setdir_failed(dir: &str) -> String {
    format!(">>> [setdir failed: {dir} does not exist.]")
}

pub const DIR_NOT_SET: &str = ">>> Directory not set. Set directory using setdir command.";
pub const OFFER_RECEIVED: &str = ">>> [Offer Message Received By Server]";
pub const NO_ACK: &str = ">>> [No ACK from Server, please try again later.]";
pub const NOTHING_OFFERED: &str = ">>> [Nothing offered.]";
pub const RESTORE_FAILED: &str =
    ">>> [Could not restore your previous session's offers; offer them again.]";

pub fn offer_rejected(r: Reject) -> String {
    format!(">>> [Offer rejected by server: {}]", reject_text(r))
}

pub fn not_a_file_name(name: &str) -> String {
    format!(
        ">>> [Cannot offer {name:?}: not a plain file name (no '/', '..' or control characters)]"
    )
}

pub fn cannot_offer(name: &str, why: impl Display) -> String {
    format!(">>> [Cannot offer {name}: {why}]")
}

pub fn restored(count: usize, dir: &Path) -> String {
    format!(
        ">>> [Restored {count} offer(s) of your previous session from {}.]",
        dir.display()
    )
}

pub fn cannot_serve(port: u16, why: impl Display) -> String {
    format!(">>> [Cannot serve files: TCP port {port} unavailable: {why}]")
}

// ---- list, request and downloads ------------------------------------------------------

pub const NO_FILES: &str = ">>> [No files available for download at the moment.]";
pub const INVALID_REQUEST: &str = ">>> [Invalid Request]";
/// Column titles of `list`.
pub const LIST_HEADER: [&str; 4] = ["FILENAME", "OWNER", "IP ADDRESS", "TCP PORT"];
/// Column titles of `list -l`.
pub const LIST_LONG_HEADER: [&str; 8] = [
    "FILENAME",
    "OWNER",
    "IP ADDRESS",
    "TCP PORT",
    "SIZE",
    "BLAKE3",
    "REACH",
    "OWNER KEY",
];
/// `list -l` for an owner without a key.
pub const NO_KEY: &str = "-";

/// `list -l`: the owner's key, marked when its record did not verify (downloads from it
/// are refused).
pub fn key_cell(fingerprint: &str, verified: bool) -> String {
    if verified {
        fingerprint.to_string()
    } else {
        format!("{fingerprint} (record not verified)")
    }
}

pub fn connection_established(owner: &str) -> String {
    format!("< Connection with client {owner} established. >")
}

pub fn connection_closed(owner: &str) -> String {
    format!("< Connection with client {owner} closed >")
}

pub fn resuming(file: &str, offset: u64, size: u64) -> String {
    format!(
        "< Resuming {file} from byte {offset} of {size} ({:.0}%) >",
        offset as f64 * 100.0 / size.max(1) as f64
    )
}

/// What a folder offer covers; `skipped` entries (symlinks, devices, sockets, FIFOs)
/// were left out.
pub fn folder_offered(folder: &str, files: u64, bytes: u64, skipped: u64) -> String {
    let left = if skipped > 0 {
        format!("; left out {skipped} symlink(s), device(s), socket(s) or FIFO(s)")
    } else {
        String::new()
    };
    format!(">>> [Offering {folder}: {files} files, {bytes} bytes{left}]")
}

/// A folder's cell in `list`: its name (with the trailing `/`), file count and size.
pub fn folder_cell(folder: &str, files: u64, bytes: u64) -> String {
    format!("{folder} ({files} files, {bytes} bytes)")
}

/// The label of the bar while a folder is hashed for an offer.
pub fn hashing_label(folder: &str) -> String {
    format!("hashing {folder}")
}

/// The label of a folder download's bar: files done of all.
pub fn tree_label(folder: &str, done: u64, files: u64) -> String {
    format!("{folder} {done}/{files} files")
}

pub fn tree_already_present(folder: &str, dir: &Path) -> String {
    format!(
        "< {folder} is already in {}, identical; nothing to transfer >",
        dir.display()
    )
}

/// The one summary line of a finished folder download.
pub fn tree_download_stats(
    folder: &str,
    files: u64,
    bytes: u64,
    elapsed: Duration,
    moved: u64,
    path: &Path,
    via: Via,
) -> String {
    let resumed = if moved < bytes {
        format!(", resumed ({moved} bytes this time)")
    } else {
        String::new()
    };
    format!(
        "< {folder}: {files} files, {bytes} bytes, {:.2} s, {}{resumed}, into {}, {via} >",
        elapsed.as_secs_f64(),
        human_rate(moved, elapsed),
        path.display()
    )
}

pub fn downloading(file: &str) -> String {
    format!("< Downloading {file}... >")
}

pub fn already_present(file: &str, dir: &Path, hash: &[u8; 32]) -> String {
    format!(
        "< {file} is already in {}, identical (BLAKE3 {}); nothing to transfer >",
        dir.display(),
        hex::encode(hash)
    )
}

/// What a finished download moved: `moved` of its `size` bytes came over the network,
/// along path `via` (`direct`, `reverse`, `punched` or `relayed`).
pub fn download_stats(
    file: &str,
    size: u64,
    hash: &[u8; 32],
    elapsed: Duration,
    moved: u64,
    via: Via,
) -> String {
    format!(
        "< {file}: {size} bytes, BLAKE3 {}, {:.2} s, {}, {via} >",
        hex::encode(hash),
        elapsed.as_secs_f64(),
        human_rate(moved, elapsed)
    )
}

pub fn downloaded(file: &str) -> String {
    format!("< {file} downloaded successfully! >")
}

/// Why a download failed when the owner's TLS verifier refused our key: its table does
/// not list it (yet).
pub fn owner_refused_our_key(owner: &str) -> String {
    format!(
        "TLS handshake with {owner} failed: {owner} refused our key (it is not in {owner}'s table; if we registered just now, try again shortly)"
    )
}

/// The owner could not connect out for a requester as the server arranged.
pub fn dial_out_failed(requester: &str, via: fileapp_core::reach::Via, why: &str) -> String {
    format!("< Could not reach {requester} ({via}): {why} >")
}

pub fn download_failed(file: &str, owner: &str, why: impl Display) -> String {
    format!("< Download of {file} from {owner} failed: {why} >")
}

// ---- help -----------------------------------------------------------------------------

/// One line of `help`: usages padded to `width`.
pub fn help_line(usage: &str, summary: &str, width: usize) -> String {
    format!("  {usage:width$}  {summary}")
}

/// The two lines of `help <command>`.
pub fn help_detail(usage: &str, summary: &str, details: &str) -> [String; 2] {
    [format!("  {usage}: {summary}"), format!("  {details}")]
}

pub fn no_such_command(name: &str) -> String {
    format!(">>> [No such command: {name}]")
}

// ---- start-up (printed before the console runs) ---------------------------------------

pub fn port_unusable(what: &str, port: u16, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!("[Cannot use {what} port {port}: it is already in use]")
    } else {
        format!("[Cannot use {what} port {port}: {e}]")
    }
}

pub fn cannot_reach(server: SocketAddr, e: impl Display) -> String {
    format!("[Cannot reach server {server}: {e}]")
}

pub fn cannot_read_cwd(e: impl Display) -> String {
    format!("[Cannot read current folder: {e}]")
}

pub fn no_download_dir(dir: &Path) -> String {
    format!("[Download folder {} does not exist]", dir.display())
}

pub fn identity_failed(e: impl Display) -> String {
    format!("[Identity: {e}]")
}

pub fn tls_failed(e: impl Display) -> String {
    format!("[TLS setup failed: {e}]")
}

// ---- serving: what the owner of a file sees --------------------------------------------
// The provider side runs inside the client and prints through its console; the seed's
// `< Accepting connection request from ... >`, `< Transferring foo... >`,
// `< foo transferred successfully! >` are here (`connection_closed` above serves both
// sides).

pub fn accepting(ip: IpAddr) -> String {
    format!("< Accepting connection request from {ip}. >")
}

pub fn accept_failed(e: impl Display) -> String {
    format!("< Could not accept a connection: {e} >")
}

pub fn too_many_from(ip: IpAddr) -> String {
    format!("< Refused connection from {ip}: too many connections from this address >")
}

pub fn too_many_transfers(ip: IpAddr) -> String {
    format!("< Refused connection from {ip}: too many transfers in progress >")
}

pub fn no_request_within(ip: IpAddr, limit: Duration) -> String {
    format!(
        "< Connection from {ip} closed: no request within {} s >",
        limit.as_secs_f64()
    )
}

pub fn refused_plaintext(ip: IpAddr) -> String {
    format!("< Refused plaintext request from {ip}: this client only accepts encrypted transfers >")
}

pub fn refused_encrypted(ip: IpAddr) -> String {
    format!(
        "< Refused encrypted request from {ip}: this client runs in plaintext mode (--plaintext) >"
    )
}

pub fn wrong_mode_on_punched_path(ip: IpAddr, first_byte: u8) -> String {
    format!(
        "< Refused request from {ip} on the punched path: mode 0x{first_byte:02x} (QUIC already encrypts it; expected 0xf3) >"
    )
}

pub fn not_a_transfer(ip: IpAddr, first_byte: u8) -> String {
    format!(
        "< Refused connection from {ip}: not a fileapp transfer request (first byte 0x{first_byte:02x}) >"
    )
}

pub fn closed_before_request(ip: IpAddr, why: impl Display) -> String {
    format!("< Connection from {ip} closed before a request: {why} >")
}

pub fn encrypted_failed(ip: IpAddr, why: impl Display) -> String {
    format!("< Encrypted connection from {ip} failed: {why} >")
}

pub fn bad_request(ip: IpAddr, e: impl Display) -> String {
    format!("< Bad request from {ip}: {e} >")
}

pub fn refused_request(file: &str, who: &str, reason: impl Display) -> String {
    format!("< Refused request for '{file}' from {who}: {reason} >")
}

pub fn transferring(file: &str) -> String {
    format!("< Transferring {file}... >")
}

pub fn transfer_failed(file: &str, who: &str, why: impl Display) -> String {
    format!("< Transfer of {file} to {who} failed: {why} >")
}

pub fn copy_differs(file: &str, who: &str) -> String {
    format!("< Request for '{file}' from {who}: their copy differs, nothing sent >")
}

/// The owner sent a folder's listing (its manifest, for the requester's completion).
pub fn listing_sent(folder: &str, who: &str, entries: u64) -> String {
    format!("< Sent the listing of {folder} ({entries} entries) to {who} >")
}

/// A listing was asked for a version of the folder that is no longer the offered one.
pub fn listing_stale(folder: &str, who: &str) -> String {
    format!("< Listing of {folder} for {who}: the folder changed since, nothing sent >")
}

pub fn transferred(file: &str) -> String {
    format!("< {file} transferred successfully! >")
}

/// The owner's summary of a transfer: `sent` bytes in `elapsed`, from byte `start`.
pub fn sent_stats(file: &str, sent: u64, start: u64, elapsed: Duration) -> String {
    let from = if start > 0 {
        format!(", resumed at byte {start}")
    } else {
        String::new()
    };
    format!(
        "< {file}: {sent} bytes in {:.3} s ({}){from} >",
        elapsed.as_secs_f64(),
        human_rate(sent, elapsed)
    )
}

/// The owner's summary of a folder sent: `files` files, `bytes` bytes in `elapsed`.
pub fn tree_sent_stats(folder: &str, files: u64, bytes: u64, elapsed: Duration) -> String {
    format!(
        "< {folder}: {files} files, {bytes} bytes in {:.3} s ({}) >",
        elapsed.as_secs_f64(),
        human_rate(bytes, elapsed)
    )
}

pub fn rehashed(file: &str) -> String {
    format!("< {file} changed since it was offered; re-hashed >")
}
