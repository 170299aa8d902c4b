//! Reach: how a requester gets a byte stream to an owner whatever sits between them.
//!
//! - [`Via`]: the four paths, in the order they are tried (direct, reverse, punched,
//!   relayed), and [`Reach`], what the server judged of one client (is its TCP port
//!   reachable from outside, how does its NAT map UDP).
//! - [`ticket`]: the server-signed, single-use, short-lived tickets a relay pairs by.
//! - [`relay`]: the relay's pairing and limits as a state machine.
//! - [`punch`]: the hole-punching timing (probes to the server, punches to the peer).

pub mod punch;
pub mod relay;
pub mod ticket;

use serde::{Deserialize, Serialize};

/// A path a transfer connection can take.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    /// The requester connects to the owner's TCP port.
    Direct,
    /// The owner connects out to the requester's TCP port (the server asks it to).
    Reverse,
    /// Both punch a UDP hole; the transfer runs over QUIC on it.
    Punched,
    /// Both connect out to a relay the server names; it splices the two streams.
    Relayed,
}

impl Via {
    /// The word shown in summaries and `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Reverse => "reverse",
            Via::Punched => "punched",
            Via::Relayed => "relayed",
        }
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
