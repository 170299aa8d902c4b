//! The command flow under a fake clock, against the real index state machine as the
//! server: every datagram the flow sends goes to an [`Index`], every reply comes back,
//! and time moves only when a test says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::channel::ServerPin;
use crate::client::link::ClientLink;
use crate::client::table::Trust;
use crate::client::{core, render};
use crate::index::{self, Index, SecureIndex};
use crate::proto::FileEntry;
use crate::proto::Message;
use crate::reliable::RetryPolicy;

/// One client of the simulated network.
struct Client {
    addr: SocketAddr,
    flow: Flow,
    /// Every action except `Send`, in order.
    log: Vec<Action>,
    /// Every datagram it sent.
    /// The control messages the server opened from this client, in order.
    sent: Vec<Vec<u8>>,
}

/// Which server-to-client datagrams are lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drop {
    Nothing,
    /// The server is down: nothing in, nothing out.
    All,
    /// Table pushes never arrive (read-your-writes cannot complete).
    Tables,
}

struct Net {
    now: Instant,
    index: SecureIndex,
    clients: Vec<Client>,
    drop: Drop,
    /// This client's datagrams wait in `held` instead of reaching the server.
    hold: Option<usize>,
    held: Vec<Vec<u8>>,
}

/// In a test's `Config::key`: "the client's own key" (see `Net::client`).
const OWN_KEY: [u8; 32] = [0xaa; 32];

fn config() -> Config {
    Config {
        fingerprint: "fp:1234".into(),
        download_dir: PathBuf::from("/downloads"),
        exec: Vec::new(),
        exit_when_done: false,
        restore: None,
        sync_wait: READ_YOUR_WRITES_WAIT,
        server: "192.0.2.1:12000".into(),
        server_pin_given: false,
        key: None,
    }
}

