//! The SQL of the PostgreSQL store: rows in and out, one transaction per batch, and the
//! log rows and NOTIFY every commit adds. All SQL is static text with parameters.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::{CHANNEL, PgError, Result};
use crate::store::{FileRow, OwnerRecord, OwnerRow, RecordSig, StoreOp};
use fileapp_core::reach::{Nat, Reach};

const UPSERT_OWNER: &str = "
INSERT INTO owners (name, ip, udp_port, flowinfo, scope_id, tcp_port, online, token, instance,
    ver, peer_ip, key, home, reach_tcp, reach_nat)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (name) DO UPDATE SET
    ip = excluded.ip, udp_port = excluded.udp_port, flowinfo = excluded.flowinfo,
    scope_id = excluded.scope_id, tcp_port = excluded.tcp_port, online = excluded.online,
    token = excluded.token, instance = excluded.instance, ver = excluded.ver,
    peer_ip = excluded.peer_ip, key = excluded.key, home = excluded.home,
    reach_tcp = excluded.reach_tcp, reach_nat = excluded.reach_nat";
// As the other stores: files of an unknown owner are ignored.
const UPSERT_FILE: &str = "
INSERT INTO files (owner, name, ver, size, hash, files)
SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM owners WHERE name = $1)
ON CONFLICT (owner, name) DO UPDATE SET
    ver = excluded.ver, size = excluded.size, hash = excluded.hash, files = excluded.files";
const CLEAR_FILES: &str = "DELETE FROM files WHERE owner = $1";
const LOG: &str = "
WITH ins AS (
    INSERT INTO changes (owner, server) SELECT o, $2 FROM unnest($1::bytea[]) AS o
    RETURNING seq)
SELECT pg_notify($3, max(seq)::text) FROM ins";
const OWNER_COLUMNS: &str = "name, ip, udp_port, flowinfo, scope_id, tcp_port, online, token, \
    instance, ver, peer_ip, key, home, reach_tcp, reach_nat";

fn u64_to_sql(v: u64) -> i64 {
    v as i64
}

fn u64_from_sql(v: i64) -> u64 {
    v as u64
}

fn corrupt(what: impl Into<String>) -> PgError {
    PgError::Corrupt(what.into())
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| corrupt(format!("{what} is not UTF-8")))
}

fn owner_from_row(row: &Row) -> Result<(OwnerRow, String)> {
    let name = text(row.try_get(0)?, "owners.name")?;
    let ip_text: &str = row.try_get(1)?;
    let ip: IpAddr = ip_text
        .parse()
        .map_err(|_| corrupt(format!("owner {name:?}: bad ip {ip_text:?}")))?;
    // Ports are `integer`, the IPv6 fields `bigint`.
    let u16_of = |idx: usize, what: &str| -> Result<u16> {
        let v: i32 = row.try_get(idx)?;
        u16::try_from(v).map_err(|_| corrupt(format!("{what} out of range: {v}")))
    };
    let u32_of = |idx: usize, what: &str| -> Result<u32> {
        let v: i64 = row.try_get(idx)?;
        u32::try_from(v).map_err(|_| corrupt(format!("{what} out of range: {v}")))
    };
    let udp_port = u16_of(2, "udp_port")?;
    let (flowinfo, scope_id) = (u32_of(3, "flowinfo")?, u32_of(4, "scope_id")?);
    let addr = match ip {
        IpAddr::V4(_) => SocketAddr::new(ip, udp_port),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, udp_port, flowinfo, scope_id)),
    };
    let token: [u8; 16] = row
        .try_get::<_, &[u8]>(7)?
        .try_into()
        .map_err(|_| corrupt(format!("owner {name:?}: token is not 16 bytes")))?;
    let peer_text: &str = row.try_get(10)?;
    let peer_ip: IpAddr = peer_text
        .parse()
        .map_err(|_| corrupt(format!("owner {name:?}: bad peer ip {peer_text:?}")))?;
    let key = match row.try_get::<_, Option<&[u8]>>(11)? {
        None => None,
        Some(k) => Some(
            k.try_into()
                .map_err(|_| corrupt(format!("owner {name:?}: key is not 32 bytes")))?,
        ),
    };
    let nat = match row.try_get::<_, i16>(14)? {
        0 => Nat::Unknown,
        1 => Nat::Independent,
        2 => Nat::Dependent,
        n => return Err(corrupt(format!("owner {name:?}: reach_nat {n}"))),
    };
    let reach = Reach {
        tcp: row.try_get(13)?,
        nat,
    };
    let owner = OwnerRow {
        addr,
        peer_ip,
        key,
        reach,
        tcp_port: u16_of(5, "tcp_port")?,
        online: row.try_get(6)?,
        token: u128::from_be_bytes(token),
        instance: u64_from_sql(row.try_get(8)?),
        ver: u64_from_sql(row.try_get(9)?),
        name,
    };
    Ok((owner, row.try_get(12)?))
}

