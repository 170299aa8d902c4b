//! `fileapp server`: bind the socket, open the store (SQLite, PostgreSQL or none), build
//! the index, start the optional metrics address, print the start-up lines, and run the
//! driver until a signal.

use std::path::Path;
use std::time::Instant;

use crate::cli::{ServerConfig, defaults, exit};
use crate::identity::{self, Identity};
use crate::index::{Index, SecureIndex};
use crate::store::postgres::{self, PgStore};
use crate::store::{NullStore, OwnerRecord, SqliteStore, Store};

/// The store an operator chose, opened, with what it holds.
struct Opened {
    store: Box<dyn Store>,
    /// Rows whose sessions live on this server (or on none: a single server).
    local: Vec<OwnerRecord>,
    /// Rows whose sessions live on other servers of the same database, by home.
    remote: Vec<(OwnerRecord, String)>,
    /// The PostgreSQL store's follower input, with several servers possible.
    shared: Option<crate::server::Shared>,
}

/// What `--db` names, for the start-up line: a connection string without its password.
pub fn display_db(db: &str) -> String {
    if !postgres::is_postgres_url(db) {
        return db.to_string();
    }
    // postgres://user:password@host/db -> postgres://user@host/db
    match (db.find("://"), db.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &db[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &db[..s + 3], &db[at + 1..])
        }
        _ => db.to_string(),
    }
}

fn open(db: &str, server_id: &str) -> Result<Opened, String> {
    if db == ":memory:" {
        return Ok(Opened {
            store: Box::new(NullStore),
            local: Vec::new(),
            remote: Vec::new(),
            shared: None,
        });
    }
    let shown = display_db(db);
    if postgres::is_postgres_url(db) {
        let pg = PgStore::open(db, server_id)
            .map_err(|e| format!("[Cannot open database {shown}: {e}]"))?;
        // The log position first: whatever commits after it is caught up with later.
        let shared = crate::server::Shared::start(&pg)
            .map_err(|e| format!("[Cannot follow database {shown}: {e}]"))?;
        let rows = pg
            .load_with_homes()
            .map_err(|e| format!("[Cannot read database {shown}: {e}]"))?;
        let (mine, theirs): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(r, home)| home == server_id || !r.row.online);
        return Ok(Opened {
            store: Box::new(pg),
            local: mine.into_iter().map(|(r, _)| r).collect(),
            remote: theirs,
            shared: Some(shared),
        });
    }
    let mut store = SqliteStore::open(Path::new(db))
        .map_err(|e| format!("[Cannot open database {shown}: {e}]"))?;
    let local = store
        .load()
        .map_err(|e| format!("[Cannot read database {shown}: {e}]"))?;
    Ok(Opened {
        store: Box::new(store),
        local,
        remote: Vec::new(),
        shared: None,
    })
}

/// The server's key pair: `--key`, else the file beside the SQLite database (`x.db` ->
/// `x.key`; `fileapp-server.key` with PostgreSQL), created on first start; with an
/// in-memory database and no `--key`, a key for this run only. The servers of one
/// deployment share one key file, so clients pin the deployment, not a machine.
fn server_identity(key: Option<&Path>, db: &str) -> Result<Identity, identity::KeyFileError> {
    let path = match key {
        Some(p) => p.to_path_buf(),
        None if db == ":memory:" => return Ok(Identity::generate()?),
        None if postgres::is_postgres_url(db) => Path::new("fileapp-server.key").to_path_buf(),
        None => Path::new(db).with_extension("key"),
    };
    identity::load_or_create(&path)
}

