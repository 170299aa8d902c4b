//! Command-line parsing: the seed's forms (`-s <port>`, `-c <name> <server-ip>
//! <server-port> <udp-port> <tcp-port>`) and long forms (`server`, `client`,
//! `completions`), turned into a validated [`Mode`]. Validation messages are the seed's.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Defaults of the command line and of the modes it starts, each defined once. Values the
/// index also uses come from [`crate::index::Config::default`] and
/// [`crate::reliable::RetryPolicy::default`].
pub mod defaults {
    use std::time::Duration;

    /// UDP port of `fileapp server`.
    pub const SERVER_PORT: u16 = 12000;
    /// The server's database, in the folder it is started from.
    pub const SERVER_DB: &str = "fileapp-server.db";

    /// Heartbeat interval the server announces (and the client uses until told).
    pub fn heartbeat() -> Duration {
        crate::index::Config::default().heartbeat
    }

    /// A client silent this long goes offline.
    pub fn offline_after() -> Duration {
        crate::index::Config::default().offline_after
    }

    /// Interval between a client's retries of one request, in milliseconds.
    pub fn retry_ms() -> u64 {
        crate::reliable::RetryPolicy::default().interval.as_millis() as u64
    }

    pub(super) fn heartbeat_help() -> String {
        format!(
            "Heartbeat interval clients are told to use, in milliseconds [default: {}]",
            heartbeat().as_millis()
        )
    }

    pub(super) fn offline_after_help() -> String {
        format!(
            "A client silent this long goes offline, in milliseconds [default: {}, or {} \
             heartbeats when --heartbeat-ms is given]",
            offline_after().as_millis(),
            crate::index::OFFLINE_AFTER_HEARTBEATS
        )
    }
}

/// Exit codes (documented in the README).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
}

const AFTER_HELP: &str = "\
Seed-compatible forms:
  fileapp -s <server-port>
  fileapp -c <name> <server-ip> <server-port> <udp-port> <tcp-port>
Ports in the seed forms are 1024-65535. In the long forms 0 picks a free port.

Examples:
  fileapp -s 12000
  fileapp -c B 127.0.0.1 12000 1301 1401
  fileapp client --name C --server 127.0.0.1:12000 --download-dir ~/Downloads
  fileapp client --name B --server 127.0.0.1:12000 --exec 'setdir share; offer a b'
  fileapp client --name C --server 10.0.0.1:12000,10.0.0.2:12000

Several servers: --server takes a comma list (or a host name with several addresses)
of servers sharing one database and one key (--key). The client starts with the first;
when its server stops answering it moves to the next (round robin) and keeps its
session, offers and table there.

Exit codes: 0 success, 1 runtime failure, 2 usage error.";

/// fileapp: share files through a central index; transfer them directly between peers.
#[derive(Parser, Debug)]
#[command(name = "fileapp", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Run the index server on this UDP port (seed form).
    #[arg(short = 's', value_name = "SERVER_PORT", conflicts_with = "client")]
    pub server_port: Option<String>,

    /// Run a client (seed form).
    #[arg(
        short = 'c',
        num_args = 5,
        value_names = ["NAME", "SERVER_IP", "SERVER_PORT", "UDP_PORT", "TCP_PORT"],
    )]
    pub client: Option<Vec<String>>,

    #[command(flatten)]
    pub server_opts: ServerOpts,

    #[command(flatten)]
    pub client_opts: ClientOpts,

    #[command(subcommand)]
    pub command: Option<Sub>,
}

