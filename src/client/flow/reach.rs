//! Reach in the command flow: meetings the driver asks for on a download's behalf, and
//! the server's requests that we connect out to a requester.

use std::time::Instant;

use fileapp_core::reach::{Reach, Via};

use super::{Action, Flow};
use crate::client::core::Event;
use crate::client::table::Trust;

impl Flow {
    /// A download asks the server for meeting `id` with `owner` via `via`; the answer
    /// comes as [`Action::Met`]. `false`: we are not online (nothing was sent).
    pub fn connect(&mut self, now: Instant, owner: &str, via: Via, id: [u8; 16]) -> bool {
        let sent = self.core.connect(now, owner, via, id);
        self.step(now);
        sent
    }

    /// What the server judged of us (from our own entry in the table).
    pub fn own_reach(&self) -> Reach {
        let table = self.core.table();
        table
            .owner(self.core.name())
            .map(|o| o.reach)
            .unwrap_or_default()
    }

    /// The paths to `owner`, in the order to try them.
    pub(super) fn plan_to(&self, owner: &str) -> Vec<Via> {
        let theirs = (self.core.table().owner(owner))
            .map(|o| o.reach)
            .unwrap_or_default();
        fileapp_core::reach::plan(self.own_reach(), theirs)
    }

    pub(super) fn on_reach_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::Connected(m) => self.act(Action::Met {
                id: m.id,
                result: Ok(m),
            }),
            Event::ConnectFailed { id, reason } => self.act(Action::Met {
                id,
                result: Err(reason),
            }),
            Event::Dial { from, meeting } => self.dial(now, from, meeting),
            Event::PunchPeer { id, peer } => self.act(Action::PunchPeer { id, peer }),
            _ => {}
        }
    }

    /// How long a dial for a requester our table does not show yet waits for it (it
    /// registered a moment ago; its entry is on its way).
    const DIAL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

    /// Dials waiting for their requester to appear in the table: tried again after
    /// every table update, dropped after [`Self::DIAL_WAIT`] (at most 16 wait).
    pub(super) fn retry_dials(&mut self, now: Instant) {
        let waiting = std::mem::take(&mut self.waiting_dials);
        for (until, from, meeting) in waiting {
            if self.core.table().owner(&from).is_some() {
                self.dial(now, from, meeting);
            } else if now < until {
                self.waiting_dials.push((until, from, meeting));
            }
        }
    }

    fn dial(&mut self, now: Instant, from: String, meeting: crate::client::core::Meeting) {
        {
            {
                // Only for a requester our table knows (and whose record was not
                // forged), and a reverse connection only to the address the table gives
                // it: the server cannot aim our connections elsewhere. A record not
                // signed yet (the requester registered a moment ago) is enough: TLS
                // then pins the requester's key as always.
                let Some(o) = self.core.table().owner(&from) else {
                    if self.waiting_dials.len() < 16 {
                        let until = now + Self::DIAL_WAIT;
                        self.waiting_dials.push((until, from, meeting));
                    }
                    return;
                };
                if o.trust == Trust::Forged || self.peer_changes.contains_key(&from) {
                    return;
                }
                // (An IPv4 address and its IPv4-mapped IPv6 form are one address.)
                let canon = |a: std::net::SocketAddr| (a.ip().to_canonical(), a.port());
                let theirs = canon(std::net::SocketAddr::new(o.ip, o.tcp_port));
                if meeting.via == Via::Reverse && meeting.addr.map(canon) != Some(theirs) {
                    return;
                }
                let key = o.key;
                self.act(Action::Dial { from, key, meeting });
            }
        }
    }
}
