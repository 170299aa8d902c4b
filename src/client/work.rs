//! The driver's helper tasks, off the event loop: checking and hashing the files of an
//! `offer`, and running one download. Each reports back on the driver's channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::console::Console;
use crate::proto::{self, FileEntry};
use crate::transfer::fetch::tree::{TreeEvent, fetch_tree};
use crate::transfer::fetch::{Dialer, FetchError, FetchEvent, FetchSpec, fetch};
use crate::transfer::printable;
use crate::transfer::provider::{Library, SharedLibrary};
use crate::transfer::secure::{Security, owner_refused_our_key};
use crate::transfer::tree::offer::{HashProgress, prepare_folder};

use super::flow::{DownloadDone, DownloadOutcome, OfferChecked, Order};
use super::messages as msg;
use super::reach::PathDialer;

/// What the helper tasks report to the driver.
pub enum Report {
    OfferChecked(OfferChecked),
    DownloadDone(DownloadDone),
}

/// Checks and hashes `files` in `dir` on a blocking thread, adding the good ones to
/// `lib`; says why a file cannot be offered unless `restoring` (a crashed run's offers).
pub fn check_offer(
    lib: SharedLibrary,
    console: Console,
    tx: mpsc::UnboundedSender<Report>,
    dir: PathBuf,
    files: Vec<String>,
    restoring: bool,
) {
    let given = files.len();
    let shown = console.clone();
    let say = move |line: String| {
        if !restoring {
            shown.print(&line);
        }
    };
    tokio::task::spawn_blocking(move || {
        let mut ok = Vec::new();
        for f in files {
            // `photos` and `photos/` both offer the folder.
            let bare = f.strip_suffix('/').unwrap_or(&f).to_string();
            let is_dir = std::fs::symlink_metadata(dir.join(&bare)).is_ok_and(|m| m.is_dir());
            if proto::valid_file_name(&bare) && is_dir {
                if let Some(entry) = offer_folder(&lib, &console, &dir, &bare, restoring) {
                    ok.push(entry);
                }
                continue;
            }
            if !proto::valid_file_name(&f) {
                say(msg::not_a_file_name(&f));
                continue;
            }
            // Hash without holding the library lock: serving goes on meanwhile.
            match Library::prepare_offer(&dir, &f) {
                Ok(prepared) => {
                    let info = prepared.info();
                    if let Ok(mut l) = lib.write() {
                        l.add_offer(prepared);
                        ok.push(FileEntry {
                            name: f,
                            size: info.size,
                            hash: info.hash,
                            files: 0,
                        });
                    }
                }
                Err(e) => say(msg::cannot_offer(&f, e)),
            }
        }
        let send = given == 0 || !ok.is_empty();
        if !send {
            say(msg::NOTHING_OFFERED.to_string());
        }
        let _ = tx.send(Report::OfferChecked(OfferChecked {
            ok,
            send,
            restoring,
        }));
    });
}

/// Walks and hashes the folder `name` in `dir` on all cores, with a bar counting files,
/// and adds it to `lib`. Blocking. `None` (with the reason shown) if it cannot be offered.
fn offer_folder(
    lib: &SharedLibrary,
    console: &Console,
    dir: &std::path::Path,
    name: &str,
    quiet: bool,
) -> Option<FileEntry> {
    let label = msg::hashing_label(&format!("{name}/"));
    let bar = std::sync::Mutex::new(None::<crate::console::Progress>);
    let progress = |p: HashProgress| {
        if quiet {
            return;
        }
        if let Ok(mut b) = bar.lock() {
            b.get_or_insert_with(|| console.progress_files(&label, p.files))
                .set(p.files_done);
        }
    };
    let prepared = prepare_folder(dir, name, &progress);
    drop(bar.into_inner());
    match prepared {
        Ok(folder) => {
            let (h, skipped) = (folder.header, folder.skipped);
            let entry = FileEntry {
                name: folder.name.clone(),
                size: h.bytes,
                hash: folder.hash,
                files: h.files,
            };
            if !quiet {
                console.print(&msg::folder_offered(&entry.name, h.files, h.bytes, skipped));
            }
            lib.write().ok()?.add_folder(folder);
            Some(entry)
        }
        Err(e) => {
            if !quiet {
                console.print(&msg::cannot_offer(&format!("{name}/"), e));
            }
            None
        }
    }
}

