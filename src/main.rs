//! The `fileapp` binary: parse the command line, run the server or a client.

use std::io::Write;

use clap::Parser;
use fileapp::cli::{self, Cli, Mode, exit};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            if e.use_stderr() {
                println!("{}", cli::usage_line());
            }
            std::process::exit(code);
        }
    };
    let code = match cli.mode() {
        Ok(mode) => run(mode),
        Err(cli::UsageError(msg)) => {
            println!("{msg}");
            exit::USAGE
        }
    };
    let _ = std::io::stdout().flush();
    // Exit at once: a thread blocked reading the terminal must not keep us alive.
    std::process::exit(code);
}

fn run(mode: Mode) -> i32 {
    match mode {
        Mode::Completions(shell) => fileapp::app::completions(&shell),
        Mode::Server(cfg) => fileapp::app::run_server(cfg),
        Mode::Relay(cfg) => fileapp::app::run_relay(cfg),
        Mode::Client(cfg) => fileapp::app::run_client(cfg),
        Mode::ReleaseName { db, name } => fileapp::app::release_name(&db, &name),
        Mode::Admin {
            metrics,
            token,
            action,
            name,
        } => fileapp::app::admin(metrics, &token, &action, &name),
    }
}
