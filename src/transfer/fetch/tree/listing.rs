//! Requester side of a **listing** (`docs/PROTOCOL.md` §3.4): a folder's manifest
//! without its files, for completing paths inside the folder before downloading it.
//!
//! The same connection as a download (mode byte, TLS pinned to the owner's key, the
//! same request header); the request expects the folder hash the table lists and is
//! followed by the reserved start [`TreeStart::LISTING`]. What comes back is parsed
//! and counted as it arrives (never more than [`ListingLimits::max_bytes`]), and only a
//! manifest whose hash is the listed one is returned: it is then the owner's signed
//! word. At most [`ListingLimits::keep_paths`] paths (and
//! [`ListingLimits::keep_bytes`] of path text) are kept; the rest is still read and
//! hashed, never held, and [`Listing::complete`] says whether anything was left out.

use fileapp_core::tree::{Event, Header, TreeError, TreeReader, TreeStart, split_request};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::timeout;

use super::super::connect::{Answered, PeerConn, TlsSetup, connect};
use super::super::partial::refusal;
use super::{FetchError, FetchSpec, ProtocolError};
use crate::transfer::header::{Request, Status};
use crate::transfer::printable;
use crate::transfer::secure::Security;

/// Bytes asked of one read of the connection.
const READ_SIZE: usize = 64 << 10;

/// How much of a listing is read and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingLimits {
    /// The longest listing read (the stream's bytes); longer ones fail.
    pub max_bytes: u64,
    /// Paths kept, the first ones in manifest order.
    pub keep_paths: usize,
    /// Bytes of path text kept.
    pub keep_bytes: usize,
}

impl Default for ListingLimits {
    /// 256 MiB read (a manifest of 1,000,000 entries with 100-byte paths is about
    /// 160 MiB), 200,000 paths and 32 MiB of them kept.
    fn default() -> Self {
        ListingLimits {
            max_bytes: 256 << 20,
            keep_paths: 200_000,
            keep_bytes: 32 << 20,
        }
    }
}

/// A verified listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub header: Header,
    /// Paths inside the folder, folders with a trailing `/`, sorted bytewise.
    pub paths: Vec<String>,
    /// Every entry's path is in `paths` (none was left out by the limits).
    pub complete: bool,
}

