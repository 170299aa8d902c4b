//! The commands the user types, as the flow runs them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use super::{Action, Busy, Flow, Order, RequestOpts};
use crate::client::command::{self, Command, glob_match};
use crate::client::core::State;
use crate::client::messages as msg;
use crate::client::render;
use crate::client::table::Trust;

impl Flow {
    pub(super) fn run_line(&mut self, now: Instant, line: &str) {
        self.prompt_due = true;
        match command::parse(line) {
            Ok(cmd) => self.run_command(now, cmd),
            Err(e) => self.say(msg::prompt_line(e)),
        }
    }

    /// Why `cmd` cannot run in `state`, if it cannot.
    fn refusal(state: State, cmd: &Command) -> Option<&'static str> {
        // Deregistered: only local commands and `reg`. Reconnecting on our own: the
        // local table and peers still work; only offers need the server.
        match (state, cmd) {
            (
                State::Offline | State::Idle | State::Registering,
                Command::Offer(_)
                | Command::List { .. }
                | Command::Request { .. }
                | Command::Dereg(_),
            ) => Some(msg::OFFLINE_REFUSED),
            (State::Reconnecting, Command::Offer(_)) => Some(msg::NOT_CONNECTED),
            _ => None,
        }
    }

    fn run_command(&mut self, now: Instant, cmd: Command) {
        tracing::info!(?cmd, "command");
        let state = self.core.state();
        if let Some(line) = Self::refusal(state, &cmd) {
            return self.say(line);
        }
        match cmd {
            Command::Nothing => {}
            Command::SetDir(dir) => {
                self.busy = Some(Busy::CheckingDir);
                self.act(Action::CheckDir(dir));
            }
            Command::Offer(files) => match self.dir.clone() {
                Some(dir) => self.start_offer(dir, files, false),
                None => self.say(msg::DIR_NOT_SET),
            },
            Command::List {
                long,
                json,
                pattern,
            } => {
                let rows: Vec<_> = (self.core.table().rows().into_iter())
                    .filter(|r| pattern.as_deref().is_none_or(|p| glob_match(p, &r.file)))
                    .collect();
                for line in render::list(self.core.table(), &rows, long, json) {
                    self.say(line);
                }
            }
            Command::Request { pairs, force, json } => {
                self.request(now, pairs, RequestOpts { force, json }, true)
            }
            Command::Dereg(name) => {
                if let Some(n) = name.filter(|n| n != self.core.name()) {
                    return self.say(msg::dereg_not_you(&n, self.core.name()));
                }
                // Stop serving first: no transfer starts after we said we left.
                self.act(Action::StopServing);
                if self.core.dereg(now) {
                    self.busy = Some(Busy::Dereg);
                }
            }
            Command::Reg => {
                if state != State::Offline {
                    return self.say(msg::ALREADY_REGISTERED);
                }
                self.core.register(now);
                self.busy = Some(Busy::Register { initial: false });
            }
            Command::Help(name) => {
                let lines = match name {
                    None => render::help_all(),
                    Some(name) => render::help_one(&name),
                };
                lines.into_iter().for_each(|l| self.say(l));
            }
            Command::WhoAmI => {
                let state = match state {
                    State::Online => msg::STATE_ONLINE,
                    State::Reconnecting => msg::STATE_RECONNECTING,
                    _ => msg::STATE_OFFLINE,
                };
                let line = msg::whoami(self.core.name(), state, &self.cfg.fingerprint);
                self.say(line);
                // Our reachability, once the server has tested it.
                let reach = self.own_reach();
                if state == msg::STATE_ONLINE && reach.tcp.is_some() {
                    self.say(msg::reachability(reach.describe()));
                }
            }
            Command::Trust(name) => match self.peer_changes.remove(&name) {
                Some((_, key)) => {
                    self.say(msg::peer_trusted(
                        &name,
                        &crate::identity::fingerprint(&key),
                    ));
                    self.act(Action::TrustPeer { name, key });
                }
                None => self.say(msg::nothing_to_trust(&name)),
            },
            Command::Quit => self.leave(),
        }
    }

    pub(super) fn start_offer(&mut self, dir: PathBuf, files: Vec<String>, restoring: bool) {
        let mut unique = Vec::new();
        for f in files {
            if !unique.contains(&f) {
                unique.push(f);
            }
        }
        self.busy = Some(Busy::Hashing);
        self.act(Action::CheckOffer {
            dir,
            files: unique,
            restoring,
        });
    }

    /// What `request <file> <owner>` names in the table: the file as it is asked for
    /// (`photos` becomes the folder `photos/` when only the folder is offered), the
    /// table entry it lives under, and where and from whom it would come.
    fn lookup(&self, file: &str, owner: &str) -> (String, String, Option<Source>) {
        let table = self.core.table();
        let has = |name: &str| {
            table
                .owner(owner)
                .is_some_and(|o| o.files.contains_key(name))
        };
        let mut file = file.to_string();
        if !has(&file) && has(&format!("{file}/")) {
            file.push('/');
        }
        // `photos/` and `photos/a/b.jpg` are looked up as the folder `photos/`.
        let listed = match fileapp_core::tree::split_request(&file) {
            Some((folder, _)) => folder.to_string(),
            None => file.clone(),
        };
        let found = (table.owner(owner))
            .filter(|_| owner != self.core.name())
            .and_then(|o| {
                let meta = o.files.get(&listed)?;
                Some(Source {
                    peer: SocketAddr::new(o.ip, o.tcp_port),
                    key: o.key,
                    hash: meta.hash,
                    trust: o.trust,
                })
            });
        (file, listed, found)
    }

    /// Some owner of a waiting request is in the table with a change it has not signed
    /// yet.
    pub(super) fn awaits_signature(
        &self,
        waiting: &Option<(Vec<(String, String)>, RequestOpts)>,
    ) -> bool {
        let Some((pairs, _)) = waiting else {
            return false;
        };
        pairs.iter().any(|(file, owner)| {
            matches!(self.lookup(file, owner).2, Some(s) if s.trust == Trust::Unsigned)
        })
    }

    /// `request`: downloads from verified owners. When an owner's latest change is not
    /// signed yet (its signed record follows within moments) and `may_wait`, the whole
    /// request waits for it first, up to the read-your-writes wait.
    pub(super) fn request(
        &mut self,
        now: Instant,
        pairs: Vec<(String, String)>,
        opts: RequestOpts,
        may_wait: bool,
    ) {
        let waiting = Some((pairs, opts));
        if may_wait && self.awaits_signature(&waiting) {
            self.verifying = waiting;
            self.busy = Some(Busy::Verify {
                until: now + self.cfg.sync_wait,
            });
            return;
        }
        let Some((pairs, opts)) = waiting else {
            return;
        };
        let mut orders = Vec::new();
        for (file, owner) in pairs {
            let (file, listed, found) = self.lookup(&file, &owner);
            if found.is_some() && self.peer_changes.contains_key(&owner) {
                self.say(msg::peer_key_refused(&owner));
                continue;
            }
            match found {
                Some(s) if s.trust != Trust::Verified => {
                    self.say(msg::owner_not_verified(&owner, s.trust == Trust::Forged));
                }
                Some(s) => orders.push(Order {
                    plan: self.plan_to(&owner),
                    peer: s.peer,
                    owner,
                    hash: (listed == file && file.ends_with('/')).then_some(s.hash),
                    file,
                    key: s.key,
                    force: opts.force,
                    json: opts.json,
                }),
                None => self.say(msg::INVALID_REQUEST),
            }
        }
        if orders.is_empty() {
            return;
        }
        self.busy = Some(Busy::Downloads { left: orders.len() });
        self.act(Action::Download(orders));
    }
}

/// Where a requested file would come from.
#[derive(Clone, Copy)]
struct Source {
    peer: SocketAddr,
    key: Option<[u8; 32]>,
    hash: [u8; 32],
    trust: Trust,
}
