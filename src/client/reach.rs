//! Reach, the client driver's half: the dialer each download connects with (it tries
//! the order's paths in turn: direct, reverse, punched, relayed), and the hub that
//! carries its meeting requests to the command flow and the server's answers back,
//! and connects out when the server says a requester wants one of our files.
//!
//! Every path ends in a [`Link`] (a TCP connection, or the punched path's QUIC stream)
//! that the transfer engine uses exactly as a direct connection: the same mode byte,
//! the same TLS with the same pinned keys, the same request, resume and verification.
//! Only the way the connection was obtained differs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fileapp_core::reach::Via;
use tokio::sync::{mpsc, oneshot};

use crate::identity::Identity;
use crate::proto::Reject;
use crate::reach::meet::{self, Meetings};
use crate::reach::quic::{self, PunchSpec};
use crate::reach::relay;
use crate::transfer::fetch::{Dial, FetchError, direct};
use crate::transfer::link::Link;
use fileapp_core::reach::punch::{PunchConfig, Side};

use super::flow::Meeting;
use super::messages as msg;

/// Connections out for requesters an owner makes at once; more dials wait their turn
/// (the requester's retry brings them again).
pub const DIALS_AT_ONCE: usize = 8;

/// How long a direct connection may take when other paths are left to try.
const DIRECT_FIRST: Duration = Duration::from_millis(1500);
/// How long a requester waits for the owner's reverse connection.
const REVERSE_WAIT: Duration = Duration::from_secs(3);
/// How long connecting to a relay and waiting for the partner may take.
const RELAY_WAIT: Duration = Duration::from_secs(10);

/// A download's request for a meeting, on its way to the flow.
pub struct Ask {
    pub owner: String,
    pub via: Via,
    pub id: [u8; 16],
    pub reply: oneshot::Sender<Result<Meeting, Option<Reject>>>,
    /// Punched: where the peer's endpoint is to be sent when the server tells it.
    pub punch: Option<oneshot::Sender<Option<SocketAddr>>>,
}

/// What a download's dialer needs of the client.
#[derive(Clone)]
pub struct Reach {
    pub asks: mpsc::UnboundedSender<Ask>,
    pub meetings: Meetings,
    /// The index server we talk to now (a relay given as `None` is the server's own
    /// address, TCP); the driver changes it when the client moves to another server.
    pub server: Arc<std::sync::RwLock<SocketAddr>>,
    /// Our key pair: the punched path's QUIC presents it, as TLS does.
    pub identity: Arc<Identity>,
}

impl Reach {
    /// The index server we talk to now.
    pub fn server(&self) -> SocketAddr {
        *self.server.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// One download's dialer: its paths in order, and the one that worked.
pub struct PathDialer {
    pub reach: Reach,
    pub owner: String,
    /// The owner's key, pinned by the punched path's QUIC as by TLS.
    pub owner_key: Option<[u8; 32]>,
    pub plan: Vec<Via>,
    pub used: Mutex<Option<Via>>,
}

impl PathDialer {
    pub fn new(reach: Reach, owner: &str, owner_key: Option<[u8; 32]>, plan: Vec<Via>) -> Self {
        PathDialer {
            reach,
            owner: owner.to_string(),
            owner_key,
            plan,
            used: Mutex::new(None),
        }
    }

    /// The path the last successful connection took.
    pub fn used(&self) -> Option<Via> {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn meet(
        &self,
        via: Via,
        id: [u8; 16],
        punch: Option<oneshot::Sender<Option<SocketAddr>>>,
    ) -> Result<Meeting, String> {
        let (tx, rx) = oneshot::channel();
        let ask = Ask {
            owner: self.owner.clone(),
            via,
            id,
            reply: tx,
            punch,
        };
        if self.reach.asks.send(ask).is_err() {
            return Err("the client is stopping".into());
        }
        match rx.await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(Some(r))) => Err(format!("the server refused: {}", msg::reject_text(r))),
            Ok(Err(None)) | Err(_) => Err("the server did not answer".into()),
        }
    }

    async fn try_path(
        &self,
        via: Via,
        direct_addr: SocketAddr,
        limit: Duration,
    ) -> Result<Link, String> {
        let id: [u8; 16] = rand::random();
        match via {
            Via::Direct => {
                let limit = if self.plan.len() > 1 {
                    limit.min(DIRECT_FIRST)
                } else {
                    limit
                };
                direct(direct_addr, limit)
                    .await
                    .map(Link::from)
                    .map_err(|e| e.to_string())
            }
            Via::Reverse => {
                let expected = self.reach.meetings.expect(id);
                self.meet(via, id, None).await?;
                expected
                    .arrive(REVERSE_WAIT)
                    .await
                    .map(Link::from)
                    .ok_or_else(|| "the owner's connection did not arrive".to_string())
            }
            Via::Relayed => {
                let m = self.meet(via, id, None).await?;
                let at = m.addr.unwrap_or(self.reach.server());
                let ticket = ticket_of(&m)?;
                relay::connect(at, &ticket, RELAY_WAIT)
                    .await
                    .map(Link::from)
                    .map_err(|e| e.to_string())
            }
            Via::Punched => {
                let key = self.owner_key.ok_or("the owner has no key to pin")?;
                let (tx, told) = oneshot::channel();
                let m = self.meet(via, id, Some(tx)).await?;
                let secret = m.secret.ok_or("the server sent no probe secret")?;
                let spec = PunchSpec {
                    side: Side::Requester,
                    id,
                    secret,
                    server: self.reach.server(),
                    cfg: PunchConfig::default(),
                    identity: self.reach.identity.clone(),
                    peer_key: key,
                };
                let punched = quic::punch(spec, peer_endpoint(told)).await;
                punched.map(|p| p.stream.into()).map_err(|e| e.to_string())
            }
        }
    }
}

/// The peer's endpoint as the punch waits for it: the server's word, or nothing (the
/// punch then fails at once) when the server said it cannot work.
fn peer_endpoint(told: oneshot::Receiver<Option<SocketAddr>>) -> oneshot::Receiver<SocketAddr> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(Some(peer)) = told.await {
            let _ = tx.send(peer);
        }
    });
    rx
}