fn entry(name: &str) -> FileEntry {
    FileEntry {
        name: name.into(),
        size: 3,
        hash: [9; 32],
        files: 0,
    }
}

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        Net {
            now,
            index: SecureIndex::new(
                Index::new(index::Config::default(), Vec::new(), now, [7; 32]),
                [3; 32],
                [4; 32],
                now,
                Default::default(),
            ),
            clients: Vec::new(),
            drop: Drop::Nothing,
            hold: None,
            held: Vec::new(),
        }
    }

    /// Adds and starts client `name`; returns its number. A `cfg.key` of [`OWN_KEY`]
    /// becomes the client's real key.
    fn client(&mut self, name: &str, mut cfg: Config) -> usize {
        let i = self.clients.len();
        let identity = std::sync::Arc::new(crate::identity::Identity::generate().unwrap());
        if cfg.key == Some(OWN_KEY) {
            cfg.key = Some(identity.public_key());
        }
        let core = ClientCore::new(
            core::Config {
                name: name.into(),
                tcp_port: 1401 + i as u16,
                retry: RetryPolicy::default(),
                heartbeat: index::Config::default().heartbeat,
                advertise: None,
                identity: Some(identity),
                evict: false,
            },
            i as u64 + 1,
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], 1301 + i as u16));
        self.clients.push(Client {
            addr,
            flow: Flow::new(
                core,
                ClientLink::new(
                    Some(ServerPin::Key(self.index.public_key())),
                    [i as u8; 32],
                    RetryPolicy::default().interval,
                ),
                cfg,
            ),
            log: Vec::new(),
            sent: Vec::new(),
        });
        self.clients[i].flow.start(self.now);
        self.pump();
        i
    }

    /// Moves datagrams both ways until nothing moves.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for (i, c) in self.clients.iter_mut().enumerate() {
                while let Some(a) = c.flow.poll_action() {
                    match a {
                        Action::Send(d) if self.hold == Some(i) => self.held.push(d),
                        // The NAT test reaches the probe port from the client's address.
                        Action::SendProbe(p) => self.index.handle_probe_port(self.now, c.addr, &p),
                        Action::Send(d) => {
                            moved = true;
                            if self.drop != Drop::All
                                && let Some(m) =
                                    self.index.handle_datagram_opened(self.now, c.addr, &d)
                            {
                                c.sent.push(m);
                            }
                        }
                        other => c.log.push(other),
                    }
                }
            }
            if self.index.poll_timeout().is_some_and(|t| t <= self.now) {
                self.index.handle_timeout(self.now);
            }
            let _ = self.index.index_mut().take_store_ops();
            while let Some((dst, bytes, plain)) = self.index.poll_transmit_plain() {
                let table =
                    plain.is_some_and(|p| matches!(Message::decode(&p), Ok(Message::Table { .. })));
                if self.drop == Drop::All || (self.drop == Drop::Tables && table) {
                    continue;
                }
                if let Some(c) = self.clients.iter_mut().find(|c| c.addr == dst) {
                    c.flow.handle_datagram(self.now, &bytes);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    /// Delivers the first `n` held datagrams (all when `n` is larger), in order.
    fn release(&mut self, n: usize) {
        let i = self.hold.expect("nobody is held");
        let n = n.min(self.held.len());
        for d in self.held.drain(..n).collect::<Vec<_>>() {
            let addr = self.clients[i].addr;
            if let Some(m) = self.index.handle_datagram_opened(self.now, addr, &d) {
                self.clients[i].sent.push(m);
            }
        }
        self.pump();
    }

    /// Lets `d` pass, waking each machine at its deadlines.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            let next = (self.clients.iter().map(|c| c.flow.poll_timeout()))
                .chain([self.index.poll_timeout()])
                .flatten()
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            for c in &mut self.clients {
                if c.flow.poll_timeout().is_some_and(|t| t <= self.now) {
                    c.flow.handle_timeout(self.now);
                }
            }
            if self.index.poll_timeout().is_some_and(|t| t <= self.now) {
                self.index.handle_timeout(self.now);
            }
            self.pump();
        }
        self.now = end;
        self.pump();
    }

    fn line(&mut self, i: usize, line: &str) {
        assert!(self.clients[i].flow.reading(), "input read while busy");
        self.clients[i].flow.handle_line(self.now, line);
        self.pump();
    }

    fn flow(&mut self, i: usize) -> &mut Flow {
        &mut self.clients[i].flow
    }

    /// Takes client `i`'s actions so far.
    fn take(&mut self, i: usize) -> Vec<Action> {
        std::mem::take(&mut self.clients[i].log)
    }

    /// Takes client `i`'s printed lines so far (other actions are dropped).
    fn said(&mut self, i: usize) -> Vec<String> {
        said(self.take(i))
    }

    /// Client `i` sets a folder and offers `files` there, hashing succeeding.
    fn share(&mut self, i: usize, files: &[&str]) {
        self.line(i, "setdir /share");
        let now = self.now;
        self.flow(i)
            .dir_checked(now, "/share", Some("/share".into()));
        self.pump();
        self.line(i, &format!("offer {}", files.join(" ")));
        let ok = files.iter().map(|f| entry(f)).collect();
        let now = self.now;
        self.flow(i).offer_checked(
            now,
            OfferChecked {
                ok,
                send: true,
                restoring: false,
            },
        );
        self.pump();
        self.advance(Duration::from_millis(50));
    }
}

fn said(actions: Vec<Action>) -> Vec<String> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Say(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn keeps_offers(datagram: &[u8]) -> bool {
    match Message::decode(datagram) {
        Ok(Message::Register { keep_offers, .. }) => keep_offers,
        other => panic!("not a registration: {other:?}"),
    }
}

/// The last action that is not a table update (the owners' signed records arrive in a
/// push of their own, after the registration's).
fn last_act(actions: &[Action]) -> Option<&Action> {
    actions.iter().rev().find(|a| {
        !matches!(a, Action::TableChanged)
            && !matches!(a, Action::Say(l) if l == msg::TABLE_UPDATED)
    })
}

fn prompts(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Prompt))
        .count()
}

#[test]
fn registration_welcomes_serves_and_prompts_once_the_table_is_ours() {
    let mut net = Net::new();
    let b = net.client("B", config());
    assert!(
        !keeps_offers(&net.clients[b].sent[0]),
        "a fresh start drops old offers"
    );
    net.advance(Duration::from_millis(50));
    let log = net.take(b);
    assert!(matches!(log[0], Action::Say(ref l) if l == msg::WELCOME));
    assert!(matches!(log[1], Action::StartServing));
    assert_eq!(prompts(&log), 1);
    assert!(net.flow(b).reading());
}

