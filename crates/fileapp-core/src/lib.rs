//! fileapp's sans-io core: every codec and state machine of the system, with no I/O.
//!
//! Nothing in this crate opens a socket or a file, spawns a task or reads a clock: bytes
//! and `now: Instant` go in, messages, store writes and deadlines come out. The
//! `fileapp` crate's tokio drivers move the bytes. The compiler enforces the boundary:
//! this crate does not depend on tokio, rusqlite, libc or any I/O crate.
//!
//! # Layout
//! - [`channel`]: the encrypted, authenticated control channel (Noise NX, explicit
//!   nonces, replay window, cookies).
//! - [`proto`]: the UDP control datagrams (codec, limits, name rules, table packing).
//! - [`reliable`]: request/ACK/retry bookkeeping (500 ms × 3).
//! - [`index`]: the server's table as a state machine: datagrams and `now` in, datagrams,
//!   store writes and deadlines out.
//! - [`store`]: the persisted rows, the [`store::StoreOp`]s the index emits, the
//!   [`store::Store`] trait, and the in-memory stores used by tests and `:memory:`.
//! - [`client`]: the client's control-plane core, its copy of the table and its command
//!   language.
//! - [`transfer`]: the peer protocol's codecs: request/response headers and the TLS 1.3
//!   record layer.
//! - [`tree`]: shared folders: the manifest (format and hash) and the tree stream that
//!   carries a folder over one transfer connection.
//! - [`identity`]: Ed25519 key pairs, registration statements and fingerprints.
//! - [`reach`]: the paths a transfer takes through NAT (direct, reverse, punched,
//!   relayed), relay tickets and pairing, hole-punch timing.
//! - [`records`]: owner records signed by their owners (the server relays, cannot forge).
//! - `fuzzing` (feature `fuzzing`): the checks the fuzz targets in `fuzz/` run.

#![forbid(unsafe_code)]

pub mod channel;
pub mod client;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod identity;
pub mod index;
pub mod proto;
pub mod reach;
pub mod records;
pub mod reliable;
pub mod store;
pub mod transfer;
pub mod tree;

#[cfg(test)]
mod boundary {
    /// Crates whose presence would mean this crate does I/O itself.
    const IO_CRATES: &[&str] = &[
        "tokio",
        "rusqlite",
        "libc",
        "socket2",
        "rustix",
        "nix",
        "mio",
        "memmap2",
        "tokio-postgres",
        "quinn",
        "directories",
    ];

    #[test]
    fn the_core_depends_on_no_io_crate() {
        let manifest = include_str!("../Cargo.toml");
        let mut section = "";
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section != "[dependencies]" || line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            assert!(
                !IO_CRATES.contains(&name),
                "fileapp-core must stay sans-io, but depends on {name}"
            );
        }
    }
}
