//! fileapp itself, in process: an owner serving over TLS 1.3 with pinned keys (the
//! default mode) and a requester fetching a folder or a single file from it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fileapp::identity::Identity;
use fileapp::transfer::fetch::tree::fetch_tree;
use fileapp::transfer::fetch::{FetchSpec, fetch};
use fileapp::transfer::provider::{Library, SharedLibrary, serve};
use fileapp::transfer::secure::{KeyLookup, PeerAuth, Security, TlsIdentity};
use fileapp::transfer::tree::offer::prepare_folder;

pub struct Owner {
    pub rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    owner_key: [u8; 32],
    requester: Security,
    lib: SharedLibrary,
    _accepting: tokio::sync::watch::Sender<bool>,
    _notices: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Owner {
    /// An owner sharing the folder `share` over TLS.
    pub fn start(share: &Path) -> Owner {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut lib = Library::default();
        lib.set_dir(share.to_path_buf());
        let lib = Arc::new(RwLock::new(lib));
        let (ntx, notices) = tokio::sync::mpsc::unbounded_channel();
        let (accepting_tx, accepting) = tokio::sync::watch::channel(true);
        let owner = Identity::generate().unwrap();
        let requester = Identity::generate().unwrap();
        let table = std::collections::HashMap::from([("bench".into(), requester.public_key())]);
        let lookup: KeyLookup = Arc::new(RwLock::new(table));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let auth = PeerAuth::tls(Arc::new(TlsIdentity::new(&owner).unwrap()), lookup);
        rt.spawn(serve(listener, lib.clone(), ntx, accepting, auth));
        Owner {
            rt,
            addr,
            owner_key: owner.public_key(),
            requester: Security::Tls(Arc::new(TlsIdentity::new(&requester).unwrap())),
            lib,
            _accepting: accepting_tx,
            _notices: notices,
        }
    }

    /// Offers the folder `name` (hashing it as `offer` does): the time it took and its
    /// manifest hash.
    pub fn offer_folder(&self, dir: &Path, name: &str) -> (Duration, [u8; 32]) {
        let t0 = Instant::now();
        let f = prepare_folder(dir, name, &|_| {}).unwrap();
        let el = t0.elapsed();
        let hash = f.hash;
        self.lib.write().unwrap().add_folder(f);
        (el, hash)
    }

    pub fn offer_file(&self, name: &str) {
        self.lib.write().unwrap().offer(name).unwrap();
    }

    fn spec(&self, name: &str, dest: &Path) -> FetchSpec {
        let mut spec = FetchSpec::new(self.addr, "A", name, "bench", dest);
        spec.peer_key = Some(self.owner_key);
        spec
    }

    /// Downloads folder `name/` into `dest`: its time (to the verified, renamed tree).
    pub fn fetch_folder(&self, name: &str, hash: [u8; 32], dest: &Path) -> Duration {
        let spec = self.spec(&format!("{name}/"), dest);
        let (_c, cancel) = tokio::sync::watch::channel(false);
        let t0 = Instant::now();
        let r = self
            .rt
            .block_on(fetch_tree(
                spec,
                Some(hash),
                self.requester.clone(),
                |_| {},
                cancel,
            ))
            .unwrap();
        assert!(!r.already_present);
        t0.elapsed()
    }

    /// Downloads the single file `name` into `dest`: its time.
    pub fn fetch_file(&self, name: &str, dest: &Path) -> Duration {
        let spec = self.spec(name, dest);
        let (_c, cancel) = tokio::sync::watch::channel(false);
        let t0 = Instant::now();
        self.rt
            .block_on(fetch(spec, self.requester.clone(), |_| {}, cancel))
            .unwrap();
        t0.elapsed()
    }
}