fn file_from_row(row: &Row) -> Result<(Vec<u8>, FileRow)> {
    let owner: Vec<u8> = row.try_get(0)?;
    let name = text(row.try_get(1)?, "files.name")?;
    let hash: [u8; 32] = row
        .try_get::<_, &[u8]>(4)?
        .try_into()
        .map_err(|_| corrupt(format!("file {name:?}: hash is not 32 bytes")))?;
    let file = FileRow {
        name,
        ver: u64_from_sql(row.try_get(2)?),
        size: u64_from_sql(row.try_get(3)?),
        hash,
        files: u64_from_sql(row.try_get(5)?),
    };
    Ok((owner, file))
}

/// Joins files (sorted by owner) to owners (sorted by name); files of an unknown owner
/// are skipped, as `commit` never writes them.
fn join(
    owners: Vec<Row>,
    files: Vec<Row>,
    records: Vec<Row>,
) -> Result<Vec<(OwnerRecord, String)>> {
    let mut out = Vec::with_capacity(owners.len());
    for r in &owners {
        let (row, home) = owner_from_row(r)?;
        out.push((
            OwnerRecord {
                row,
                files: Vec::new(),
                record: None,
                record_ver: 0,
            },
            home,
        ));
    }
    for r in &records {
        let owner: Vec<u8> = r.try_get(0)?;
        let Ok(i) = out.binary_search_by(|(rec, _)| rec.row.name.as_bytes().cmp(&owner)) else {
            continue; // the record of an unknown owner
        };
        out[i].0.record_ver = u64_from_sql(r.try_get(1)?);
        out[i].0.record = record_from_row(r)?;
    }
    let mut i = 0;
    for r in &files {
        let (owner, file) = file_from_row(r)?;
        while i < out.len() && out[i].0.row.name.as_bytes() < owner.as_slice() {
            i += 1;
        }
        if let Some((rec, _)) = out.get_mut(i)
            && rec.row.name.as_bytes() == owner.as_slice()
        {
            rec.files.push(file);
        }
    }
    Ok(out)
}

/// A `records` row: `None` when not signed (NULL seq or sig).
fn record_from_row(r: &Row) -> Result<Option<RecordSig>> {
    crate::store::record_from_columns(r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)
        .map_err(|e| corrupt(format!("record: {e}")))
}

const LOAD_RECORDS: &str = "SELECT owner, ver, seq, advertise, sig FROM records";
const UPSERT_RECORD: &str = "
INSERT INTO records (owner, ver, seq, advertise, sig)
SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM owners WHERE name = $1)
ON CONFLICT (owner) DO UPDATE SET
    ver = excluded.ver, seq = excluded.seq, advertise = excluded.advertise, sig = excluded.sig";

/// Everything, from one snapshot.
pub(super) async fn load(client: &mut Client) -> Result<Vec<(OwnerRecord, String)>> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let owners = tx
        .query(
            &format!("SELECT {OWNER_COLUMNS} FROM owners ORDER BY name"),
            &[],
        )
        .await?;
    let files = tx
        .query(
            "SELECT owner, name, ver, size, hash, files FROM files ORDER BY owner, name",
            &[],
        )
        .await?;
    let records = tx.query(LOAD_RECORDS, &[]).await?;
    tx.commit().await?;
    join(owners, files, records)
}

/// The named owners as they are now (absent ones are not returned), from one snapshot.
pub(crate) async fn read_owners(
    client: &mut Client,
    names: &[Vec<u8>],
) -> Result<Vec<(OwnerRecord, String)>> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let owners = tx
        .query(
            &format!("SELECT {OWNER_COLUMNS} FROM owners WHERE name = ANY($1) ORDER BY name"),
            &[&names],
        )
        .await?;
    let files = tx
        .query(
            "SELECT owner, name, ver, size, hash, files FROM files WHERE owner = ANY($1) \
             ORDER BY owner, name",
            &[&names],
        )
        .await?;
    let records = tx
        .query(
            "SELECT owner, ver, seq, advertise, sig FROM records WHERE owner = ANY($1)",
            &[&names],
        )
        .await?;
    tx.commit().await?;
    join(owners, files, records)
}

