//! The client's command flow as a sans-io state machine: what runs when, one user command
//! at a time.
//!
//! It owns the [`ClientCore`] and decides everything around it: which command may run in
//! which state, the busy state (input is not read while a command runs), the `--exec`
//! queue, the quiet re-offer after a crash, and read-your-writes (after the server applied
//! our change, the next command waits until our table shows it, up to
//! [`READ_YOUR_WRITES_WAIT`]). Commands, datagrams, results of the driver's work and
//! `now: Instant` go in; an ordered stream of [`Action`]s and a deadline
//! ([`Flow::poll_timeout`]) come out. No tokio, no sockets, no files, no clock reads: the
//! driver does what the actions say and reports back (`dir_checked`, `offer_checked`,
//! `download_done`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use crate::proto::Reject;

use super::core::{ClientCore, Event, OfferFailure, OpId};
use super::error::ClientError;
use super::link::{ClientLink, LinkEvent};
use super::messages as msg;
use super::render;
use fileapp_core::reach::Via;

mod commands;
mod failover;
mod reach;
#[cfg(test)]
mod tests;
mod types;

pub use types::{
    Action, Config, DownloadDone, DownloadOutcome, Meeting, OfferChecked, Order,
    READ_YOUR_WRITES_WAIT, RequestOpts, Restore,
};

/// The command in progress; input is not read while one runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// Initial registration (`initial`) or `reg`.
    Register {
        initial: bool,
    },
    CheckingDir,
    /// After the first registration: does the crashed run's folder still exist?
    CheckingRestore,
    Hashing,
    Offer(OpId),
    Dereg,
    Downloads {
        left: usize,
    },
    /// The server applied our change; wait (briefly) until our table shows it.
    Sync {
        until: Instant,
    },
    /// `request` from an owner whose latest change is not signed yet: wait (briefly)
    /// for its signed record; the request is in [`Flow::verifying`].
    Verify {
        until: Instant,
    },
}

/// The command flow. See the module docs.
pub struct Flow {
    core: ClientCore,
    /// The encrypted channel every datagram of the core goes through.
    link: ClientLink,
    cfg: Config,
    busy: Option<Busy>,
    prompt_due: bool,
    exec: VecDeque<String>,
    restore: Option<Restore>,
    /// The offer operation restoring a crashed run's files, and how many files it has.
    restore_op: Option<(OpId, usize)>,
    /// The `setdir` folder.
    dir: Option<PathBuf>,
    actions: VecDeque<Action>,
    /// Left or failed: nothing more happens.
    ended: bool,
    /// Peers whose key in the table is not the one we knew them by: (known, shown).
    /// Downloads from them are refused until `trust`.
    peer_changes: std::collections::BTreeMap<String, ([u8; 32], [u8; 32])>,
    /// The foreign key we last warned about for our own name.
    own_warned: Option<[u8; 32]>,
    /// A `request` waiting for owners' signed records: its (file, owner) pairs and
    /// options.
    verifying: Option<(Vec<(String, String)>, RequestOpts)>,
    /// Dials for requesters the table does not show yet: (until, from, meeting).
    waiting_dials: Vec<(Instant, String, Meeting)>,
}

impl Flow {
    pub fn new(core: ClientCore, link: ClientLink, mut cfg: Config) -> Flow {
        let exec = std::mem::take(&mut cfg.exec).into();
        let restore = cfg.restore.take();
        Flow {
            core,
            link,
            cfg,
            busy: None,
            prompt_due: false,
            exec,
            restore,
            restore_op: None,
            dir: None,
            actions: VecDeque::new(),
            ended: false,
            peer_changes: Default::default(),
            own_warned: None,
            verifying: None,
            waiting_dials: Vec::new(),
        }
    }

    /// Registers (keeping the server's offers of our name when restoring a crashed run).
    pub fn start(&mut self, now: Instant) {
        if self.restore.is_some() {
            self.core.register_resuming(now);
        } else {
            self.core.register(now);
        }
        self.busy = Some(Busy::Register { initial: true });
        self.step(now);
    }

    /// A datagram from `from`: dropped unless `from` is the server we talk to now
    /// (after a move, the old server's late datagrams are not ours to read).
    pub fn handle_datagram_from(&mut self, now: Instant, from: std::net::SocketAddr, bytes: &[u8]) {
        if self.core.is_server(from) {
            self.handle_datagram(now, bytes);
        }
    }

