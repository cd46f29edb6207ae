//! The dispatcher's decisions, without processes or PHP: which jobs exist, which lane each runs in,
//! what is due (interval timers, cron lines), which runs start now (the head of each idle serial
//! lane, every parallel run), the overlap rule, stopping, and what each job has done so far.
//!
//! With a leader lock (several hosts, one schedule) the plan is the leader or a standby: a standby
//! fires only the entries that reach every host ([`Reach::EveryHost`]); what application code asks
//! for (`queue()`, `start()`) runs in either. Taking and checking the lock is the binding's: the
//! plan only fires [`Target::Leadership`] when it is time to check, and is told the answer.
//!
//! The binding forks the runs this returns and tells it when they start and end; `cargo test`
//! drives it with a hand-made clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::cron::Schedule;
use super::every::{Every, Missed};
use crate::core::error::{Error, Result};

/// Both clocks at one moment: interval timers run on the monotonic one, cron lines on the wall.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            mono: Instant::now(),
            wall: Utc::now(),
        }
    }

    /// The monotonic instant at which the wall clock shows `at` (if it is not set meanwhile).
    fn mono_at(&self, at: DateTime<Utc>) -> Instant {
        match (at - self.wall).to_std() {
            Ok(ahead) => self.mono + ahead,
            Err(_) => self.mono, // in the past
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub usize);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaneId(pub usize);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u64);

/// Where a job's runs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A serial lane: one run at a time, first in first out.
    Lane(LaneId),
    /// A child of its own, at once.
    Parallel,
}

/// What asked for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Cron,
    Every,
    /// Asked for by application code (`queue()` / `start()`).
    Asked,
    /// Queued in the previous dispatcher, handed over at a reload.
    HandedOver,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Cron => "cron",
            Trigger::Every => "every",
            Trigger::Asked => "asked",
            Trigger::HandedOver => "handed over",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobDef {
    pub name: String,
    pub placement: Placement,
    /// May a run start while another run of the same job is queued or running?
    pub overlap: bool,
}

/// What a job has done so far (for status and metrics).
#[derive(Debug, Clone, Default)]
pub struct JobStats {
    pub runs: u64,
    /// Runs not started because one was still running or queued (the overlap rule).
    pub skipped: u64,
    /// Scheduled times that passed without a run (the loop was late, the policy is skip).
    pub missed: u64,
    /// Ended runs by outcome ("ok", "error", "fatal", "timeout", ...).
    pub outcomes: Vec<(String, u64)>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub last_started: Option<DateTime<Utc>>,
    pub last_duration: Option<f64>,
    pub last_success: Option<DateTime<Utc>>,
    /// Durations of ended runs, per bucket of [`DURATION_BUCKETS`] (+Inf last), and their sum.
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub duration_sum: f64,
}

/// Upper bounds (seconds) of the duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

impl JobStats {
    fn ended(
        &mut self,
        outcome: &str,
        ok: bool,
        duration: Option<f64>,
        error: Option<String>,
        at: DateTime<Utc>,
    ) {
        match self.outcomes.iter_mut().find(|(o, _)| o == outcome) {
            Some((_, n)) => *n += 1,
            None => self.outcomes.push((outcome.to_string(), 1)),
        }
        self.last_outcome = Some(outcome.to_string());
        if ok {
            self.last_success = Some(at);
        } else {
            self.last_error = error;
        }
        // A run that never started has no duration: it stays out of the histogram.
        let Some(duration) = duration else { return };
        self.last_duration = Some(duration);
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| duration <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets[bucket] += 1;
        self.duration_sum += duration;
    }
}

/// One run of a job: asked for, queued, started, ended.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: RunId,
    pub job: JobId,
    pub placement: Placement,
    pub trigger: Trigger,
    /// When it was due (cron/every), or asked for.
    pub scheduled: DateTime<Utc>,
    pub started: Option<(DateTime<Utc>, Instant)>,
    pub pid: Option<i32>,
    /// What the run works on, shown in its title and status (`Daemon::start(label:)`).
    pub label: Option<String>,
    /// It carries arguments that live in this dispatcher only: never handed over at a reload.
    pub pinned: bool,
}

