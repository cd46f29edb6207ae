//! The one event loop of a process, and the per-process state it supervises.
//!
//! [`Runtime`] owns every supervised child of this process (plain jobs and pool workers), every
//! pool's supervision state and the reactor they are registered with. Whichever Forklift call
//! blocks (`wait()`, `wait_any()`, a pool call, the request end) drives the same [`Runtime::turn`]:
//! one wait over all sources until the earliest deadline, then every event is handled — channels
//! read, outboxes flushed, exits reaped at once (so durations are true), escalations stepped, pool
//! timers run. So every deadline of every job and pool task is kept, and every channel drained,
//! whoever waits.
//!
//! The runtime never forks and never runs PHP: forking happens in the binding layer from a clean
//! top-level frame (`spawn::fork_child`, then [`Runtime::adopt_job`] / [`Runtime::adopt_worker`]);
//! pool decisions come back as state the binding reads after the turn.
//!
//! A child process inherits a copy of its parent's runtime. [`with`] recognises it (a fork
//! counter bumped by `pthread_atfork`) and drops it without touching the parent's epoll instance,
//! closing the inherited fds, so no process ever reads a channel it inherited.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::core::child::{Child, Reaped};
use crate::core::deadline::{Action, Deadline, Escalation, Stop};
use crate::core::error::{Error, Result};
use crate::core::outcome::Report;
use crate::core::pool::{Config, Pool, Workers};
use crate::core::reactor::{Event, Reactor, READABLE, WRITABLE};
use crate::core::spawn::Spawned;
use crate::core::sys;

/// How often children are checked on kernels without pidfd (< 5.3), where an exit cannot be waited
/// for.
const NO_PIDFD_TICK: Duration = Duration::from_millis(5);

/// A supervised child of this process; stale ids (of reaped children) are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChildId {
    index: u32,
    generation: u32,
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
pub struct PoolId(usize);

/// What a child is to this process.
enum Role {
    /// A plain job; `detached` once its handle is gone (it is reaped and forgotten).
    Job {
        detached: bool,
        report: Option<Report>,
    },
    /// A worker of a pool.
    Worker(PoolId),
}

struct Entry {
    child: Child,
    role: Role,
    exited: bool,
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// Where a plain job stands, as its handle sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Finished,
}

/// The children table and the reactor they are registered with: what pools act on.
pub struct Children {
    reactor: Reactor,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Escalation deadlines: (due, index, generation); stale entries are skipped when popped.
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Children without a pidfd, whose exits are looked for every [`NO_PIDFD_TICK`].
    blind: usize,
}

fn token(id: ChildId, pidfd: bool) -> u64 {
    (id.index as u64) << 33 | (id.generation as u64) << 1 | pidfd as u64
}

fn from_token(t: u64) -> (ChildId, bool) {
    (
        ChildId {
            index: (t >> 33) as u32,
            generation: ((t >> 1) & 0xFFFF_FFFF) as u32,
        },
        t & 1 == 1,
    )
}

