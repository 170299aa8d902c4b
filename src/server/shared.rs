//! Several servers on one PostgreSQL database: the follower.
//!
//! One task (on the store's thread, [`PgStore::runtime`]) holds one connection that
//! LISTENs on [`CHANNEL`]. It catches up on every wake: each NOTIFY, a periodic beat, and
//! every reconnect, so a notification lost while disconnected loses nothing. A catch-up
//! reads the log rows after the cursor and in its gaps ([`LogCursor`]: sequence values
//! commit out of order), then the current rows of the owners other servers touched, and
//! hands them to the server driver as [`Remote`] events.
//!
//! The beat: every [`FollowConfig::beat_every`] the follower bumps this server's row in
//! `servers` (with its applied position and online count), reads the others'
//! ([`Peers`]) and reports a server whose beat stopped ([`Remote::Down`]). It also
//! prunes log rows older than [`LOG_RETENTION`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::store::OwnerRecord;
use crate::store::follow::{LogCursor, Peers};
use crate::store::postgres::{self, CHANNEL, FORWARD_CHANNEL, PgError, PgStore};

/// Log rows older than this are deleted (a server that lags more reloads on restart).
pub const LOG_RETENTION: &str = "1 hour";

/// How far before the log's end a starting server reads (see [`Shared::start`]).
const START_BACK: i64 = 2_048;

/// Most log rows read by one query; a catch-up repeats until it reads fewer.
const READ_LIMIT: i64 = 10_000;

/// Forwards to other servers waiting for the follower; past it new ones are dropped
/// (meetings repeat theirs).
const OUTBOX: usize = 4096;
/// Forwards older than this are pruned, taken or not (a meeting lives 30 s).
const FORWARD_RETENTION: &str = "1 minute";

/// What the follower tells the driver.
#[derive(Debug)]
pub enum Remote {
    /// Current rows (with their home server) of owners other servers changed; names
    /// whose row is gone were deleted (released).
    Rows {
        rows: Vec<(OwnerRecord, String)>,
        gone: Vec<String>,
    },
    /// This server stopped beating: its clients are offline unless they moved.
    Down(String),
    /// Forwards other servers sent us (`crate::index::Forward`, encoded), in order.
    Forwarded(Vec<Vec<u8>>),
}

/// Timing of the follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowConfig {
    /// How often this server beats and reads the others (also the poll fallback).
    pub beat_every: Duration,
    /// A server whose beat has not moved this long is down.
    pub dead_after: Duration,
    /// How long a missing sequence number is waited for.
    pub gap_timeout: Duration,
}

impl FollowConfig {
    /// From the index's offline window: beat 8 times per window, down after 3/4 of it
    /// (so its clients go offline here within about one window).
    pub fn for_offline_after(offline_after: Duration) -> FollowConfig {
        FollowConfig {
            beat_every: (offline_after / 8).max(Duration::from_millis(20)),
            dead_after: (offline_after * 3 / 4).max(Duration::from_millis(100)),
            gap_timeout: Duration::from_secs(10),
        }
    }
}

/// One server of the deployment, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    pub id: String,
    pub addr: String,
    /// Log entries it has not applied yet.
    pub lag: u64,
    pub online: i64,
    pub down: bool,
}

/// What the follower knows, read by the status page and the metrics.
#[derive(Debug, Default)]
pub struct FollowState {
    /// This server's lag behind the log (entries).
    pub lag: std::sync::atomic::AtomicU64,
    /// Online clients of this server (written by the driver, beaten into `servers`).
    pub local_online: std::sync::atomic::AtomicU64,
    pub servers: Mutex<Vec<ServerLine>>,
}

/// The follower's side in the driver: its events and what it knows.
#[derive(Debug)]
pub struct Shared {
    pub events: mpsc::UnboundedReceiver<Remote>,
    pub state: Arc<FollowState>,
    /// This server's id in the deployment.
    pub me: String,
    outbox: mpsc::Sender<(String, Vec<u8>)>,
    start: Option<Start>,
}

#[derive(Debug)]
struct Start {
    url: String,
    cursor: u64,
    handle: tokio::runtime::Handle,
    tx: mpsc::UnboundedSender<Remote>,
    outbox: mpsc::Receiver<(String, Vec<u8>)>,
}

