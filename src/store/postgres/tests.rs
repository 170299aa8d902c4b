//! PostgreSQL store tests, against a throwaway cluster ([`crate::testkit`]): the SQLite
//! store's model test (same semantics as MemoryStore), round trips, migrations, the log.

use proptest::prelude::*;

use super::*;
use crate::store::sqlite::tests::{arb_op, fr, loaded, row};
use crate::store::{MemoryStore, OwnerRow};

/// A store on a new database, or `None` when PostgreSQL is missing (not under CI).
fn store() -> Option<(PgStore, String)> {
    let url = crate::testkit::pg_database()?;
    Some((PgStore::open(&url, "s1").unwrap(), url))
}

/// Runs `sql` on a fresh connection to `url`.
fn sql(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = connect(url).await.unwrap();
        c.batch_execute(sql).await.unwrap();
    });
}

#[test]
fn same_semantics_as_memory_store() {
    let Some((pg, url)) = store() else { return };
    let pg = std::cell::RefCell::new(pg);
    proptest!(ProptestConfig::with_cases(48), |(
        batches in prop::collection::vec(prop::collection::vec(arb_op(), 0..12), 1..6)
    )| {
        sql(&url, "TRUNCATE owners, files, records");
        let mut mem = MemoryStore::default();
        let mut pg = pg.borrow_mut();
        for batch in &batches {
            mem.commit(batch).unwrap();
            pg.commit(batch).unwrap();
            prop_assert_eq!(loaded(&mut *pg), loaded(&mut mem));
        }
    });
}

#[test]
fn reopen_keeps_everything_and_homes() {
    let Some((mut pg, url)) = store() else { return };
    let ops = vec![
        StoreOp::Owner(row("alice", 1)),
        StoreOp::Owner(OwnerRow {
            addr: "[fe80::1%7]:9".parse().unwrap(),
            online: false,
            token: 0,
            instance: 0,
            // Shared with the other servers: kept (SQLite, one server, does not).
            reach: fileapp_core::reach::Reach {
                tcp: Some(false),
                nat: fileapp_core::reach::Nat::Dependent,
            },
            ..row("bob", u64::MAX)
        }),
        StoreOp::Files {
            owner: "alice".into(),
            files: vec![fr("a.txt", 1), fr("b.txt", u64::MAX)],
        },
    ];
    pg.commit(&ops).unwrap();
    let mut m = MemoryStore::default();
    m.commit(&ops).unwrap();
    drop(pg);
    let mut again = PgStore::open(&url, "s2").unwrap();
    assert_eq!(loaded(&mut again), loaded(&mut m));
    let homes: Vec<String> = again
        .load_with_homes()
        .unwrap()
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    assert_eq!(homes, ["s1", "s1"]);
}

#[test]
fn migrations_are_recorded_once_and_newer_schemas_refused() {
    let Some((pg, url)) = store() else { return };
    drop(pg);
    drop(PgStore::open(&url, "s1").unwrap()); // again: nothing to apply
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let versions: Vec<i32> = rt.block_on(async {
        let c = connect(&url).await.unwrap();
        c.query(
            "SELECT version FROM fileapp_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    });
    let want: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, want);
    sql(
        &url,
        "INSERT INTO fileapp_migrations (version, name) VALUES (999, 'future')",
    );
    let err = PgStore::open(&url, "s1").unwrap_err().to_string();
    assert!(err.contains("newer than this build supports"), "{err}");
}

#[test]
fn every_commit_is_logged_and_notified() {
    let Some((mut pg, url)) = store() else { return };
    pg.commit(&[StoreOp::Owner(row("a", 1)), StoreOp::Owner(row("b", 1))])
        .unwrap();
    pg.commit(&[StoreOp::ClearFiles { owner: "a".into() }])
        .unwrap();
    assert!(pg.release_name("b").unwrap());
    assert!(!pg.release_name("b").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log: Vec<(i64, Vec<u8>, String)> = rt.block_on(async {
        let c = connect(&url).await.unwrap();
        c.query("SELECT seq, owner, server FROM changes ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    });
    let owners: Vec<&[u8]> = log.iter().map(|l| l.1.as_slice()).collect();
    assert_eq!(owners, [&b"a"[..], b"b", b"a", b"b", b"b"]);
    assert!(log.iter().all(|l| l.2 == "s1"));
    assert!(log.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(pg.load().unwrap().len(), 1);
}

#[test]
fn corrupt_values_are_typed_errors() {
    let Some((mut pg, url)) = store() else { return };
    pg.commit(&[StoreOp::Owner(row("a", 1))]).unwrap();
    sql(&url, "UPDATE owners SET token = '\\x00'");
    assert!(matches!(pg.load(), Err(StoreError::Corrupt(_))));
    sql(
        &url,
        "UPDATE owners SET token = '\\x00000000000000000000000000000000', udp_port = 70000",
    );
    assert!(matches!(pg.load(), Err(StoreError::Corrupt(_))));
    sql(&url, "UPDATE owners SET udp_port = 1, ip = 'nope'");
    assert!(matches!(pg.load(), Err(StoreError::Corrupt(_))));
}

#[test]
fn a_bad_url_is_one_clear_error() {
    let err = PgStore::open("postgres://nobody@127.0.0.1:1/x", "s1")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("database error"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}
