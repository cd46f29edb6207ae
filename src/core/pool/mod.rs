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
mod policy;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use config::{Config, Counters, Finished, Refused, State, Unrun, WorkerStats};

use crate::core::child::Reaped;
use crate::core::deadline::Deadline;
use crate::core::outcome::{Outcome, Report, POOL_EXCEPTION};
use crate::core::record::{Code, ExceptionRecord};
use crate::core::runtime::ChildId;
use crate::core::sys::{self, ExitStatus};
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

    fn due_for_recycling(&self, config: &Config, now: Instant) -> bool {
        self.max_jobs.is_some_and(|m| self.tasks_done >= m)
            || config.max_memory.is_some_and(|m| self.rss > m)
            || self.retire_at.is_some_and(|t| now >= t)
            || (self.state == State::Idle && self.idle_ttl.is_some_and(|i| now >= self.since + i))
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

    // --- what the runtime calls ----------------------------------------------------------------

    /// Hands out queued tasks and recycles idle workers that are due. Never waits.
    pub fn service(&mut self, now: Instant, ctl: &mut dyn Workers) {
        self.dispatch(now, ctl);
        self.recycle(now, ctl);
    }

    /// The next instant at which a timer of the pool is due (task deadlines are the runtime's).
    pub fn next_timer(&self) -> Option<Instant> {
        let mut next = self.respawn_at;
        let mut add = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for w in &self.workers {
            if w.state == State::Idle {
                if let Some(t) = w.retire_at {
                    add(t);
                }
                if let Some(i) = w.idle_ttl {
                    add(w.since + i);
                }
            }
        }
        next
    }

    /// Messages from worker `w`, in the order it sent them.
    pub fn on_messages(&mut self, w: ChildId, msgs: Vec<Message>, ctl: &mut dyn Workers) {
        let Some(i) = self.index_of(w) else { return };
        self.route(i, msgs, Some(ctl));
    }

    /// Worker `w` has exited and was reaped: settle its task, count why it went, forget it.
    pub fn on_exit(&mut self, w: ChildId, raw: Reaped) {
        let Some(i) = self.index_of(w) else { return };
        // What arrived last may finish its task, or be the task's last words.
        self.route(i, raw.messages, None);
        let mut w = self.workers.swap_remove(i);
        // Tasks it had been sent but not begun go back to the front of the queue, in order.
        while let Some(task) = w.prefetched.pop_back() {
            self.queue.push_front(task);
        }
        match w.running.take() {
            Some(run) => {
                let mut report = Report::decide(
                    w.pid,
                    run.messages,
                    raw.channel_error.as_ref(),
                    raw.status,
                    run.started_ns,
                    raw.observed_ns,
                );
                if let Some((limits, how)) = raw.stopped {
                    report.time_out(limits.timeout.as_secs_f64(), how);
                }
                // The worker died in the task: a crash whatever the cause; only causes a fresh
                // worker might not meet again (not exit(), not a timeout) are retried.
                self.counters.crashed += 1;
                let crashed = matches!(
                    report.outcome,
                    Outcome::Signal | Outcome::Fatal | Outcome::Oom
                );
                let retry = crashed
                    && run.task.attempts < self.config.retries
                    && self.stopped.is_none()
                    && !self.closing;
                if retry {
                    self.counters.retried += 1;
                    let mut task = run.task;
                    task.attempts += 1;
                    self.queue.push_front(task);
                } else {
                    self.finish(run.task, report);
                }
            }
            None if w.state == State::Starting => {
                let report = Report::decide(
                    w.pid,
                    std::mem::take(&mut w.loose),
                    raw.channel_error.as_ref(),
                    raw.status,
                    0,
                    0,
                );
                self.start_failed(report.cause());
            }
            None if w.state == State::Stopping => self.counters.recycled += 1,
            None => self.counters.crashed += 1,
        }
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

    // --- inside ------------------------------------------------------------------------------

    fn index_of(&self, w: ChildId) -> Option<usize> {
        self.workers.iter().position(|x| x.child == w)
    }

    /// Tasks go one per worker first (spread from a rotating start, so no worker is always the
    /// first pick); only under a backlog (at least as many queued as there are workers) are
    /// workers filled deeper, evenly, up to `Config::prefetch`, so that they never wait for the
    /// parent between tasks. Each task still gets its own `TaskEnd`, so a crash is charged to the
    /// task that was running and the ones behind it go back to the queue unrun.
    fn dispatch(&mut self, now: Instant, ctl: &mut dyn Workers) {
        if self.queue.is_empty() || self.workers.is_empty() {
            return;
        }
        let cap = self.config.prefetch.max(1);
        let n = self.workers.len();
        let start = self.cursor % n;
        let mut batches: Vec<Vec<Pending>> = (0..n).map(|_| Vec::new()).collect();
        for depth in 1..=cap {
            // Deeper than one task a worker only under a backlog: as many tasks queued as there
            // are workers. A short queue waits for the first free worker instead of queueing
            // behind a task that may be slow.
            if depth > 1 && self.queue.len() < n {
                break;
            }
            let mut gave = false;
            for k in 0..n {
                let i = (start + k) % n;
                let w = &self.workers[i];
                if !matches!(w.state, State::Idle | State::Busy)
                    || w.due_for_recycling(&self.config, now)
                    || w.in_flight() + batches[i].len() >= depth
                    || depth > w.depth(&self.config, now)
                {
                    continue;
                }
                let Some(task) = self.queue.pop_front() else {
                    break;
                };
                batches[i].push(task);
                gave = true;
            }
            if self.queue.is_empty() || (!gave && depth > 1) {
                break;
            }
        }
        self.cursor = start + 1;
        for (i, tasks) in batches.into_iter().enumerate() {
            if tasks.is_empty() {
                continue;
            }
            // All the tasks a worker gets now go in one write.
            let mut frames = Vec::new();
            for t in &tasks {
                let msg = Message::Task {
                    id: t.id,
                    format: t.format,
                    bytes: t.bytes.clone(),
                };
                frames.extend_from_slice(&msg.encode());
            }
            let w = &mut self.workers[i];
            if !ctl.post(w.child, &frames) {
                // The worker is going away; its exit is handled when it comes.
                for t in tasks.into_iter().rev() {
                    self.queue.push_front(t);
                }
                w.state = State::Stopping;
                continue;
            }
            for task in tasks {
                if w.running.is_none() {
                    Self::begin(w, task, self.config.deadline, ctl);
                } else {
                    w.prefetched.push_back(task);
                }
            }
        }
    }

    /// Worker `w` begins `task` now.
    fn begin(w: &mut Worker, task: Pending, deadline: Option<Deadline>, ctl: &mut dyn Workers) {
        w.state = State::Busy;
        w.since = Instant::now();
        w.running = Some(Running {
            task,
            started: w.since,
            started_ns: sys::monotonic_ns(),
            messages: Vec::new(),
        });
        if let Some(d) = deadline {
            ctl.arm(w.child, d, w.since);
        }
    }

    fn recycle(&mut self, now: Instant, ctl: &mut dyn Workers) {
        let closing = self.closing;
        for w in self.workers.iter_mut() {
            let due = w.due_for_recycling(&self.config, now)
                // Closing: idle workers leave once they have nothing left to run.
                || (closing && w.in_flight() == 0);
            if w.state == State::Idle && due {
                w.state = State::Stopping;
                w.since = now;
                if !ctl.post(w.child, &Message::Stop.encode()) {
                    ctl.signal_group(w.child, Signal::SIGKILL);
                }
            }
        }
    }

    /// `ctl` is `None` for the last words of a worker that has exited (nothing to arm then).
    fn route(&mut self, i: usize, msgs: Vec<Message>, mut ctl: Option<&mut dyn Workers>) {
        for m in msgs {
            let w = &mut self.workers[i];
            match m {
                Message::Ready => {
                    w.state = State::Idle;
                    w.since = Instant::now();
                    self.start_failures = 0;
                    self.respawn_at = None;
                    w.loose.clear();
                }
                Message::TaskEnd { id, cpu_ns, rss } => {
                    let Some(run) = w.running.take() else {
                        continue;
                    };
                    debug_assert_eq!(run.task.id, id);
                    w.tasks_done += 1;
                    w.rss = rss;
                    w.state = State::Idle;
                    w.since = Instant::now();
                    let took = w.since.saturating_duration_since(run.started);
                    w.avg_task = Some(match w.avg_task {
                        Some(avg) => (avg * 3 + took) / 4,
                        None => took,
                    });
                    let status = ExitStatus {
                        code: Some(0),
                        signal: None,
                        core_dumped: false,
                        cpu: Duration::from_nanos(cpu_ns),
                        max_rss: rss,
                    };
                    let mut report = Report::decide(
                        w.pid,
                        run.messages,
                        None,
                        status,
                        run.started_ns,
                        sys::monotonic_ns(),
                    );
                    // The worker did not exit: there is no exit code to tell.
                    report.exit_code = None;
                    if let Some(ctl) = ctl.as_deref_mut() {
                        ctl.disarm(w.child);
                        if let Some(next) = w.prefetched.pop_front() {
                            Self::begin(w, next, self.config.deadline, ctl);
                        }
                    }
                    self.finish(run.task, report);
                }
                other => match &mut w.running {
                    Some(run) => run.messages.push(other),
                    None => w.loose.push(other),
                },
            }
        }
    }

    fn finish(&mut self, task: Pending, report: Report) {
        match report.outcome {
            Outcome::Ok => self.counters.completed += 1,
            Outcome::Timeout => {
                self.counters.timed_out += 1;
                self.counters.failed += 1;
            }
            Outcome::Oom => {
                self.counters.oom += 1;
                self.counters.failed += 1;
            }
            _ => self.counters.failed += 1,
        }
        self.finished.push(Finished {
            id: task.id,
            report,
            attempts: task.attempts + 1,
        });
    }

    fn start_failed(&mut self, cause: String) {
        self.start_failures += 1;
        self.respawn_at = Some(Instant::now() + policy::backoff(self.start_failures));
        if self.start_failures >= self.config.max_start_failures {
            let why = format!(
                "{} workers in a row died before they were ready; the last: {cause}",
                self.start_failures
            );
            self.stop(why);
        }
    }

    /// Gives up: no more workers; every queued task is failed with the cause.
    fn stop(&mut self, cause: String) {
        for task in std::mem::take(&mut self.queue) {
            let record = ExceptionRecord {
                class: POOL_EXCEPTION.into(),
                message: format!("the pool stopped before this task ran: {cause}"),
                code: Code::Int(0),
                ..Default::default()
            };
            let now = sys::monotonic_ns();
            let report = Report::decide(
                0,
                vec![Message::Exception(record)],
                None,
                ExitStatus::unknown(),
                now,
                now,
            );
            // It never ran: zero attempts.
            self.counters.failed += 1;
            self.finished.push(Finished {
                id: task.id,
                report,
                attempts: task.attempts,
            });
        }
        self.stopped = Some(cause);
    }
}

#[cfg(test)]
mod tests;