#[test]
fn input_is_not_read_while_a_command_runs_and_exec_waits_its_turn() {
    let mut net = Net::new();
    let cfg = Config {
        exec: vec!["setdir /share".into(), "offer a".into(), "whoami".into()],
        ..config()
    };
    let b = net.client("B", cfg);
    net.advance(Duration::from_millis(50));
    let log = net.take(b);
    // Registered, then the first exec line; the second waits for the folder check.
    assert!(matches!(last_act(&log), Some(Action::CheckDir(d)) if d == "/share"));
    assert_eq!(prompts(&log), 0);
    assert!(!net.flow(b).reading());

    let now = net.now;
    net.flow(b)
        .dir_checked(now, "/share", Some("/share".into()));
    net.pump();
    let log = net.take(b);
    assert!(matches!(&log[0], Action::SetLibraryDir(d) if d == &PathBuf::from("/share")));
    assert!(matches!(log[1], Action::SaveJournal));
    let lines = said(log);
    assert_eq!(
        lines[..2],
        [
            msg::setdir_ok(std::path::Path::new("/share")),
            ">>> offer a".to_string()
        ]
    );
    assert!(!net.flow(b).reading(), "hashing");
    net.flow(b).offer_checked(
        now,
        OfferChecked {
            ok: vec![entry("a")],
            send: true,
            restoring: false,
        },
    );
    net.pump();
    net.advance(Duration::from_millis(50));
    let lines = net.said(b);
    assert_eq!(lines[0], msg::OFFER_RECEIVED);
    assert!(lines.contains(&msg::TABLE_UPDATED.to_string()));
    assert_eq!(lines[lines.len() - 2], ">>> whoami");
    assert_eq!(
        lines[lines.len() - 1],
        ">>> [You are B (online), key fingerprint fp:1234]"
    );
}

#[test]
fn offer_waits_for_its_own_write_up_to_the_limit_then_goes_on() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.advance(Duration::from_millis(50));
    net.take(b);
    net.drop = Drop::Tables;
    net.line(b, "setdir /share");
    let now = net.now;
    net.flow(b)
        .dir_checked(now, "/share", Some("/share".into()));
    net.line(b, "offer a");
    net.flow(b).offer_checked(
        now,
        OfferChecked {
            ok: vec![entry("a")],
            send: true,
            restoring: false,
        },
    );
    net.pump();
    let acked = net.now;
    assert!(net.said(b).contains(&msg::OFFER_RECEIVED.to_string()));
    assert!(!net.flow(b).reading(), "waits for its table");
    assert_eq!(
        net.flow(b).poll_timeout(),
        Some(acked + READ_YOUR_WRITES_WAIT)
    );

    net.advance(READ_YOUR_WRITES_WAIT - Duration::from_millis(1));
    assert!(!net.flow(b).reading());
    assert_eq!(prompts(&net.take(b)), 0);
    net.advance(Duration::from_millis(1));
    assert!(net.flow(b).reading(), "gave up waiting");
    assert_eq!(prompts(&net.take(b)), 1);
}

#[test]
fn offer_goes_on_as_soon_as_the_table_shows_it() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.advance(Duration::from_millis(50));
    let start = net.now;
    net.share(b, &["a"]);
    assert!(net.flow(b).reading());
    assert!(net.now - start < READ_YOUR_WRITES_WAIT);
    net.line(b, "list");
    let lines = net.said(b);
    assert_eq!(
        lines[lines.len() - 2],
        "FILENAME  OWNER  IP ADDRESS  TCP PORT"
    );
    assert_eq!(lines[lines.len() - 1], "a         B      127.0.0.1   1401");
}

