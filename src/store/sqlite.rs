//! SQLite-backed store: one database file in WAL mode.
//!
//! Durability: each [`Store::commit`] is one `IMMEDIATE` transaction, and with the default
//! [`Synchronous::Full`] SQLite syncs the WAL before `COMMIT` returns, so a committed batch
//! survives `kill -9` and power loss. The server commits a whole batch of changes before
//! sending that batch's ACKs, which makes one transaction (one sync) per batch a group
//! commit.
//!
//! Schema (version [`SCHEMA_VERSION`], kept in `PRAGMA user_version`):
//!
//! ```text
//! owners(name TEXT PRIMARY KEY, ip TEXT, udp_port, flowinfo, scope_id, tcp_port, online,
//!        token BLOB(16, big-endian), instance INTEGER, ver INTEGER, peer_ip TEXT,
//!        key BLOB(32) NULL)
//! files(owner TEXT, name TEXT, ver INTEGER, size INTEGER, hash BLOB(32),
//!       PRIMARY KEY(owner, name))
//! records(owner TEXT PRIMARY KEY, ver INTEGER, seq INTEGER NULL, advertise TEXT NULL,
//!         sig BLOB(64) NULL)                          -- since version 2
//! files.files INTEGER (a folder's file count, 0 for a file) -- since version 2
//! ```
//!
//! A version 1 database is upgraded in place on open (the `records` table is added).
//!
//! `u64` values (`instance`, `ver`) are stored bit-cast to `i64`, so every value round-trips
//! exactly. `flowinfo`/`scope_id` are the IPv6 socket-address fields (0 for IPv4), kept so a
//! loaded [`OwnerRow::addr`] equals the committed one. All SQL is static text run through
//! the connection's prepared-statement cache.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{FileRow, OwnerRecord, OwnerRow, RecordSig, Store, StoreError, StoreOp};

/// What can go wrong inside this backend: SQLite itself, or a row that does not decode.
/// Converted to the core's [`StoreError`] at the [`Store`] boundary.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    // The same texts as the core's `StoreError`, so `open` and `load` read alike.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl From<SqlError> for StoreError {
    fn from(e: SqlError) -> StoreError {
        match e {
            SqlError::Db(e) => StoreError::Backend(Box::new(e)),
            SqlError::Corrupt(what) => StoreError::Corrupt(what),
        }
    }
}

type Result<T, E = SqlError> = std::result::Result<T, E>;

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA_V1: &str = "
CREATE TABLE owners (
    name     TEXT    NOT NULL PRIMARY KEY,
    ip       TEXT    NOT NULL,
    udp_port INTEGER NOT NULL,
    flowinfo INTEGER NOT NULL DEFAULT 0,
    scope_id INTEGER NOT NULL DEFAULT 0,
    tcp_port INTEGER NOT NULL,
    online   INTEGER NOT NULL,
    token    BLOB    NOT NULL,
    instance INTEGER NOT NULL,
    ver      INTEGER NOT NULL,
    peer_ip  TEXT    NOT NULL,
    key      BLOB
) WITHOUT ROWID;
CREATE TABLE files (
    owner TEXT    NOT NULL,
    name  TEXT    NOT NULL,
    ver   INTEGER NOT NULL,
    size  INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (owner, name)
) WITHOUT ROWID;
";

/// Version 1 -> 2: owners' signed records, and a folder's file count.
const SCHEMA_V2: &str = "
ALTER TABLE files ADD COLUMN files INTEGER NOT NULL DEFAULT 0;
CREATE TABLE records (
    owner     TEXT    NOT NULL PRIMARY KEY,
    ver       INTEGER NOT NULL,
    seq       INTEGER,
    advertise TEXT,
    sig       BLOB
) WITHOUT ROWID;
";

const UPSERT_RECORD: &str = "
INSERT INTO records (owner, ver, seq, advertise, sig)
SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM owners WHERE name = ?1)
ON CONFLICT (owner) DO UPDATE SET
    ver = excluded.ver, seq = excluded.seq, advertise = excluded.advertise, sig = excluded.sig";
const LOAD_RECORDS: &str = "SELECT owner, ver, seq, advertise, sig FROM records";
const CLEAR_RECORD: &str = "DELETE FROM records WHERE owner = ?1";

const UPSERT_OWNER: &str = "
INSERT INTO owners (name, ip, udp_port, flowinfo, scope_id, tcp_port, online, token, instance, ver,
    peer_ip, key)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
