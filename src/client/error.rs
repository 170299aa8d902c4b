//! Why a client stopped, as a type: the driver and start-up return it, `app.rs` turns it
//! into an exit code and prints its line. Each `Display` text is a line of
//! [`super::messages`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::identity::KeyFileError;
use crate::proto::Reject;
use crate::transfer::secure::TlsSetupError;

use super::messages;

/// Why the client could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The UDP or TCP port cannot be bound.
    #[error("{}", messages::port_unusable(.what, *.port, .source))]
    Bind {
        what: &'static str,
        port: u16,
        source: io::Error,
    },
    /// The server's address cannot be used.
    #[error("{}", messages::cannot_reach(*.server, .source))]
    Connect {
        server: SocketAddr,
        source: io::Error,
    },
    #[error("{0}")]
    LocalAddr(io::Error),
    #[error("{}", messages::cannot_read_cwd(.0))]
    CurrentDir(io::Error),
    #[error("{}", messages::no_download_dir(.0))]
    NoDownloadDir(PathBuf),
    #[error("{}", messages::identity_failed(.0))]
    Identity(KeyFileError),
    #[error("{}", messages::tls_failed(.0))]
    Tls(TlsSetupError),
    /// The server did not answer the first registration, or our `dereg`.
    #[error("{}", messages::SERVER_NOT_RESPONDING)]
    ServerNotResponding,
    /// Another online client has our name.
    #[error("{}", messages::NAME_IN_USE)]
    NameInUse,
    /// The server refused the first registration for another reason.
    #[error("{}", messages::register_rejected(*.0))]
    Rejected(Reject),
    /// The server presented another key than the one pinned for its address.
    #[error("{}", messages::server_key_changed(.server, .pinned, .presented))]
    ServerKeyChanged {
        server: String,
        pinned: String,
        presented: String,
    },
    /// The pinned server keys cannot be read or written.
    #[error("{}", messages::known_servers_failed(.0))]
    KnownServers(crate::known::KnownError),
}

impl ClientError {
    /// The console already showed this error's line, in order with the rest of the
    /// session's output; start-up errors happen before the console runs and are not.
    pub fn shown(&self) -> bool {
        matches!(
            self,
            ClientError::ServerNotResponding | ClientError::NameInUse | ClientError::Rejected(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_the_seeds_and_console_ones_are_marked_shown() {
        let busy = io::Error::from(io::ErrorKind::AddrInUse);
        let e = ClientError::Bind {
            what: "UDP",
            port: 1301,
            source: busy,
        };
        assert_eq!(
            e.to_string(),
            "[Cannot use UDP port 1301: it is already in use]"
        );
        assert!(!e.shown());
        let e = ClientError::NoDownloadDir("/x".into());
        assert_eq!(e.to_string(), "[Download folder /x does not exist]");
        assert_eq!(
            messages::prompt_line(ClientError::NameInUse),
            ">>> [Registration rejected: Client username already in use.]"
        );
        assert_eq!(
            ClientError::Rejected(Reject::BadProof).to_string(),
            "[Registration rejected: the proof of identity was not accepted]"
        );
        assert_eq!(
            ClientError::ServerNotResponding.to_string(),
            "[Server not responding]"
        );
        for e in [
            ClientError::ServerNotResponding,
            ClientError::NameInUse,
            ClientError::Rejected(Reject::InvalidName),
        ] {
            assert!(e.shown(), "{e}");
        }
    }
}