#[test]
fn restore_after_a_crash_reoffers_once_and_quietly() {
    let mut net = Net::new();
    let cfg = Config {
        restore: Some(Restore {
            dir: "/share".into(),
            offers: vec!["a".into(), "b".into(), "a".into()],
        }),
        ..config()
    };
    let b = net.client("B", cfg);
    assert!(keeps_offers(&net.clients[b].sent[0]), "registers resuming");
    let log = net.take(b);
    assert!(
        matches!(&log[..], [Action::Say(l), Action::StartServing, Action::CheckRestore(d), ..]
            if l == msg::WELCOME && d == &PathBuf::from("/share")),
        "{log:?}"
    );
    assert!(!net.flow(b).reading(), "no command before the restore");
    let now = net.now;
    net.flow(b).restore_checked(now, true);
    net.pump();
    let log = net.take(b);
    assert!(
        matches!(&log[..], [Action::SetLibraryDir(_),
            Action::CheckOffer { files, restoring: true, .. }]
            if files == &["a", "b"]),
        "{log:?}"
    );
    assert!(!net.flow(b).reading(), "no command before the restore");
    net.flow(b).offer_checked(
        now,
        OfferChecked {
            ok: vec![entry("a"), entry("b")],
            send: true,
            restoring: true,
        },
    );
    net.pump();
    net.advance(Duration::from_millis(50));
    let log = net.take(b);
    assert!(matches!(log[0], Action::SaveJournal));
    let lines = said(log);
    assert_eq!(
        lines[0],
        ">>> [Restored 2 offer(s) of your previous session from /share.]"
    );
    assert!(!lines.contains(&msg::OFFER_RECEIVED.to_string()));
    assert!(net.flow(b).reading());

    // Going offline and back does not restore again.
    net.line(b, "dereg");
    net.line(b, "reg");
    net.advance(Duration::from_millis(50));
    let log = net.take(b);
    assert!(!log.iter().any(|a| matches!(a, Action::CheckOffer { .. })));
    assert!(said(log).contains(&msg::WELCOME.to_string()));
}

#[test]
fn restore_whose_folder_is_gone_registers_resuming_and_offers_nothing() {
    let mut net = Net::new();
    let cfg = Config {
        restore: Some(Restore {
            dir: "/gone".into(),
            offers: vec!["a".into()],
        }),
        ..config()
    };
    let b = net.client("B", cfg);
    assert!(keeps_offers(&net.clients[b].sent[0]), "registers resuming");
    let now = net.now;
    net.flow(b).restore_checked(now, false);
    net.advance(Duration::from_millis(50));
    let log = net.take(b);
    assert!(!log.iter().any(|a| matches!(a, Action::CheckOffer { .. })));
    assert_eq!(prompts(&log), 1);
    assert!(net.flow(b).reading());
    // The next registration is not a restore.
    net.line(b, "dereg");
    net.line(b, "reg");
    net.advance(Duration::from_millis(50));
    assert!(
        !net.take(b)
            .iter()
            .any(|a| matches!(a, Action::CheckRestore(_)))
    );
}

#[test]
fn restore_that_finds_no_file_ends_without_a_datagram() {
    let mut net = Net::new();
    let cfg = Config {
        restore: Some(Restore {
            dir: "/share".into(),
            offers: vec!["a".into()],
        }),
        ..config()
    };
    let b = net.client("B", cfg);
    let now = net.now;
    net.flow(b).restore_checked(now, true);
    net.pump();
    net.take(b);
    net.flow(b).offer_checked(
        now,
        OfferChecked {
            ok: vec![],
            send: true,
            restoring: true,
        },
    );
    let log: Vec<_> = std::iter::from_fn(|| net.flow(b).poll_action()).collect();
    assert!(matches!(&log[..], [Action::Prompt]), "{log:?}");
}

#[test]
fn dereg_stops_serving_first_then_only_local_commands_and_reg() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.share(b, &["a"]);
    net.take(b);
    net.line(b, "dereg C");
    assert_eq!(
        net.said(b),
        [">>> [dereg failed: C is not you; you can only deregister yourself (B).]"]
    );
    net.clients[b].flow.handle_line(net.now, "dereg B");
    let first = net.flow(b).poll_action();
    assert!(matches!(first, Some(Action::StopServing)), "{first:?}");
    let Some(Action::Send(d)) = net.flow(b).poll_action() else {
        panic!("no dereg sent")
    };
    let (now, addr) = (net.now, net.clients[b].addr);
    net.index.handle_datagram(now, addr, &d);
    net.pump();
    let log = net.take(b);
    assert!(matches!(&log[0], Action::Say(l) if l == msg::OFFLINE_BYE));
    assert!(matches!(log[1], Action::TableChanged));
    for cmd in ["list", "offer a", "request a B", "dereg"] {
        net.line(b, cmd);
        assert_eq!(net.said(b), [msg::OFFLINE_REFUSED], "{cmd}");
    }
    net.line(b, "whoami");
    assert_eq!(
        net.said(b),
        [">>> [You are B (offline), key fingerprint fp:1234]"]
    );
    net.line(b, "reg");
    net.advance(Duration::from_millis(50));
    let lines = net.said(b);
    assert_eq!(lines[0], msg::WELCOME);
    net.line(b, "reg");
    assert_eq!(net.said(b), [msg::ALREADY_REGISTERED]);
}