/// Why a listing could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error("'{0}' is not an offered folder's name")]
    NotAFolder(String),
    #[error("{0}")]
    Fetch(#[from] FetchError),
    /// The owner's folder is not the version the table lists (or it says so).
    #[error("the folder changed since the table listed it")]
    Changed,
    #[error("the listing does not match the folder's hash in the table")]
    HashMismatch,
    #[error("bad listing: {0}")]
    Stream(#[from] TreeError),
    #[error("the owner sent file bytes in a listing")]
    Data,
    #[error("the listing is longer than {0} bytes")]
    TooLarge(u64),
    #[error("the owner gave up: {0}")]
    Aborted(String),
    #[error("the connection closed before the listing ended")]
    Truncated,
}

/// Asks `spec.owner` for the listing of folder `spec.file` (`name/`) whose hash the
/// table lists as `listed`; uses `spec.peer`, `spec.peer_key`, `spec.dial`,
/// `spec.requester` and `spec.timeout` (for connecting, the answer and every read).
pub async fn fetch_listing(
    spec: &FetchSpec,
    listed: [u8; 32],
    security: &Security,
    limits: ListingLimits,
) -> Result<Listing, ListingError> {
    if !matches!(split_request(&spec.file), Some((_, None))) {
        return Err(ListingError::NotAFolder(printable(&spec.file)));
    }
    let tls = TlsSetup::new(security, spec)?;
    let request = Request {
        file: spec.file.clone(),
        requester: spec.requester.clone(),
        offset: 0,
        expected_hash: Some(listed),
        if_match: false,
        owner_hashes: false,
    };
    let mut bytes = request
        .encode()
        .map_err(|e| FetchError::from(ProtocolError::Request(e)))?;
    bytes.extend_from_slice(&TreeStart::LISTING.encode());
    let Answered {
        conn,
        resp,
        leftover,
    } = connect(spec, None, tls.as_ref(), |_| Ok(bytes), &mut |_| {}).await?;
    match resp.status {
        Status::Ok if resp.hash == listed && resp.start == 0 => {}
        Status::Ok | Status::Changed => return Err(ListingError::Changed),
        _ => return Err(FetchError::Refused(refusal(&resp, &spec.owner)).into()),
    }
    let mut c = Collect::new(limits);
    match conn {
        PeerConn::Plain(s) => c.read_from(s, leftover, spec.timeout).await?,
        PeerConn::Tls(t) => c.read_from(*t, leftover, spec.timeout).await?,
    }
    c.finish(listed)
}

/// What a listing stream gave so far: decodes, counts and keeps paths, sans-io.
pub(crate) struct Collect {
    limits: ListingLimits,
    reader: TreeReader,
    read: u64,
    header: Header,
    paths: Vec<String>,
    kept_bytes: usize,
    complete: bool,
    end: Option<[u8; 32]>,
}

impl Collect {
    pub(crate) fn new(limits: ListingLimits) -> Collect {
        Collect {
            limits,
            reader: TreeReader::new(Some(TreeStart::LISTING)),
            read: 0,
            header: Header::default(),
            paths: Vec::new(),
            kept_bytes: 0,
            complete: true,
            end: None,
        }
    }

    async fn read_from<R: AsyncRead + Unpin>(
        &mut self,
        mut r: R,
        leftover: Vec<u8>,
        stall: std::time::Duration,
    ) -> Result<(), ListingError> {
        self.feed(&leftover)?;
        let mut buf = vec![0u8; READ_SIZE];
        while !self.reader.done() {
            let n = timeout(stall, r.read(&mut buf))
                .await
                .map_err(|_| FetchError::Timeout("waiting for the owner's listing"))?
                .map_err(FetchError::Io)?;
            if n == 0 {
                return Err(ListingError::Truncated);
            }
            self.feed(&buf[..n])?;
        }
        Ok(())
    }

    /// Takes the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> Result<(), ListingError> {
        self.read = self.read.saturating_add(input.len() as u64);
        if self.read > self.limits.max_bytes {
            return Err(ListingError::TooLarge(self.limits.max_bytes));
        }
        loop {
            let (n, ev) = self.reader.step(input)?;
            input = &input[n..];
            match ev {
                None if n == 0 => return Ok(()),
                None | Some(Event::FileEnd) => {}
                Some(Event::Header(h)) => self.header = h,
                Some(Event::Entry { entry, .. }) => {
                    let fits = self.paths.len() < self.limits.keep_paths
                        && self.kept_bytes + entry.path.len() < self.limits.keep_bytes;
                    if fits {
                        self.kept_bytes += entry.path.len() + 1;
                        let dir = !entry.is_file();
                        let mut p = entry.path;
                        if dir {
                            p.push('/');
                        }
                        self.paths.push(p);
                    } else {
                        self.complete = false;
                    }
                }
                Some(Event::Data(_)) => return Err(ListingError::Data),
                Some(Event::Abort(m)) => return Err(ListingError::Aborted(printable(&m))),
                Some(Event::End { hash }) => self.end = Some(hash),
            }
        }
    }

    /// The listing, if the stream ended and its manifest hashes to `listed`.
    pub(crate) fn finish(self, listed: [u8; 32]) -> Result<Listing, ListingError> {
        match self.end {
            None => Err(ListingError::Truncated),
            Some(h) if h != listed => Err(ListingError::HashMismatch),
            Some(_) => {
                let mut paths = self.paths;
                // A folder's `/` can move it past a sibling (`a-b` < `a/`).
                paths.sort_unstable();
                Ok(Listing {
                    header: self.header,
                    paths,
                    complete: self.complete,
                })
            }
        }
    }
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
