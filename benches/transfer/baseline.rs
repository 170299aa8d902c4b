//! The two hand-written limits every run is compared with: a raw `sendfile` -> `splice`
//! copy (no user-space copy, no hashing) and a verified copy (read, BLAKE3, write).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::pipe::{SpliceFlags, splice};

/// Minimal blocking sendfile sender: serves `path` once to the first connection.
fn spawn_sender(path: &Path) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let path = path.to_path_buf();
    let h = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let file = File::open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        let mut off: u64 = 0;
        while off < size {
            let n = rustix::fs::sendfile(&sock, &file, Some(&mut off), 1 << 30).expect("sendfile");
            assert!(n > 0, "sendfile: end of file before {size} bytes");
        }
    });
    (addr, h)
}

pub fn raw_run(src: &Path, out: &Path, size: u64) -> Duration {
    let (addr, sender) = spawn_sender(src);
    let t0 = Instant::now();
    let sock = TcpStream::connect(addr).unwrap();
    let file = File::create(out).unwrap();
    let (pipe_r, pipe_w) = rustix::pipe::pipe().expect("pipe");
    // A bigger pipe means fewer splice round trips.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe_w, 1 << 20);
    let flags = SpliceFlags::MOVE | SpliceFlags::MORE;
    let mut done = 0u64;
    while done < size {
        let n = splice(&sock, None, &pipe_w, None, 1 << 20, flags).expect("splice in");
        assert!(n > 0, "splice in: the sender closed early");
        let mut left = n;
        while left > 0 {
            let m = splice(&pipe_r, None, &file, None, left, flags).expect("splice out");
            assert!(m > 0, "splice out wrote nothing");
            left -= m;
        }
        done += n as u64;
    }
    file.sync_all().unwrap();
    let el = t0.elapsed();
    sender.join().unwrap();
    el
}

pub fn verified_run(src: &Path, out: &Path, size: u64, expect: &[u8; 32]) -> Duration {
    let (addr, sender) = spawn_sender(src);
    let t0 = Instant::now();
    let mut sock = TcpStream::connect(addr).unwrap();
    let mut file = File::create(out).unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        done += n as u64;
    }
    file.sync_all().unwrap();
    assert_eq!(hasher.finalize().as_bytes(), expect);
    let el = t0.elapsed();
    sender.join().unwrap();
    el
}
