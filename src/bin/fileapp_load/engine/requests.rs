//! The requests a simulated client sends: registration (key, challenge, proof), heartbeats,
//! offers, its signed record, and table acknowledgements. Each goes through the client's
//! link and is tracked for retransmission by [`Sim::request`].

use std::time::Instant;

use anyhow::Context;
use fileapp::client::link::ClientLink;
use fileapp::identity;
use fileapp::proto::{FileEntry, Message, Proof};

use super::{Kind, Sim};

impl Sim {
    /// Registers `client` with its key and no proof (the server answers with a
    /// challenge). `evict`: the name is taken back from the client's own earlier session.
    pub fn register(&mut self, client: u32) -> anyhow::Result<()> {
        let cl = &mut self.clients[client as usize];
        cl.register_attempts += 1;
        let (name, instance, tcp_port, key) = (cl.name.clone(), cl.instance, cl.tcp_port, cl.key);
        // A client moving to another server keeps its offers there.
        let keep_offers = cl.moving;
        self.request(client, Kind::Register, |req| Message::Register {
            req,
            name,
            instance,
            tcp_port,
            keep_offers,
            advertise: None,
            key: Some(key),
            proof: None,
            evict: true,
        })
    }

    /// Registers `client` again from scratch: a new session (new handshake) on the same
    /// socket, then the challenge round, as a restarted client does.
    pub fn reregister(&mut self, client: u32) -> anyhow::Result<()> {
        let cl = &mut self.clients[client as usize];
        cl.link = ClientLink::new(self.pin, rand::random(), self.retry.interval);
        cl.binding = None;
        cl.register_attempts = 0;
        self.c.reregistrations += 1;
        self.register(client)
    }

    /// Answers a challenge: the same registration with a proof signed over the session's
    /// binding and the server's nonce.
    pub(super) fn prove(&mut self, client: u32, nonce: [u8; 16]) -> anyhow::Result<()> {
        let cl = &self.clients[client as usize];
        let Some(binding) = cl.binding else {
            // A challenge can only come through an open session.
            self.c.unexpected += 1;
            return Ok(());
        };
        let (name, instance, tcp_port, key) = (cl.name.clone(), cl.instance, cl.tcp_port, cl.key);
        let keep_offers = cl.moving;
        let sig = cl.identity.sign_registration(&identity::Registration {
            binding: &binding,
            nonce: &nonce,
            name: &name,
            instance,
            tcp_port,
            keep_offers,
            advertise: None,
            key: &key,
            evict: true,
        });
        self.request(client, Kind::RegisterProof, |req| Message::Register {
            req,
            name,
            instance,
            tcp_port,
            keep_offers,
            advertise: None,
            key: Some(key),
            proof: Some(Proof { nonce, sig }),
            evict: true,
        })
    }

    /// Heartbeats with the table version held; nothing for a client not registered.
    pub fn heartbeat(&mut self, client: u32) -> anyhow::Result<()> {
        let cl = &mut self.clients[client as usize];
        let (Some(token), table_version) = (cl.token, cl.version) else {
            return Ok(());
        };
        cl.heartbeated = true;
        self.request(client, Kind::Heartbeat, |req| Message::Heartbeat {
            req,
            token,
            table_version,
        })
    }

    /// Offers `files`; nothing for a client not registered.
    pub fn offer(&mut self, client: u32, files: Vec<String>, kind: Kind) -> anyhow::Result<()> {
        let Some(token) = self.clients[client as usize].token else {
            return Ok(());
        };
        let files: Vec<FileEntry> = files.into_iter().map(FileEntry::named).collect();
        let cl = &mut self.clients[client as usize];
        for f in &files {
            cl.offered.insert(f.name.clone(), f.clone());
        }
        self.request(client, kind, |req| Message::Offer { req, token, files })
    }

    /// Signs and sends `client`'s record as the server now holds it, as a real client
    /// does after its welcome and after each offer (the server's push waits for it).
    pub fn send_record(&mut self, client: u32) -> anyhow::Result<()> {
        let cl = &mut self.clients[client as usize];
        let Some(token) = cl.token else {
            return Ok(());
        };
        cl.record_seq += 1;
        let seq = cl.record_seq;
        let statement = fileapp::records::statement_bytes(
            &cl.name,
            &cl.key,
            cl.tcp_port,
            None,
            seq,
            cl.offered
                .values()
                .map(|f| (f.name.as_str(), f.size, &f.hash, f.files)),
        )
        .context("a record that does not encode")?;
        let sig = cl.identity.sign(&statement).to_vec();
        self.request(client, Kind::Record, |req| Message::Record {
            req,
            token,
            seq,
            sig,
        })
    }

    /// Sends a message that expects no reply (a `TableAck`) through `client`'s link.
    pub fn notify(&mut self, client: u32, now: Instant, msg: &Message) -> anyhow::Result<()> {
        let bytes = msg.encode().context("cannot encode a TableAck")?;
        self.send(client, now, bytes);
        Ok(())
    }
}
