//! Sources of the loop that are not children: the daemon's signalfd, its status socket and its
//! connections, the supervisor's link. They are registered with the same reactor as the children,
//! so one wait covers everything; what is ready is collected for the caller to take after the turn.
//! The runtime registers them and never owns their fds (except the signalfd): the caller removes a
//! source before closing its fd.

use std::os::fd::{OwnedFd, RawFd};

use super::Runtime;
use crate::core::error::{Error, Result};
use crate::core::reactor::Event;
use crate::core::sys;

/// Children tokens never use this slot index (2 billion slots; a token keeps 31 bits of the
/// index): it marks a source's token.
pub(super) const SOURCE_INDEX: u32 = u32::MAX >> 1;
/// The source number of the signalfd.
const SIGNALS: u32 = u32::MAX;

/// A registered source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(u32);

fn token(n: u32) -> u64 {
    (SOURCE_INDEX as u64) << 33 | (n as u64) << 1
}

/// What the runtime keeps of sources between turns.
#[derive(Default)]
pub(super) struct Sources {
    next: u32,
    /// Ready since the caller last took them.
    ready: Vec<(SourceId, Event)>,
    /// The signalfd and the signals it reads.
    signal_fd: Option<(OwnedFd, Vec<i32>)>,
    /// Signals read and not yet taken.
    signals: Vec<i32>,
}

impl Runtime {
    /// Registers `fd` for `interest` (`reactor::READABLE`, `WRITABLE`).
    pub fn add_source(&mut self, fd: RawFd, interest: u32) -> Result<SourceId> {
        let n = self.sources.next;
        if n == SIGNALS {
            return Err(Error::InvalidArgument("too many sources".into()));
        }
        self.sources.next += 1;
        self.children.reactor.add(fd, interest, token(n))?;
        Ok(SourceId(n))
    }

    /// Changes what a source is waited for.
    pub fn set_interest(&mut self, id: SourceId, fd: RawFd, interest: u32) -> Result<()> {
        self.children.reactor.modify(fd, interest, token(id.0))
    }

    /// Forgets a source; call before closing its fd.
    pub fn remove_source(&mut self, id: SourceId, fd: RawFd) {
        self.children.reactor.remove(fd);
        self.sources.ready.retain(|(s, _)| *s != id);
    }

    /// The sources that were ready in the turns since the last call.
    pub fn take_ready(&mut self) -> Vec<(SourceId, Event)> {
        std::mem::take(&mut self.sources.ready)
    }

    /// Takes `signals` over: blocked, and read by the loop (see [`Runtime::take_signals`]) until
    /// [`Runtime::release_signals`]. A forked child gets them unblocked.
    pub fn own_signals(&mut self, signals: &[i32]) -> Result<()> {
        self.release_signals();
        let fd = sys::own_signals(signals).map_err(|e| Error::sys("signalfd", e))?;
        use std::os::fd::AsRawFd;
        self.children.reactor.add(
            fd.as_raw_fd(),
            crate::core::reactor::READABLE,
            token(SIGNALS),
        )?;
        self.sources.signal_fd = Some((fd, signals.to_vec()));
        Ok(())
    }

    /// Gives owned signals back (unblocked; a signal that came meanwhile and was not read is
    /// delivered to its disposition now).
    pub fn release_signals(&mut self) {
        if let Some((fd, signals)) = self.sources.signal_fd.take() {
            use std::os::fd::AsRawFd;
            self.children.reactor.remove(fd.as_raw_fd());
            // Read what is already there, so it is not delivered twice.
            sys::read_signals(&fd, &mut self.sources.signals);
            drop(fd);
            sys::release_signals(&signals);
        }
    }

    /// Signals received since the last call, in order.
    pub fn take_signals(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.sources.signals)
    }

    /// Whether anything is waiting to be taken (so that a loop does not block on it).
    pub fn has_ready(&self) -> bool {
        !self.sources.ready.is_empty() || !self.sources.signals.is_empty()
    }

    /// A turn for a loop that takes sources and signals: none while something already waits to
    /// be taken (so nothing is slept on), else `turn_unless`.
    pub fn turn_unless_ready(
        &mut self,
        deadline: Option<std::time::Instant>,
        interrupted: Option<&dyn Fn() -> bool>,
    ) -> Result<bool> {
        if self.has_ready() {
            return Ok(true);
        }
        self.turn_unless(deadline, interrupted)
    }

    /// Handles an event whose token is a source's; false when it is a child's.
    pub(super) fn source_event(&mut self, ev: Event) -> bool {
        if ev.token >> 33 != SOURCE_INDEX as u64 {
            return false;
        }
        let n = ((ev.token >> 1) & 0xFFFF_FFFF) as u32;
        if n == SIGNALS {
            if let Some((fd, _)) = &self.sources.signal_fd {
                sys::read_signals(fd, &mut self.sources.signals);
            }
        } else {
            self.sources.ready.push((SourceId(n), ev));
        }
        true
    }
}
