//! The event loop's wait: one epoll instance per process, each source registered once (a job's
//! channel, its pidfd; next, the daemon's signalfd and sockets), so that a wakeup costs the same
//! with 10 or 10 000 sources. Deadlines are the runtime's (`core::runtime`): it passes the
//! earliest one to [`Reactor::wait`].
//!
//! An epoll instance is shared with every child forked after it was made (the fd is inherited),
//! and a registration lives as long as any process holds the file it names. Two rules follow,
//! kept by the runtime: a source is always removed with `EPOLL_CTL_DEL` before the parent closes
//! it, and a child never touches an inherited instance (it drops it and makes its own).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::core::error::{Error, Result};
use crate::core::sys;

/// Readiness a source is registered for.
pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;

/// One event: the source's token and what happened (`EPOLLIN`, `EPOLLOUT`, `EPOLLHUP`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub token: u64,
    pub events: u32,
}

impl Event {
    pub fn readable(&self) -> bool {
        self.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32
            != 0
    }
    pub fn writable(&self) -> bool {
        self.events & (libc::EPOLLOUT | libc::EPOLLERR) as u32 != 0
    }
}

pub struct Reactor {
    epfd: OwnedFd,
    buf: Vec<libc::epoll_event>,
}

impl Reactor {
    pub fn new() -> Result<Reactor> {
        Ok(Reactor {
            epfd: sys::epoll_create().map_err(|e| Error::sys("epoll_create1", e))?,
            buf: Vec::with_capacity(256),
        })
    }

    pub fn add(&self, fd: RawFd, interest: u32, token: u64) -> Result<()> {
        sys::epoll_ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            interest,
            token,
        )
        .map_err(|e| Error::sys("epoll_ctl", e))
    }

    pub fn modify(&self, fd: RawFd, interest: u32, token: u64) -> Result<()> {
        sys::epoll_ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_MOD,
            fd,
            interest,
            token,
        )
        .map_err(|e| Error::sys("epoll_ctl", e))
    }

    /// Removes a source; call before closing its fd.
    pub fn remove(&self, fd: RawFd) {
        // ENOENT/EBADF: never added, or already gone; nothing is left to wake us either way.
        let _ = sys::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits until a source is ready or `deadline` passes (`None`: no deadline); appends the
    /// events to `out`. Returns early, with no events, when a signal interrupts the wait.
    /// With `sigmask`, that signal mask is in force during the wait only (see `sys::epoll_wait`).
    pub fn wait(
        &mut self,
        deadline: Option<Instant>,
        sigmask: Option<&libc::sigset_t>,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        sys::epoll_wait(self.epfd.as_raw_fd(), deadline, sigmask, &mut self.buf)
            .map_err(|e| Error::sys("epoll_wait", e))?;
        out.extend(self.buf.iter().map(|e| Event {
            token: e.u64,
            events: e.events,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn a_registered_socket_wakes_the_wait_with_its_token() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut r = Reactor::new().unwrap();
        r.add(a.as_raw_fd(), READABLE, 42).unwrap();
        let mut out = Vec::new();
        r.wait(Some(Instant::now()), None, &mut out).unwrap();
        assert!(out.is_empty(), "nothing to read yet");
        use std::io::Write;
        (&b).write_all(b"x").unwrap();
        r.wait(
            Some(Instant::now() + Duration::from_secs(5)),
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].token, 42);
        assert!(out[0].readable());
        r.remove(a.as_raw_fd());
        out.clear();
        r.wait(Some(Instant::now()), None, &mut out).unwrap();
        assert!(out.is_empty(), "a removed source says nothing");
    }

    #[test]
    fn the_wait_keeps_its_deadline_to_the_millisecond() {
        let mut r = Reactor::new().unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        r.wait(Some(start + Duration::from_millis(20)), None, &mut out)
            .unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(out.is_empty());
    }
}