#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Run the index server.
    Server {
        /// UDP port to listen on (0: any free port).
        #[arg(long, short = 'p', default_value_t = defaults::SERVER_PORT)]
        port: u16,
        #[command(flatten)]
        opts: ServerOpts,
    },
    /// Run a client.
    Client {
        /// Your client name (unique among online clients).
        #[arg(long, short = 'n')]
        name: String,
        /// The index server, as host:port; several servers of one deployment as a comma
        /// list (a:p,b:p), or a host name with several addresses: the client moves to the
        /// next when its server stops answering, and keeps its session there.
        #[arg(long, short = 's', value_name = "HOST:PORT[,HOST:PORT...]")]
        server: String,
        /// UDP port for talking to the server (0: any free port).
        #[arg(long, default_value_t = 0)]
        udp_port: u16,
        /// TCP port peers download from (0: any free port).
        #[arg(long, default_value_t = 0)]
        tcp_port: u16,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Run a relay of last resort: it splices two clients that cannot reach each other,
    /// for the transfers the index server signed a ticket for.
    Relay {
        /// TCP port to listen on (0: any free port).
        #[arg(long, short = 'p')]
        port: u16,
        /// The index server's Ed25519 public key (64 hex digits): only its tickets pair.
        #[arg(long, value_name = "HEX64", value_parser = parse_key_hex)]
        server_key: [u8; 32],
        /// Address to bind (default: all interfaces, IPv4 and IPv6).
        #[arg(long, value_name = "IP")]
        bind: Option<IpAddr>,
        /// Most sessions at once (paired ones plus halves waiting for their partner).
        #[arg(long, value_name = "N", default_value_t = crate::reach::relay::DEFAULT_MAX_SESSIONS)]
        max_sessions: usize,
        /// Rate limit of one session, both directions together, in MB/s (10^6 bytes)
        /// [default: unlimited].
        #[arg(long, value_name = "MBPS", value_parser = parse_mbps)]
        rate: Option<u64>,
        /// Rate limit of all sessions together, in MB/s [default: unlimited].
        #[arg(long, value_name = "MBPS", value_parser = parse_mbps)]
        total_rate: Option<u64>,
        /// How long the first half of a pair waits for the other, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = crate::reach::relay::DEFAULT_PAIR_TIMEOUT.as_millis() as u64)]
        pair_timeout_ms: u64,
    },
    /// Print a shell completion script (bash, zsh, fish).
    Completions { shell: String },
    /// Ask a running server (its --metrics address, with --admin-token) to release a
    /// name or drop a client.
    Admin {
        /// The server's --metrics address.
        #[arg(long, value_name = "ADDR")]
        metrics: std::net::SocketAddr,
        /// The server's --admin-token.
        #[arg(long, value_name = "TOKEN", env = "FILEAPP_ADMIN_TOKEN")]
        token: String,
        /// release-name: free the name (offline, no key, no offers); drop: end the
        /// client's session on that server.
        #[arg(value_parser = ["release-name", "drop"])]
        action: String,
        /// The client name.
        name: String,
    },
    /// Free a name bound to a lost key (SQLite: with the server stopped; PostgreSQL: the
    /// running servers follow).
    ReleaseName {
        /// The server's database.
        #[arg(long, value_name = "PATH", default_value = defaults::SERVER_DB)]
        db: PathBuf,
        /// The client name to free.
        name: String,
    },
}

/// Server options, valid with `-s` and with `server`.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerOpts {
    /// Address to bind (default: all interfaces, IPv4 and IPv6). With several servers on
    /// one database, bind each to its address: it then names its relay by that address
    /// to the clients of the other servers.
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// SQLite database file of the table (":memory:" keeps nothing), or a PostgreSQL
    /// connection string (postgres://user@host:port/db) shared by several servers.
    #[arg(long, value_name = "PATH|URL", env = "FILEAPP_DB")]
    pub db: Option<String>,
    /// The server's key file, created on first start (default: beside the database,
    /// named like it with `.key`; a key for this run only with `--db :memory:`).
    /// Clients pin this key: keep it, and copy it to every server of one deployment.
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// This server's name among the servers of one PostgreSQL database (default:
    /// host name and UDP port). Keep it across restarts.
    #[arg(long, value_name = "NAME")]
    pub server_id: Option<String>,
    /// Serve Prometheus metrics (/metrics) and a status page (/) on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// With --metrics: enables the admin requests (POST /admin/...) for this bearer token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FILEAPP_ADMIN_TOKEN",
        requires = "metrics"
    )]
    pub admin_token: Option<String>,
    #[arg(long, value_name = "MS", help = defaults::heartbeat_help())]
    pub heartbeat_ms: Option<u64>,
    #[arg(long, value_name = "MS", help = defaults::offline_after_help())]
    pub offline_after_ms: Option<u64>,
    /// Datagrams per second accepted from one source address (0: unlimited).
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Most online clients behind one IP address.
    #[arg(long, value_name = "N")]
    pub max_clients_per_ip: Option<usize>,
    /// Table parts per second the pushes to clients may send while changes keep coming
    /// (default 25000; 0: unlimited). Each client then gets one push per round with every
    /// change since its last; a change to a quiet table still goes out at once.
    #[arg(long, value_name = "N")]
    pub push_budget: Option<u32>,
    /// Do not run the relay (by default the server also relays, on the TCP port of the
    /// same number as its UDP port).
    #[arg(long)]
    pub no_relay: bool,
    /// Name this relay to clients instead of our own: a `fileapp relay` elsewhere,
    /// started with `--server-key` set to the key this server prints as
    /// `Relay ticket key:`.
    #[arg(long, value_name = "HOST:PORT")]
    pub relay_at: Option<std::net::SocketAddr>,
}

