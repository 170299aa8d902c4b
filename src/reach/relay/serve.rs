//! The relay's accept loop: one task per connection reads the hello (within the hello
//! timeout), asks the core's [`Relay`] what to do, and answers; a first half waits for
//! its partner's stream (handed over a oneshot channel) and then runs the splice. One
//! timer task gives up halves whose partner did not come.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;

use fileapp_core::reach::relay::{ConnId, HELLO_LEN, HELLO_MAGIC, Limits, Relay, Status, Verdict};

use super::splice::{Limit, splice};
use super::{MAX_PENDING_HELLOS, MAX_PENDING_HELLOS_PER_IP, RelayConfig};

/// What a waiting half is woken with.
enum Wake {
    /// The partner's stream, and the session's place (freed when dropped).
    Partner(TcpStream, Session),
    /// The pair timeout passed.
    TimedOut,
}

/// The pairing state and the waiting halves' wake-up ends, under one lock: whoever
/// changes the state also sends the wake-up, so a half never misses its outcome.
struct State {
    relay: Relay,
    waiters: HashMap<ConnId, oneshot::Sender<Wake>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the timer task when a new deadline may be the earliest.
    timer: Notify,
    cfg: RelayConfig,
    /// The relay's total rate, shared by every session.
    total: Option<Arc<Mutex<fileapp_core::reach::relay::TokenBucket>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state half-changed in a way that matters
        // more than stopping the relay would.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies the pairing state's numbers to the counters, after a change to it.
    fn count(&self, st: &State) {
        self.cfg
            .counters
            .now(st.relay.sessions(), st.relay.waiting());
    }
}

/// A paired session's place in the relay's count: freed when dropped.
struct Session(Arc<Shared>);

impl Drop for Session {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.relay.session_ended();
        self.0.count(&st);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the relay on `listener` until `shutdown` turns true (or its sender is dropped);
/// then every connection is closed.
pub async fn run(listener: TcpListener, cfg: RelayConfig, mut shutdown: watch::Receiver<bool>) {
    let limits = Limits {
        max_sessions: cfg.max_sessions,
        max_waiting: cfg.max_sessions,
        pair_timeout: cfg.pair_timeout,
        ..Limits::default()
    };
    let total = cfg.total_rate.map(|rate| {
        Arc::new(Mutex::new(fileapp_core::reach::relay::TokenBucket::new(
            rate,
            fileapp_core::reach::relay::TokenBucket::default_burst(rate),
            Instant::now(),
        )))
    });
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            relay: Relay::new(cfg.server_key, limits),
            waiters: HashMap::new(),
        }),
        timer: Notify::new(),
        cfg,
        total,
    });
    let pending = Pending::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(timer(shared.clone()));
    let mut next_conn: ConnId = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let Some(permit) = pending.admit(peer.ip()) else {
                    continue; // too many hellos in progress: closed at once
                };
                next_conn += 1;
                tasks.spawn(connection(shared.clone(), stream, next_conn, permit));
                while tasks.try_join_next().is_some() {}
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    tasks.shutdown().await;
}

