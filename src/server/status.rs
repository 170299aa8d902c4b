//! `--metrics ADDR`: Prometheus metrics (`/metrics`), a status page (`/`) and, with an
//! admin token, the operator's requests while the server runs (`POST /admin/...`).
//!
//! The metrics go through the `metrics` facade into the Prometheus recorder of
//! `metrics-exporter-prometheus`, installed globally once; the driver records the two
//! latency histograms where they happen and copies the index's counters every
//! `STATUS_EVERY` (absolute values: the index counts, the metrics only show). About
//! 40 series, none per client.
//!
//! The HTTP side is a few lines over a TCP listener (`http.rs`): GET of two paths and
//! POST of two, one request per connection. It runs as its own task; it never touches the
//! index: the page is rendered from a [`Snapshot`] the driver refreshes, and admin
//! requests go to the driver as [`AdminCmd`]s, answered once their change is durable.

mod http;
mod page;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::{mpsc, oneshot};

use super::DriverStats;
use super::shared::{FollowState, ServerLine};
use crate::index::Index;
use crate::reach::relay::{RelayCounters, RelayNumbers};
use crate::store::{OwnerRecord, StoreOp};

/// Recent changes kept for the status page.
pub const RECENT: usize = 20;

/// Buckets of both latency histograms, in seconds (few, to keep the series count low).
pub const BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.1, 0.5];

/// What the status page shows, refreshed by the driver.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub server_id: String,
    pub started: Instant,
    pub online: usize,
    pub local_online: usize,
    pub names: usize,
    pub files: usize,
    pub version: u64,
    pub lag: Option<u64>,
    /// The relay inside this server, if it runs one.
    pub relay: Option<RelayNumbers>,
    pub servers: Vec<ServerLine>,
    /// Newest last: (when, what).
    pub recent: VecDeque<(SystemTime, String)>,
}

/// An operator's request.
#[derive(Debug)]
pub struct AdminCmd {
    pub kind: AdminKind,
    pub name: String,
    reply: oneshot::Sender<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminKind {
    /// Free the name (offline, no key, no files).
    Release,
    /// End the client's session here.
    Drop,
}

impl AdminCmd {
    /// Carries it out on the index; the driver commits before [`AdminCmd::answer`].
    pub fn apply(&self, index: &mut Index, now: Instant) -> bool {
        match self.kind {
            AdminKind::Release => index.release_name(now, &self.name),
            AdminKind::Drop => index.drop_client(now, &self.name),
        }
    }

    pub fn answer(self, done: bool) {
        let _ = self.reply.send(done);
    }
}

/// The driver's side of the metrics address.
#[derive(Debug)]
pub struct Status {
    admin: mpsc::Receiver<AdminCmd>,
    snapshot: Arc<Mutex<Snapshot>>,
    recent: VecDeque<(SystemTime, String)>,
    relay: Option<Arc<RelayCounters>>,
}

/// The Prometheus recorder, installed once per process.
fn recorder() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, String>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|b| b.install_recorder())
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Binds `addr` and serves it until the driver goes away; `relay`: the counters of the
/// relay this server runs.
pub async fn start(
    addr: SocketAddr,
    admin_token: Option<String>,
    server_id: &str,
    relay: Option<Arc<RelayCounters>>,
) -> std::io::Result<(Status, SocketAddr)> {
    let handle = recorder().map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let snapshot = Arc::new(Mutex::new(Snapshot {
        server_id: server_id.to_string(),
        started: Instant::now(),
        online: 0,
        local_online: 0,
        names: 0,
        files: 0,
        version: 0,
        lag: None,
        relay: None,
        servers: Vec::new(),
        recent: VecDeque::new(),
    }));
    let (tx, admin) = mpsc::channel(16);
    tokio::spawn(http::serve(
        listener,
        http::Site {
            metrics: handle,
            snapshot: snapshot.clone(),
            admin: tx,
            token: admin_token,
            renders: Default::default(),
        },
    ));
    Ok((
        Status {
            admin,
            snapshot,
            recent: VecDeque::new(),
            relay,
        },
        bound,
    ))
}

