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
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::core::child::{Child, Reaped};
use crate::core::deadline::{Deadline, Escalation, Stop};
use crate::core::error::{Error, Result};
use crate::core::outcome::Report;
use crate::core::pool::{Config, Pool};
use crate::core::reactor::{Event, Reactor};
use crate::core::spawn::Spawned;
use crate::core::sys;

mod children;
mod sources;

use children::{from_token, Entry, Role, NO_PIDFD_TICK};
pub use children::{ChildId, Children, JobState, PoolId};
pub use sources::SourceId;

pub struct Runtime {
    /// The fork generation this runtime belongs to (see `sys::fork_generation`).
    generation: u64,
    pid: i32,
    children: Children,
    pools: Vec<Option<Pool>>,
    events: Vec<Event>,
    exited: Vec<ChildId>,
    sources: sources::Sources,
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
            sources: Default::default(),
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

    /// Ends a running job now: SIGTERM to its group at the next turn, SIGKILL `grace` later (the
    /// daemon's stop timeout has passed). Its report says it ran out of time.
    pub fn expire_job(&mut self, id: ChildId, grace: std::time::Duration) {
        let Some(entry) = self.children.entry_mut(id) else {
            return;
        };
        if entry.exited || !matches!(entry.role, Role::Job { report: None, .. }) {
            return;
        }
        // Whole milliseconds: the report says "timed out after 1.075 s".
        let ran =
            std::time::Duration::from_millis(entry.child.started.elapsed().as_millis() as u64);
        let limits = Deadline {
            timeout: ran,
            grace,
        };
        entry.child.escalation = Some(Escalation::start(limits, entry.child.started));
        self.children.schedule(id);
    }

    // --- pools --------------------------------------------------------------------------------

    pub fn add_pool(&mut self, config: Config) -> PoolId {
        // Slots are never reused: an id kept by a task of a pool that is gone must not find
        // another pool (a few bytes a pool, for the life of the process).
        self.pools.push(Some(Pool::new(config)));
        PoolId(self.pools.len() - 1)
    }

    pub fn pool(&mut self, id: PoolId) -> Result<&mut Pool> {
        self.pools
            .get_mut(id.0)
            .and_then(Option::as_mut)
            .ok_or(Error::PoolGone)
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
        self.pool(pool)?.add_worker(number, id, pid);
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
        self.turn_unless(deadline, None).map(|_| ())
    }

    /// A turn that a signal can cut short: `interrupted` is checked with every signal blocked,
    /// and the wait runs with them unblocked (atomically), so a signal whose handler makes
    /// `interrupted` true — whenever it arrives — ends the wait at once. Returns false, without
    /// waiting, when `interrupted` is already true.
    pub fn turn_unless(
        &mut self,
        deadline: Option<Instant>,
        interrupted: Option<&dyn Fn() -> bool>,
    ) -> Result<bool> {
        let now = Instant::now();
        for pool in self.pools.iter_mut().flatten() {
            pool.service(now, &mut self.children);
        }
        let tick = (self.children.blind > 0).then(|| now + NO_PIDFD_TICK);
        let wake = [deadline, tick, self.children.next_timer()]
            .into_iter()
            .chain(self.pools.iter().flatten().map(|p| p.next_timer(now)))
            .flatten()
            .min();
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        match interrupted {
            None => self.children.reactor.wait(wake, None, &mut events)?,
            Some(interrupted) => {
                let before = sys::block_all_signals();
                if interrupted() {
                    sys::restore_signals(&before);
                    self.events = events;
                    return Ok(false);
                }
                let waited = self.children.reactor.wait(wake, Some(&before), &mut events);
                sys::restore_signals(&before);
                waited?;
            }
        }
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
        Ok(true)
    }

    /// Keeps the deadlines that are due now and reaps what has exited, without blocking.
    pub fn poll(&mut self) -> Result<()> {
        self.turn(Some(Instant::now()))
    }

    fn handle(&mut self, ev: Event) {
        if self.source_event(ev) {
            return;
        }
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
            if entry.child.channel_failed() {
                // A worker whose channel broke cannot be understood any more: stop it; its
                // task fails with the channel's error (see `Pool::on_exit`).
                entry.child.signal_group(nix::sys::signal::Signal::SIGKILL);
            }
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
                    pool.on_exit(id, reaped, &mut self.children);
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
