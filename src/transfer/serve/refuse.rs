//! Why a request is refused: the requester's key checked against its claimed name, the
//! refusal an [`OfferError`] becomes, and short texts for failures in notices.

use crate::client::messages as msg;
use std::io;

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::{Conn, PeerStream};
use crate::identity::{PublicKey, fingerprint};
use crate::transfer::header::{Response, Status};
use crate::transfer::library::OfferError;
use crate::transfer::printable;

/// How long a request from a name not (yet) in our table waits for the table update.
const UNKNOWN_PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How often the table is looked at again meanwhile.
const UNKNOWN_PEER_POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// What went wrong with a request, for the refusal sent and the notice shown.
pub(super) struct Refusal {
    pub(super) status: Status,
    /// Sent to the requester.
    pub(super) message: String,
    /// Shown to our user after "Refused request for 'x' from C: ".
    pub(super) reason: String,
}

impl Conn {
    /// Is `presented` the key `name` is bound to in our table? A requester that has just
    /// registered may reach us before the table update that names it: wait for it a
    /// little before refusing.
    pub(super) async fn check_key(&self, name: &str, presented: PublicKey) -> Result<(), Refusal> {
        let shown = printable(name);
        let deadline = tokio::time::Instant::now() + UNKNOWN_PEER_WAIT;
        let mut known = self.auth.keys.key_of(name);
        while known.is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(UNKNOWN_PEER_POLL).await;
            known = self.auth.keys.key_of(name);
        }
        match known {
            Some(k) if k == presented => Ok(()),
            Some(k) => Err(Refusal {
                status: Status::Error,
                message: format!(
                    "your key ({}) is not the key {shown} is registered with",
                    fingerprint(&presented)
                ),
                reason: format!(
                    "it presented key {}, but {shown} is registered with key {}",
                    fingerprint(&presented),
                    fingerprint(&k)
                ),
            }),
            None => Err(Refusal {
                status: Status::Error,
                message: format!(
                    "'{shown}' is not in the owner's table, so its key cannot be checked (try again shortly)"
                ),
                reason: format!(
                    "'{shown}' is not in this client's table, so its key {} cannot be checked",
                    fingerprint(&presented)
                ),
            }),
        }
    }

    /// Tells our user and the requester `who` that its request for `shown` is refused.
    pub(super) async fn refuse<S: PeerStream>(
        &self,
        stream: &mut S,
        shown: &str,
        who: &str,
        r: Refusal,
    ) {
        self.notice(msg::refused_request(shown, who, &r.reason));
        self.send_refusal(stream, r.status, &r.message).await;
    }

    /// Sends a refusal header (best effort: the requester may be gone).
    pub(super) async fn send_refusal<S: PeerStream>(
        &self,
        stream: &mut S,
        status: Status,
        message: &str,
    ) {
        if let Ok(bytes) = Response::refuse(status, message).encode() {
            let _ = timeout(self.cfg.stall_timeout, stream.write_all(&bytes)).await;
        }
    }
}

/// The refusal for a file that could not be opened (or hashed) for serving.
pub(super) fn refusal_for(name: &str, e: OfferError) -> Refusal {
    let shown = printable(name);
    let (status, message, reason) = match e {
        OfferError::NotFound(_) => (
            Status::Error,
            format!("'{shown}' is no longer available"),
            "the file no longer exists".to_string(),
        ),
        OfferError::NotAFile(_)
        | OfferError::BadName(_)
        | OfferError::TreeName(..)
        | OfferError::TooManyEntries(..) => (
            Status::NotOffered,
            format!("'{shown}' is not offered"),
            "not a regular file inside the shared folder".to_string(),
        ),
        OfferError::Unstable(_) => (
            Status::Busy,
            format!("'{shown}' is being modified, try later"),
            "the file keeps changing".to_string(),
        ),
        OfferError::NoFolder => (
            Status::NotOffered,
            format!("'{shown}' is not offered"),
            "no shared folder".to_string(),
        ),
        OfferError::Io(_, e) => (
            Status::Error,
            format!("'{shown}' cannot be read"),
            format!("cannot read it: {e}"),
        ),
    };
    Refusal {
        status,
        message,
        reason,
    }
}

/// A failed TLS handshake, for a notice: rustls' own error when there is one.
pub(crate) fn describe_tls(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        // What our verifier says of a key the table does not list.
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        )) => "its key is not in this client's table".into(),
        Some(rustls::Error::AlertReceived(a)) => {
            format!("the requester rejected the TLS handshake ({a:?})")
        }
        Some(r) => format!("TLS handshake: {r}"),
        None => describe_io(e),
    }
}

/// Short human text for the common network failures.
pub(crate) fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::BrokenPipe => "connection closed by the requester".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        _ => e.to_string(),
    }
}
