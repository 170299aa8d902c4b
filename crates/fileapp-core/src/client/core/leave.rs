//! Leaving: the user's `dereg`, the best-effort goodbye when the program exits, and the
//! `leaving` state between them and offline.
//!
//! Once the user asks to leave, nothing brings the client back online on its own:
//! heartbeats and re-registration stop here, and a NotRegistered (see
//! `lost_session`) means "we are gone". Only a new `reg` ends it.

use std::time::Instant;

use crate::proto::{Message, Reject};

use super::{ClientCore, Event, OfferFailure, State, Tag};

impl ClientCore {
    /// Deregisters. Returns false if not online. From here until the outcome nothing
    /// automatic runs: no heartbeats, no re-registration.
    pub fn dereg(&mut self, now: Instant) -> bool {
        if !matches!(self.state, State::Online | State::Reconnecting) {
            return false;
        }
        self.stop_automatic();
        self.leaving = true;
        if !self.reqs.any(|t| *t == Tag::Dereg) {
            let token = self.token.unwrap_or_default();
            self.request(now, Tag::Dereg, |req| Message::Dereg { req, token });
        }
        true
    }

    /// Best-effort goodbye when the program exits: one Dereg, not retried. Whatever the
    /// state, the core stops acting on its own: a registration in flight is abandoned
    /// (and a late welcome for it answered with a Dereg, should the driver still run).
    pub fn goodbye(&mut self) -> Option<Vec<u8>> {
        let online = matches!(self.state, State::Online | State::Reconnecting);
        let in_flight = self.register_req;
        self.stop_automatic();
        // A registration abandoned here may still reach the server: the driver should
        // stay while `settling` to answer its late welcome (see `settling`).
        self.settle = in_flight.filter(|id| self.abandoned.contains(id));
        if self.state == State::Registering {
            self.state = self.not_online();
        }
        self.leaving = online;
        let token = self.token.filter(|_| online)?;
        let req = self.reqs.next_id();
        // A Dereg is a few fixed-size fields: it always encodes.
        Message::Dereg { req, token }.encode().ok()
    }

    /// Whether a driver that is exiting should stay a little longer: `goodbye` abandoned
    /// a registration that may yet be welcomed (its welcome gets a Dereg), or that Dereg
    /// is still unacknowledged. Stay at most one retry budget; then nothing more can
    /// come of it.
    pub fn settling(&self) -> bool {
        self.settle.is_some() || self.reqs.any(|t| *t == Tag::Bury)
    }

    /// Stops every automatic action: heartbeats, re-registration (abandoned: its late
    /// welcome gets a Dereg), and user offers waiting for a re-registration fail.
    pub(super) fn stop_automatic(&mut self) {
        self.next_heartbeat = None;
        self.next_reconnect = None;
        self.reqs.cancel_where(|t| *t == Tag::Heartbeat);
        if let Some(id) = self.register_req.take()
            && self.reqs.complete(id).is_some()
        {
            self.abandon(id);
        }
        self.fail_parked(OfferFailure::Rejected(Reject::NotRegistered));
    }

    /// The dereg is done (or the server says we are gone): offline, said once.
    pub(super) fn go_offline(&mut self) {
        self.stop_automatic();
        self.reqs.cancel_where(|t| *t == Tag::Dereg);
        self.leaving = false;
        self.state = State::Offline;
        self.table.reset();
        self.events.push_back(Event::Deregistered);
    }

    /// Our dereg was never answered.
    pub(super) fn on_dereg_timed_out(&mut self) {
        // We stopped heartbeating: the server takes us offline by itself.
        self.leaving = false;
        self.state = State::Offline;
        self.table.reset();
        self.events.push_back(Event::DeregTimedOut);
    }
}
