//! An owner's offered files, kept compact: the index holds every online owner's files
//! (a million of them in the load generator's memory phase), so this is most of its heap.
//!
//! A `BTreeMap<String, FileState>` cost about 120 bytes a file: a leaf node sized for 11
//! entries whatever the count, and one heap block per name. [`FileSet`] keeps the entries
//! in one vector sorted by name and the names back to back in one string, so a file
//! costs its [`FileState`], 8 bytes of offsets and its name's bytes. Iteration is in name
//! order, as the map's was: deltas, records and rows list files identically.

use super::FileState;

/// One file: where its name lies in [`FileSet::names`], and its state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u32,
    len: u32,
    st: FileState,
}

/// Files by name, sorted; the operations the index uses of a map.
#[derive(Debug, Default, Clone)]
pub(super) struct FileSet {
    /// Sorted by name.
    entries: Vec<Entry>,
    /// Every entry's name, in the order they were added (removal rebuilds it).
    names: String,
}

impl FileSet {
    pub(super) fn new() -> FileSet {
        FileSet::default()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every file and frees their memory.
    pub(super) fn clear(&mut self) {
        *self = FileSet::new();
    }

    /// Room for `files` more files whose names take `bytes` in all, exactly: a batch of
    /// offers then allocates once, without the slack of doubling.
    pub(super) fn reserve(&mut self, files: usize, bytes: usize) {
        self.entries.reserve_exact(files);
        self.names.reserve_exact(bytes);
    }

    fn name(&self, e: &Entry) -> &str {
        &self.names[e.at as usize..(e.at + e.len) as usize]
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| self.name(e).cmp(name))
    }

    pub(super) fn get(&self, name: &str) -> Option<&FileState> {
        self.find(name).ok().map(|i| &self.entries[i].st)
    }

    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Adds `name`, or replaces its state if it is there.
    #[cfg(test)]
    fn insert(&mut self, name: &str, st: FileState) {
        self.insert_all([(name, st)]);
    }

    /// Adds each file, or replaces its state if it is there (the last state given for a
    /// name wins). New files are appended and the entries sorted once: the sort merges
    /// the sorted old run with the new ones, so a batch costs no shift per file.
    pub(super) fn insert_all<'a>(&mut self, files: impl IntoIterator<Item = (&'a str, FileState)>) {
        let old = self.entries.len();
        for (name, st) in files {
            match self.entries[..old].binary_search_by(|e| self.name(e).cmp(name)) {
                Ok(i) => self.entries[i].st = st,
                Err(_) => {
                    // Names are at most `proto::MAX_NAME_LEN` bytes and an owner's files
                    // are capped, so the offsets fit; `u32` keeps an entry at 64 bytes.
                    let at = u32::try_from(self.names.len()).expect("names fit in u32");
                    let len = u32::try_from(name.len()).expect("a name fits in u32");
                    self.names.push_str(name);
                    self.entries.push(Entry { at, len, st });
                }
            }
        }
        if self.entries.len() == old {
            return;
        }
        let names = &self.names;
        let key = |e: &Entry| &names[e.at as usize..(e.at + e.len) as usize];
        self.entries.sort_by(|a, b| key(a).cmp(key(b)));
        // A name given twice in the batch: keep one entry, with the later state (the
        // sort is stable, so the later one comes second).
        self.entries.dedup_by(|later, kept| {
            let same = key(later) == key(kept);
            if same {
                kept.st = later.st;
            }
            same
        });
    }

    /// In name order.
    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &FileState)> {
        self.entries.iter().map(|e| (self.name(e), &e.st))
    }

    /// In name order.
    pub(super) fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.iter().map(|(n, _)| n)
    }

    /// Keeps the files `keep` accepts (the names of the others are freed).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str, &FileState) -> bool) {
        let kept: Vec<(&str, &FileState)> = self.iter().filter(|(n, st)| keep(n, st)).collect();
        if kept.len() == self.entries.len() {
            return;
        }
        let mut out = FileSet::new();
        out.reserve(kept.len(), kept.iter().map(|(n, _)| n.len()).sum());
        out.insert_all(kept.into_iter().map(|(n, st)| (n, *st)));
        *self = out;
    }
}

impl<S: AsRef<str>> FromIterator<(S, FileState)> for FileSet {
    fn from_iter<I: IntoIterator<Item = (S, FileState)>>(iter: I) -> FileSet {
        let all: Vec<(S, FileState)> = iter.into_iter().collect();
        let mut out = FileSet::new();
        out.reserve(all.len(), all.iter().map(|(n, _)| n.as_ref().len()).sum());
        out.insert_all(all.iter().map(|(n, st)| (n.as_ref(), *st)));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn st(ver: u64) -> FileState {
        FileState {
            ver,
            size: ver * 10,
            hash: [ver as u8; 32],
            files: 0,
        }
    }

    /// Every operation agrees with the `BTreeMap` it replaces, order included.
    #[test]
    fn behaves_as_a_sorted_map() {
        let mut set = FileSet::new();
        let mut map: BTreeMap<String, FileState> = BTreeMap::new();
        let mut x = 7u64;
        for step in 0..2000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let name = format!("f{}", (x >> 33) % 97);
            match step % 7 {
                0 => {
                    set.retain(|n, s| !(n.ends_with('3') || s.ver % 5 == 0));
                    map.retain(|n, s| !(n.ends_with('3') || s.ver % 5 == 0));
                }
                1 if step % 300 == 1 => {
                    set.clear();
                    map.clear();
                }
                2 => {
                    // A batch, a name possibly twice in it: the last state wins.
                    let other = format!("f{}", (x >> 40) % 97);
                    let batch = [(name.as_str(), st(step)), (other.as_str(), st(step + 1))];
                    set.insert_all(batch);
                    for (n, s) in batch {
                        map.insert(n.to_string(), s);
                    }
                }
                _ => {
                    set.insert(&name, st(step));
                    map.insert(name.clone(), st(step));
                }
            }
            assert_eq!(set.len(), map.len());
            assert_eq!(set.is_empty(), map.is_empty());
            assert_eq!(set.get(&name), map.get(&name));
            assert_eq!(set.contains_key(&name), map.contains_key(&name));
        }
        let a: Vec<(&str, &FileState)> = set.iter().collect();
        let b: Vec<(&str, &FileState)> = map.iter().map(|(n, s)| (n.as_str(), s)).collect();
        assert_eq!(a, b);
        let rebuilt: FileSet = map.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        assert!(rebuilt.keys().eq(set.keys()));
    }
}
