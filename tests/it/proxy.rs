//! A man-in-the-middle TCP proxy for peer transfers: forwards connections from its
//! listening address to an upstream (an owner's TCP port), and can hold the
//! owner→requester direction after a byte budget (a paused provider) or flip one byte of
//! it (a corrupt network).
//!
//! Owners are reached through it with `--advertise-ip ::1`: an owner registered over IPv4
//! listens on `0.0.0.0:P`, the table sends requesters to `[::1]:P`, where the proxy
//! listens and forwards to `127.0.0.1:P`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const NONE: u64 = u64::MAX;

struct Shared {
    /// Owner→requester bytes forwarded per connection before holding (NONE: no limit).
    budget: AtomicU64,
    /// Offset in each connection's owner→requester stream whose byte is flipped.
    flip_at: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
    stop: AtomicBool,
}

pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any) and forwards every connection to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).expect("proxy bind");
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            budget: AtomicU64::new(NONE),
            flip_at: AtomicU64::new(NONE),
            accepted: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            while !sh.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        down.set_nonblocking(false).unwrap();
                        sh.accepted.fetch_add(1, Ordering::SeqCst);
                        let Ok(up) = TcpStream::connect(upstream) else {
                            continue; // dropping `down` closes it, like a refused port
                        };
                        spawn_pipes(sh.clone(), down, up);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { shared }
    }

    /// From now on each new connection forwards at most `bytes` from the owner, then
    /// holds (the owner blocks once the socket buffers are full).
    pub fn pause_after(&self, bytes: u64) {
        self.shared.budget.store(bytes, Ordering::SeqCst);
    }

    /// Lets every connection, held or not, forward freely again.
    pub fn release(&self) {
        self.shared.budget.store(NONE, Ordering::SeqCst);
    }

    /// Flips (XOR 0xff) the byte at `offset` of each connection's owner→requester stream.
    pub fn flip_byte_at(&self, offset: Option<u64>) {
        self.shared
            .flip_at
            .store(offset.unwrap_or(NONE), Ordering::SeqCst);
    }

    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_pipes(sh: Arc<Shared>, down: TcpStream, up: TcpStream) {
    let (down2, up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
    let sh2 = sh.clone();
    // Set when the requester resets its connection (e.g. a cancelled download closing
    // with unread data): a held owner direction then ends too, as it would without us.
    let reset = Arc::new(AtomicBool::new(false));
    let reset2 = reset.clone();
    // Requester → owner: forwarded as is.
    std::thread::spawn(move || pipe(&sh2, &reset2, down2, up2, false));
    // Owner → requester: budget and flip apply.
    std::thread::spawn(move || pipe(&sh, &reset, up, down, true));
}

fn pipe(sh: &Shared, reset: &AtomicBool, mut from: TcpStream, mut to: TcpStream, owner_side: bool) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let mut want = buf.len();
        if owner_side {
            let budget = sh.budget.load(Ordering::SeqCst);
            if offset >= budget {
                if reset.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
                continue; // held: read nothing more from the owner
            }
            want = want.min((budget - offset).min(buf.len() as u64) as usize);
        }
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => {
                reset.store(true, Ordering::SeqCst);
                break;
            }
        };
        if owner_side {
            let flip = sh.flip_at.load(Ordering::SeqCst);
            if flip >= offset && flip < offset + n as u64 {
                buf[(flip - offset) as usize] ^= 0xff;
            }
        }
        offset += n as u64;
        if to.write_all(&buf[..n]).is_err() {
            reset.store(true, Ordering::SeqCst);
            break;
        }
    }
    if reset.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    } else {
        let _ = to.shutdown(Shutdown::Write);
    }
}