struct Lane {
    name: String,
    queue: VecDeque<RunId>,
    running: Option<RunId>,
}

/// What fires an entry.
enum When {
    Every(Every),
    Cron {
        schedule: Schedule,
        missed: Missed,
        next: Option<DateTime<Utc>>,
    },
}

/// What an entry does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Calls the application's callback number n in the dispatcher itself.
    Inline(usize),
    /// Asks for a run of the job.
    Job(JobId),
    /// Checks the leader lock (or tries to take it): this dispatcher leads or stands by.
    Leadership,
}

/// Where an entry fires when hosts share one schedule through a leader lock (without a lock the
/// dispatcher leads, and every entry fires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// In the leader only: cron lines, timers that queue scheduled work (the default).
    Leader,
    /// In every dispatcher, leader or standby: the lock check, a queue consumer's poll.
    EveryHost,
}

struct Entry {
    when: When,
    target: Target,
    reach: Reach,
    overruns: u64,
}

impl Entry {
    /// Whether it fires now: a standby leaves the leader's entries alone.
    fn live(&self, standby: bool) -> bool {
        !standby || self.reach == Reach::EveryHost
    }
}

/// A timer or cron line that fired.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// Call the inline callback; `missed` ticks passed without a run before this one.
    Inline { callback: usize, missed: u64 },
    /// Check the leader lock, then say [`Plan::lead`] or [`Plan::stand_by`].
    Leadership,
    /// A run was queued (or started parallel) for the job.
    Queued(RunId),
    /// The job's previous run is still queued or running: not started again.
    Skipped { job: JobId, reason: String },
    /// Scheduled times passed without a run (the loop was late; the policy skips them).
    Missed { target: Target, count: u64 },
}

/// How late a cron time may be and still run under [`Missed::Skip`].
pub const CRON_LATE_OK: Duration = Duration::from_secs(60);
/// The longest the loop sleeps while cron lines wait (so that a wall clock set meanwhile is seen).
pub const CRON_RECHECK: Duration = Duration::from_secs(30);

/// The handover at a reload: what the old dispatcher leaves to the new one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Handover {
    /// Cron times up to this one were the old dispatcher's.
    pub until: Option<DateTime<Utc>>,
    /// Jobs whose runs still run in the old dispatcher (not started again until they end).
    pub running: Vec<String>,
    /// Runs queued in the old dispatcher and not started: (job, scheduled).
    pub queued: Vec<(String, DateTime<Utc>)>,
}

#[derive(Default)]
pub struct Plan {
    jobs: Vec<JobDef>,
    stats: Vec<JobStats>,
    lanes: Vec<Lane>,
    entries: Vec<Entry>,
    runs: HashMap<RunId, Run>,
    /// Parallel runs asked for and not started yet.
    parallel: VecDeque<RunId>,
    next_run: u64,
    /// Jobs still running in the previous dispatcher (after a reload), by name count.
    elsewhere: HashMap<JobId, u32>,
    started: bool,
    stopping: bool,
    /// Another host holds the leader lock (or it is not known to be ours): the leader's entries
    /// wait.
    standby: bool,
}

impl Plan {
    pub fn new() -> Plan {
        Plan::default()
    }

    // --- setting up ---------------------------------------------------------------------------

    pub fn add_lane(&mut self, name: &str) -> Result<LaneId> {
        check_name(name, "lane")?;
        if self.lane(name).is_some() {
            return Err(Error::InvalidArgument(format!(
                "lane \"{name}\" is declared twice; declare each lane once"
            )));
        }
        self.lanes.push(Lane {
            name: name.to_string(),
            queue: VecDeque::new(),
            running: None,
        });
        Ok(LaneId(self.lanes.len() - 1))
    }