/// Runs the index server until SIGINT, SIGTERM or SIGHUP.
pub fn run_server(cfg: ServerConfig) -> i32 {
    super::init_server_logging();
    let db = cfg
        .opts
        .db
        .clone()
        .unwrap_or_else(|| defaults::SERVER_DB.to_string());
    let mut socket = match crate::server::bind(cfg.bind, cfg.port) {
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
    let relay_listener = if cfg.opts.no_relay {
        None
    } else {
        match super::relay::bind_beside(&mut socket, cfg.bind, cfg.port) {
            Ok(l) => Some(l),
            Err(line) => {
                println!("{line}");
                return exit::FAILURE;
            }
        }
    };
    let local = socket.local_addr().ok();
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let server_id = cfg
        .opts
        .server_id
        .clone()
        .unwrap_or_else(|| format!("{host}:{}", local.map_or(cfg.port, |l| l.port())));
    let opened = match open(&db, &server_id) {
        Ok(o) => o,
        Err(line) => {
            println!("{line}");
            return exit::FAILURE;
        }
    };
    let ip = match cfg.bind {
        Some(ip) if !ip.is_unspecified() => Some(ip),
        _ => crate::server::primary_ip(),
    };
    let ip = ip.map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string());
    let server_key = match server_identity(cfg.opts.key.as_deref(), &db) {
        Ok(k) => k,
        Err(e) => {
            println!("[Cannot use the server key: {e}]");
            return exit::FAILURE;
        }
    };
    println!("Server host name: {host} IP address: {ip}");
    println!(
        "Server key: {}",
        crate::identity::fingerprint(&SecureIndex::public_key_of(&server_key.channel_secret()))
    );
    // Dropped when the server stops, which stops the relay.
    let (_relay_stop, relay_stopped) = tokio::sync::watch::channel(false);
    let relaying = relay_listener.is_some() || cfg.opts.relay_at.is_some();
    if let Some(at) = cfg.opts.relay_at {
        println!("Relay at {at}");
    }
    let mut relay_counters = None;
    if let Some(listener) = relay_listener {
        let port = listener.local_addr().map_or(0, |a| a.port());
        let relay_cfg = crate::reach::relay::RelayConfig::new(server_key.public_key());
        relay_counters = Some(relay_cfg.counters.clone());
        if let Err(e) = super::relay::spawn_beside(listener, relay_cfg, relay_stopped) {
            println!("[Cannot start the relay: {e}]");
            return exit::FAILURE;
        }
        println!("Relay on TCP port {port}");
    }
    if relaying {
        println!("Relay ticket key: {}", hex::encode(server_key.public_key()));
    }
    if let Some(l) = local {
        println!(
            "Listening on UDP port {} (table in {})",
            l.port(),
            display_db(&db)
        );
    }
    let now = Instant::now();
    let mut index = Index::new(
        crate::server::index_config(&cfg.opts),
        opened.local,
        now,
        rand::random(),
    );
    for (rec, home) in opened.remote {
        index.apply_remote(now, rec, &home);
    }
    let channel_secret = server_key.channel_secret();
    let signer = std::sync::Arc::new(server_key);
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if relaying {
        index.set_relay(crate::index::RelaySetup {
            signer: signer.clone(),
            addr: cfg.opts.relay_at,
            // Bound to one address: the relay is there too (owners of other servers
            // of a deployment are told it; "the server's own address" is theirs).
            public: local.filter(|l| !l.ip().is_unspecified()),
            unix_ms_at_epoch: unix_ms,
        });
    }
    // The probe port, for clients' NAT tests: the UDP port + 1 on the same address.
    let probe = local.and_then(|l| {
        let at = std::net::SocketAddr::new(l.ip(), l.port().wrapping_add(1));
        match std::net::UdpSocket::bind(at).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no NAT tests: cannot bind the probe port {at}: {e}");
                None
            }
        }
    });
    let index = SecureIndex::new(
        index,
        channel_secret,
        rand::random(),
        now,
        crate::channel::ServerConfig::default(),
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
    let store = opened.store;
    let shared = opened.shared;
    let metrics = cfg.opts.metrics;
    let admin_token = cfg.opts.admin_token.clone();
    rt.block_on(async move {
        let socket = match tokio::net::UdpSocket::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                println!("[Cannot start server: {e}]");
                return exit::FAILURE;
            }
        };
        let probe = probe.and_then(|p| tokio::net::UdpSocket::from_std(p).ok());
        let mut services = crate::server::Services {
            shared,
            reach: Some(crate::server::reach::ReachService::new(probe)),
            ..Default::default()
        };
        if let Some(addr) = metrics {
            match crate::server::status::start(addr, admin_token, &server_id, relay_counters).await
            {
                Ok((status, bound)) => {
                    println!("Metrics and status page on http://{bound}/");
                    services.status = Some(status);
                }
                Err(e) => {
                    println!("[Cannot serve metrics on {addr}: {e}]");
                    return exit::FAILURE;
                }
            }
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        match crate::server::run_with(socket, index, store, services, super::shutdown_signal())
            .await
        {
            Ok(()) => exit::OK,
            Err(e) => {
                println!("[Server stopped: {e}]");
                exit::FAILURE
            }
        }
    })
}

/// Sends `POST /admin/{path}?name=...` to a server's metrics address; returns the HTTP
/// status and body.
pub fn admin_request(
    addr: std::net::SocketAddr,
    token: &str,
    path: &str,
    name: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(10);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let name: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    write!(
        s,
        "POST /admin/{path}?name={name} HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    Ok((code, body.to_string()))
}
