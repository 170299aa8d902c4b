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
    /// Length of each throughput phase (heartbeats only, then mixed), in seconds.
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u64,
    /// Requests outstanding in the throughput phases, all clients together (at most one
    /// per client).
    #[arg(long, default_value_t = 1024)]
    pub window: u32,
    /// In the mixed phase, one request in this many is a registration from scratch (new
    /// handshake, Register, Challenge, proven Register). 0: none.
    #[arg(long, default_value_t = 100)]
    pub register_every: u64,
    /// In the mixed phase, one request in this many (a registration if also a multiple
    /// of --register-every) is an Offer of a new file (the server pushes a table delta to
    /// every client). 0: none.
    #[arg(long, default_value_t = 50)]
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
    /// Requests outstanding in the memory phase, all clients together (under the
    /// server's 1,024 half-open handshakes, above which it asks for cookies).
    #[arg(long, default_value_t = 512)]
    pub memory_window: u32,
    /// Use a SQLite database in a temporary folder instead of :memory: (both server runs).
    #[arg(long)]
    pub db_file: bool,
    /// Server-side rate limit per source address (datagrams/s, 0 = off); default: the
    /// server's own (each client has its own address, so it is not what is measured).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// The server binary (default: `fileapp` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Run phases 1-3 against this many servers of one deployment (one PostgreSQL, one
    /// shared key), clients spread over them; with 2 or more, the same phases run first
    /// against one server on SQLite, and the report compares the two.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub servers: u8,
    /// The PostgreSQL database for --servers (default: a throwaway cluster started in a
    /// temporary folder, as the tests do; needs PostgreSQL installed).
    #[arg(long, value_name = "URL")]
    pub pg: Option<String>,
    /// Print the report as JSON (one object) instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Extra `fileapp server` flags. The server's limits stay its defaults (each client
    /// has its own address, at most `net::CLIENTS_PER_IP` per IP address), unless
    /// `--rate-limit` is given.
    pub fn server_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            // Nobody goes offline during a run: liveness is not what is measured.
            "--heartbeat-ms".into(),
            "600000".into(),
        ];
        if let Some(r) = self.rate_limit {
            a.extend(["--rate-limit".into(), r.to_string()]);
        }
        a
    }

    /// Progress on stderr, unless the report goes out as JSON (stdout stays one object;
    /// stderr stays quiet for scripts).
    pub fn progress(&self, msg: &str) {
        if !self.json {
            eprintln!("[fileapp-load] {msg}");
        }
    }
}
