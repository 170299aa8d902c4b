//! Table parts on shared sockets: which simulated client takes a part, assembling the
//! delta, and acknowledging it as a real client would.
//!
//! Table parts carry no token, so a part arriving on a shared socket is given to a client
//! of that socket that expects it (same `from` as its table version, part not yet held);
//! copies of one part for clients at the same version are identical, so any such client
//! may take it. A part nobody expects is a retransmission of something already held: it
//! is acknowledged for every client of the socket that holds that version.

use std::time::{Duration, Instant};

use anyhow::Context;

use fileapp::proto::{Item, Message};

use super::engine::Sim;

/// A duplicate table part is acknowledged (for every client of its socket that holds
/// it) at most once per this gap: well under the server's retransmission interval
/// (`RetryPolicy::default()`), so each retransmission round is acknowledged once.
const DUP_ACK_GAP: Duration = Duration::from_millis(100);
/// Above this many remembered duplicates, a socket forgets those older than the gap.
const DUP_ACKED_MAX: usize = 4096;

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
    /// A table part arrived on socket `s`. Fails only if a TableAck does not encode.
    pub fn on_table(
        &mut self,
        s: usize,
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
        self.note_version(s, id.to);
        match self.taker(s, id) {
            Some(c) => self.take_part(s, c, now, id, items),
            // A copy nobody is missing: a retransmission (or a push that crossed a
            // heartbeat).
            None => self.ack_duplicate(s, now, id),
        }
    }

    /// Which client of socket `s` expects this part? Prefers one already assembling
    /// this delta, then one idle at `from`, then one assembling an older delta.
    fn taker(&self, s: usize, id: PartId) -> Option<u32> {
        let (mut idle, mut older) = (None, None);
        for &c in &self.socks[s].clients {
            let cl = &self.clients[c as usize];
            if cl.token.is_none() {
                continue;
            }
            match &cl.asm {
                Some(a) if a.is_delta_of(id) && !a.has(id.part) => return Some(c),
                Some(a) if a.is_delta_of(id) => {}
                Some(a) if cl.version == id.from && a.to < id.to => {
                    older = older.or(Some(c));
                }
                None if cl.version == id.from && idle.is_none() => idle = Some(c),
                _ => {}
            }
        }
        idle.or(older)
    }

    /// Acknowledges a part nobody is missing for every client of socket `s` holding its
    /// version, at most once per [`DUP_ACK_GAP`].
    fn ack_duplicate(&mut self, s: usize, now: Instant, id: PartId) -> anyhow::Result<()> {
        self.c.table_parts_dup += 1;
        let sock = &mut self.socks[s];
        let key = (id.to, id.part);
        if sock
            .dup_acked
            .get(&key)
            .is_some_and(|t| now.saturating_duration_since(*t) < DUP_ACK_GAP)
        {
            return Ok(());
        }
        if sock.dup_acked.len() >= DUP_ACKED_MAX {
            sock.dup_acked
                .retain(|_, t| now.saturating_duration_since(*t) < DUP_ACK_GAP);
        }
        sock.dup_acked.insert(key, now);
        for &c in &sock.clients {
            let cl = &self.clients[c as usize];
            if let (Some(token), true) = (cl.token, cl.version >= id.to) {
                let ack = Message::TableAck {
                    token,
                    to: id.to,
                    part: id.part,
                };
                sock.out.push(&ack).context("cannot encode a TableAck")?;
                self.c.table_acks_sent += 1;
            }
        }
        Ok(())
    }

    /// Client `c` takes the part: assembles it, acknowledges it, and notes whether it
    /// lists the file of the running propagation round.
    fn take_part(
        &mut self,
        s: usize,
        c: u32,
        now: Instant,
        id: PartId,
        items: &[Item],
    ) -> anyhow::Result<()> {
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
        if let Some(token) = cl.token {
            let ack = Message::TableAck {
                token,
                to: id.to,
                part: id.part,
            };
            self.socks[s]
                .out
                .push(&ack)
                .context("cannot encode a TableAck")?;
            self.c.table_acks_sent += 1;
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
        Ok(())
    }
}