/// B offers `a` and `b`; C (returned) sees them, its log taken.
fn b_shares_a_and_b_to_c() -> (Net, usize) {
    let mut net = Net::new();
    let b = net.client("B", config());
    let c = net.client("C", config());
    net.share(b, &["a", "b"]);
    net.advance(Duration::from_millis(50));
    net.take(c);
    (net, c)
}

#[test]
fn request_json_reports_each_download_as_one_json_line() {
    let (mut net, c) = b_shares_a_and_b_to_c();
    net.line(c, "request --json a B b B");
    let log = net.take(c);
    let Action::Download(orders) = &log[0] else {
        panic!("{log:?}")
    };
    assert!(orders.iter().all(|o| o.json && !o.force), "{orders:?}");
    let now = net.now;
    net.flow(c).download_done(
        now,
        DownloadDone {
            file: "a".into(),
            owner: "B".into(),
            connected: true,
            via: Some(Via::Punched),
            json: true,
            outcome: DownloadOutcome::Done {
                size: 10,
                hash: [1; 32],
                elapsed: Duration::from_millis(500),
                moved: 4,
            },
        },
    );
    net.flow(c).download_done(
        now,
        DownloadDone {
            file: "b".into(),
            owner: "B".into(),
            connected: false,
            via: None,
            json: true,
            outcome: DownloadOutcome::Failed("refused".into()),
        },
    );
    net.pump();
    // One line each, nothing else (no connection lines), then the prompt.
    let lines = net.said(c);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let a: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(a["file"], "a");
    assert_eq!(a["owner"], "B");
    assert_eq!(a["result"], "downloaded");
    assert_eq!(a["path"], "punched");
    assert_eq!(a["size"], 10);
    assert_eq!(a["moved"], 4);
    assert_eq!(a["bytes_per_second"], 8.0);
    assert_eq!(a["blake3"], hex::encode([1u8; 32]));
    let b: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(b["result"], "failed");
    assert_eq!(b["error"], "refused");
    assert!(b["path"].is_null());
    assert!(net.flow(c).reading());
}

#[test]
fn downloads_keep_input_closed_until_the_last_ends() {
    let (mut net, c) = b_shares_a_and_b_to_c();
    net.line(c, "request a B nope B b B");
    let log = net.take(c);
    assert!(matches!(&log[0], Action::Say(l) if l == msg::INVALID_REQUEST));
    let Action::Download(orders) = &log[1] else {
        panic!("{log:?}")
    };
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0].peer, SocketAddr::from(([127, 0, 0, 1], 1401)));
    assert_eq!(
        (orders[0].file.as_str(), orders[1].file.as_str()),
        ("a", "b")
    );
    assert!(net.flow(c).downloading() && !net.flow(c).reading());

    let now = net.now;
    net.flow(c).download_done(
        now,
        DownloadDone {
            file: "a".into(),
            owner: "B".into(),
            connected: true,
            via: None,
            json: false,
            outcome: DownloadOutcome::Failed("refused".into()),
        },
    );
    net.pump();
    assert_eq!(
        net.said(c),
        [
            "< Download of a from B failed: refused >",
            "< Connection with client B closed >"
        ]
    );
    assert!(net.flow(c).downloading());
    net.flow(c).download_done(
        now,
        DownloadDone {
            file: "b".into(),
            owner: "B".into(),
            connected: false,
            via: None,
            json: false,
            outcome: DownloadOutcome::AlreadyPresent { hash: [0; 32] },
        },
    );
    net.pump();
    let log = net.take(c);
    assert_eq!(prompts(&log), 1);
    assert_eq!(said(log)[1], "< b downloaded successfully! >");
    assert!(net.flow(c).reading());

    // Our own file, or one nobody offers, is no request.
    net.line(c, "request a C");
    assert_eq!(net.said(c), [msg::INVALID_REQUEST]);
}

