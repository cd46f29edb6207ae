//! How a pool reacts: the runtime calls `service` (hand out tasks, recycle), `on_messages` (a
//! worker's frames) and `on_exit` (a worker reaped); everything the pool decides happens here.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{policy, Finished, Pending, Pool, Running, State, Worker, Workers};
use crate::core::child::Reaped;
use crate::core::deadline::Deadline;
use crate::core::outcome::{record_names, Outcome, Report};
use crate::core::record::{Code, ExceptionRecord};
use crate::core::runtime::ChildId;
use crate::core::sys::{self, ExitStatus};
use crate::core::wire::Message;

impl Pool {
    // --- what the runtime calls ----------------------------------------------------------------

    /// Hands out queued tasks and recycles idle workers that are due. Never waits.
    pub fn service(&mut self, now: Instant, ctl: &mut dyn Workers) {
        self.dispatch(now, ctl);
        self.recycle(now, ctl);
    }

    /// The next instant ahead of `now` at which a timer of the pool is due (task deadlines are
    /// the runtime's).
    pub fn next_timer(&self, now: Instant) -> Option<Instant> {
        // Only what is still ahead: a respawn whose backoff is over waits for the pool's own next
        // call to fork (the loop cannot fork), and must not make every other wait spin meanwhile.
        let mut next = self
            .respawn_at
            .filter(|t| *t > now && self.stopped.is_none());
        let mut add = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        for w in &self.workers {
            if w.state == State::Idle {
                if let Some(t) = w.retire_at.filter(|_| w.tasks_done > 0) {
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
    pub fn on_exit(&mut self, w: ChildId, raw: Reaped, ctl: &mut dyn Workers) {
        let Some(i) = self.index_of(w) else { return };
        // What arrived last may finish its task, or be the task's last words.
        self.route(i, raw.messages, None);
        let mut w = self.workers.swap_remove(i);
        // Tasks it had been sent but not begun go back to the front of the queue, in order.
        while let Some(task) = w.prefetched.pop_back() {
            self.queue.push_front(task);
        }
        // A broken channel is why the runtime killed the worker: the task fails with that
        // error, not with the signal it took to stop the worker.
        let status = match (&raw.channel_error, raw.stopped) {
            (Some(_), None) if raw.status.signal == Some(libc::SIGKILL) => ExitStatus {
                signal: None,
                ..raw.status
            },
            _ => raw.status,
        };
        match w.running.take() {
            Some(run) => {
                let mut report = Report::decide(
                    w.pid,
                    run.messages,
                    raw.channel_error.as_ref(),
                    status,
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
                self.start_failed(report.cause(), ctl);
            }
            None if w.state == State::Stopping => self.counters.recycled += 1,
            None => self.counters.crashed += 1,
        }
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
                    || w.due_for_recycling(&self.config, now, false)
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
        let queue_empty = self.queue.is_empty();
        for w in self.workers.iter_mut() {
            let due = w.due_for_recycling(&self.config, now, queue_empty)
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
                    if run.task.id != id {
                        // Only a task writing on its own channel says this: nothing it sends can
                        // be trusted any more. Its worker is stopped; the task fails with why.
                        let why = format!(
                            "the worker said task {id} ended while it ran task {}: something \
                             wrote on its channel",
                            run.task.id
                        );
                        w.running = Some(run);
                        if let Some(ctl) = ctl.as_deref_mut() {
                            ctl.break_channel(w.child, why);
                        }
                        return;
                    }
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

    fn start_failed(&mut self, cause: String, ctl: &mut dyn Workers) {
        if self.stopped.is_some() {
            // A worker the stop itself killed: the pool's cause stands.
            return;
        }
        self.start_failures += 1;
        self.respawn_at = Some(Instant::now() + policy::backoff(self.start_failures));
        if self.start_failures >= self.config.max_start_failures {
            let why = format!(
                "{} workers in a row died before they were ready; the last: {cause}",
                self.start_failures
            );
            self.stop(why, ctl);
        }
    }

    /// Gives up: no more workers; every queued task is failed with the cause.
    fn stop(&mut self, cause: String, ctl: &mut dyn Workers) {
        // The workers left are starting ones that would die too: end them now, so that the
        // turns that follow reap them and none is left a zombie.
        for w in &self.workers {
            ctl.signal_group(w.child, Signal::SIGKILL);
        }
        for task in std::mem::take(&mut self.queue) {
            let record = ExceptionRecord {
                class: record_names().pool.into(),
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
