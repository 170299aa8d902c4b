//! Entry points behind the binary: build the runtime, open what each mode needs, print
//! the start-up lines, and map failures to exit codes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};

mod relay;
mod server;

pub use relay::run_relay;
pub use server::run_server;

use crate::cli::{ClientConfig, defaults, exit};
use crate::client::driver::{self, Bound};
use crate::client::{ClientError, flow};
use crate::identity::{self, Identity, KeyLock};
use crate::known::KnownKeys;
use crate::reliable::RetryPolicy;
use crate::store::SqliteStore;
use crate::transfer::secure::{Security, TlsIdentity};

/// The client's runtime: two workers (hashing and transfers run on blocking threads).
fn client_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
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

/// Runs a client until the user leaves: binds its sockets, loads its identity, then
/// hands them to the driver. A failure's line is printed here unless the console already
/// showed it.
pub fn run_client(cfg: ClientConfig) -> i32 {
    init_client_logging(&cfg);
    let rt = match client_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            println!("[Cannot start the async runtime: {e}]");
            return exit::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let (settings, bound) = start_client(&cfg).await?;
        driver::run(settings, bound).await
    });
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            if !e.shown() {
                println!("{e}");
            }
            client_exit_code(&e)
        }
    }
}

/// Every way a client stops early is a runtime failure (usage errors never get this far).
fn client_exit_code(e: &ClientError) -> i32 {
    match e {
        ClientError::Bind { .. }
        | ClientError::Connect { .. }
        | ClientError::LocalAddr(_)
        | ClientError::CurrentDir(_)
        | ClientError::NoDownloadDir(_)
        | ClientError::Identity(_)
        | ClientError::Tls(_)
        | ClientError::ServerNotResponding
        | ClientError::NameInUse
        | ClientError::Rejected(_)
        | ClientError::ServerKeyChanged { .. }
        | ClientError::KnownServers(_) => exit::FAILURE,
    }
}

/// Opens what a client needs, in this order: the UDP socket (connected to the server),
/// the TCP listener, the download folder, the identity and its TLS configuration.
async fn start_client(cfg: &ClientConfig) -> Result<(driver::Config, Bound), ClientError> {
    let any: IpAddr = if cfg.server.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let bind_err = |what, port| move |source| ClientError::Bind { what, port, source };
    let sock = UdpSocket::bind(SocketAddr::new(any, cfg.udp_port))
        .await
        .map_err(bind_err("UDP", cfg.udp_port))?;
    // Only the server's datagrams reach us: others are filtered by the kernel.
    sock.connect(cfg.server)
        .await
        .map_err(|source| ClientError::Connect {
            server: cfg.server,
            source,
        })?;
    let listener = TcpListener::bind(SocketAddr::new(any, cfg.tcp_port))
        .await
        .map_err(bind_err("TCP", cfg.tcp_port))?;
    let download_dir = match &cfg.opts.download_dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(ClientError::CurrentDir)?,
    };
    if !download_dir.is_dir() {
        return Err(ClientError::NoDownloadDir(download_dir));
    }
    let (identity, exclusive, key_lock) = load_identity(cfg)?;
    let identity = Arc::new(identity);
    let security = if cfg.opts.plaintext {
        Security::Plaintext
    } else {
        Security::Tls(Arc::new(
            TlsIdentity::new(&identity).map_err(ClientError::Tls)?,
        ))
    };
    let known = |file| match KnownKeys::default_path(file) {
        Some(p) => KnownKeys::load(&p)
            .map(Some)
            .map_err(ClientError::KnownServers),
        None => Ok(None),
    };
    let known_servers = known("known_servers")?;
    let known_peers = known("known_peers")?;
    let bound = Bound {
        sock,
        listener,
        identity,
        exclusive,
        key_lock,
        security,
        known_servers,
        known_peers,
    };
    Ok((client_settings(cfg, download_dir), bound))
}

