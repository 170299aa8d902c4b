//! Why a punched path could not be set up: one typed error, one line each.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use fileapp_core::reach::punch::PunchFailure;

/// Why [`super::punch`] failed. Every variant reads as one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum PunchError {
    #[error("cannot open a UDP socket for punching: {0}")]
    Bind(#[source] io::Error),
    #[error("the punch socket failed: {0}")]
    Socket(#[source] io::Error),
    #[error("no UDP path to the peer could be punched (its public endpoint was not learned within {})", secs(*.0))]
    NoPeerEndpoint(Duration),
    #[error("no UDP path to the peer could be punched (no answer within {})", secs(*.0))]
    NoAnswer(Duration),
    #[error("no UDP path to the peer could be punched (the endpoint {0} cannot be sent to)")]
    BadPeerEndpoint(SocketAddr),
    #[error(
        "no UDP path to the peer could be punched (the control channel gave up before naming its endpoint)"
    )]
    ControlClosed,
    #[error("QUIC setup failed: {0}")]
    Setup(String),
    #[error("the peer at {peer} presented key {presented}, not the pinned {expected}")]
    WrongKey {
        peer: SocketAddr,
        expected: String,
        presented: String,
    },
    #[error("the peer at {0} refused our key")]
    RefusedOurKey(SocketAddr),
    #[error("the QUIC handshake with {0} failed: {1}")]
    Handshake(SocketAddr, String),
    #[error("the QUIC connection to {peer} did not start within {}", secs(*.after))]
    Timeout { peer: SocketAddr, after: Duration },
}

impl PunchError {
    /// The error for a failed punch machine with the timeouts it ran under.
    pub(super) fn from_failure(
        f: PunchFailure,
        cfg: &fileapp_core::reach::punch::PunchConfig,
        peer: Option<SocketAddr>,
    ) -> PunchError {
        match f {
            PunchFailure::NoPeerEndpoint => PunchError::NoPeerEndpoint(cfg.learn_timeout),
            PunchFailure::NoAnswer => PunchError::NoAnswer(cfg.punch_timeout),
            PunchFailure::BadPeerEndpoint => {
                PunchError::BadPeerEndpoint(peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))))
            }
        }
    }
}

/// "2 s", "250 ms".
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_one_line() {
        let e = PunchError::NoAnswer(Duration::from_secs(2));
        assert_eq!(
            e.to_string(),
            "no UDP path to the peer could be punched (no answer within 2 s)"
        );
        let e = PunchError::NoPeerEndpoint(Duration::from_millis(300));
        assert!(e.to_string().ends_with("within 300 ms)"), "{e}");
        assert!(!PunchError::ControlClosed.to_string().contains('\n'));
    }
}
