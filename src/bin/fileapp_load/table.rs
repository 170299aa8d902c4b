//! Table parts: assembling the delta, and acknowledging each part as a real client
//! would. Every client has its own socket, so a part is for the client it arrived at.

use std::time::Instant;

use fileapp::proto::{Item, Message};

use super::engine::Sim;

/// Which part of which delta a `Table` message carries.
#[derive(Debug, Clone, Copy)]
pub struct PartId {
    pub from: u64,
    pub to: u64,
    pub part: u16,
    pub parts: u16,
}

/// A table delta being assembled.
pub struct Asm {
    from: u64,
    to: u64,
    parts: u16,
    have: Vec<u64>,
    missing: u16,
}

impl Asm {
    fn new(id: PartId) -> Asm {
        Asm {
            from: id.from,
            to: id.to,
            parts: id.parts,
            have: vec![0; (id.parts as usize).div_ceil(64)],
            missing: id.parts,
        }
    }

    /// Is this the delta `id` belongs to?
    fn is_delta_of(&self, id: PartId) -> bool {
        self.from == id.from && self.to == id.to && self.parts == id.parts
    }

    fn has(&self, part: u16) -> bool {
        self.have[part as usize / 64] & (1 << (part % 64)) != 0
    }

    /// Records `part` (not yet held); true when the delta is complete.
    fn add(&mut self, part: u16) -> bool {
        self.have[part as usize / 64] |= 1 << (part % 64);
        self.missing -= 1;
        self.missing == 0
    }
}

impl Sim {
    /// The server (its index in [`Sim::new`](super::engine::Sim::new)'s list) client `c` speaks to.
    pub fn server_of(&self, c: u32) -> usize {
        self.clients[c as usize].server
    }

    /// The newest version seen of client `c`'s server's table, raised to `v`.
    pub fn saw_version(&mut self, c: u32, v: u64) {
        let s = self.server_of(c);
        self.max_version[s] = self.max_version[s].max(v);
    }

    /// Every registered client holds the newest table version seen, none mid-delta.
    pub fn in_sync(&self) -> bool {
        self.clients.iter().all(|c| {
            let newest = self.max_version[c.server];
            c.token.is_none() || (c.version >= newest && c.asm.is_none())
        })
    }

    /// A table part arrived for client `c`. Fails only if a TableAck does not encode.
    pub fn on_table(
        &mut self,
        c: u32,
        now: Instant,
        id: PartId,
        items: &[Item],
    ) -> anyhow::Result<()> {
        self.c.table_parts += 1;
        self.last_table_at = now;
        if id.parts == 0 || id.part >= id.parts || id.from >= id.to {
            self.c.table_parts_ignored += 1;
            return Ok(());
        }
        self.saw_version(c, id.to);
        let cl = &self.clients[c as usize];
        let Some(token) = cl.token else {
            self.c.table_parts_ignored += 1;
            return Ok(());
        };
        let fresh = match &cl.asm {
            Some(a) if a.is_delta_of(id) => !a.has(id.part),
            // A newer delta from the version held replaces one being assembled.
            _ => cl.version == id.from,
        };
        if fresh {
            self.take_part(c, now, id, items);
        } else if cl.version >= id.to || cl.asm.as_ref().is_some_and(|a| a.is_delta_of(id)) {
            // A copy already held: a retransmission (our ack was lost or late).
            self.c.table_parts_dup += 1;
        } else {
            // From another version than the one held: a push that crossed a heartbeat.
            self.c.table_parts_ignored += 1;
            return Ok(());
        }
        let ack = Message::TableAck {
            token,
            to: id.to,
            part: id.part,
        };
        self.notify(c, now, &ack)?;
        self.c.table_acks_sent += 1;
        Ok(())
    }

    /// Client `c` takes the part: assembles it, and notes whether it lists the file of
    /// the running propagation round.
    fn take_part(&mut self, c: u32, now: Instant, id: PartId, items: &[Item]) {
        let cl = &mut self.clients[c as usize];
        let asm = match &mut cl.asm {
            Some(a) if a.is_delta_of(id) => a,
            other => other.insert(Asm::new(id)),
        };
        if asm.add(id.part) {
            cl.asm = None;
            cl.version = id.to;
            self.c.deltas_applied += 1;
        }
        if let Some(f) = self.failover.as_mut() {
            f.look(c, items);
        }
        if let Some(r) = self.prop.as_mut()
            && cl.prop_seen != r.round + 1
            && items
                .iter()
                .any(|i| matches!(i, Item::File { file, .. } if *file == r.file))
        {
            cl.prop_seen = r.round + 1;
            r.remaining = r.remaining.saturating_sub(1);
            let us = now.saturating_duration_since(r.t0).as_micros();
            r.per_client_us.push(us.min(u32::MAX as u128) as u32);
        }
    }
}
