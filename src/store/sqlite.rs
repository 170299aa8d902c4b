//! SQLite-backed store (placeholder: implemented in the control-plane work).

use std::path::Path;

use super::{OwnerRecord, Store, StoreError, StoreOp};

/// Durable store in one SQLite file (WAL).
pub struct SqliteStore {
    _conn: rusqlite::Connection,
}

impl SqliteStore {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            _conn: rusqlite::Connection::open(path)?,
        })
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Vec<OwnerRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _ops: &[StoreOp]) -> Result<(), StoreError> {
        Ok(())
    }
}
