//! Entry points behind the binary: build the runtime, open what each mode needs, print
//! the start-up lines, and map failures to exit codes.

use std::path::Path;
use std::time::Instant;

use crate::cli::{ClientConfig, ServerConfig, exit};
use crate::index::Index;
use crate::store::{NullStore, SqliteStore, Store};

/// Default database of the server, in the folder it is started from.
pub const DEFAULT_DB: &str = "fileapp-server.db";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
}

/// Runs the index server until SIGINT, SIGTERM or SIGHUP.
pub fn run_server(cfg: ServerConfig) -> i32 {
    init_server_logging();
    let db = cfg
        .opts
        .db
        .clone()
        .unwrap_or_else(|| DEFAULT_DB.to_string());
    let mut store: Box<dyn Store> = if db == ":memory:" {
        Box::new(NullStore)
    } else {
        match SqliteStore::open(Path::new(&db)) {
            Ok(s) => Box::new(s),
            Err(e) => {
                println!("[Cannot open database {db}: {e}]");
                return exit::FAILURE;
            }
        }
    };
    let records = match store.load() {
        Ok(r) => r,
        Err(e) => {
            println!("[Cannot read database {db}: {e}]");
            return exit::FAILURE;
        }
    };
    let socket = match crate::server::bind(cfg.bind, cfg.port) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            println!(
                "[Cannot use server port {}: it is already in use]",
                cfg.port
            );
            return exit::FAILURE;
        }
        Err(e) => {
            println!("[Cannot use server port {}: {e}]", cfg.port);
            return exit::FAILURE;
        }
    };
    let local = socket.local_addr().ok();
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let ip = match cfg.bind {
        Some(ip) if !ip.is_unspecified() => Some(ip),
        _ => crate::server::primary_ip(),
    };
    let ip = ip.map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string());
    println!("Server host name: {host} IP address: {ip}");
    if let Some(l) = local {
        println!("Listening on UDP port {} (table in {db})", l.port());
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let index = Index::new(
        crate::server::index_config(&cfg.opts),
        records,
        Instant::now(),
        rand::random(),
    );
    // One thread: the index is one state machine, and a second thread would only hand
    // socket readiness across cores.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("[Cannot start the async runtime: {e}]");
            return exit::FAILURE;
        }
    };
    rt.block_on(async move {
        let socket = match tokio::net::UdpSocket::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                println!("[Cannot start server: {e}]");
                return exit::FAILURE;
            }
        };
        match crate::server::run(socket, index, store, shutdown_signal()).await {
            Ok(()) => exit::OK,
            Err(e) => {
                println!("[Server stopped: {e}]");
                exit::FAILURE
            }
        }
    })
}

/// Completes on SIGINT, SIGTERM or SIGHUP.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let wait = |s: Option<tokio::signal::unix::Signal>| async move {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = wait(term.take()) => {}
        _ = wait(hup.take()) => {}
    }
}

fn init_server_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Runs a client until the user leaves.
pub fn run_client(cfg: ClientConfig) -> i32 {
    init_client_logging(&cfg);
    runtime().block_on(crate::client::driver::run(cfg))
}

/// `-v` (info, `-vv` debug, `-vvv` trace) or `RUST_LOG`: log to a file in the user's data
/// folder, never to the terminal the prompt lives on.
fn init_client_logging(cfg: &ClientConfig) {
    let filter = match (std::env::var("RUST_LOG").ok(), cfg.opts.verbose) {
        (Some(f), _) => f,
        (None, 0) => return,
        (None, 1) => "fileapp=info".into(),
        (None, 2) => "fileapp=debug".into(),
        (None, _) => "fileapp=trace".into(),
    };
    let Some(dirs) = directories::ProjectDirs::from("", "", "fileapp") else {
        return;
    };
    let dir = dirs.data_dir().join("logs");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join(format!("client-{}.log", cfg.name));
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}

/// Prints a completion script for `shell`.
pub fn completions(shell: &str) -> i32 {
    use clap_complete::Shell;
    let Ok(sh) = shell.parse::<Shell>() else {
        println!("[Unknown shell {shell}: use bash, zsh or fish]");
        return exit::USAGE;
    };
    let mut cmd = crate::cli::command();
    clap_complete::generate(sh, &mut cmd, "fileapp", &mut std::io::stdout());
    exit::OK
}

/// `fileapp release-name`: frees a name whose key was lost.
pub fn release_name(db: &Path, name: &str) -> i32 {
    if !db.exists() {
        println!("[No database at {}]", db.display());
        return exit::FAILURE;
    }
    match SqliteStore::open(db).and_then(|mut s| s.release_name(name)) {
        Ok(true) => {
            println!("[Released {name}: anyone may register it again.]");
            exit::OK
        }
        Ok(false) => {
            println!("[No client named {name} in {}]", db.display());
            exit::FAILURE
        }
        Err(e) => {
            println!("[Cannot release {name}: {e}]");
            exit::FAILURE
        }
    }
}
