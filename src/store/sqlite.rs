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
//! ```
//!
//! `u64` values (`instance`, `ver`) are stored bit-cast to `i64`, so every value round-trips
//! exactly. `flowinfo`/`scope_id` are the IPv6 socket-address fields (0 for IPv4), kept so a
//! loaded [`OwnerRow::addr`] equals the committed one. All SQL is static text run through
//! the connection's prepared-statement cache.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{FileRow, OwnerRecord, OwnerRow, Store, StoreError, StoreOp};

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

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
INSERT INTO files (owner, name, ver, size, hash) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (owner, name) DO UPDATE SET
    ver = excluded.ver, size = excluded.size, hash = excluded.hash";
const CLEAR_FILES: &str = "DELETE FROM files WHERE owner = ?1";
const LOAD_OWNERS: &str = "
SELECT name, ip, udp_port, flowinfo, scope_id, tcp_port, online, token, instance, ver,
    peer_ip, key
FROM owners ORDER BY name";
const LOAD_FILES: &str = "SELECT owner, name, ver, size, hash FROM files ORDER BY owner, name";

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
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Synchronous::Full)
    }

    /// Like [`SqliteStore::open`] with an explicit sync level.
    pub fn open_with(path: &Path, sync: Synchronous) -> Result<Self, StoreError> {
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
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, Synchronous::Full)
    }

    fn init(mut conn: Connection, sync: Synchronous) -> Result<Self, StoreError> {
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
                    return Err(StoreError::Corrupt(
                        "database has tables but no fileapp schema version; \
                         refusing to use a file that is not a fileapp store"
                            .into(),
                    ));
                }
                tx.execute_batch(SCHEMA_V1)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            SCHEMA_VERSION => {}
            v if v > SCHEMA_VERSION => {
                return Err(StoreError::Corrupt(format!(
                    "database schema version {v} is newer than this build supports \
                     ({SCHEMA_VERSION}); refusing to open it (upgrade fileapp)"
                )));
            }
            v => {
                return Err(StoreError::Corrupt(format!(
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

fn u32_col(row: &rusqlite::Row<'_>, idx: usize, what: &str) -> Result<u32, StoreError> {
    let v: i64 = row.get(idx)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} out of range: {v}")))
}

fn u16_col(row: &rusqlite::Row<'_>, idx: usize, what: &str) -> Result<u16, StoreError> {
    let v: i64 = row.get(idx)?;
    u16::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} out of range: {v}")))
}

fn bad_type(what: &str) -> impl FnOnce(rusqlite::types::FromSqlError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn owner_from_row(row: &rusqlite::Row<'_>) -> Result<OwnerRow, StoreError> {
    let name: String = row.get(0)?;
    let ip_text = row.get_ref(1)?.as_str().map_err(bad_type("owners.ip"))?;
    let ip: IpAddr = ip_text
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("owner {name:?}: bad ip {ip_text:?}")))?;
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
        v => return Err(StoreError::Corrupt(format!("owner {name:?}: online = {v}"))),
    };
    let token_bytes: [u8; 16] = row
        .get_ref(7)?
        .as_blob()
        .map_err(bad_type("owners.token"))?
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("owner {name:?}: token is not 16 bytes")))?;
    let peer_text = row
        .get_ref(10)?
        .as_str()
        .map_err(bad_type("owners.peer_ip"))?;
    let peer_ip: IpAddr = peer_text
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("owner {name:?}: bad peer ip {peer_text:?}")))?;
    let key = match row.get_ref(11)? {
        rusqlite::types::ValueRef::Null => None,
        v => Some(
            v.as_blob()
                .map_err(bad_type("owners.key"))?
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("owner {name:?}: key is not 32 bytes")))?,
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
    })
}

