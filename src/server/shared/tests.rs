//! The follower against a throwaway PostgreSQL: a sequence number that commits late (and
//! without a NOTIFY) is still read, and a server whose beat never moves is reported down.

use std::time::Duration;

use super::*;
use crate::store::sqlite::tests::row;
use crate::store::{Store, StoreOp};

fn fast() -> FollowConfig {
    FollowConfig {
        beat_every: Duration::from_millis(50),
        dead_after: Duration::from_millis(300),
        gap_timeout: Duration::from_secs(10),
    }
}

/// The next event within `wait`, if any.
async fn next(sh: &mut Shared, wait: Duration) -> Option<Remote> {
    tokio::time::timeout(wait, sh.events.recv())
        .await
        .ok()
        .flatten()
}

/// Waits for rows naming `name`; returns them.
async fn rows_of(sh: &mut Shared, name: &str) -> Vec<(OwnerRecord, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(sh, left).await {
            Some(Remote::Rows { rows, .. }) if rows.iter().any(|(r, _)| r.row.name == name) => {
                return rows;
            }
            Some(_) => {}
            None => panic!("no rows of {name} within 10 s"),
        }
    }
}

#[test]
fn a_late_commit_is_read_and_a_silent_server_is_down() {
    let Some(url) = crate::testkit::pg_database() else {
        return;
    };
    let mut a = PgStore::open(&url, "A").unwrap();
    let b = PgStore::open(&url, "B").unwrap();
    let mut sh = Shared::start(&b).unwrap();
    sh.follow(fast(), "127.0.0.1:1".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A slow writer takes a sequence number and holds its transaction open.
        let mut slow = postgres::connect(&url).await.unwrap();
        let tx = slow.transaction().await.unwrap();
        tx.batch_execute(
            "INSERT INTO owners (name, ip, udp_port, tcp_port, online, token, instance, ver,
                 peer_ip, home)
             VALUES ('late', '127.0.0.1', 9, 9, true, '\\x00000000000000000000000000000001',
                 1, 1, '127.0.0.1', 'A');
             INSERT INTO changes (owner, server) VALUES ('late', 'A');",
        )
        .await
        .unwrap();
        // A later number commits first, with its NOTIFY: read at once.
        a.commit(&[StoreOp::Owner(row("early", 1))]).unwrap();
        let got = rows_of(&mut sh, "early").await;
        assert_eq!(got[0].1, "A");
        // The early number commits now, without a NOTIFY: the gap is asked for again.
        tx.commit().await.unwrap();
        let got = rows_of(&mut sh, "late").await;
        assert!(
            got.iter()
                .any(|(r, h)| r.row.name == "late" && r.row.online && h == "A")
        );
        // A's rows name it, but A never beats: down after `dead_after`.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match next(&mut sh, left).await {
                Some(Remote::Down(id)) => {
                    assert_eq!(id, "A");
                    break;
                }
                Some(_) => {}
                None => panic!("A was never reported down"),
            }
        }
        // The status lines list B itself, beating, with its lag.
        let lines = sh.state.servers.lock().unwrap().clone();
        assert!(lines.iter().any(|l| l.id == "B" && !l.down), "{lines:?}");
    });
    drop(a);
}

/// Waits for forwarded bodies until `n` have come; returns them in order.
async fn forwarded(sh: &mut Shared, n: usize) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(sh, left).await {
            Some(Remote::Forwarded(b)) => got.extend(b),
            Some(_) => {}
            None => panic!("{} of {n} forwards within 10 s: {got:?}", got.len()),
        }
    }
    got
}

#[test]
fn forwards_reach_their_addressee_once_and_in_order() {
    let Some(url) = crate::testkit::pg_database() else {
        return;
    };
    let (a, b) = (
        PgStore::open(&url, "A").unwrap(),
        PgStore::open(&url, "B").unwrap(),
    );
    let (mut sa, mut sb) = (Shared::start(&a).unwrap(), Shared::start(&b).unwrap());
    sa.follow(fast(), "127.0.0.1:1".into());
    sb.follow(fast(), "127.0.0.1:2".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for body in [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()] {
            assert!(sa.forward("B", body));
        }
        assert!(sa.forward("C", b"for nobody here".to_vec()));
        assert_eq!(
            forwarded(&mut sb, 3).await,
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert!(sb.forward("A", b"back".to_vec()));
        assert_eq!(forwarded(&mut sa, 1).await, [b"back".to_vec()]);
        // Taken once: several more beats bring nothing again, and A never saw B's.
        let quiet = async {
            loop {
                if let Some(Remote::Forwarded(b)) = sb.events.recv().await {
                    return b;
                }
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(400), quiet)
                .await
                .is_err(),
            "a forward was delivered twice"
        );
        let c = postgres::connect(&url).await.unwrap();
        let left: i64 = c
            .query_one("SELECT count(*) FROM forwards", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 1, "only C's, which nobody took");
    });
}
