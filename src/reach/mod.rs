//! Reach, the drivers: the relay server and its client side ([`relay`]), and the
//! hole-punched QUIC path ([`quic`]). The decisions (which path, when to punch, which
//! tickets pair) are in the core's `fileapp_core::reach`.

pub mod meet;
pub mod quic;
pub mod relay;
