// The methods' parameters are PHP's named arguments (`softTimeout:`), so they are camelCase.
#![allow(non_snake_case)]

//! `Forklift\Daemon`: what a daemon runs (jobs, lanes, cron lines, interval timers, signal
//! handlers, job events) and its loop. The decisions are `core::daemon::plan`'s; here the class
//! and its checks, [`dispatch`] (the dispatcher's loop: forking runs, calling the application's
//! callbacks between turns), [`leader`] (the leader lock: one dispatcher across hosts), [`supervise`] (the supervisor: `bin/forklift run`), [`cli`] (what
//! the other CLI commands ask a running daemon) and [`run`] (`Forklift\JobRun`, a run as the job
//! events see it).

mod app;
mod cli;
mod dispatch;
mod leader;
mod log;
mod run;
mod runs;
mod supervise;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ArrayKey, ZendClassObject, ZendHashTable, Zval};

use crate::core::daemon::counters::Counters;
use crate::core::daemon::cron::Schedule;
use crate::core::daemon::every::Missed;
use crate::core::daemon::link::Restart;
use crate::core::daemon::plan::{JobDef, JobId, Placement, Plan, Reach, RunId, Target};
use crate::core::deadline::Deadline;
use crate::core::runtime::ChildId;
use crate::php::exceptions::{from_core, invalid};
use crate::php::limits::Limits;
use crate::php::{args, zend};
pub use run::JobRun;

/// Adds the daemon's classes to the extension.
pub fn register(module: ModuleBuilder) -> ModuleBuilder {
    module.class::<Daemon>().class::<JobRun>()
}

/// A job as the application defined it.
pub(crate) struct JobSpec {
    pub(crate) callable: Zval,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) soft_timeout: Option<f64>,
    /// "*/5 * * * *", "every 1.5 s", or none (run when asked).
    pub(crate) schedule: Option<String>,
}

/// An interval timer whose callback runs in the dispatcher itself.
pub(crate) struct Inline {
    pub(crate) name: String,
    pub(crate) callable: Zval,
    pub(crate) interval: f64,
    pub(crate) runs: u64,
    /// Ticks missed because a run (or the loop) was late.
    pub(crate) overruns: u64,
    /// Runs longer than the interval since the last warning, and when that was (one warning a
    /// minute at most: a receive that blocks a little longer than the interval each time must
    /// not fill the log).
    pub(crate) long_runs: u64,
    /// Ticks missed since the last warning.
    pub(crate) missed_unsaid: u64,
    pub(crate) long_warned: Option<std::time::Instant>,
    pub(crate) last_duration: Option<f64>,
    pub(crate) last_error: Option<String>,
}

impl Inline {
    /// Whether a warning about this timer may be said now: at most one a minute (a receive that
    /// blocks a little past the interval each time must not fill the log).
    pub(crate) fn warning_due(&mut self) -> bool {
        let due = self
            .long_warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            self.long_warned = Some(std::time::Instant::now());
        }
        due
    }
}

/// Whether `text` may stand in a process title: at most 200 bytes, no control characters.
fn fits_a_title(text: &str) -> bool {
    text.len() <= 200 && !text.chars().any(char::is_control)
}

/// What `queue()`/`start()` give a run besides its job: arguments and a label.
pub(crate) struct Asked {
    pub(crate) args: Vec<Zval>,
    pub(crate) label: Option<String>,
}

impl Asked {
    fn new(args: Option<&ZendHashTable>, label: Option<String>, what: &str) -> PhpResult<Asked> {
        if let Some(l) = &label {
            if l.is_empty() || !fits_a_title(l) {
                return Err(invalid(format!(
                    "{what}: $label is shown in process titles: 1 to 200 printable characters, \"{}\" given",
                    l.escape_debug()
                )));
            }
        }
        let args = args
            .map(|a| a.values().map(Zval::shallow_clone).collect())
            .unwrap_or_default();
        Ok(Asked { args, label })
    }
}

