//! Request/ACK/retry bookkeeping: which requests are waiting for a reply, when each must
//! be sent again, and which ran out of retries. Sans-io: the caller passes `now` in and
//! sends the datagrams handed back.
//!
//! The retry defaults live here once: [`RETRY_INTERVAL`] (500 ms) and [`RETRIES`] (3),
//! bundled as [`RetryPolicy::DEFAULT`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::proto::ReqId;

/// Default gap between two sends of the same request (client requests and the server's
/// table parts alike): 500 ms. Drivers and tools that retransmit should use this, not the
/// number.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// [`RETRY_INTERVAL`] in milliseconds, for command-line defaults.
pub const RETRY_INTERVAL_MS: u64 = RETRY_INTERVAL.as_millis() as u64;

/// Default number of sends after the first before a request is given up: 3.
pub const RETRIES: u32 = 3;

/// How often and how many times a request is sent again before it is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Gap between two sends of the same request.
    pub interval: Duration,
    /// Sends after the first one.
    pub retries: u32,
}

impl RetryPolicy {
    /// The protocol's contract: [`RETRIES`] retries, [`RETRY_INTERVAL`] apart.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        interval: RETRY_INTERVAL,
        retries: RETRIES,
    };

    /// How long a request can take from its first send until it gives up.
    pub fn budget(&self) -> Duration {
        self.interval * (self.retries + 1)
    }

    /// The default number of retries, `interval` apart (e.g. an operator's `--retry-ms`).
    pub const fn with_interval(interval: Duration) -> RetryPolicy {
        RetryPolicy {
            interval,
            retries: RETRIES,
        }
    }
}

impl Default for RetryPolicy {
    /// [`RetryPolicy::DEFAULT`]: 3 retries, 500 ms apart.
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

#[derive(Debug)]
struct Entry<T> {
    datagram: Vec<u8>,
    next_at: Instant,
    retries_left: u32,
    tag: T,
}

/// The requests of one endpoint that await a reply, each with a caller-chosen tag.
#[derive(Debug)]
pub struct Outstanding<T> {
    policy: RetryPolicy,
    next_id: ReqId,
    entries: BTreeMap<ReqId, Entry<T>>,
}

impl<T> Outstanding<T> {
    /// `first_id` should be random per process, so ids of a restarted client do not
    /// collide with replies still in flight for its previous run.
    pub fn new(policy: RetryPolicy, first_id: ReqId) -> Self {
        Outstanding {
            policy,
            next_id: first_id,
            entries: BTreeMap::new(),
        }
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> ReqId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Records request `id` sent now as `datagram`; returns the datagram to send.
    pub fn start(&mut self, now: Instant, id: ReqId, datagram: Vec<u8>, tag: T) -> Vec<u8> {
        let first = datagram.clone();
        self.entries.insert(
            id,
            Entry {
                datagram,
                next_at: now + self.policy.interval,
                retries_left: self.policy.retries,
                tag,
            },
        );
        first
    }

    /// A reply for `id` arrived: the request is done. `None` for an unknown or already
    /// answered id (a late or duplicated reply), which the caller must ignore.
    pub fn complete(&mut self, id: ReqId) -> Option<T> {
        self.entries.remove(&id).map(|e| e.tag)
    }

    /// Drops every pending request whose tag matches, without reporting it.
    pub fn cancel_where(&mut self, mut pred: impl FnMut(&T) -> bool) {
        self.entries.retain(|_, e| !pred(&e.tag));
    }

    /// Is any pending request's tag matching?
    pub fn any(&self, mut pred: impl FnMut(&T) -> bool) -> bool {
        self.entries.values().any(|e| pred(&e.tag))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the next retransmission or give-up is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.next_at).min()
    }

    /// Retransmits what is due into `send`, and returns the tags of requests that ran
    /// out of retries (they are forgotten).
    pub fn handle_timeout(&mut self, now: Instant, send: &mut Vec<Vec<u8>>) -> Vec<(ReqId, T)> {
        let mut failed_ids = Vec::new();
        for (id, e) in self.entries.iter_mut() {
            if e.next_at > now {
                continue;
            }
            if e.retries_left == 0 {
                failed_ids.push(*id);
            } else {
                e.retries_left -= 1;
                e.next_at = now + self.policy.interval;
                send.push(e.datagram.clone());
            }
        }
        failed_ids
            .into_iter()
            .filter_map(|id| self.entries.remove(&id).map(|e| (id, e.tag)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn retries_three_times_500ms_apart_then_fails() {
        let t0 = Instant::now();
        let mut o = Outstanding::new(RetryPolicy::default(), 10);
        let id = o.next_id();
        assert_eq!(o.start(t0, id, vec![1], "offer"), vec![1]);
        let mut sent = Vec::new();
        // Nothing before 500 ms.
        assert!(o.handle_timeout(t0 + 499 * MS, &mut sent).is_empty());
        assert!(sent.is_empty());
        let mut times = Vec::new();
        let mut now;
        loop {
            now = o.poll_timeout().expect("pending");
            let failed = o.handle_timeout(now, &mut sent);
            if !failed.is_empty() {
                assert_eq!(failed, vec![(id, "offer")]);
                break;
            }
            times.push(now - t0);
        }
        assert_eq!(times, vec![500 * MS, 1000 * MS, 1500 * MS]);
        assert_eq!(sent.len(), 3);
        assert_eq!(
            now - t0,
            2000 * MS,
            "given up one interval after the last retry"
        );
        assert!(o.is_empty());
        assert_eq!(o.poll_timeout(), None);
    }

    #[test]
    fn ack_correlates_by_id_and_late_acks_are_ignored() {
        let t0 = Instant::now();
        let mut o = Outstanding::new(RetryPolicy::default(), 1);
        let a = o.next_id();
        let b = o.next_id();
        o.start(t0, a, vec![b'a'], 'a');
        o.start(t0, b, vec![b'b'], 'b');
        assert_eq!(o.complete(b), Some('b'));
        assert_eq!(o.complete(b), None, "duplicate ACK confirms nothing");
        assert_eq!(o.complete(99), None, "unknown ACK confirms nothing");
        let mut sent = Vec::new();
        o.handle_timeout(t0 + 500 * MS, &mut sent);
        assert_eq!(
            sent,
            vec![vec![b'a']],
            "only the unanswered request is resent"
        );
    }

    #[test]
    fn defaults_are_the_protocol_contract() {
        assert_eq!(RETRY_INTERVAL, 500 * MS);
        assert_eq!(RETRY_INTERVAL_MS, 500);
        assert_eq!(RETRIES, 3);
        assert_eq!(RetryPolicy::default(), RetryPolicy::DEFAULT);
        assert_eq!(
            RetryPolicy::with_interval(RETRY_INTERVAL),
            RetryPolicy::DEFAULT
        );
    }

    #[test]
    fn ids_wrap_without_panicking() {
        let mut o: Outstanding<()> = Outstanding::new(RetryPolicy::default(), u64::MAX);
        assert_eq!(o.next_id(), u64::MAX);
        assert_eq!(o.next_id(), 0);
    }
}
