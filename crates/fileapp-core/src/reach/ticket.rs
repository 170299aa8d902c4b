//! Relay tickets: what the index server signs so that a relay pairs two halves of one
//! relayed transfer, and nothing else (`docs/PROTOCOL.md`, "Relay").
//!
//! ```text
//! offset 0   u8      version = 1
//! offset 1   [16]    id        random per relayed transfer, chosen by the index server
//! offset 17  u8      role      0 = requester, 1 = owner
//! offset 18  u64 BE  expires   unix time in milliseconds
//! offset 26  [64]    sig       Ed25519 by the index server's key over
//!                              b"fileapp relay ticket v1" || bytes[0..26]
//! ```
//!
//! Sans-io: no clock is read here; [`Ticket::open`] is given `now_ms`. Parsing checks
//! the framing first, then the signature, and only a signed ticket is judged on its
//! expiry, so an unsigned one never learns more than "bad".

use crate::identity::{Identity, PublicKey, verify};

/// Length of a sealed ticket.
pub const TICKET_LEN: usize = 90;
/// The only ticket version.
pub const TICKET_VERSION: u8 = 1;
/// How long a ticket the index server hands out stays valid, in milliseconds.
pub const TICKET_LIFETIME_MS: u64 = 30_000;
/// Domain separator of the signed bytes.
pub const TICKET_CONTEXT: &[u8] = b"fileapp relay ticket v1";

/// Bytes of the ticket the signature covers (version, id, role, expiry).
const SIGNED_LEN: usize = 26;

/// Which half of a relayed transfer a ticket admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Requester,
    Owner,
}

impl Role {
    /// The role's byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Role::Requester => 0,
            Role::Owner => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<Role> {
        match b {
            0 => Some(Role::Requester),
            1 => Some(Role::Owner),
            _ => None,
        }
    }

    /// The role the partner half must have.
    pub fn other(self) -> Role {
        match self {
            Role::Requester => Role::Owner,
            Role::Owner => Role::Requester,
        }
    }
}

/// A ticket's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Names the relayed transfer: both halves carry the same id.
    pub id: [u8; 16],
    pub role: Role,
    /// Unix time in milliseconds after which the ticket admits nothing.
    pub expires_ms: u64,
}

/// Why a ticket was not accepted.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// Not 90 bytes, an unknown version or an unknown role.
    #[error("malformed relay ticket")]
    Malformed,
    /// The signature is not the index server's.
    #[error("relay ticket not signed by the index server")]
    BadSignature,
    /// Signed, but its time is over.
    #[error("relay ticket expired")]
    Expired,
}

/// The bytes the server signs: the context, then the ticket's first 26 bytes.
fn signed_message(head: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TICKET_CONTEXT.len() + SIGNED_LEN);
    m.extend_from_slice(TICKET_CONTEXT);
    m.extend_from_slice(head);
    m
}

impl Ticket {
    /// The ticket's first 26 bytes (what the signature covers).
    fn head(&self) -> [u8; SIGNED_LEN] {
        let mut h = [0u8; SIGNED_LEN];
        h[0] = TICKET_VERSION;
        h[1..17].copy_from_slice(&self.id);
        h[17] = self.role.to_byte();
        h[18..26].copy_from_slice(&self.expires_ms.to_be_bytes());
        h
    }

    /// Encodes and signs the ticket with the index server's key.
    pub fn seal(&self, server: &Identity) -> [u8; TICKET_LEN] {
        let head = self.head();
        let sig = server.sign(&signed_message(&head));
        let mut out = [0u8; TICKET_LEN];
        out[..SIGNED_LEN].copy_from_slice(&head);
        out[SIGNED_LEN..].copy_from_slice(&sig);
        out
    }

