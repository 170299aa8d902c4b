//! The server and its clients inside network namespaces (the NAT lab's hosts): the
//! same helpers as [`Server`]'s, each process started with `ip netns exec <ns>`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::{Proc, Server, client_args, offering, registered, spawn_server_in};

/// A server inside a network namespace, bound to one of its addresses (see
/// `natlab`), and the clients it serves, each in a namespace of its own choosing.
pub struct NetnsServer {
    pub srv: Server,
    #[allow(dead_code)] // the namespace it runs in, for tests that need it
    pub ns: String,
    pub ip: IpAddr,
}

impl NetnsServer {
    /// `fileapp server --bind <ip> --port 0` in `ns`, with its database in a new
    /// temporary folder.
    pub fn start(ns: &str, ip: IpAddr, extra: &[&str]) -> NetnsServer {
        let dir = tempfile::tempdir().unwrap();
        let (proc, port) = spawn_server_in(Some(ns), &ip.to_string(), dir.path(), 0, extra);
        NetnsServer {
            srv: Server { proc, port, dir },
            ns: ns.to_string(),
            ip,
        }
    }

    /// What clients are given as `--server`.
    pub fn addr(&self) -> String {
        SocketAddr::new(self.ip, self.srv.port).to_string()
    }

    /// [`Server::client`] run in the namespace `ns`.
    pub fn client_in(&self, ns: &str, name: &str, cwd: &Path) -> Proc {
        registered(self.client_raw_in(ns, name, cwd, &[]))
    }

    /// [`Server::sharing`] run in the namespace `ns`.
    pub fn sharing_in(&self, ns: &str, name: &str, cwd: &Path, files: &[(&str, &[u8])]) -> Proc {
        offering(cwd, files, |cwd| self.client_in(ns, name, cwd))
    }

    /// [`Server::client_raw`] run in the namespace `ns`.
    pub fn client_raw_in(&self, ns: &str, name: &str, cwd: &Path, extra: &[&str]) -> Proc {
        let addr = self.addr();
        Proc::spawn_in(ns, name, &client_args(name, &addr, extra), cwd)
    }
}
