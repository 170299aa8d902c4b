//! Table sync: applying the server's table pushes to our local copy
//! ([`ClientTable`](super::super::table::ClientTable)), acknowledging them, and telling
//! whether that copy shows our own acknowledged changes yet (read-your-writes).
//!
//! Pushes count only for the session they were sent to: outside of `Online` they are
//! dropped, and a new session resets the table for a full snapshot.

use crate::client::table::PartOutcome;
use crate::proto::{Item, Message};

use super::{ClientCore, Event, State};

impl ClientCore {
    /// True while the server has acknowledged a change that our table does not show yet.
    pub fn behind_own_writes(&self) -> bool {
        self.state == State::Online && self.table.version() < self.seen_version
    }

    /// One part of a table push (`from` -> `to`, part `part` of `parts`).
    pub(super) fn on_table_part(
        &mut self,
        from: u64,
        to: u64,
        part: u16,
        parts: u16,
        items: Vec<Item>,
    ) {
        let Some(token) = self.token else { return };
        if self.state != State::Online {
            return;
        }
        let (outcome, ack) = self.table.handle_part(from, to, part, parts, items);
        // A TableAck is a few fixed-size fields: it always encodes.
        if ack && let Ok(b) = (Message::TableAck { token, to, part }).encode() {
            self.out.push_back(b);
        }
        if outcome == PartOutcome::Applied {
            self.events.push_back(Event::TableUpdated);
        }
    }
}
