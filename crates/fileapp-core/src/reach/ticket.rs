//! (placeholder until the relay work lands: the API other modules use)
use crate::identity::Identity;
pub const TICKET_LEN: usize = 90;
pub const TICKET_LIFETIME_MS: u64 = 30_000;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Requester,
    Owner,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub id: [u8; 16],
    pub role: Role,
    pub expires_ms: u64,
}
impl Ticket {
    pub fn seal(&self, server: &Identity) -> [u8; TICKET_LEN] {
        let mut b = [0u8; TICKET_LEN];
        b[0] = 1;
        b[1..17].copy_from_slice(&self.id);
        b[17] = matches!(self.role, Role::Owner) as u8;
        b[18..26].copy_from_slice(&self.expires_ms.to_be_bytes());
        let mut m = b"fileapp relay ticket v1".to_vec();
        m.extend_from_slice(&b[..26]);
        b[26..].copy_from_slice(&server.sign(&m));
        b
    }
}
