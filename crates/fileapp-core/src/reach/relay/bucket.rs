//! A token bucket in bytes, under a clock the caller passes in: the relay's per-session
//! and total rate limits. A copy reserves what it may read *before* reading, and gives
//! back what it did not use, so two directions sharing one bucket never overdraw it.

use std::time::{Duration, Instant};

const NANOS: u128 = 1_000_000_000;

/// `rate` bytes per second, at most `burst` bytes saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Saved tokens times 10^9 (token-nanoseconds: exact, no rounding drift).
    credit: u128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A `rate` of 0 is raised to 1 byte/s, a `burst` of 0 to 1.
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        let burst = burst.max(1);
        TokenBucket {
            rate: rate.max(1),
            burst,
            credit: u128::from(burst) * NANOS,
            last: now,
        }
    }

    /// The burst the relay uses for `rate`: a tenth of a second of it, at least 64 KiB
    /// (one copy buffer), at most 16 MiB.
    pub fn default_burst(rate: u64) -> u64 {
        (rate / 10).clamp(64 * 1024, 16 << 20)
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let cap = u128::from(self.burst) * NANOS;
        self.credit = (self.credit + dt.as_nanos() * u128::from(self.rate)).min(cap);
    }

    /// Tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        (self.credit / NANOS) as u64
    }

    /// Takes up to `max` tokens, but only if at least `min` (clamped to `max` and to the
    /// burst) are there: `Ok(granted)`, or `Err(when)` at least that many will be.
    pub fn reserve(&mut self, now: Instant, min: u64, max: u64) -> Result<u64, Instant> {
        let min = min.min(max).min(self.burst).max(1);
        let have = self.available(now);
        if have >= min {
            let n = have.min(max);
            self.credit -= u128::from(n) * NANOS;
            return Ok(n);
        }
        let missing = u128::from(min) * NANOS - self.credit;
        let nanos = missing.div_ceil(u128::from(self.rate));
        Err(now + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    /// Gives back tokens reserved and not used (never above the burst).
    pub fn refund(&mut self, n: u64) {
        let cap = u128::from(self.burst) * NANOS;
        self.credit = (self.credit + u128::from(n) * NANOS).min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert_eq!(b.reserve(t0, 1, 10_000), Ok(500));
        let when = b.reserve(t0, 100, 10_000).unwrap_err();
        assert_eq!(when, t0 + Duration::from_millis(100));
        assert_eq!(b.reserve(when, 100, 10_000), Ok(100));
        // Never more than the burst saved, however long it waits.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.available(later), 500);
    }

    #[test]
    fn over_any_span_no_more_than_rate_times_time_plus_burst() {
        let t0 = Instant::now();
        let (rate, burst) = (10_000u64, 2_000u64);
        let mut b = TokenBucket::new(rate, burst, t0);
        let mut now = t0;
        let mut total = 0u64;
        for step in 0..10_000u64 {
            match b.reserve(now, 300, 700) {
                Ok(n) => {
                    // Use part of it, give the rest back.
                    let used = n - (step % 3).min(n);
                    b.refund(n - used);
                    total += used;
                }
                Err(when) => {
                    assert!(when > now);
                    now = when;
                }
            }
            let elapsed = now.duration_since(t0).as_nanos() as u64;
            assert!(
                total <= rate * elapsed / 1_000_000_000 + burst,
                "step {step}"
            );
        }
        assert!(total > 0);
    }

    #[test]
    fn the_default_burst_is_a_tenth_of_a_second_within_bounds() {
        assert_eq!(TokenBucket::default_burst(1), 64 * 1024);
        assert_eq!(TokenBucket::default_burst(10_000_000), 1_000_000);
        assert_eq!(TokenBucket::default_burst(u64::MAX), 16 << 20);
    }

    #[test]
    fn a_time_before_the_last_one_adds_nothing() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let mut b = TokenBucket::new(100, 100, later);
        assert_eq!(b.reserve(later, 100, 100), Ok(100));
        assert!(b.reserve(t0, 1, 1).is_err());
    }
}
