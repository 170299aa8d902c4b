//! The requester's tuning knobs, each defined once: buffer sizes and counts, progress
//! cadence, how far the hasher may lag and how far ahead space is reserved. Sizes are in
//! bytes, counts in buffers, intervals in wall-clock time.

use std::time::Duration;

/// Size of one receive buffer (bytes) on the buffered path. Large enough to amortize
/// per-buffer overhead, small enough that a buffer is still in the last-level cache when
/// the writer hashes it.
pub const BUFFER_SIZE: usize = 1 << 20;
/// Buffers in flight between the socket reader and the hash+write thread (buffered path).
pub const BUFFERS: usize = 8;
/// Buffers of opened TLS records in flight between the TLS reader and the writer thread
/// (each is [`crate::transfer::tls::RECEIVE_BUFFER`] bytes).
pub(super) const TLS_BUFFERS: usize = 6;

/// Progress is reported at most this often...
pub(super) const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// ...or after this many bytes (buffered path), whichever comes first.
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(super) const PROGRESS_BYTES: u64 = 64 << 20;

/// Default limit (in [`super::FetchSpec::new`]) for connecting, for the provider's
/// answer, and for any pause in the data.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Splice path: the pipe size asked for (bytes). A 1 MiB pipe halves the syscalls
/// compared to the default; the kernel may refuse, see [`SPLICE_PIPE_FALLBACK`].
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) const SPLICE_PIPE: usize = 1 << 20;
/// Splice path: the kernel's default pipe size (bytes), used when [`SPLICE_PIPE`] is
/// refused.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) const SPLICE_PIPE_FALLBACK: usize = 64 * 1024;
/// Splice path: the hasher is told about new data every this many bytes: small enough
/// that what it reads back is still in cache.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) const HASH_STEP: u64 = 1 << 20;
/// Splice path: progress messages queued to the hasher before the splicer waits.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) const HASH_QUEUE: usize = 8;
/// Splice path: the hasher reads the file back through a read-only mapping of this many
/// bytes (a multiple of the page size), moved along as the data grows.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) const HASH_WINDOW: u64 = 16 << 20;

/// How far ahead of the write position disk space is kept reserved (bytes).
pub(super) const RESERVE_STEP: u64 = 32 << 20;
