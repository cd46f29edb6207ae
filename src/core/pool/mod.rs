//! A prefork worker pool's supervision, in plain Rust: the queue of waiting tasks, the workers'
//! states, recycling, retries and crash-loop backoff. It only decides: the runtime feeds it events
//! (a worker's messages, its exit, the clock) and it acts through [`Workers`] (send frames, signal,
//! arm a task's deadline). Forking a worker and what a worker does are the binding layer's; this
//! module never forks, never waits and never runs PHP, so `cargo test` drives it with a fake.
//!
//! A worker: `Starting` (forked, until it says `Ready`) → `Idle` ⇄ `Busy` (one task at a time) →
//! `Stopping` (sent `Stop` while idle, to be recycled) → reaped and replaced. A task: queued →
//! running on one worker → finished (its `Report`), or queued again on a fresh worker when its
//! worker crashed and retries are left. Nothing accepted is dropped: every task ends finished or
//! is handed back by `close`.

mod config;
mod events;
mod policy;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use config::{Config, Counters, Finished, Refused, State, Unrun, WorkerStats};

use crate::core::deadline::Deadline;
use crate::core::runtime::ChildId;
use crate::core::sys;
use crate::core::wire::Message;
use policy::Jitter;

/// What the pool does to its workers; the runtime's children table in production, a fake in tests.
pub trait Workers {
    /// Queues frames for the worker; false if its channel is broken.
    fn post(&mut self, w: ChildId, frames: &[u8]) -> bool;
    /// Sends a signal to the worker's process group (while it is not reaped).
    fn signal_group(&mut self, w: ChildId, sig: Signal);
    /// Starts a task's deadline on the worker (SIGTERM → grace → SIGKILL to its group).
    fn arm(&mut self, w: ChildId, deadline: Deadline, start: Instant);
    /// The task ended in time: no more deadline on the worker.
    fn disarm(&mut self, w: ChildId);
    /// The worker said something that cannot be true of its channel: fail its channel with
    /// `why` and kill it (its task then fails with that error).
    fn break_channel(&mut self, w: ChildId, why: String);
}

struct Pending {
    id: u64,
    format: u8,
    bytes: Vec<u8>,
    attempts: u32,
}

struct Running {
    task: Pending,
    started: Instant,
    started_ns: u64,
    messages: Vec<Message>,
}

struct Worker {
    number: usize,
    child: ChildId,
    pid: i32,
    state: State,
    since: Instant,
    running: Option<Running>,
    /// Tasks sent after `running`, not begun yet (see `Config::prefetch`).
    prefetched: VecDeque<Pending>,
    /// Messages outside any task (errors of the start hook, its failure).
    loose: Vec<Message>,
    tasks_done: u64,
    rss: u64,
    max_jobs: Option<u64>,
    retire_at: Option<Instant>,
    /// `idle_ttl` less this worker's jitter.
    idle_ttl: Option<Duration>,
    /// Moving average of its tasks' run time, as the parent sees it (none finished yet: `None`).
    avg_task: Option<Duration>,
}

/// Tasks shorter than this, on average, are worth prefetching: the parent's round trip (tens of
/// microseconds) is then a good part of each task's cost. Longer ones gain nothing from it and
/// would only make the tasks behind them wait.
const PREFETCH_BELOW: Duration = Duration::from_millis(2);

impl Worker {
    /// How many tasks this worker may hold now: one, unless its tasks have been short and the
    /// one it runs is short so far; never more than it may still run before it is recycled, and
    /// one at a time under a memory rule (checked after each task).
    fn depth(&self, config: &Config, now: Instant) -> usize {
        let short = self.avg_task.is_some_and(|a| a < PREFETCH_BELOW)
            && self
                .running
                .as_ref()
                .is_none_or(|r| now.saturating_duration_since(r.started) < PREFETCH_BELOW);
        if !short || config.max_memory.is_some() {
            return 1;
        }
        let left = self
            .max_jobs
            .map_or(usize::MAX, |m| m.saturating_sub(self.tasks_done) as usize);
        config.prefetch.max(1).min(left).max(1)
    }

    fn in_flight(&self) -> usize {
        self.running.is_some() as usize + self.prefetched.len()
    }

    fn due_for_recycling(&self, config: &Config, now: Instant, queue_empty: bool) -> bool {
        // ttl retires a worker only once it has run a task: one whose start takes longer than
        // its ttl would otherwise be replaced forever, running nothing. idleTtl only while there
        // is nothing for it to do: a queued task goes to it first.
        self.max_jobs.is_some_and(|m| self.tasks_done >= m)
            || config.max_memory.is_some_and(|m| self.rss > m)
            || (self.tasks_done > 0 && self.retire_at.is_some_and(|t| now >= t))
            || (queue_empty
                && self.state == State::Idle
                && self.idle_ttl.is_some_and(|i| now >= self.since + i))
    }
}