ON CONFLICT (name) DO UPDATE SET
    ip = excluded.ip, udp_port = excluded.udp_port, flowinfo = excluded.flowinfo,
    scope_id = excluded.scope_id, tcp_port = excluded.tcp_port, online = excluded.online,
    token = excluded.token, instance = excluded.instance, ver = excluded.ver,
    peer_ip = excluded.peer_ip, key = excluded.key";
const OWNER_EXISTS: &str = "SELECT 1 FROM owners WHERE name = ?1";
const UPSERT_FILE: &str = "
INSERT INTO files (owner, name, ver, size, hash, files) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (owner, name) DO UPDATE SET
    ver = excluded.ver, size = excluded.size, hash = excluded.hash, files = excluded.files";
const CLEAR_FILES: &str = "DELETE FROM files WHERE owner = ?1";
const LOAD_OWNERS: &str = "
SELECT name, ip, udp_port, flowinfo, scope_id, tcp_port, online, token, instance, ver,
    peer_ip, key
FROM owners ORDER BY name";
const LOAD_FILES: &str =
    "SELECT owner, name, ver, size, hash, files FROM files ORDER BY owner, name";

/// How hard SQLite syncs on commit (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Sync the WAL on every commit: a committed batch survives power loss. The default.
    #[default]
    Full,
    /// Sync only at checkpoints: survives a process crash, but the last commits may be
    /// lost on power loss. For tests and benchmarks, not for the server.
    Normal,
    /// Never sync. Tests only.
    Off,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

/// Durable store in one SQLite file (WAL).
pub struct SqliteStore {
    conn: Connection,
    /// Stops the background checkpointer when the store is dropped.
    _checkpointer: Option<Checkpointer>,
}

/// Checkpoints the WAL from its own connection and thread, so that commits (which gate
/// the server's replies) never pay for a checkpoint: SQLite's automatic checkpoint runs
/// inside whichever commit crosses the threshold and adds its syncs to that commit.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(std::time::Duration::from_secs(1)).ok()?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // Until the store is dropped (the sender goes away).
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(std::time::Duration::from_millis(500))
                {
                    // PASSIVE never blocks the writer; a busy result just means "later".
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok()?;
        Some(Checkpointer { stop })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn.path())
            .finish()
    }
}

impl SqliteStore {
    /// Opens or creates the database at `path` with [`Synchronous::Full`]. The parent
    /// directory must exist. Refuses a database whose schema is newer than this build's.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Synchronous::Full)
    }

    /// Like [`SqliteStore::open`] with an explicit sync level.
    pub fn open_with(path: &Path, sync: Synchronous) -> Result<Self> {
        let conn = Connection::open(path)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Still durable (rollback journal + synchronous), just slower.
            tracing::warn!(path = %path.display(), %mode, "SQLite WAL mode unavailable");
            return Self::init(conn, sync);
        }
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let mut store = Self::init(conn, sync)?;
        store._checkpointer = Checkpointer::start(path);
        Ok(store)
    }

    /// A private in-memory database (nothing survives the value). For tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, Synchronous::Full)
    }

    fn init(mut conn: Connection, sync: Synchronous) -> Result<Self> {
        conn.pragma_update(None, "synchronous", sync.pragma_value())?;
        // Another process holding the write lock (e.g. a backup) makes us wait, not fail.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(16);

        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0 => {
                let has_tables: bool = tx
                    .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' LIMIT 1")?
                    .exists([])?;
                if has_tables {
                    return Err(SqlError::Corrupt(
                        "database has tables but no fileapp schema version; \
                         refusing to use a file that is not a fileapp store"
                            .into(),
                    ));
                }
                tx.execute_batch(SCHEMA_V1)?;
                tx.execute_batch(SCHEMA_V2)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            1 => {
                tx.execute_batch(SCHEMA_V2)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            SCHEMA_VERSION => {}
            v if v > SCHEMA_VERSION => {
                return Err(SqlError::Corrupt(format!(
                    "database schema version {v} is newer than this build supports \
                     ({SCHEMA_VERSION}); refusing to open it (upgrade fileapp)"
                )));
            }
            v => {
                return Err(SqlError::Corrupt(format!(
                    "unknown database schema version {v}"
                )));
            }
        }
        tx.commit()?;
        Ok(Self {
            conn,
            _checkpointer: None,
        })
    }
}