    pub fn lane(&self, name: &str) -> Option<LaneId> {
        self.lanes.iter().position(|l| l.name == name).map(LaneId)
    }

    /// The lane by name, or an error that lists the lanes there are.
    pub fn lane_or_error(&self, name: &str) -> Result<LaneId> {
        self.lane(name).ok_or_else(|| {
            let names: Vec<&str> = self.lanes.iter().map(|l| l.name.as_str()).collect();
            Error::InvalidArgument(format!(
                "unknown lane \"{name}\"; declare it first with $daemon->lane('{name}') (lanes \
                 now: {})",
                names.join(", ")
            ))
        })
    }

    pub fn lane_name(&self, id: LaneId) -> &str {
        &self.lanes[id.0].name
    }

    pub fn add_job(&mut self, def: JobDef) -> Result<JobId> {
        check_name(&def.name, "job")?;
        if self.job(&def.name).is_some() {
            return Err(Error::InvalidArgument(format!(
                "a job named \"{}\" already exists; give each job (cron, every, job) its own name",
                def.name
            )));
        }
        self.jobs.push(def);
        self.stats.push(JobStats::default());
        Ok(JobId(self.jobs.len() - 1))
    }

    pub fn job(&self, name: &str) -> Option<JobId> {
        self.jobs.iter().position(|j| j.name == name).map(JobId)
    }

    pub fn job_def(&self, id: JobId) -> &JobDef {
        &self.jobs[id.0]
    }

    pub fn jobs(&self) -> impl Iterator<Item = (JobId, &JobDef, &JobStats)> {
        self.jobs
            .iter()
            .zip(&self.stats)
            .enumerate()
            .map(|(i, (d, s))| (JobId(i), d, s))
    }

    pub fn add_every(
        &mut self,
        interval: Duration,
        missed: Missed,
        target: Target,
        reach: Reach,
    ) -> Result<()> {
        if interval.is_zero() {
            return Err(Error::InvalidArgument(
                "an interval must be more than 0 seconds".into(),
            ));
        }
        self.entries.push(Entry {
            // Anchored when the plan starts.
            when: When::Every(Every::new(Instant::now(), interval, missed)),
            target,
            reach,
            overruns: 0,
        });
        Ok(())
    }

    pub fn add_cron(&mut self, schedule: Schedule, missed: Missed, job: JobId, reach: Reach) {
        self.entries.push(Entry {
            when: When::Cron {
                schedule,
                missed,
                next: None,
            },
            target: Target::Job(job),
            reach,
            overruns: 0,
        });
    }

    /// Starts the clocks: interval timers count from `now`; cron lines fire at their times after
    /// `now`, or — taking over from a previous dispatcher — after the last time it handled, so
    /// that no time is lost or run twice across a reload.
    pub fn start(&mut self, now: Clock, handover: Option<&Handover>) {
        let since = handover.and_then(|h| h.until).unwrap_or(now.wall);
        for e in &mut self.entries {
            e.anchor(now, since);
        }
        if let Some(h) = handover {
            for name in &h.running {
                if let Some(job) = self.job(name) {
                    *self.elsewhere.entry(job).or_default() += 1;
                }
            }
            for (name, scheduled) in &h.queued {
                if let Some(job) = self.job(name) {
                    let _ = self.ask(job, None, *scheduled, Trigger::HandedOver);
                }
            }
        }
        self.started = true;
    }

    // --- one leader across hosts -----------------------------------------------------------

    /// Another host holds the leader lock, or this one could not tell: the leader's cron lines
    /// and timers stop firing (their times pass, not counted as missed: they are the leader's);
    /// entries that reach every host, and runs asked for, go on.
    pub fn stand_by(&mut self) {
        self.standby = true;
    }

    /// This dispatcher holds the leader lock from `now` on. Coming from standby, the leader's
    /// entries start again as after a handover at `now`: cron times up to `now` were the other
    /// host's, interval timers count from `now`. Already leading (or never stood by: the
    /// dispatcher took the lock at its start), nothing changes.
    pub fn lead(&mut self, now: Clock) {
        if !self.standby {
            return;
        }
        self.standby = false;
        for e in self.entries.iter_mut().filter(|e| e.reach == Reach::Leader) {
            e.anchor(now, now.wall);
        }
    }

