//! Liveness: heartbeats while online, noticing a lost server, and coming back.
//!
//! A heartbeat is one retried request at a time: its retransmissions are our
//! heartbeats, and its failure is how we notice the server is gone. We keep
//! heartbeating while reconnecting, since the server persists sessions and the same
//! one may still be valid once it is back.

use std::time::Instant;

use crate::proto::Message;

use super::{ClientCore, Event, State, Tag};

impl ClientCore {
    pub(super) fn send_heartbeat(&mut self, now: Instant) {
        let Some(token) = self.token else { return };
        self.next_heartbeat = Some(now + self.heartbeat);
        if self.reqs.any(|t| *t == Tag::Heartbeat) {
            // Still being retried: its retransmissions are our heartbeats, and its
            // failure is how we notice a lost server.
            return;
        }
        let table_version = self.table.version();
        self.request(now, Tag::Heartbeat, |req| Message::Heartbeat {
            req,
            token,
            table_version,
        });
    }

    /// A heartbeat was acknowledged: if we had lost the server, it is back.
    pub(super) fn on_heartbeat_acked(&mut self) {
        if self.state == State::Reconnecting {
            self.state = State::Online;
            self.events.push_back(Event::ServerBack);
        }
    }

    /// A heartbeat was never answered: the server is lost (said once per outage).
    pub(super) fn on_heartbeat_timed_out(&mut self) {
        if self.state == State::Online {
            self.state = State::Reconnecting;
            self.events.push_back(Event::ServerLost);
        }
    }
}
