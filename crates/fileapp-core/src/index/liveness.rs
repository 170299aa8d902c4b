//! Liveness: heartbeats keep a session online (and report the table version the client
//! holds); a session silent for [`Config::offline_after`] is marked offline by a sweep
//! every quarter of that.
//!
//! [`Config::offline_after`]: super::Config::offline_after

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::proto::{Reject, ReqId, Token};
use crate::store::StoreOp;

use super::{Index, OwnerId};

impl Index {
    pub(super) fn on_heartbeat(
        &mut self,
        now: Instant,
        src: SocketAddr,
        req: ReqId,
        token: Token,
        table_version: u64,
    ) {
        let Some(id) = self
            .session(src, token)
            .filter(|&id| self.owners[id].online)
        else {
            return self.reject(src, req, Reject::NotRegistered);
        };
        let version = self.version;
        let o = &mut self.owners[id];
        o.last_seen = now;
        o.verified = true;
        self.listeners.insert(id);
        // Trust the client about what it holds; never beyond what exists.
        o.acked = table_version.min(version);
        let stale_push = o.push.as_ref().is_some_and(|p| p.from != o.acked);
        if stale_push {
            self.cancel_push(id);
        }
        self.ack(src, req);
        if self.owners[id].acked < self.version && self.owners[id].push.is_none() {
            self.start_push(now, id, self.cfg.retry.retries);
        }
    }

    /// The sweep, when due: marks silent sessions offline and forgets idle rate-limit
    /// buckets.
    pub(super) fn check_liveness(&mut self, now: Instant) {
        if self.next_liveness > now {
            return;
        }
        self.next_liveness = now + self.liveness_period();
        self.forget_full_buckets(now);
        let silent: Vec<OwnerId> = self
            .online
            .iter()
            .copied()
            // A remote owner's liveness is its home server's to judge.
            .filter(|id| !self.remote.contains_key(id))
            .filter(|&id| {
                now.saturating_duration_since(self.owners[id].last_seen) >= self.cfg.offline_after
            })
            .collect();
        if !silent.is_empty() {
            for id in silent {
                self.go_offline(id);
            }
            self.schedule_push(now);
        }
    }

    /// Gap between two sweeps: a quarter of `offline_after`, at least 1 ms.
    pub(super) fn liveness_period(&self) -> Duration {
        (self.cfg.offline_after / 4).max(Duration::from_millis(1))
    }

    /// Marks `id` offline at the next version and persists it.
    pub(super) fn go_offline(&mut self, id: OwnerId) {
        let v = self.bump();
        self.set_online(id, false);
        self.owners[id].ver = v;
        self.set_latest(id, v);
        self.ops.push(StoreOp::Owner(self.row(id)));
    }

    /// Moves `id` in or out of the online set, its IP's count and (going offline) the
    /// listeners, dropping its push.
    /// Going online makes a session local (a registration here); `apply_remote` marks
    /// a remote one again afterwards.
    pub(super) fn set_online(&mut self, id: OwnerId, online: bool) {
        if online {
            self.remote.remove(&id);
        }
        let o = &mut self.owners[id];
        if o.online == online {
            return;
        }
        o.online = online;
        let ip = o.addr.ip();
        self.count_ip(ip, online);
        if online {
            self.online.insert(id);
        } else {
            self.online.remove(&id);
            self.listeners.remove(&id);
            self.cancel_push(id);
        }
    }
}
