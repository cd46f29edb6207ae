//! The table of a process's supervised children: slots with generations (so a stale id is
//! recognised), each child's role (a plain job or a pool's worker), its registration with the
//! reactor, and the heap of escalation deadlines. It implements the pool's [`Workers`], which is
//! how a pool acts on its workers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::core::child::Child;
use crate::core::deadline::{Action, Deadline, Escalation};
use crate::core::error::Result;
use crate::core::outcome::Report;
use crate::core::pool::Workers;
use crate::core::reactor::{Reactor, READABLE, WRITABLE};

/// How often children are checked on kernels without pidfd (< 5.3), where an exit cannot be waited
/// for.
pub(super) const NO_PIDFD_TICK: Duration = Duration::from_millis(5);

/// A supervised child of this process; stale ids (of reaped children) are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChildId {
    pub(super) index: u32,
    pub(super) generation: u32,
}

impl ChildId {
    /// An id for tests of code that only passes ids around (the pool's decisions).
    #[cfg(test)]
    pub(crate) fn for_test(index: u32) -> ChildId {
        ChildId {
            index,
            generation: 0,
        }
    }
}

/// A pool of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(pub(super) usize);

/// What a child is to this process.
pub(super) enum Role {
    /// A plain job; `detached` once its handle is gone (it is reaped and forgotten).
    Job {
        detached: bool,
        report: Option<Report>,
    },
    /// A worker of a pool.
    Worker(PoolId),
}

pub(super) struct Entry {
    pub(super) child: Child,
    pub(super) role: Role,
    pub(super) exited: bool,
}

pub(super) struct Slot {
    pub(super) generation: u32,
    pub(super) entry: Option<Entry>,
}

/// Where a plain job stands, as its handle sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Finished,
}

/// The children table and the reactor they are registered with: what pools act on.
pub struct Children {
    pub(super) reactor: Reactor,
    pub(super) slots: Vec<Slot>,
    pub(super) free: Vec<u32>,
    /// Escalation deadlines: (due, index, generation); stale entries are skipped when popped.
    pub(super) timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Children without a pidfd, whose exits are looked for every [`NO_PIDFD_TICK`].
    pub(super) blind: usize,
}

fn token(id: ChildId, pidfd: bool) -> u64 {
    (id.index as u64) << 33 | (id.generation as u64) << 1 | pidfd as u64
}

pub(super) fn from_token(t: u64) -> (ChildId, bool) {
    (
        ChildId {
            index: (t >> 33) as u32,
            generation: ((t >> 1) & 0xFFFF_FFFF) as u32,
        },
        t & 1 == 1,
    )
}

impl Children {
    pub(super) fn entry(&self, id: ChildId) -> Option<&Entry> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.entry.as_ref())
            .flatten()
    }

    pub(super) fn entry_mut(&mut self, id: ChildId) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_mut()
    }

    pub(super) fn insert(&mut self, child: Child, role: Role) -> Result<ChildId> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let id = ChildId {
            index,
            generation: self.slots[index as usize].generation,
        };
        if let Some(fd) = child.channel_fd() {
            self.reactor.add(fd, READABLE, token(id, false))?;
        }
        match child.pidfd() {
            Some(fd) => self.reactor.add(fd, READABLE, token(id, true))?,
            None => self.blind += 1,
        }
        self.slots[index as usize].entry = Some(Entry {
            child,
            role,
            exited: false,
        });
        Ok(id)
    }

    pub(super) fn remove(&mut self, id: ChildId) -> Option<Entry> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        if let Some(fd) = entry.child.channel_fd() {
            self.reactor.remove(fd);
        }
        if let Some(fd) = entry.child.pidfd() {
            self.reactor.remove(fd);
        } else if !entry.exited {
            self.blind = self.blind.saturating_sub(1);
        }
        Some(entry)
    }

    pub(super) fn schedule(&mut self, id: ChildId) {
        let due = self
            .entry(id)
            .and_then(|e| e.child.escalation.as_ref())
            .and_then(Escalation::due);
        if let Some(due) = due {
            self.timers.push(Reverse((due, id.index, id.generation)));
        }
    }

    pub(super) fn next_timer(&mut self) -> Option<Instant> {
        // Drop stale entries on top so that they do not wake us.
        while let Some(Reverse((due, index, generation))) = self.timers.peek().copied() {
            let id = ChildId { index, generation };
            let current = self
                .entry(id)
                .and_then(|e| e.child.escalation.as_ref())
                .and_then(Escalation::due);
            if current == Some(due) {
                return Some(due);
            }
            self.timers.pop();
        }
        None
    }

    /// Steps every escalation due at `now`: SIGTERM / SIGKILL to the child's group.
    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(due) = self.next_timer() {
            if due > now {
                return;
            }
            let Reverse((_, index, generation)) = self.timers.pop().expect("peeked");
            let id = ChildId { index, generation };
            let Some(entry) = self.entry_mut(id) else {
                continue;
            };
            // A child that has already exited ended on its own, before anyone looked: it is
            // reaped in this turn, and no signal may go to a pid that is about to be freed.
            if entry.exited {
                continue;
            }
            let child = &mut entry.child;
            let Some(mut esc) = child.escalation else {
                continue;
            };
            while let Some(action) = esc.step(now) {
                child.signal_group(match action {
                    Action::Term => Signal::SIGTERM,
                    Action::Kill => Signal::SIGKILL,
                });
            }
            child.escalation = Some(esc);
            self.schedule(id);
        }
    }

    /// Marks the enabled write interest of a child's channel after its outbox changed.
    pub(super) fn update_interest(&mut self, id: ChildId) {
        let Some(entry) = self.entry(id) else { return };
        if let Some(fd) = entry.child.channel_fd() {
            let interest = if entry.child.wants_write() {
                READABLE | WRITABLE
            } else {
                READABLE
            };
            let _ = self.reactor.modify(fd, interest, token(id, false));
        }
    }
}

impl Workers for Children {
    fn post(&mut self, w: ChildId, frames: &[u8]) -> bool {
        let Some(entry) = self.entry_mut(w) else {
            return false;
        };
        let had = entry.child.wants_write();
        let ok = entry.child.post(frames);
        if had != entry.child.wants_write() {
            self.update_interest(w);
        }
        ok
    }

    fn signal_group(&mut self, w: ChildId, sig: Signal) {
        if let Some(entry) = self.entry(w) {
            if !entry.exited {
                entry.child.signal_group(sig);
            }
        }
    }

    fn arm(&mut self, w: ChildId, deadline: Deadline, start: Instant) {
        if let Some(entry) = self.entry_mut(w) {
            entry.child.escalation = Some(Escalation::start(deadline, start));
            self.schedule(w);
        }
    }

    fn break_channel(&mut self, w: ChildId, why: String) {
        if let Some(entry) = self.entry_mut(w) {
            entry.child.fail_channel(why);
            if !entry.exited {
                entry.child.signal_group(Signal::SIGKILL);
            }
        }
    }

    fn disarm(&mut self, w: ChildId) {
        if let Some(entry) = self.entry_mut(w) {
            entry.child.escalation = None;
        }
    }
}
