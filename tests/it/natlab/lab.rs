//! The lab's topology: namespaces, veth pairs, a bridge, routers with nftables NAT.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys::{del_netns, in_netns, ip_batch, netns_names, nft, sysctls};
use crate::util::{NetnsServer, cannot_run, tool_available};

/// How a home router maps its hosts' outgoing flows to its public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Endpoint-independent mapping: nft `masquerade`. Linux keeps the source port when
    /// it is free, so one socket shows one public port to every destination (what hole
    /// punching needs).
    Cone,
    /// Endpoint-dependent mapping: nft `masquerade fully-random`. Each destination sees
    /// its own random public port for the same socket (not punchable).
    Symmetric,
}

/// A host of the lab: a network namespace with one address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace its processes and sockets run in.
    pub ns: String,
    /// Its own address (in a home: on the home's LAN).
    pub ip: IpAddr,
    /// The address the public net sees its flows come from: its own on the public net,
    /// its router's WAN address in a home.
    pub public_ip: IpAddr,
    /// The NAT in front of it (`None` on the public net).
    pub nat: Option<Nat>,
    /// Its home router's namespace (`None` on the public net).
    #[allow(dead_code)] // for tests that look at the router (its rules, conntrack)
    pub router: Option<String>,
}

impl Host {
    /// Runs `f` in this host's namespace (see [`super::in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.ns, f)
    }
}

/// The public net: 203.0.113.0/24 on a bridge. The server host is .1, public hosts
/// from .10, home routers' WAN sides from .101.
const PUBLIC_PREFIX: u8 = 24;
fn public(last: u8) -> IpAddr {
    Ipv4Addr::new(203, 0, 113, last).into()
}
const SERVER: u8 = 1;
const FIRST_PUBLIC_HOST: u8 = 10;
const MAX_PUBLIC_HOSTS: u8 = 80;
const FIRST_WAN: u8 = 101;

/// The homes' LANs (network, prefix length), documentation ranges only; the router is
/// the network's first address, the host the second.
const LANS: [([u8; 4], u8); 6] = [
    ([192, 0, 2, 0], 24),
    ([198, 51, 100, 0], 24),
    ([192, 0, 2, 128], 25),
    ([198, 51, 100, 128], 25),
    ([192, 0, 2, 64], 26),
    ([198, 51, 100, 64], 26),
];

/// Every lab's namespaces start with `fl<pid in hex>-<counter>-`.
const TAG: &str = "fl";
static LABS: AtomicU32 = AtomicU32::new(0);

/// A lab: the public net with the server's host, and whatever hosts and homes a test
/// adds. Dropping it deletes every namespace it made (also while a test panics; the
/// processes still inside end with their `Proc`s, dropped before the lab).
pub struct Lab {
    prefix: String,
    /// Namespaces made so far, deleted on drop.
    made: Vec<String>,
    /// The bridge's namespace.
    public_ns: String,
    server: Host,
    public_hosts: u8,
    homes: usize,
}

