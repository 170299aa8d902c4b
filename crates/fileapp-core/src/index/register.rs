//! Registration: sessions and their tokens, proof of key possession by a stateless
//! challenge, who may take a name, and the welcome.
//!
//! Tokens come from a cryptographic generator seeded by the caller ([`Index::new`]'s
//! `seed`; from the OS in production): a client seeing its own tokens learns nothing
//! about anyone else's. Challenge nonces are keyed by a secret derived from the same
//! seed, bound to the source address, the key and the time, so they need no state.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::identity::{self, PublicKey};
use crate::proto::{self, Message, Reject, ReqId, Token};
use crate::store::StoreOp;

use super::{Index, Owner, OwnerId};

/// How long a registration nonce stays valid: one to two of these.
pub(super) const NONCE_PERIOD: Duration = Duration::from_secs(30);

/// The fields of a `Register` request, with the peer address resolved and the key, if
/// any, proven.
struct Registration {
    name: String,
    instance: u64,
    tcp_port: u16,
    keep_offers: bool,
    peer_ip: IpAddr,
    /// Proven public key, if the client registered with one.
    key: Option<PublicKey>,
    /// May take the name from an online session with the same key.
    evict: bool,
    /// `peer_ip` came from `advertise`.
    advertised: bool,
}

impl Index {
    /// A `Register` datagram: challenge a key without proof, check a proof, then register.
    pub(super) fn on_register_request(
        &mut self,
        now: Instant,
        src: SocketAddr,
        binding: &[u8; 32],
        msg: Message,
    ) {
        let Message::Register {
            req,
            name,
            instance,
            tcp_port,
            keep_offers,
            advertise,
            key,
            proof,
            evict,
        } = msg
        else {
            return;
        };
        let key = match (key, proof) {
            (None, _) if self.cfg.require_key => return self.reject(src, req, Reject::BadProof),
            (None, _) => None,
            (Some(key), None) => {
                // Prove possession first: a stateless nonce bound to the source address,
                // the key and the time.
                let nonce = self.nonce(now, src, &key, 0);
                return self.send(src, &Message::Challenge { req, nonce });
            }
            (Some(key), Some(p)) => {
                let fresh = (0..2).any(|age| self.nonce(now, src, &key, age) == p.nonce);
                let signed = identity::Registration {
                    binding,
                    nonce: &p.nonce,
                    name: &name,
                    instance,
                    tcp_port,
                    keep_offers,
                    advertise,
                    key: &key,
                    evict,
                };
                if !fresh || !identity::verify_registration(&signed, &p.sig) {
                    return self.reject(src, req, Reject::BadProof);
                }
                Some(key)
            }
        };
        let reg = Registration {
            name,
            instance,
            tcp_port,
            keep_offers,
            peer_ip: advertise.unwrap_or(src.ip()).to_canonical(),
            key,
            evict,
            advertised: advertise.is_some(),
        };
        self.on_register(now, src, req, reg)
    }

    /// The registration nonce for `src` and `key`, `age` periods ago.
    fn nonce(&self, now: Instant, src: SocketAddr, key: &PublicKey, age: u64) -> [u8; 16] {
        let period = now.saturating_duration_since(self.epoch).as_secs() / NONCE_PERIOD.as_secs();
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(src.to_string().as_bytes());
        h.update(key);
        h.update(&period.saturating_sub(age).to_le_bytes());
        let mut n = [0u8; 16];
        n.copy_from_slice(&h.finalize().as_bytes()[..16]);
        n
    }

    fn random_token(&mut self) -> Token {
        // Never 0: restored sessions hold 0 until their token comes back.
        use rand::RngExt;
        loop {
            let t: Token = self.rng.random();
            if t != 0 {
                return t;
            }
        }
    }

    /// The owner a token names, if the request is from its address. A session restored
    /// from the store is known by its token's digest only ([`token_at_rest`]): the
    /// first request that presents the token itself brings it back.
    pub(super) fn session(&mut self, src: SocketAddr, token: Token) -> Option<OwnerId> {
        let id = match self.by_token.get(&token) {
            Some(&id) => id,
            None => {
                let id = *self.restored.get(&token_at_rest(token))?;
                if self.owners[id].addr != src {
                    return None;
                }
                self.restored.remove(&token_at_rest(token));
                self.owners[id].token = token;
                self.by_token.insert(token, id);
                id
            }
        };
        (self.owners[id].addr == src).then_some(id)
    }

