//! Table pushes: the delta a verified client lacks is packed into parts and sent, at
//! most [`PUSH_WINDOW`] unacknowledged at a time (each acknowledgement lets the next part
//! go), and the unacknowledged ones sent again every [`Config::retry`] interval until
//! every part is acknowledged or the retries run out (the client's next heartbeat then
//! restarts it). Changes within [`Config::coalesce`] are pushed together, clients at the
//! same version share one packed delta, and push rounds keep to
//! [`Config::push_budget`](super::Config::push_budget).
//!
//! [`Config::retry`]: super::Config::retry
//! [`Config::coalesce`]: super::Config::coalesce

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::proto::{self, PackError, Token};

use super::{Index, OwnerId, SendError};

/// The parts of one packed delta, shared by every client it is pushed to.
pub(super) type Parts = Arc<Vec<Vec<u8>>>;

/// Parts of one push in flight (sent, not acknowledged) at most: a whole table at once
/// (hundreds of parts for a thousand owners) would overflow a client's receive buffer,
/// and a client that loses parts gets them again only after the retry interval.
pub const PUSH_WINDOW: usize = 32;

/// A push in flight to one client.
#[derive(Debug)]
pub(super) struct Push {
    /// Version the client held when the push started.
    pub(super) from: u64,
    /// Version the push brings it to.
    pub(super) to: u64,
    parts: Parts,
    /// Sent and not acknowledged (at most [`PUSH_WINDOW`]).
    unacked: BTreeSet<u16>,
    /// Parts `..sent` have been sent.
    sent: usize,
    /// When the unacknowledged parts are next sent again.
    pub(super) next_at: Instant,
    retries_left: u32,
}

impl Index {
    /// Pushes to listeners after the coalescing window, unless one is already due.
    pub(super) fn schedule_push(&mut self, now: Instant) {
        if self.push_due.is_none() {
            self.push_due = Some(now + self.cfg.coalesce);
        }
    }

    /// A change that its owner is about to sign (an offer, a registration): the push
    /// waits for the signed record, up to [`Config::sign_wait`](super::Config), so that
    /// clients get the change and its signature together, in one push.
    pub(super) fn schedule_push_signed_soon(&mut self, now: Instant, owner_signs: bool) {
        if !owner_signs {
            return self.schedule_push(now);
        }
        if self.push_due.is_none() {
            self.push_due = Some(now + self.cfg.sign_wait.max(self.cfg.coalesce));
        }
    }

    /// The signature arrived: push within the coalescing window.
    pub(super) fn schedule_push_now(&mut self, now: Instant) {
        let soon = now + self.cfg.coalesce;
        self.push_due = Some(self.push_due.map_or(soon, |t| t.min(soon)));
    }

    /// The coalesced push, when due and the push budget allows: every verified listener
    /// behind the table and not already being pushed to.
    pub(super) fn run_due_pushes(&mut self, now: Instant) {
        if self.push_due.is_none_or(|t| t > now) {
            return;
        }
        let ready = self.push_budget.ready_at(now, self.cfg.push_budget);
        if ready > now {
            // Changes keep coming faster than the budget pushes them: this round waits,
            // and carries everything that comes meanwhile.
            self.push_due = Some(ready);
            return;
        }
        self.push_due = None;
        let due: Vec<OwnerId> = self
            .listeners
            .iter()
            .copied()
            .filter(|&id| {
                let o = &self.owners[id];
                o.verified && o.push.is_none() && o.acked < self.version
            })
            .collect();
        let before = self.stats.table_parts_sent;
        for id in due {
            self.start_push(now, id, self.cfg.retry.retries);
        }
        let sent = self.stats.table_parts_sent - before;
        self.push_budget.spend(now, self.cfg.push_budget, sent);
    }

