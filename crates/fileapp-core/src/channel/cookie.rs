//! Stateless cookies: proof that a handshake's sender receives datagrams at its source
//! address, asked for before the server spends a Diffie-Hellman on it when it is under
//! load (WireGuard's cookie reply, simplified).
//!
//! A cookie is the first 16 bytes of BLAKE3, keyed with a secret that changes every
//! [`ROTATE`], over the source address. The server keeps only the current and the
//! previous secret, so a cookie is good for one to two periods and nothing per client is
//! stored. An attacker that spoofs addresses never sees the cookies sent to them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often the cookie secret changes.
pub const ROTATE: Duration = Duration::from_secs(120);

/// Length of a cookie on the wire.
pub const COOKIE_LEN: usize = 16;

pub type Cookie = [u8; COOKIE_LEN];

/// The server's cookie secrets.
#[derive(Debug, Clone)]
pub struct Cookies {
    /// Secret of the current period and of the one before.
    current: [u8; 32],
    previous: [u8; 32],
    /// When the current secret took over.
    since: Instant,
}

impl Cookies {
    /// Starts with `secret` (from the caller's randomness) as the current secret.
    pub fn new(secret: [u8; 32], now: Instant) -> Cookies {
        Cookies {
            current: secret,
            previous: blake3::derive_key("fileapp cookie previous v1", &secret),
            since: now,
        }
    }

    /// Moves to a fresh secret derived from the old one once a period is over. The
    /// derivation is one-way, so a leaked secret does not reveal the earlier ones.
    pub fn rotate(&mut self, now: Instant) {
        while now.saturating_duration_since(self.since) >= ROTATE {
            self.previous = self.current;
            self.current = blake3::derive_key("fileapp cookie next v1", &self.current);
            self.since += ROTATE;
        }
    }

    /// The cookie for `src` in the current period.
    pub fn make(&self, src: SocketAddr) -> Cookie {
        Self::mac(&self.current, src)
    }

    /// Whether `cookie` is one this server made for `src` in this or the last period.
    pub fn verify(&self, src: SocketAddr, cookie: &Cookie) -> bool {
        // Both compared in full either way: no early exit that would time the secret.
        let a = ct_eq(&Self::mac(&self.current, src), cookie);
        let b = ct_eq(&Self::mac(&self.previous, src), cookie);
        a | b
    }

    fn mac(secret: &[u8; 32], src: SocketAddr) -> Cookie {
        let mut h = blake3::Hasher::new_keyed(secret);
        match src {
            SocketAddr::V4(a) => h.update(&[4]).update(&a.ip().octets()),
            SocketAddr::V6(a) => h.update(&[6]).update(&a.ip().octets()),
        };
        h.update(&src.port().to_be_bytes());
        let mut out = [0u8; COOKIE_LEN];
        out.copy_from_slice(&h.finalize().as_bytes()[..COOKIE_LEN]);
        out
    }
}

/// Constant-time equality of two cookies.
fn ct_eq(a: &Cookie, b: &Cookie) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_cookie_is_bound_to_its_address_and_expires() {
        let t0 = Instant::now();
        let mut c = Cookies::new([7; 32], t0);
        let a = addr("192.0.2.1:4000");
        let k = c.make(a);
        assert!(c.verify(a, &k));
        assert!(!c.verify(addr("192.0.2.1:4001"), &k), "another port");
        assert!(!c.verify(addr("192.0.2.2:4000"), &k), "another host");
        c.rotate(t0 + ROTATE);
        assert!(c.verify(a, &k), "still good for one more period");
        c.rotate(t0 + ROTATE * 2);
        assert!(!c.verify(a, &k), "two periods later it is gone");
        assert!(c.verify(a, &c.make(a)));
    }

    #[test]
    fn another_server_secret_makes_other_cookies() {
        let t0 = Instant::now();
        let a = addr("[2001:db8::1]:9");
        let k = Cookies::new([1; 32], t0).make(a);
        assert!(!Cookies::new([2; 32], t0).verify(a, &k));
    }
}
