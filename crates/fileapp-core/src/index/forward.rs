//! Meetings across the servers of one deployment (several servers on one database).
//!
//! A requester asks its own server for a meeting; the owner's session may live on
//! another server, which alone can speak to it over its authenticated channel. The
//! requester's server then arranges the meeting as usual and hands what the owner must
//! hear (the `Dial`, later a punch's `PunchPeer`) to the owner's home server as a
//! [`Forward::Deliver`], which sends it to the owner over its session. A punched
//! owner keeps probing its own server; that server passes what it saw back as
//! [`Forward::ProbeSeen`] to the server that holds the meeting. The driver carries
//! forwards through the shared database (`src/server/shared.rs`); nothing here does
//! I/O. See `docs/PROTOCOL.md` §1.11, "Meetings across servers".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::reach::{MAX_MEETINGS, MEETING_LIFETIME};
use super::{Index, OwnerId};
use crate::proto::Message;
use crate::reach::Via;

/// Most forwards waiting for the driver; past it the newest are dropped (the
/// requester's retransmitted `Connect` and the owner's probes repeat them).
pub const MAX_QUEUED_FORWARDS: usize = 4096;
/// A probe for a meeting elsewhere is passed on at most this often while its source
/// stays the same (the owner probes every 100 ms until it hears).
pub const PROBE_FORWARD_EVERY: Duration = Duration::from_millis(200);

/// What one server of a deployment asks another to do for a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forward {
    /// Send `msg` (an encoded `Dial` or `PunchPeer`) to `owner`, whose session lives on
    /// the receiving server. `from` is the server holding the meeting: the owner's
    /// punch probes, seen by the receiving server, go back there.
    Deliver {
        owner: String,
        from: String,
        msg: Vec<u8>,
    },
    /// A punch probe carrying `secret` came from `src`: the meeting is the receiver's.
    ProbeSeen { secret: [u8; 16], src: SocketAddr },
}

impl Forward {
    /// The bytes the database carries.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data of bounded size: postcard cannot fail on it.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// `None` for bytes that are not a forward.
    pub fn decode(bytes: &[u8]) -> Option<Forward> {
        postcard::from_bytes(bytes).ok()
    }
}

/// A punch secret of a meeting another server holds, for an owner of ours.
#[derive(Debug, Clone)]
pub(super) struct Foreign {
    server: Arc<str>,
    expires: Instant,
    /// The last source passed on, and when.
    sent: Option<(SocketAddr, Instant)>,
}

/// The cross-server part of the reach state.
#[derive(Debug, Default)]
pub(super) struct ForwardState {
    /// This server's id in the deployment (`None`: a server on its own).
    me: Option<Arc<str>>,
    queue: std::collections::VecDeque<(Arc<str>, Forward)>,
    foreign: HashMap<[u8; 16], Foreign>,
}

impl Index {
    /// This server is `id` in a deployment: meetings with owners of other servers are
    /// arranged through forwards ([`Index::poll_forward`]).
    pub fn set_server_id(&mut self, id: &str) {
        self.forward.me = Some(Arc::from(id));
    }

    /// The next forward for the driver to carry: (the server to deliver it, what).
    pub fn poll_forward(&mut self) -> Option<(Arc<str>, Forward)> {
        self.forward.queue.pop_front()
    }

    /// Can a meeting with `them` be arranged from here? A local owner always; an owner
    /// of another server only when this server knows its own id (a deployment).
    pub(super) fn can_meet(&self, them: OwnerId) -> bool {
        !self.is_remote(them) || self.in_deployment()
    }

    /// Whether `them`'s session lives on another server.
    pub(super) fn is_remote(&self, them: OwnerId) -> bool {
        self.remote.contains_key(&them)
    }

    /// Part of a deployment of several servers (the other servers read our rows).
    pub(super) fn in_deployment(&self) -> bool {
        self.forward.me.is_some()
    }

    /// Sends `msg` to owner `id`: over its session here, or through its home server.
    pub(super) fn deliver(&mut self, id: OwnerId, msg: &Message) {
        let (Some(home), Some(me)) = (self.remote.get(&id), self.forward.me.as_ref()) else {
            let to = self.owners[id].addr;
            return self.send(to, msg);
        };
        let Ok(bytes) = msg.encode() else {
            return;
        };
        let f = Forward::Deliver {
            owner: self.owners[id].name.clone(),
            from: me.to_string(),
            msg: bytes,
        };
        let home = home.clone();
        self.queue_forward(home, f);
    }

    fn queue_forward(&mut self, to: Arc<str>, f: Forward) {
        if self.forward.queue.len() < MAX_QUEUED_FORWARDS {
            self.forward.queue.push_back((to, f));
            self.stats.forwards_sent += 1;
        }
    }

    /// A forward another server sent us (read from the shared database). Anything that
    /// does not fit (an owner not online here, a message that is not a meeting's) is
    /// dropped and counted.
    pub fn handle_forward(&mut self, now: Instant, f: Forward) {
        self.stats.forwards_received += 1;
        match f {
            Forward::Deliver { owner, from, msg } => self.deliver_here(now, &owner, &from, &msg),
            Forward::ProbeSeen { secret, src } => self.on_punch_probe(now, src, &secret),
        }
    }

    fn deliver_here(&mut self, now: Instant, owner: &str, from: &str, msg: &[u8]) {
        let id = self.by_name.get(owner).copied();
        let id = id.filter(|&i| self.is_local_session(i));
        let (Some(id), Ok(msg)) = (id, Message::decode(msg)) else {
            self.stats.forwards_dropped += 1;
            return;
        };
        match &msg {
            Message::Dial {
                via: Via::Punched,
                secret: Some(secret),
                ..
            } => {
                self.expire_foreign(now);
                if self.forward.foreign.len() >= MAX_MEETINGS {
                    self.stats.forwards_dropped += 1;
                    return;
                }
                let f = Foreign {
                    server: Arc::from(from),
                    expires: now + MEETING_LIFETIME,
                    sent: None,
                };
                self.forward.foreign.entry(*secret).or_insert(f);
            }
            Message::Dial { .. } | Message::PunchPeer { .. } => {}
            _ => {
                self.stats.forwards_dropped += 1;
                return;
            }
        }
        let to = self.owners[id].addr;
        self.send(to, &msg);
    }

    /// A punch probe with a secret no meeting here holds: if it is one of a meeting
    /// another server holds for an owner of ours, pass it on (once per new source, else
    /// at most every [`PROBE_FORWARD_EVERY`]).
    pub(super) fn probe_for_elsewhere(&mut self, now: Instant, src: SocketAddr, secret: &[u8; 16]) {
        let Some(f) = self.forward.foreign.get_mut(secret) else {
            return;
        };
        if f.expires <= now {
            self.forward.foreign.remove(secret);
            return;
        }
        let due = match f.sent {
            Some((s, at)) => s != src || now.saturating_duration_since(at) >= PROBE_FORWARD_EVERY,
            None => true,
        };
        if !due {
            return;
        }
        f.sent = Some((src, now));
        let to = f.server.clone();
        self.queue_forward(
            to,
            Forward::ProbeSeen {
                secret: *secret,
                src,
            },
        );
    }

    fn expire_foreign(&mut self, now: Instant) {
        self.forward.foreign.retain(|_, f| f.expires > now);
    }
}
