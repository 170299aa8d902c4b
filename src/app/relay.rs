//! `fileapp relay`, and the relay `fileapp server` runs beside its index: bind, print the
//! start-up line, run `reach::relay::run` until a signal.

use std::net::IpAddr;

use tokio::sync::watch;

use crate::cli::{RelayConfig, exit};
use crate::reach::relay;

/// Runs a relay until SIGINT, SIGTERM or SIGHUP.
pub fn run_relay(cfg: RelayConfig) -> i32 {
    super::init_server_logging();
    let std_listener = match relay::bind(cfg.bind, cfg.port) {
        Ok(l) => l,
        Err(e) => {
            println!("{}", bind_failure(cfg.port, &e));
            return exit::FAILURE;
        }
    };
    // Two workers: the two directions of busy sessions run on both cores.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                println!("[Cannot start the relay: {e}]");
                return exit::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(a) => println!("Relay listening on {a}"),
            Err(e) => {
                println!("[Cannot start the relay: {e}]");
                return exit::FAILURE;
            }
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            super::shutdown_signal().await;
            let _ = tx.send(true);
        });
        relay::run(listener, cfg.relay, rx).await;
        exit::OK
    })
}

fn bind_failure(port: u16, e: &std::io::Error) -> String {
    format!("[Cannot use relay port {port}: {}]", bind_reason(e))
}

fn bind_reason(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        "it is already in use".into()
    } else {
        e.to_string()
    }
}

/// The server's relay listener, on the TCP port of the number of its UDP `socket`'s. With
/// `port` 0 (any free port) a UDP port whose TCP twin is taken is given up for another
/// (`socket` is replaced).
pub(super) fn bind_beside(
    socket: &mut std::net::UdpSocket,
    bind: Option<IpAddr>,
    port: u16,
) -> Result<std::net::TcpListener, String> {
    let mut tries = 0;
    loop {
        let udp_port = socket.local_addr().map_err(|e| e.to_string())?.port();
        match relay::bind(bind, udp_port) {
            Ok(l) => return Ok(l),
            Err(e) if port == 0 && tries < 20 => {
                tracing::debug!("TCP port {udp_port} is taken ({e}); trying another UDP port");
                tries += 1;
                *socket = crate::server::bind(bind, 0).map_err(|e| e.to_string())?;
            }
            Err(e) => {
                return Err(format!(
                    "[Cannot use relay port {udp_port}: {} (--no-relay runs the server \
                     without the relay)]",
                    bind_reason(&e)
                ));
            }
        }
    }
}

/// Runs the server's relay on a thread of its own (the index keeps its thread to
/// itself) until `shutdown` turns true or its sender is dropped.
pub(super) fn spawn_beside(
    listener: std::net::TcpListener,
    cfg: relay::RelayConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => relay::run(l, cfg, shutdown).await,
                    Err(e) => tracing::warn!("the relay cannot start: {e}"),
                }
            })
        })?;
    Ok(())
}
