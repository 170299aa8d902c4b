//! Peer-to-peer file transfer over TCP: the header codec ([`header`], sans-io), the
//! provider side ([`provider`]: the offered library ([`library`]: hash cache, safe open)
//! and [`serve`]) and the requester side ([`fetch`]: download, verify, resume).
//!
//! API contract used by the client driver (`crate::client::driver`):
//! - [`provider::Library`] holds the shared folder and the offered names; the client
//!   driver calls `set_dir`, `offer` and reads `offered`.
//! - [`provider::serve`] accepts connections until the `accepting` watch turns false, and
//!   reports each provider-side message as a [`Notice`].
//! - [`fetch::fetch`] downloads one file and reports progress through a callback.
//! - [`secure`]: the mode byte and TLS with pinned Ed25519 keys; `serve` takes a
//!   [`secure::PeerAuth`], `fetch` a [`secure::Security`].

pub mod fetch;
pub mod library;
pub mod link;
pub mod provider;
pub mod secure;
pub mod serve;
pub mod tls;
pub mod tree;

pub use fileapp_core::transfer::{header, record};

/// A line the provider side wants shown to its user, e.g.
/// `< Accepting connection request from 127.0.0.1. >`.
pub type Notice = String;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use header::{Decoded, HeaderError};

/// Why a header could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadHeaderError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed header: {0}")]
    Header(#[from] HeaderError),
    #[error("connection closed before the header was complete")]
    Closed,
}

/// Reads one header from `r`, decoding incrementally. Returns the header and any bytes
/// that arrived after it (file data, on the requester side). Reads at most `max` bytes
/// before deciding, so a hostile peer cannot make us buffer more than that.
pub async fn read_header<R, T>(
    r: &mut R,
    max: usize,
    decode: fn(&[u8]) -> Result<Decoded<T>, HeaderError>,
) -> Result<(T, Vec<u8>), ReadHeaderError>
where
    R: AsyncRead + Unpin,
{
    // Read in chunks larger than any header: the common case is one read, and on the
    // requester side the surplus is simply the first piece of file data.
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    loop {
        if let Decoded::Done(header, used) = decode(&buf[..filled])? {
            buf.truncate(filled);
            buf.drain(..used);
            return Ok((header, buf));
        }
        if filled >= max {
            // Unreachable with a correct decoder (every field is capped), kept as a guard.
            return Err(HeaderError::Length("header", filled).into());
        }
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(ReadHeaderError::Closed);
        }
        filled += n;
    }
}

/// Makes untrusted text (a requester's name, a refused file name) safe to print on a
/// terminal: control characters are escaped and the length is capped.
pub fn printable(s: &str) -> String {
    let s = header::truncate_utf8(s, 256);
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `1.93 GiB/s`-style rate for the statistics lines.
pub fn human_rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = bytes as f64 / secs;
    const UNITS: [&str; 5] = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"];
    let mut v = rate;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", UNITS[i])
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

/// BLAKE3 of a whole file, read in large chunks and hashed on all cores.
///
/// Reads rather than maps the file: a file that someone truncates while we hash it then
/// gives a short read (and a hash the caller's size checks reject) instead of SIGBUS,
/// and hashing a large file does not count its pages as our resident memory.
pub fn hash_file(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    const CHUNK: usize = 4 << 20;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        hasher.update_rayon(&buf[..filled]);
        if filled < CHUNK {
            break;
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// The error for a requester that stopped taking data for the stall timeout.
pub(crate) fn stopped_reading(_: tokio::time::error::Elapsed) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "requester stopped reading")
}

#[cfg(test)]
mod hash_tests {
    #[test]
    fn hash_file_matches_blake3_of_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, (4 << 20) - 1, 4 << 20, (9 << 20) + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, &data).unwrap();
            assert_eq!(
                super::hash_file(&p).unwrap(),
                *blake3::hash(&data).as_bytes(),
                "{len}"
            );
        }
    }
}
