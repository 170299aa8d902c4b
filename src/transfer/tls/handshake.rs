//! The TLS 1.3 handshake: rustls' unbuffered connection (client or server) driven over a
//! tokio socket until it hands over the traffic secrets, which become a [`TlsStream`].
//! Alerts that tell the peer why a handshake failed are sent before the error returns.

use std::io;
use std::sync::Arc;

use crate::transfer::link::Link;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};
use rustls::{ExtractedSecrets, SupportedCipherSuite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::record::Side;
use super::stream::TlsStream;
use super::{HANDSHAKE_IN, HANDSHAKE_OUT, Rekey, tls_io};

/// The handshake half of a rustls unbuffered connection, client or server.
trait Handshake: Sized {
    fn process<'c>(&'c mut self, incoming: &mut [u8]) -> Status<'c>;
    fn finish(
        self,
    ) -> Result<(ExtractedSecrets, Box<dyn Rekey>, SupportedCipherSuite), rustls::Error>;
    fn peer_certificate(&self) -> Option<CertificateDer<'static>>;
}

/// Encodes a pending handshake record into the given buffer.
type Encoder<'c> = Box<dyn FnMut(&mut [u8]) -> Result<usize, EncodeError> + 'c>;

/// `UnbufferedStatus` with the side erased: only the parts the driver uses.
enum Status<'c> {
    Error(usize, rustls::Error),
    Encode(usize, Encoder<'c>),
    Transmit(usize, Box<dyn FnOnce() + 'c>),
    Read(usize, Vec<u8>),
    NeedMore(usize),
    Done(usize),
    Closed(usize),
}

fn erase<'c, D: 'c>(s: UnbufferedStatus<'c, '_, D>) -> Status<'c> {
    let d = s.discard;
    match s.state {
        Err(e) => Status::Error(d, e),
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            Status::Encode(d, Box::new(move |out: &mut [u8]| e.encode(out)))
        }
        Ok(ConnectionState::TransmitTlsData(t)) => Status::Transmit(d, Box::new(move || t.done())),
        Ok(ConnectionState::ReadTraffic(mut r)) => {
            let mut data = Vec::new();
            let mut extra = 0;
            while let Some(rec) = r.next_record() {
                match rec {
                    Ok(rec) => {
                        extra += rec.discard;
                        data.extend_from_slice(rec.payload);
                    }
                    Err(e) => return Status::Error(d + extra, e),
                }
            }
            Status::Read(d + extra, data)
        }
        Ok(ConnectionState::BlockedHandshake) => Status::NeedMore(d),
        Ok(ConnectionState::WriteTraffic(_)) => Status::Done(d),
        Ok(_) => Status::Closed(d),
    }
}

fn confidentiality_limit(suite: SupportedCipherSuite) -> u64 {
    match suite {
        SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
        #[allow(unreachable_patterns)]
        _ => 1 << 23,
    }
}

/// The client and server connections offer the same calls under different types.
macro_rules! handshake_for {
    ($conn:ty) => {
        impl Handshake for $conn {
            fn process<'c>(&'c mut self, incoming: &mut [u8]) -> Status<'c> {
                erase(self.process_tls_records(incoming))
            }
            fn finish(
                self,
            ) -> Result<(ExtractedSecrets, Box<dyn Rekey>, SupportedCipherSuite), rustls::Error>
            {
                let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
                let suite = kernel.negotiated_cipher_suite();
                Ok((secrets, Box::new(kernel), suite))
            }
            fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
                self.peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.clone().into_owned())
            }
        }
    };
}

handshake_for!(UnbufferedClientConnection);
handshake_for!(UnbufferedServerConnection);

/// What the driver does after rustls processed what it has.
enum Next {
    Continue,
    Write,
    Read,
    Done,
    Stop,
}

/// The driver's buffers and what it learnt so far.
struct Driver {
    sock: Link,
    /// Received handshake bytes not yet consumed: `inbuf[..used]`.
    inbuf: Vec<u8>,
    used: usize,
    /// Encoded bytes not yet written: `out[..out_used]`.
    out: Vec<u8>,
    out_used: usize,
    /// Application data that rustls decrypted while finishing the handshake.
    early: Vec<u8>,
    /// The first error; the alert saying so still has to go out.
    failed: Option<rustls::Error>,
}