    fn on_register(&mut self, now: Instant, src: SocketAddr, req: ReqId, reg: Registration) {
        if !proto::valid_client_name(&reg.name) || reg.tcp_port == 0 {
            return self.reject(src, req, Reject::InvalidName);
        }
        let existing = self.by_name.get(&reg.name).copied();
        if let Some(id) = existing {
            let o = &self.owners[id];
            if o.online && o.instance == reg.instance && o.addr == src {
                // A retransmission whose welcome was lost: answer it again.
                let token = o.token;
                return self.welcome(src, req, token);
            }
            if let Err(reason) = self.claim(id, &reg) {
                return self.reject(src, req, reason);
            }
        }
        if self.ip_full(src.ip()) {
            return self.reject(src, req, Reject::LimitExceeded);
        }
        let token = self.random_token();
        let v = self.bump();
        let old = existing.map_or(0, |id| self.owners[id].token);
        let id = match existing {
            Some(id) => {
                let old = self.owners[id].token;
                self.by_token.remove(&old);
                let rest = self.owners[id].token_at_rest;
                self.restored.remove(&rest);
                id
            }
            None => self.add_owner(now, src, token, v, &reg),
        };
        if !reg.keep_offers && !self.owners[id].files.is_empty() {
            // A new process under this name cannot serve its predecessor's files.
            self.owners[id].files.clear();
            self.ops.push(StoreOp::ClearFiles {
                owner: reg.name.clone(),
            });
        }
        let o = &mut self.owners[id];
        o.addr = src;
        o.peer_ip = reg.peer_ip;
        o.tcp_port = reg.tcp_port;
        o.token = token;
        o.token_at_rest = token_at_rest(token);
        o.instance = reg.instance;
        o.key = o.key.or(reg.key);
        o.ver = v;
        o.advertised = reg.advertised;
        o.last_seen = now;
        o.verified = false;
        o.acked = 0;
        self.listeners.remove(&id);
        self.by_token.insert(token, id);
        self.set_online(id, true);
        self.set_latest(id, v);
        self.ops.push(StoreOp::Owner(self.row(id)));
        // Port and address may have changed: the owner signs its record anew.
        self.unsign(id, v);
        self.reach_registered(id, token, old, v);
        self.stats.registrations += 1;
        self.welcome(src, req, token);
        let signs = self.owners[id].key.is_some();
        self.schedule_push_signed_soon(now, signs);
    }

    /// May `reg` take the name `id` holds? A name belongs to the key that registered it:
    /// the same key takes it back at once (a crashed client restarted), online or not.
    /// A name without a key is free once its holder is offline.
    fn claim(&mut self, id: OwnerId, reg: &Registration) -> Result<(), Reject> {
        let o = &self.owners[id];
        match (o.key, reg.key) {
            (Some(bound), Some(k)) if bound == k && (reg.evict || !o.online) => {
                if o.online {
                    self.go_offline(id);
                }
                Ok(())
            }
            (Some(_), _) => Err(Reject::NameInUse),
            (None, _) if o.online => Err(Reject::NameInUse),
            (None, _) => Ok(()),
        }
    }

    /// A new, not yet online owner for `reg`, at version `v`.
    fn add_owner(
        &mut self,
        now: Instant,
        src: SocketAddr,
        token: Token,
        v: u64,
        reg: &Registration,
    ) -> OwnerId {
        let id = self.owners.len();
        self.owners.push(Owner {
            name: reg.name.clone(),
            addr: src,
            peer_ip: reg.peer_ip,
            tcp_port: reg.tcp_port,
            online: false,
            token,
            token_at_rest: token_at_rest(token),
            instance: reg.instance,
            ver: v,
            latest: v,
            files: super::files::FileSet::new(),
            last_seen: now,
            verified: false,
            acked: 0,
            push: None,
            key: reg.key,
            advertised: reg.advertised,
            record: None,
            rec_ver: v,
            seq: 0,
            reach: Default::default(),
            reach_ver: v,
        });
        self.by_name.insert(reg.name.clone(), id);
        self.by_ver.insert(v, id);
        id
    }

    fn welcome(&mut self, to: SocketAddr, req: ReqId, token: Token) {
        let heartbeat_ms = self.cfg.heartbeat.as_millis().min(u32::MAX as u128) as u32;
        let version = self.version;
        self.send(
            to,
            &Message::Welcome {
                req,
                token,
                heartbeat_ms,
                version,
            },
        );
    }
}

/// What the store keeps of a session token: a one-way digest. A copy of the database
/// does not hold any token a client could present; the index recognises a returning
/// session by hashing the token it presents.
pub fn token_at_rest(token: Token) -> u128 {
    let d = blake3::derive_key("fileapp token at rest v1", &token.to_le_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}
