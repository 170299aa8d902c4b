//! `fileapp-load`: load generator for the fileapp index server.
//!
//! Starts the real `fileapp` server binary (the one next to this executable) on
//! 127.0.0.1 with its default limits (only heartbeats lengthened), simulates N clients from one thread, each with its
//! own UDP socket, Ed25519 identity and encrypted control channel, and reports:
//! registration storm (full handshakes and key proofs), acknowledged requests/s with
//! heartbeats only and with a mix of heartbeats, offers and registrations, propagation
//! latency of a new offer to all clients, and the server's peak memory with many clients
//! and files (separate server run). See docs/LOAD.md.
//!
//! Build both binaries first: `cargo build --release`, then
//! `target/release/fileapp-load` (or `cargo run --release --bin fileapp-load`).
//!
//! Modules, in `fileapp_load/`: `args` (options), `run` (the run, phase by phase),
//! `phases` (what each phase does), `engine` (simulated clients and the event loop),
//! `counters` (what they sent and received), `table` (table parts and their acks),
//! `net` (sockets, batched receives, epoll), `sys` (the system calls beyond std, all
//! through `nix`), `procfs` (figures from /proc), `server` (the server child process),
//! `report` (figures and the table).

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

fn fail(msg: &str) -> ! {
    eprintln!("fileapp-load: {msg}");
    std::process::exit(1);
}
