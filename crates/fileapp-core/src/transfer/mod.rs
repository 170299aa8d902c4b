//! The peer protocol's codecs: the request and response headers ([`header`]), the
//! TLS 1.3 record layer that carries the data ([`record`]), the unpacking of received
//! records on the bulk path ([`unpack`]) and the key a peer's certificate is for
//! ([`cert`]).

pub mod cert;
pub mod header;
pub mod record;
pub mod unpack;