#[test]
fn the_owner_dereg_while_a_download_runs_is_seen_by_the_requester() {
    let mut net = Net::new();
    let b = net.client("B", config());
    let c = net.client("C", config());
    net.share(b, &["a"]);
    net.line(c, "request a B");
    assert!(net.flow(c).downloading());
    net.take(c);
    net.line(b, "dereg");
    net.advance(Duration::from_millis(50));
    // The table update reaches C while its download runs; input stays closed.
    assert!(net.said(c).contains(&msg::TABLE_UPDATED.to_string()));
    assert!(net.flow(c).downloading() && !net.flow(c).reading());
    assert_eq!(net.flow(c).core().table().rows(), vec![]);
    // A signal during the download still leaves cleanly.
    net.flow(c).quit();
    assert!(matches!(
        net.flow(c).poll_action(),
        Some(Action::Leave { goodbye: Some(_) })
    ));
}

#[test]
fn quit_leaves_once_and_nothing_runs_after() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.advance(Duration::from_millis(50));
    net.take(b);
    net.line(b, "quit");
    let log = net.take(b);
    assert!(
        matches!(&log[..], [Action::Leave { goodbye: Some(_) }]),
        "{log:?}"
    );
    assert!(!net.flow(b).reading());
    let now = net.now;
    net.flow(b).handle_line(now, "whoami");
    net.flow(b).quit();
    net.pump();
    assert!(net.take(b).is_empty());
}

#[test]
fn exec_then_exit_leaves_when_the_commands_are_done() {
    let mut net = Net::new();
    let cfg = Config {
        exec: vec!["whoami".into(), "bogus".into()],
        exit_when_done: true,
        ..config()
    };
    let b = net.client("B", cfg);
    net.advance(Duration::from_millis(50));
    let log = net.take(b);
    assert!(matches!(last_act(&log), Some(Action::Leave { .. })));
    let lines: Vec<String> = said(log)
        .into_iter()
        .filter(|l| l != msg::TABLE_UPDATED)
        .collect();
    assert_eq!(
        lines[lines.len() - 3..],
        [
            ">>> [You are B (online), key fingerprint fp:1234]",
            ">>> bogus",
            ">>> Invalid operation."
        ]
    );
}

#[test]
fn first_registration_without_answer_fails_after_three_retries() {
    let mut net = Net::new();
    net.drop = Drop::All;
    let b = net.client("B", config());
    net.advance(Duration::from_millis(1900));
    assert!(net.take(b).iter().all(|a| !matches!(a, Action::Fail(_))));
    net.advance(Duration::from_millis(200));
    let log = net.take(b);
    assert!(matches!(
        log.last(),
        Some(Action::Fail(ClientError::ServerNotResponding))
    ));
    assert_eq!(said(log), [">>> [Server not responding]"]);
    assert!(!net.flow(b).reading());
}

#[test]
fn name_in_use_ends_the_first_registration() {
    let mut net = Net::new();
    net.client("B", config());
    let b2 = net.client("B", config());
    let log = net.take(b2);
    assert!(matches!(
        log.last(),
        Some(Action::Fail(ClientError::NameInUse))
    ));
    assert_eq!(
        said(log),
        [">>> [Registration rejected: Client username already in use.]"]
    );
}

#[test]
fn reg_without_answer_ends_the_command_not_the_client() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.line(b, "dereg");
    net.drop = Drop::All;
    net.line(b, "reg");
    net.advance(Duration::from_secs(3));
    let log = net.take(b);
    assert!(!log.iter().any(|a| matches!(a, Action::Fail(_))));
    assert!(said(log).contains(&">>> [Server not responding]".to_string()));
    assert!(net.flow(b).reading());
}

#[test]
fn dereg_without_answer_exits_with_two_lines() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.advance(Duration::from_millis(50));
    net.take(b);
    net.drop = Drop::All;
    net.line(b, "dereg");
    net.advance(Duration::from_secs(3));
    let log = net.take(b);
    assert!(matches!(
        log.last(),
        Some(Action::Fail(ClientError::ServerNotResponding))
    ));
    assert_eq!(said(log), [">>> [Server not responding]", ">>> [Exiting]"]);
}

