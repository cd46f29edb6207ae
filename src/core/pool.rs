//! A prefork worker pool's supervision, in plain Rust: the queue of waiting tasks, the workers'
//! states, per-task deadlines, recycling, retries and crash-loop backoff. Forking a worker and what
//! a worker does are the caller's (`Spawn`), so this module never runs PHP.
//!
//! A worker: `Starting` (forked, until it says `Ready`) → `Idle` ⇄ `Busy` (one task at a time) →
//! `Stopping` (sent `Stop` while idle, to be recycled) → reaped and replaced. A task: queued →
//! running on one worker → finished (its `Report`), or queued again on a fresh worker when its
//! worker crashed and retries are left. Nothing accepted is dropped: every task ends finished or
//! is handed back by `close`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::core::error::{Error, Result};
use crate::core::ipc::Message;
use crate::core::outcome::{Outcome, Report};
use crate::core::process::{Deadline, Job};
use crate::core::record::{Code, ExceptionRecord};
use crate::core::sys::{self, ExitStatus};
use crate::core::wait;

/// PHP class name of the records of tasks failed by the pool itself.
pub const POOL_EXCEPTION: &str = "Forklift\\PoolException";

/// First wait before forking again after a worker died at start; doubles each time.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub workers: usize,
    /// Per task, kept by the parent: SIGTERM to the worker's group, SIGKILL after the grace.
    pub deadline: Option<Deadline>,
    /// Recycle a worker after this many tasks (less up to 10 %, so they do not all go at once).
    pub max_jobs: Option<u64>,
    /// Recycle a worker whose peak resident memory (`ru_maxrss`) is above this (bytes).
    pub max_memory: Option<u64>,
    /// Recycle a worker this long after it started (less up to 10 %).
    pub ttl: Option<Duration>,
    /// Recycle a worker idle for this long.
    pub idle_ttl: Option<Duration>,
    /// Times a task whose worker crashed is tried again on a fresh worker.
    pub retries: u32,
    /// Tasks that may wait for a worker.
    pub queue_size: usize,
    /// Tasks handed to a worker at once: 1 runs one at a time; more keep the next ones in the
    /// worker's socket so that it never waits for the parent between tasks (throughput), at the
    /// cost of those tasks waiting behind a slow one there.
    pub prefetch: usize,
    /// Workers in a row that may die before they are ready before the pool gives up.
    pub max_start_failures: u32,
}

/// Forks worker number `n`; in the child it never returns.
pub type Spawn<'a> = dyn FnMut(usize) -> Result<Job> + 'a;

/// A task that ended.
#[derive(Debug)]
pub struct Finished {
    pub id: u64,
    pub report: Report,
    /// How many times it ran (1 + retries used).
    pub attempts: u32,
}

/// A task that never ran, given back by `close`.
#[derive(Debug)]
pub struct Unrun {
    pub id: u64,
    pub format: u8,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Idle,
    Busy,
    Stopping,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Idle => "idle",
            State::Busy => "busy",
            State::Stopping => "stopping",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub oom: u64,
    pub recycled: u64,
    pub crashed: u64,
    pub retried: u64,
}

/// One worker, as `stats` shows it.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    pub number: usize,
    pub pid: i32,
    pub state: State,
    pub tasks_done: u64,
    pub rss: u64,
    pub task: Option<u64>,
    pub task_age: Option<Duration>,
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
    term_sent: Option<Instant>,
    kill_sent: bool,
}

struct Worker {
    number: usize,
    job: Job,
    state: State,
    since: Instant,
    running: Option<Running>,
    /// Tasks sent after `running`, not begun yet (see `Config::prefetch`).
    prefetched: VecDeque<Pending>,
    /// Frames for the worker its socket has not taken yet: the parent never blocks on a write (a
    /// busy worker does not read), it finishes them when poll says the socket has room.
    outbox: Vec<u8>,
    /// Messages outside any task (errors of the start hook, its failure).
    loose: Vec<Message>,
    tasks_done: u64,
    rss: u64,
    max_jobs: Option<u64>,
    retire_at: Option<Instant>,
    /// `idle_ttl` less this worker's jitter.
    idle_ttl: Option<Duration>,
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
    rng: u64,
}

