//! Following a shared change log, sans-io: which sequence numbers a reader has seen
//! ([`LogCursor`]) and which servers of the deployment are alive ([`Peers`]).
//!
//! Several servers append to one log numbered by a database sequence. Sequence values
//! are taken when a transaction runs, not when it commits, so they become visible out of
//! order: a reader that saw 12 and 14 may see 13 a moment later, or never (a rolled-back
//! transaction). [`LogCursor`] remembers each missing number as a gap, asks for it again
//! on every read, and gives it up only after [`LogCursor::gap_timeout`]: a transaction
//! that commits late is still read, and a rolled-back one stops being asked for.
//!
//! [`Peers`] judges the other servers by a counter each of them bumps while it runs
//! (its `beat`), compared against this server's own clock: a server whose beat has not
//! moved for the dead-after window is down. No two clocks are ever compared.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Most missing numbers tracked after one jump; beyond this the numbers are assumed
/// skipped (a sequence cache, a manual `setval`) and only counted.
pub const MAX_GAP: u64 = 100_000;

/// The reader's position in the log.
#[derive(Debug, Clone)]
pub struct LogCursor {
    /// Highest number seen.
    hwm: u64,
    /// Numbers below `hwm` not seen yet, with when they were first missed.
    gaps: BTreeMap<u64, Instant>,
    gap_timeout: Duration,
    /// Numbers given up on (timed out or beyond [`MAX_GAP`]).
    abandoned: u64,
}

impl LogCursor {
    /// A cursor that has seen everything up to `start`.
    pub fn new(start: u64, gap_timeout: Duration) -> LogCursor {
        LogCursor {
            hwm: start,
            gaps: BTreeMap::new(),
            gap_timeout,
            abandoned: 0,
        }
    }

    /// Read rows numbered above this...
    pub fn after(&self) -> u64 {
        self.hwm
    }

    /// ...and these, the gaps, oldest first.
    pub fn gaps(&self) -> Vec<u64> {
        self.gaps.keys().copied().collect()
    }

    /// How long a gap is waited for.
    pub fn gap_timeout(&self) -> Duration {
        self.gap_timeout
    }

    /// Numbers given up on so far.
    pub fn abandoned(&self) -> u64 {
        self.abandoned
    }

    /// Everything at or below this was seen or given up: the reader's applied position.
    pub fn position(&self) -> u64 {
        self.gaps.keys().next().map_or(self.hwm, |&g| g - 1)
    }

    /// The numbers a read returned, in any order.
    pub fn observe(&mut self, now: Instant, seqs: &[u64]) {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for s in sorted {
            if s <= self.hwm {
                self.gaps.remove(&s);
                continue;
            }
            let missing = s - self.hwm - 1;
            if missing > MAX_GAP {
                self.abandoned += missing - MAX_GAP;
            }
            for g in (s - missing.min(MAX_GAP))..s {
                self.gaps.insert(g, now);
            }
            self.hwm = s;
        }
    }

    /// Gives up the gaps older than the timeout at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = self.gap_timeout;
        let before = self.gaps.len();
        self.gaps
            .retain(|_, first| now.saturating_duration_since(*first) < timeout);
        let n = before - self.gaps.len();
        self.abandoned += n as u64;
        n
    }

    /// When the oldest gap times out, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.gaps.values().min().map(|t| *t + self.gap_timeout)
    }
}

/// The other servers of the deployment and whether they are alive.
#[derive(Debug, Clone)]
pub struct Peers {
    dead_after: Duration,
    /// Server id -> (last beat seen, when it last moved, by our clock, down?).
    seen: HashMap<String, Peer>,
}

/// One other server as seen from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub beat: u64,
    pub moved: Instant,
    pub down: bool,
}

impl Peers {
    /// A server whose beat does not move for `dead_after` is down.
    pub fn new(dead_after: Duration) -> Peers {
        Peers {
            dead_after,
            seen: HashMap::new(),
        }
    }

