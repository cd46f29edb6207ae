//! Forking a supervised child, and the child's side of its channel.
//!
//! [`fork_child`] makes the socketpair, forks, and in the child sets up what every supervised child
//! has: its own process group, the parent-death signal (which takes the group down), and, for a job
//! with a deadline, a backstop timer of its own. The parent's side goes to the runtime
//! (`Runtime::adopt`), which supervises it from then on. Nothing here reads or decides anything.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{fork, getpid, setpgid, ForkResult, Pid};

use crate::core::error::{Error, Result};
use crate::core::sys;
use crate::core::wire::{FrameDecoder, Message};

/// What `fork_child` gives each side.
pub enum Forked {
    Parent(Spawned),
    Child(ChildEnd),
}

/// A child just forked, not yet handed to the runtime.
pub struct Spawned {
    pub pid: Pid,
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) channel: OwnedFd,
    pub(crate) started: Instant,
    pub(crate) started_ns: u64,
}

/// Forks a supervised child: its own process group, killed (with its group) when the parent dies,
/// one end of a socketpair to talk to the parent, and with `backstop` a timer that kills it (and
/// its group) that long after the fork whatever the parent does.
///
/// The caller must make sure no other thread is alive (fork safety): the binding layer only calls
/// this from PHP's main thread, and Forklift starts no threads.
pub fn fork_child(backstop: Option<Duration>) -> Result<Forked> {
    let pair = || {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
    };
    let (parent_end, child_end) = match pair() {
        // Out of file descriptors: raise the soft limit to the hard one, once, and try again.
        Err(Errno::EMFILE) if sys::nofile_limits().0 < sys::raise_nofile_limit() => pair(),
        other => other,
    }
    .map_err(|e| fd_error("socketpair", e))?;
    let parent = getpid();
    let started_ns = sys::monotonic_ns();
    let started = Instant::now();
    // SAFETY: Forklift keeps no thread but the main one (see above), so the child holds no lock
    // that another thread owned; the child only runs PHP and ends with _exit.
    match unsafe { fork() }.map_err(fork_error)? {
        ForkResult::Child => {
            drop(parent_end);
            sys::unblock_owned_in_child();
            close_inherited();
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            if !sys::arm_parent_death(parent) {
                // The parent died between fork and prctl: nobody will ever wait for us.
                sys::exit_now(1);
            }
            // Orphaned descendants stay in this child's tree, where its end finds them.
            sys::become_subreaper();
            if let Some(after) = backstop {
                // Without its own timer the job still has its parent's; go on.
                let _ = sys::arm_backstop(after.saturating_sub(started.elapsed()));
            }
            Ok(Forked::Child(ChildEnd { fd: child_end }))
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            // Also set it from here so the group exists before we return (the shell's trick);
            // EACCES/ESRCH mean the child already did it or already left.
            let _ = setpgid(child, child);
            // Without a pidfd (old kernel) the exit is found by waitid.
            // Out of fds here too, the child runs: the runtime then finds its exit by waitid.
            let pidfd = sys::pidfd_open(child).ok().flatten();
            nix::fcntl::fcntl(
                parent_end.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(|e| Error::sys("fcntl", e))?;
            Ok(Forked::Parent(Spawned {
                pid: child,
                pidfd,
                channel: parent_end,
                started,
                started_ns,
            }))
        }
    }
}

thread_local! {
    /// Fds of this process that no child may keep: the daemon's pid file (its lock), status
    /// socket, supervisor link. A child closes them first thing after the fork.
    static CLOSE_IN_CHILD: std::cell::RefCell<Vec<RawFd>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes every child forked from now on close `fd` right after the fork.
pub fn close_in_children(fd: RawFd) {
    CLOSE_IN_CHILD.with(|c| c.borrow_mut().push(fd));
}

/// Undoes [`close_in_children`] (call before closing `fd`, so that a reused number is kept).
pub fn keep_in_children(fd: RawFd) {
    CLOSE_IN_CHILD.with(|c| c.borrow_mut().retain(|&f| f != fd));
}

fn close_inherited() {
    let fds = CLOSE_IN_CHILD.with(|c| std::mem::take(&mut *c.borrow_mut()));
    for fd in fds {
        // SAFETY: the fd was the parent's and is ours to close in the child; nothing in the child
        // owns it (the structures that did are the parent's, abandoned without closing it twice:
        // they are dropped in the child only by `runtime::reset_in_child`, which never closes
        // these).
        unsafe { libc::close(fd) };
    }
}

/// Errors of calls that make file descriptors: EMFILE/ENFILE name the limit and what to change.
fn fd_error(call: &'static str, e: Errno) -> Error {
    match e {
        Errno::EMFILE => {
            let (soft, hard) = sys::nofile_limits();
            Error::Limit(format!(
                "{call}() failed: EMFILE: this process has reached its limit of {soft} open files \
                 (ulimit -n; hard limit {hard}); each running job holds 2: wait for jobs before \
                 starting more, or raise the limit (ulimit -n, LimitNOFILE= in systemd)"
            ))
        }
        Errno::ENFILE => Error::Limit(format!(
            "{call}() failed: ENFILE: the system-wide limit of open files is reached \
             (fs.file-max): wait for jobs before starting more"
        )),
        e => Error::sys(call, e),
    }
}

fn fork_error(e: Errno) -> Error {
    Error::Fork(e)
}

/// The child's end of the channel. Writes block (the parent reads while it waits).
pub struct ChildEnd {
    fd: OwnedFd,
}

impl ChildEnd {
    /// Sends one message. A parent that has gone away is not an error worth dying for: the child
    /// carries on and its death signal will end it.
    pub fn send(&self, msg: &Message) {
        self.send_frame(&msg.encode());
    }

    /// Sends a frame made by [`Message::encode`].
    pub fn send_frame(&self, frame: &[u8]) {
        let _ = sys::send_all(self.fd.as_raw_fd(), frame);
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A pool worker's reading side of its channel: waits until the parent sends a message.
pub struct Receiver {
    fd: RawFd,
    decoder: FrameDecoder,
    ready: std::collections::VecDeque<Message>,
    /// Read buffer, allocated once (zeroing 64 KiB per read showed in profiles).
    buf: Box<[u8]>,
}

impl Receiver {
    /// Reads from the child end's fd (which stays owned by its [`ChildEnd`]).
    pub fn new(end: &ChildEnd, max_frame: usize) -> Receiver {
        Receiver {
            fd: end.raw_fd(),
            decoder: FrameDecoder::new(max_frame),
            ready: Default::default(),
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Whether a message has arrived that `next` would return without waiting.
    pub fn has_pending(&mut self) -> bool {
        if !self.ready.is_empty() {
            return true;
        }
        let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        match nix::sys::socket::recv(self.fd, &mut self.buf, flags) {
            Ok(n) if n > 0 => {
                let mut out = Vec::new();
                if self.decoder.push(&self.buf[..n], &mut out).is_ok() {
                    self.ready.extend(out);
                }
                // Bytes of a frame not yet complete also mean a task is on its way.
                true
            }
            _ => false,
        }
    }

    /// The next message; `None` when the parent is gone or sent something unreadable.
    pub fn next(&mut self) -> Option<Message> {
        while self.ready.is_empty() {
            // Wait in poll(2), not in read(2): a reader blocked in read() on a socket is woken
            // each time the parent reads our previous reply (the socket's write space changes);
            // poll only wakes for input.
            let mut revents = Vec::new();
            if sys::poll_io(&[(self.fd, libc::POLLIN)], None, &mut revents).is_err() {
                return None;
            }
            let n = match nix::unistd::read(self.fd, &mut self.buf) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(_) => return None,
            };
            let mut out = Vec::new();
            self.decoder.push(&self.buf[..n], &mut out).ok()?;
            self.ready.extend(out);
        }
        self.ready.pop_front()
    }
}
