//! (placeholder until the relay work lands: the client-side API others use)
use std::net::SocketAddr;
use std::time::Duration;

pub use fileapp_core::reach::ticket::TICKET_LEN;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay not available")]
    Unavailable,
}

pub async fn connect(
    _relay: SocketAddr,
    _ticket: &[u8; TICKET_LEN],
    _timeout: Duration,
) -> Result<tokio::net::TcpStream, RelayError> {
    Err(RelayError::Unavailable)
}