impl Driver {
    /// Acts on one status: returns how many input bytes it consumed and what comes next.
    fn step(&mut self, status: Status<'_>) -> io::Result<(usize, Next)> {
        let failed = self.failed.is_some();
        Ok(match status {
            Status::Error(d, e) => {
                // Loop once more (with nothing new) so the alert gets encoded and sent.
                self.failed.get_or_insert(e);
                (d, if failed { Next::Stop } else { Next::Continue })
            }
            Status::Encode(d, mut encode) => loop {
                match encode(&mut self.out[self.out_used..]) {
                    Ok(n) => {
                        self.out_used += n;
                        break (d, Next::Continue);
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        self.out.resize(self.out_used + required_size, 0);
                    }
                    Err(e) => return Err(io::Error::other(e.to_string())),
                }
            },
            Status::Transmit(d, done) => {
                done();
                (d, Next::Write)
            }
            Status::Read(d, data) => {
                self.early.extend_from_slice(&data);
                (d, Next::Continue)
            }
            Status::NeedMore(d) => (d, if failed { Next::Stop } else { Next::Read }),
            Status::Done(d) => (d, if failed { Next::Stop } else { Next::Done }),
            Status::Closed(d) => (d, Next::Stop),
        })
    }

    /// Does the I/O `next` asks for. `Ok(true)` once the handshake is done.
    async fn act(&mut self, next: Next) -> io::Result<bool> {
        match next {
            Next::Continue => {}
            Next::Write => {
                let w = self.sock.write_all(&self.out[..self.out_used]).await;
                self.out_used = 0;
                if let Err(e) = w {
                    return Err(self.failed.take().map(tls_io).unwrap_or(e));
                }
            }
            Next::Read => {
                if self.used == self.inbuf.len() {
                    self.inbuf.resize(self.inbuf.len() * 2, 0);
                }
                let n = self.sock.read(&mut self.inbuf[self.used..]).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
                self.used += n;
            }
            Next::Stop => {
                // An alert encoded but not yet transmitted: rustls reports the error
                // again, without asking for the transmit, when more records of the
                // peer's flight follow the one that failed. Best effort.
                if self.out_used > 0 {
                    let _ = self.sock.write_all(&self.out[..self.out_used]).await;
                    self.out_used = 0;
                }
                return Err(match self.failed.take() {
                    Some(e) => tls_io(e),
                    None => io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the peer ended the TLS handshake",
                    ),
                });
            }
            Next::Done => return Ok(true),
        }
        Ok(false)
    }
}

/// Runs the handshake on `sock`. Errors carry the `rustls::Error` when there is one;
/// the alert that tells the peer why is sent before returning it.
async fn drive<H: Handshake>(mut conn: H, sock: Link, side: Side) -> io::Result<TlsStream> {
    let mut d = Driver {
        sock,
        inbuf: vec![0u8; HANDSHAKE_IN],
        used: 0,
        out: vec![0u8; HANDSHAKE_OUT],
        out_used: 0,
        early: Vec::new(),
        failed: None,
    };
    loop {
        let used = d.used;
        let status = conn.process(&mut d.inbuf[..used]);
        let (discard, next) = d.step(status)?;
        if discard > 0 {
            d.inbuf.copy_within(discard..d.used, 0);
            d.used -= discard;
        }
        if d.act(next).await? {
            break;
        }
    }
    let peer_cert = conn.peer_certificate();
    let (secrets, keys, suite) = conn.finish().map_err(tls_io)?;
    // Well inside the limit: a key update costs one small record.
    let limit = confidentiality_limit(suite);
    let limit = limit - limit / 4;
    let Driver {
        sock,
        mut inbuf,
        used,
        early,
        ..
    } = d;
    inbuf.truncate(used);
    TlsStream::new(sock, side, secrets, keys, limit, peer_cert, early, inbuf)
}

/// Requester side: TLS client handshake on `sock` with `config`.
pub async fn connect(
    sock: impl Into<Link>,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<TlsStream> {
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_io)?;
    drive(conn, sock.into(), Side::Client).await
}

/// Provider side: TLS server handshake on `sock` with `config`.
pub async fn accept(
    sock: impl Into<Link>,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_io)?;
    drive(conn, sock.into(), Side::Server).await
}
