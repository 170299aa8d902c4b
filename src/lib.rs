//! fileapp: a file-sharing system with a central index server and direct peer-to-peer
//! transfers.
//!
//! # Layout
//! - [`proto`]: the UDP control datagrams (codec only, no I/O).
//! - [`reliable`]: request/ACK/retry bookkeeping (sans-io, clock passed in).
//! - [`index`]: the server's table as a state machine: datagrams and `now` in, datagrams,
//!   store writes and deadlines out.
//! - [`store`]: where the server's table is persisted, behind the [`store::Store`] trait.
//! - [`server`]: the thin tokio driver for the index server.
//! - [`client`]: the client's sans-io core, its table, its command parser, its command
//!   flow (sans-io), its user messages, its crash journal and its thin tokio driver.
//! - [`transfer`]: the TCP peer-to-peer protocol: header codec, serving and fetching files,
//!   TLS with pinned keys.
//! - [`console`]: the one owner of the client's terminal.
//! - [`identity`]: the Ed25519 key a client name is bound to (registration proofs, TLS).
//! - [`cli`]: command-line parsing shared by the binary; [`app`]: what each mode runs.

pub mod app;
pub mod cli;
pub mod client;
pub mod console;
pub mod identity;
pub mod index;
pub mod proto;
pub mod reliable;
pub mod server;
pub mod store;
pub mod transfer;
