//! The index's tunables and their defaults. Each default is a named public constant, so
//! the drivers, the command line and the tools use these values instead of repeating
//! the numbers.

use std::time::Duration;

use crate::reliable::RetryPolicy;

/// How often clients are told to heartbeat by default: 10 s (sent in `Welcome`, in ms).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Missed heartbeats after which a silent client is marked offline by default: 3.
pub const OFFLINE_AFTER_HEARTBEATS: u32 = 3;

/// A client silent this long is marked offline by default: 30 s
/// ([`OFFLINE_AFTER_HEARTBEATS`] × [`DEFAULT_HEARTBEAT`]).
pub const DEFAULT_OFFLINE_AFTER: Duration =
    Duration::from_secs(DEFAULT_HEARTBEAT.as_secs() * OFFLINE_AFTER_HEARTBEATS as u64);

/// Changes within this window are pushed together by default: 5 ms.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(5);

/// Longest wait of a push for the signed record of its change by default: 200 ms.
pub const DEFAULT_SIGN_WAIT: Duration = Duration::from_millis(200);

/// Table parts the push rounds may send per second while changes keep coming; a quiet
/// table's change goes out at once. 25,000 a second is about an eighth of what one
/// core seals and opens: the fan-out of a busy table cannot starve requests.
pub const DEFAULT_PUSH_BUDGET: u32 = 25_000;

/// Seconds of [`Config::push_budget`] a quiet table saves up for a burst of rounds.
pub const PUSH_BURST_SECONDS: f64 = 0.2;

/// Most files one client may offer by default: 10,000.
pub const DEFAULT_MAX_FILES_PER_CLIENT: usize = 10_000;

/// Most online clients behind one IP address by default: 10,000.
pub const DEFAULT_MAX_CLIENTS_PER_IP: usize = 10_000;

/// Datagrams per second accepted from one source address by default: 2,000. Far above
/// what an honest client sends (a 10,000-file offer is ~100 datagrams), far below what
/// floods a server.
pub const DEFAULT_RATE_LIMIT: u32 = 2_000;

/// Tunables of the index. Defaults are the production values, the constants above.
#[derive(Debug, Clone)]
pub struct Config {
    /// Heartbeat interval announced to clients (a duration; sent in whole milliseconds).
    /// Default [`DEFAULT_HEARTBEAT`].
    pub heartbeat: Duration,
    /// A client silent this long (a duration) is marked offline. Checked every quarter
    /// of it. Default [`DEFAULT_OFFLINE_AFTER`].
    pub offline_after: Duration,
    /// Retransmission of table parts: interval (a duration) and count of resends.
    /// Default [`RetryPolicy::DEFAULT`].
    pub retry: RetryPolicy,
    /// Changes within this window (a duration) are pushed together. Default
    /// [`DEFAULT_COALESCE`].
    pub coalesce: Duration,
    /// Most files one client may offer (a count). Default [`DEFAULT_MAX_FILES_PER_CLIENT`].
    pub max_files_per_client: usize,
    /// Most online clients behind one IP address (a count). Default
    /// [`DEFAULT_MAX_CLIENTS_PER_IP`].
    pub max_clients_per_ip: usize,
    /// Datagrams per second accepted from one source address (0 = unlimited); bursts of
    /// [`RATE_BURST_SECONDS`](super::RATE_BURST_SECONDS) times that are allowed. Default
    /// [`DEFAULT_RATE_LIMIT`].
    pub rate_limit: u32,
    /// Refuse a registration without a key (`Reject::BadProof`): every name is bound to
    /// the key that proved itself. The server sets it; `false` by default so the
    /// index's own tests can register key-less names.
    pub require_key: bool,
    /// How long a push waits for the signed record of the change that caused it (a
    /// duration; it comes one round trip after the change's ack). Default
    /// [`DEFAULT_SIGN_WAIT`].
    pub sign_wait: Duration,
    /// Table parts per second that push rounds may send, sustained (0 = unlimited). A
    /// round goes out whole; the next waits until the budget is paid back, so under a
    /// stream of changes each client gets one push per round, carrying every change
    /// since its last, instead of one per change. Heartbeat resyncs and retransmissions
    /// are not counted. Default [`DEFAULT_PUSH_BUDGET`].
    pub push_budget: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat: DEFAULT_HEARTBEAT,
            offline_after: DEFAULT_OFFLINE_AFTER,
            retry: RetryPolicy::DEFAULT,
            coalesce: DEFAULT_COALESCE,
            require_key: false,
            sign_wait: DEFAULT_SIGN_WAIT,
            push_budget: DEFAULT_PUSH_BUDGET,
            max_files_per_client: DEFAULT_MAX_FILES_PER_CLIENT,
            max_clients_per_ip: DEFAULT_MAX_CLIENTS_PER_IP,
            rate_limit: DEFAULT_RATE_LIMIT,
        }
    }
}