#[test]
fn setdir_and_offer_without_a_folder() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.advance(Duration::from_millis(50));
    net.take(b);
    net.line(b, "offer a");
    assert_eq!(net.said(b), [msg::DIR_NOT_SET]);
    net.line(b, "setdir nowhere");
    let now = net.now;
    net.flow(b).dir_checked(now, "nowhere", None);
    let log: Vec<_> = std::iter::from_fn(|| net.flow(b).poll_action()).collect();
    assert!(
        matches!(&log[..], [Action::Say(l), Action::Prompt]
            if l == ">>> [setdir failed: nowhere does not exist.]"),
        "{log:?}"
    );
    // An offer of names none of which can be offered sends nothing.
    net.line(b, "setdir /share");
    net.flow(b)
        .dir_checked(now, "/share", Some("/share".into()));
    net.pump();
    net.take(b);
    net.line(b, "offer x");
    net.flow(b).offer_checked(
        now,
        OfferChecked {
            ok: vec![],
            send: false,
            restoring: false,
        },
    );
    let log: Vec<_> = std::iter::from_fn(|| net.flow(b).poll_action()).collect();
    assert!(matches!(&log[..], [Action::Prompt]), "{log:?}");
}

#[test]
fn reconnecting_refuses_only_offers() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.advance(Duration::from_millis(50));
    net.drop = Drop::All;
    // Heartbeats go unanswered until the core gives the server up.
    net.advance(Duration::from_secs(60));
    assert!(net.said(b).contains(&msg::SERVER_LOST.to_string()));
    net.line(b, "offer a");
    assert_eq!(net.said(b), [msg::NOT_CONNECTED]);
    net.line(b, "list");
    assert_eq!(net.said(b), [msg::NO_FILES]);
    net.drop = Drop::Nothing;
    net.advance(Duration::from_secs(60));
    let log = net.take(b);
    assert!(said(log).contains(&msg::SERVER_BACK.to_string()));
}

#[test]
fn help_lists_every_command() {
    let mut net = Net::new();
    let b = net.client("B", config());
    net.advance(Duration::from_millis(50));
    net.take(b);
    net.line(b, "help");
    assert_eq!(net.said(b), render::help_all());
    net.line(b, "help nope");
    assert_eq!(net.said(b), [">>> [No such command: nope]"]);
}

#[test]
fn a_table_that_binds_our_own_name_to_another_key_is_warned_about_once() {
    let mut net = Net::new();
    // B believes its key is another one than the table shows for B: as if someone
    // else had registered the name B.
    let b = net.client(
        "B",
        Config {
            key: Some([9; 32]),
            ..config()
        },
    );
    let ours = crate::identity::fingerprint(&[9; 32]);
    let warned = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("WARNING: the table binds YOUR name B") && l.contains(&ours))
            .count()
    };
    assert_eq!(warned(&net.said(b)), 1);
    // More table updates (another client comes): not said again.
    let c = net.client(
        "C",
        Config {
            key: Some(OWN_KEY),
            ..config()
        },
    );
    net.advance(Duration::from_millis(50));
    assert_eq!(warned(&net.said(b)), 0);
    // A client whose own key the table shows is not warned.
    assert!(!net.said(c).iter().any(|l| l.contains("WARNING")));
}

/// B offers `b` and its signed record of that change is held back: C's table shows `b`
/// with B's record unsigned. Returns (net, b, c).
fn unsigned_change() -> (Net, usize, usize) {
    let mut net = Net::new();
    let b = net.client("B", config());
    let c = net.client("C", config());
    net.share(b, &["a"]);
    net.hold = Some(b);
    net.line(b, "offer b");
    let now = net.now;
    net.flow(b).offer_checked(
        now,
        OfferChecked {
            ok: vec![entry("b")],
            send: true,
            restoring: false,
        },
    );
    net.pump();
    // The offer reaches the server; the record B signs on its ack is held.
    net.release(1);
    assert!(!net.held.is_empty(), "B signed no record after its offer");
    // Past the server's wait for a signature, the change is pushed unsigned.
    net.advance(index::Config::default().sign_wait * 2);
    let trust = net.flow(c).core().table().owner("B").map(|o| o.trust);
    assert_eq!(trust, Some(Trust::Unsigned));
    net.take(c);
    (net, b, c)
}

