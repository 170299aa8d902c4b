//! `fileapp-load`: load generator for the fileapp index server.
//!
//! Starts the real `fileapp` server binary (the one next to this executable) on
//! 127.0.0.1 with raised limits, simulates N clients from one thread over a few UDP
//! sockets, and reports four phases: registration storm, acknowledged-request
//! throughput, propagation latency of a new offer to all clients, and the server's peak
//! memory with many clients and files (separate server run). See docs/LOAD.md.
//!
//! Build both binaries first: `cargo build --release`, then
//! `target/release/fileapp-load` (or `cargo run --release --bin fileapp-load`).
//!
//! Modules, in `fileapp_load/`: `args` (options), `run` (the run, phase by phase),
//! `phases` (what each phase does), `engine` (simulated clients and the event loop),
//! `counters` (what they sent and received), `table` (table parts on shared sockets),
//! `net` (batched UDP I/O), `sys` (the system calls beyond std, all through `nix`),
//! `procfs` (figures from /proc), `server` (the server child process), `report`
//! (figures and the table).

// No hand-written unsafe: `nix` wraps every system call the generator makes (see sys.rs).
#![deny(unsafe_code)]

#[path = "fileapp_load/args.rs"]
mod args;
#[path = "fileapp_load/counters.rs"]
mod counters;
#[path = "fileapp_load/engine.rs"]
mod engine;
#[path = "fileapp_load/net.rs"]
mod net;
#[path = "fileapp_load/phases.rs"]
mod phases;
#[path = "fileapp_load/procfs.rs"]
mod procfs;
#[path = "fileapp_load/report.rs"]
mod report;
#[path = "fileapp_load/run.rs"]
mod run;
#[path = "fileapp_load/server.rs"]
mod server;
#[path = "fileapp_load/sys.rs"]
mod sys;
#[path = "fileapp_load/table.rs"]
mod table;

use clap::Parser;

fn main() {
    let args = args::Args::parse();
    if args.compare {
        return compare(&args);
    }
    let report = match run::run(&args) {
        Ok(r) => r,
        Err(e) => fail(&format!("{e:#}")),
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => fail(&e.to_string()),
        }
    } else {
        report::print(&report);
    }
}

/// `--compare`: one server on SQLite, then several on one PostgreSQL, in one run.
fn compare(args: &args::Args) {
    let single = args::Args {
        servers: 1,
        pg: None,
        db_file: true,
        memory_clients: 0,
        ..args.clone()
    };
    let shared = args::Args {
        servers: if args.servers > 1 { args.servers } else { 3 },
        memory_clients: 0,
        ..args.clone()
    };
    let run = |a: &args::Args| run::run(a).unwrap_or_else(|e| fail(&format!("{e:#}")));
    let (a, b) = (run(&single), run(&shared));
    if args.json {
        let v = serde_json::json!({
            "sqlite_one_server": a,
            "postgres_servers": b,
            "acked_ratio": b.throughput.acked_per_sec / a.throughput.acked_per_sec.max(1e-9),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        report::print(&a);
        report::print(&b);
        report::print_comparison(&a, &b);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("fileapp-load: {msg}");
    std::process::exit(1);
}
