//! Command-line options of `fileapp-load`, and the server flags they imply.

use std::path::PathBuf;

use clap::Parser;

/// Load generator for the fileapp index server (127.0.0.1 only).
#[derive(Parser, Debug, Clone)]
#[command(name = "fileapp-load")]
pub struct Args {
    /// Simulated clients for phases 1-3.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// UDP sockets the clients are spread over (clients share sockets).
    #[arg(long, default_value_t = 64)]
    pub sockets: usize,
    /// Length of the throughput phase, in seconds.
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u64,
    /// Outstanding requests per socket in the throughput phase.
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// In the throughput phase, one request in this many is an Offer of a new file
    /// (which makes the server push a table delta to every client). 0: heartbeats only.
    #[arg(long, default_value_t = 10_000)]
    pub offer_every: u64,
    /// Propagation rounds.
    #[arg(long, default_value_t = 50)]
    pub rounds: u32,
    /// Clients of the memory phase (separate server run); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    pub memory_clients: usize,
    /// Files each memory-phase client offers.
    #[arg(long, default_value_t = 10)]
    pub memory_files: u32,
    /// Outstanding requests per socket in the memory phase.
    #[arg(long, default_value_t = 32)]
    pub memory_window: u32,
    /// Use a SQLite database in a temporary folder instead of :memory: (both server runs).
    #[arg(long)]
    pub db_file: bool,
    /// Servers sharing one PostgreSQL database for phases 1-3 (clients spread over them);
    /// more than one needs PostgreSQL (`--pg`, or a throwaway cluster started here).
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// PostgreSQL database for the servers (default with --servers > 1: a throwaway
    /// cluster from /usr/lib/postgresql/*/bin, removed after the run).
    #[arg(long, value_name = "URL")]
    pub pg: Option<String>,
    /// Phases 1-3 twice in one run: one server on SQLite, then --servers (default 3 if
    /// 1) on one PostgreSQL; prints both and their ratios.
    #[arg(long)]
    pub compare: bool,
    /// Server-side rate limit per source address (datagrams/s, 0 = off).
    #[arg(long, default_value_t = 0)]
    pub rate_limit: u32,
    /// The server binary (default: `fileapp` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Print the report as JSON (one object) instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Extra `fileapp server` flags for a run with `clients` simulated clients: limits
    /// raised so that only the server's speed is measured.
    pub fn server_args(&self, clients: usize) -> Vec<String> {
        vec![
            "--rate-limit".into(),
            self.rate_limit.to_string(),
            // All simulated clients share 127.0.0.1; a little slack over their number.
            "--max-clients-per-ip".into(),
            (clients + 100).to_string(),
            // Nobody goes offline during a run: liveness is not what is measured.
            "--heartbeat-ms".into(),
            "600000".into(),
        ]
    }

    /// Progress on stderr, unless the report goes out as JSON (stdout stays one object;
    /// stderr stays quiet for scripts).
    pub fn progress(&self, msg: &str) {
        if !self.json {
            eprintln!("[fileapp-load] {msg}");
        }
    }
}
