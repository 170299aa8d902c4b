//! The flow across a move, under a fake clock, against two encrypted servers (real
//! `SecureIndex`es): the driver is told to point its socket at the new server before
//! anything goes to it, the user hears one line, and a server of the list with another
//! key stops the client as a changed key does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::client::core::{self, ClientCore};
use crate::client::flow::{Action, Config, Flow, READ_YOUR_WRITES_WAIT};
use crate::client::link::ClientLink;
use crate::client::messages as msg;
use crate::index::{self, Index, SecureIndex};
use crate::reliable::RetryPolicy;

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1301);

fn server_addr(s: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 12000 + s as u16))
}

fn server(secret: u8, now: Instant) -> SecureIndex {
    let ix = Index::new(index::Config::default(), Vec::new(), now, [secret; 32]);
    SecureIndex::new(ix, [secret; 32], [4; 32], now, Default::default())
}

struct Net {
    now: Instant,
    servers: Vec<SecureIndex>,
    alive: Vec<bool>,
    /// Where the flow sends now (the driver's connected socket).
    current: usize,
    flow: Flow,
    /// Every action but `Send`, with the server `Send`s went to in between.
    log: Vec<String>,
}

impl Net {
    fn new(keys: [u8; 2]) -> Net {
        let now = Instant::now();
        let identity = std::sync::Arc::new(crate::identity::Identity::generate().unwrap());
        let mut core = ClientCore::new(
            core::Config {
                name: "A".into(),
                tcp_port: 1401,
                retry: RetryPolicy::default(),
                heartbeat: index::Config::default().heartbeat,
                advertise: None,
                identity: Some(identity),
                evict: true,
            },
            5,
        );
        core.set_servers(vec![server_addr(0), server_addr(1)]);
        // First contact: nothing pinned.
        let link = ClientLink::new(None, [1; 32], RetryPolicy::default().interval);
        let cfg = Config {
            fingerprint: "fp".into(),
            download_dir: PathBuf::from("/downloads"),
            exec: Vec::new(),
            exit_when_done: false,
            restore: None,
            sync_wait: READ_YOUR_WRITES_WAIT,
            server: server_addr(0).to_string(),
            server_pin_given: false,
            key: None,
        };
        let mut net = Net {
            now,
            servers: vec![server(keys[0], now), server(keys[1], now)],
            alive: vec![true, true],
            current: 0,
            flow: Flow::new(core, link, cfg),
            log: Vec::new(),
        };
        net.flow.start(now);
        net.pump();
        net
    }

    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(a) = self.flow.poll_action() {
                match a {
                    Action::Send(d) => {
                        moved = true;
                        self.log.push(format!("send to {}", self.current));
                        if self.alive[self.current] {
                            self.servers[self.current].handle_datagram(self.now, CLIENT, &d);
                        }
                    }
                    Action::UseServer(to) => {
                        self.current = (to.port() - 12000) as usize;
                        self.log.push(format!("use {}", self.current));
                    }
                    Action::Say(l) => self.log.push(l),
                    Action::Fail(e) => self.log.push(format!("fail: {e}")),
                    _ => {}
                }
            }
            for s in 0..2 {
                if self.servers[s]
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    self.servers[s].handle_timeout(self.now);
                }
                let _ = self.servers[s].index_mut().take_store_ops();
                while let Some((_, bytes)) = self.servers[s].poll_transmit() {
                    if self.alive[s] {
                        moved = true;
                        self.flow
                            .handle_datagram_from(self.now, server_addr(s), &bytes);
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.flow.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            self.flow.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
        self.pump();
    }

    fn said(&self, line: &str) -> usize {
        self.log.iter().filter(|l| *l == line).count()
    }
}

#[test]
fn the_driver_follows_the_move_before_anything_goes_to_the_new_server() {
    let mut net = Net::new([3, 3]);
    assert_eq!(net.said(msg::WELCOME), 1, "{:?}", net.log);
    assert!(net.log.iter().all(|l| l != "send to 1"));
    net.alive[0] = false;
    net.advance(index::Config::default().heartbeat + RetryPolicy::default().budget());
    let used = net.log.iter().position(|l| l == "use 1").expect("moved");
    let first_to_1 = net.log.iter().position(|l| l == "send to 1").unwrap();
    assert!(used < first_to_1, "{:?}", net.log);
    assert!(
        net.log[used..].iter().all(|l| l != "send to 0"),
        "nothing to the old server after the move: {:?}",
        net.log
    );
    let moved = msg::server_moved(server_addr(0), server_addr(1));
    assert_eq!(net.said(&moved), 1, "{:?}", net.log);
    assert_eq!(net.said(msg::SERVER_LOST), 0);
    assert_eq!(net.said(msg::SERVER_BACK), 0);
    assert!(
        net.servers[1]
            .index()
            .owner_files("A")
            .is_some_and(|(online, _)| online)
    );
    // Datagrams from the old server's address are not even handed to the channel; the
    // current server's are (this one is garbage: the channel drops and counts it).
    let dropped = net.flow.link().stats().dropped;
    let now = net.now;
    net.flow
        .handle_datagram_from(now, server_addr(0), &[0xFF; 40]);
    assert_eq!(net.flow.link().stats().dropped, dropped);
    net.flow
        .handle_datagram_from(now, server_addr(1), &[0xFF; 40]);
    assert_eq!(net.flow.link().stats().dropped, dropped + 1);
    // The old server comes back: nothing changes.
    net.alive[0] = true;
    net.advance(Duration::from_secs(30));
    assert_eq!(net.current, 1);
    assert_eq!(net.said(&moved), 1);
}

#[test]
fn a_server_of_the_list_with_another_key_stops_the_client() {
    let mut net = Net::new([3, 8]);
    net.alive[0] = false;
    net.advance(index::Config::default().heartbeat + RetryPolicy::default().budget());
    let fail = net.log.iter().find(|l| l.starts_with("fail: ")).cloned();
    let fail = fail.unwrap_or_else(|| panic!("no failure: {:?}", net.log));
    assert!(fail.contains(&server_addr(1).to_string()), "{fail}");
}