/// What the owner's side of a punch needs besides the meeting.
pub struct PunchParts {
    pub identity: Arc<Identity>,
    /// The requester's key, from our table.
    pub key: Option<[u8; 32]>,
    pub told: oneshot::Receiver<Option<SocketAddr>>,
}

/// The relay ticket a meeting carries.
fn ticket_of(m: &Meeting) -> Result<[u8; fileapp_core::reach::ticket::TICKET_LEN], String> {
    m.ticket
        .as_deref()
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| "the server sent no valid relay ticket".to_string())
}

impl Dial for PathDialer {
    fn dial(
        &self,
        direct_addr: SocketAddr,
        limit: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Link, FetchError>> + Send + '_>>
    {
        Box::pin(async move {
            let mut failed = Vec::new();
            for &via in &self.plan {
                match self.try_path(via, direct_addr, limit).await {
                    Ok(s) => {
                        *self.used.lock().unwrap_or_else(|p| p.into_inner()) = Some(via);
                        return Ok(s);
                    }
                    Err(e) => {
                        tracing::info!(%via, owner = %self.owner, "path failed: {e}");
                        failed.push(format!("{via}: {e}"));
                    }
                }
            }
            Err(FetchError::NoPath(
                crate::transfer::printable(&self.owner),
                failed.join("; "),
            ))
        })
    }
}

/// The driver's side: meetings asked for and not yet answered, punches waiting for
/// their peer's endpoint.
#[derive(Default)]
pub struct Hub {
    pub pending: HashMap<[u8; 16], oneshot::Sender<Result<Meeting, Option<Reject>>>>,
    pub punch_peers: HashMap<[u8; 16], oneshot::Sender<Option<SocketAddr>>>,
}

impl Hub {
    /// The server answered meeting `id`.
    pub fn met(&mut self, id: [u8; 16], result: Result<Meeting, Option<Reject>>) {
        if let Some(tx) = self.pending.remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// A punch waits for its peer's endpoint. Punches that gave up (their receiver is
    /// gone: failed, timed out, or the server never answered) are forgotten here, so
    /// the map holds only live ones.
    pub fn wait_punch(&mut self, id: [u8; 16], tx: oneshot::Sender<Option<SocketAddr>>) {
        self.punch_peers.retain(|_, t| !t.is_closed());
        self.punch_peers.insert(id, tx);
    }

    /// A punch's peer endpoint arrived.
    pub fn punch_peer(&mut self, id: [u8; 16], peer: Option<SocketAddr>) {
        if let Some(tx) = self.punch_peers.remove(&id) {
            let _ = tx.send(peer);
        }
    }
}

/// The owner's side of a meeting: connects out as the server arranged, then serves
/// the connection as an accepted one. Runs as a task; failures are said.
pub async fn dial_out(
    meeting: Meeting,
    from: String,
    server: SocketAddr,
    punch: Option<PunchParts>,
    serve: impl FnOnce(Link, SocketAddr) + Send,
    say: impl Fn(String) + Send,
) {
    let connected: Result<(Link, SocketAddr), String> = match meeting.via {
        Via::Reverse => match meeting.addr {
            Some(addr) => meet::dial_reverse(addr, meeting.id, REVERSE_WAIT)
                .await
                .map(|s| (s.into(), addr))
                .map_err(|e| e.to_string()),
            None => Err("no address".into()),
        },
        Via::Relayed => {
            let at = meeting.addr.unwrap_or(server);
            match ticket_of(&meeting) {
                Ok(t) => relay::connect(at, &t, RELAY_WAIT)
                    .await
                    .map(|s| (s.into(), at))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        }
        Via::Punched => match (punch, meeting.secret) {
            (
                Some(PunchParts {
                    identity,
                    key: Some(key),
                    told,
                }),
                Some(secret),
            ) => {
                let spec = PunchSpec {
                    side: Side::Owner,
                    id: meeting.id,
                    secret,
                    server,
                    cfg: PunchConfig::default(),
                    identity,
                    peer_key: key,
                };
                quic::punch(spec, peer_endpoint(told))
                    .await
                    .map(|p| (p.stream.into(), p.peer))
                    .map_err(|e| e.to_string())
            }
            _ => Err("no key or secret to punch with".into()),
        },
        Via::Direct => return,
    };
    match connected {
        Ok((stream, at)) => serve(stream, at),
        Err(e) => say(msg::dial_out_failed(&from, meeting.via, &e)),
    }
}
