//! Registration: the user's `reg`, the challenge/proof round, the welcome that starts a
//! session, re-registering on our own when the server forgot us, and abandoned
//! registrations whose late welcome is answered with a Dereg.
//!
//! Kept together because every path here shares one invariant: at most one
//! registration is in flight (`register_req`), and any registration we stop waiting
//! for may still have reached the server, so it is remembered in `abandoned` and its
//! session undone should its welcome come after all.

use std::time::{Duration, Instant};

use crate::identity;
use crate::proto::{FileEntry, Message, Proof, Reject, ReqId, Token};

use super::{ClientCore, Event, OfferFailure, State, Tag};

/// How many abandoned registrations we remember, to answer their late welcomes.
const MAX_ABANDONED: usize = 16;

impl ClientCore {
    #[cfg(test)]
    pub(crate) fn cfg_evict_for_tests(&mut self, evict: bool) {
        self.cfg.evict = evict;
    }

    /// Registers (or, after `dereg`, registers again keeping our offers). A dereg still
    /// in flight is dropped: the user changed their mind, and its late answer must not
    /// take the new session offline.
    pub fn register(&mut self, now: Instant) {
        let keep_offers = self.state == State::Offline || self.leaving;
        self.start_register(now, true, keep_offers);
    }

    /// Registers a restarted client that will offer its previous files again: the
    /// server keeps them meanwhile instead of dropping them.
    pub fn register_resuming(&mut self, now: Instant) {
        self.start_register(now, true, true);
    }

