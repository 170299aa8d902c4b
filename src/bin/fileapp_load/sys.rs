//! The load generator's system calls beyond `std`, one function per operation: batched
//! UDP receive, epoll, a signal, the clock tick rate, the open-files limit. Linux only.
//!
//! Every one goes through `nix`, which holds the `unsafe` and checks the results, so
//! the generator has no `unsafe` block of its own (the crate root denies it). A call
//! that some day needs raw `libc` belongs here, behind a safe function, with a
//! `// SAFETY:` comment on its block.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{MsgFlags, MultiHeaders, recvmmsg};
use nix::unistd::{Pid, SysconfVar, sysconf};

/// Message headers for [`recv_batch`], allocated once so that a batch allocates nothing.
pub struct Headers {
    headers: MultiHeaders<()>,
}

impl Headers {
    /// Headers for batches of up to `n` datagrams.
    pub fn new(n: usize) -> Headers {
        Headers {
            headers: MultiHeaders::preallocate(n, None),
        }
    }
}

/// `recvmmsg` without blocking: fills `slots` (one buffer each) with queued datagrams
/// and their lengths into `lens`; returns how many. `EAGAIN` when none is queued.
pub fn recv_batch<'a>(
    fd: BorrowedFd<'_>,
    headers: &'a mut Headers,
    slots: &'a mut [[IoSliceMut<'a>; 1]],
    lens: &mut [usize],
) -> io::Result<usize> {
    let got = recvmmsg(
        fd.as_raw_fd(),
        &mut headers.headers,
        slots.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    let mut n = 0;
    for (len, msg) in lens.iter_mut().zip(got) {
        *len = msg.bytes;
        n += 1;
    }
    Ok(n)
}

/// A new epoll instance (closed on exec).
pub fn epoll_new() -> io::Result<Epoll> {
    Ok(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?)
}

/// Watches `fd` for input, level-triggered; its events carry `token`.
pub fn epoll_add(epoll: &Epoll, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
    Ok(epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?)
}

/// Waits up to `timeout_ms` for events into `events`; returns how many.
pub fn epoll_wait(epoll: &Epoll, events: &mut [EpollEvent], timeout_ms: u16) -> io::Result<usize> {
    Ok(epoll.wait(events, timeout_ms)?)
}

/// Sends SIGTERM to process `pid`.
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(kill(Pid::from_raw(pid), Signal::SIGTERM)?)
}

/// Sends SIGKILL to process `pid`.
pub fn kill_hard(pid: u32) -> anyhow::Result<()> {
    let pid = i32::try_from(pid)?;
    Ok(kill(Pid::from_raw(pid), Signal::SIGKILL)?)
}

/// Clock ticks per second, the unit of CPU times in /proc (`None` if unknown).
pub fn clock_ticks_per_second() -> Option<u64> {
    let ticks = sysconf(SysconfVar::CLK_TCK).ok()??;
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

/// Raises the open-files limit to at least `n` (one socket per simulated client); the
/// hard limit too where the process may (root). Returns the soft limit now in force.
pub fn raise_nofile(n: u64) -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= n {
        return Ok(soft);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, n, hard.max(n)).is_err() {
        // Not allowed above the hard limit: take what is allowed.
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        return Ok(hard);
    }
    Ok(n)
}
