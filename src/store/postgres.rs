//! PostgreSQL-backed store (`--db postgres://…`), shared by several servers.
//!
//! The [`Store`] trait is synchronous (the server commits a batch before its replies
//! leave); tokio-postgres is async. So the store runs its own thread with a
//! current-thread runtime that owns the connections; [`PgStore::commit`] hands the batch
//! over and waits for the `COMMIT`. It works the same from inside or outside the
//! server's runtime, like the SQLite store's synchronous fsync.
//!
//! Durability: each commit is one transaction; PostgreSQL's default `synchronous_commit`
//! makes `COMMIT` return only once the WAL is flushed. A connection that fails is
//! reopened once and the batch retried (every op is an upsert, so a batch replayed after
//! an unknown outcome changes nothing more); a second failure is the caller's error.
//!
//! Schema: `migrations/postgres/NNN_*.sql`, applied in order at open inside one
//! transaction each, under an advisory lock (several servers may start together), and
//! recorded in `fileapp_migrations`. A database with a newer migration than this build
//! knows is refused.
//!
//! Every commit also appends one row per touched owner to the `changes` log and NOTIFYs
//! its highest sequence number; [`follow`] reads that log for the other servers.

mod rows;

pub(crate) use rows::read_owners;

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::{OwnerRecord, Store, StoreError, StoreOp};

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "001_table",
        include_str!("../../migrations/postgres/001_table.sql"),
    ),
    (
        2,
        "002_log",
        include_str!("../../migrations/postgres/002_log.sql"),
    ),
    (
        3,
        "003_records",
        include_str!("../../migrations/postgres/003_records.sql"),
    ),
    (
        4,
        "004_forwards",
        include_str!("../../migrations/postgres/004_forwards.sql"),
    ),
    (
        5,
        "005_reach",
        include_str!("../../migrations/postgres/005_reach.sql"),
    ),
];

/// The channel commits NOTIFY with their highest log sequence number.
pub const CHANNEL: &str = "fileapp_changes";
/// The channel a server NOTIFYs, with the addressee's id, after queueing a forward.
pub const FORWARD_CHANNEL: &str = "fileapp_forwards";

/// How long connecting may take before the store gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong in this backend. Converted to [`StoreError`] at the trait.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Schema(String),
    #[error("cannot connect within {CONNECT_TIMEOUT:?}")]
    Timeout,
    #[error("the database thread stopped")]
    Gone,
    #[error("cannot start the database thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        match e {
            PgError::Corrupt(what) => StoreError::Corrupt(what),
            e => StoreError::Backend(Box::new(e)),
        }
    }
}

type Result<T, E = PgError> = std::result::Result<T, E>;

/// Is `db` (a `--db` value) a PostgreSQL connection string?
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Opens a connection, its driving task spawned on the current runtime.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(url, NoTls))
        .await
        .map_err(|_| PgError::Timeout)??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("database connection closed: {e}");
        }
    });
    Ok(client)
}

/// Applies the migrations this database lacks; refuses one newer than this build.
pub async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await?;
    // One server migrates at a time; the others then find nothing to do.
    tx.execute("SELECT pg_advisory_xact_lock(7017280452245743464)", &[])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS fileapp_migrations (
            version integer PRIMARY KEY, name text NOT NULL,
            applied timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let have: Option<i32> = tx
        .query_one("SELECT max(version) FROM fileapp_migrations", &[])
        .await?
        .get(0);
    let have = have.unwrap_or(0);
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if have > newest {
        return Err(PgError::Schema(format!(
            "database schema version {have} is newer than this build supports ({newest}); \
             refusing to use it (upgrade fileapp)"
        )));
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO fileapp_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

enum Job {
    Load(std::sync::mpsc::Sender<Result<Vec<(OwnerRecord, String)>>>),
    Commit(Vec<StoreOp>, std::sync::mpsc::Sender<Result<()>>),
    Release(String, std::sync::mpsc::Sender<Result<bool>>),
}

/// The shared table in PostgreSQL, written as server `server_id`.
pub struct PgStore {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    handle: tokio::runtime::Handle,
    url: String,
    server_id: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url`, applies the migrations, and starts the store's thread. Rows
    /// this store writes name `server_id` as their home.
    pub fn open(url: &str, server_id: &str) -> Result<PgStore> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (u, me) = (url.to_string(), server_id.to_string());
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut w = match Worker::start(u, me).await {
                        Ok(w) => {
                            let _ = ready_tx.send(Ok(()));
                            w
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    while let Some(job) = rx.recv().await {
                        w.run(job).await;
                    }
                })
            })?;
        ready_rx.recv().map_err(|_| PgError::Gone)??;
        Ok(PgStore {
            jobs,
            handle,
            url: url.to_string(),
            server_id: server_id.to_string(),
        })
    }

    /// The server id rows are written under.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The connection string (for the follower's own connections).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store thread's runtime: where the follower runs.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    fn ask<T>(&self, make: impl FnOnce(std::sync::mpsc::Sender<Result<T>>) -> Job) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.jobs.send(make(tx)).map_err(|_| PgError::Gone)?;
        rx.recv().map_err(|_| PgError::Gone)?
    }

    /// Every owner with its files and its home server, in name (byte) order.
    pub fn load_with_homes(&self) -> Result<Vec<(OwnerRecord, String)>> {
        self.ask(Job::Load)
    }

    /// Forgets `name` entirely (key, session, offers) and logs it, so the other servers
    /// forget it too. Returns whether it existed.
    pub fn release_name(&self, name: &str) -> Result<bool> {
        self.ask(|tx| Job::Release(name.to_string(), tx))
    }
}

impl Store for PgStore {
    fn load(&mut self) -> Result<Vec<OwnerRecord>, StoreError> {
        Ok(self
            .load_with_homes()?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        Ok(self.ask(|tx| Job::Commit(ops.to_vec(), tx))?)
    }
}

/// The store thread's state: its connection, reopened when it fails.
struct Worker {
    url: String,
    me: String,
    client: Client,
}

impl Worker {
    async fn start(url: String, me: String) -> Result<Worker> {
        let mut client = connect(&url).await?;
        migrate(&mut client).await?;
        Ok(Worker { url, me, client })
    }

    async fn run(&mut self, job: Job) {
        match job {
            Job::Load(reply) => {
                let r = rows::load(&mut self.client).await;
                let _ = reply.send(r);
            }
            Job::Commit(ops, reply) => {
                let mut r = rows::commit(&mut self.client, &self.me, &ops).await;
                if matches!(&r, Err(PgError::Db(e)) if e.is_closed()) || self.client.is_closed() {
                    // Reopen once and replay the batch (idempotent upserts).
                    r = match connect(&self.url).await {
                        Ok(c) => {
                            self.client = c;
                            rows::commit(&mut self.client, &self.me, &ops).await
                        }
                        Err(e) => Err(e),
                    };
                }
                let _ = reply.send(r);
            }
            Job::Release(name, reply) => {
                let r = rows::release(&mut self.client, &self.me, &name).await;
                let _ = reply.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests;