/// Client options, valid with `-c` and with `client`.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Folder downloads are saved in (default: the current folder).
    #[arg(long, value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// IP address peers should use to reach you (default: what the server sees).
    #[arg(long, value_name = "IP")]
    pub advertise_ip: Option<IpAddr>,
    /// Commands to run at start, separated by ';'.
    #[arg(long, value_name = "COMMANDS")]
    pub exec: Option<String>,
    /// With --exec: leave once the commands are done.
    #[arg(long, requires = "exec")]
    pub exit: bool,
    /// Plain line-by-line input and output even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Transfer files unencrypted and unauthenticated (zero-copy), for trusted networks
    /// only. Peers must use it too: encrypted and plaintext clients refuse each other.
    #[arg(long)]
    pub plaintext: bool,
    /// The server's key as its operator gave it (the fingerprint printed at its start,
    /// `xxxx:xxxx:…`): pins it for this server, first contact included, replacing a
    /// pin made before. Without it the key is pinned on first contact (known_servers
    /// in your config folder) and a server presenting another key later is refused.
    #[arg(long, value_name = "FINGERPRINT", value_parser = parse_server_pin)]
    pub server_key: Option<crate::channel::ServerPin>,
    /// Key file of your identity (created if missing; default: in your config folder).
    #[arg(long, value_name = "PATH")]
    pub identity: Option<PathBuf>,
    /// Retry interval for requests to the server, in milliseconds.
    #[arg(long, value_name = "MS", hide = true, default_value_t = defaults::retry_ms())]
    pub retry_ms: u64,
    /// Limit for connecting to a peer, for its answer and for any pause in the data, in
    /// milliseconds (default: the fetcher's own; tests shorten it).
    #[arg(long, value_name = "MS", hide = true)]
    pub peer_timeout_ms: Option<u64>,
    /// More log detail (written to the log file, never under the prompt).
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// What to run, validated.
#[derive(Debug)]
pub enum Mode {
    Server(ServerConfig),
    Relay(RelayConfig),
    Client(ClientConfig),
    Completions(String),
    ReleaseName {
        db: PathBuf,
        name: String,
    },
    Admin {
        metrics: std::net::SocketAddr,
        token: String,
        action: String,
        name: String,
    },
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub opts: ServerOpts,
}

/// `fileapp relay`: where to listen, and what the relay runs with.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub relay: crate::reach::relay::RelayConfig,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    /// The server the client starts with (the first of `servers`).
    pub server: SocketAddr,
    /// Every server of the deployment, in the order the client tries them; one for the
    /// seed form.
    pub servers: Vec<SocketAddr>,
    pub udp_port: u16,
    pub tcp_port: u16,
    pub opts: ClientOpts,
}

impl ClientConfig {
    pub fn retry_interval(&self) -> Duration {
        Duration::from_millis(self.opts.retry_ms)
    }
}

/// A user-facing argument error: the message is printed as is, exit code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

fn parse_server_pin(s: &str) -> Result<crate::channel::ServerPin, String> {
    crate::channel::ServerPin::parse(s).ok_or_else(|| {
        "expected the server's key fingerprint: 8 groups of 4 hex digits separated by ':' \
         (as the server prints it), or the whole key as 64 hex digits"
            .to_string()
    })
}

fn parse_key_hex(s: &str) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut key)
        .map_err(|_| "expected the server's public key as 64 hex digits".to_string())?;
    Ok(key)
}

/// MB/s (a decimal number > 0) to bytes per second.
fn parse_mbps(s: &str) -> Result<u64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * 1e6 >= 1.0 => {
            Ok((v * 1e6).min(u64::MAX as f64) as u64)
        }
        _ => Err("expected a rate in MB/s greater than 0, e.g. 12.5".to_string()),
    }
}

fn seed_port(s: &str, what: &str) -> Result<u16, UsageError> {
    match s.parse::<u32>() {
        Ok(p) if (1024..=65535).contains(&p) => Ok(p as u16),
        _ => Err(UsageError(format!("[Invalid {what}]"))),
    }
}