    /// Retransmissions that are due.
    pub(super) fn run_due_retransmits(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            self.retransmit(now, id);
        }
    }

    /// Drops the push to `id`, if any, with its timer.
    pub(super) fn cancel_push(&mut self, id: OwnerId) {
        if let Some(p) = self.owners[id].push.take() {
            self.timers.remove(&(p.next_at, id));
        }
    }

    /// The delta `from -> current`, packed once per version and shared.
    fn packed(&mut self, from: u64) -> Result<Parts, PackError> {
        let to = self.version;
        if self.packed_at != to {
            self.packed.clear();
            self.packed_at = to;
        }
        if let Some(p) = self.packed.get(&from) {
            return p.clone();
        }
        // A failure is kept too: every heartbeat of a client at `from` would otherwise
        // compute the same too-large delta again.
        let p = proto::pack_table(from, to, self.delta(from)).map(Arc::new);
        self.packed.insert(from, p.clone());
        p
    }

    /// Sends the client everything it lacks, replacing any push in flight. A delta that
    /// cannot be packed is reported, and nothing is sent.
    pub(super) fn start_push(&mut self, now: Instant, id: OwnerId, retries_left: u32) {
        let from = self.owners[id].acked;
        let to = self.version;
        self.cancel_push(id);
        let parts = match self.packed(from) {
            Ok(parts) => parts,
            Err(source) => {
                let o = &self.owners[id];
                let err = SendError::Pack {
                    client: o.name.clone(),
                    addr: o.addr,
                    from,
                    to,
                    source,
                };
                return self.report(err);
            }
        };
        let addr = self.owners[id].addr;
        let sent = parts.len().min(PUSH_WINDOW);
        self.queue_parts(addr, parts[..sent].iter().cloned());
        let next_at = now + self.cfg.retry.interval;
        self.owners[id].push = Some(Box::new(Push {
            from,
            to,
            // `pack_table` makes at most `MAX_TABLE_PARTS` parts: the indexes fit.
            unacked: (0..sent).map(|i| i as u16).collect(),
            sent,
            parts,
            next_at,
            retries_left,
        }));
        self.timers.insert((next_at, id));
    }

    fn queue_parts(&mut self, addr: SocketAddr, parts: impl Iterator<Item = Vec<u8>>) {
        let before = self.out.len();
        self.out.extend(parts.map(|p| (addr, p)));
        self.stats.table_parts_sent += (self.out.len() - before) as u64;
    }

    fn retransmit(&mut self, now: Instant, id: OwnerId) {
        let version = self.version;
        let interval = self.cfg.retry.interval;
        let o = &mut self.owners[id];
        let addr = o.addr;
        let Some(p) = o.push.as_mut() else {
            return;
        };
        if p.retries_left == 0 {
            // Give up; the client's next heartbeat reports its version and restarts.
            o.push = None;
            return;
        }
        let left = p.retries_left - 1;
        if p.to < version {
            // The table moved on: send the current delta instead of a stale one.
            o.push = None;
            return self.start_push(now, id, left);
        }
        p.retries_left = left;
        p.next_at = now + interval;
        let next_at = p.next_at;
        let resend: Vec<Vec<u8>> = p
            .unacked
            .iter()
            .filter_map(|&i| p.parts.get(usize::from(i)).cloned())
            .collect();
        self.queue_parts(addr, resend.into_iter());
        self.timers.insert((next_at, id));
    }

    pub(super) fn on_table_ack(
        &mut self,
        now: Instant,
        src: SocketAddr,
        token: Token,
        to: u64,
        part: u16,
    ) {
        let Some(id) = self
            .session(src, token)
            .filter(|&id| self.owners[id].online)
        else {
            return;
        };
        let o = &mut self.owners[id];
        o.last_seen = now;
        o.verified = true;
        self.listeners.insert(id);
        let Some(p) = o.push.as_mut() else { return };
        if p.to != to || !p.unacked.remove(&part) {
            return;
        }
        // The window moves on: the next part goes out (acknowledgements clock them).
        if p.sent < p.parts.len() {
            let i = p.sent;
            p.sent += 1;
            p.unacked.insert(i as u16);
            let (addr, next) = (o.addr, p.parts[i].clone());
            self.queue_parts(addr, std::iter::once(next));
            return;
        }
        let o = &mut self.owners[id];
        let Some(p) = o.push.as_mut() else { return };
        if p.unacked.is_empty() {
            let next_at = p.next_at;
            o.acked = to;
            o.push = None;
            self.timers.remove(&(next_at, id));
            if self.owners[id].acked < self.version {
                // The table moved on meanwhile: the next round brings it along (not a
                // push of its own at once, which under a stream of changes would be one
                // push per change and client).
                self.schedule_push(now);
            }
        }
    }
}
