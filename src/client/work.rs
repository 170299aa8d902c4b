//! The driver's helper tasks, off the event loop: checking and hashing the files of an
//! `offer`, and running one download. Each reports back on the driver's channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::console::Console;
use crate::proto::{self, FileEntry};
use crate::transfer::fetch::{FetchError, FetchEvent, FetchSpec, fetch};
use crate::transfer::printable;
use crate::transfer::provider::{Library, SharedLibrary};
use crate::transfer::secure::{Security, owner_refused_our_key};

use super::flow::{DownloadDone, DownloadOutcome, OfferChecked, Order};
use super::messages as msg;

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
    let say = move |line: String| {
        if !restoring {
            console.print(&line);
        }
    };
    tokio::task::spawn_blocking(move || {
        let mut ok = Vec::new();
        for f in files {
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

/// What a download needs besides its [`Order`].
pub struct Fetcher {
    pub console: Console,
    pub tx: mpsc::UnboundedSender<Report>,
    pub cancel: watch::Receiver<bool>,
    pub security: Security,
    /// Our name, sent to the owner.
    pub requester: String,
    pub dest: PathBuf,
}

/// How long a download is tried again while the owner refuses our key in the handshake
/// (its table may not have our registration yet).
const KEY_REFUSED_RETRY_FOR: Duration = Duration::from_secs(3);
/// How long it waits between those tries.
const KEY_REFUSED_POLL: Duration = Duration::from_millis(200);

/// Runs one download as a task, with its lines and progress bar.
pub fn download(order: Order, f: Fetcher) {
    let mut spec = FetchSpec::new(order.peer, &order.owner, &order.file, f.requester, f.dest);
    spec.force = order.force;
    spec.peer_key = order.key;
    let connected = Arc::new(AtomicBool::new(false));
    let conn = connected.clone();
    let console = f.console;
    let (file, owner) = (order.file, order.owner);
    tokio::spawn(async move {
        // An owner that does not list our key yet (we registered just now and its copy
        // of the table is behind) aborts the handshake: try again for a little while.
        let deadline = tokio::time::Instant::now() + KEY_REFUSED_RETRY_FOR;
        let result = loop {
            let mut bar = None;
            let (name, o) = (file.clone(), owner.clone());
            let (conn, console) = (conn.clone(), console.clone());
            let on_event = move |ev: FetchEvent| match ev {
                FetchEvent::Connected => {
                    if !conn.swap(true, Ordering::SeqCst) {
                        console.print(&msg::connection_established(&o));
                    }
                }
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
            let r = fetch(spec.clone(), f.security.clone(), on_event, f.cancel.clone()).await;
            let cancelled = *f.cancel.borrow();
            match r {
                Err(FetchError::Io(e))
                    if owner_refused_our_key(&e)
                        && !cancelled
                        && tokio::time::Instant::now() + KEY_REFUSED_POLL < deadline =>
                {
                    tokio::time::sleep(KEY_REFUSED_POLL).await;
                }
                r => break r,
            }
        };
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