#[test]
fn a_request_waits_for_the_owners_signed_record_then_downloads() {
    let (mut net, _, c) = unsigned_change();
    net.line(c, "request b B");
    let log = net.take(c);
    assert!(
        !log.iter()
            .any(|a| matches!(a, Action::Download(_) | Action::Say(_))),
        "{log:?}"
    );
    assert!(!net.flow(c).reading(), "the request is still running");
    // Waking early changes nothing.
    net.advance(Duration::from_millis(10));
    assert!(!net.take(c).iter().any(|a| matches!(a, Action::Download(_))));
    // B's record arrives: the table verifies it and the download starts at once.
    let waited = net.now;
    net.release(usize::MAX);
    net.advance(index::Config::default().coalesce * 2);
    let log = net.take(c);
    let Some(Action::Download(orders)) = log.iter().find(|a| matches!(a, Action::Download(_)))
    else {
        panic!("{log:?}")
    };
    assert_eq!(orders[0].file, "b");
    assert!(net.now - waited < READ_YOUR_WRITES_WAIT);
    assert!(!said(log).iter().any(|l| l.contains("Not downloading")));
}

#[test]
fn a_request_whose_owner_never_signs_is_refused_after_the_wait() {
    let (mut net, _, c) = unsigned_change();
    let asked = net.now;
    net.line(c, "request b B a B");
    net.advance(READ_YOUR_WRITES_WAIT - Duration::from_millis(1));
    let early = said(net.take(c));
    assert!(
        !early.iter().any(|l| l.contains("Not downloading")),
        "{early:?}"
    );
    assert!(!net.flow(c).reading());
    net.advance(Duration::from_millis(1));
    assert_eq!(net.now - asked, READ_YOUR_WRITES_WAIT);
    let log = net.take(c);
    assert_eq!(prompts(&log), 1, "{log:?}");
    assert_eq!(
        said(log),
        [
            msg::owner_not_verified("B", false),
            msg::owner_not_verified("B", false)
        ]
    );
    assert!(net.flow(c).reading());
}

#[test]
fn a_dial_is_followed_only_for_a_known_requester_at_its_own_address() {
    use fileapp_core::reach::Via;
    let mut net = Net::new();
    let b = net.client("B", config());
    let c = net.client("C", config());
    net.share(b, &["a"]);
    net.advance(Duration::from_millis(300));
    net.take(b);
    net.take(c);
    let id = [1; 16];
    let now = net.now;
    assert!(net.flow(c).connect(now, "B", Via::Reverse, id));
    net.pump();
    let log = net.take(c);
    assert!(
        log.iter()
            .any(|a| matches!(a, Action::Met { id: i, result: Ok(_) } if *i == id)),
        "{log:?}"
    );
    let log = net.take(b);
    let Some(Action::Dial { from, meeting, .. }) =
        log.iter().find(|a| matches!(a, Action::Dial { .. }))
    else {
        panic!("{log:?}")
    };
    assert_eq!(from, "C");
    let theirs = SocketAddr::from(([127, 0, 0, 1], 1402));
    assert_eq!(meeting.addr, Some(theirs));
    // A dial that names another address, or a requester we do not know, is not
    // followed: the server cannot aim our connections elsewhere.
    let elsewhere = Meeting {
        id: [2; 16],
        via: Via::Reverse,
        addr: Some(SocketAddr::from(([192, 0, 2, 1], 80))),
        ticket: None,
        secret: None,
    };
    let unknown = Meeting {
        id: [3; 16],
        addr: Some(theirs),
        ..elsewhere.clone()
    };
    let now = net.now;
    net.flow(b).on_reach_event(
        now,
        core::Event::Dial {
            from: "C".into(),
            meeting: elsewhere,
        },
    );
    net.flow(b).on_reach_event(
        now,
        core::Event::Dial {
            from: "Z".into(),
            meeting: unknown,
        },
    );
    assert!(!net.take(b).iter().any(|a| matches!(a, Action::Dial { .. })));
    // A dial for a requester the table does not show yet waits for it, a while.
    net.advance(Duration::from_secs(3));
    assert!(!net.take(b).iter().any(|a| matches!(a, Action::Dial { .. })));
    let d = net.client("D", config());
    net.advance(Duration::from_millis(300));
    net.take(b);
    let now = net.now;
    let early = Meeting {
        id: [4; 16],
        via: Via::Relayed,
        addr: None,
        ticket: None,
        secret: None,
    };
    net.flow(b).on_reach_event(
        now,
        core::Event::Dial {
            from: "E".into(),
            meeting: early,
        },
    );
    let e = net.client("E", config());
    net.advance(Duration::from_millis(300));
    let log = net.take(b);
    assert!(
        log.iter()
            .any(|a| matches!(a, Action::Dial { from, .. } if from == "E")),
        "{log:?}"
    );
    let _ = (d, e);
}