pub struct Pool {
    config: Config,
    workers: Vec<Worker>,
    queue: VecDeque<Pending>,
    finished: Vec<Finished>,
    next_id: u64,
    next_number: usize,
    counters: Counters,
    start_failures: u32,
    respawn_at: Option<Instant>,
    /// Why the pool gave up, once it has.
    stopped: Option<String>,
    closing: bool,
    /// With `close(kill)`: workers are being killed, none is forked.
    killing: bool,
    jitter: Jitter,
    /// Where the next round of dispatch starts, so that tasks spread over the workers.
    cursor: usize,
}

impl Pool {
    pub fn new(config: Config) -> Pool {
        let seed = sys::monotonic_ns() ^ (std::process::id() as u64).rotate_left(32);
        Pool {
            config,
            workers: Vec::new(),
            queue: VecDeque::new(),
            finished: Vec::new(),
            next_id: 1,
            next_number: 1,
            counters: Counters::default(),
            start_failures: 0,
            respawn_at: None,
            stopped: None,
            closing: false,
            killing: false,
            jitter: Jitter::new(seed),
            cursor: 0,
        }
    }

    pub fn submit(&mut self, format: u8, bytes: Vec<u8>) -> Result<u64, Refused> {
        if let Some(cause) = &self.stopped {
            return Err(Refused::Stopped(cause.clone()));
        }
        if self.closing {
            return Err(Refused::Closed);
        }
        if self.queue.len() >= self.config.queue_size {
            return Err(Refused::Full);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Pending {
            id,
            format,
            bytes,
            attempts: 0,
        });
        self.counters.submitted += 1;
        Ok(id)
    }

    /// Tasks waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a worker is idle and could take a task at once.
    pub fn has_idle_worker(&self) -> bool {
        self.workers.iter().any(|w| w.state == State::Idle)
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.workers.iter().filter(|w| w.running.is_some()).count()
    }

    /// Whether every accepted task has finished (and been taken with `take_finished`).
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.workers.iter().all(|w| w.in_flight() == 0)
    }

    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Tasks that ended since the last call.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    pub fn has_finished(&self) -> bool {
        !self.finished.is_empty()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Workers not yet reaped.
    pub fn workers_left(&self) -> usize {
        self.workers.len()
    }

    pub fn workers(&self) -> Vec<WorkerStats> {
        let now = Instant::now();
        self.workers
            .iter()
            .map(|w| WorkerStats {
                number: w.number,
                pid: w.pid,
                state: w.state,
                tasks_done: w.tasks_done,
                rss: w.rss,
                task: w.running.as_ref().map(|r| r.task.id),
                task_age: w.running.as_ref().map(|r| now - r.started),
            })
            .collect()
    }

    // --- workers coming and going --------------------------------------------------------------

    /// How many workers to fork now (0 during a backoff, once stopped, or when closing with
    /// nothing left to run). The caller forks them and calls `add_worker` for each.
    pub fn missing(&mut self, now: Instant) -> usize {
        if self.stopped.is_some() || self.killing || (self.closing && self.queue.is_empty()) {
            return 0;
        }
        match self.respawn_at {
            Some(t) if now < t => return 0,
            Some(_) => self.respawn_at = None,
            None => {}
        }
        self.config.workers.saturating_sub(self.workers.len())
    }

    /// The number the next worker forked gets (shown in its title).
    pub fn next_number(&mut self) -> usize {
        let n = self.next_number;
        self.next_number += 1;
        n
    }

    pub fn add_worker(&mut self, number: usize, child: ChildId, pid: i32) {
        let now = Instant::now();
        let max_jobs = self
            .config
            .max_jobs
            .map(|m| (m - self.jitter.tenth_of(m)).max(1));
        let ttl = self.config.ttl.map(|t| self.jitter.shorten(t));
        let idle_ttl = self.config.idle_ttl.map(|t| self.jitter.shorten(t));
        self.workers.push(Worker {
            number,
            child,
            pid,
            state: State::Starting,
            since: now,
            running: None,
            prefetched: VecDeque::new(),
            loose: Vec::new(),
            tasks_done: 0,
            rss: 0,
            max_jobs,
            retire_at: ttl.map(|t| now + t),
            idle_ttl,
            avg_task: None,
        });
    }

    /// Stops taking tasks and hands back those that have not started. With `kill`, running tasks
    /// are ended too (their workers are SIGKILLed); otherwise they finish, and idle workers are
    /// told to stop. The runtime's turns then reap the workers until `workers_left` is 0.
    pub fn close(&mut self, kill: bool, ctl: &mut dyn Workers) -> Vec<Unrun> {
        self.closing = true;
        if kill {
            self.killing = true;
            for w in self.workers.iter_mut() {
                self.queue.extend(w.prefetched.drain(..));
            }
        }
        let back = self
            .queue
            .drain(..)
            .map(|t| Unrun {
                id: t.id,
                format: t.format,
                bytes: t.bytes,
            })
            .collect();
        for w in self.workers.iter_mut() {
            if kill {
                ctl.signal_group(w.child, Signal::SIGKILL);
            } else if matches!(w.state, State::Idle | State::Starting) {
                w.state = State::Stopping;
                if !ctl.post(w.child, &Message::Stop.encode()) {
                    ctl.signal_group(w.child, Signal::SIGKILL);
                }
            }
        }
        back
    }
}

#[cfg(test)]
mod tests;