impl Shared {
    /// Reads the log's position (before the caller loads the table: whatever commits
    /// later is caught up with). [`Shared::follow`] starts the task.
    pub fn start(pg: &PgStore) -> Result<Shared, PgError> {
        let url = pg.url().to_string();
        let (ptx, prx) = std::sync::mpsc::channel();
        let u = url.clone();
        pg.runtime().spawn(async move {
            let r = async {
                let c = postgres::connect(&u).await?;
                let row = c
                    .query_one(
                        "SELECT coalesce(max(seq), 0), coalesce(min(seq), 1) FROM changes",
                        &[],
                    )
                    .await?;
                let (max, min): (i64, i64) = (row.get(0), row.get(1));
                // Transactions still open now hold lower numbers (one commit takes one
                // per owner it touched, up to a batch): read back a little; re-reading
                // an owner's row changes nothing. Never below the oldest row kept.
                Ok::<u64, PgError>((max - START_BACK).max(min - 1).max(0) as u64)
            }
            .await;
            let _ = ptx.send(r);
        });
        let cursor = prx.recv().map_err(|_| PgError::Gone)??;
        let (tx, events) = mpsc::unbounded_channel();
        let (outbox, out_rx) = mpsc::channel(OUTBOX);
        Ok(Shared {
            events,
            state: Arc::new(FollowState::default()),
            me: pg.server_id().to_string(),
            outbox,
            start: Some(Start {
                url,
                cursor,
                handle: pg.runtime().clone(),
                tx,
                outbox: out_rx,
            }),
        })
    }

    /// Queues `body` (an encoded forward) for server `to`; dropped when the follower is
    /// far behind (counted by the caller).
    pub fn forward(&self, to: &str, body: Vec<u8>) -> bool {
        self.outbox.try_send((to.to_string(), body)).is_ok()
    }

    /// Starts following, as server `addr` (shown to the others).
    pub fn follow(&mut self, cfg: FollowConfig, addr: String) {
        if let Some(s) = self.start.take() {
            let (state, me) = (self.state.clone(), self.me.clone());
            s.handle.spawn(async move {
                let mut f = Follower {
                    url: s.url,
                    me,
                    addr,
                    cfg,
                    cursor: LogCursor::new(s.cursor, cfg.gap_timeout),
                    peers: Peers::new(cfg.dead_after),
                    tx: s.tx,
                    outbox: s.outbox,
                    state,
                    beats: 0,
                };
                f.run().await;
            });
        }
    }
}

struct Follower {
    url: String,
    me: String,
    addr: String,
    cfg: FollowConfig,
    cursor: LogCursor,
    peers: Peers,
    tx: mpsc::UnboundedSender<Remote>,
    outbox: mpsc::Receiver<(String, Vec<u8>)>,
    state: Arc<FollowState>,
    beats: u64,
}

impl Follower {
    /// Until the driver goes away: connect, LISTEN, catch up on every wake; reconnect
    /// after any failure.
    async fn run(&mut self) {
        while !self.tx.is_closed() {
            if let Err(e) = self.session().await {
                tracing::warn!("following the shared log: {e}; reconnecting");
            }
            tokio::time::sleep(self.cfg.beat_every.min(Duration::from_secs(1))).await;
        }
    }

