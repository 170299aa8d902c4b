//! Peer-to-peer file transfer over TCP: the header codec ([`header`], sans-io), the
//! provider side ([`provider`]: the offered library, hash cache, `serve`) and the requester
//! side ([`fetch`]: download, verify, resume).
//!
//! API contract used by the client driver (`crate::client::driver`):
//! - [`provider::Library`] holds the shared folder and the offered names; the client
//!   driver calls `set_dir`, `offer` and reads `offered`.
//! - [`provider::serve`] accepts connections until the `accepting` watch turns false, and
//!   reports each provider-side message as a [`Notice`].
//! - [`fetch::fetch`] downloads one file and reports progress through a callback.

pub mod fetch;
pub mod header;
pub mod provider;

/// A line the provider side wants shown to its user, e.g.
/// `< Accepting connection request from 127.0.0.1. >`.
pub type Notice = String;