    /// Server `id` showed `beat` at `now`. Returns true if it was down and is back.
    pub fn observe(&mut self, now: Instant, id: &str, beat: u64) -> bool {
        match self.seen.get_mut(id) {
            Some(p) if p.beat == beat => false,
            Some(p) => {
                let back = p.down;
                *p = Peer {
                    beat,
                    moved: now,
                    down: false,
                };
                back
            }
            None => {
                self.seen.insert(
                    id.to_string(),
                    Peer {
                        beat,
                        moved: now,
                        down: false,
                    },
                );
                false
            }
        }
    }

    /// A server named only by rows (it never beat while we watched): judged from `now`.
    pub fn expect(&mut self, now: Instant, id: &str) {
        self.seen.entry(id.to_string()).or_insert(Peer {
            beat: 0,
            moved: now,
            down: false,
        });
    }

    /// The servers that went down by `now` since the last call, sorted.
    pub fn newly_down(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for (id, p) in &mut self.seen {
            if !p.down && now.saturating_duration_since(p.moved) >= self.dead_after {
                p.down = true;
                out.push(id.clone());
            }
        }
        out.sort();
        out
    }

    /// Is `id` known and down?
    pub fn is_down(&self, id: &str) -> bool {
        self.seen.get(id).is_some_and(|p| p.down)
    }

    /// Every server seen, sorted by id.
    pub fn all(&self) -> Vec<(String, Peer)> {
        let mut v: Vec<_> = self
            .seen
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_late_commit_is_not_skipped() {
        let t0 = Instant::now();
        let mut c = LogCursor::new(10, 5 * S);
        c.observe(t0, &[11, 14, 12]);
        assert_eq!((c.after(), c.gaps()), (14, vec![13]));
        assert_eq!(c.position(), 12);
        // 13 commits late: it is read in a later query and the gap closes.
        c.observe(t0 + S, &[13, 15]);
        assert_eq!((c.after(), c.gaps(), c.position()), (15, vec![], 15));
        assert_eq!(c.abandoned(), 0);
    }

    #[test]
    fn a_rolled_back_number_is_given_up_after_the_timeout() {
        let t0 = Instant::now();
        let mut c = LogCursor::new(0, 5 * S);
        c.observe(t0, &[1, 3]);
        assert_eq!(c.next_expiry(), Some(t0 + 5 * S));
        assert_eq!(c.expire(t0 + 4 * S), 0);
        assert_eq!(c.gaps(), vec![2]);
        assert_eq!(c.expire(t0 + 5 * S), 1);
        assert_eq!((c.gaps(), c.position(), c.abandoned()), (vec![], 3, 1));
        // Duplicates and old numbers change nothing.
        c.observe(t0 + 6 * S, &[1, 3, 3]);
        assert_eq!((c.after(), c.gaps()), (3, vec![]));
    }

    #[test]
    fn a_huge_jump_tracks_at_most_max_gap() {
        let t0 = Instant::now();
        let mut c = LogCursor::new(0, S);
        c.observe(t0, &[MAX_GAP + 11]);
        assert_eq!(c.gaps().len() as u64, MAX_GAP);
        assert_eq!(c.abandoned(), 10);
        assert_eq!(c.gaps()[0], 11);
    }

    #[test]
    fn a_server_whose_beat_stops_is_down_and_can_come_back() {
        let t0 = Instant::now();
        let mut p = Peers::new(3 * S);
        p.observe(t0, "a", 1);
        p.observe(t0, "b", 7);
        p.expect(t0, "ghost");
        p.observe(t0 + 2 * S, "a", 2);
        assert!(p.newly_down(t0 + 2 * S).is_empty());
        // b keeps showing the same beat: it is not moving.
        p.observe(t0 + 3 * S, "b", 7);
        assert_eq!(p.newly_down(t0 + 3 * S), ["b", "ghost"]);
        assert!(p.newly_down(t0 + 4 * S).is_empty(), "reported once");
        assert!(p.is_down("b") && !p.is_down("a"));
        assert!(p.observe(t0 + 4 * S, "b", 8), "b is back");
        assert!(!p.is_down("b"));
        assert_eq!(p.newly_down(t0 + 5 * S), ["a"]);
    }
}
