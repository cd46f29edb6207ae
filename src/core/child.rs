//! The parent's record of one supervised child: its channel (read as data arrives, written through
//! an outbox that never blocks), its pidfd, its deadline's escalation, and what is known once it
//! has exited. The runtime (`core::runtime`) owns every `Child` of the process and moves it through
//! `Running → Exited(Reaped)` exactly once, in [`Child::reap`].

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::core::deadline::{Deadline, Escalation, Stop};
use crate::core::error::{Error, Result};
use crate::core::spawn::Spawned;
use crate::core::sys;
use crate::core::wire::{FrameDecoder, Message};

/// Most bytes read from one channel per turn, so that a child that keeps writing cannot keep
/// the parent from its other children and deadlines.
const READ_BUDGET: usize = 1 << 20;

/// A reaped child, before its outcome is decided.
#[derive(Debug)]
pub struct Reaped {
    pub messages: Vec<Message>,
    pub channel_error: Option<Error>,
    pub status: sys::ExitStatus,
    /// Monotonic ns at which the parent saw the exit.
    pub observed_ns: u64,
    /// The child's deadline passed and it was stopped for it: the limits, and how.
    pub stopped: Option<(Deadline, Stop)>,
}

pub(crate) struct Child {
    pub pid: Pid,
    pidfd: Option<OwnedFd>,
    channel: Option<OwnedFd>,
    decoder: FrameDecoder,
    /// Messages read and not yet taken.
    pub messages: Vec<Message>,
    error: Option<Error>,
    /// Frames for the child its socket has not taken yet (a busy pool worker does not read).
    outbox: Vec<u8>,
    pub started: Instant,
    pub started_ns: u64,
    /// The running deadline, if any (a plain job's for its life, a pool worker's per task).
    pub escalation: Option<Escalation>,
}

impl Child {
    pub fn new(s: Spawned, max_frame: usize) -> Child {
        Child {
            pid: s.pid,
            pidfd: s.pidfd,
            channel: Some(s.channel),
            decoder: FrameDecoder::new(max_frame),
            messages: Vec::new(),
            error: None,
            outbox: Vec::new(),
            started: s.started,
            started_ns: s.started_ns,
            escalation: None,
        }
    }

    pub fn channel_fd(&self) -> Option<RawFd> {
        self.channel.as_ref().map(|f| f.as_raw_fd())
    }

    pub fn pidfd(&self) -> Option<RawFd> {
        self.pidfd.as_ref().map(|f| f.as_raw_fd())
    }

    pub fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    pub fn wants_write(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Reads what the child has sent so far (up to [`READ_BUDGET`]). Returns whether the channel
    /// reached its end (it is then closed; the caller has removed it from the reactor first).
    pub fn pump(&mut self) -> bool {
        let Some(fd) = &self.channel else {
            return true;
        };
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
        eof
    }

    /// Closes the channel (after its end, or when the child is reaped).
    pub fn close_channel(&mut self) {
        self.channel = None;
        self.outbox.clear();
    }

    /// Queues frames for the child and writes what its socket takes now. False if it is broken.
    pub fn post(&mut self, frames: &[u8]) -> bool {
        self.outbox.extend_from_slice(frames);
        self.flush()
    }

    /// Writes what the socket takes of the outbox, without waiting. False if it is broken.
    pub fn flush(&mut self) -> bool {
        let Some(fd) = self.channel_fd() else {
            return false;
        };
        while !self.outbox.is_empty() {
            match sys::send_some(fd, &self.outbox) {
                Ok(0) => return true,
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(_) => {
                    self.outbox.clear();
                    return false;
                }
            }
        }
        true
    }

    /// Sends `sig` to the child itself and to its process group (a job may have left its group:
    /// the signal reaches it anyway). Only before `reap`: until then the pid, and so the group
    /// id, is ours.
    pub fn signal_group(&self, sig: Signal) {
        let _ = killpg(self.pid, sig);
        // Once: a job still leading its group got it from the group's signal.
        if nix::unistd::getpgid(Some(self.pid)).is_ok_and(|g| g != self.pid) {
            let _ = nix::sys::signal::kill(self.pid, sig);
        }
    }

    /// Whether the child has exited (not reaped yet), without a pidfd: `waitid(WNOWAIT)`.
    pub fn exited_without_pidfd(&self) -> bool {
        use nix::sys::wait::WaitStatus;
        matches!(
            sys::peek_exit(self.pid),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(nix::errno::Errno::ECHILD)
        )
    }

    /// Once the child has exited: end what is left of its process group (grandchildren it
    /// spawned), reap it, drain its channel. The caller has removed its fds from the reactor.
    pub fn reap(&mut self) -> Result<Reaped> {
        let observed_ns = sys::monotonic_ns();
        let now = Instant::now();
        // Only while the zombie is still ours does its pid, and so its group id, stay ours:
        // someone else's wait (pcntl_wait(-1), SIGCHLD ignored) frees it for reuse.
        let status = match sys::peek_exit(self.pid) {
            Err(nix::errno::Errno::ECHILD) => None,
            _ => {
                self.signal_group(Signal::SIGKILL);
                sys::wait4(self.pid, true).map_err(|e| Error::sys("wait4", e))?
            }
        };
        self.pidfd = None;
        self.drain();
        let status = match status.or_else(|| self.status_from_last_words()) {
            Some(status) => status,
            None => {
                self.fail(Error::Channel(
                    "the child was reaped by someone else (pcntl_wait(-1), or SIGCHLD set to \
                     SIG_IGN) before it said how it ended, so that is unknown: leave Forklift's \
                     children to Forklift"
                        .into(),
                ));
                sys::ExitStatus::unknown()
            }
        };
        let stopped = self
            .escalation
            .take()
            .and_then(|e| e.stop(status.signal, now).map(|s| (e.limits, s)));
        Ok(Reaped {
            messages: std::mem::take(&mut self.messages),
            channel_error: self.error.take(),
            status,
            observed_ns,
            stopped,
        })
    }

    /// When someone else took the exit status (SIGCHLD ignored, `pcntl_wait(-1)`): a child that
    /// said its last words (`Stats`, sent just before `_exit`) ended on its own, with the exit
    /// code its ending implies. One that did not may have been killed: unknown.
    fn status_from_last_words(&self) -> Option<sys::ExitStatus> {
        if !self
            .messages
            .iter()
            .any(|m| matches!(m, Message::Stats { .. }))
        {
            return None;
        }
        let code = self.messages.iter().rev().find_map(|m| match m {
            Message::Exit(code) => Some(*code),
            Message::Value { .. } => Some(0),
            Message::Exception(_) | Message::Fatal => Some(255),
            _ => None,
        });
        Some(sys::ExitStatus {
            code: Some(code.unwrap_or(0)),
            ..sys::ExitStatus::unknown()
        })
    }

    /// The channel carried something that cannot be true (a pool worker's forged end of task).
    pub fn fail_channel(&mut self, why: String) {
        self.fail(Error::Channel(why));
    }

    /// Whether the channel carried something that is not a valid frame (the rest is discarded).
    pub fn channel_failed(&self) -> bool {
        self.error.is_some()
    }

    /// Reads everything left; a frame cut short is an error.
    fn drain(&mut self) {
        while self.channel.is_some() {
            let before = self.messages.len();
            let buffered = self.decoder.buffered();
            if self.pump() {
                break;
            }
            if self.messages.len() == before && self.decoder.buffered() == buffered {
                break; // nothing more arrived: EAGAIN
            }
        }
        self.close_channel();
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