impl SqliteStore {
    /// Forgets `name` entirely (its key, session and offers), so anyone may register it
    /// again. For operators, with the server stopped. Returns whether it existed.
    pub fn release_name(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(CLEAR_FILES)?.execute([name])?;
        let n = tx
            .prepare_cached("DELETE FROM owners WHERE name = ?1")?
            .execute([name])?;
        tx.commit()?;
        Ok(n > 0)
    }
}

impl Store for SqliteStore {
    /// Every owner, in name (byte) order, each with its files in name order.
    fn load(&mut self) -> Result<Vec<OwnerRecord>, StoreError> {
        let tx = self.conn.transaction()?; // one consistent snapshot for both scans
        let mut out: Vec<OwnerRecord> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(LOAD_OWNERS)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                out.push(OwnerRecord {
                    row: owner_from_row(row)?,
                    files: Vec::new(),
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
                                StoreError::Corrupt(format!("file {name:?}: hash is not 32 bytes"))
                            })?;
                        rec.files.push(FileRow {
                            name,
                            ver: u64_from_sql(row.get(2)?),
                            size: u64_from_sql(row.get(3)?),
                            hash,
                        });
                    }
                    // Files of an unknown owner cannot be written by `commit`; skip them.
                    _ => {}
                }
            }
        }
        tx.finish()?;
        Ok(out)
    }

    /// Applies `ops` in order in one transaction; nothing is applied if any op fails.
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
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
                            &f.hash[..]
                        ])?;
                    }
                }
                StoreOp::ClearFiles { owner } => {
                    tx.prepare_cached(CLEAR_FILES)?.execute([owner])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;
    use crate::store::MemoryStore;

    fn fr(name: impl Into<String>, ver: u64) -> FileRow {
        FileRow {
            name: name.into(),
            ver,
            size: ver.wrapping_mul(3),
            hash: [ver as u8; 32],
        }
    }

    fn row(name: &str, ver: u64) -> OwnerRow {
        OwnerRow {
            name: name.into(),
            addr: SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1).into(), 4000),
            tcp_port: 5000,
            online: true,
            token: u128::MAX - ver as u128,
            instance: u64::MAX - ver,
            ver,
            peer_ip: Ipv4Addr::new(10, 0, 0, 1).into(),
            key: Some([ver as u8; 32]),
        }
    }

    /// `load()` with each owner's files sorted: file order is not part of the contract.
    fn loaded(store: &mut dyn Store) -> Vec<OwnerRecord> {
        let mut recs = store.load().unwrap();
        for r in &mut recs {
            r.files.sort();
        }
        recs
    }

    // ---- semantics --------------------------------------------------------------------

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
                |(ip, p, flow, scope)| SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    p,
                    flow,
                    scope
                ))
            ),
            // IPv4-mapped IPv6 must stay IPv6.
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(ip).to_ipv6_mapped().into(), p)),
        ]
    }

    /// A small pool so ops collide; includes non-ASCII and NUL to check byte ordering.
    fn arb_owner() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "B", "é", "a\0b", "zz", "ab"]).prop_map(String::from)
    }

    fn arb_file() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["f", "g", "Ω.txt", "f\0"]).prop_map(String::from),
            "\\PC{1,12}",
        ]
    }

    fn arb_op() -> impl Strategy<Value = StoreOp> {
        prop_oneof![
            3 => (
                arb_owner(),
                arb_addr(),
                any::<u16>(),
                any::<bool>(),
                any::<u128>(),
                any::<u64>(),
                (any::<u64>(), arb_addr(), any::<Option<[u8; 32]>>())
            )
                .prop_map(|(name, addr, tcp_port, online, token, instance, (ver, peer, key))| {
                    StoreOp::Owner(OwnerRow {
                        name,
                        addr,
                        tcp_port,
                        online,
                        token,
                        instance,
                        ver,
                        peer_ip: peer.ip(),
                        key,
                    })
                }),
            4 => (
                arb_owner(),
                prop::collection::vec(
                    (arb_file(), any::<u64>(), any::<u64>(), any::<[u8; 32]>()),
                    0..6
                )
            )
                .prop_map(|(owner, files)| StoreOp::Files {
                    owner,
                    files: files
                        .into_iter()
                        .map(|(name, ver, size, hash)| FileRow {
                            name,
                            ver,
                            size,
                            hash
                        })
                        .collect()
                }),
            1 => arb_owner().prop_map(|owner| StoreOp::ClearFiles { owner }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn same_semantics_as_memory_store(
            batches in prop::collection::vec(prop::collection::vec(arb_op(), 0..12), 1..8)
        ) {
            let mut mem = MemoryStore::default();
            let mut sql = SqliteStore::open_in_memory().unwrap();
            for batch in &batches {
                mem.commit(batch).unwrap();
                sql.commit(batch).unwrap();
                let want = loaded(&mut mem);
                // Owners come back in name order, exactly as MemoryStore's BTreeMap.
                prop_assert_eq!(loaded(&mut sql), want);
            }
        }
    }

    #[test]
    fn files_of_unknown_owner_are_ignored() {
        let mut s = SqliteStore::open_in_memory().unwrap();
        s.commit(&[StoreOp::Files {
            owner: "ghost".into(),
            files: vec![fr("f", 1)],
        }])
        .unwrap();
        s.commit(&[StoreOp::Owner(row("ghost", 2))]).unwrap();
        let recs = s.load().unwrap();
        assert_eq!(recs.len(), 1);
        assert!(recs[0].files.is_empty(), "{recs:?}");
    }

    #[test]
    fn failed_batch_applies_nothing() {
        let mut s = SqliteStore::open_in_memory().unwrap();
        s.commit(&[StoreOp::Owner(row("a", 1))]).unwrap();
        // Make the next file insert fail half-way through a batch.
        s.conn
            .execute_batch(
                "CREATE TRIGGER no_bad BEFORE INSERT ON files WHEN NEW.name = 'bad'
                 BEGIN SELECT RAISE(ABORT, 'boom'); END;",
            )
            .unwrap();
        let err = s.commit(&[
            StoreOp::Owner(row("b", 2)),
            StoreOp::Files {
                owner: "a".into(),
                files: vec![fr("ok", 3), fr("bad", 3)],
            },
        ]);
        assert!(err.is_err());
        let recs = s.load().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].row, row("a", 1));
        assert!(recs[0].files.is_empty());
    }

    // ---- files on disk ----------------------------------------------------------------

    #[test]
    fn reopen_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let ops = vec![
            StoreOp::Owner(row("alice", 1)),
            StoreOp::Owner(OwnerRow {
                addr: "[fe80::1%7]:9".parse().unwrap(),
                online: false,
                token: 0,
                instance: 0,
                ..row("bob", u64::MAX)
            }),
            StoreOp::Files {
                owner: "alice".into(),
                files: vec![fr("a.txt", 1), fr("b.txt", u64::MAX)],
            },
            StoreOp::Files {
                owner: "bob".into(),
                files: vec![fr("x", 7)],
            },
        ];
        let want = {
            let mut m = MemoryStore::default();
            m.commit(&ops).unwrap();
            loaded(&mut m)
        };
        {
            let mut s = SqliteStore::open(&path).unwrap();
            s.commit(&ops).unwrap();
        }
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(loaded(&mut s), want);
        assert_eq!(
            s.conn
                .pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))
                .unwrap(),
            "wal"
        );
        assert_eq!(
            s.conn
                .pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))
                .unwrap(),
            2, // FULL
        );
    }

    #[test]
    fn relative_path_without_parent_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.db");
        // `Path::new("plain.db")` has an empty parent; open through such a path.
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(&path, &cwd);
        let mut s = SqliteStore::open(&rel).unwrap();
        s.commit(&[StoreOp::Owner(row("a", 1))]).unwrap();
        assert_eq!(s.load().unwrap().len(), 1);
    }

    /// `path` relative to `base` through `..` components (both absolute).
    fn pathdiff(path: &Path, base: &Path) -> std::path::PathBuf {
        let mut rel = std::path::PathBuf::new();
        for _ in base.components().skip(1) {
            rel.push("..");
        }
        rel.join(path.strip_prefix("/").unwrap())
    }

    #[test]
    fn refuses_newer_schema_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("newer than this build supports"), "{err}");

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        let err = SqliteStore::open(&other).unwrap_err().to_string();
        assert!(err.contains("not a fileapp store"), "{err}");
    }

    #[test]
    fn corrupt_values_are_typed_errors() {
        let mut s = SqliteStore::open_in_memory().unwrap();
        s.commit(&[StoreOp::Owner(row("a", 1))]).unwrap();
        s.conn
            .execute("UPDATE owners SET token = x'00'", [])
            .unwrap();
        assert!(matches!(s.load(), Err(StoreError::Corrupt(_))));
        s.conn
            .execute(
                "UPDATE owners SET token = zeroblob(16), udp_port = 70000",
                [],
            )
            .unwrap();
        assert!(matches!(s.load(), Err(StoreError::Corrupt(_))));
        s.conn
            .execute("UPDATE owners SET udp_port = 1, ip = 'nope'", [])
            .unwrap();
        assert!(matches!(s.load(), Err(StoreError::Corrupt(_))));
    }

    // ---- crash safety -----------------------------------------------------------------

    const CRASH_ENV: &str = "FILEAPP_SQLITE_CRASH_CHILD_DB";
    const CRASH_START_ENV: &str = "FILEAPP_SQLITE_CRASH_CHILD_START";

    /// Batch `i`: owner `b{i}` with three files, then the `last` owner at version `i`.
    fn crash_batch(i: u64) -> Vec<StoreOp> {
        let name = format!("b{i}");
        vec![
            StoreOp::Owner(row(&name, i)),
            StoreOp::Files {
                owner: name,
                files: (0..3).map(|k| fr(format!("f{k}"), i)).collect(),
            },
            StoreOp::Owner(row("last", i)),
        ]
    }

    /// The child half of `survives_sigkill`: does nothing unless run by it. Commits batches
    /// from `$START` on, forever, printing each one once `commit` returned.
    #[test]
    fn crash_child() {
        let Some(path) = std::env::var_os(CRASH_ENV) else {
            return;
        };
        let start: u64 = std::env::var(CRASH_START_ENV).unwrap().parse().unwrap();
        let mut s = SqliteStore::open(Path::new(&path)).unwrap();
        let mut out = std::io::stdout().lock();
        for i in start.. {
            s.commit(&crash_batch(i)).unwrap();
            writeln!(out, "committed {i}").unwrap();
            out.flush().unwrap();
        }
    }

    /// A child commits batches and reports each one; it is SIGKILLed mid-stream (while it
    /// is writing the next batch). Every reported batch must be there after reopening, and
    /// batches must be all-or-nothing and in order: the stored `b*` owners are exactly
    /// `b0..=b{last}`, each with its three files. Repeated on the same file, so recovery
    /// from a killed WAL is followed by more writes and another kill.
    #[test]
    fn survives_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.db");
        let mut next = 0u64;
        for round in 0..4u64 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::sqlite::tests::crash_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_ENV, &path)
                .env(CRASH_START_ENV, next.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let kill_at = next + 40 + round * 23;
            let mut acked: Option<u64> = None;
            for line in lines.by_ref() {
                if let Some(n) = line.unwrap().strip_prefix("committed ") {
                    let n: u64 = n.parse().unwrap();
                    acked = Some(n);
                    if n >= kill_at {
                        break;
                    }
                }
            }
            child.kill().unwrap(); // SIGKILL
            // Lines written before the kill also report acknowledged commits.
            for line in lines {
                if let Some(n) = line.unwrap().strip_prefix("committed ") {
                    acked = Some(n.parse().unwrap());
                }
            }
            child.wait().unwrap();
            let acked = acked.expect("child acknowledged nothing");

            let mut s = SqliteStore::open(&path).unwrap();
            let recs = s.load().unwrap();
            let last = recs
                .iter()
                .find(|r| r.row.name == "last")
                .expect("no batch survived")
                .row
                .ver;
            assert!(last >= acked, "round {round}: acked {acked}, stored {last}");
            let mut stored: Vec<u64> = recs
                .iter()
                .filter_map(|r| {
                    let i = r.row.name.strip_prefix('b')?.parse::<u64>().ok()?;
                    assert_eq!(r.files.len(), 3, "round {round}: batch {i} torn");
                    Some(i)
                })
                .collect();
            stored.sort_unstable();
            assert_eq!(
                stored,
                (0..=last).collect::<Vec<_>>(),
                "round {round}: stored batches are not the prefix 0..={last}"
            );
            next = last + 1;
        }
    }

    // ---- measurements (cargo test --release -- --ignored --nocapture) -----------------

    fn file_db(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
        SqliteStore::open(&dir.path().join(name)).unwrap()
    }

    #[test]
    #[ignore = "benchmark; run with --release --ignored --nocapture"]
    fn bench_commit_throughput() {
        let dir = tempfile::tempdir_in(
            std::env::var_os("FILEAPP_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()),
        )
        .unwrap();
        for batch in [1usize, 64, 1024] {
            let mut s = file_db(&dir, &format!("bench{batch}.db"));
            let mut next = 0u64;
            let mut ops = 0u64;
            let mut commits = 0u64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                let b: Vec<StoreOp> = (0..batch)
                    .map(|_| {
                        next += 1;
                        let owner = format!("o{}", next % 10_000);
                        if next.is_multiple_of(2) {
                            StoreOp::Owner(row(&owner, next))
                        } else {
                            StoreOp::Files {
                                owner,
                                files: vec![fr(format!("file{}", next % 7), next)],
                            }
                        }
                    })
                    .collect();
                s.commit(&b).unwrap();
                ops += batch as u64;
                commits += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "batch {batch:>4}: {commits:>6} commits, {:>9.0} ops/s, {:>7.0} commits/s, {:.2} ms/commit",
                ops as f64 / secs,
                commits as f64 / secs,
                secs * 1e3 / commits as f64
            );
        }
    }

    #[test]
    #[ignore = "benchmark; run with --release --ignored --nocapture"]
    fn bench_load_100k_owners_10_files() {
        const OWNERS: u64 = 100_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.db");
        {
            let mut s = SqliteStore::open(&path).unwrap();
            let start = Instant::now();
            for chunk in (0..OWNERS).collect::<Vec<_>>().chunks(1000) {
                let ops: Vec<StoreOp> = chunk
                    .iter()
                    .flat_map(|&i| {
                        let name = format!("owner-{i:06}");
                        [
                            StoreOp::Owner(row(&name, i)),
                            StoreOp::Files {
                                owner: name,
                                files: (0..10).map(|k| fr(format!("file-{k}.bin"), i)).collect(),
                            },
                        ]
                    })
                    .collect();
                s.commit(&ops).unwrap();
            }
            eprintln!("populate: {:?}", start.elapsed());
        }
        let size = std::fs::metadata(&path).unwrap().len();
        for attempt in 0..3 {
            let start = Instant::now();
            let mut s = SqliteStore::open(&path).unwrap();
            let recs = s.load().unwrap();
            let took = start.elapsed();
            assert_eq!(recs.len() as u64, OWNERS);
            assert!(recs.iter().all(|r| r.files.len() == 10));
            eprintln!(
                "open+load #{attempt}: {took:?} ({OWNERS} owners, {} files, db {} MiB)",
                OWNERS * 10,
                size >> 20
            );
        }
    }
}