impl Lab {
    /// The public net and the server's host, or `None` (after saying why) when the lab
    /// cannot be built here: not root, or `ip` or `nft` missing. Under `CI=true` those
    /// fail the test instead.
    pub fn new(test: &str) -> Option<Lab> {
        if !is_root() {
            cannot_run(test, "not running as root", "run the tests as root");
            return None;
        }
        if !tool_available("ip", test) || !tool_available("nft", test) {
            return None;
        }
        let prefix = format!(
            "{TAG}{:x}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        remove_stale(&prefix);
        let public_ns = format!("{prefix}-p");
        let server_ns = format!("{prefix}-s");
        let mut lab = Lab {
            made: Vec::new(),
            server: Host {
                ns: server_ns.clone(),
                ip: public(SERVER),
                public_ip: public(SERVER),
                nat: None,
                router: None,
            },
            public_ns: public_ns.clone(),
            prefix,
            public_hosts: 0,
            homes: 0,
        };
        lab.add_netns(&[&public_ns, &server_ns]);
        ip_batch(
            Some(&public_ns),
            &["link add br0 type bridge".into(), "link set br0 up".into()],
        );
        lab.attach(&server_ns, "s0", public(SERVER));
        Some(lab)
    }

    /// The host the index server runs on (203.0.113.1).
    pub fn server_host(&self) -> &Host {
        &self.server
    }

    #[allow(dead_code)] // part of the API; today's tests start the server with start_server
    pub fn server_ip(&self) -> IpAddr {
        self.server.ip
    }

    /// Starts `fileapp server` on the server host, bound to its address.
    pub fn start_server(&self, extra: &[&str]) -> NetnsServer {
        NetnsServer::start(&self.server.ns, self.server.ip, extra)
    }

    /// A new host on the public net (203.0.113.10, .11, ...): reachable by everyone.
    pub fn public_host(&mut self) -> Host {
        assert!(
            self.public_hosts < MAX_PUBLIC_HOSTS,
            "too many public hosts"
        );
        let n = self.public_hosts;
        self.public_hosts += 1;
        let ns = format!("{}-q{n}", self.prefix);
        let ip = public(FIRST_PUBLIC_HOST + n);
        self.add_netns(&[&ns]);
        self.attach(&ns, &format!("q{n}"), ip);
        Host {
            ns,
            ip,
            public_ip: ip,
            nat: None,
            router: None,
        }
    }

    /// A new home: a router (WAN 203.0.113.101, .102, ...; NAT of kind `nat`; no port
    /// forwarding; only replies come in) and one host behind it on the next LAN of
    /// [`LANS`] (192.0.2.2, then 198.51.100.2, ...), its default route via the router.
    pub fn home(&mut self, nat: Nat) -> Host {
        let k = self.homes;
        let (net, len) = *LANS.get(k).expect("at most 6 homes per lab");
        self.homes += 1;
        let router = format!("{}-r{k}", self.prefix);
        let ns = format!("{}-h{k}", self.prefix);
        let wan = public(FIRST_WAN + k as u8);
        let at = |last: u8| IpAddr::from([net[0], net[1], net[2], net[3] + last]);
        let (gateway, ip) = (at(1), at(2));
        self.add_netns(&[&router, &ns]);
        sysctls(&router, &[("net/ipv4/ip_forward", "1")]);
        ip_batch(
            Some(&self.public_ns),
            &[
                format!("link add w{k} type veth peer name wan netns {router}"),
                format!("link set w{k} master br0 up"),
            ],
        );
        ip_batch(
            Some(&router),
            &[
                format!("link add lan type veth peer name e0 netns {ns}"),
                format!("addr add {wan}/{PUBLIC_PREFIX} dev wan"),
                format!("addr add {gateway}/{len} dev lan"),
                "link set wan up".into(),
                "link set lan up".into(),
                "link set lo up".into(),
            ],
        );
        nft(&router, &ruleset(nat));
        ip_batch(
            Some(&ns),
            &[
                format!("addr add {ip}/{len} dev e0"),
                "link set e0 up".into(),
                "link set lo up".into(),
                format!("route add default via {gateway}"),
            ],
        );
        Host {
            ns,
            ip,
            public_ip: wan,
            nat: Some(nat),
            router: Some(router),
        }
    }

    /// Creates namespaces `names` (IPv6 off: no link-local addresses, nothing outside
    /// the documentation ranges), recorded for drop first.
    fn add_netns(&mut self, names: &[&str]) {
        self.made.extend(names.iter().map(|n| n.to_string()));
        let lines: Vec<String> = names.iter().map(|n| format!("netns add {n}")).collect();
        ip_batch(None, &lines);
        for n in names {
            sysctls(
                n,
                &[
                    ("net/ipv6/conf/all/disable_ipv6", "1"),
                    ("net/ipv6/conf/default/disable_ipv6", "1"),
                ],
            );
        }
    }

    /// Plugs `ns` into the public bridge (port `port`) with address `ip`.
    fn attach(&self, ns: &str, port: &str, ip: IpAddr) {
        ip_batch(
            Some(&self.public_ns),
            &[
                format!("link add {port} type veth peer name e0 netns {ns}"),
                format!("link set {port} master br0 up"),
            ],
        );
        ip_batch(
            Some(ns),
            &[
                format!("addr add {ip}/{PUBLIC_PREFIX} dev e0"),
                "link set e0 up".into(),
                "link set lo up".into(),
            ],
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        del_netns(&self.made);
    }
}

/// A home router's rules: NAT out of `wan`; in from `wan` only what belongs to a flow
/// that went out (conntrack), everything else dropped unanswered, as a home router does.
fn ruleset(nat: Nat) -> String {
    let masquerade = match nat {
        Nat::Cone => "masquerade",
        Nat::Symmetric => "masquerade fully-random",
    };
    format!(
        r#"
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {masquerade}
    }}
}}
table inet filter {{
    chain input {{
        type filter hook input priority filter; policy drop;
        iifname {{ "lo", "lan" }} accept
        ct state established,related accept
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        iifname "lan" oifname "wan" accept
        iifname "wan" oifname "lan" ct state established,related accept
    }}
}}
"#
    )
}

/// Root owns `/proc/self` (it belongs to the process's effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Deletes namespaces left by a lab whose process died before dropping it (killed
/// test runs), and any with our own prefix (a reused pid): names `fl<hex pid>-<n>-…`
/// whose pid is gone. Other namespaces are never touched.
fn remove_stale(ours: &str) {
    let stale: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{ours}-")) || lab_pid(n).is_some_and(|p| !pid_alive(p)))
        .collect();
    del_netns(&stale);
}

/// The pid in a lab namespace's name, if it is one.
fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TAG)?;
    let mut parts = rest.splitn(3, '-');
    let pid = u32::from_str_radix(parts.next()?, 16).ok()?;
    parts.next()?.parse::<u32>().ok()?;
    parts.next()?;
    Some(pid)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
