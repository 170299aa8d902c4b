//! The peer protocol's codecs: the request and response headers ([`header`]) and the
//! TLS 1.3 record layer that carries the data ([`record`]), and the unpacking of received
//! records on the bulk path ([`unpack`]).

pub mod header;
pub mod record;
pub mod unpack;