    pub fn is_standby(&self) -> bool {
        self.standby
    }

    // --- the clock ----------------------------------------------------------------------------

    /// When the loop must wake next for a timer or cron line (`None`: nothing scheduled).
    pub fn next_wake(&self, now: Clock) -> Option<Instant> {
        if self.stopping || !self.started {
            return None;
        }
        self.entries
            .iter()
            .filter(|e| e.live(self.standby))
            .filter_map(|e| match &e.when {
                When::Every(every) => Some(every.due()),
                When::Cron { next, .. } => {
                    next.map(|t| now.mono_at(t).min(now.mono + CRON_RECHECK))
                }
            })
            .min()
    }

    /// Fires what is due at `now`: inline callbacks to call, runs queued, runs skipped. A due
    /// check of the leader lock is fired alone, before anything else: after a stall longer than
    /// the lock's lifetime another host may lead now, and the leader's entries must wait for the
    /// answer (call `fire` again once it is given).
    pub fn fire(&mut self, now: Clock) -> Vec<Fired> {
        let mut out = Vec::new();
        if self.stopping || !self.started {
            return out;
        }
        let mut check = false;
        for e in &mut self.entries {
            if let (Target::Leadership, When::Every(every)) = (e.target, &mut e.when) {
                check |= every.fire(now.mono).is_some();
            }
        }
        if check {
            return vec![Fired::Leadership];
        }
        for i in 0..self.entries.len() {
            if !self.entries[i].live(self.standby) {
                continue;
            }
            let target = self.entries[i].target;
            let (runs, missed, scheduled) = match &mut self.entries[i].when {
                When::Every(every) => match every.fire(now.mono) {
                    None => continue,
                    // Scheduled: the wall-clock time at which the tick was due.
                    Some(f) => {
                        let late = now.mono.saturating_duration_since(f.due);
                        let late = chrono::Duration::from_std(late).unwrap_or_default();
                        (f.run as u64, f.missed, now.wall - late)
                    }
                },
                When::Cron {
                    schedule,
                    missed,
                    next,
                } => {
                    let Some(first) = *next else { continue };
                    if first > now.wall {
                        continue;
                    }
                    // Every time that has passed, up to now.
                    let mut last = first;
                    let mut passed = 1u64;
                    while let Some(t) = schedule.next_after(last).filter(|t| *t <= now.wall) {
                        last = t;
                        passed += 1;
                    }
                    *next = schedule.next_after(last.max(now.wall));
                    let late = (now.wall - last).to_std().unwrap_or_default();
                    let run = *missed == Missed::RunOnce || late <= CRON_LATE_OK;
                    (run as u64, passed - run as u64, last)
                }
            };
            if missed > 0 {
                self.entries[i].overruns += missed;
                if let Target::Job(job) = target {
                    self.stats[job.0].missed += missed;
                }
                out.push(Fired::Missed {
                    target,
                    count: missed,
                });
            }
            if runs == 0 {
                continue;
            }
            match target {
                Target::Inline(callback) => out.push(Fired::Inline { callback, missed }),
                Target::Leadership => {} // fired alone, above
                Target::Job(job) => {
                    let trigger = match self.entries[i].when {
                        When::Every(_) => Trigger::Every,
                        When::Cron { .. } => Trigger::Cron,
                    };
                    out.push(match self.ask(job, None, scheduled, trigger) {
                        Ok(run) => Fired::Queued(run),
                        Err(reason) => Fired::Skipped { job, reason },
                    });
                }
            }
        }
        out
    }

    /// Overruns of interval timers and missed cron times, in all.
    pub fn overruns(&self) -> u64 {
        self.entries.iter().map(|e| e.overruns).sum()
    }

