//! Requester side of a folder (`request photos/ B`): one connection for the whole tree.
//!
//! 1. `stage::plan`: an identical folder already at the destination is a no-op; a
//!    different one needs `force`; a staging folder from an interrupted attempt gives
//!    the resume point (entry and byte).
//! 2. The request (name `photos/`, the hash the staging folder holds, or the listed one)
//!    and right behind it the [`TreeStart`], with no round trip in between.
//! 3. The answer, then the tree stream: a task reads the connection into large buffers
//!    and a blocking thread (`write`) decodes, writes, hashes and checks each file.
//! 4. Only when the stream ended with the manifest hash the owner announced is the
//!    staging folder renamed to its final name.
//!
//! Memory does not grow with the tree: one entry at a time, a few buffers in flight.

pub mod listing;
mod stage;
#[cfg(test)]
mod tests;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fileapp_core::tree::TreeStart;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::config::PROGRESS_INTERVAL;
use super::connect::{Answered, PeerConn, TlsSetup, connect};
use super::partial::refusal;
use super::{Closed, FetchError, FetchEvent, FetchSpec, ProtocolError, blocking, cancelled};
use crate::proto::valid_file_name;
use crate::transfer::header::{Request, Status};
use crate::transfer::printable;
use crate::transfer::secure::Security;
use stage::{Plan, Stage};
use write::{Counters, Writer};

/// Bytes asked of one read of the connection.
const READ_SIZE: usize = 256 << 10;
/// A reader hands a buffer over once it holds this much (or nothing more is there).
const READ_STEP: usize = READ_SIZE - (32 << 10);
/// Buffers in flight between the reader and the writer thread.
const IN_FLIGHT: usize = 8;

/// Progress of a folder download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEvent {
    Connected,
    /// The owner accepted: `bytes` in all.
    Started {
        bytes: u64,
    },
    /// Files and bytes done (those of an earlier attempt included), of `files` in all.
    Progress {
        files_done: u64,
        files: u64,
        bytes: u64,
    },
}

/// A completed, verified folder download.
#[derive(Debug, Clone)]
pub struct TreeReport {
    pub path: PathBuf,
    pub files: u64,
    pub bytes: u64,
    /// Bytes that came over the network this time.
    pub moved: u64,
    pub elapsed: Duration,
    /// The destination already was this folder.
    pub already_present: bool,
    /// It continued an interrupted attempt.
    pub resumed: bool,
}

/// Downloads the folder `spec.file` (`name/`) into `spec.dest_dir/name`. `listed` is
/// the folder's hash in the table.
pub async fn fetch_tree(
    spec: FetchSpec,
    listed: Option<[u8; 32]>,
    security: Security,
    mut on_event: impl FnMut(TreeEvent) + Send + 'static,
    mut cancel: watch::Receiver<bool>,
) -> Result<TreeReport, FetchError> {
    let t0 = Instant::now();
    let name = match spec.file.strip_suffix('/') {
        Some(n) if valid_file_name(n) => n.to_string(),
        _ => return Err(FetchError::BadName(printable(&spec.file))),
    };
    if *cancel.borrow() {
        return Err(FetchError::Cancelled);
    }
    let tls = TlsSetup::new(&security, &spec)?;
    let plan = {
        let (spec, name) = (spec.clone(), name.clone());
        blocking(move || stage::plan(&spec, &name, listed)).await?
    };
    let (stage, resume) = match plan {
        Plan::AlreadyPresent(path) => {
            return Ok(TreeReport {
                path,
                files: 0,
                bytes: 0,
                moved: 0,
                elapsed: t0.elapsed(),
                already_present: true,
                resumed: false,
            });
        }
        Plan::Fetch { stage, resume } => (stage, resume),
    };
    let request = Request {
        file: spec.file.clone(),
        requester: spec.requester.clone(),
        offset: 0,
        expected_hash: stage.held.or(listed),
        if_match: false,
        owner_hashes: false,
    };
    let mut bytes = request.encode().map_err(ProtocolError::Request)?;
    bytes.extend_from_slice(&resume.unwrap_or_default().encode());
    let mut connected = false;
    let mut saw = |e: FetchEvent| connected |= e == FetchEvent::Connected;
    let answered = tokio::select! {
        r = connect(&spec, None, tls.as_ref(), |_| Ok(bytes), &mut saw) => r,
        _ = cancelled(&mut cancel) => return Err(FetchError::Cancelled),
    };
    if connected {
        on_event(TreeEvent::Connected);
    }
    let Answered {
        conn,
        resp,
        leftover,
    } = answered?;
    if resp.status != Status::Ok {
        return Err(FetchError::Refused(refusal(&resp, &spec.owner)));
    }
    if resp.start != 0 {
        return Err(ProtocolError::UnaskedStart(resp.start).into());
    }
    // The owner continues only within the version the staging folder holds.
    let honoured = stage.held == Some(resp.hash);
    let resume = if honoured { resume } else { None };
    let size = resp.size;
    let stage = blocking(move || prepare(stage, honoured, resp.hash, resume, size)).await?;
    on_event(TreeEvent::Started { bytes: resp.size });
    let writer = Writer::new(stage, resume, resp.hash, printable(&spec.owner));
    let counters = writer.counters.clone();
    let (tx, rx) = mpsc::channel::<(Vec<u8>, usize)>(IN_FLIGHT);
    let (back, recycle) = std::sync::mpsc::channel::<Vec<u8>>();
    let writing = tokio::task::spawn_blocking(move || run_writer(writer, rx, back));
    let read = {
        let pump = Pump {
            tx,
            recycle,
            counters: counters.clone(),
            stall: spec.timeout,
        };
        match conn {
            PeerConn::Plain(s) => pump.run(s, leftover, &mut on_event, &mut cancel).await,
            PeerConn::Tls(t) => pump.run(*t, leftover, &mut on_event, &mut cancel).await,
        }
    };
    let (writer, written) = writing
        .await
        .map_err(|e| FetchError::Io(std::io::Error::other(e)))?;
    let received = counters.bytes.load(Ordering::Relaxed);
    let files = counters.total_files.load(Ordering::Relaxed);
    let ended = writer.ended;
    if let Err(e) = written {
        if matches!(e, FetchError::HashMismatch) {
            writer.stage().discard();
        }
        return Err(e);
    }
    read?;
    if !ended {
        return Err(FetchError::PeerClosed(Closed::During {
            received,
            size: resp.size,
        }));
    }
    let stage = writer.into_stage();
    let force = spec.force;
    let path = stage.final_path.clone();
    blocking(move || stage.publish(force)).await?;
    let moved = counters.net.load(Ordering::Relaxed);
    Ok(TreeReport {
        path,
        files,
        bytes: resp.size,
        moved,
        elapsed: t0.elapsed(),
        already_present: false,
        resumed: resume.is_some(),
    })
}

