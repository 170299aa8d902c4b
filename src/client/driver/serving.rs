//! The driver's serving and keys: the provider's accept loop and the owner's
//! connections out for requesters (reach), pinning the server's key, and keeping the
//! requesters' keys and the completion data in step with the table.

use super::*;

impl Driver {
    /// Pins the server's key for its address (first contact, or the key the user
    /// named), saying so once. A pin that cannot be saved is said too: this session is
    /// safe (the key is held for it), only the next run is a first contact again.
    pub(super) fn pin_server(&mut self, key: [u8; 32]) {
        let server = self.server.to_string();
        let fp = fingerprint(&key);
        let Some(known) = &mut self.known_servers else {
            self.console.print(&msg::server_pinned(&server, &fp));
            return;
        };
        let line = match known.check(&server, &key) {
            Pin::Same => None,
            Pin::New => Some(msg::server_pinned(&server, &fp)),
            Pin::Changed { .. } => Some(msg::server_pin_replaced(&server, &fp)),
        };
        // The deployment's servers share the key: pinned under each address of the
        // list, so that a later run starting at any of them knows it.
        let others = self.servers.iter().map(|s| s.to_string());
        let pins: Vec<(String, [u8; 32])> = std::iter::once(server.clone())
            .chain(others)
            .filter(|s| known.check(s, &key) != Pin::Same)
            .map(|s| (s, key))
            .collect();
        if pins.is_empty() {
            return;
        }
        if let Some(line) = line {
            self.console.print(&line);
        }
        if let Err(e) = known.pin_all(pins) {
            self.console.print(&msg::known_servers_failed(&e));
        }
    }

    /// The flow moved us to another server of the deployment: the socket is connected
    /// to it (the kernel then drops every other source), and probes, relays and punches
    /// use its address.
    pub(super) async fn use_server(&mut self, to: SocketAddr) {
        if let Err(e) = self.sock.connect(to).await {
            // The retries run into silence and the core moves on again.
            tracing::warn!("cannot point the socket at {to}: {e}");
        }
        self.server = to;
        *self.reach.server.write().unwrap_or_else(|p| p.into_inner()) = to;
    }

    /// Called on every table change: refreshes completion and the requesters' keys.
    pub(super) fn update_completion(&self) {
        let table = self.flow.core().table();
        let keys: HashMap<String, [u8; 32]> = table
            .owners()
            .filter_map(|(name, o)| o.key.map(|k| (name.to_string(), k)))
            .collect();
        *self.peer_keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        let mut files = BTreeMap::<String, Vec<String>>::new();
        for r in table.rows() {
            files.entry(r.file).or_default().push(r.owner);
        }
        if let Ok(mut c) = self.completion.write() {
            c.table = files;
        }
        self.listings.table_changed(table);
    }

    /// Remembers the key of every peer name seen for the first time, and tells the flow
    /// of any name the table now binds to another key than the one we knew.
    pub(super) fn check_peer_keys(&mut self) {
        let Some(known) = &mut self.known_peers else {
            return;
        };
        let mut new = Vec::new();
        let mut changed = Vec::new();
        for (name, o) in self.flow.core().table().owners() {
            let Some(key) = o.key else { continue };
            if name == self.name {
                continue;
            }
            match known.check(name, &key) {
                Pin::New => new.push((name.to_string(), key)),
                Pin::Same => {}
                Pin::Changed { pinned } => changed.push((name.to_string(), pinned, key)),
            }
        }
        if !new.is_empty()
            && let Err(e) = known.pin_all(new)
        {
            self.console.print(&msg::known_peers_failed(&e));
        }
        for (name, pinned, key) in changed {
            self.flow.peer_key_changed(&name, pinned, key);
        }
    }

    /// Starts the provider's accept loop if it is not running.
    /// How requesters are checked: TLS against the table's keys, or plaintext.
    pub(super) fn peer_auth(&self) -> PeerAuth {
        match &self.security {
            Security::Tls(id) => {
                let lookup: KeyLookup = self.peer_keys.clone();
                PeerAuth::tls(id.clone(), lookup)
            }
            Security::Plaintext => PeerAuth::plaintext(),
        }
    }

    /// The server arranged a meeting with requester `from`: connect out and serve it,
    /// unless we stopped serving (`dereg`).
    pub(super) fn dial_out(&mut self, from: String, key: Option<[u8; 32]>, meeting: flow::Meeting) {
        if !self.accepting.as_ref().is_some_and(|a| *a.borrow()) {
            return;
        }
        // A server that sends dial after dial gets a few connections, not a flood.
        let Ok(slot) = self.dial_slots.clone().try_acquire_owned() else {
            return;
        };
        let (lib, notices, auth) = (self.lib.clone(), self.notices_tx.clone(), self.peer_auth());
        let say = self.notices_tx.clone();
        let server = self.server;
        let punch = (meeting.via == fileapp_core::reach::Via::Punched).then(|| {
            let (tx, told) = tokio::sync::oneshot::channel();
            self.hub.wait_punch(meeting.id, tx);
            reach::PunchParts {
                identity: self.reach.identity.clone(),
                key,
                told,
            }
        });
        tokio::spawn(reach::dial_out(
            meeting,
            from,
            server,
            punch,
            move |stream, at| {
                tokio::spawn(async move {
                    serve_stream(stream, at, lib, notices, auth, ServeConfig::default()).await;
                    drop(slot);
                });
            },
            move |line| drop(say.send(line)),
        ));
    }

    pub(super) fn start_serving(&mut self) {
        if self.accepting.as_ref().is_some_and(|a| *a.borrow()) {
            return;
        }
        let listener = match self.listener.take() {
            Some(l) => l,
            None => match rebind(self.tcp_addr) {
                Ok(l) => l,
                Err(e) => {
                    return self
                        .console
                        .print(&msg::cannot_serve(self.tcp_addr.port(), e));
                }
            },
        };
        let (tx, rx) = watch::channel(true);
        self.accepting = Some(tx);
        let cfg = ServeConfig {
            meetings: Some(self.reach.meetings.clone()),
            ..ServeConfig::default()
        };
        tokio::spawn(serve_with(
            listener,
            self.lib.clone(),
            self.notices_tx.clone(),
            rx,
            self.peer_auth(),
            cfg,
        ));
    }

    pub(super) fn stop_serving(&mut self) {
        if let Some(a) = self.accepting.take() {
            let _ = a.send(false);
        }
    }
}
