//! Provider side, as one path for the rest of the crate: the offered library
//! ([`super::library`]: shared folder, offered names, hash cache, safe open) and serving
//! ([`super::serve`]: the accept loop and each connection).

pub use super::library::{FileInfo, Library, OfferError, PreparedOffer, SharedLibrary};
pub use super::serve::{
    PeerStream, ServeConfig, copy_file_buffered, serve, serve_stream, serve_with,
};