    /// Only the framing: length, version and role. Says nothing of who signed it.
    pub fn parse_unverified(bytes: &[u8]) -> Result<Ticket, TicketError> {
        if bytes.len() != TICKET_LEN || bytes[0] != TICKET_VERSION {
            return Err(TicketError::Malformed);
        }
        let role = Role::from_byte(bytes[17]).ok_or(TicketError::Malformed)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[1..17]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&bytes[18..26]);
        Ok(Ticket {
            id,
            role,
            expires_ms: u64::from_be_bytes(exp),
        })
    }

    /// Parse, then verify the signature with `server_key`, then check expiry against
    /// `now_ms` (a ticket is valid while `now_ms < expires_ms`).
    pub fn open(bytes: &[u8], server_key: &PublicKey, now_ms: u64) -> Result<Ticket, TicketError> {
        let ticket = Ticket::parse_unverified(bytes)?;
        let msg = signed_message(&bytes[..SIGNED_LEN]);
        if !verify(server_key, &msg, &bytes[SIGNED_LEN..]) {
            return Err(TicketError::BadSignature);
        }
        if now_ms >= ticket.expires_ms {
            return Err(TicketError::Expired);
        }
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            id: [7; 16],
            role: Role::Owner,
            expires_ms: 1_000_000,
        }
    }

    #[test]
    fn the_wire_layout_is_the_documented_one() {
        let id = Identity::generate().unwrap();
        let t = Ticket {
            id: *b"0123456789abcdef",
            role: Role::Owner,
            expires_ms: 0x0102_0304_0506_0708,
        };
        let b = t.seal(&id);
        assert_eq!(b.len(), TICKET_LEN);
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..17], b"0123456789abcdef");
        assert_eq!(b[17], 1);
        assert_eq!(&b[18..26], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut msg = b"fileapp relay ticket v1".to_vec();
        msg.extend_from_slice(&b[..26]);
        assert!(verify(&id.public_key(), &msg, &b[26..]));
        let r = Ticket {
            role: Role::Requester,
            ..t
        };
        assert_eq!(r.seal(&id)[17], 0);
    }

    #[test]
    fn a_sealed_ticket_opens_until_it_expires() {
        let id = Identity::generate().unwrap();
        let b = ticket().seal(&id);
        let key = id.public_key();
        assert_eq!(Ticket::open(&b, &key, 0), Ok(ticket()));
        assert_eq!(Ticket::open(&b, &key, 999_999), Ok(ticket()));
        assert_eq!(Ticket::open(&b, &key, 1_000_000), Err(TicketError::Expired));
        assert_eq!(Ticket::open(&b, &key, u64::MAX), Err(TicketError::Expired));
    }

    #[test]
    fn every_flipped_bit_and_every_other_key_is_refused() {
        let id = Identity::generate().unwrap();
        let key = id.public_key();
        let b = ticket().seal(&id);
        for i in 0..TICKET_LEN {
            for bit in [0x01, 0x80] {
                let mut f = b;
                f[i] ^= bit;
                let r = Ticket::open(&f, &key, 0);
                assert!(
                    matches!(r, Err(TicketError::Malformed | TicketError::BadSignature)),
                    "byte {i} bit {bit:#x}: {r:?}"
                );
            }
        }
        let other = Identity::generate().unwrap().public_key();
        assert_eq!(Ticket::open(&b, &other, 0), Err(TicketError::BadSignature));
        // A signed but expired ticket under the wrong key is "bad", not "expired".
        assert_eq!(
            Ticket::open(&b, &other, u64::MAX),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn framing_errors_are_malformed() {
        let id = Identity::generate().unwrap();
        let key = id.public_key();
        let b = ticket().seal(&id);
        assert_eq!(Ticket::open(&[], &key, 0), Err(TicketError::Malformed));
        assert_eq!(Ticket::open(&b[..89], &key, 0), Err(TicketError::Malformed));
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(Ticket::open(&long, &key, 0), Err(TicketError::Malformed));
        let mut v2 = b;
        v2[0] = 2;
        assert_eq!(Ticket::open(&v2, &key, 0), Err(TicketError::Malformed));
        let mut role = b;
        role[17] = 2;
        assert_eq!(Ticket::open(&role, &key, 0), Err(TicketError::Malformed));
    }

    #[test]
    fn roles_round_trip_and_pair() {
        for r in [Role::Requester, Role::Owner] {
            assert_eq!(Role::from_byte(r.to_byte()), Some(r));
            assert_ne!(r.other(), r);
            assert_eq!(r.other().other(), r);
        }
        assert_eq!(Role::from_byte(2), None);
    }
}
