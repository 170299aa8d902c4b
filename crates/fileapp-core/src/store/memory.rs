//! A store that keeps nothing beyond the process: for tests and `--db :memory:`-like use.

use std::collections::BTreeMap;

use super::{OwnerRecord, Store, StoreError, StoreOp};

/// Keeps committed changes in memory, so `load` after `commit` returns them (useful to
/// test the index's restart logic without a disk).
#[derive(Debug, Default)]
pub struct MemoryStore {
    owners: BTreeMap<String, OwnerRecord>,
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Vec<OwnerRecord>, StoreError> {
        Ok(self.owners.values().cloned().collect())
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        for op in ops {
            match op {
                StoreOp::Owner(row) => {
                    self.owners
                        .entry(row.name.clone())
                        .and_modify(|r| r.row = row.clone())
                        .or_insert_with(|| OwnerRecord {
                            row: row.clone(),
                            files: Vec::new(),
                            record: None,
                            record_ver: 0,
                        });
                }
                StoreOp::Files { owner, files } => {
                    if let Some(rec) = self.owners.get_mut(owner) {
                        for file in files {
                            match rec.files.iter_mut().find(|f| f.name == file.name) {
                                Some(f) => *f = file.clone(),
                                None => rec.files.push(file.clone()),
                            }
                        }
                    }
                }
                StoreOp::ClearFiles { owner } => {
                    if let Some(rec) = self.owners.get_mut(owner) {
                        rec.files.clear();
                    }
                }
                StoreOp::Record { owner, record, ver } => {
                    if let Some(rec) = self.owners.get_mut(owner) {
                        rec.record = record.clone();
                        rec.record_ver = *ver;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A store that keeps nothing: `--db :memory:`. The index holds the live table anyway, so
/// a copy that is never reloaded would only double the server's memory.
#[derive(Debug, Default)]
pub struct NullStore;

impl Store for NullStore {
    fn load(&mut self) -> Result<Vec<OwnerRecord>, StoreError> {
        Ok(Vec::new())
    }

    fn commit(&mut self, _ops: &[StoreOp]) -> Result<(), StoreError> {
        Ok(())
    }
}
