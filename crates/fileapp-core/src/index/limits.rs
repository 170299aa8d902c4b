//! Limits that keep one source from taking the server: a token bucket per source address
//! (rate limiting), the count of online clients per IP address, and the per-client file
//! cap. The rate limiter's refill rule lives here only.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Index, OwnerId};

/// A bucket holds this many seconds' worth of the rate ([`Config::rate_limit`]): bursts
/// of that size are allowed, and an empty bucket is full again after this many seconds.
///
/// [`Config::rate_limit`]: super::Config::rate_limit
pub const RATE_BURST_SECONDS: u32 = 2;

/// Rate-limit state of one source address.
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The push rounds' budget: tokens are table parts, paid after a round (which may
/// leave it in debt); a round waits until the debt is paid back.
#[derive(Debug)]
pub(super) struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    pub(super) fn full(now: Instant) -> Budget {
        Budget {
            tokens: f64::INFINITY,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32) {
        let rate = f64::from(rate);
        let burst = (rate * super::config::PUSH_BURST_SECONDS).max(1.0);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    /// When a round may go: `now`, or when the debt is paid back (`rate` 0: always now).
    pub(super) fn ready_at(&mut self, now: Instant, rate: u32) -> Instant {
        if rate == 0 {
            return now;
        }
        self.refill(now, rate);
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / f64::from(rate))
        }
    }

    /// A round sent `parts`.
    pub(super) fn spend(&mut self, now: Instant, rate: u32, parts: u64) {
        if rate != 0 {
            self.refill(now, rate);
            self.tokens -= parts as f64;
        }
    }
}

impl Index {
    /// Takes one token from `src`'s bucket: is this datagram within the rate?
    pub(super) fn allow(&mut self, now: Instant, src: SocketAddr) -> bool {
        let rate = self.cfg.rate_limit;
        if rate == 0 {
            return true;
        }
        let rate = f64::from(rate);
        let burst = f64::from(RATE_BURST_SECONDS) * rate;
        let b = self.buckets.entry(src).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets idle long enough to be full again: they carry no state, and
    /// datagrams from many (spoofed) sources must not grow the table without bound.
    pub(super) fn forget_full_buckets(&mut self, now: Instant) {
        if self.cfg.rate_limit == 0 {
            return;
        }
        let refill = Duration::from_secs(u64::from(RATE_BURST_SECONDS));
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < refill);
    }

    /// Counts one more (`online`) or one fewer online client behind `ip`.
    pub(super) fn count_ip(&mut self, ip: IpAddr, online: bool) {
        if online {
            *self.per_ip.entry(ip).or_default() += 1;
        } else if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Would one more online client behind `ip` exceed [`Config::max_clients_per_ip`]?
    ///
    /// [`Config::max_clients_per_ip`]: super::Config::max_clients_per_ip
    pub(super) fn ip_full(&self, ip: IpAddr) -> bool {
        self.per_ip.get(&ip).copied().unwrap_or(0) >= self.cfg.max_clients_per_ip
    }

    /// Would `added` more files exceed [`Config::max_files_per_client`] for `id`?
    ///
    /// [`Config::max_files_per_client`]: super::Config::max_files_per_client
    pub(super) fn files_full(&self, id: OwnerId, added: usize) -> bool {
        self.owners[id].files.len() + added > self.cfg.max_files_per_client
    }
}
