//! fileapp: a file-sharing system with a central index server and direct peer-to-peer
//! transfers.
//!
//! This crate holds the drivers: sockets, files, the terminal, the database. Every codec
//! and state machine lives in the sans-io core crate, [`fileapp_core`], re-exported here
//! under the same paths ([`proto`], [`reliable`], [`index`], `client::{core, table,
//! command}`, `transfer::{header, record}`, the store's types).
//!
//! # Layout
//! - [`proto`], [`reliable`], [`index`]: the core's datagram codec, retry bookkeeping and
//!   the server's state machine.
//! - [`store`]: the core's store types plus the SQLite backend.
//! - [`server`]: the thin tokio driver for the index server.
//! - [`client`]: the client's sans-io core, its table, its command parser, its command
//!   flow (sans-io), its user messages, its crash journal and its thin tokio driver.
//! - [`transfer`]: the TCP peer-to-peer protocol: header codec, serving and fetching files,
//!   TLS with pinned keys.
//! - [`console`]: the one owner of the client's terminal.
//! - [`identity`]: the Ed25519 key a client name is bound to (registration proofs, TLS).
//! - [`cli`]: command-line parsing shared by the binary; [`app`]: what each mode runs.
//! - `sys`: the platform seam, the one home of `unsafe` (system calls std lacks).

// Only `sys` may use `unsafe`; the compiler holds every other module to it.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod client;
pub mod console;
pub mod identity;
pub mod known;
pub mod reach;
pub mod server;
pub mod store;
#[allow(unsafe_code)]
pub(crate) mod sys;
#[doc(hidden)]
pub mod testkit;
pub mod transfer;

pub use fileapp_core::{channel, index, proto, records, reliable};
