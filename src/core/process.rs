//! Job processes: forking one (own process group, death signal, a channel to the parent), and the
//! parent's handle on it through to the reaped [`Report`].
//!
//! State of a [`Job`]: `Running` (channel being read as data arrives) → `Finished(Report)`, entered
//! exactly once by [`Job::finish`], which kills what is left of the job's process group, drains the
//! channel and reaps the child. A handle is usable only from the process that forked it.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

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
/// A wall-clock limit on a job, kept by the parent: at `timeout` after the fork its process group
/// gets SIGTERM, and SIGKILL `grace` later if it is still there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadline {
    pub timeout: Duration,
    pub grace: Duration,
}

/// Who reads a job's channel while the process waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Every wait of the process reads it (plain jobs): see `INBOXES`.
    Any,
    /// Only its owner (a pool reads its workers itself, message by message).
    Owner,
}

pub fn fork_job(max_frame: usize, deadline: Option<Deadline>, reader: Reader) -> Result<Forked> {
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair", e))?;
    let parent = getpid();
    let started_ns = sys::monotonic_ns();
    let started = Instant::now();
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
            // Without a pidfd (old kernel, or the child is already gone) the exit is found by waitid.
            let pidfd = sys::pidfd_open(child).ok().flatten();
            let mut inbox = Inbox {
                pid: child,
                fd: Some(parent_end),
                decoder: FrameDecoder::new(max_frame),
                messages: Vec::new(),
                error: None,
                deadline: deadline.map(|d| (started + d.timeout, d)),
                term_sent: None,
                kill_sent: false,
            };
            if let Some(fd) = &inbox.fd {
                if let Err(e) = nix::fcntl::fcntl(
                    fd.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                ) {
                    // A blocking channel could hang the parent: read nothing from it.
                    inbox.fail(Error::sys("fcntl", e));
                    inbox.fd = None;
                }
            }
            if inbox.deadline.is_some() {
                DEADLINES.with(|d| d.set(d.get() + 1));
            }
            let inbox = Rc::new(RefCell::new(inbox));
            if reader == Reader::Any {
                INBOXES.with(|all| all.borrow_mut().push(Rc::downgrade(&inbox)));
            }
            Ok(Forked::Parent(Job {
                pid: child,
                owner: parent,
                pidfd,
                inbox,
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

/// Most bytes read from one channel per turn, so that a child that keeps writing cannot keep
/// the parent from its other jobs and deadlines.
const READ_BUDGET: usize = 1 << 20;

/// What the parent keeps of a running job between calls: the end of its channel and what has been
/// read from it, and its deadline (timeout → SIGTERM, grace → SIGKILL, both to its group).
pub(crate) struct Inbox {
    pid: Pid,
    fd: Option<OwnedFd>,
    decoder: FrameDecoder,
    messages: Vec<Message>,
    error: Option<Error>,
    /// When to send SIGTERM, and the limits that set it; `None` once reaped.
    deadline: Option<(Instant, Deadline)>,
    term_sent: Option<Instant>,
    kill_sent: bool,
}

impl Inbox {
    /// The next instant at which `enforce` has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let (term_at, limits) = self.deadline?;
        match (self.term_sent, self.kill_sent) {
            (_, true) => None,
            (Some(sent), false) => Some(sent + limits.grace),
            (None, false) => Some(term_at),
        }
    }

    /// Sends what is due at `now`: SIGTERM at the deadline, SIGKILL after the grace period.
    pub(crate) fn enforce(&mut self, now: Instant) {
        let Some(due) = self.next_deadline() else {
            return;
        };
        if now < due {
            return;
        }
        // A child that has already exited ended on its own, before anyone looked: no timeout. One
        // reaped by someone else (ECHILD) has a pid that may belong to another process by now.
        if matches!(
            sys::peek_exit(self.pid),
            Ok(nix::sys::wait::WaitStatus::Exited(..) | nix::sys::wait::WaitStatus::Signaled(..))
                | Err(nix::errno::Errno::ECHILD)
        ) {
            return;
        }
        // Until finish() reaps the child (and clears `deadline`), its pid and group are ours.
        if self.term_sent.is_none() {
            self.term_sent = Some(now);
            let _ = killpg(self.pid, Signal::SIGTERM);
            if self.deadline.is_some_and(|(_, l)| l.grace.is_zero()) {
                self.kill_sent = true;
                let _ = killpg(self.pid, Signal::SIGKILL);
            }
        } else {
            self.kill_sent = true;
            let _ = killpg(self.pid, Signal::SIGKILL);
        }
    }

    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Reads what the child has sent so far (up to [`READ_BUDGET`]).
    pub(crate) fn pump(&mut self) {
        let Some(fd) = &self.fd else { return };
        let mut buf = Vec::new();
        let eof = match sys::read_available(fd, &mut buf, READ_BUDGET) {
            Ok(eof) => eof,
            Err(e) => {
                self.fail(Error::Channel(format!("read failed: {e}")));
                true
            }
        };
        if let Err(e) = self.decoder.push(&buf, &mut self.messages) {
            self.fail(e);
        }
        if eof {
            // Closing stops poll from reporting an endless end-of-stream.
            self.fd = None;
        }
    }

    /// Reads everything left; a frame cut short is an error.
    fn drain(&mut self) {
        while self.fd.is_some() {
            let before = self.messages.len();
            let buffered = self.decoder.buffered();
            self.pump();
            if self.messages.len() == before && self.decoder.buffered() == buffered {
                break; // nothing more arrived: EAGAIN
            }
        }
        self.fd = None;
        if let Err(e) = self.decoder.finish() {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

thread_local! {
    /// How many of this process's jobs have a deadline not yet settled (so that waits without
    /// any skip the work).
    static DEADLINES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The channels of this process's running jobs, so that waiting for one job also reads the
    /// others: a sibling that logs a lot never blocks on a full socket while we wait elsewhere.
    static INBOXES: RefCell<Vec<Weak<RefCell<Inbox>>>> = const { RefCell::new(Vec::new()) };
}

/// Every job of this process with an open channel or a deadline to keep, running or detached.
pub(crate) fn open_inboxes() -> Vec<Rc<RefCell<Inbox>>> {
    INBOXES.with(|all| {
        let mut all = all.borrow_mut();
        all.retain(|w| {
            w.upgrade().is_some_and(|i| {
                let i = i.borrow();
                i.fd.is_some() || i.deadline.is_some()
            })
        });
        all.iter().filter_map(Weak::upgrade).collect()
    })
}

/// In a new job child: the channels are the parent's; reading them would steal its data.
pub(crate) fn forget_inboxes() {
    INBOXES.with(|all| all.borrow_mut().clear());
    DEADLINES.with(|d| d.set(0));
}

/// Whether any job of this process has a deadline to keep.
pub(crate) fn any_deadline() -> bool {
    DEADLINES.with(|d| d.get() > 0)
}

/// A reaped child, before its outcome is decided.
pub(crate) struct Reaped {
    pub messages: Vec<Message>,
    pub channel_error: Option<Error>,
    pub status: sys::ExitStatus,
    pub observed_ns: u64,
    /// The job's own deadline (from `fork_job`) passed, and whether SIGKILL was needed.
    pub timed_out: Option<(Deadline, bool)>,
}

/// A pool worker's reading side of its channel: blocks until the parent sends a message.
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
            let n = match nix::unistd::read(self.fd, &mut self.buf) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return None,
            };
            let mut out = Vec::new();
            self.decoder.push(&self.buf[..n], &mut out).ok()?;
            self.ready.extend(out);
        }
        self.ready.pop_front()
    }
}

/// The parent's handle on a job child.
pub struct Job {
    pid: Pid,
    owner: Pid,
    pidfd: Option<OwnedFd>,
    inbox: Rc<RefCell<Inbox>>,
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

    /// Takes the report out (once finished), leaving the job without one.
    pub fn take_report(&mut self) -> Option<Report> {
        self.report.take()
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

    /// The pidfd to poll while the job runs (`None`: finished, or no pidfd on this kernel).
    pub(crate) fn pidfd(&self) -> Option<RawFd> {
        if self.report.is_some() {
            return None;
        }
        self.pidfd.as_ref().map(|f| f.as_raw_fd())
    }

    pub(crate) fn channel_fd(&self) -> Option<RawFd> {
        self.inbox.borrow().fd()
    }

    pub(crate) fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// Reads whatever the child has sent so far.
    pub(crate) fn pump(&mut self) {
        self.inbox.borrow_mut().pump();
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
                use nix::sys::wait::WaitStatus;
                match sys::peek_exit(self.pid) {
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => true,
                    // Reaped by someone else: finish() reports it, without a status.
                    Err(nix::errno::Errno::ECHILD) => true,
                    _ => false,
                }
            }
        }
    }

    /// Once the child has exited: end what is left of its process group (grandchildren it spawned),
    /// drain the channel, reap it and decide the outcome. Blocks only while reaping an exited child.
    pub(crate) fn finish(&mut self) -> Result<&Report> {
        if self.report.is_none() {
            let raw = self.reap()?;
            let mut report = Report::decide(
                self.pid.as_raw(),
                raw.messages,
                raw.channel_error.as_ref(),
                raw.status,
                self.started_ns,
                raw.observed_ns,
            );
            if let Some((limits, killed)) = raw.timed_out {
                report.time_out(limits.timeout.as_secs_f64(), killed);
            }
            self.report = Some(report);
        }
        Ok(self.report.as_ref().unwrap())
    }

    /// Reaps an exited child without deciding an outcome (the pool decides per task): kills what
    /// is left of its group, waits for it, drains its channel. Call once.
    pub(crate) fn reap(&mut self) -> Result<Reaped> {
        let observed_ns = sys::monotonic_ns();
        // Only while the zombie is still ours does its pid, and so its group id, stay ours:
        // someone else's wait (pcntl_wait(-1), SIGCHLD ignored) frees it for reuse.
        let status = match sys::peek_exit(self.pid) {
            Err(nix::errno::Errno::ECHILD) => None,
            _ => {
                let _ = killpg(self.pid, Signal::SIGKILL);
                sys::wait4(self.pid, true).map_err(|e| Error::sys("wait4", e))?
            }
        };
        let mut inbox = self.inbox.borrow_mut();
        inbox.drain();
        let status = status.unwrap_or_else(|| {
            inbox.fail(Error::Channel(
                "the child was reaped by someone else (pcntl_wait(-1), or SIGCHLD set to \
                 SIG_IGN), so how it ended is unknown: leave Forklift's children to Forklift"
                    .into(),
            ));
            sys::ExitStatus::unknown()
        });
        let timed_out = inbox
            .term_sent
            .and(inbox.deadline)
            .map(|(_, limits)| (limits, inbox.kill_sent));
        if inbox.deadline.take().is_some() {
            DEADLINES.with(|d| d.set(d.get().saturating_sub(1)));
        }
        drop(inbox);
        self.pidfd = None;
        let mut inbox = self.inbox.borrow_mut();
        Ok(Reaped {
            messages: std::mem::take(&mut inbox.messages),
            channel_error: inbox.error.take(),
            status,
            observed_ns,
            timed_out,
        })
    }

    /// Everything the child has sent that was not taken yet (reads what is pending first).
    pub(crate) fn take_messages(&mut self) -> Vec<Message> {
        let mut inbox = self.inbox.borrow_mut();
        inbox.pump();
        std::mem::take(&mut inbox.messages)
    }

    /// Writes what the child's socket takes now of `bytes` (frames for a pool worker), without
    /// waiting; returns how much.
    pub(crate) fn send_some(&self, bytes: &[u8]) -> Result<usize> {
        let inbox = self.inbox.borrow();
        let Some(fd) = inbox.fd() else {
            return Err(Error::Channel("the worker's channel is closed".into()));
        };
        sys::send_some(fd, bytes).map_err(|e| Error::sys("send", e))
    }

    /// Sends `sig` to the child's whole process group. Only before `reap`/`finish`: until then
    /// the pid, and so the group id, is ours.
    pub(crate) fn signal_group(&self, sig: Signal) {
        let _ = killpg(self.pid, sig);
    }

    /// Sends `signo` to the job child (not its group). False when it has already ended.
    pub fn signal(&self, signo: i32) -> Result<bool> {
        self.check_owner()?;
        if self.has_exited() {
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
            std::mem::forget(self.inbox.borrow_mut().fd.take());
            std::mem::forget(self.pidfd.take());
        }
    }
}
