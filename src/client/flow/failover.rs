//! The flow's half of failover (the decisions are the core's, see
//! `fileapp_core::client::core`'s `failover.rs`): the channel follows the core to the
//! next server, the driver points its socket there, and the user hears one line once the
//! new server has us again.

use super::super::core::Event;
use super::super::messages as msg;
use super::{Action, Flow};

impl Flow {
    pub(super) fn on_failover_event(&mut self, ev: Event) {
        match ev {
            Event::Switch(to) => {
                // What the old session still had to send went out before this action;
                // from here on the channel handshakes with `to`, same pinned key.
                self.link.move_to_next();
                self.act(Action::UseServer(to));
            }
            Event::Moved { from, to } => {
                self.say(msg::server_moved(from, to));
                self.act(Action::StartServing);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