    /// The next time a job's cron line fires.
    pub fn next_cron(&self, job: JobId) -> Option<DateTime<Utc>> {
        self.entries
            .iter()
            .filter(|e| e.target == Target::Job(job))
            .filter_map(|e| match &e.when {
                When::Cron { next, .. } => *next,
                When::Every(_) => None,
            })
            .min()
    }

    /// The next time an entry of `target` is due (cron line or interval timer), on the wall clock.
    pub fn next_run(&self, target: Target, now: Clock) -> Option<DateTime<Utc>> {
        if self.stopping || !self.started {
            return None;
        }
        self.entries
            .iter()
            .filter(|e| e.target == target && e.live(self.standby))
            .filter_map(|e| match &e.when {
                When::Cron { next, .. } => *next,
                When::Every(every) => {
                    let ahead = every.due().saturating_duration_since(now.mono);
                    chrono::Duration::from_std(ahead).ok().map(|d| now.wall + d)
                }
            })
            .min()
    }

    // --- runs ---------------------------------------------------------------------------------

    /// Asks for a run of `job` in its own placement or in `placement`; the reason when the
    /// overlap rule (or stopping) refuses it. The run starts when [`Plan::startable`] says so.
    pub fn ask(
        &mut self,
        job: JobId,
        placement: Option<Placement>,
        scheduled: DateTime<Utc>,
        trigger: Trigger,
    ) -> std::result::Result<RunId, String> {
        if self.stopping {
            self.stats[job.0].skipped += 1;
            return Err("the daemon is stopping: no new runs".into());
        }
        if !self.jobs[job.0].overlap {
            if let Some(other) = self.runs.values().find(|r| r.job == job) {
                self.stats[job.0].skipped += 1;
                return Err(match (other.pid, other.started) {
                    (Some(pid), Some((at, _))) => format!(
                        "still running (pid {pid}, started {})",
                        at.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                    _ => "already queued".into(),
                });
            }
            if self.elsewhere.get(&job).is_some_and(|n| *n > 0) {
                self.stats[job.0].skipped += 1;
                return Err("still running in the previous dispatcher (reload)".into());
            }
        }
        let placement = placement.unwrap_or(self.jobs[job.0].placement);
        let id = RunId(self.next_run);
        self.next_run += 1;
        self.runs.insert(
            id,
            Run {
                id,
                job,
                placement,
                trigger,
                scheduled,
                started: None,
                pid: None,
                label: None,
                pinned: false,
            },
        );
        match placement {
            Placement::Lane(l) => self.lanes[l.0].queue.push_back(id),
            Placement::Parallel => self.parallel.push_back(id),
        }
        Ok(id)
    }

    /// Runs to start now, in order: every parallel run asked for, the head of each idle lane.
    /// Each is taken as started; call [`Plan::started`] with its pid once forked.
    pub fn startable(&mut self) -> Vec<RunId> {
        let mut out: Vec<RunId> = self.parallel.drain(..).collect();
        for lane in &mut self.lanes {
            if lane.running.is_none() {
                if let Some(id) = lane.queue.pop_front() {
                    lane.running = Some(id);
                    out.push(id);
                }
            }
        }
        out
    }

    pub fn run(&self, id: RunId) -> Option<&Run> {
        self.runs.get(&id)
    }

    /// Names what a run asked for works on (status, process title); `pinned`: it carries
    /// arguments of this dispatcher, so a reload drops it rather than handing it over.
    pub fn describe(&mut self, id: RunId, label: Option<String>, pinned: bool) {
        if let Some(run) = self.runs.get_mut(&id) {
            run.label = label;
            run.pinned = pinned;
        }
    }

    /// Runs started and not ended.
    pub fn running(&self) -> impl Iterator<Item = &Run> {
        self.runs.values().filter(|r| r.started.is_some())
    }

    pub fn queued(&self, lane: LaneId) -> usize {
        self.lanes[lane.0].queue.len()
    }

    pub fn lanes(&self) -> impl Iterator<Item = (LaneId, &str, Option<RunId>, usize)> {
        self.lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (LaneId(i), l.name.as_str(), l.running, l.queue.len()))
    }