fn u64_to_sql(v: u64) -> i64 {
    v as i64
}

fn u64_from_sql(v: i64) -> u64 {
    v as u64
}

fn u32_col(row: &rusqlite::Row<'_>, idx: usize, what: &str) -> Result<u32> {
    let v: i64 = row.get(idx)?;
    u32::try_from(v).map_err(|_| SqlError::Corrupt(format!("{what} out of range: {v}")))
}

fn u16_col(row: &rusqlite::Row<'_>, idx: usize, what: &str) -> Result<u16> {
    let v: i64 = row.get(idx)?;
    u16::try_from(v).map_err(|_| SqlError::Corrupt(format!("{what} out of range: {v}")))
}

fn bad_type(what: &str) -> impl FnOnce(rusqlite::types::FromSqlError) -> SqlError + '_ {
    move |e| SqlError::Corrupt(format!("{what}: {e}"))
}

/// A `records` row: `None` when the record is not signed (NULL seq or sig).
fn record_from_row(owner: &str, row: &rusqlite::Row<'_>) -> Result<Option<RecordSig>> {
    super::record_from_columns(row.get(2)?, row.get(3)?, row.get(4)?)
        .map_err(|e| SqlError::Corrupt(format!("record of {owner:?}: {e}")))
}

fn owner_from_row(row: &rusqlite::Row<'_>) -> Result<OwnerRow> {
    let name: String = row.get(0)?;
    let ip_text = row.get_ref(1)?.as_str().map_err(bad_type("owners.ip"))?;
    let ip: IpAddr = ip_text
        .parse()
        .map_err(|_| SqlError::Corrupt(format!("owner {name:?}: bad ip {ip_text:?}")))?;
    let udp_port = u16_col(row, 2, "udp_port")?;
    let flowinfo = u32_col(row, 3, "flowinfo")?;
    let scope_id = u32_col(row, 4, "scope_id")?;
    let addr = match ip {
        IpAddr::V4(_) => SocketAddr::new(ip, udp_port),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, udp_port, flowinfo, scope_id)),
    };
    let tcp_port = u16_col(row, 5, "tcp_port")?;
    let online = match row.get::<_, i64>(6)? {
        0 => false,
        1 => true,
        v => return Err(SqlError::Corrupt(format!("owner {name:?}: online = {v}"))),
    };
    let token_bytes: [u8; 16] = row
        .get_ref(7)?
        .as_blob()
        .map_err(bad_type("owners.token"))?
        .try_into()
        .map_err(|_| SqlError::Corrupt(format!("owner {name:?}: token is not 16 bytes")))?;
    let peer_text = row
        .get_ref(10)?
        .as_str()
        .map_err(bad_type("owners.peer_ip"))?;
    let peer_ip: IpAddr = peer_text
        .parse()
        .map_err(|_| SqlError::Corrupt(format!("owner {name:?}: bad peer ip {peer_text:?}")))?;
    let key = match row.get_ref(11)? {
        rusqlite::types::ValueRef::Null => None,
        v => Some(
            v.as_blob()
                .map_err(bad_type("owners.key"))?
                .try_into()
                .map_err(|_| SqlError::Corrupt(format!("owner {name:?}: key is not 32 bytes")))?,
        ),
    };
    Ok(OwnerRow {
        addr,
        peer_ip,
        key,
        tcp_port,
        online,
        token: u128::from_be_bytes(token_bytes),
        instance: u64_from_sql(row.get(8)?),
        ver: u64_from_sql(row.get(9)?),
        name,
        reach: Default::default(),
    })
}

impl SqliteStore {
    /// Forgets `name`'s key, session and offers, so anyone may register it again. For
    /// operators, with the server stopped. Returns whether it existed.
    ///
    /// The row itself stays (offline, with no key, no files): it holds the table
    /// version of its last change, and deleting it could take the server's version
    /// back below what clients hold, so that they would ignore the next changes.
    pub fn release_name(&mut self, name: &str) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(CLEAR_FILES)?.execute([name])?;
        tx.prepare_cached(CLEAR_RECORD)?.execute([name])?;
        let n = tx
            .prepare_cached("UPDATE owners SET key = NULL, online = 0 WHERE name = ?1")?
            .execute([name])?;
        tx.commit()?;
        Ok(n > 0)
    }
}