/// Empties a staging folder the owner will not continue, and records what it holds.
fn prepare(
    mut stage: Stage,
    honoured: bool,
    hash: [u8; 32],
    resume: Option<TreeStart>,
    size: u64,
) -> Result<Stage, FetchError> {
    let dir = stage.dir.clone();
    let disk = |e| FetchError::Disk(dir.clone(), e);
    if !honoured && stage.held.is_some() {
        stage.reset().map_err(disk)?;
    }
    // A folder that clearly does not fit fails before any byte moves.
    if resume.is_none() {
        let d = std::fs::File::open(&stage.dir).map_err(disk)?;
        super::space::check_space(&d, 0, size).map_err(disk)?;
    }
    let next = resume.map_or(0, |r| r.index);
    stage.checkpoint(&hash, next, None).map_err(disk)?;
    stage.held = Some(hash);
    Ok(stage)
}

/// The writer thread: every buffer the reader sends, until the reader is done or
/// writing failed (then it stops taking buffers, which stops the reader).
fn run_writer(
    mut w: Writer,
    mut rx: mpsc::Receiver<(Vec<u8>, usize)>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
) -> (Writer, Result<(), FetchError>) {
    while let Some((buf, len)) = rx.blocking_recv() {
        if let Err(e) = w.feed(&buf[..len]) {
            return (w, Err(e));
        }
        let _ = back.send(buf);
    }
    // Cut off or cancelled: keep what is complete for the next attempt.
    let r = if w.ended { Ok(()) } else { w.suspend() };
    (w, r)
}

/// The connection side: reads into buffers and hands them to the writer.
struct Pump {
    /// Buffers (always [`READ_SIZE`] long, so never zeroed again) and how much of each
    /// holds data.
    tx: mpsc::Sender<(Vec<u8>, usize)>,
    recycle: std::sync::mpsc::Receiver<Vec<u8>>,
    counters: Arc<Counters>,
    stall: Duration,
}

impl Pump {
    async fn run<R: AsyncRead + Unpin>(
        self,
        mut r: R,
        leftover: Vec<u8>,
        on_event: &mut (impl FnMut(TreeEvent) + Send),
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), FetchError> {
        let n = leftover.len();
        if n > 0 && self.tx.send((leftover, n)).await.is_err() {
            return Ok(());
        }
        let mut last = Instant::now();
        loop {
            let mut buf = self.recycle.try_recv().unwrap_or_default();
            if buf.len() != READ_SIZE {
                buf.resize(READ_SIZE, 0);
            }
            // One read gives one TLS record at most: take what is there at once, up to
            // a step, so the writer gets large pieces.
            let mut n = 0;
            while n < READ_STEP {
                let got = if n == 0 {
                    tokio::select! {
                        r = timeout(self.stall, r.read(&mut buf[n..])) => match r {
                            Err(_) => return Err(FetchError::Timeout("waiting for the owner's data")),
                            Ok(r) => r?,
                        },
                        _ = cancelled(cancel) => return Err(FetchError::Cancelled),
                    }
                } else {
                    match ready_now(r.read(&mut buf[n..])) {
                        Some(r) => r?,
                        None => break,
                    }
                };
                if got == 0 {
                    break;
                }
                n += got;
            }
            if n == 0 {
                return Ok(());
            }
            if self.tx.send((buf, n)).await.is_err() {
                // The writer stopped: its error is the one that counts.
                return Ok(());
            }
            if last.elapsed() >= PROGRESS_INTERVAL {
                last = Instant::now();
                let c = &self.counters;
                on_event(TreeEvent::Progress {
                    files_done: c.files.load(Ordering::Relaxed),
                    files: c.total_files.load(Ordering::Relaxed),
                    bytes: c.bytes.load(Ordering::Relaxed),
                });
            }
        }
    }
}

/// The result of `fut` if it is ready without waiting.
fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
