//! Waiting and moving bytes: ppoll with a deadline, epoll (create, ctl, pwait2), and the
//! non-blocking socket reads and writes of the channels.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;

/// `ppoll(2)` for the given events (POLLIN, POLLOUT) on each fd until one is ready or `deadline`
/// passes (`None`: forever); `revents[i]` gets what happened on `fds[i]`. Retries on EINTR.
pub fn poll_io(
    fds: &[(RawFd, i16)],
    deadline: Option<Instant>,
    revents: &mut Vec<i16>,
) -> Result<bool, Errno> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    loop {
        // ppoll takes nanoseconds: a deadline is kept to the microsecond, not rounded up to the
        // next millisecond as poll(2) would.
        let left = deadline.map(|d| super::timespec(d.saturating_duration_since(Instant::now())));
        let ts = left
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: pfds is a valid array of pfds.len() pollfd structs and ts null or a valid
        // timespec, both for the whole call; a null sigmask leaves the mask as it is.
        let r = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                ts,
                std::ptr::null(),
            )
        };
        if r < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        revents.clear();
        revents.extend(pfds.iter().map(|p| p.revents));
        return Ok(r > 0);
    }
}

/// Writes what the socket takes now of `bytes`, without waiting; returns how much.
pub fn send_some(fd: RawFd, bytes: &[u8]) -> Result<usize, Errno> {
    let flags = nix::sys::socket::MsgFlags::MSG_NOSIGNAL | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
    loop {
        match nix::sys::socket::send(fd, bytes, flags) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// Reads what is available on a non-blocking fd into `buf`, up to about `budget` bytes; returns
/// whether the stream has ended.
pub fn read_available(fd: &OwnedFd, buf: &mut Vec<u8>, budget: usize) -> Result<bool, Errno> {
    // Small enough that zeroing it costs nothing next to the system call; larger data takes
    // more reads of the same turn.
    let mut chunk = [0u8; 8 * 1024];
    while buf.len() < budget {
        match nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
            Ok(0) => return Ok(true),
            // A short read took all there was: do not spend a system call to hear EAGAIN.
            Ok(n) if n < chunk.len() => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(false);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(false),
            Err(Errno::ECONNRESET) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Writes all of `bytes` to a blocking socket, without SIGPIPE if the reader is gone.
pub fn send_all(fd: RawFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match nix::sys::socket::send(fd, bytes, nix::sys::socket::MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> Result<OwnedFd, Errno> {
    // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(2)`: `op` is `EPOLL_CTL_ADD`, `_MOD` or `_DEL`; `events` a mask of `EPOLLIN`, ...
pub fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> Result<(), Errno> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: ev is a valid epoll_event for the call (ignored by EPOLL_CTL_DEL).
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `epoll_pwait2(2)` until `deadline` (`None`: forever), to the microsecond; falls back to
/// `epoll_pwait` (milliseconds, rounded up) on kernels before 5.11. With `sigmask`, that mask is
/// in force during the wait only, atomically (the pselect pattern: block signals, check a flag,
/// wait with them unblocked — a signal that arrived in between interrupts the wait at once). Fills `out`; EINTR gives an
/// empty `out` (the caller looks at its clock and comes back).
pub fn epoll_wait(
    epfd: RawFd,
    deadline: Option<Instant>,
    sigmask: Option<&libc::sigset_t>,
    out: &mut Vec<libc::epoll_event>,
) -> Result<(), Errno> {
    static NO_PWAIT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    out.clear();
    let cap = out.capacity().max(64);
    out.reserve(cap);
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let n = if !NO_PWAIT2.load(std::sync::atomic::Ordering::Relaxed) {
        let ts = left.map(super::timespec);
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let mask = sigmask.map_or(std::ptr::null(), |m| m as *const libc::sigset_t);
        // SAFETY: out has room for `cap` events, tsp is null or a valid timespec, mask is null
        // (unchanged) or a valid sigset for the call, with its size; all live for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epfd,
                out.as_mut_ptr(),
                cap as libc::c_int,
                tsp,
                mask,
                // The kernel's sigset is 64 signals, 8 bytes: the first 8 of glibc's sigset_t.
                8usize,
            )
        };
        if r < 0 && Errno::last() == Errno::ENOSYS {
            NO_PWAIT2.store(true, std::sync::atomic::Ordering::Relaxed);
            return epoll_wait(epfd, deadline, sigmask, out);
        }
        r as i32
    } else {
        let ms = left.map_or(-1, |l| {
            let ms = l.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        });
        let mask = sigmask.map_or(std::ptr::null(), |m| m as *const libc::sigset_t);
        // SAFETY: out has room for `cap` events, mask is null or a valid sigset, for the call.
        unsafe { libc::epoll_pwait(epfd, out.as_mut_ptr(), cap as libc::c_int, ms, mask) }
    };
    if n < 0 {
        return match Errno::last() {
            Errno::EINTR => Ok(()),
            e => Err(e),
        };
    }
    // SAFETY: the kernel initialised the first n entries.
    unsafe { out.set_len(n as usize) };
    Ok(())
}

/// Blocks every signal that can be blocked; returns the mask that was in force before.
pub fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset and sigprocmask fill and read it for the call.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
        old
    }
}

/// Puts back a signal mask saved by [`block_all_signals`]; pending signals are delivered now.
pub fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: old is a valid sigset_t.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

/// Writes all of `bytes` to a file descriptor (a log line to stderr), retrying on EINTR.
pub fn write_all_fd(fd: RawFd, mut bytes: &[u8]) -> Result<(), Errno> {
    // SAFETY: the fd is borrowed for the call only.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