pub(crate) struct State {
    pub(crate) name: String,
    pub(crate) pid_file: PathBuf,
    pub(crate) stop_timeout: f64,
    pub(crate) restart: Restart,
    pub(crate) logger: Option<Zval>,
    pub(crate) plan: Plan,
    /// By `JobId`.
    pub(crate) jobs: Vec<JobSpec>,
    /// By `Target::Inline` number.
    pub(crate) inline: Vec<Inline>,
    /// onStart, onJobStart, onJobEnd listeners.
    pub(crate) on_started: Vec<Zval>,
    pub(crate) on_job_start: Vec<Zval>,
    pub(crate) on_job_end: Vec<Zval>,
    pub(crate) handlers: Vec<(i32, Zval)>,
    pub(crate) pools: Vec<Zval>,
    /// Runs forked and not ended: their child in the runtime.
    pub(crate) children: HashMap<RunId, ChildId>,
    /// The process whose loop this is, while `run()` runs.
    pub(crate) running_in: Option<i32>,
    /// `stop()` was called (from a callback) or TERM came.
    pub(crate) stop_asked: bool,
    /// Runs not started by the overlap rule since the job's last end, by job name.
    pub(crate) skips: HashMap<String, u64>,
    /// Arguments of runs asked for with some (`start($job, $args)`), until their child forks.
    pub(crate) args: HashMap<RunId, Vec<Zval>>,
    /// The application's counters and histograms (`count()`, `observe()`).
    pub(crate) counters: Counters,
    /// The leader lock (`leader()`): the schedule runs in one dispatcher across hosts.
    pub(crate) leader: Option<leader::Leader>,
}

#[php_class]
#[php(name = "Forklift\\Daemon")]
#[php(flags = ClassFlags::Final)]
pub struct Daemon {
    pub(crate) inner: Rc<RefCell<State>>,
}

const W: &str = "Forklift\\Daemon";

/// The lane a job goes to when none is named.
pub const DEFAULT_LANE: &str = "default";

/// Where an entry fires under a leader lock: `everyHost: true` in every dispatcher, else in the
/// leader only.
fn reach(every_host: bool) -> Reach {
    if every_host {
        Reach::EveryHost
    } else {
        Reach::Leader
    }
}

fn missed_policy(v: &str, what: &str) -> PhpResult<Missed> {
    match v {
        "skip" => Ok(Missed::Skip),
        "run-once" | "run_once" | "once" => Ok(Missed::RunOnce),
        other => Err(invalid(format!(
            "{what}: $missed must be \"skip\" (the default: times that passed while the loop was \
             late are dropped) or \"run-once\" (one run makes up for them), \"{other}\" given"
        ))),
    }
}

impl Daemon {
    fn state(&self) -> std::cell::RefMut<'_, State> {
        self.inner.borrow_mut()
    }

    /// Adds a listener of an event (`$fn` checked, named `what` in the message).
    fn listen<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        f: &Zval,
        what: &str,
        list: fn(&mut State) -> &mut Vec<Zval>,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        args::callable(f, &format!("Forklift\\Daemon::{what}(): $fn"))?;
        list(&mut self_.state()).push(f.shallow_clone());
        Ok(self_)
    }

    /// Checks that the daemon's definition can still change (not while its loop runs).
    fn defining(&self, what: &str) -> PhpResult<()> {
        let s = self.inner.borrow();
        if s.running_in.is_some() {
            return Err(invalid(format!(
                "{W}::{what}() while the daemon runs: define jobs, lanes, timers and handlers \
                 before run()"
            )));
        }
        Ok(())
    }

    /// Where a job goes: `parallel: true`, or a declared lane.
    fn placement(&self, lane: Option<String>, parallel: bool, what: &str) -> PhpResult<Placement> {
        if parallel {
            if lane.is_some() {
                return Err(invalid(format!(
                    "{what}: pass either lane: (one run at a time in that lane) or parallel: true \
                     (each run in its own child at once), not both"
                )));
            }
            return Ok(Placement::Parallel);
        }
        let s = self.inner.borrow();
        let lane = lane.unwrap_or_else(|| DEFAULT_LANE.to_string());
        s.plan
            .lane_or_error(&lane)
            .map(Placement::Lane)
            .map_err(|e| invalid(format!("{what}: {e}")))
    }

    #[allow(clippy::too_many_arguments)]
    fn define_job(
        &self,
        name: String,
        callable: &Zval,
        placement: Placement,
        overlap: bool,
        timeout: Option<f64>,
        grace: Option<f64>,
        soft: Option<f64>,
        schedule: Option<String>,
        what: &str,
    ) -> PhpResult<JobId> {
        args::callable(callable, &format!("{what}: $fn"))?;
        let limits = Limits::new(timeout, grace, soft, what)?;
        let mut s = self.state();
        let id = s
            .plan
            .add_job(JobDef {
                name,
                placement,
                overlap,
            })
            .map_err(|e| invalid(format!("{what}: {e}")))?;
        s.jobs.push(JobSpec {
            callable: callable.shallow_clone(),
            deadline: limits.deadline,
            soft_timeout: limits.soft_timeout,
            schedule,
        });
        Ok(id)
    }
}