/// Resolves a server address given as an IP (v4 or v6) or a host name.
pub fn resolve_server(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    (host, port).to_socket_addrs().ok()?.next()
}

/// `--server`'s list: `host:port` items separated by commas, each host an IP or a name
/// (every address a name resolves to counts). Only the first address's family is kept
/// (the client has one socket); duplicates are dropped. `None` if an item does not
/// resolve, or has no address of that family (it would silently not be a server).
pub fn resolve_servers(list: &str) -> Option<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (host, port) = split_host_port(item)?;
        let addrs: Vec<SocketAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host, port).to_socket_addrs().ok()?.collect(),
        };
        let family = |a: &SocketAddr| out.first().is_none_or(|f| f.is_ipv4() == a.is_ipv4());
        if !addrs.iter().any(family) {
            return None;
        }
        for a in addrs {
            if !out.contains(&a) && out.first().is_none_or(|f| f.is_ipv4() == a.is_ipv4()) {
                out.push(a);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

impl Cli {
    /// Turns parsed arguments into a [`Mode`], checking what clap cannot.
    pub fn mode(self) -> Result<Mode, UsageError> {
        if let Some(port) = self.server_port {
            let port = seed_port(&port, "server port")?;
            return Ok(Mode::Server(ServerConfig {
                bind: self.server_opts.bind,
                port,
                opts: self.server_opts,
            }));
        }
        if let Some(args) = self.client {
            let [name, ip, sport, uport, tport] =
                <[String; 5]>::try_from(args).map_err(|_| UsageError(usage_line()))?;
            let sport = seed_port(&sport, "server port")?;
            let server = resolve_server(&ip, sport)
                .ok_or_else(|| UsageError("[Invalid server IP address]".into()))?;
            let udp_port = seed_port(&uport, "client UDP port")?;
            let tcp_port = seed_port(&tport, "client TCP port")?;
            check_name(&name)?;
            return Ok(Mode::Client(ClientConfig {
                name,
                server,
                servers: vec![server],
                udp_port,
                tcp_port,
                opts: self.client_opts,
            }));
        }
        match self.command {
            Some(Sub::Server { port, opts }) => Ok(Mode::Server(ServerConfig {
                bind: opts.bind,
                port,
                opts,
            })),
            Some(Sub::Client {
                name,
                server,
                udp_port,
                tcp_port,
                opts,
            }) => {
                let servers = resolve_servers(&server)
                    .ok_or_else(|| UsageError("[Invalid server IP address]".into()))?;
                check_name(&name)?;
                Ok(Mode::Client(ClientConfig {
                    name,
                    server: servers[0],
                    servers,
                    udp_port,
                    tcp_port,
                    opts,
                }))
            }
            Some(Sub::Relay {
                port,
                server_key,
                bind,
                max_sessions,
                rate,
                total_rate,
                pair_timeout_ms,
            }) => Ok(Mode::Relay(RelayConfig {
                bind,
                port,
                relay: crate::reach::relay::RelayConfig {
                    max_sessions: max_sessions.max(1),
                    session_rate: rate,
                    total_rate,
                    pair_timeout: Duration::from_millis(pair_timeout_ms),
                    ..crate::reach::relay::RelayConfig::new(server_key)
                },
            })),
            Some(Sub::Completions { shell }) => Ok(Mode::Completions(shell)),
            Some(Sub::ReleaseName { db, name }) => Ok(Mode::ReleaseName { db, name }),
            Some(Sub::Admin {
                metrics,
                token,
                action,
                name,
            }) => Ok(Mode::Admin {
                metrics,
                token,
                action,
                name,
            }),
            None => Err(UsageError(usage_line())),
        }
    }
}

fn check_name(name: &str) -> Result<(), UsageError> {
    if crate::proto::valid_client_name(name) {
        Ok(())
    } else {
        Err(UsageError(format!(
            "[Invalid client name: 1-{} characters, no spaces]",
            crate::proto::MAX_NAME_LEN
        )))
    }
}

/// The one-line usage shown for a wrong argument count.
pub fn usage_line() -> String {
    "Usage: fileapp -s <server-port> | fileapp -c <name> <server-ip> <server-port> <udp-port> <tcp-port>  (fileapp --help for more)".into()
}

/// The clap command, for completions.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests;
