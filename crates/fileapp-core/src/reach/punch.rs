//! (placeholder until the punch work lands: the constants other modules use)
pub const PROBE_MAGIC: [u8; 4] = [0x00, b'F', b'A', b'B'];