impl Store for SqliteStore {
    /// Every owner, in name (byte) order, each with its files in name order.
    fn load(&mut self) -> Result<Vec<OwnerRecord>, StoreError> {
        Ok(self.load_all()?)
    }

    /// Applies `ops` in order in one transaction; nothing is applied if any op fails.
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        Ok(self.commit_ops(ops)?)
    }
}

impl SqliteStore {
    fn load_all(&mut self) -> Result<Vec<OwnerRecord>> {
        let tx = self.conn.transaction()?; // one consistent snapshot for both scans
        let mut out: Vec<OwnerRecord> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(LOAD_OWNERS)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                out.push(OwnerRecord {
                    row: owner_from_row(row)?,
                    files: Vec::new(),
                    record: None,
                    record_ver: 0,
                });
            }
        }
        {
            // Both scans are in the same (BINARY, i.e. byte) order as Rust's `str` order,
            // so files are attached by a merge join.
            let mut stmt = tx.prepare_cached(LOAD_FILES)?;
            let mut rows = stmt.query([])?;
            let mut i = 0;
            while let Some(row) = rows.next()? {
                let owner = row.get_ref(0)?.as_str().map_err(bad_type("files.owner"))?;
                while i < out.len() && out[i].row.name.as_str() < owner {
                    i += 1;
                }
                match out.get_mut(i) {
                    Some(rec) if rec.row.name == owner => {
                        let name: String = row.get(1)?;
                        let hash: [u8; 32] = row
                            .get_ref(4)?
                            .as_blob()
                            .map_err(bad_type("files.hash"))?
                            .try_into()
                            .map_err(|_| {
                                SqlError::Corrupt(format!("file {name:?}: hash is not 32 bytes"))
                            })?;
                        rec.files.push(FileRow {
                            name,
                            ver: u64_from_sql(row.get(2)?),
                            size: u64_from_sql(row.get(3)?),
                            hash,
                            files: u64_from_sql(row.get(5)?),
                        });
                    }
                    // Files of an unknown owner cannot be written by `commit`; skip them.
                    _ => {}
                }
            }
        }
        {
            let mut stmt = tx.prepare_cached(LOAD_RECORDS)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let owner: String = row.get(0)?;
                let Ok(i) = out.binary_search_by(|r| r.row.name.as_str().cmp(&owner)) else {
                    continue; // the record of an unknown owner
                };
                out[i].record_ver = u64_from_sql(row.get(1)?);
                out[i].record = record_from_row(&owner, row)?;
            }
        }
        tx.finish()?;
        Ok(out)
    }

    fn commit_ops(&mut self, ops: &[StoreOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in ops {
            match op {
                StoreOp::Owner(row) => {
                    let (flowinfo, scope_id) = match row.addr {
                        SocketAddr::V4(_) => (0, 0),
                        SocketAddr::V6(a) => (a.flowinfo(), a.scope_id()),
                    };
                    tx.prepare_cached(UPSERT_OWNER)?.execute(params![
                        row.name,
                        row.addr.ip().to_string(),
                        row.addr.port(),
                        flowinfo,
                        scope_id,
                        row.tcp_port,
                        row.online,
                        &row.token.to_be_bytes()[..],
                        u64_to_sql(row.instance),
                        u64_to_sql(row.ver),
                        row.peer_ip.to_string(),
                        row.key.as_ref().map(|k| &k[..]),
                    ])?;
                }
                StoreOp::Files { owner, files } => {
                    let known = tx
                        .prepare_cached(OWNER_EXISTS)?
                        .query_row([owner], |_| Ok(()))
                        .optional()?
                        .is_some();
                    if !known {
                        continue; // as MemoryStore: files of an unknown owner are ignored
                    }
                    let mut stmt = tx.prepare_cached(UPSERT_FILE)?;
                    for f in files {
                        stmt.execute(params![
                            owner,
                            f.name,
                            u64_to_sql(f.ver),
                            u64_to_sql(f.size),
                            &f.hash[..],
                            u64_to_sql(f.files)
                        ])?;
                    }
                }
                StoreOp::ClearFiles { owner } => {
                    tx.prepare_cached(CLEAR_FILES)?.execute([owner])?;
                }
                StoreOp::Record { owner, record, ver } => {
                    let (seq, advertise, sig) = super::record_columns(record);
                    tx.prepare_cached(UPSERT_RECORD)?.execute(params![
                        owner,
                        u64_to_sql(*ver),
                        seq,
                        advertise,
                        sig
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
