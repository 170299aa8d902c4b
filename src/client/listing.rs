//! Folder listings for Tab completion (`request photos/2024/a<Tab>`): the console asks
//! for a listing it wants ([`crate::console::listing_wanted`]) on a channel this module
//! owns; a task fetches it from the owner in the background
//! ([`crate::transfer::fetch::tree::listing`]: TLS pinned to the owner's key, the
//! manifest checked against the table's folder hash) and stores it in the completion
//! data, where a later Tab finds it. The terminal never waits for the network.
//!
//! Listings are kept per (owner, folder) for the folder hash they were fetched for; a
//! table change drops those whose hash is no longer listed. At most [`MAX_CACHED`]
//! are held, each with at most 200,000 paths ([`ListingLimits::default`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::client::table::{ClientTable, Trust};
use fileapp_core::reach::{Via, plan};

use super::reach::{PathDialer, Reach};
use crate::console::{CompletionData, FolderListing, ListingWant, SharedCompletion};
use crate::transfer::fetch::tree::listing::{ListingLimits, fetch_listing};
use crate::transfer::fetch::{Dialer, FetchSpec};
use crate::transfer::secure::Security;

/// Listings held at once (the oldest key goes first).
pub const MAX_CACHED: usize = 16;
/// A failed listing is not asked again for this long (Tab after Tab would otherwise
/// dial an unreachable owner each time).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A listing's limit for connecting, the answer and each read, unless the client's
/// peer timeout is given.
pub const LISTING_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the owner of one listed folder, and the folder's hash.
#[derive(Debug, Clone)]
struct Target {
    /// The owner's address and key in the table.
    at: SocketAddr,
    key: [u8; 32],
    hash: [u8; 32],
    /// The paths to try, as a download to this owner would.
    plan: Vec<Via>,
}

/// (owner, folder) -> its [`Target`], for the folders whose owner's record verifies.
type Owners = HashMap<(String, String), Target>;

/// The driver's handle: started once, told of every table change.
pub struct Listings {
    completion: SharedCompletion,
    owners: Arc<RwLock<Owners>>,
    /// Our name: whose reach the plans start from.
    name: String,
}

impl Listings {
    /// Starts the fetching task and gives the console its end of the channel. `reach`
    /// is what downloads' dialers share: a listing takes the paths a download would.
    pub fn start(
        completion: SharedCompletion,
        security: Security,
        requester: String,
        timeout: Option<Duration>,
        reach: Reach,
    ) -> Listings {
        let (tx, rx) = mpsc::unbounded_channel();
        completion.write().unwrap_or_else(|p| p.into_inner()).wants = Some(tx);
        let owners = Arc::<RwLock<Owners>>::default();
        let task = Task {
            completion: completion.clone(),
            owners: owners.clone(),
            reach,
            security,
            requester: requester.clone(),
            timeout: timeout.unwrap_or(LISTING_TIMEOUT),
        };
        tokio::spawn(task.run(rx));
        Listings {
            completion,
            owners,
            name: requester,
        }
    }

    /// On every table change: which folders may be listed (verified owners with a key),
    /// and their hashes; cached listings of other versions are dropped.
    pub fn table_changed(&self, table: &ClientTable) {
        let mut owners = Owners::new();
        let me = table.owner(&self.name).map(|o| o.reach).unwrap_or_default();
        for (name, o) in table.owners() {
            let Some(key) = o.key.filter(|_| o.trust == Trust::Verified) else {
                continue;
            };
            let at = SocketAddr::new(o.ip, o.tcp_port);
            for (file, meta) in o.files.iter().filter(|(f, _)| f.ends_with('/')) {
                let t = Target {
                    at,
                    key,
                    hash: meta.hash,
                    plan: plan(me, o.reach),
                };
                owners.insert((name.to_string(), file.clone()), t);
            }
        }
        let hashes = owners.iter().map(|(k, t)| (k.clone(), t.hash)).collect();
        let mut c = self.completion.write().unwrap_or_else(|p| p.into_inner());
        set_hashes(&mut c, hashes);
        drop(c);
        *self.owners.write().unwrap_or_else(|p| p.into_inner()) = owners;
    }
}

/// Puts the listed folder hashes in place and drops the listings they no longer match.
pub fn set_hashes(c: &mut CompletionData, hashes: BTreeMap<(String, String), [u8; 32]>) {
    c.folders.retain(|k, l| hashes.get(k) == Some(&l.hash));
    c.folder_hashes = hashes;
}

/// Stores a fetched listing if its version is still the listed one.
pub fn store(c: &mut CompletionData, want: &ListingWant, paths: Vec<String>) -> bool {
    let key = (want.owner.clone(), want.folder.clone());
    if c.folder_hashes.get(&key) != Some(&want.hash) {
        return false;
    }
    while c.folders.len() >= MAX_CACHED && !c.folders.contains_key(&key) {
        c.folders.pop_first();
    }
    let hash = want.hash;
    c.folders.insert(key, FolderListing { hash, paths });
    true
}

/// Which wants to act on: one fetch per (owner, folder, hash) at a time, and none again
/// within [`RETRY_AFTER`] of a failure.
#[derive(Debug, Default)]
pub struct Asked {
    /// When each was last asked (running or failed).
    at: HashMap<ListingWant, Instant>,
}

