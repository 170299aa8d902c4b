//! Persistence of the server's table: the store types and trait live in the core crate
//! ([`fileapp_core::store`]); this module adds the SQLite backend ([`sqlite`], the embedded default) and the
//! PostgreSQL one ([`postgres`], shared by several servers).

pub mod postgres;
pub mod sqlite;

pub use fileapp_core::store::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
