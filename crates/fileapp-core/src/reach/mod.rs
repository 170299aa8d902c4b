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

/// How a client's NAT maps UDP, as far as the server can tell.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nat {
    /// Not tested (yet), or the test's datagram was lost.
    #[default]
    Unknown,
    /// One mapping whatever the destination (no NAT, or endpoint-independent mapping):
    /// a hole can be punched.
    Independent,
    /// A new mapping per destination ("symmetric"): punching cannot work.
    Dependent,
}

/// What the server judged of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reach {
    /// Its TCP port accepts connections from outside (`None`: not tested yet).
    pub tcp: Option<bool>,
    pub nat: Nat,
}

impl Reach {
    /// One line for `whoami` and `list -l`.
    pub fn describe(&self) -> &'static str {
        match (self.tcp, self.nat) {
            (Some(true), _) => "reachable",
            (Some(false), Nat::Independent) => "behind NAT (punchable)",
            (Some(false), Nat::Dependent) => "behind NAT (symmetric: relay only)",
            (Some(false), Nat::Unknown) => "behind NAT",
            (None, _) => "not tested yet",
        }
    }

    /// One word for `list -l` and `list --json`.
    pub fn token(&self) -> &'static str {
        match (self.tcp, self.nat) {
            (Some(true), _) => "reachable",
            (Some(false), Nat::Independent) => "nat-cone",
            (Some(false), Nat::Dependent) => "nat-symmetric",
            (Some(false), Nat::Unknown) => "nat",
            (None, _) => "untested",
        }
    }
}

/// The paths a requester tries, in order, to reach an owner, from what the server
/// judged of both. Direct first when the owner's TCP port is (or may be) reachable;
/// reverse when ours is; punched when neither is and both NATs map independently;
/// relayed always last.
pub fn plan(me: Reach, owner: Reach) -> Vec<Via> {
    let mut out = Vec::with_capacity(4);
    if owner.tcp != Some(false) {
        out.push(Via::Direct);
    }
    if me.tcp != Some(false) {
        out.push(Via::Reverse);
    }
    let punchable = |r: Reach| r.tcp.is_none() || r.nat != Nat::Dependent;
    if (me.tcp == Some(false) || owner.tcp == Some(false)) && punchable(me) && punchable(owner) {
        out.push(Via::Punched);
    }
    out.push(Via::Relayed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: Reach = Reach {
        tcp: Some(true),
        nat: Nat::Independent,
    };
    const CONE: Reach = Reach {
        tcp: Some(false),
        nat: Nat::Independent,
    };
    const SYMMETRIC: Reach = Reach {
        tcp: Some(false),
        nat: Nat::Dependent,
    };
    const UNTESTED: Reach = Reach {
        tcp: None,
        nat: Nat::Unknown,
    };

    #[test]
    fn each_cell_of_the_matrix_tries_what_can_work_first() {
        use Via::*;
        // Both public: direct (the rest only if direct fails on the day).
        assert_eq!(plan(PUBLIC, PUBLIC)[0], Direct);
        // Owner behind NAT, requester public: no time lost on direct.
        assert_eq!(plan(PUBLIC, CONE), [Reverse, Punched, Relayed]);
        assert_eq!(plan(PUBLIC, SYMMETRIC), [Reverse, Relayed]);
        // Requester behind NAT, owner public: direct.
        assert_eq!(plan(CONE, PUBLIC), [Direct, Punched, Relayed]);
        // Both behind punchable NATs: punch, then relay.
        assert_eq!(plan(CONE, CONE), [Punched, Relayed]);
        // One or both symmetric: straight to the relay.
        assert_eq!(plan(CONE, SYMMETRIC), [Relayed]);
        assert_eq!(plan(SYMMETRIC, CONE), [Relayed]);
        assert_eq!(plan(SYMMETRIC, SYMMETRIC), [Relayed]);
        // Nothing known yet: everything, cheapest first.
        assert_eq!(plan(UNTESTED, UNTESTED), [Direct, Reverse, Relayed]);
        assert_eq!(plan(CONE, UNTESTED), [Direct, Punched, Relayed]);
    }

    #[test]
    fn relayed_is_always_the_last_resort() {
        let all = [PUBLIC, CONE, SYMMETRIC, UNTESTED];
        for me in all {
            for owner in all {
                let p = plan(me, owner);
                assert_eq!(p.last(), Some(&Via::Relayed), "{me:?} {owner:?}");
                assert_eq!(p.iter().filter(|v| **v == Via::Relayed).count(), 1);
            }
        }
    }
}