/// Applies `ops` in order in one transaction, logs the owners they touched and NOTIFYs.
/// The statements are pipelined: sent together, answered in order.
pub(super) async fn commit(client: &mut Client, me: &str, ops: &[StoreOp]) -> Result<()> {
    let tx = client.transaction().await?;
    let upsert_owner = tx.prepare(UPSERT_OWNER).await?;
    let upsert_file = tx.prepare(UPSERT_FILE).await?;
    let clear = tx.prepare(CLEAR_FILES).await?;
    let upsert_record = tx.prepare(UPSERT_RECORD).await?;
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    // Owned parameters, so the pipelined futures can borrow them.
    struct OwnerParams {
        name: Vec<u8>,
        ip: String,
        udp: i32,
        flow: i64,
        scope: i64,
        tcp: i32,
        online: bool,
        token: Vec<u8>,
        instance: i64,
        ver: i64,
        peer: String,
        key: Option<Vec<u8>>,
        reach_tcp: Option<bool>,
        reach_nat: i16,
    }
    let mut owner_params = Vec::new();
    for op in ops {
        if let StoreOp::Owner(row) = op {
            let (flow, scope) = match row.addr {
                SocketAddr::V4(_) => (0, 0),
                SocketAddr::V6(a) => (i64::from(a.flowinfo()), i64::from(a.scope_id())),
            };
            owner_params.push(OwnerParams {
                name: row.name.as_bytes().to_vec(),
                ip: row.addr.ip().to_string(),
                udp: i32::from(row.addr.port()),
                flow,
                scope,
                tcp: i32::from(row.tcp_port),
                online: row.online,
                token: row.token.to_be_bytes().to_vec(),
                instance: u64_to_sql(row.instance),
                ver: u64_to_sql(row.ver),
                peer: row.peer_ip.to_string(),
                key: row.key.map(|k| k.to_vec()),
                reach_tcp: row.reach.tcp,
                reach_nat: match row.reach.nat {
                    Nat::Unknown => 0,
                    Nat::Independent => 1,
                    Nat::Dependent => 2,
                },
            });
        }
    }
    let file_params: Vec<FileParams<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::Files { owner, files } => Some((owner, files)),
            _ => None,
        })
        .flat_map(|(owner, files)| {
            files.iter().map(move |f| {
                (
                    owner.as_bytes(),
                    f.name.as_bytes(),
                    u64_to_sql(f.ver),
                    u64_to_sql(f.size),
                    &f.hash[..],
                    u64_to_sql(f.files),
                )
            })
        })
        .collect();
    type RecordParams<'a> = (&'a [u8], i64, Option<i64>, Option<String>, Option<&'a [u8]>);
    let record_params: Vec<RecordParams<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::Record { owner, record, ver } => {
                let (seq, advertise, sig) = crate::store::record_columns(record);
                Some((owner.as_bytes(), u64_to_sql(*ver), seq, advertise, sig))
            }
            _ => None,
        })
        .collect();
    let clear_params: Vec<&[u8]> = ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::ClearFiles { owner } => Some(owner.as_bytes()),
            _ => None,
        })
        .collect();
    {
        let mut pending = Vec::with_capacity(ops.len());
        let (mut o, mut f) = (owner_params.iter(), file_params.iter());
        let mut c = clear_params.iter();
        let mut rp = record_params.iter();
        for op in ops {
            match op {
                StoreOp::Owner(row) => {
                    touched.insert(&row.name);
                    let p = o.next().ok_or_else(|| corrupt("owner parameters"))?;
                    let params: Vec<&(dyn ToSql + Sync)> = vec![
                        &p.name,
                        &p.ip,
                        &p.udp,
                        &p.flow,
                        &p.scope,
                        &p.tcp,
                        &p.online,
                        &p.token,
                        &p.instance,
                        &p.ver,
                        &p.peer,
                        &p.key,
                        &me,
                        &p.reach_tcp,
                        &p.reach_nat,
                    ];
                    pending.push(Box::pin(tx.execute_raw(&upsert_owner, params)) as Pending<'_>);
                }
                StoreOp::Files { owner, files } => {
                    touched.insert(owner);
                    for _ in files {
                        let p = f.next().ok_or_else(|| corrupt("file parameters"))?;
                        let params: Vec<&(dyn ToSql + Sync)> =
                            vec![&p.0, &p.1, &p.2, &p.3, &p.4, &p.5];
                        pending.push(Box::pin(tx.execute_raw(&upsert_file, params)));
                    }
                }
                StoreOp::ClearFiles { owner } => {
                    touched.insert(owner);
                    let p = c.next().ok_or_else(|| corrupt("clear parameters"))?;
                    let params: Vec<&(dyn ToSql + Sync)> = vec![p];
                    pending.push(Box::pin(tx.execute_raw(&clear, params)));
                }
                StoreOp::Record { owner, .. } => {
                    touched.insert(owner);
                    let p = rp.next().ok_or_else(|| corrupt("record parameters"))?;
                    let params: Vec<&(dyn ToSql + Sync)> = vec![&p.0, &p.1, &p.2, &p.3, &p.4];
                    pending.push(Box::pin(tx.execute_raw(&upsert_record, params)));
                }
            }
        }
        futures_util::future::try_join_all(pending).await?;
    }
    let names: Vec<&[u8]> = touched.iter().map(|n| n.as_bytes()).collect();
    tx.execute(LOG, &[&names, &me, &CHANNEL]).await?;
    tx.commit().await?;
    Ok(())
}

/// One file row's parameters: owner, name, ver, size, hash.
type FileParams<'a> = (&'a [u8], &'a [u8], i64, i64, &'a [u8], i64);

type Pending<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>,
>;

/// Forgets `name` and logs it.
pub(super) async fn release(client: &mut Client, me: &str, name: &str) -> Result<bool> {
    let tx = client.transaction().await?;
    tx.execute(CLEAR_FILES, &[&name.as_bytes()]).await?;
    let n = tx
        .execute("DELETE FROM owners WHERE name = $1", &[&name.as_bytes()])
        .await?;
    let names = vec![name.as_bytes()];
    tx.execute(LOG, &[&names, &me, &CHANNEL]).await?;
    tx.commit().await?;
    Ok(n > 0)
}