    pub(super) fn start_register(&mut self, now: Instant, user: bool, keep_offers: bool) {
        // A registration still in flight is superseded: should it have reached the
        // server, its late welcome is undone rather than adopted.
        if let Some(id) = self.register_req.take()
            && self.reqs.complete(id).is_some()
        {
            self.abandon(id);
        }
        self.reqs
            .cancel_where(|t| matches!(t, Tag::Register { .. } | Tag::Heartbeat));
        if user {
            self.leaving = false;
            self.next_reconnect = None;
            self.reqs.cancel_where(|t| *t == Tag::Dereg);
        }
        self.instance = self
            .instance
            .wrapping_add(self.seed.rotate_left(17) | 1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if user {
            self.state = State::Registering;
        }
        self.keep_offers = keep_offers;
        self.send_register(now, user, None);
    }

    /// Sends a registration, with a proof for `nonce` once the server has challenged us.
    pub(super) fn send_register(&mut self, now: Instant, user: bool, nonce: Option<[u8; 16]>) {
        let (name, tcp_port, instance) = (self.cfg.name.clone(), self.cfg.tcp_port, self.instance);
        let (advertise, keep_offers) = (self.cfg.advertise, self.keep_offers);
        let key = self.cfg.identity.as_ref().map(|i| i.public_key());
        let evict = self.cfg.evict;
        let proof = match (&self.cfg.identity, &key, nonce) {
            (Some(id), Some(k), Some(nonce)) => Some(Proof {
                nonce,
                sig: id.sign_registration(&identity::Registration {
                    binding: &self.binding,
                    nonce: &nonce,
                    name: &name,
                    instance,
                    tcp_port,
                    keep_offers,
                    advertise,
                    key: k,
                    evict,
                }),
            }),
            _ => None,
        };
        let id = self.request(now, Tag::Register { user }, |req| Message::Register {
            req,
            name,
            instance,
            tcp_port,
            keep_offers,
            advertise,
            key,
            proof,
            evict,
        });
        self.register_req = Some(id);
    }

    /// Offline after a session, idle before the first.
    pub(super) fn not_online(&self) -> State {
        if self.token.is_some() {
            State::Offline
        } else {
            State::Idle
        }
    }

    /// Remembers registration `id` as unwanted, should its welcome still come.
    pub(super) fn abandon(&mut self, id: ReqId) {
        if self.abandoned.len() >= MAX_ABANDONED {
            self.abandoned.pop_front();
        }
        self.abandoned.push_back(id);
    }

    /// A welcome for a registration we abandoned: take that session offline again.
    pub(super) fn bury(&mut self, now: Instant, req: ReqId, token: Token) {
        let Some(i) = self.abandoned.iter().position(|r| *r == req) else {
            return;
        };
        self.abandoned.remove(i);
        if self.settle == Some(req) {
            self.settle = None;
        }
        self.request(now, Tag::Bury, |req| Message::Dereg { req, token });
    }

    pub(super) fn on_welcome(&mut self, now: Instant, user: bool, token: Token, heartbeat_ms: u32) {
        self.token = Some(token);
        self.state = State::Online;
        self.next_reconnect = None;
        if heartbeat_ms > 0 {
            self.heartbeat = Duration::from_millis(heartbeat_ms as u64);
        }
        // A new session gets a full snapshot. After a move the rows we showed stay until
        // it replaces them (they were the deployment's, only the versions are not).
        let was_moving = self.moving();
        let moved = self.moved();
        if !was_moving {
            self.table.reset();
        }
        let carries = std::mem::take(&mut self.parked);
        if self.offered.is_empty() {
            // Port and address are new to the server: sign the record (no files), before
            // the heartbeat, so that the snapshot it starts already carries it.
            self.send_record(now);
        }
        // Heartbeat at once: it proves our address and starts the table push.
        self.send_heartbeat(now);
        self.queue_nat_test();
        if self.offered.is_empty() {
            for op in carries {
                self.offer_part_done(op, None);
            }
        } else {
            let files: Vec<FileEntry> = self.offered.values().cloned().collect();
            self.send_offer(now, files, true, carries);
        }
        if let Some((from, to)) = moved {
            self.events.push_back(Event::Moved { from, to });
        }
        self.events.push_back(match (user, moved) {
            (true, _) => Event::Registered,
            (false, None) => Event::ServerBack,
            // Said by `Moved`; nothing was lost as far as the user can tell.
            (false, Some(_)) => return,
        });
    }

    /// The server refused our registration. The user hears why; an automatic one
    /// retries later.
    pub(super) fn on_register_rejected(&mut self, now: Instant, user: bool, reason: Reject) {
        self.register_req = None;
        if user {
            self.end_move();
            self.state = self.not_online();
            self.fail_parked(OfferFailure::Rejected(Reject::NotRegistered));
            self.events.push_back(Event::RegisterRejected(reason));
        } else {
            // Someone else took our name while we were away: stay away, retry later.
            self.next_reconnect = Some(now + self.heartbeat);
            self.fail_parked(OfferFailure::Rejected(Reject::NotRegistered));
        }
    }

    /// Registration `id` was never answered.
    pub(super) fn on_register_timed_out(&mut self, now: Instant, id: ReqId, user: bool) {
        self.register_req = None;
        if user && self.move_registering(now, id) {
            return;
        }
        if user {
            // The user is told we are not registered: if the server did register
            // us and only its welcome was lost, undo it when it comes.
            self.abandon(id);
            self.state = self.not_online();
            self.fail_parked(OfferFailure::NoAck);
            self.events.push_back(Event::RegisterTimedOut);
        } else {
            // The same holds for our own attempt: a late welcome would leave an orphan
            // session that, without evicting, keeps the name from our next attempt.
            self.abandon(id);
            self.next_reconnect = Some(now + self.heartbeat);
            self.fail_parked(OfferFailure::NoAck);
        }
    }

    /// The server does not know our session (restarted without it, timed us out, or
    /// applied our dereg): register again on our own, keeping our offers, unless the
    /// user is leaving, in which case we are gone. A registration already in flight is
    /// not restarted. True if a re-registration is on its way.
    pub(super) fn lost_session(&mut self, now: Instant) -> bool {
        if self.leaving {
            self.go_offline();
            return false;
        }
        if !matches!(self.state, State::Online | State::Reconnecting) {
            return false;
        }
        self.state = State::Reconnecting;
        self.next_heartbeat = None;
        if !self.reqs.any(|t| matches!(t, Tag::Register { .. })) {
            self.next_reconnect = None;
            self.start_register(now, false, true);
        }
        true
    }
}