/// What a download needs besides its [`Order`].
pub struct Fetcher {
    pub console: Console,
    pub tx: mpsc::UnboundedSender<Report>,
    pub cancel: watch::Receiver<bool>,
    pub security: Security,
    /// Our name, sent to the owner.
    pub requester: String,
    pub dest: PathBuf,
    /// What the dialer needs to try the paths through NAT.
    pub reach: super::reach::Reach,
    /// Overrides the fetcher's limit for connecting, answers and pauses.
    pub timeout: Option<Duration>,
}

/// How long a download is tried again while the owner refuses our key in the handshake
/// (its table may not have our registration yet).
const KEY_REFUSED_RETRY_FOR: Duration = Duration::from_secs(3);
/// How long it waits between those tries.
const KEY_REFUSED_POLL: Duration = Duration::from_millis(200);

/// What `order` fetches, and the dialer it connects with (it tries the order's paths
/// and remembers the one taken).
fn spec_of(order: &Order, f: &Fetcher) -> (FetchSpec, Arc<PathDialer>) {
    let (owner, file) = (&order.owner, &order.file);
    let mut spec = FetchSpec::new(order.peer, owner, file, &f.requester, &f.dest);
    spec.force = order.force;
    spec.peer_key = order.key;
    let plan = order.plan.clone();
    let dialer = Arc::new(PathDialer::new(f.reach.clone(), owner, order.key, plan));
    spec.dial = Some(Dialer(dialer.clone()));
    if let Some(t) = f.timeout {
        spec.timeout = t;
    }
    (spec, dialer)
}

/// Runs one download as a task, with its lines and progress bar.
pub fn download(order: Order, f: Fetcher) {
    if order.file.ends_with('/') {
        return download_tree(order, f);
    }
    let (spec, dialer) = spec_of(&order, &f);
    let connected = Arc::new(AtomicBool::new(false));
    let conn = connected.clone();
    let console = f.console;
    let (file, owner, json) = (order.file, order.owner, order.json);
    tokio::spawn(async move {
        let cancel = f.cancel.clone();
        let result = retry_while_key_refused(&cancel, || {
            let mut bar = None;
            let (name, o) = (file.clone(), owner.clone());
            let (conn, console) = (conn.clone(), console.clone());
            let on_event = move |ev: FetchEvent| match ev {
                FetchEvent::Connected => {
                    if !conn.swap(true, Ordering::SeqCst) && !json {
                        console.print(&msg::connection_established(&o));
                    }
                }
                FetchEvent::Started { .. } if json => {}
                FetchEvent::Started { size, offset } => {
                    if offset > 0 {
                        console.print(&msg::resuming(&name, offset, size));
                    }
                    console.print(&msg::downloading(&name));
                    let p = console.progress(&name, size);
                    p.set(offset);
                    bar = Some(p);
                }
                FetchEvent::Progress { done } => {
                    if let Some(b) = &bar {
                        b.set(done);
                    }
                }
            };
            fetch(spec.clone(), f.security.clone(), on_event, f.cancel.clone())
        })
        .await;
        let outcome = match result {
            Ok(r) if r.already_present => DownloadOutcome::AlreadyPresent { hash: r.hash },
            Ok(r) => DownloadOutcome::Done {
                size: r.size,
                hash: r.hash,
                elapsed: r.elapsed,
                moved: r.size - r.resumed_from,
            },
            Err(e) => DownloadOutcome::Failed(failure_text(&e, &owner)),
        };
        let _ = f.tx.send(Report::DownloadDone(DownloadDone {
            file,
            owner,
            connected: connected.load(Ordering::SeqCst),
            via: dialer.used(),
            json,
            outcome,
        }));
    });
}

