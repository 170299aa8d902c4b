//! A server of the deployment killed under load: its clients move to another, as real
//! clients do (`fileapp_core::client::core`'s failover): a request that exhausted its
//! retries means the server is gone; the client points its socket at the next server of
//! the list, opens a new session there (same pinned key: one deployment) and registers
//! again with `evict` and `keep_offers`, so its name, key and offers carry over.
//!
//! Measured: the time from the kill until each of its clients is welcomed by another
//! server, and whether every offer the killed server had acknowledged is still listed
//! (a fresh snapshot, from version 0, of a client of a surviving server).

use std::collections::BTreeSet;
use std::time::Instant;

use fileapp::client::link::ClientLink;
use fileapp::proto::Item;

use super::Sim;

/// The failover under way.
#[derive(Debug)]
pub struct Failover {
    /// The server killed.
    pub dead: usize,
    pub killed_at: Instant,
    /// Clients of the dead server not yet welcomed elsewhere.
    pub waiting: BTreeSet<u32>,
    /// Kill to welcome elsewhere, per moved client, in µs.
    pub moved_us: Vec<u32>,
    /// The client whose snapshot is checked, and the acknowledged files not seen in it.
    pub watch: Option<(u32, BTreeSet<String>)>,
}

impl Failover {
    pub fn new(dead: usize, killed_at: Instant, waiting: BTreeSet<u32>) -> Failover {
        Failover {
            dead,
            killed_at,
            waiting,
            moved_us: Vec::new(),
            watch: None,
        }
    }

    /// Client `c` took a table part with `items`: the watched files it lists are found.
    pub fn look(&mut self, c: u32, items: &[Item]) {
        if let Some((w, missing)) = self.watch.as_mut()
            && *w == c
        {
            for i in items {
                if let Item::File { file, .. } = i {
                    missing.remove(file.as_str());
                }
            }
        }
    }
}

impl Sim {
    /// A request of `c` gave up: during a failover, a client of the dead server moves.
    pub(super) fn gave_up_on_server(&mut self, c: u32) {
        let Some(f) = &self.failover else { return };
        let cl = &self.clients[c as usize];
        if cl.server != f.dead || cl.moving {
            return;
        }
        if let Err(e) = self.move_client(c) {
            // Counted as not moved: it stays in `waiting`.
            tracing::debug!("client {c} could not move: {e:#}");
        }
    }

    /// Points `c` at the next server and registers there from scratch.
    fn move_client(&mut self, c: u32) -> anyhow::Result<()> {
        let n = self.servers.len();
        let cl = &mut self.clients[c as usize];
        cl.server = (cl.server + 1) % n;
        let to = self.servers[cl.server];
        self.socks[cl.sock as usize].connect(to)?;
        cl.moving = true;
        cl.link = ClientLink::new(self.pin, rand::random(), self.retry.interval);
        cl.binding = None;
        cl.register_attempts = 0;
        cl.token = None;
        // Each server numbers its own table: a snapshot follows from the new one.
        cl.version = 0;
        cl.asm = None;
        // A new registration instance, as a moving client makes.
        cl.instance = cl.instance.wrapping_add(1);
        self.c.moves += 1;
        self.register(c)
    }

    /// `c` was welcomed: if it was moving, it has arrived.
    pub(super) fn welcomed_after_move(&mut self, c: u32, now: Instant) {
        let cl = &mut self.clients[c as usize];
        if !cl.moving {
            return;
        }
        cl.moving = false;
        if let Some(f) = self.failover.as_mut()
            && f.waiting.remove(&c)
        {
            let us = now.saturating_duration_since(f.killed_at).as_micros();
            f.moved_us.push(us.min(u32::MAX as u128) as u32);
        }
    }
}