/// Why `submit` refused a task.
#[derive(Debug, PartialEq)]
pub enum Refused {
    Full,
    Closed,
    Stopped(String),
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
            rng: seed | 1,
        }
    }

    pub fn submit(&mut self, format: u8, bytes: Vec<u8>) -> std::result::Result<u64, Refused> {
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

    /// Tasks sent to workers and not begun yet.
    fn prefetched(&self) -> usize {
        self.workers.iter().map(|w| w.prefetched.len()).sum()
    }

    /// Whether every accepted task has finished (and been taken with `take_finished`).
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.running() == 0 && self.prefetched() == 0
    }

    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Tasks that ended since the last call.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn workers(&self) -> Vec<WorkerStats> {
        let now = Instant::now();
        self.workers
            .iter()
            .map(|w| WorkerStats {
                number: w.number,
                pid: w.job.pid(),
                state: w.state,
                tasks_done: w.tasks_done,
                rss: w.rss,
                task: w.running.as_ref().map(|r| r.task.id),
                task_age: w.running.as_ref().map(|r| now - r.started),
            })
            .collect()
    }

    fn jitter(&mut self, of: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if of < 10 {
            0
        } else {
            self.rng % (of / 10 + 1)
        }
    }

    /// One turn of supervision: start missing workers, hand out tasks, recycle, then wait (at most
    /// until `deadline`) for something to happen and deal with it.
    pub fn turn(&mut self, spawn: &mut Spawn, deadline: Option<Instant>) -> Result<()> {
        self.top_up(spawn)?;
        self.dispatch()?;
        self.recycle();
        self.wait_and_handle(deadline)
    }

    fn top_up(&mut self, spawn: &mut Spawn) -> Result<()> {
        if self.stopped.is_some() || (self.closing && self.queue.is_empty()) {
            return Ok(());
        }
        match self.respawn_at {
            Some(t) if Instant::now() < t => return Ok(()),
            // The backoff is over: no timer left to wake for.
            Some(_) => self.respawn_at = None,
            None => {}
        }
        while self.workers.len() < self.config.workers {
            let number = self.next_number;
            self.next_number += 1;
            let job = spawn(number)?;
            let now = Instant::now();
            let max_jobs = self.config.max_jobs.map(|m| (m - self.jitter(m)).max(1));
            let ttl = self.config.ttl.map(|t| {
                let ms = t.as_millis() as u64;
                t - Duration::from_millis(self.jitter(ms))
            });
            let idle_ttl = self.config.idle_ttl.map(|t| {
                let ms = t.as_millis() as u64;
                t - Duration::from_millis(self.jitter(ms))
            });
            self.workers.push(Worker {
                number,
                job,
                state: State::Starting,
                since: now,
                running: None,
                prefetched: VecDeque::new(),
                outbox: Vec::new(),
                loose: Vec::new(),
                tasks_done: 0,
                rss: 0,
                max_jobs,
                retire_at: ttl.map(|t| now + t),
                idle_ttl,
            });
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Result<()> {
        let prefetch = self.config.prefetch.max(1);
        for w in self.workers.iter_mut() {
            if !matches!(w.state, State::Idle | State::Busy) || w.due_for_recycling(&self.config) {
                continue;
            }
            // All the tasks this worker gets now go in one write.
            let room = prefetch.saturating_sub(w.running.is_some() as usize + w.prefetched.len());
            let take = room.min(self.queue.len());
            if take == 0 {
                continue;
            }
            let tasks: Vec<Pending> = self.queue.drain(..take).collect();
            let mut frames = Vec::new();
            for t in &tasks {
                let msg = Message::Task {
                    id: t.id,
                    format: t.format,
                    bytes: t.bytes.clone(),
                };
                frames.extend_from_slice(&msg.encode());
            }
            if !w.post(&frames) {
                // The worker is going away; its death is handled in the wait below.
                for t in tasks.into_iter().rev() {
                    self.queue.push_front(t);
                }
                w.state = State::Stopping;
                continue;
            }
            for task in tasks {
                if w.running.is_none() {
                    Self::begin(w, task);
                } else {
                    w.prefetched.push_back(task);
                }
            }
        }
        Ok(())
    }

    /// Worker `w` begins `task` now.
    fn begin(w: &mut Worker, task: Pending) {
        w.state = State::Busy;
        w.since = Instant::now();
        w.running = Some(Running {
            task,
            started: w.since,
            started_ns: sys::monotonic_ns(),
            messages: Vec::new(),
            term_sent: None,
            kill_sent: false,
        });
    }

    fn recycle(&mut self) {
        for w in self.workers.iter_mut() {
            if w.state == State::Idle && w.due_for_recycling(&self.config) {
                w.state = State::Stopping;
                w.since = Instant::now();
                if !w.post(&Message::Stop.encode()) {
                    w.job.signal_group(Signal::SIGKILL);
                }
            }
        }
    }

    /// The next instant at which a timer of the pool is due.
    fn next_timer(&self) -> Option<Instant> {
        let mut next = self.respawn_at;
        let mut add = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for w in &self.workers {
            if let (Some(r), Some(d)) = (&w.running, self.config.deadline) {
                match r.term_sent {
                    None => add(r.started + d.timeout),
                    Some(t) if !r.kill_sent => add(t + d.grace),
                    Some(_) => {}
                }
            }
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

    fn wait_and_handle(&mut self, deadline: Option<Instant>) -> Result<()> {
        // (worker index, is its pidfd) for each polled fd.
        let mut fds = Vec::with_capacity(self.workers.len() * 2);
        let mut owners = Vec::with_capacity(self.workers.len() * 2);
        for (i, w) in self.workers.iter().enumerate() {
            if let Some(fd) = w.job.channel_fd() {
                let out = if w.outbox.is_empty() {
                    0
                } else {
                    libc::POLLOUT
                };
                fds.push((fd, libc::POLLIN | out));
                owners.push((i, false));
            }
            if let Some(fd) = w.job.pidfd() {
                fds.push((fd, libc::POLLIN));
                owners.push((i, true));
            }
        }
        let blind = self.workers.iter().any(|w| !w.job.has_pidfd());
        let tick = blind.then(|| Instant::now() + Duration::from_millis(5));
        let wake = [deadline, self.next_timer(), tick]
            .into_iter()
            .flatten()
            .min();
        let mut ready = Vec::new();
        if !fds.is_empty() || wake.is_some() {
            sys::poll_io(&fds, wake, &mut ready).map_err(|e| Error::sys("poll", e))?;
        }
        // Keep the deadlines of this process's other jobs (plain forks) while the pool waits.
        wait::enforce_deadlines();
        let mut exited = vec![false; self.workers.len()];
        for (k, &(i, is_pidfd)) in owners.iter().enumerate() {
            let revents = ready.get(k).copied().unwrap_or(0);
            if revents == 0 {
                continue;
            }
            if is_pidfd {
                exited[i] = true;
                continue;
            }
            if revents & libc::POLLOUT != 0 && !self.workers[i].flush() {
                // Its socket is broken: it is dying, and its death is handled below.
                self.workers[i].outbox.clear();
            }
            if revents & !libc::POLLOUT != 0 {
                let msgs = self.workers[i].job.take_messages();
                self.route(i, msgs);
            }
        }
        for (i, w) in self.workers.iter().enumerate() {
            if !w.job.has_pidfd() && w.job.has_exited() {
                exited[i] = true;
            }
        }
        self.enforce_task_deadlines();
        // Highest index first, so that swap_remove does not move a worker still to be buried.
        for i in (0..self.workers.len()).rev() {
            if exited[i] {
                self.bury(i)?;
            }
        }
        Ok(())
    }

    fn route(&mut self, i: usize, msgs: Vec<Message>) {
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
                    let status = ExitStatus {
                        code: Some(0),
                        signal: None,
                        core_dumped: false,
                        cpu: Duration::from_nanos(cpu_ns),
                        max_rss: rss,
                    };
                    let mut report = Report::decide(
                        w.job.pid(),
                        run.messages,
                        None,
                        status,
                        run.started_ns,
                        sys::monotonic_ns(),
                    );
                    // The worker did not exit: there is no exit code to tell.
                    report.exit_code = None;
                    if let Some(next) = w.prefetched.pop_front() {
                        Self::begin(w, next);
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

    fn enforce_task_deadlines(&mut self) {
        let Some(d) = self.config.deadline else {
            return;
        };
        let now = Instant::now();
        for w in self.workers.iter_mut() {
            let Some(run) = &mut w.running else { continue };
            match run.term_sent {
                None if now >= run.started + d.timeout => {
                    run.term_sent = Some(now);
                    w.job.signal_group(Signal::SIGTERM);
                    if d.grace.is_zero() {
                        run.kill_sent = true;
                        w.job.signal_group(Signal::SIGKILL);
                    }
                }
                Some(t) if !run.kill_sent && now >= t + d.grace => {
                    run.kill_sent = true;
                    w.job.signal_group(Signal::SIGKILL);
                }
                _ => {}
            }
        }
    }

    /// Worker `i` has exited: reap it, settle its task, count why it went, remove it.
    fn bury(&mut self, i: usize) -> Result<()> {
        let raw = self.workers[i].job.reap()?;
        // What arrived last may finish its task, or be the task's last words.
        self.route(i, raw.messages);
        let mut w = self.workers.swap_remove(i);
        let pid = w.job.pid();
        // Tasks it had been sent but not begun go back to the front of the queue, in order.
        while let Some(task) = w.prefetched.pop_back() {
            self.queue.push_front(task);
        }
        match w.running.take() {
            Some(run) => {
                let timed_out = run.term_sent.map(|_| run.kill_sent);
                let mut report = Report::decide(
                    pid,
                    run.messages,
                    raw.channel_error.as_ref(),
                    raw.status,
                    run.started_ns,
                    raw.observed_ns,
                );
                if let (Some(killed), Some(d)) = (timed_out, self.config.deadline) {
                    report.time_out(d.timeout.as_secs_f64(), killed);
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
                    pid,
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
        Ok(())
    }

    fn start_failed(&mut self, cause: String) {
        self.start_failures += 1;
        let factor = 1u32 << (self.start_failures - 1).min(10);
        let wait = (BACKOFF_FIRST * factor).min(BACKOFF_MAX);
        self.respawn_at = Some(Instant::now() + wait);
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

    /// Stops taking tasks and hands back those that have not started. With `kill`, running tasks
    /// are ended too (their workers are SIGKILLed); otherwise they finish, and idle workers are
    /// told to stop. Call `turn` until `workers_left` is 0.
    pub fn close(&mut self, kill: bool) -> Vec<Unrun> {
        self.closing = true;
        if kill {
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
                w.job.signal_group(Signal::SIGKILL);
            } else if matches!(w.state, State::Idle | State::Starting) {
                w.state = State::Stopping;
                if !w.post(&Message::Stop.encode()) {
                    w.job.signal_group(Signal::SIGKILL);
                }
            }
        }
        back
    }

    /// Workers not yet reaped.
    pub fn workers_left(&self) -> usize {
        self.workers.len()
    }

    /// After `close`: idle workers that finished their last task are told to stop.
    pub fn stop_idle(&mut self) {
        for w in self.workers.iter_mut() {
            if w.state == State::Idle {
                w.state = State::Stopping;
                if !w.post(&Message::Stop.encode()) {
                    w.job.signal_group(Signal::SIGKILL);
                }
            }
        }
    }
}

impl Worker {
    /// Queues frames for the worker and writes what its socket takes now. False if it is broken.
    fn post(&mut self, frames: &[u8]) -> bool {
        self.outbox.extend_from_slice(frames);
        self.flush()
    }

    /// Writes what the socket takes of the outbox, without waiting. False if it is broken.
    fn flush(&mut self) -> bool {
        while !self.outbox.is_empty() {
            match self.job.send_some(&self.outbox) {
                Ok(0) => return true,
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(_) => return false,
            }
        }
        true
    }

    fn due_for_recycling(&self, config: &Config) -> bool {
        let now = Instant::now();
        self.max_jobs.is_some_and(|m| self.tasks_done >= m)
            || config.max_memory.is_some_and(|m| self.rss > m)
            || self.retire_at.is_some_and(|t| now >= t)
            || (self.state == State::Idle && self.idle_ttl.is_some_and(|i| now >= self.since + i))
    }
}
