//! Persistence of the server's table: the store types and trait live in the core crate
//! ([`fileapp_core::store`]); this module adds the SQLite backend ([`sqlite`], the embedded default) and the
//! PostgreSQL one ([`postgres`], shared by several servers).

pub mod postgres;
pub mod sqlite;

pub use fileapp_core::store::*;

/// A signed record as both SQL backends store it: `seq` (bit-cast `u64`), `advertise`
/// (text) and `sig`, each nullable; `None` when not signed (no `seq` or no `sig`).
/// `Err` names a column that does not parse.
pub(crate) fn record_from_columns(
    seq: Option<i64>,
    advertise: Option<String>,
    sig: Option<Vec<u8>>,
) -> Result<Option<RecordSig>, String> {
    let (Some(seq), Some(sig)) = (seq, sig) else {
        return Ok(None);
    };
    let advertise = match advertise {
        None => None,
        Some(a) => Some(a.parse().map_err(|_| format!("bad address {a:?}"))?),
    };
    Ok(Some(RecordSig {
        seq: seq as u64,
        advertise,
        sig,
    }))
}

/// The nullable columns of `record` for [`record_from_columns`]'s inverse.
pub(crate) fn record_columns(
    record: &Option<RecordSig>,
) -> (Option<i64>, Option<String>, Option<&[u8]>) {
    (
        record.as_ref().map(|r| r.seq as i64),
        record
            .as_ref()
            .and_then(|r| r.advertise)
            .map(|a| a.to_string()),
        record.as_ref().map(|r| &r.sig[..]),
    )
}
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