impl Children {
    fn entry(&self, id: ChildId) -> Option<&Entry> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.entry.as_ref())
            .flatten()
    }

    fn entry_mut(&mut self, id: ChildId) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_mut()
    }

    fn insert(&mut self, child: Child, role: Role) -> Result<ChildId> {
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

    fn remove(&mut self, id: ChildId) -> Option<Entry> {
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

    fn schedule(&mut self, id: ChildId) {
        let due = self
            .entry(id)
            .and_then(|e| e.child.escalation.as_ref())
            .and_then(Escalation::due);
        if let Some(due) = due {
            self.timers.push(Reverse((due, id.index, id.generation)));
        }
    }

    fn next_timer(&mut self) -> Option<Instant> {
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
    fn fire_timers(&mut self, now: Instant) {
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
    fn update_interest(&mut self, id: ChildId) {
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

    fn disarm(&mut self, w: ChildId) {
        if let Some(entry) = self.entry_mut(w) {
            entry.child.escalation = None;
        }
    }
}

pub struct Runtime {
    /// The fork generation this runtime belongs to (see `sys::fork_generation`).
    generation: u64,
    pid: i32,
    children: Children,
    pools: Vec<Option<Pool>>,
    events: Vec<Event>,
    exited: Vec<ChildId>,
}

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` with this process's runtime, made on first use (and anew in a forked child).
/// Errors if called again from inside `f` (the runtime never calls out, so only a bug can).
pub fn with<R>(f: impl FnOnce(&mut Runtime) -> Result<R>) -> Result<R> {
    RUNTIME.with(|cell| {
        let mut slot = cell.try_borrow_mut().map_err(|_| {
            Error::InvalidArgument(
                "Forklift was called from inside its own bookkeeping; this is a bug in Forklift"
                    .into(),
            )
        })?;
        let generation = sys::fork_generation();
        if slot.as_ref().is_some_and(|rt| rt.generation != generation) {
            // Inherited from the parent: close its fds, leave its epoll registrations alone.
            if let Some(old) = slot.take() {
                old.abandon();
            }
        }
        if slot.is_none() {
            *slot = Some(Runtime::new(generation)?);
        }
        f(slot.as_mut().expect("made above"))
    })
}

/// In a new child: forget the parent's runtime now (its fds closed, its children not ours).
pub fn reset_in_child() {
    RUNTIME.with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            if let Some(old) = slot.take() {
                old.abandon();
            }
        } else {
            // Forked from inside the runtime (never done): leak the borrowed copy rather than
            // touch it.
        }
    });
}

impl Runtime {
    fn new(generation: u64) -> Result<Runtime> {
        sys::count_forks();
        Ok(Runtime {
            generation,
            pid: sys::current_pid(),
            children: Children {
                reactor: Reactor::new()?,
                slots: Vec::new(),
                free: Vec::new(),
                timers: BinaryHeap::new(),
                blind: 0,
            },
            pools: Vec::new(),
            events: Vec::with_capacity(256),
            exited: Vec::new(),
        })
    }

    /// Drops a runtime inherited from the parent: every fd closed, no `EPOLL_CTL_DEL` (the epoll
    /// instance is the parent's too).
    fn abandon(self) {
        drop(self);
    }

    /// The pid of the process this runtime belongs to.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    // --- plain jobs ---------------------------------------------------------------------------

    /// Takes a freshly forked job child under supervision, with its wall-clock deadline.
    pub fn adopt_job(
        &mut self,
        spawned: Spawned,
        max_frame: usize,
        deadline: Option<Deadline>,
    ) -> Result<ChildId> {
        let mut child = Child::new(spawned, max_frame);
        child.escalation = deadline.map(|d| Escalation::start(d, child.started));
        let id = self.children.insert(
            child,
            Role::Job {
                detached: false,
                report: None,
            },
        )?;
        self.children.schedule(id);
        Ok(id)
    }

    pub fn job_state(&self, id: ChildId) -> Option<JobState> {
        match &self.children.entry(id)?.role {
            Role::Job {
                report: Some(_), ..
            } => Some(JobState::Finished),
            Role::Job { .. } => Some(JobState::Running),
            Role::Worker(_) => None,
        }
    }

    /// The report of a finished job, taken out (the job is forgotten).
    pub fn take_report(&mut self, id: ChildId) -> Option<Report> {
        if self.job_state(id)? != JobState::Finished {
            return None;
        }
        match self.children.remove(id)?.role {
            Role::Job { report, .. } => report,
            Role::Worker(_) => None,
        }
    }

    /// The first of `ids` that has finished.
    pub fn first_finished(&self, ids: impl IntoIterator<Item = ChildId>) -> Option<usize> {
        ids.into_iter()
            .position(|id| self.job_state(id) == Some(JobState::Finished))
    }

    /// The job's handle is gone: it runs to its end and is reaped, then forgotten.
    pub fn detach(&mut self, id: ChildId) {
        let finished = match self.children.entry_mut(id) {
            Some(Entry {
                role: Role::Job {
                    detached, report, ..
                },
                ..
            }) => {
                *detached = true;
                report.is_some()
            }
            _ => return,
        };
        if finished {
            self.children.remove(id);
        }
    }

    /// Detached jobs still running.
    pub fn detached_running(&self) -> usize {
        self.children
            .slots
            .iter()
            .filter_map(|s| s.entry.as_ref())
            .filter(|e| matches!(e.role, Role::Job { detached: true, .. }))
            .count()
    }

    /// Sends `signo` to a running job child (not its group); false when it has already ended.
    pub fn signal_job(&self, id: ChildId, signo: i32) -> Result<bool> {
        let Some(entry) = self.children.entry(id) else {
            return Ok(false);
        };
        if entry.exited
            || matches!(
                entry.role,
                Role::Job {
                    report: Some(_),
                    ..
                }
            )
        {
            return Ok(false);
        }
        // Until reaped, the pid cannot belong to another process.
        sys::send_signal(entry.child.pid, signo).map_err(|e| match e {
            nix::errno::Errno::EINVAL => {
                Error::InvalidArgument(format!("{signo} is not a signal number"))
            }
            e => Error::sys("kill", e),
        })?;
        Ok(true)
    }

    // --- pools --------------------------------------------------------------------------------

    pub fn add_pool(&mut self, config: Config) -> PoolId {
        let pool = Pool::new(config);
        match self.pools.iter().position(Option::is_none) {
            Some(i) => {
                self.pools[i] = Some(pool);
                PoolId(i)
            }
            None => {
                self.pools.push(Some(pool));
                PoolId(self.pools.len() - 1)
            }
        }
    }

    pub fn pool(&mut self, id: PoolId) -> &mut Pool {
        self.pools[id.0].as_mut().expect("a live pool id")
    }

    pub fn pool_ref(&self, id: PoolId) -> &Pool {
        self.pools[id.0].as_ref().expect("a live pool id")
    }

    /// Forgets a pool whose workers are all gone.
    pub fn remove_pool(&mut self, id: PoolId) {
        self.pools[id.0] = None;
    }

    /// Takes a freshly forked worker of `pool` under supervision.
    pub fn adopt_worker(
        &mut self,
        spawned: Spawned,
        max_frame: usize,
        pool: PoolId,
        number: usize,
    ) -> Result<()> {
        let pid = spawned.pid.as_raw();
        let child = Child::new(spawned, max_frame);
        let id = self.children.insert(child, Role::Worker(pool))?;
        self.pools[pool.0]
            .as_mut()
            .expect("a live pool id")
            .add_worker(number, id, pid);
        Ok(())
    }

    /// Closes a pool (see `Pool::close`); its workers are reaped by the turns that follow.
    pub fn close_pool(&mut self, id: PoolId, kill: bool) -> Vec<crate::core::pool::Unrun> {
        match self.pools[id.0].as_mut() {
            Some(pool) => pool.close(kill, &mut self.children),
            None => Vec::new(),
        }
    }

    /// Hands a pool's queued tasks to its workers and recycles idle ones, without waiting.
    pub fn service_pool(&mut self, id: PoolId) {
        let now = Instant::now();
        if let Some(pool) = self.pools[id.0].as_mut() {
            pool.service(now, &mut self.children);
        }
    }

    // --- the loop -----------------------------------------------------------------------------

    /// One turn of the loop: wait (at most until `deadline`; `Some(now)` does not block) for any
    /// source or the earliest deadline, and handle everything that happened.
    pub fn turn(&mut self, deadline: Option<Instant>) -> Result<()> {
        let now = Instant::now();
        for pool in self.pools.iter_mut().flatten() {
            pool.service(now, &mut self.children);
        }
        let tick = (self.children.blind > 0).then(|| now + NO_PIDFD_TICK);
        let wake = [deadline, tick, self.children.next_timer()]
            .into_iter()
            .chain(self.pools.iter().flatten().map(Pool::next_timer))
            .flatten()
            .min();
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        self.children.reactor.wait(wake, &mut events)?;
        for ev in &events {
            self.handle(*ev);
        }
        self.events = events;
        if self.children.blind > 0 {
            self.find_blind_exits();
        }
        let now = Instant::now();
        self.children.fire_timers(now);
        let exited = std::mem::take(&mut self.exited);
        for id in &exited {
            self.reap(*id)?;
        }
        self.exited = exited;
        self.exited.clear();
        for pool in self.pools.iter_mut().flatten() {
            pool.service(now, &mut self.children);
        }
        Ok(())
    }

    /// Keeps the deadlines that are due now and reaps what has exited, without blocking.
    pub fn poll(&mut self) -> Result<()> {
        self.turn(Some(Instant::now()))
    }

    fn handle(&mut self, ev: Event) {
        let (id, is_pidfd) = from_token(ev.token);
        let Some(entry) = self.children.entry_mut(id) else {
            return;
        };
        if is_pidfd {
            if !entry.exited {
                entry.exited = true;
                self.exited.push(id);
            }
            return;
        }
        if ev.writable() && entry.child.wants_write() {
            // A broken socket: the worker is dying, and its exit is handled when it comes.
            entry.child.flush();
            if !entry.child.wants_write() {
                self.children.update_interest(id);
            }
        }
        let Some(entry) = self.children.entry_mut(id) else {
            return;
        };
        if !ev.readable() {
            return;
        }
        if entry.child.pump() {
            if let Some(fd) = entry.child.channel_fd() {
                self.children.reactor.remove(fd);
            }
            let entry = self.children.entry_mut(id).expect("still there");
            entry.child.close_channel();
        }
        let entry = self.children.entry_mut(id).expect("still there");
        if let Role::Worker(p) = entry.role {
            let msgs = std::mem::take(&mut entry.child.messages);
            if let Some(pool) = self.pools[p.0].as_mut() {
                pool.on_messages(id, msgs, &mut self.children);
            }
        }
    }

    fn find_blind_exits(&mut self) {
        let mut found = Vec::new();
        for (index, slot) in self.children.slots.iter().enumerate() {
            let Some(entry) = &slot.entry else { continue };
            if !entry.exited && !entry.child.has_pidfd() && entry.child.exited_without_pidfd() {
                found.push(ChildId {
                    index: index as u32,
                    generation: slot.generation,
                });
            }
        }
        for id in found {
            if let Some(entry) = self.children.entry_mut(id) {
                entry.exited = true;
                self.children.blind = self.children.blind.saturating_sub(1);
                self.exited.push(id);
            }
        }
    }

    /// A child has exited: reap it now, and decide (a job) or hand it to its pool (a worker).
    fn reap(&mut self, id: ChildId) -> Result<()> {
        let Some(entry) = self.children.entry_mut(id) else {
            return Ok(());
        };
        if let Some(fd) = entry.child.pidfd() {
            self.children.reactor.remove(fd);
        }
        let entry = self.children.entry_mut(id).expect("still there");
        if let Some(fd) = entry.child.channel_fd() {
            self.children.reactor.remove(fd);
        }
        let entry = self.children.entry_mut(id).expect("still there");
        let reaped = entry.child.reap()?;
        match &mut entry.role {
            Role::Job { detached, report } => {
                *report = Some(decide_job(
                    entry.child.pid.as_raw(),
                    entry.child.started_ns,
                    reaped,
                ));
                if *detached {
                    self.children.remove(id);
                }
            }
            Role::Worker(p) => {
                let p = *p;
                self.children.remove(id);
                if let Some(pool) = self.pools[p.0].as_mut() {
                    pool.on_exit(id, reaped);
                }
            }
        }
        Ok(())
    }
}

/// A plain job's report from what its reaping found.
fn decide_job(pid: i32, started_ns: u64, r: Reaped) -> Report {
    let mut report = Report::decide(
        pid,
        r.messages,
        r.channel_error.as_ref(),
        r.status,
        started_ns,
        r.observed_ns,
    );
    if let Some((limits, how)) = r.stopped {
        report.time_out(limits.timeout.as_secs_f64(), how);
        if how == Stop::OwnTimer {
            // The parent saw it late; it died at its backstop.
            report.duration = report.duration.min(limits.backstop().as_secs_f64());
        }
    }
    report
}