impl Asked {
    /// Whether `want` should be fetched now (and then it counts as asked).
    pub fn take(&mut self, want: &ListingWant, now: Instant) -> bool {
        self.at.retain(|_, t| now.duration_since(*t) < RETRY_AFTER);
        if self.at.contains_key(want) {
            return false;
        }
        self.at.insert(want.clone(), now);
        true
    }

    /// A fetch succeeded: it may be asked again (once its listing is dropped).
    pub fn done(&mut self, want: &ListingWant) {
        self.at.remove(want);
    }
}

struct Task {
    completion: SharedCompletion,
    owners: Arc<RwLock<Owners>>,
    reach: Reach,
    security: Security,
    requester: String,
    timeout: Duration,
}

impl Task {
    async fn run(self, mut wants: mpsc::UnboundedReceiver<ListingWant>) {
        let (done_tx, mut done) = mpsc::unbounded_channel::<(ListingWant, bool)>();
        let mut asked = Asked::default();
        loop {
            tokio::select! {
                w = wants.recv() => match w {
                    Some(w) => {
                        if asked.take(&w, Instant::now()) {
                            self.fetch(w, done_tx.clone());
                        }
                    }
                    None => return,
                },
                Some((w, ok)) = done.recv() => {
                    if ok {
                        asked.done(&w);
                    }
                }
            }
        }
    }

    /// Fetches `want` in its own task, if its owner is still listed with that hash.
    fn fetch(&self, want: ListingWant, done: mpsc::UnboundedSender<(ListingWant, bool)>) {
        let key = (want.owner.clone(), want.folder.clone());
        let found = self
            .owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let Some(t) = found.filter(|t| t.hash == want.hash) else {
            let _ = done.send((want, false));
            return;
        };
        let (o, f, me) = (&want.owner, &want.folder, &self.requester);
        let mut spec = FetchSpec::new(t.at, o, f, me, PathBuf::new());
        spec.peer_key = Some(t.key);
        spec.timeout = self.timeout;
        let dialer = PathDialer::new(self.reach.clone(), o, Some(t.key), t.plan);
        spec.dial = Some(Dialer(Arc::new(dialer)));
        let hash = t.hash;
        let (security, completion) = (self.security.clone(), self.completion.clone());
        tokio::spawn(async move {
            let got = fetch_listing(&spec, hash, &security, ListingLimits::default()).await;
            let ok = match got {
                Ok(l) => {
                    let mut c = completion.write().unwrap_or_else(|p| p.into_inner());
                    store(&mut c, &want, l.paths)
                }
                Err(e) => {
                    tracing::info!(owner = %want.owner, folder = %want.folder, "listing failed: {e}");
                    false
                }
            };
            let _ = done.send((want, ok));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(hash: u8) -> ListingWant {
        ListingWant {
            owner: "B".into(),
            folder: "photos/".into(),
            hash: [hash; 32],
        }
    }

    #[test]
    fn a_listing_is_kept_only_for_the_listed_version() {
        let mut c = CompletionData::default();
        let key = ("B".to_string(), "photos/".to_string());
        // Not listed (yet): not stored.
        assert!(!store(&mut c, &want(1), vec!["a".into()]));
        set_hashes(&mut c, BTreeMap::from([(key.clone(), [1; 32])]));
        assert!(store(&mut c, &want(1), vec!["a".into()]));
        // A late listing of an older version does not replace anything.
        assert!(!store(&mut c, &want(0), vec!["old".into()]));
        assert_eq!(c.folders[&key].paths, ["a"]);
        // The same hash again keeps it; a new hash drops it.
        set_hashes(&mut c, BTreeMap::from([(key.clone(), [1; 32])]));
        assert!(c.folders.contains_key(&key));
        set_hashes(&mut c, BTreeMap::from([(key.clone(), [2; 32])]));
        assert!(c.folders.is_empty());
        // The owner gone: dropped too.
        assert!(store(&mut c, &want(2), vec![]));
        set_hashes(&mut c, BTreeMap::new());
        assert!(c.folders.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = CompletionData::default();
        let wants: Vec<ListingWant> = (0..MAX_CACHED + 3)
            .map(|i| ListingWant {
                owner: format!("O{i:02}"),
                folder: "f/".into(),
                hash: [1; 32],
            })
            .collect();
        let hashes = wants
            .iter()
            .map(|w| ((w.owner.clone(), w.folder.clone()), w.hash))
            .collect();
        set_hashes(&mut c, hashes);
        for w in &wants {
            assert!(store(&mut c, w, vec![]));
        }
        assert_eq!(c.folders.len(), MAX_CACHED);
    }

    #[test]
    fn a_want_is_fetched_once_and_again_only_after_a_pause_when_it_failed() {
        let mut a = Asked::default();
        let t = Instant::now();
        assert!(a.take(&want(1), t));
        assert!(!a.take(&want(1), t + Duration::from_millis(10)), "running");
        assert!(a.take(&want(2), t), "another version");
        assert!(!a.take(&want(1), t + RETRY_AFTER / 2), "failed just now");
        assert!(a.take(&want(1), t + RETRY_AFTER), "failed long ago");
        a.done(&want(2));
        assert!(a.take(&want(2), t + Duration::from_millis(20)));
    }
}