/// Runs `attempt` until it succeeds or fails otherwise than by the owner refusing our
/// key. An owner that does not list our key yet (we registered just now and its copy of
/// the table is behind) aborts the handshake: try again for a little while, unless the
/// download was cancelled.
async fn retry_while_key_refused<T, Fut>(
    cancel: &watch::Receiver<bool>,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, FetchError>
where
    Fut: std::future::Future<Output = Result<T, FetchError>>,
{
    let deadline = tokio::time::Instant::now() + KEY_REFUSED_RETRY_FOR;
    loop {
        match attempt().await {
            Err(FetchError::Io(e))
                if owner_refused_our_key(&e)
                    && !*cancel.borrow()
                    && tokio::time::Instant::now() + KEY_REFUSED_POLL < deadline =>
            {
                tokio::time::sleep(KEY_REFUSED_POLL).await;
            }
            r => return r,
        }
    }
}

/// Runs one folder download as a task: one bar (bytes, files, rate, ETA), one summary.
fn download_tree(order: Order, f: Fetcher) {
    let (spec, dialer) = spec_of(&order, &f);
    let connected = Arc::new(AtomicBool::new(false));
    let conn = connected.clone();
    let console = f.console;
    let (file, owner, json) = (order.file, order.owner, order.json);
    tokio::spawn(async move {
        let cancel = f.cancel.clone();
        let result = retry_while_key_refused(&cancel, || {
            let mut bar = None;
            let (name, o) = (file.clone(), owner.clone());
            let (conn, console) = (conn.clone(), console.clone());
            let on_event = move |ev: TreeEvent| match ev {
                TreeEvent::Connected => {
                    if !conn.swap(true, Ordering::SeqCst) && !json {
                        console.print(&msg::connection_established(&o));
                    }
                }
                TreeEvent::Started { .. } if json => {}
                TreeEvent::Started { bytes } => {
                    console.print(&msg::downloading(&name));
                    bar = Some(console.progress(&name, bytes));
                }
                TreeEvent::Progress {
                    files_done,
                    files,
                    bytes,
                } => {
                    if let Some(b) = &bar {
                        b.set(bytes);
                        b.set_label(&msg::tree_label(&name, files_done, files));
                    }
                }
            };
            let (sec, cancel) = (f.security.clone(), f.cancel.clone());
            fetch_tree(spec.clone(), order.hash, sec, on_event, cancel)
        })
        .await;
        let outcome = match result {
            Ok(r) if r.already_present => DownloadOutcome::TreeAlreadyPresent,
            Ok(r) => DownloadOutcome::TreeDone {
                files: r.files,
                size: r.bytes,
                elapsed: r.elapsed,
                moved: r.moved,
                path: r.path,
            },
            Err(e) => DownloadOutcome::Failed(failure_text(&e, &owner)),
        };
        let _ = f.tx.send(Report::DownloadDone(DownloadDone {
            file,
            owner,
            connected: connected.load(Ordering::SeqCst),
            via: dialer.used(),
            json,
            outcome,
        }));
    });
}

/// The line a failed download gets: the error's own, except when the owner aborted the
/// TLS connection because it does not list our key (in TLS 1.3 its alert arrives after
/// our side of the handshake is done, so it surfaces as a lost connection).
fn failure_text(e: &FetchError, owner: &str) -> String {
    match e {
        FetchError::Io(io) if owner_refused_our_key(io) => {
            msg::owner_refused_our_key(&printable(owner))
        }
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::record::RecordError;

    #[test]
    fn the_owners_access_denied_alert_reads_as_our_key_refused() {
        let alert = std::io::Error::from(RecordError::Alert(49));
        assert_eq!(
            failure_text(&FetchError::Io(alert), "B"),
            "TLS handshake with B failed: B refused our key (it is not in B's table; if we registered just now, try again shortly)"
        );
        // Other alerts keep their text.
        let other = FetchError::Io(std::io::Error::from(RecordError::Alert(80)));
        assert_eq!(
            failure_text(&other, "B"),
            "connection lost: the peer sent TLS alert 80"
        );
    }
}
