//! A pool's settings and what it reports about itself: plain data, no behaviour.

use std::time::Duration;

use crate::core::deadline::Deadline;
use crate::core::outcome::Report;

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
    /// Most tasks a worker holds at once. Tasks are spread one per worker first; only a backlog
    /// (more queued tasks than idle workers) fills workers up to this depth, so that they never
    /// wait for the parent between tasks. 1 runs strictly one at a time.
    pub prefetch: usize,
    /// Workers in a row that may die before they are ready before the pool gives up.
    pub max_start_failures: u32,
}

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

/// Why `submit` refused a task.
#[derive(Debug, PartialEq)]
pub enum Refused {
    Full,
    Closed,
    Stopped(String),
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
