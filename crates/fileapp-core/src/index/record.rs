//! Owner-signed records: the server checks an owner's signature over its record as the
//! server holds it, keeps it, and relays it; any change to the record (an offer, a new
//! registration) drops the signature until the owner signs again.
//!
//! The server cannot forge a record (it has no owner's key); checking here only keeps
//! a client's mistake from reaching everyone as a forgery.

use std::net::SocketAddr;
use std::time::Instant;

use crate::identity;
use crate::proto::{RecordSig, Reject, ReqId, Token};
use crate::records::statement_bytes;
use crate::store::StoreOp;

use super::{Index, OwnerId};

impl Index {
    /// The owner's record changed at version `v`: its signature no longer holds.
    pub(super) fn unsign(&mut self, id: OwnerId, v: u64) {
        let o = &mut self.owners[id];
        o.rec_ver = v;
        if o.record.take().is_some() {
            self.ops.push(StoreOp::Record {
                owner: o.name.clone(),
                record: None,
                ver: v,
            });
        }
    }

    pub(super) fn on_record(
        &mut self,
        now: Instant,
        src: SocketAddr,
        req: ReqId,
        token: Token,
        seq: u64,
        sig: Vec<u8>,
    ) {
        let Some(id) = self
            .session(src, token)
            .filter(|&id| self.owners[id].online)
        else {
            return self.reject(src, req, Reject::NotRegistered);
        };
        let o = &self.owners[id];
        if o.record
            .as_ref()
            .is_some_and(|r| r.seq == seq && r.sig == sig)
        {
            // A retransmission of what we hold.
            return self.ack(src, req);
        }
        let advertise = o.advertised.then_some(o.peer_ip);
        let signed = o.key.is_some_and(|key| {
            seq > o.seq
                && statement_bytes(
                    &o.name,
                    &key,
                    o.tcp_port,
                    advertise,
                    seq,
                    o.files.iter().map(|(n, f)| (n, f.size, &f.hash, f.files)),
                )
                .is_ok_and(|m| identity::verify(&key, &m, &sig))
        });
        if !signed {
            return self.reject(src, req, Reject::BadProof);
        }
        let record = RecordSig {
            seq,
            advertise,
            sig,
        };
        let v = self.bump();
        let o = &mut self.owners[id];
        o.last_seen = now;
        o.seq = seq;
        o.rec_ver = v;
        o.record = Some(record.clone());
        self.ops.push(StoreOp::Record {
            owner: o.name.clone(),
            record: Some(record),
            ver: v,
        });
        self.set_latest(id, v);
        self.schedule_push_now(now);
        self.ack(src, req);
    }
}