/// The driver's settings from the command line's.
fn client_settings(cfg: &ClientConfig, download_dir: PathBuf) -> driver::Config {
    let exec = cfg
        .opts
        .exec
        .as_deref()
        .map(|s| {
            s.split(';')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    driver::Config {
        name: cfg.name.clone(),
        retry: RetryPolicy {
            interval: cfg.retry_interval(),
            ..RetryPolicy::default()
        },
        heartbeat: defaults::heartbeat(),
        advertise_ip: cfg.opts.advertise_ip,
        plain: cfg.opts.plain,
        exec,
        exit_when_done: cfg.opts.exit && cfg.opts.exec.is_some(),
        download_dir,
        peer_timeout: cfg
            .opts
            .peer_timeout_ms
            .map(std::time::Duration::from_millis),
        sync_wait: flow::READ_YOUR_WRITES_WAIT,
        server: cfg.server,
        servers: cfg.servers.clone(),
        server_pin: cfg.opts.server_key,
    }
}

/// The key this client's name is bound to. An explicit `--identity` must work; the
/// default one falls back to a key for this run only when the user has no writable
/// config folder (the name then cannot be taken back after a crash, nothing worse).
/// Returns the identity, whether no other process uses it, and the lock that says so.
fn load_identity(cfg: &ClientConfig) -> Result<(Identity, bool, Option<KeyLock>), ClientError> {
    let exclusive = |(id, lock): (Identity, Option<KeyLock>)| (id, lock.is_some(), lock);
    if let Some(path) = &cfg.opts.identity {
        return identity::open_exclusive(path)
            .map(exclusive)
            .map_err(ClientError::Identity);
    }
    let found = identity::default_path(&cfg.name).map(|p| identity::open_exclusive(&p));
    match found {
        Some(Ok(pair)) => Ok(exclusive(pair)),
        other => {
            tracing::warn!(
                ?other,
                "no usable identity file; using a key for this run only"
            );
            let id = Identity::generate().map_err(|e| ClientError::Identity(e.into()))?;
            Ok((id, true, None))
        }
    }
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
    let url = db.to_string_lossy();
    if crate::store::postgres::is_postgres_url(&url) {
        let shown = server::display_db(&url);
        let r =
            crate::store::PgStore::open(&url, "release-name").and_then(|s| s.release_name(name));
        return match r {
            Ok(true) => {
                println!("[Released {name}: anyone may register it again.]");
                exit::OK
            }
            Ok(false) => {
                println!("[No client named {name} in {shown}]");
                exit::FAILURE
            }
            Err(e) => {
                println!("[Cannot release {name}: {e}]");
                exit::FAILURE
            }
        };
    }
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

/// `fileapp admin`: one request to a running server's metrics address.
pub fn admin(addr: SocketAddr, token: &str, action: &str, name: &str) -> i32 {
    let path = if action == "drop" { "drop" } else { "release" };
    match server::admin_request(addr, token, path, name) {
        Ok((200, body)) => {
            println!("[{}]", body.trim());
            exit::OK
        }
        Ok((_, body)) => {
            println!("[{}]", body.trim());
            exit::FAILURE
        }
        Err(e) => {
            println!("[Cannot reach the server at {addr}: {e}]");
            exit::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Mode};
    use clap::Parser;

    fn client(args: &[&str]) -> ClientConfig {
        let base = [
            "fileapp",
            "client",
            "--name",
            "B",
            "--server",
            "127.0.0.1:9",
        ];
        let cli = Cli::try_parse_from(base.iter().chain(args)).unwrap();
        match cli.mode() {
            Ok(Mode::Client(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn driver_settings_from_the_command_line() {
        let c = client(&["--exec", " setdir s ;; offer a;", "--exit", "--plain"]);
        let s = client_settings(&c, "/d".into());
        assert_eq!(s.exec, ["setdir s", "offer a"]);
        assert!(s.exit_when_done && s.plain);
        assert_eq!(s.retry, RetryPolicy::default());
        assert_eq!(s.heartbeat, crate::index::Config::default().heartbeat);
        assert_eq!(s.sync_wait, flow::READ_YOUR_WRITES_WAIT);
        assert_eq!(s.download_dir, PathBuf::from("/d"));

        let s = client_settings(&client(&["--retry-ms", "20"]), "/d".into());
        assert!(s.exec.is_empty() && !s.exit_when_done);
        assert_eq!(s.retry.interval, std::time::Duration::from_millis(20));
        assert_eq!(s.retry.retries, RetryPolicy::default().retries);
    }

    #[test]
    fn every_client_error_is_a_runtime_failure() {
        for e in [
            ClientError::ServerNotResponding,
            ClientError::NameInUse,
            ClientError::NoDownloadDir("/x".into()),
        ] {
            assert_eq!(client_exit_code(&e), exit::FAILURE);
        }
    }
}