    async fn session(&mut self) -> Result<(), PgError> {
        let (client, mut conn) = tokio::time::timeout(
            postgres::CONNECT_TIMEOUT,
            tokio_postgres::connect(&self.url, NoTls),
        )
        .await
        .map_err(|_| PgError::Timeout)??;
        let wake = Arc::new(tokio::sync::Notify::new());
        let (w, closed) = (
            wake.clone(),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let c2 = closed.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            use futures_util::StreamExt;
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => w.notify_one(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            c2.store(true, std::sync::atomic::Ordering::Relaxed);
            w.notify_one();
        });
        let mut client = client;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {FORWARD_CHANNEL}"))
            .await?;
        client
            .execute(
                "INSERT INTO servers (id, addr) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, started = now()",
                &[&self.me, &self.addr],
            )
            .await?;
        for r in client
            .query("SELECT DISTINCT home FROM owners WHERE online", &[])
            .await?
        {
            let home: String = r.get(0);
            if home != self.me {
                self.peers.expect(Instant::now(), &home);
            }
        }
        let mut next_beat = Instant::now();
        loop {
            self.take_forwards(&client).await?;
            self.catch_up(&mut client).await?;
            if Instant::now() >= next_beat {
                self.beat(&client).await?;
                next_beat = Instant::now() + self.cfg.beat_every;
            }
            if closed.load(std::sync::atomic::Ordering::Relaxed) || self.tx.is_closed() {
                return Ok(());
            }
            let mut until = next_beat;
            if !self.cursor.gaps().is_empty() {
                // Gaps are asked for again soon: a late commit is read within this.
                until = until.min(Instant::now() + Duration::from_millis(50));
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until.into()) => {}
                Some((to, body)) = self.outbox.recv() => self.send_forward(&client, &to, &body).await?,
            }
        }
    }

    /// Queues a forward for server `to` and wakes it, in one transaction.
    async fn send_forward(
        &mut self,
        client: &Client,
        to: &str,
        body: &[u8],
    ) -> Result<(), PgError> {
        client
            .execute(
                "WITH f AS (INSERT INTO forwards (server, body) VALUES ($1, $2))
                 SELECT pg_notify($3, $1)",
                &[&to, &body, &FORWARD_CHANNEL],
            )
            .await?;
        Ok(())
    }

    /// Takes the forwards addressed to us, oldest first.
    async fn take_forwards(&mut self, client: &Client) -> Result<(), PgError> {
        let rows = client
            .query(
                "DELETE FROM forwards WHERE server = $1 RETURNING seq, body",
                &[&self.me],
            )
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut got: Vec<(i64, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        got.sort_by_key(|(seq, _)| *seq);
        let _ = self
            .tx
            .send(Remote::Forwarded(got.into_iter().map(|(_, b)| b).collect()));
        Ok(())
    }

    /// Reads the log after the cursor and in its gaps, then the rows it names.
    async fn catch_up(&mut self, client: &mut Client) -> Result<(), PgError> {
        loop {
            let gaps: Vec<i64> = self.cursor.gaps().iter().map(|&g| g as i64).collect();
            let rows = client
                .query(
                    "SELECT seq, owner, server FROM changes WHERE seq > $1 OR seq = ANY($2)
                     ORDER BY seq LIMIT $3",
                    &[&(self.cursor.after() as i64), &gaps, &READ_LIMIT],
                )
                .await?;
            let now = Instant::now();
            let seqs: Vec<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
            self.cursor.observe(now, &seqs);
            self.cursor.expire(now);
            let names: BTreeSet<Vec<u8>> = rows
                .iter()
                .filter(|r| r.get::<_, &str>(2) != self.me)
                .map(|r| r.get::<_, Vec<u8>>(1))
                .collect();
            if !names.is_empty() {
                let names: Vec<Vec<u8>> = names.into_iter().collect();
                let found = postgres::read_owners(client, &names).await?;
                let present: BTreeSet<&str> =
                    found.iter().map(|(r, _)| r.row.name.as_str()).collect();
                let gone: Vec<String> = names
                    .iter()
                    .filter_map(|n| String::from_utf8(n.clone()).ok())
                    .filter(|n| !present.contains(n.as_str()))
                    .collect();
                let rows: Vec<(OwnerRecord, String)> =
                    found.into_iter().filter(|(_, h)| *h != self.me).collect();
                for (_, home) in &rows {
                    self.peers.expect(now, home);
                }
                if !rows.is_empty() || !gone.is_empty() {
                    let _ = self.tx.send(Remote::Rows { rows, gone });
                }
            }
            if (rows.len() as i64) < READ_LIMIT {
                return Ok(());
            }
        }
    }

    /// Bumps this server's beat, reads the others', reports the newly down.
    async fn beat(&mut self, client: &Client) -> Result<(), PgError> {
        let online = self
            .state
            .local_online
            .load(std::sync::atomic::Ordering::Relaxed) as i64;
        let applied = self.cursor.position() as i64;
        client
            .execute(
                "UPDATE servers SET beat = beat + 1, seen = now(), applied = $2, online = $3
                 WHERE id = $1",
                &[&self.me, &applied, &online],
            )
            .await?;
        let max: i64 = client
            .query_one("SELECT coalesce(max(seq), 0) FROM changes", &[])
            .await?
            .get(0);
        let now = Instant::now();
        let mut lines = Vec::new();
        for r in client
            .query(
                "SELECT id, addr, beat, applied, online FROM servers ORDER BY id",
                &[],
            )
            .await?
        {
            let id: String = r.get(0);
            let beat: i64 = r.get(2);
            if id != self.me {
                self.peers.observe(now, &id, beat as u64);
            }
            let applied: i64 = r.get(3);
            lines.push(ServerLine {
                down: id != self.me && self.peers.is_down(&id),
                lag: (max - applied).max(0) as u64,
                addr: r.get(1),
                online: r.get(4),
                id,
            });
        }
        for id in self.peers.newly_down(now) {
            tracing::warn!("server {id} stopped beating; its clients go offline");
            if let Some(l) = lines.iter_mut().find(|l| l.id == id) {
                l.down = true;
            }
            let _ = self.tx.send(Remote::Down(id));
        }
        self.state.lag.store(
            (max as u64).saturating_sub(self.cursor.position()),
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Ok(mut s) = self.state.servers.lock() {
            *s = lines;
        }
        self.beats += 1;
        client
            .execute(
                &format!("DELETE FROM forwards WHERE at < now() - interval '{FORWARD_RETENTION}'"),
                &[],
            )
            .await?;
        if self.beats % 1000 == 1 {
            client
                .execute(
                    &format!("DELETE FROM changes WHERE at < now() - interval '{LOG_RETENTION}'"),
                    &[],
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
