//! Offers: the user's `offer`, split into datagram-sized parts, and the silent re-offer
//! of everything we offered after a re-registration.
//!
//! One user operation ([`OpId`]) may take several datagrams and ends once all of them
//! have: a part refused because the server forgot us is parked and carried by the
//! re-offer, so the user hears one outcome per `offer`, after the server has it (its
//! Ack names the table version that shows it: read-your-writes).

use std::time::Instant;

use crate::proto::{FileEntry, MAX_DATAGRAM, Message, Reject};

use super::{ClientCore, Event, OfferFailure, OpId, State, Tag};

/// One `offer` (or silent re-offer) until every one of its parts has an outcome.
pub(super) struct OfferOp {
    remaining: usize,
    failed: Option<OfferFailure>,
    /// Internal re-offer after re-registration: no user event.
    silent: bool,
    /// Parts of user offers refused because the server had forgotten us: this re-offer
    /// carries their files, so they end with its outcome.
    carries: Vec<OpId>,
}

impl ClientCore {
    /// Offers `files` (already checked locally). Returns the operation id whose outcome
    /// arrives as [`Event::OfferDone`] or [`Event::OfferFailed`]. `None` if not online
    /// (or leaving).
    pub fn offer(&mut self, now: Instant, files: &[FileEntry]) -> Option<OpId> {
        if self.state != State::Online || self.leaving {
            return None;
        }
        for f in files {
            self.offered.insert(f.name.clone(), f.clone());
        }
        Some(self.send_offer(now, files.to_vec(), false, Vec::new()))
    }

    pub(super) fn send_offer(
        &mut self,
        now: Instant,
        files: Vec<FileEntry>,
        silent: bool,
        carries: Vec<OpId>,
    ) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        let token = self.token.unwrap_or_default();
        let chunks = chunk_files(files);
        self.ops.insert(
            op,
            OfferOp {
                remaining: chunks.len(),
                failed: None,
                silent,
                carries,
            },
        );
        for files in chunks {
            self.request(now, Tag::Offer(op), |req| Message::Offer {
                req,
                token,
                files,
            });
        }
        op
    }

    /// The server refused a part of offer `op`.
    pub(super) fn on_offer_rejected(&mut self, now: Instant, op: OpId, reason: Reject) {
        if reason == Reject::NotRegistered && self.lost_session(now) {
            // The re-offer after the welcome carries this part's files.
            self.parked.push(op);
        } else {
            self.offer_part_done(op, Some(OfferFailure::Rejected(reason)));
        }
    }

    pub(super) fn fail_parked(&mut self, failure: OfferFailure) {
        for op in std::mem::take(&mut self.parked) {
            self.offer_part_done(op, Some(failure));
        }
    }

    pub(super) fn offer_part_done(&mut self, op: OpId, failure: Option<OfferFailure>) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.remaining -= 1;
        if o.failed.is_none() {
            o.failed = failure;
        }
        if o.remaining > 0 {
            return;
        }
        let o = self.ops.remove(&op).expect("present");
        // Our files changed on the server: sign the record as it now stands.
        self.record_due = true;
        for carried in o.carries {
            self.offer_part_done(carried, o.failed);
        }
        if o.silent {
            return;
        }
        self.events.push_back(match o.failed {
            None => Event::OfferDone(op),
            Some(f) => Event::OfferFailed(op, f),
        });
    }
}

/// Splits offered files into groups whose Offer message fits in one datagram.
fn chunk_files(files: Vec<FileEntry>) -> Vec<Vec<FileEntry>> {
    // Header 3, variant 1, req <=10, token <=19, list length <=3.
    const OVERHEAD: usize = 3 + 1 + 10 + 19 + 3;
    let mut chunks: Vec<Vec<FileEntry>> = vec![Vec::new()];
    let mut used = OVERHEAD;
    for f in files {
        // Name length varint (<=2 for <=255 bytes), size varint (<=10), hash 32.
        let size = f.name.len() + 2 + 10 + 32;
        if used + size > MAX_DATAGRAM && !chunks.last().is_some_and(Vec::is_empty) {
            chunks.push(Vec::new());
            used = OVERHEAD;
        }
        used += size;
        chunks.last_mut().expect("never empty").push(f);
    }
    chunks
}

impl ClientCore {
    /// Signs our record as the server should now hold it (name, key, port, advertised
    /// address, every offered file) under the next sequence number, and sends it.
    pub(super) fn send_record(&mut self, now: Instant) {
        self.record_due = false;
        let (Some(id), Some(token)) = (self.cfg.identity.clone(), self.token) else {
            return;
        };
        if self.state != State::Online || self.leaving {
            return;
        }
        self.record_seq += 1;
        let seq = self.record_seq;
        let key = id.public_key();
        let Ok(statement) = crate::records::statement_bytes(
            &self.cfg.name,
            &key,
            self.cfg.tcp_port,
            self.cfg.advertise,
            seq,
            self.offered
                .values()
                .map(|f| (f.name.as_str(), f.size, &f.hash, f.files)),
        ) else {
            return;
        };
        let sig = id.sign(&statement).to_vec();
        self.reqs.cancel_where(|t| *t == Tag::Record);
        self.request(now, Tag::Record, |req| Message::Record {
            req,
            token,
            seq,
            sig,
        });
    }
}