/// Hellos being read: at most [`MAX_PENDING_HELLOS`] in all and
/// [`MAX_PENDING_HELLOS_PER_IP`] from one address, so one host holding connections open
/// without a hello cannot lock every other client out.
#[derive(Clone)]
struct Pending {
    all: Arc<Semaphore>,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One hello being read; frees its place when dropped.
struct Permit {
    _all: OwnedSemaphorePermit,
    ip: IpAddr,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            all: Arc::new(Semaphore::new(MAX_PENDING_HELLOS)),
            by_ip: Arc::default(),
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<Permit> {
        let all = self.all.clone().try_acquire_owned().ok()?;
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= MAX_PENDING_HELLOS_PER_IP {
            return None;
        }
        *n += 1;
        Some(Permit {
            _all: all,
            ip,
            by_ip: self.by_ip.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Gives up waiting halves at their deadlines (and lets the core forget old tickets).
async fn timer(shared: Arc<Shared>) {
    loop {
        let next = shared.lock().relay.poll_timeout();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = shared.timer.notified() => continue,
        }
        let mut st = shared.lock();
        for conn in st.relay.handle_timeout(Instant::now()) {
            if let Some(tx) = st.waiters.remove(&conn) {
                shared.cfg.counters.refused();
                let _ = tx.send(Wake::TimedOut);
            }
        }
        shared.count(&st);
    }
}

/// Reads the hello: the magic first (anything else is closed at once), then the ticket.
async fn read_hello(stream: &mut TcpStream) -> Option<[u8; HELLO_LEN]> {
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello[..4]).await.ok()?;
    if hello[..4] != HELLO_MAGIC {
        return None;
    }
    stream.read_exact(&mut hello[4..]).await.ok()?;
    Some(hello)
}

/// Writes one status byte and closes (refusals).
async fn refuse(mut stream: TcpStream, status: Status, cfg: &RelayConfig) {
    let _ = tokio::time::timeout(cfg.hello_timeout, async {
        stream.write_all(&[status.to_byte()]).await?;
        stream.shutdown().await
    })
    .await;
}

async fn connection(shared: Arc<Shared>, mut stream: TcpStream, conn: ConnId, permit: Permit) {
    let hello = tokio::time::timeout(shared.cfg.hello_timeout, read_hello(&mut stream)).await;
    let Ok(Some(hello)) = hello else {
        return; // not a hello, or not in time: closed without a byte
    };
    drop(permit);
    let _ = stream.set_nodelay(true);
    match decide(&shared, conn, &hello, stream) {
        Next::Done => {}
        Next::Refuse(stream, status) => refuse(stream, status, &shared.cfg).await,
        Next::Wait(stream, rx) => {
            shared.timer.notify_one();
            wait_for_partner(shared, conn, stream, rx).await;
        }
    }
}

/// What a connection does after its hello.
enum Next {
    /// Closed, or handed to its partner.
    Done,
    Refuse(TcpStream, Status),
    Wait(TcpStream, oneshot::Receiver<Wake>),
}

/// The core's verdict on a hello, carried out under the lock (no await in here).
fn decide(shared: &Arc<Shared>, conn: ConnId, hello: &[u8], stream: TcpStream) -> Next {
    let mut st = shared.lock();
    let verdict = st.relay.hello(conn, hello, Instant::now(), unix_ms());
    shared.count(&st);
    match verdict {
        Verdict::Close => Next::Done,
        Verdict::Refuse(status) => {
            shared.cfg.counters.refused();
            Next::Refuse(stream, status)
        }
        Verdict::Wait => {
            let (tx, rx) = oneshot::channel();
            st.waiters.insert(conn, tx);
            Next::Wait(stream, rx)
        }
        Verdict::Paired { partner } => {
            shared.cfg.counters.paired();
            // Sent under the lock: the partner's task finds it even if its client just
            // closed (see `wait_for_partner`).
            let session = Session(shared.clone());
            let unsent = match st.waiters.remove(&partner) {
                Some(tx) => tx.send(Wake::Partner(stream, session)).err(),
                None => Some(Wake::Partner(stream, session)),
            };
            // Dropped after the lock: the session's drop takes it.
            drop(st);
            drop(unsent);
            Next::Done
        }
    }
}

/// Completes when the client closes (or resets) its connection; bytes it sends early
/// stay in the socket for the partner, and watching stops.
async fn until_closed(stream: &TcpStream) {
    let mut b = [0u8; 1];
    match stream.peek(&mut b).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

async fn wait_for_partner(
    shared: Arc<Shared>,
    conn: ConnId,
    stream: TcpStream,
    mut rx: oneshot::Receiver<Wake>,
) {
    let wake = tokio::select! {
        w = &mut rx => w.ok(),
        _ = until_closed(&stream) => {
            let mut st = shared.lock();
            if st.relay.left(conn) {
                st.waiters.remove(&conn);
                shared.count(&st);
                return;
            }
            // Paired or given up meanwhile: the outcome was sent under the lock.
            drop(st);
            rx.try_recv().ok()
        }
    };
    match wake {
        Some(Wake::TimedOut) => refuse(stream, Status::PartnerTimeout, &shared.cfg).await,
        Some(Wake::Partner(partner, session)) => {
            let limit = Limit::new(shared.cfg.session_rate, shared.total.clone());
            run_session(stream, partner, limit).await;
            drop(session);
        }
        None => {
            let mut st = shared.lock();
            st.relay.left(conn);
            st.waiters.remove(&conn);
            shared.count(&st);
        }
    }
}

/// Answers "paired" to both halves, then splices them until both directions end.
async fn run_session(mut a: TcpStream, mut b: TcpStream, limit: Limit) {
    let paired = [Status::Paired.to_byte()];
    let (ra, rb) = tokio::join!(a.write_all(&paired), b.write_all(&paired));
    if ra.is_err() || rb.is_err() {
        return;
    }
    if let Err(e) = splice(a, b, limit).await {
        tracing::debug!("relay session ended: {e}");
    }
}
