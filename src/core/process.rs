//! Job processes: forking one (own process group, death signal, a channel to the parent), and the
//! parent's handle on it through to the reaped [`Report`].
//!
//! State of a [`Job`]: `Running` (channel being read as data arrives) → `Finished(Report)`, entered
//! exactly once by [`Job::finish`], which kills what is left of the job's process group, drains the
//! channel and reaps the child. A handle is usable only from the process that forked it.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::signal::{killpg, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{fork, getpid, setpgid, ForkResult, Pid};

use crate::core::error::{Error, Result};
use crate::core::ipc::{FrameDecoder, Message};
use crate::core::outcome::Report;
use crate::core::sys;

/// What `fork_job` gives each side.
pub enum Forked {
    Parent(Job),
    Child(ChildEnd),
}

/// Forks a job child: its own process group, killed (with its group) when the parent dies, and one
/// end of a socketpair to talk to the parent.
///
/// The caller must make sure no other thread is alive (DESIGN.md §3): the binding layer only calls
/// this from PHP's main thread and Forklift starts no threads.
pub fn fork_job(max_frame: usize) -> Result<Forked> {
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair", e))?;
    let parent = getpid();
    let started_ns = sys::monotonic_ns();
    // SAFETY: Forklift keeps no thread but the main one (see above), so the child holds no lock
    // that another thread owned; the child only runs PHP and ends with _exit.
    match unsafe { fork() }.map_err(Error::Fork)? {
        ForkResult::Child => {
            drop(parent_end);
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            if !sys::arm_parent_death(parent) {
                // The parent died between fork and prctl: nobody will ever wait for us.
                sys::exit_now(1);
            }
            Ok(Forked::Child(ChildEnd { fd: child_end }))
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            // Also set it from here so the group exists before fork_job returns (the shell's trick);
            // EACCES/ESRCH mean the child already did it or already left.
            let _ = setpgid(child, child);
            let pidfd = sys::pidfd_open(child).map_err(|e| Error::sys("pidfd_open", e))?;
            nix::fcntl::fcntl(
                parent_end.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(|e| Error::sys("fcntl", e))?;
            Ok(Forked::Parent(Job {
                pid: child,
                owner: parent,
                pidfd,
                channel: Some(parent_end),
                decoder: FrameDecoder::new(max_frame),
                messages: Vec::new(),
                channel_error: None,
                started_ns,
                report: None,
            }))
        }
    }
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

/// The parent's handle on a job child.
pub struct Job {
    pid: Pid,
    owner: Pid,
    pidfd: Option<OwnedFd>,
    channel: Option<OwnedFd>,
    decoder: FrameDecoder,
    messages: Vec<Message>,
    channel_error: Option<Error>,
    started_ns: u64,
    report: Option<Report>,
}

impl Job {
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    pub fn report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    /// Errors unless called from the process that forked the job.
    pub fn check_owner(&self) -> Result<()> {
        let current = getpid();
        if current != self.owner {
            return Err(Error::NotOwner {
                pid: self.pid.as_raw(),
                owner: self.owner.as_raw(),
                current: current.as_raw(),
            });
        }
        Ok(())
    }

    /// File descriptors to poll while the job runs: (channel, pidfd).
    pub(crate) fn poll_fds(&self) -> (Option<RawFd>, Option<RawFd>) {
        if self.report.is_some() {
            return (None, None);
        }
        (
            self.channel.as_ref().map(|f| f.as_raw_fd()),
            self.pidfd.as_ref().map(|f| f.as_raw_fd()),
        )
    }

    /// Reads whatever the child has sent so far.
    pub(crate) fn pump(&mut self) {
        let Some(fd) = &self.channel else { return };
        let mut buf = Vec::new();
        let eof = match sys::read_available(fd, &mut buf) {
            Ok(eof) => eof,
            Err(e) => {
                self.fail_channel(Error::Channel(format!("read failed: {e}")));
                true
            }
        };
        if let Err(e) = self.decoder.push(&buf, &mut self.messages) {
            self.fail_channel(e);
        }
        if eof {
            // Closing stops poll from reporting an endless end-of-stream.
            self.channel = None;
        }
    }

    fn fail_channel(&mut self, e: Error) {
        if self.channel_error.is_none() {
            self.channel_error = Some(e);
        }
    }

    /// Whether the child has exited (it may not be reaped yet). Never blocks.
    pub fn has_exited(&self) -> bool {
        if self.report.is_some() {
            return true;
        }
        match &self.pidfd {
            Some(fd) => {
                let mut ready = Vec::new();
                let deadline = Some(std::time::Instant::now());
                sys::poll_readable(&[fd.as_raw_fd()], deadline, &mut ready).unwrap_or(false)
            }
            None => {
                use nix::sys::wait::{waitid, Id, WaitPidFlag};
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
                !matches!(
                    waitid(Id::Pid(self.pid), flags),
                    Ok(nix::sys::wait::WaitStatus::StillAlive)
                )
            }
        }
    }

    /// Once the child has exited: end what is left of its process group (grandchildren it spawned),
    /// drain the channel, reap it and decide the outcome. Blocks only while reaping an exited child.
    pub(crate) fn finish(&mut self) -> Result<&Report> {
        if self.report.is_none() {
            // The zombie leader keeps the group id alive, so this cannot hit a reused id.
            let _ = killpg(self.pid, Signal::SIGKILL);
            self.pump();
            if let Err(e) = self.decoder.finish() {
                self.fail_channel(e);
            }
            let observed = sys::monotonic_ns();
            let status = sys::wait4(self.pid, true)
                .map_err(|e| Error::sys("wait4", e))?
                .expect("a blocking wait4 returns a status");
            self.channel = None;
            self.pidfd = None;
            let messages = std::mem::take(&mut self.messages);
            self.report = Some(Report::decide(
                self.pid.as_raw(),
                messages,
                self.channel_error.as_ref(),
                status,
                self.started_ns,
                observed,
            ));
        }
        Ok(self.report.as_ref().unwrap())
    }

    /// Sends `signo` to the job child (not its group). False when it has already been reaped.
    pub fn signal(&self, signo: i32) -> Result<bool> {
        self.check_owner()?;
        if self.report.is_some() {
            return Ok(false);
        }
        // Until reaped, the pid cannot belong to another process.
        sys::send_signal(self.pid, signo).map_err(|e| match e {
            nix::errno::Errno::EINVAL => {
                Error::InvalidArgument(format!("{signo} is not a signal number"))
            }
            e => Error::sys("kill", e),
        })?;
        Ok(true)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if getpid() != self.owner {
            // A copy inherited by a forked child: the fds are the parent's business, and closing
            // them here could close unrelated fds that reuse their numbers.
            std::mem::forget(self.channel.take());
            std::mem::forget(self.pidfd.take());
        }
    }
}