#[php_impl]
#[allow(clippy::too_many_arguments)]
impl Daemon {
    /// A daemon named `$name` (process titles, logs, metrics; and its pid file's default name).
    #[php(defaults(
        stopTimeout = 30.0,
        restartBurst = 5,
        restartWindow = 60.0,
        restartDelay = 0.5,
        restartDelayMax = 30.0
    ))]
    pub fn __construct(
        name: String,
        pidFile: Option<String>,
        stopTimeout: f64,
        logger: Option<&Zval>,
        restartBurst: i64,
        restartWindow: f64,
        restartDelay: f64,
        restartDelayMax: f64,
    ) -> PhpResult<Self> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name.starts_with('.')
        {
            return Err(invalid(format!(
                "{W}: $name \"{}\" must be 1 to 64 letters, digits, '-', '_' or '.' (not first): it \
                 names the pid file, the process titles and the metrics",
                name.escape_debug()
            )));
        }
        let pid_file = match pidFile {
            Some(p) if p.is_empty() => {
                return Err(invalid(format!(
                    "{W}: $pidFile is empty; pass a path such as /run/forklift/{name}.pid, or \
                     leave it out for the default"
                )))
            }
            Some(p) if p.contains('\0') => {
                return Err(invalid(format!(
                    "{W}: $pidFile contains a NUL byte; pass a plain path"
                )))
            }
            Some(p) if !p.starts_with('/') => {
                return Err(invalid(format!(
                    "{W}: $pidFile \"{p}\" is relative; pass an absolute path (the daemon's \
                     working directory is / under --daemonize), e.g. __DIR__ . '/{p}'"
                )))
            }
            Some(p) => PathBuf::from(p),
            None => cli::default_pid_file(&name)?,
        };
        let stop_timeout = args::seconds(stopTimeout, &format!("{W}: $stopTimeout"))?;
        let logger = match logger {
            Some(l) if !l.is_null() => {
                let ok = l.object().is_some() && zend::has_method(l, "log");
                if !ok {
                    return Err(invalid(format!(
                        "{W}: $logger must be a PSR-3 logger (an object with log($level, $message, \
                         $context), e.g. Monolog\\Logger), {} given",
                        args::describe(l)
                    )));
                }
                Some(l.shallow_clone())
            }
            _ => None,
        };
        if !(1..=1000).contains(&restartBurst) {
            return Err(invalid(format!(
                "{W}: $restartBurst must be 1 to 1000 (got {restartBurst}): how many dispatcher \
                 deaths within restartWindow make the supervisor give up; e.g. 5"
            )));
        }
        let restart = Restart {
            burst: restartBurst as u32,
            window: restartWindow,
            delay: restartDelay,
            delay_max: restartDelayMax,
        };
        for (v, n) in [
            (restartWindow, "restartWindow"),
            (restartDelay, "restartDelay"),
            (restartDelayMax, "restartDelayMax"),
        ] {
            args::seconds(v, &format!("{W}: ${n}"))?;
        }
        restart.policy().validate().map_err(from_core)?;
        let mut plan = Plan::new();
        plan.add_lane(DEFAULT_LANE).map_err(from_core)?;
        Ok(Daemon {
            inner: Rc::new(RefCell::new(State {
                name,
                pid_file,
                stop_timeout,
                restart,
                logger,
                plan,
                jobs: Vec::new(),
                inline: Vec::new(),
                on_started: Vec::new(),
                on_job_start: Vec::new(),
                on_job_end: Vec::new(),
                handlers: Vec::new(),
                pools: Vec::new(),
                children: HashMap::new(),
                running_in: None,
                stop_asked: false,
                skips: HashMap::new(),
                args: HashMap::new(),
                counters: Counters::default(),
                leader: None,
            })),
        })
    }

    /// The daemon's name.
    pub fn name(&self) -> String {
        self.inner.borrow().name.clone()
    }

    /// The pid file (given, or the default for the name).
    pub fn pid_file(&self) -> String {
        self.inner.borrow().pid_file.display().to_string()
    }

    /// Declares a serial lane: its jobs run one at a time, first in first out. "default" exists.
    pub fn lane<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        name: String,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        self_.defining("lane")?;
        self_
            .state()
            .plan
            .add_lane(&name)
            .map_err(|e| invalid(format!("{W}::lane(): {e}")))?;
        Ok(self_)
    }

    /// A named job, run when asked (`queue()`, `start()`), in a lane or in parallel. `$schedule`
    /// is only shown (process titles, status): the schedule an adapter runs it on.
    #[php(defaults(parallel = false, overlap = false))]
    pub fn job<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        name: String,
        r#fn: &Zval,
        lane: Option<String>,
        parallel: bool,
        timeout: Option<f64>,
        grace: Option<f64>,
        softTimeout: Option<f64>,
        overlap: bool,
        schedule: Option<String>,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        const M: &str = "Forklift\\Daemon::job()";
        self_.defining("job")?;
        if let Some(s) = &schedule {
            if !fits_a_title(s) {
                return Err(invalid(format!(
                    "{M}: $schedule is shown in process titles: at most 200 printable characters"
                )));
            }
        }
        let placement = self_.placement(lane, parallel, M)?;
        self_.define_job(
            name,
            r#fn,
            placement,
            overlap,
            timeout,
            grace,
            softTimeout,
            schedule,
            M,
        )?;
        Ok(self_)
    }

    /// A job run on a crontab schedule (five fields, or @hourly and friends).
    #[php(defaults(
        parallel = false,
        missed = "\"skip\"",
        overlap = false,
        everyHost = false
    ))]
    pub fn cron<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        expr: String,
        name: String,
        r#fn: &Zval,
        lane: Option<String>,
        parallel: bool,
        timezone: Option<String>,
        missed: String,
        timeout: Option<f64>,
        grace: Option<f64>,
        softTimeout: Option<f64>,
        overlap: bool,
        everyHost: bool,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        const M: &str = "Forklift\\Daemon::cron()";
        self_.defining("cron")?;
        let schedule = Schedule::parse(&expr, timezone.as_deref())
            .map_err(|e| invalid(format!("{M}: {e}")))?;
        let policy = missed_policy(&missed, M)?;
        let placement = self_.placement(lane, parallel, M)?;
        let text = schedule.expr().to_string();
        let job = self_.define_job(
            name,
            r#fn,
            placement,
            overlap,
            timeout,
            grace,
            softTimeout,
            Some(text),
            M,
        )?;
        self_
            .state()
            .plan
            .add_cron(schedule, policy, job, reach(everyHost));
        Ok(self_)
    }

    /// An interval timer, drift-free: tick n is due at start + n × $seconds. Its callback runs
    /// in the dispatcher; with `fork: true` each tick is a run of a job (in `lane:`, or parallel).
    #[php(defaults(missed = "\"skip\"", fork = false, everyHost = false))]
    pub fn every<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        seconds: f64,
        r#fn: &Zval,
        name: Option<String>,
        missed: String,
        fork: bool,
        lane: Option<String>,
        timeout: Option<f64>,
        grace: Option<f64>,
        softTimeout: Option<f64>,
        everyHost: bool,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        const M: &str = "Forklift\\Daemon::every()";
        self_.defining("every")?;
        if !(seconds.is_finite() && (0.001..=1e9).contains(&seconds)) {
            return Err(invalid(format!(
                "{M}: $seconds must be a number of seconds from 0.001 to 1e9 (e.g. 1.5), {seconds} \
                 given"
            )));
        }
        args::callable(r#fn, &format!("{M}: $fn"))?;
        let policy = missed_policy(&missed, M)?;
        let interval = Duration::from_secs_f64(seconds);
        let n = self_.inner.borrow().inline.len() + self_.inner.borrow().jobs.len();
        let name = name.unwrap_or_else(|| format!("every {seconds} s #{}", n + 1));
        let schedule = format!("every {seconds} s");
        if !fork {
            if lane.is_some() || timeout.is_some() || grace.is_some() || softTimeout.is_some() {
                return Err(invalid(format!(
                    "{M}: lane:, timeout:, grace: and softTimeout: apply to forked runs; add \
                     fork: true (the callback then runs in a supervised child) or drop them"
                )));
            }
            let mut s = self_.state();
            if s.plan.job(&name).is_some() || s.inline.iter().any(|i| i.name == name) {
                return Err(invalid(format!(
                    "{M}: a job named \"{name}\" already exists; give each job (cron, every, job) \
                     its own name"
                )));
            }
            let index = s.inline.len();
            s.inline.push(Inline {
                name,
                callable: r#fn.shallow_clone(),
                interval: seconds,
                runs: 0,
                overruns: 0,
                long_runs: 0,
                missed_unsaid: 0,
                long_warned: None,
                last_duration: None,
                last_error: None,
            });
            s.plan
                .add_every(interval, policy, Target::Inline(index), reach(everyHost))
                .map_err(from_core)?;
            drop(s);
            return Ok(self_);
        }
        let placement = match lane {
            Some(l) => self_.placement(Some(l), false, M)?,
            None => Placement::Parallel,
        };
        if self_.inner.borrow().inline.iter().any(|i| i.name == name) {
            return Err(invalid(format!(
                "{M}: a job named \"{name}\" already exists; give each job its own name"
            )));
        }
        let job = self_.define_job(
            name,
            r#fn,
            placement,
            false,
            timeout,
            grace,
            softTimeout,
            Some(schedule),
            M,
        )?;
        self_
            .state()
            .plan
            .add_every(interval, policy, Target::Job(job), reach(everyHost))
            .map_err(from_core)?;
        Ok(self_)
    }

    /// One dispatcher across hosts: the schedule (cron lines, `every` timers) runs only while
    /// `$lock` (a `Forklift\Cluster\Lock`: `acquire()`, `held()`, `release()`, `holder()`) is
    /// held by this dispatcher; the others stand by, and take over when it is released or its
    /// holder dies. Runs asked for with `queue()`/`start()`, and timers with `everyHost: true`,
    /// run on every host. The lock is asked at the start and every `$every` seconds.
    #[php(defaults(every = 1.0))]
    pub fn leader<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        lock: &Zval,
        every: f64,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        const M: &str = "Forklift\\Daemon::leader()";
        self_.defining("leader")?;
        let methods = ["acquire", "held", "release", "holder"];
        if lock.object().is_none() || !methods.iter().all(|m| zend::has_method(lock, m)) {
            return Err(invalid(format!(
                "{M}: $lock must be a Forklift\\Cluster\\Lock (an object with acquire(), held(), \
                 release() and holder(), such as Forklift\\Cluster\\MariaDbLock or RedisLock), {} \
                 given",
                args::describe(lock)
            )));
        }
        if !(every.is_finite() && (0.01..=3600.0).contains(&every)) {
            return Err(invalid(format!(
                "{M}: $every must be a number of seconds from 0.01 to 3600 (how often the lock is \
                 checked: a standby takes over within about that), {every} given"
            )));
        }
        let mut s = self_.state();
        if s.leader.is_some() {
            return Err(invalid(format!(
                "{M}: the daemon has a leader lock already; call leader() once"
            )));
        }
        s.plan
            .add_every(
                Duration::from_secs_f64(every),
                Missed::RunOnce,
                Target::Leadership,
                Reach::EveryHost,
            )
            .map_err(from_core)?;
        s.leader = Some(leader::Leader::new(lock.shallow_clone()));
        drop(s);
        Ok(self_)
    }

    /// Calls `$fn()` once in the dispatcher when it has started (pid file and status socket
    /// taken, signals owned), before its first turn; in each new dispatcher after a reload too.
    pub fn on_start<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        r#fn: &Zval,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        Daemon::listen(self_, r#fn, "onStart", |s| &mut s.on_started)
    }

    /// Calls `$fn(Forklift\JobRun $run)` in the dispatcher each time a run starts.
    pub fn on_job_start<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        r#fn: &Zval,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        Daemon::listen(self_, r#fn, "onJobStart", |s| &mut s.on_job_start)
    }

    /// Calls `$fn(Forklift\JobRun $run)` in the dispatcher each time a run ends; `$run->result()`
    /// is its JobResult.
    pub fn on_job_end<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        r#fn: &Zval,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        Daemon::listen(self_, r#fn, "onJobEnd", |s| &mut s.on_job_end)
    }

    /// Calls `$fn(int $signo)` from the loop when the daemon gets `$signal` (read from a
    /// signalfd: none is lost, no PHP runs in a signal handler). TERM and INT still stop the
    /// daemon after the handler; HUP and USR1 keep their meaning too.
    pub fn on<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        signal: i64,
        r#fn: &Zval,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        const M: &str = "Forklift\\Daemon::on()";
        self_.defining("on")?;
        let signo = args::signal(signal, M)?;
        let reserved = [
            (libc::SIGKILL, "SIGKILL cannot be caught"),
            (libc::SIGSTOP, "SIGSTOP cannot be caught"),
            (
                libc::SIGCHLD,
                "Forklift watches its children by pidfd; SIGCHLD is not delivered to handlers",
            ),
            (libc::SIGSEGV, "a handler cannot recover from it"),
            (libc::SIGBUS, "a handler cannot recover from it"),
            (libc::SIGFPE, "a handler cannot recover from it"),
            (libc::SIGILL, "a handler cannot recover from it"),
        ];
        if let Some((_, why)) = reserved.iter().find(|(s, _)| *s == signo) {
            return Err(invalid(format!("{M}: signal {signo}: {why}")));
        }
        if signo >= 64
            || signo == crate::core::sys::death_signal()
            || signo == crate::php::timeout::timer_signal()
        {
            return Err(invalid(format!(
                "{M}: signal {signo} is Forklift's own (job deadlines and parent death) or out of \
                 range; use one of SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGQUIT, SIGWINCH, ..."
            )));
        }
        args::callable(r#fn, &format!("{M}: $fn"))?;
        self_.state().handlers.push((signo, r#fn.shallow_clone()));
        Ok(self_)
    }

    /// A pool owned by the daemon: its workers are stopped (queued tasks drained) when the daemon
    /// stops, its state is shown in status and metrics.
    pub fn pool<'a>(
        self_: &'a mut ZendClassObject<Daemon>,
        pool: &Zval,
    ) -> PhpResult<&'a mut ZendClassObject<Daemon>> {
        let ok = pool
            .object()
            .is_some_and(|o| o.get_class_name().ok().as_deref() == Some("Forklift\\Pool"));
        if !ok {
            return Err(invalid(format!(
                "Forklift\\Daemon::pool(): $pool must be a Forklift\\Pool, {} given",
                args::describe(pool)
            )));
        }
        self_.state().pools.push(pool.shallow_clone());
        Ok(self_)
    }

    /// Queues a run of job `$job` in its lane (or `$lane`); returns the run's id, or null when the
    /// job's previous run is still queued or running (the overlap rule; logged and counted).
    /// `$args` are passed to the job's function in its child; `$label` (such as a message's
    /// class) is shown in the run's process title and in status.
    pub fn queue(
        &self,
        job: String,
        lane: Option<String>,
        args: Option<&ZendHashTable>,
        label: Option<String>,
    ) -> PhpResult<Option<i64>> {
        const M: &str = "Forklift\\Daemon::queue()";
        let placement = match lane {
            Some(l) => Some(self.placement(Some(l), false, M)?),
            None => None,
        };
        let asked = Asked::new(args, label, M)?;
        runs::ask(self, &job, placement, M, asked)
    }

    /// Starts a run of job `$job` in a child of its own at once (whatever its lane); returns the
    /// run's id, or null when its previous run is still queued or running. `$args` and `$label`
    /// as for `queue()`.
    pub fn start(
        &self,
        job: String,
        args: Option<&ZendHashTable>,
        label: Option<String>,
    ) -> PhpResult<Option<i64>> {
        const M: &str = "Forklift\\Daemon::start()";
        let asked = Asked::new(args, label, M)?;
        runs::ask(self, &job, Some(Placement::Parallel), M, asked)
    }

    /// Adds `$by` to the application's counter `$name` with `$labels` (status, and metrics as
    /// `forklift_NAME_total`): such as messages by class and outcome.
    #[php(defaults(by = 1))]
    pub fn count(&self, name: String, labels: Option<&ZendHashTable>, by: i64) -> PhpResult<()> {
        const M: &str = "Forklift\\Daemon::count()";
        if by < 0 {
            return Err(invalid(format!(
                "{M}: $by must be ≥ 0 (a counter only grows), {by} given"
            )));
        }
        let labels = label_pairs(labels, M)?;
        self.state()
            .counters
            .count(&name, labels, by as u64)
            .map_err(|e| invalid(format!("{M}: {e}")))
    }

    /// Records a duration of `$seconds` in the application's histogram `$name` with `$labels`
    /// (status, and metrics as `forklift_NAME_seconds`): such as message handling times.
    pub fn observe(
        &self,
        name: String,
        seconds: f64,
        labels: Option<&ZendHashTable>,
    ) -> PhpResult<()> {
        const M: &str = "Forklift\\Daemon::observe()";
        let labels = label_pairs(labels, M)?;
        self.state()
            .counters
            .observe(&name, labels, seconds)
            .map_err(|e| invalid(format!("{M}: {e}")))
    }

    /// Runs the daemon in this process until it is stopped (TERM, INT, `stop()`); returns the
    /// exit code (0 after a clean stop). Under `bin/forklift run` this process is the dispatcher
    /// and the supervisor holds the pid file; alone, it takes the pid file itself.
    pub fn run(&self) -> PhpResult<i64> {
        dispatch::run(self)
    }

    /// Stops the daemon as TERM does: no new runs; running ones finish (up to the stop timeout).
    pub fn stop(&self) {
        self.state().stop_asked = true;
    }

    /// Whether the daemon is stopping (TERM, INT, `stop()`, or handed over at a reload): new
    /// runs are refused from now on.
    pub fn is_stopping(&self) -> bool {
        let s = self.inner.borrow();
        s.stop_asked || s.plan.is_stopping()
    }

    /// The status table (what `bin/forklift status --json` prints).
    pub fn status(&self) -> PhpResult<Zval> {
        let json = dispatch::status_json(self);
        zend::json_decode(&json)
    }

    // --- for bin/forklift ---------------------------------------------------------------------

    /// The supervisor (`bin/forklift run`): forks dispatchers that call `$dispatcher()` (which
    /// includes the application and runs its daemon), restarts them, reloads on HUP, holds the
    /// pid file. Returns the exit code. With `$daemonize` (a log file), it detaches first and the
    /// calling process returns once the daemon has started (0) or failed to (1).
    pub fn supervise(dispatcher: &Zval, daemonize: Option<String>) -> PhpResult<i64> {
        supervise::run(dispatcher, daemonize.as_deref())
    }

    /// Asks the daemon whose pid file is `$pidFile` for "status" (JSON) or "metrics" (text).
    #[php(defaults(timeout = 5.0))]
    pub fn query(pidFile: String, what: String, timeout: f64) -> PhpResult<String> {
        cli::query(&pidFile, &what, timeout)
    }

    /// Sends `$signal` to the daemon's supervisor (the pid file's holder); with `$wait`, returns
    /// only when every process of the daemon has exited, or false after `$timeout` seconds.
    #[php(defaults(wait = true, timeout = 60.0))]
    pub fn signal_running(
        pidFile: String,
        signal: i64,
        wait: bool,
        timeout: f64,
    ) -> PhpResult<bool> {
        cli::signal_running(&pidFile, signal, wait, timeout)
    }

    /// Serves `GET /metrics` over HTTP on a loopback `$listen` address ("127.0.0.1:9464") until
    /// the process is signalled; for `bin/forklift metrics --listen` (a process that never forks).
    pub fn serve_metrics(pidFile: String, listen: String) -> PhpResult<()> {
        cli::serve_metrics(&pidFile, &listen)
    }

    /// The run directories of this user that exist: the one a daemon started here would use
    /// first, then those its daemons started elsewhere (systemd, a login session) use.
    pub fn run_directories() -> Vec<String> {
        cli::existing_run_dirs()
    }

    /// The pid file a daemon named `$name` uses when none is given.
    pub fn default_pid_file(name: String) -> PhpResult<String> {
        Ok(cli::default_pid_file(&name)?.display().to_string())
    }
}

/// `['class' => 'App\\Msg', 'outcome' => 'handled']` as label pairs: string keys, string (or
/// int) values.
fn label_pairs(labels: Option<&ZendHashTable>, what: &str) -> PhpResult<Vec<(String, String)>> {
    let Some(labels) = labels else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (k, v) in labels.iter() {
        let ArrayKey::String(k) = k else {
            return Err(invalid(format!(
                "{what}: $labels must map label names to values, such as ['class' => $class]; \
                 an integer key was given"
            )));
        };
        let v = if let Some(s) = v.str() {
            s.to_string()
        } else if let Some(i) = v.long() {
            i.to_string()
        } else {
            return Err(invalid(format!(
                "{what}: label {k} must be a string or an int, {} given",
                args::describe(v)
            )));
        };
        out.push((k.to_string(), v));
    }
    Ok(out)
}
