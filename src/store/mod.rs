//! Persistence of the server's table: the store types and trait live in the core crate
//! ([`fileapp_core::store`]); this module adds the SQLite backend ([`sqlite`]).

pub mod sqlite;

pub use fileapp_core::store::*;
pub use sqlite::SqliteStore;
