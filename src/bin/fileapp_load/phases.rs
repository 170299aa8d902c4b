//! The four load phases (and the table sync between them), each a loop over the
//! [`Sim`] engine that returns its figures.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::engine::failover::Failover;
use super::engine::{Kind, PropRound, Sim};
use super::report::{
    FailoverReport, MemLoadReport, PropReport, RegReport, SyncReport, TputReport, percentile,
};

/// After the throughput window, how long answers to what is still in flight are
/// awaited (they are not counted in the rate).
pub const DRAIN: Duration = Duration::from_secs(2);

/// The requests of a throughput phase besides heartbeats: one in `register_every` is a
/// registration from scratch, one in `offer_every` an offer (0: none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mix {
    pub register_every: u64,
    pub offer_every: u64,
}

impl Sim {
    /// Phase 1: every client sends Register at once, each through a handshake of its own
    /// and the challenge round; retries like a real client.
    pub fn phase_register(&mut self) -> anyhow::Result<RegReport> {
        let before = self.c;
        let t0 = Instant::now();
        for c in 0..self.clients.len() as u32 {
            self.register(c)?;
        }
        self.flush();
        let mut last_answer = t0;
        // Every try's wait, plus a margin for the last answer to arrive.
        let limit = self.retry.interval * (self.retry.retries + 1) + Duration::from_millis(200);
        let deadline = t0 + limit;
        while !self.idle() && Instant::now() < deadline {
            let answered = self.c.welcomes + self.c.rejected;
            self.turn(5)?;
            if self.c.welcomes + self.c.rejected != answered {
                last_answer = Instant::now();
            }
        }
        let unanswered = self.abandon_pending();
        let c = self.c.since(&before);
        let seconds = last_answer.duration_since(t0).as_secs_f64();
        let welcomed = self.registered();
        Ok(RegReport {
            clients: self.clients.len(),
            welcomed,
            handshakes: c.handshakes,
            challenges: c.challenges,
            rejected: c.rejected,
            seconds,
            per_sec: if seconds > 0.0 {
                welcomed as f64 / seconds
            } else {
                0.0
            },
            retransmits: c.retransmits,
            unanswered: unanswered + c.gave_up,
            counters: c,
        })
    }

    /// Between phases: every registered client heartbeats with its table version and
    /// assembles the pushes it gets, until all hold the newest version and no table part
    /// came for [`Sim::quiet`] (the server is done retransmitting). Clients still behind
    /// after a second heartbeat again (as real ones would, later).
    pub fn sync(&mut self, timeout: Duration) -> anyhow::Result<SyncReport> {
        let before = self.c;
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let mut next_nudge = t0;
        let mut ok = false;
        while Instant::now() < deadline {
            let now = Instant::now();
            if now >= next_nudge {
                next_nudge = now + Duration::from_secs(1);
                for c in 0..self.clients.len() as u32 {
                    let max = self.max_version[self.server_of(c)];
                    let cl = &self.clients[c as usize];
                    if cl.token.is_some()
                        && cl.outstanding == 0
                        && (!cl.heartbeated || cl.version < max || cl.asm.is_some())
                    {
                        self.heartbeat(c)?;
                    }
                }
            }
            self.turn(5)?;
            // In sync, and the server has stopped retransmitting to us.
            if self.idle() && self.in_sync() && self.last_table_at.elapsed() >= self.quiet() {
                ok = true;
                break;
            }
        }
        // Late heartbeat ACKs do not matter here.
        self.abandon_pending();
        Ok(SyncReport {
            in_sync: ok,
            seconds: t0.elapsed().as_secs_f64(),
            // The first server's (each numbers its own table).
            version: self.max_version[0],
            counters: self.c.since(&before),
        })
    }