/// The next admin request, if there is a status address.
pub async fn recv_admin(status: &mut Option<Status>) -> Option<AdminCmd> {
    match status {
        Some(s) => s.admin.recv().await,
        None => std::future::pending().await,
    }
}

fn remember(status: &mut Option<Status>, line: String) {
    if let Some(s) = status {
        if s.recent.len() == RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back((SystemTime::now(), line));
    }
}

/// Records committed changes for the page's "recent changes".
pub fn note_ops(status: &mut Option<Status>, ops: &[StoreOp]) {
    if status.is_none() {
        return;
    }
    for op in ops {
        let line = match op {
            StoreOp::Owner(r) if r.online => format!("{} online", r.name),
            StoreOp::Owner(r) => format!("{} offline", r.name),
            StoreOp::Files { owner, files } => format!("{owner} offers {} file(s)", files.len()),
            StoreOp::ClearFiles { owner } => format!("{owner}'s offers cleared"),
            StoreOp::Record { owner, record, .. } => match record {
                Some(_) => format!("{owner} signed its record"),
                None => continue,
            },
        };
        remember(status, line);
    }
}

/// Records a change another server made.
pub fn note_remote(status: &mut Option<Status>, rec: &OwnerRecord, home: &str) {
    if status.is_some() {
        let state = if rec.row.online { "online" } else { "offline" };
        let line = format!(
            "{} {state}, {} file(s), via {home}",
            rec.row.name,
            rec.files.len()
        );
        remember(status, line);
    }
}

impl Status {
    /// Copies the index's numbers to the page and the metrics.
    pub fn publish(&mut self, ix: &Index, driver: &DriverStats, shared: Option<&FollowState>) {
        let st = ix.stats();
        let (online, local) = (ix.online_count(), ix.local_online());
        metrics::gauge!("fileapp_online_clients", "server" => "this").set(local as f64);
        metrics::gauge!("fileapp_online_clients", "server" => "all").set(online as f64);
        metrics::gauge!("fileapp_registered_names").set(ix.owners() as f64);
        metrics::gauge!("fileapp_offered_files").set(ix.online_files() as f64);
        metrics::gauge!("fileapp_table_version").set(ix.version() as f64);
        metrics::counter!("fileapp_registrations_total").absolute(st.registrations);
        let r = &st.requests;
        for (kind, n) in [
            ("register", r.register),
            ("offer", r.offer),
            ("dereg", r.dereg),
            ("heartbeat", r.heartbeat),
            ("table_ack", r.table_ack),
        ] {
            metrics::counter!("fileapp_requests_total", "kind" => kind).absolute(n);
        }
        for (reason, n) in [
            ("malformed", st.malformed),
            ("rate_limited", st.rate_limited),
            ("refused", st.refused),
            ("encode", st.encode_errors),
            ("pack", st.pack_errors),
            ("send_failed", driver.send_failed),
        ] {
            metrics::counter!("fileapp_dropped_total", "reason" => reason).absolute(n);
        }
        metrics::counter!("fileapp_table_parts_sent_total").absolute(st.table_parts_sent);
        let lag = shared.map(|s| s.lag.load(std::sync::atomic::Ordering::Relaxed));
        if let Some(lag) = lag {
            metrics::gauge!("fileapp_log_lag").set(lag as f64);
        }
        let relay = self.relay.as_ref().map(|r| r.read());
        if let Some(r) = relay {
            // Halves waiting for their partner are on the page only (series are few).
            metrics::gauge!("fileapp_relay_sessions").set(r.sessions as f64);
            metrics::counter!("fileapp_relay_paired_total").absolute(r.paired);
            metrics::counter!("fileapp_relay_refused_total").absolute(r.refused);
        }
        let servers = shared
            .and_then(|s| s.servers.lock().ok().map(|v| v.clone()))
            .unwrap_or_default();
        if let Ok(mut snap) = self.snapshot.lock() {
            metrics::gauge!("fileapp_uptime_seconds").set(snap.started.elapsed().as_secs_f64());
            snap.online = online;
            snap.local_online = local;
            snap.names = ix.owners();
            snap.files = ix.online_files();
            snap.version = ix.version();
            snap.lag = lag;
            snap.relay = relay;
            snap.servers = servers;
            snap.recent = self.recent.clone();
        }
    }
}
