//! SQLite store tests: round trips, the model test against MemoryStore, crash durability.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::store::MemoryStore;

pub(crate) fn fr(name: impl Into<String>, ver: u64) -> FileRow {
    FileRow {
        name: name.into(),
        ver,
        size: ver.wrapping_mul(3),
        hash: [ver as u8; 32],
        files: 0,
    }
}

pub(crate) fn row(name: &str, ver: u64) -> OwnerRow {
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
        reach: Default::default(),
    }
}

/// `load()` with each owner's files sorted: file order is not part of the contract.
pub(crate) fn loaded(store: &mut dyn Store) -> Vec<OwnerRecord> {
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

pub(crate) fn arb_op() -> impl Strategy<Value = StoreOp> {
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
                    reach: Default::default(),
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
                        hash,
                        files: 0,
                    })
                    .collect()
            }),
        1 => arb_owner().prop_map(|owner| StoreOp::ClearFiles { owner }),
        2 => (
            arb_owner(),
            any::<u64>(),
            prop::option::of((any::<u64>(), prop::option::of(arb_addr()), any::<[u8; 32]>()))
        )
            .prop_map(|(owner, ver, record)| StoreOp::Record {
                owner,
                ver,
                record: record.map(|(seq, adv, sig)| RecordSig {
                    seq,
                    advertise: adv.map(|a| a.ip()),
                    sig: sig.to_vec(),
                }),
            }),
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

const RELATIVE_ENV: &str = "FILEAPP_SQLITE_RELATIVE_CHILD";

/// The child half of `relative_path_without_parent_works`, not a test of its own
/// (ignored; run by it with `--ignored --exact`, in a fresh folder as its working
/// directory, so no other test's working directory is changed). Opens `plain.db`: a
/// bare file name, whose parent is the empty path.
#[test]
#[ignore = "child process of relative_path_without_parent_works; run only by it"]
fn relative_child() {
    let rel = std::env::var(RELATIVE_ENV).expect("run by relative_path_without_parent_works");
    let rel = Path::new(&rel);
    assert_eq!(rel.parent(), Some(Path::new("")), "a bare name: {rel:?}");
    let mut s = SqliteStore::open(rel).unwrap();
    s.commit(&[StoreOp::Owner(row("a", 1))]).unwrap();
    assert_eq!(s.load().unwrap().len(), 1);
    drop(s);
    let mut again = SqliteStore::open(rel).unwrap();
    assert_eq!(
        again.load().unwrap().len(),
        1,
        "reopened through the same name"
    );
    println!("relative child ok");
}

#[test]
fn relative_path_without_parent_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "store::sqlite::tests::relative_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir(dir.path())
        .env(RELATIVE_ENV, "plain.db")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("relative child ok"),
        "{out:?}"
    );
    // The database is where the relative name points: in the child's working folder.
    assert!(dir.path().join("plain.db").is_file());
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

/// The child half of `survives_sigkill`, not a test of its own: ignored, so it is never
/// counted as a pass; `survives_sigkill` runs it with `--ignored --exact`. Commits
/// batches from `$START` on, forever, printing each one once `commit` returned.
#[test]
#[ignore = "child process of survives_sigkill; run only by it"]
fn crash_child() {
    let path =
        std::env::var_os(CRASH_ENV).expect("run by survives_sigkill, which sets the database");
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
                "--ignored",
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

#[test]
fn signed_records_round_trip_and_a_version_1_database_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
    }
    let signed = RecordSig {
        seq: 7,
        advertise: Some(Ipv6Addr::LOCALHOST.into()),
        sig: vec![9; 64],
    };
    let mut s = SqliteStore::open(&path).unwrap();
    s.commit(&[
        StoreOp::Owner(row("a", 1)),
        StoreOp::Record {
            owner: "a".into(),
            record: Some(signed.clone()),
            ver: 3,
        },
        // The record of an owner the store does not know is not kept (as MemoryStore).
        StoreOp::Record {
            owner: "ghost".into(),
            record: None,
            ver: 4,
        },
    ])
    .unwrap();
    drop(s);
    let mut s = SqliteStore::open(&path).unwrap();
    let recs = s.load().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].record.clone(), recs[0].record_ver),
        (Some(signed), 3)
    );
    s.commit(&[StoreOp::Record {
        owner: "a".into(),
        record: None,
        ver: 5,
    }])
    .unwrap();
    let recs = s.load().unwrap();
    assert_eq!((recs[0].record.clone(), recs[0].record_ver), (None, 5));
    let version: i64 = s
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_released_name_loses_key_files_and_record_but_keeps_its_version() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    s.commit(&[
        StoreOp::Owner(row("a", 10)),
        StoreOp::Files {
            owner: "a".into(),
            files: vec![fr("f", 10)],
        },
        StoreOp::Record {
            owner: "a".into(),
            record: Some(RecordSig {
                seq: 1,
                advertise: None,
                sig: vec![1; 64],
            }),
            ver: 10,
        },
    ])
    .unwrap();
    assert!(s.release_name("a").unwrap());
    assert!(!s.release_name("nobody").unwrap());
    let recs = s.load().unwrap();
    assert_eq!(recs.len(), 1);
    let a = &recs[0];
    assert_eq!((a.row.key, a.row.online, a.row.ver), (None, false, 10));
    assert!(a.files.is_empty());
    assert_eq!(a.record, None);
}