    /// Phase 2: for `duration`, keep `window` requests outstanding (at most one per
    /// client: a real client has one heartbeat in flight): heartbeats, with `mix`'s share
    /// of offers of a new file and of registrations from scratch.
    pub fn phase_throughput(
        &mut self,
        duration: Duration,
        window: u32,
        mix: Mix,
    ) -> anyhow::Result<TputReport> {
        let before = self.c;
        self.rtt_us.clear();
        self.record_rtt = true;
        let mut q: VecDeque<u32> = (0..self.clients.len() as u32)
            .filter(|&c| {
                let cl = &self.clients[c as usize];
                cl.token.is_some() && cl.outstanding == 0
            })
            .collect();
        let t0 = Instant::now();
        let deadline = t0 + duration;
        let mut n: u64 = 0;
        while Instant::now() < deadline {
            while self.inflight < window {
                let Some(c) = q.pop_front() else {
                    break;
                };
                let cl = &self.clients[c as usize];
                if cl.outstanding > 0 || cl.token.is_none() {
                    // Queued twice, or mid-registration: it comes back when done.
                    continue;
                }
                n += 1;
                if mix.register_every > 0 && n.is_multiple_of(mix.register_every) {
                    self.reregister(c)?;
                } else if mix.offer_every > 0 && n.is_multiple_of(mix.offer_every) {
                    self.offer(c, vec![format!("load-{c}-{n}.dat")], Kind::Offer)?;
                } else {
                    self.heartbeat(c)?;
                }
            }
            self.idle_q = Some(q);
            self.turn(1)?;
            q = self.idle_q.take().unwrap_or_default();
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let at_end = self.c.since(&before);
        self.record_rtt = false;
        // Drain: answers to what is still in flight (not counted in the rate).
        self.run_until(DRAIN, |s| s.idle())?;
        let unanswered = self.abandon_pending();
        let c = self.c.since(&before);
        let mut rtt = std::mem::take(&mut self.rtt_us);
        rtt.sort_unstable();
        let rate = |v: u64| v as f64 / elapsed;
        let acked = at_end.acks + at_end.welcomes;
        Ok(TputReport {
            seconds: elapsed,
            window,
            register_every: mix.register_every,
            offer_every: mix.offer_every,
            acked,
            acked_per_sec: rate(acked),
            heartbeats_per_sec: rate(at_end.heartbeat_acks),
            offers_per_sec: rate(at_end.offer_acks),
            registrations_per_sec: rate(at_end.welcomes),
            handshakes_per_sec: rate(at_end.handshakes),
            rtt_p50_us: percentile(&rtt, 0.50),
            rtt_p99_us: percentile(&rtt, 0.99),
            rtt_max_us: rtt.last().copied().unwrap_or(0),
            retransmits: c.retransmits,
            gave_up: c.gave_up,
            rejected: c.rejected,
            table_parts_per_sec: rate(at_end.table_parts),
            table_acks_per_sec: rate(at_end.table_acks_sent),
            datagrams_out_per_sec: rate(at_end.datagrams_out),
            datagrams_in_per_sec: rate(at_end.datagrams_in),
            unanswered_after_drain: unanswered,
            counters: c,
        })
    }

    /// Phase 3: `rounds` times, one client offers a new file; time until every
    /// registered client received a table part listing it.
    pub fn phase_propagation(
        &mut self,
        rounds: u32,
        round_timeout: Duration,
    ) -> anyhow::Result<PropReport> {
        let before = self.c;
        let n = self.registered();
        let mut all_us = Vec::new();
        let mut each_us = Vec::new();
        let mut ack_us = Vec::new();
        let mut completed = 0;
        let registered: Vec<u32> = (0..self.clients.len() as u32)
            .filter(|&c| self.clients[c as usize].token.is_some())
            .collect();
        for round in 0..rounds {
            if registered.is_empty() {
                break;
            }
            let offerer = registered[(round as usize * 7919) % registered.len()];
            let file = format!("prop-{round}.dat");
            let t0 = Instant::now();
            self.prop = Some(PropRound {
                file: file.clone(),
                round,
                t0,
                remaining: n,
                per_client_us: Vec::with_capacity(n),
                acked_at: None,
            });
            self.offer(offerer, vec![file], Kind::PropOffer)?;
            let done = self.run_until(round_timeout, |s| {
                s.prop.as_ref().is_some_and(|r| r.remaining == 0)
            })?;
            if let Some(r) = self.prop.take() {
                if done {
                    completed += 1;
                    all_us.push(r.per_client_us.iter().copied().max().unwrap_or(0));
                }
                each_us.extend(r.per_client_us);
                if let Some(a) = r.acked_at {
                    ack_us.push(a.saturating_duration_since(r.t0).as_micros() as u32);
                }
            }
            // Let the table ACKs of this round land before the next offer.
            self.run_until(Duration::from_millis(500), |s| s.idle() && s.in_sync())?;
        }
        self.abandon_pending();
        all_us.sort_unstable();
        each_us.sort_unstable();
        ack_us.sort_unstable();
        let ms = |us: u32| us as f64 / 1000.0;
        Ok(PropReport {
            rounds,
            completed,
            clients: n,
            all_p50_ms: ms(percentile(&all_us, 0.50)),
            all_p99_ms: ms(percentile(&all_us, 0.99)),
            all_max_ms: ms(all_us.last().copied().unwrap_or(0)),
            each_p50_ms: ms(percentile(&each_us, 0.50)),
            each_p99_ms: ms(percentile(&each_us, 0.99)),
            offer_ack_p50_ms: ms(percentile(&ack_us, 0.50)),
            counters: self.c.since(&before),
        })
    }

    /// Phase 4 load: every client registers (handshake, challenge, proof) then offers
    /// `files` files, with at most `window` requests outstanding in all; no heartbeats,
    /// so no pushes.
    pub fn phase_memory_load(
        &mut self,
        files: u32,
        window: u32,
        timeout: Duration,
    ) -> anyhow::Result<MemLoadReport> {
        let before = self.c;
        self.offer_after_welcome = Some(files);
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let total = self.clients.len();
        let mut next = 0;
        loop {
            if next >= total && self.idle() {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            while self.inflight < window && next < total && self.may_start(next as u32) {
                self.register(next as u32)?;
                next += 1;
            }
            self.turn(1)?;
        }
        let seconds = t0.elapsed().as_secs_f64();
        self.offer_after_welcome = None;
        self.abandon_pending();
        let c = self.c.since(&before);
        Ok(MemLoadReport {
            clients: total,
            welcomed: self.registered(),
            offers_acked: c.offer_acks,
            files_per_client: files,
            seconds,
            requests_per_sec: (c.welcomes + c.acks) as f64 / seconds.max(1e-9),
            retransmits: c.retransmits,
            gave_up: c.gave_up,
            counters: c,
        })
    }
}

impl Sim {
    /// Phase 5 (several servers): every client of server `dead` offers a new file and is
    /// acknowledged; then `kill` stops that server (SIGKILL) and, with heartbeats from
    /// every client running for `load` (window `window`), its clients move to the next
    /// server. Then a client of a surviving server takes a fresh snapshot (from version
    /// 0): every acknowledged file must be in it.
    pub fn phase_failover(
        &mut self,
        dead: usize,
        kill: impl FnOnce() -> anyhow::Result<()>,
        load: Duration,
        window: u32,
    ) -> anyhow::Result<FailoverReport> {
        let victims: Vec<u32> = (0..self.clients.len() as u32)
            .filter(|&c| self.server_of(c) == dead && self.clients[c as usize].token.is_some())
            .collect();
        let files: std::collections::BTreeSet<String> = victims
            .iter()
            .map(|c| format!("failover-{c}.dat"))
            .collect();
        let acks0 = self.c.offer_acks;
        for &c in &victims {
            self.offer(c, vec![format!("failover-{c}.dat")], Kind::Offer)?;
        }
        self.flush();
        self.run_until(Duration::from_secs(5), |s| s.idle())?;
        let offers_acked = self.c.offer_acks - acks0;
        kill()?;
        let killed_at = Instant::now();
        let waiting = victims.iter().copied().collect();
        self.failover = Some(Failover::new(dead, killed_at, waiting));
        let during = self.phase_throughput(load, window, Mix::default())?;
        let observer = (0..self.clients.len() as u32).find(|&c| {
            let cl = &self.clients[c as usize];
            self.server_of(c) != dead && cl.token.is_some() && !cl.moving
        });
        let mut lost = files.len();
        if let Some(o) = observer {
            if let Some(f) = self.failover.as_mut() {
                f.watch = Some((o, files));
            }
            let cl = &mut self.clients[o as usize];
            cl.version = 0;
            cl.asm = None;
            self.heartbeat(o)?;
            self.flush();
            self.run_until(Duration::from_secs(3), |s| {
                s.idle()
                    && s.failover
                        .as_ref()
                        .and_then(|f| f.watch.as_ref())
                        .is_some_and(|(_, m)| m.is_empty())
            })?;
            lost = self
                .failover
                .as_ref()
                .and_then(|f| f.watch.as_ref())
                .map_or(lost, |(_, m)| m.len());
        }
        let f = self.failover.take().expect("set above");
        let mut moved = f.moved_us;
        moved.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        Ok(FailoverReport {
            clients_of_dead: victims.len(),
            offers_acked,
            moved: moved.len(),
            not_moved: f.waiting.len(),
            moved_p50_ms: ms(percentile(&moved, 0.5)),
            moved_p99_ms: ms(percentile(&moved, 0.99)),
            moved_max_ms: ms(moved.last().copied().unwrap_or(0)),
            acked_files_lost: lost,
            observer_found: observer.is_some(),
            heartbeats_per_sec_during: during.acked_per_sec,
        })
    }
}