    pub fn started(&mut self, id: RunId, pid: i32, now: Clock) {
        if let Some(run) = self.runs.get_mut(&id) {
            run.pid = Some(pid);
            run.started = Some((now.wall, now.mono));
            let stats = &mut self.stats[run.job.0];
            stats.runs += 1;
            stats.last_started = Some(now.wall);
        }
    }

    /// A run could not start (the fork failed): it ends here, counted as `outcome`.
    pub fn not_started(&mut self, id: RunId, outcome: &str, error: String, now: Clock) {
        self.end(id, outcome, false, None, Some(error), now);
    }

    /// A run has ended: its lane is free, its job's stats updated. Returns the run.
    pub fn ended(
        &mut self,
        id: RunId,
        outcome: &str,
        ok: bool,
        duration: f64,
        error: Option<String>,
        now: Clock,
    ) -> Option<Run> {
        self.end(id, outcome, ok, Some(duration), error, now)
    }

    fn end(
        &mut self,
        id: RunId,
        outcome: &str,
        ok: bool,
        duration: Option<f64>,
        error: Option<String>,
        now: Clock,
    ) -> Option<Run> {
        let run = self.runs.remove(&id)?;
        if let Placement::Lane(l) = run.placement {
            if self.lanes[l.0].running == Some(id) {
                self.lanes[l.0].running = None;
            }
        }
        self.stats[run.job.0].ended(outcome, ok, duration, error, now.wall);
        Some(run)
    }

    /// A job that was still running in the previous dispatcher has ended there.
    pub fn ended_elsewhere(&mut self, name: &str) {
        if let Some(job) = self.job(name) {
            if let Some(n) = self.elsewhere.get_mut(&job) {
                *n = n.saturating_sub(1);
            }
        }
    }

    // --- stopping -----------------------------------------------------------------------------

    /// Stops taking new work: timers and cron lines stop, runs asked for and not started are
    /// dropped and returned (the caller reports them); running runs go on.
    pub fn stop(&mut self) -> Vec<Run> {
        self.stopping = true;
        let mut dropped: Vec<RunId> = self.parallel.drain(..).collect();
        for lane in &mut self.lanes {
            dropped.extend(lane.queue.drain(..));
        }
        dropped
            .into_iter()
            .filter_map(|id| self.runs.remove(&id))
            .collect()
    }

    /// Stops for a reload: as [`Plan::stop`], and says what the next dispatcher takes over.
    /// Queued runs that are pinned (they carry this dispatcher's arguments) are not handed over:
    /// they are returned, dropped, for the caller to report as [`Plan::stop`]'s are.
    pub fn hand_over(&mut self, now: Clock) -> (Handover, Vec<Run>) {
        let (pinned, queued): (Vec<Run>, Vec<Run>) =
            self.stop().into_iter().partition(|r| r.pinned);
        let queued = queued
            .into_iter()
            .map(|r| (self.jobs[r.job.0].name.clone(), r.scheduled))
            .collect();
        let handover = Handover {
            until: Some(now.wall),
            running: self
                .running()
                .map(|r| self.jobs[r.job.0].name.clone())
                .collect(),
            queued,
        };
        (handover, pinned)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Whether nothing runs any more.
    pub fn is_idle(&self) -> bool {
        self.runs.is_empty()
    }
}

impl Entry {
    /// Starts the entry's clock at `now`: an interval timer counts from it, a cron line fires at
    /// its times after `since`.
    fn anchor(&mut self, now: Clock, since: DateTime<Utc>) {
        match &mut self.when {
            When::Every(every) => *every = every.restarted(now.mono),
            When::Cron { schedule, next, .. } => *next = schedule.next_after(since),
        }
    }
}

fn check_name(name: &str, what: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "a {what} name must be 1 to 200 printable characters, \"{}\" given",
            name.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
