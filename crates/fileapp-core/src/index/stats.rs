//! What the index counts and what it reports instead of dropping: [`Stats`] for operators
//! and the load generator, and [`SendError`] for every datagram it meant to send but
//! could not build. Errors are counted and queued; the driver logs them
//! ([`Index::poll_error`]).

use std::net::SocketAddr;

use crate::proto::{EncodeError, PackError};

use super::Index;

/// Most unpolled errors kept for the driver; further ones are only counted.
pub const MAX_QUEUED_ERRORS: usize = 64;

/// Counters for operators and the load generator. All are counts since start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`Index::handle_datagram`].
    pub datagrams_in: u64,
    /// Datagrams that did not decode, or that only a server sends.
    pub malformed: u64,
    /// Datagrams dropped by the per-source rate limit.
    pub rate_limited: u64,
    /// Requests answered with `Rejected`.
    pub refused: u64,
    /// Registrations applied (retransmissions answered again are not counted).
    pub registrations: u64,
    /// Requests that decoded, by kind (before any check of their token).
    pub requests: RequestCounts,
    /// Table parts sent, retransmissions included.
    pub table_parts_sent: u64,
    /// Replies that could not be encoded, so were not sent ([`SendError::Encode`]).
    pub encode_errors: u64,
    /// Table pushes that could not be packed, so were not sent ([`SendError::Pack`]).
    pub pack_errors: u64,
    /// Errors counted above but not queued for [`Index::poll_error`] (queue full).
    pub errors_unqueued: u64,
    /// Forwards queued for other servers of the deployment (meetings across servers).
    pub forwards_sent: u64,
    /// Forwards other servers sent us, and those of them dropped (nobody here to
    /// deliver to, or not a meeting's message).
    pub forwards_received: u64,
    pub forwards_dropped: u64,
}

/// Decoded requests by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestCounts {
    pub register: u64,
    pub offer: u64,
    pub dereg: u64,
    pub heartbeat: u64,
    pub table_ack: u64,
}

/// Something the index meant to send and could not. Nothing is sent in its place; the
/// client's retries or next heartbeat ask again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A reply did not encode into one datagram.
    #[error("reply to {to} not sent: {source}")]
    Encode {
        to: SocketAddr,
        #[source]
        source: EncodeError,
    },
    /// A table delta did not pack into parts (too large for the part counter, or an item
    /// too large for a datagram).
    #[error("table {from}->{to} not pushed to {client} at {addr}: {source}")]
    Pack {
        client: String,
        addr: SocketAddr,
        from: u64,
        to: u64,
        #[source]
        source: PackError,
    },
}

impl Index {
    /// The next error to log, oldest first. The driver should drain this after each
    /// batch; the counts in [`Stats`] include every error, polled or not.
    pub fn poll_error(&mut self) -> Option<SendError> {
        self.errors.pop_front()
    }

    /// Counts `err` and queues it for [`Index::poll_error`].
    pub(super) fn report(&mut self, err: SendError) {
        match err {
            SendError::Encode { .. } => self.stats.encode_errors += 1,
            SendError::Pack { .. } => self.stats.pack_errors += 1,
        }
        if self.errors.len() < MAX_QUEUED_ERRORS {
            self.errors.push_back(err);
        } else {
            self.stats.errors_unqueued += 1;
        }
    }
}

#[cfg(test)]
mod tests;