    /// A datagram from the server's address: the channel opens it (or drops it), the
    /// core reads what it carried.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        if let Some(message) = self.link.handle(now, bytes) {
            self.core.handle_datagram(now, &message);
        }
        self.link_events();
        self.step(now);
    }

    /// What the channel reported: a session opened (sign registrations over it, pin the
    /// key on first contact) or the server's key is not the pinned one (stop).
    fn link_events(&mut self) {
        while let Some(ev) = self.link.poll_event() {
            match ev {
                LinkEvent::Ready {
                    server_key,
                    binding,
                    first_contact,
                } => {
                    self.core.set_binding(binding);
                    if first_contact || self.cfg.server_pin_given {
                        self.act(Action::PinServer(server_key));
                    }
                }
                LinkEvent::Refused(crate::channel::HandshakeError::WrongServerKey {
                    expected,
                    presented,
                }) => {
                    if !self.ended {
                        let server = self.core.server().map(|a| a.to_string());
                        self.fail(ClientError::ServerKeyChanged {
                            server: server.unwrap_or_else(|| self.cfg.server.clone()),
                            pinned: expected.fingerprint(),
                            presented: crate::identity::fingerprint(&presented),
                        });
                    }
                }
            }
        }
    }

    /// The driver found that the table binds `name`, whom we knew by key `known`, to
    /// `shown`: warn once, and refuse downloads from it until the user trusts it.
    pub fn peer_key_changed(&mut self, name: &str, known: [u8; 32], shown: [u8; 32]) {
        if self.peer_changes.get(name).is_some_and(|c| c.1 == shown) {
            return;
        }
        self.peer_changes.insert(name.to_string(), (known, shown));
        let fp = crate::identity::fingerprint;
        self.say(msg::peer_key_changed(name, &fp(&known), &fp(&shown)));
    }

    /// A table that binds our own name to another key: someone may pose as us.
    fn check_own_name(&mut self) {
        let Some(ours) = self.cfg.key else {
            return;
        };
        let shown = self
            .core
            .table()
            .owner(self.core.name())
            .and_then(|o| o.key);
        if let Some(shown) = shown.filter(|k| *k != ours)
            && self.own_warned != Some(shown)
        {
            self.own_warned = Some(shown);
            let fp = crate::identity::fingerprint;
            let line = msg::own_name_bound_elsewhere(self.core.name(), &fp(&shown), &fp(&ours));
            self.say(line);
        }
    }

    pub fn link(&self) -> &ClientLink {
        &self.link
    }

    /// The deadline of [`Flow::poll_timeout`] came (or any wake-up: early calls are fine).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        self.step(now);
    }

    /// A line the user typed (only read while [`Flow::reading`]).
    pub fn handle_line(&mut self, now: Instant, line: &str) {
        if !self.ended {
            self.run_line(now, line);
        }
        self.step(now);
    }

    /// End of input, Ctrl-C at the prompt, or a signal: leave cleanly.
    pub fn quit(&mut self) {
        if !self.ended {
            self.leave();
        }
    }

    /// The answer to [`Action::CheckDir`]: the folder's absolute path, or `None` if it is
    /// not a folder.
    pub fn dir_checked(&mut self, now: Instant, requested: &str, found: Option<PathBuf>) {
        if self.busy != Some(Busy::CheckingDir) {
            return;
        }
        match found {
            Some(abs) => {
                self.dir = Some(abs.clone());
                self.act(Action::SetLibraryDir(abs.clone()));
                self.act(Action::SaveJournal);
                self.say(msg::setdir_ok(&abs));
            }
            None => self.say(msg::setdir_failed(requested)),
        }
        self.finish_command();
        self.step(now);
    }

    /// The answer to [`Action::CheckOffer`].
    pub fn offer_checked(&mut self, now: Instant, checked: OfferChecked) {
        if self.busy == Some(Busy::Hashing) {
            self.send_offer(now, checked);
        }
        self.step(now);
    }

    fn send_offer(&mut self, now: Instant, c: OfferChecked) {
        if !c.send || (c.restoring && c.ok.is_empty()) {
            return self.finish_command();
        }
        // Journal first: a crash from here on restores these offers.
        self.act(Action::SaveJournal);
        match self.core.offer(now, &c.ok) {
            Some(op) => {
                if c.restoring {
                    self.restore_op = Some((op, c.ok.len()));
                }
                self.busy = Some(Busy::Offer(op));
            }
            None => {
                self.say(msg::NOT_CONNECTED);
                self.finish_command();
            }
        }
    }

    /// The answer to one [`Order`] of an [`Action::Download`].
    pub fn download_done(&mut self, now: Instant, d: DownloadDone) {
        if d.json {
            self.say(render::download_json(&d));
        } else {
            self.say_download(&d);
        }
        if let Some(Busy::Downloads { left }) = &mut self.busy {
            *left -= 1;
            if *left == 0 {
                self.finish_command();
            }
        }
        self.step(now);
    }

    /// The human lines of a finished download.
    fn say_download(&mut self, d: &DownloadDone) {
        let file = &d.file;
        match &d.outcome {
            DownloadOutcome::AlreadyPresent { hash } => {
                self.say(msg::already_present(file, &self.cfg.download_dir, hash));
                self.say(msg::downloaded(file));
            }
            DownloadOutcome::Done {
                size,
                hash,
                elapsed,
                moved,
            } => {
                let via = d.via.unwrap_or(Via::Direct);
                self.say(msg::download_stats(
                    file, *size, hash, *elapsed, *moved, via,
                ));
                self.say(msg::downloaded(file));
            }
            DownloadOutcome::TreeDone {
                files,
                size,
                elapsed,
                moved,
                path,
            } => {
                let via = d.via.unwrap_or(Via::Direct);
                self.say(msg::tree_download_stats(
                    file, *files, *size, *elapsed, *moved, path, via,
                ));
                self.say(msg::downloaded(file));
            }
            DownloadOutcome::TreeAlreadyPresent => {
                self.say(msg::tree_already_present(file, &self.cfg.download_dir));
                self.say(msg::downloaded(file));
            }
            DownloadOutcome::Failed(why) => self.say(msg::download_failed(file, &d.owner, why)),
        }
        if d.connected {
            self.say(msg::connection_closed(&d.owner));
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Flow::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sync = match self.busy {
            Some(Busy::Sync { until } | Busy::Verify { until }) => Some(until),
            _ => None,
        };
        [self.core.poll_timeout(), sync].into_iter().flatten().min()
    }

    /// No command runs: the next input line may be read.
    pub fn reading(&self) -> bool {
        self.busy.is_none() && !self.ended
    }

    /// Downloads are running (Ctrl-C cancels them rather than the client).
    pub fn downloading(&self) -> bool {
        matches!(self.busy, Some(Busy::Downloads { .. }))
    }

    pub fn core(&self) -> &ClientCore {
        &self.core
    }

    fn act(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn say(&mut self, line: impl Into<String>) {
        self.act(Action::Say(line.into()));
    }

    fn finish_command(&mut self) {
        self.busy = None;
        self.prompt_due = true;
    }

    fn fail(&mut self, e: ClientError) {
        self.act(Action::Fail(e));
        self.ended = true;
    }

    fn leave(&mut self) {
        let goodbye = self.core.goodbye().and_then(|m| self.link.seal_now(&m));
        self.act(Action::Leave { goodbye });
        self.ended = true;
    }

    /// The core's messages go through the channel; what the channel puts on the wire
    /// goes to the driver.
    fn take_transmits(&mut self, now: Instant) {
        while let Some(m) = self.core.poll_transmit() {
            self.link.send(now, m);
        }
        while let Some(p) = self.core.poll_probe() {
            self.act(Action::SendProbe(p));
        }
        while let Some(d) = self.link.poll_transmit() {
            self.act(Action::Send(d));
        }
    }

    /// After every input: datagrams out, events handled, read-your-writes checked, then
    /// the next `--exec` command or the prompt.
    fn step(&mut self, now: Instant) {
        loop {
            self.take_transmits(now);
            while let Some(ev) = self.core.poll_event() {
                self.on_event(now, ev);
            }
            self.take_transmits(now);
            if self.ended {
                return;
            }
            if let Some(Busy::Sync { until }) = self.busy
                && (!self.core.behind_own_writes() || now >= until)
            {
                self.finish_command();
            }
            if let Some(Busy::Verify { until }) = self.busy
                && (now >= until || !self.awaits_signature(&self.verifying))
                && let Some((pairs, opts)) = self.verifying.take()
            {
                self.busy = None;
                self.request(now, pairs, opts, false);
            }
            if self.busy.is_some() {
                return;
            }
            if let Some(line) = self.exec.pop_front() {
                self.say(msg::prompt_line(&line));
                self.run_line(now, &line);
                continue;
            }
            if self.cfg.exit_when_done {
                return self.leave();
            }
            if self.prompt_due {
                self.prompt_due = false;
                self.act(Action::Prompt);
            }
            return;
        }
    }

    fn sync(&mut self, now: Instant) {
        self.busy = Some(Busy::Sync {
            until: now + self.cfg.sync_wait,
        });
    }

    fn on_event(&mut self, now: Instant, ev: Event) {
        tracing::info!(?ev, "control event");
        match ev {
            Event::Registered => self.on_registered(now),
            Event::RegisterRejected(reason) => {
                let initial = self.busy == Some(Busy::Register { initial: true });
                let e = match reason {
                    Reject::NameInUse => ClientError::NameInUse,
                    other => ClientError::Rejected(other),
                };
                self.say(msg::prompt_line(&e));
                self.end_registration(initial, e);
            }
            Event::RegisterTimedOut => {
                self.say(msg::prompt_line(msg::SERVER_NOT_RESPONDING));
                let initial = self.busy == Some(Busy::Register { initial: true });
                self.end_registration(initial, ClientError::ServerNotResponding);
            }
            Event::OfferDone(op) => match self.restore_op {
                Some((id, count)) if id == op => {
                    self.restore_op = None;
                    let dir = self.dir.clone().unwrap_or_default();
                    self.say(msg::restored(count, &dir));
                    self.sync(now);
                }
                _ => {
                    self.say(msg::OFFER_RECEIVED);
                    if self.busy == Some(Busy::Offer(op)) {
                        self.sync(now);
                    }
                }
            },
            Event::OfferFailed(op, why) => self.on_offer_failed(op, why),
            Event::Deregistered => {
                self.say(msg::OFFLINE_BYE);
                self.act(Action::TableChanged);
                if self.busy == Some(Busy::Dereg) {
                    self.finish_command();
                }
            }
            Event::DeregTimedOut => {
                self.say(msg::prompt_line(msg::SERVER_NOT_RESPONDING));
                self.say(msg::EXITING);
                self.fail(ClientError::ServerNotResponding);
            }
            Event::Switch(_) | Event::Moved { .. } => self.on_failover_event(ev),
            Event::Connected(_)
            | Event::ConnectFailed { .. }
            | Event::Dial { .. }
            | Event::PunchPeer { .. } => self.on_reach_event(now, ev),
            Event::TableUpdated => {
                if !self.waiting_dials.is_empty() {
                    self.retry_dials(now);
                }
                self.say(msg::TABLE_UPDATED);
                self.check_own_name();
                self.act(Action::TableChanged);
            }
            Event::ServerLost => self.say(msg::SERVER_LOST),
            // The request then fails as an unanswered one, with that one's message.
            Event::Unsendable(e) => tracing::warn!("a request was not sent: {e}"),
            Event::ServerBack => {
                self.say(msg::SERVER_BACK);
                self.act(Action::StartServing);
            }
        }
    }

    /// The first registration failing ends the client; `reg` failing ends the command.
    fn end_registration(&mut self, initial: bool, e: ClientError) {
        if initial {
            self.fail(e);
        } else {
            self.finish_command();
        }
    }

    fn on_registered(&mut self, now: Instant) {
        self.say(msg::WELCOME);
        self.act(Action::StartServing);
        match &self.restore {
            // The previous run of this name crashed: its folder must still be there.
            Some(r) if self.busy == Some(Busy::Register { initial: true }) => {
                let dir = r.dir.clone();
                self.busy = Some(Busy::CheckingRestore);
                self.act(Action::CheckRestore(dir));
            }
            _ => {
                if matches!(self.busy, Some(Busy::Register { .. })) {
                    self.sync(now);
                }
            }
        }
    }

    /// The answer to [`Action::CheckRestore`]: whether the crashed run's folder is still
    /// a folder.
    pub fn restore_checked(&mut self, now: Instant, exists: bool) {
        if self.busy != Some(Busy::CheckingRestore) {
            return;
        }
        match self.restore.take() {
            Some(r) if exists => {
                // Offer its files again, quietly, before the first command.
                self.dir = Some(r.dir.clone());
                self.act(Action::SetLibraryDir(r.dir.clone()));
                self.start_offer(r.dir, r.offers, true);
            }
            _ => self.sync(now),
        }
        self.step(now);
    }

    fn on_offer_failed(&mut self, op: OpId, why: OfferFailure) {
        if self.restore_op.is_some_and(|(id, _)| id == op) {
            self.restore_op = None;
            self.say(msg::RESTORE_FAILED);
            return self.finish_command();
        }
        self.say(match why {
            OfferFailure::NoAck => msg::NO_ACK.to_string(),
            OfferFailure::Rejected(r) => msg::offer_rejected(r),
        });
        if self.busy == Some(Busy::Offer(op)) {
            self.finish_command();
        }
    }
}
