//! `Forklift\Pool` and `Forklift\Task`: prefork workers that inherit the bootstrapped parent and
//! run `$handler($payload)` per task. Supervision is `core::pool`; this file forks the workers,
//! runs their loop, and turns finished tasks into `JobResult`s and `onResult` calls.

// The constructor's parameters are PHP's named arguments (`softTimeout:`, like fork()'s), so they
// are spelled in camelCase.
#![allow(non_snake_case)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use ext_php_rs::convert::{FromZvalMut, IntoZval};
use ext_php_rs::exception::PhpException;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ArrayKey, ZendCallable, ZendHashTable, Zval};
use ext_php_rs::zend::try_catch;

use crate::core::ipc::Message;
use crate::core::pool::{self as core_pool, Config, Refused};
use crate::core::process::{fork_job, Deadline, Forked, Reader, Receiver};
use crate::core::sys;
use crate::php::child::{self, Ending};
use crate::php::exceptions::{forklift_ce, from_core, invalid, pool_ce, pool_full_ce};
use crate::php::fork::max_frame;
use crate::php::result::JobResult;
use crate::php::{args, blackbox, hooks, values, zend};

/// Adds the pool's classes to the extension.
pub fn register(module: ModuleBuilder) -> ModuleBuilder {
    module.class::<Pool>().class::<Task>()
}

/// What a worker needs to know, fixed when the pool is made.
struct Setup {
    handler: Zval,
    on_start: Option<Zval>,
    soft_timeout: Option<f64>,
    memory_limit: Option<String>,
    name: String,
    max_frame: usize,
}

/// Where a task's result lands; shared by the pool and the task's handle.
type Slot = RefCell<Option<JobResult>>;

struct Inner {
    /// The process that made the pool; its workers are that process's children only.
    owner: i32,
    core: core_pool::Pool,
    setup: Setup,
    block_when_full: bool,
    on_result: Vec<Zval>,
    /// Results of tasks whose `Task` handle still exists.
    slots: HashMap<u64, Weak<Slot>>,
    closed: bool,
    /// Finished tasks whose `onResult` callbacks have not run yet (a callback that throws stops
    /// the round; the rest get theirs at the pool's next call).
    undelivered: std::collections::VecDeque<(u64, JobResult)>,
    /// Tasks handed back by `shutdown()`/`kill()` before they ran.
    handed_back: std::collections::HashSet<u64>,
}

impl Inner {
    /// Errors unless called in the process that made the pool (not in a child that inherited it).
    fn check_owner(&self) -> PhpResult<()> {
        let current = sys::current_pid();
        if current == self.owner {
            return Ok(());
        }
        Err(PhpException::new(
            format!(
                "this Forklift\\Pool belongs to process {}, not to this process ({current}): a \
                 forked job or worker cannot use its parent's pool; make a pool in the child",
                self.owner
            ),
            0,
            forklift_ce(),
        ))
    }

    /// One supervision turn; finished tasks' results go to their slots and to `undelivered`.
    fn turn(&mut self, deadline: Option<Instant>) -> PhpResult<()> {
        self.check_owner()?;
        let setup = &self.setup;
        let mut spawn = |number: usize| -> crate::core::error::Result<crate::core::process::Job> {
            // The application's fork hooks run around a worker's fork as around any other.
            if hooks::run_prepare().is_err() {
                return Err(crate::core::error::Error::Hook(
                    "a Forklift\\on_fork() prepare hook threw",
                ));
            }
            match fork_job(setup.max_frame, None, Reader::Owner)? {
                Forked::Parent(job) => {
                    if hooks::run_parent().is_err() {
                        return Err(crate::core::error::Error::Hook(
                            "a Forklift\\on_fork() parent hook threw",
                        ));
                    }
                    Ok(job)
                }
                Forked::Child(end) => worker_main(end, setup, number),
            }
        };
        self.core.turn(&mut spawn, deadline).map_err(from_core)?;
        if self.closed {
            self.core.stop_idle();
        }
        for f in self.core.take_finished() {
            let result = JobResult::from_report(f.report).with_attempts(f.attempts);
            if let Some(slot) = self.slots.remove(&f.id).and_then(|w| w.upgrade()) {
                *slot.borrow_mut() = Some(result.share());
            }
            if !self.on_result.is_empty() {
                self.undelivered.push_back((f.id, result));
            }
        }
        Ok(())
    }
}

/// Errors unless this process made the pool. A worker holds a copy of its pool that was being
/// supervised (borrowed) when it was forked: that counts as not this process's pool either.
fn check_owner(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
    match inner.try_borrow() {
        Ok(i) => i.check_owner(),
        Err(_) => Err(PhpException::new(
            "this Forklift\\Pool belongs to the process that made it: a worker cannot use its own \
             pool; make a pool in the worker if it needs one"
                .into(),
            0,
            forklift_ce(),
        )),
    }
}

/// Runs one turn and then the `onResult` callbacks, with no borrow of the pool held while they
/// run (they may submit more tasks).
fn turn(inner: &Rc<RefCell<Inner>>, deadline: Option<Instant>) -> PhpResult<()> {
    check_owner(inner)?;
    inner.borrow_mut().turn(deadline)?;
    deliver(inner)
}

/// Runs the `onResult` callbacks of the finished tasks, oldest first. Each result is taken off the
/// list before its callbacks run, so none gets them twice and a throw leaves the rest for later.
fn deliver(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
    loop {
        let (id, result, callbacks) = {
            let mut i = inner.borrow_mut();
            let Some((id, result)) = i.undelivered.pop_front() else {
                return Ok(());
            };
            let callbacks: Vec<Zval> = i.on_result.iter().map(Zval::shallow_clone).collect();
            (id, result, callbacks)
        };
        for cb in &callbacks {
            let callable = ZendCallable::new(cb).map_err(|e| PhpException::from(e.to_string()))?;
            let id = id as i64;
            let r = result
                .share()
                .into_zval(false)
                .map_err(|e| PhpException::from(e.to_string()))?;
            if callable.try_call(vec![&r, &id]).is_err() {
                // The callback's exception is pending and reaches the caller.
                return Err(PhpException::from("an onResult callback threw"));
            }
        }
    }
}

/// A pool of prefork workers.
#[php_class]
#[php(name = "Forklift\\Pool")]
#[php(flags = ClassFlags::Final)]
pub struct Pool {
    inner: Rc<RefCell<Inner>>,
}

/// A size in bytes: an int, or a string like "256M" / "1G" / "512K".
fn bytes(v: &Zval, what: &str) -> PhpResult<u64> {
    let parsed = match v.long() {
        Some(n) => u64::try_from(n).ok(),
        None => v.string().and_then(|s| {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = num.parse().ok()?;
            let mul = match unit.to_ascii_uppercase().as_str() {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(mul)
        }),
    };
    match parsed {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(format!(
            "{what} must be a size in bytes, more than 0: an int or a string like \"256M\", {} given",
            args::describe(v)
        ))),
    }
}

fn count(v: Option<i64>, what: &str, min: i64) -> PhpResult<Option<u64>> {
    match v {
        None => Ok(None),
        Some(n) if n >= min => Ok(Some(n as u64)),
        Some(n) => Err(invalid(format!("{what} must be {min} or more, {n} given"))),
    }
}

fn secs(v: Option<f64>, what: &str) -> PhpResult<Option<f64>> {
    v.map(|t| args::positive_seconds(t, what)).transpose()
}

#[php_impl]
#[allow(clippy::too_many_arguments)]
impl Pool {
    /// Forks `$workers` workers that call `$handler($payload)` for each submitted task.
    #[php(defaults(
        workers = 4,
        retries = 0,
        queueSize = 1000,
        blockWhenFull = true,
        name = "\"pool\"",
        prefetch = 1
    ))]
    pub fn __construct(
        handler: &Zval,
        workers: i64,
        timeout: Option<f64>,
        grace: Option<f64>,
        softTimeout: Option<f64>,
        maxJobs: Option<i64>,
        maxMemory: Option<&Zval>,
        ttl: Option<f64>,
        idleTtl: Option<f64>,
        memoryLimit: Option<&Zval>,
        retries: i64,
        queueSize: i64,
        blockWhenFull: bool,
        onWorkerStart: Option<&Zval>,
        name: String,
        prefetch: i64,
    ) -> PhpResult<Self> {
        const W: &str = "Forklift\\Pool";
        args::callable(handler, &format!("{W}: argument #1 ($handler)"))?;
        let workers = count(Some(workers), &format!("{W}: $workers"), 1)?.unwrap_or(1) as usize;
        let timeout = secs(timeout, &format!("{W}: $timeout"))?;
        let grace = grace
            .map(|g| args::seconds(g, &format!("{W}: $grace")))
            .transpose()?;
        if grace.is_some() && timeout.is_none() {
            return Err(invalid(format!(
                "{W}: grace: only applies with a timeout: (the time between SIGTERM at the timeout \
                 and SIGKILL); add timeout: or drop grace:"
            )));
        }
        let soft = secs(softTimeout, &format!("{W}: $softTimeout"))?;
        if let (Some(s), Some(t)) = (soft, timeout) {
            if s >= t {
                return Err(invalid(format!(
                    "{W}: softTimeout: ({s} s) must be shorter than timeout: ({t} s)"
                )));
            }
        }
        let max_jobs = count(maxJobs, &format!("{W}: $maxJobs"), 1)?;
        let max_memory = maxMemory
            .filter(|z| !z.is_null())
            .map(|z| bytes(z, &format!("{W}: $maxMemory")))
            .transpose()?;
        let ttl = secs(ttl, &format!("{W}: $ttl"))?;
        let idle_ttl = secs(idleTtl, &format!("{W}: $idleTtl"))?;
        let memory_limit = memoryLimit
            .filter(|z| !z.is_null())
            .map(|z| bytes(z, &format!("{W}: $memoryLimit")))
            .transpose()?;
        let retries = count(Some(retries), &format!("{W}: $retries"), 0)?.unwrap_or(0) as u32;
        let queue_size =
            count(Some(queueSize), &format!("{W}: $queueSize"), 1)?.unwrap_or(1) as usize;
        let on_start = args::optional_callable(onWorkerStart, &format!("{W}: $onWorkerStart"))?;
        if name.is_empty() || name.len() > 64 {
            return Err(invalid(format!(
                "{W}: $name must be 1 to 64 characters, it shows in process titles"
            )));
        }
        let config = Config {
            workers,
            deadline: timeout.map(|t| Deadline {
                timeout: Duration::from_secs_f64(t),
                grace: Duration::from_secs_f64(grace.unwrap_or(1.0)),
            }),
            max_jobs,
            max_memory,
            ttl: ttl.map(Duration::from_secs_f64),
            idle_ttl: idle_ttl.map(Duration::from_secs_f64),
            retries,
            queue_size,
            prefetch: match prefetch {
                1..=1024 => prefetch as usize,
                _ => {
                    return Err(invalid(format!(
                        "{W}: $prefetch must be 1 to 1024 (tasks handed to a worker at once), \
                         {prefetch} given"
                    )))
                }
            },
            max_start_failures: 5,
        };
        let setup = Setup {
            handler: handler.shallow_clone(),
            on_start: on_start.map(Zval::shallow_clone),
            soft_timeout: soft,
            memory_limit: memory_limit.map(|b| b.to_string()),
            name,
            max_frame: max_frame()?,
        };
        let inner = Inner {
            owner: sys::current_pid(),
            core: core_pool::Pool::new(config),
            setup,
            block_when_full: blockWhenFull,
            on_result: Vec::new(),
            slots: HashMap::new(),
            closed: false,
            undelivered: Default::default(),
            handed_back: Default::default(),
        };
        let pool = Pool {
            inner: Rc::new(RefCell::new(inner)),
        };
        // Fork the workers now: they inherit the application as it is at this point.
        turn(&pool.inner, Some(Instant::now()))?;
        Ok(pool)
    }

    /// Queues `$payload` for a worker; returns its task. Blocks while the queue is full (or throws
    /// `Forklift\PoolFullException` with `blockWhenFull: false`).
    pub fn submit(&mut self, payload: &Zval) -> PhpResult<Task> {
        check_owner(&self.inner)?;
        let (format, bytes) = values::serialize(payload, values::Subject::Payload)
            .map_err(|u| invalid(format!("Forklift\\Pool::submit(): {}", u.message)))?;
        loop {
            let refused = {
                let mut i = self.inner.borrow_mut();
                match i.core.submit(format, bytes.clone()) {
                    Ok(id) => {
                        let slot = Rc::new(RefCell::new(None));
                        i.slots.insert(id, Rc::downgrade(&slot));
                        let idle = i.core.has_idle_worker();
                        drop(i);
                        // Hand it to an idle worker at once; otherwise it waits for one.
                        if idle {
                            turn(&self.inner, Some(Instant::now()))?;
                        }
                        return Ok(Task {
                            id,
                            slot,
                            pool: Rc::downgrade(&self.inner),
                        });
                    }
                    Err(r) => r,
                }
            };
            match refused {
                Refused::Full if self.inner.borrow().block_when_full => turn(&self.inner, None)?,
                Refused::Full => {
                    return Err(PhpException::new(
                        format!(
                            "Forklift\\Pool::submit(): the queue is full ({} tasks wait): wait for \
                             results, raise queueSize:, or pass blockWhenFull: true",
                            self.inner.borrow().core.queued()
                        ),
                        0,
                        pool_full_ce(),
                    ))
                }
                Refused::Closed => return Err(PhpException::new(
                    "Forklift\\Pool::submit(): the pool is shut down; make a new Forklift\\Pool \
                         for more work"
                        .into(),
                    0,
                    pool_ce(),
                )),
                Refused::Stopped(cause) => {
                    return Err(PhpException::new(
                        format!("Forklift\\Pool::submit(): the pool has stopped: {cause}"),
                        0,
                        pool_ce(),
                    ))
                }
            }
        }
    }

    /// Calls `$fn(JobResult $result, int $taskId)` for every task that finishes from now on (during
    /// the pool's calls: submit, drain, waits).
    pub fn on_result(&mut self, r#fn: &Zval) -> PhpResult<()> {
        args::callable(r#fn, "Forklift\\Pool::onResult(): argument #1 ($fn)")?;
        self.inner.borrow_mut().on_result.push(r#fn.shallow_clone());
        Ok(())
    }

    /// Waits until every accepted task has finished.
    pub fn drain(&mut self) -> PhpResult<()> {
        // Callbacks left over from a round in which one threw come first.
        deliver(&self.inner)?;
        while !self.inner.borrow().core.idle() {
            turn(&self.inner, None)?;
        }
        self.raise_if_stopped()
    }

    /// Stops the pool gracefully: running tasks finish, workers leave. Returns the payloads of
    /// the tasks that had not started, keyed by task id (handed back, not dropped).
    pub fn shutdown(&mut self) -> PhpResult<Vec<(i64, Zval)>> {
        self.close(false)
    }

    /// Stops the pool now: workers are killed (their running tasks end with outcome "signal").
    /// Returns the payloads of the tasks that had not started, keyed by task id.
    pub fn kill(&mut self) -> PhpResult<Vec<(i64, Zval)>> {
        self.close(true)
    }

    /// Workers (pid, state, tasks done, RSS, current task and its age) and the pool's counters.
    pub fn stats(&self) -> PhpResult<ext_php_rs::boxed::ZBox<ZendHashTable>> {
        let i = self.inner.borrow();
        let mut out = ZendHashTable::new();
        let mut workers = ZendHashTable::new();
        for w in i.core.workers() {
            let mut row = ZendHashTable::new();
            row.insert("number", w.number as i64)?;
            row.insert("pid", w.pid as i64)?;
            row.insert("state", w.state.as_str())?;
            row.insert("tasksDone", w.tasks_done as i64)?;
            row.insert("rss", w.rss as i64)?;
            row.insert("task", w.task.map(|t| t as i64))?;
            row.insert("taskAge", w.task_age.map(|a| a.as_secs_f64()))?;
            workers.push(row)?;
        }
        let c = i.core.counters();
        out.insert("workers", workers)?;
        out.insert("queued", i.core.queued() as i64)?;
        out.insert("running", i.core.running() as i64)?;
        for (k, v) in [
            ("submitted", c.submitted),
            ("completed", c.completed),
            ("failed", c.failed),
            ("timedOut", c.timed_out),
            ("oom", c.oom),
            ("recycled", c.recycled),
            ("crashed", c.crashed),
            ("retried", c.retried),
        ] {
            out.insert(k, v as i64)?;
        }
        Ok(out)
    }

    /// Waits until one of `$tasks` has finished; returns its key, or null after `$timeout` seconds.
    pub fn wait_any(&mut self, tasks: &ZendHashTable, timeout: Option<f64>) -> PhpResult<Zval> {
        let deadline =
            args::wait_deadline(timeout, "Forklift\\Pool::waitAny(): argument #2 ($timeout)")?;
        if tasks.is_empty() {
            return Err(invalid("Forklift\\Pool::waitAny(): argument #1 ($tasks) is empty; pass at least one Forklift\\Task"));
        }
        let mut entries = Vec::new();
        for (key, value) in tasks.iter() {
            let mut v = value.shallow_clone();
            let Some(task) = <&mut Task>::from_zval_mut(&mut v) else {
                return Err(invalid(format!(
                    "Forklift\\Pool::waitAny(): element [{key}] of argument #1 ($tasks) must be a Forklift\\Task, {} given",
                    args::describe(value)
                )));
            };
            let mut k = Zval::new();
            match key {
                ArrayKey::Long(n) => k.set_long(n),
                other => k.set_string(&other.to_string(), false)?,
            }
            entries.push((k, Rc::clone(&task.slot)));
        }
        loop {
            if let Some((k, _)) = entries.iter().find(|(_, s)| s.borrow().is_some()) {
                return Ok(k.shallow_clone());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let mut null = Zval::new();
                null.set_null();
                return Ok(null);
            }
            self.raise_if_stopped_with_work()?;
            turn(&self.inner, deadline)?;
        }
    }
}

impl Pool {
    fn raise_if_stopped(&self) -> PhpResult<()> {
        match self.inner.borrow().core.stopped() {
            Some(cause) => Err(PhpException::new(
                format!("Forklift\\Pool: the pool has stopped: {cause}"),
                0,
                pool_ce(),
            )),
            None => Ok(()),
        }
    }

    /// Raises once the pool has stopped and nothing it accepted is left to finish.
    fn raise_if_stopped_with_work(&self) -> PhpResult<()> {
        let i = self.inner.borrow();
        if i.core.stopped().is_some() && i.core.idle() {
            drop(i);
            return self.raise_if_stopped();
        }
        Ok(())
    }

    fn close(&mut self, kill: bool) -> PhpResult<Vec<(i64, Zval)>> {
        check_owner(&self.inner)?;
        let unrun = {
            let mut i = self.inner.borrow_mut();
            i.closed = true;
            i.core.close(kill)
        };
        while self.inner.borrow().core.workers_left() > 0 {
            turn(&self.inner, None)?;
        }
        let mut back = Vec::new();
        for u in unrun {
            let mut i = self.inner.borrow_mut();
            i.slots.remove(&u.id);
            i.handed_back.insert(u.id);
            drop(i);
            let payload = values::unserialize(u.format, &u.bytes).map_err(PhpException::from)?;
            back.push((u.id as i64, payload));
        }
        Ok(back)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // An accepted task is run: finish the queue (without callbacks: the pool's user is gone),
        // then let the workers go.
        let Ok(mut i) = self.inner.try_borrow_mut() else {
            return;
        };
        // A copy inherited by a forked child: the workers are the parent's business.
        if i.check_owner().is_err() {
            return;
        }
        while !i.core.idle() && i.core.stopped().is_none() {
            if i.turn(None).is_err() {
                break;
            }
        }
        i.closed = true;
        i.core.close(false);
        while i.core.workers_left() > 0 {
            if i.turn(None).is_err() {
                break;
            }
        }
    }
}

/// A task submitted to a pool.
#[php_class]
#[php(name = "Forklift\\Task")]
#[php(flags = ClassFlags::Final)]
pub struct Task {
    id: u64,
    slot: Rc<Slot>,
    pool: Weak<RefCell<Inner>>,
}

#[php_impl]
impl Task {
    /// The task's id in its pool (also passed to `onResult` callbacks).
    pub fn id(&self) -> i64 {
        self.id as i64
    }

    /// Whether the task has finished. Never blocks.
    pub fn is_done(&self) -> PhpResult<bool> {
        if self.slot.borrow().is_none() {
            if let Some(pool) = self.pool.upgrade() {
                turn(&pool, Some(Instant::now()))?;
            }
        }
        Ok(self.slot.borrow().is_some())
    }

    /// What `var_dump()` and `print_r()` show: the id and, once the pool has it, the result. Reads
    /// the result slot only; it neither blocks nor drives the pool.
    #[php(name = "__debugInfo")]
    pub fn debug_info(&self) -> PhpResult<ext_php_rs::boxed::ZBox<ZendHashTable>> {
        let slot = self.slot.borrow();
        let mut out = ZendHashTable::new();
        out.insert("id", self.id as i64)?;
        out.insert("done", slot.is_some())?;
        out.insert("result", slot.as_ref().map(JobResult::share))?;
        Ok(out)
    }

    /// Waits for the task to finish and returns its result; later calls return the same result.
    pub fn wait(&self) -> PhpResult<JobResult> {
        loop {
            if let Some(r) = self.slot.borrow().as_ref() {
                return Ok(r.share());
            }
            let Some(pool) = self.pool.upgrade() else {
                return Err(PhpException::new(
                    "Forklift\\Task::wait(): its pool is gone; keep the pool until its tasks are done".into(),
                    0,
                    pool_ce(),
                ));
            };
            if pool.borrow().handed_back.contains(&self.id) {
                return Err(PhpException::new(
                    format!(
                        "Forklift\\Task::wait(): task {} never ran: shutdown() or kill() handed it \
                         back (see their return value)",
                        self.id
                    ),
                    0,
                    pool_ce(),
                ));
            }
            if let Some(cause) = pool.borrow().core.stopped().map(str::to_string) {
                if pool.borrow().core.idle() && self.slot.borrow().is_none() {
                    return Err(PhpException::new(
                        format!("Forklift\\Task::wait(): the pool has stopped: {cause}"),
                        0,
                        pool_ce(),
                    ));
                }
            }
            turn(&pool, None)?;
        }
    }
}

/// How stale a busy worker's title may get while it runs tasks back to back.
const TITLE_EVERY: Duration = Duration::from_millis(10);

fn set_title(setup: &Setup, number: usize, what: &str) {
    if let Ok(f) = ZendCallable::try_from_name("cli_set_process_title") {
        let title = format!("forklift: {} #{number} {what}", setup.name);
        let _ = f.try_call(vec![&title]);
    }
}

/// A worker's life: start hook, `Ready`, then one task after another until `Stop`.
fn worker_main(end: crate::core::process::ChildEnd, setup: &Setup, number: usize) -> ! {
    let mut rx = Receiver::new(&end, setup.max_frame);
    child::become_child(end, setup.max_frame);
    set_title(setup, number, "starting");
    if let Some(limit) = &setup.memory_limit {
        if let Ok(f) = ZendCallable::try_from_name("ini_set") {
            let _ = f.try_call(vec![&"memory_limit", limit]);
        }
    }
    // The application's child fork hooks first (reconnect lazily), as in any forked child.
    match try_catch(hooks::run_child) {
        Ok(Ok(())) => {}
        failed => {
            let ending = match failed {
                Ok(_) => child::classify_failure(),
                _ => Ending::Fatal,
            };
            let (code, _) = child::report_guarded(ending, setup.max_frame);
            child::flush_output();
            sys::exit_now(if code == 0 { 1 } else { code });
        }
    }
    if let Some(hook) = &setup.on_start {
        let n = number as i64;
        let mut nz = Zval::new();
        nz.set_long(n);
        let ending = child::call(hook, &[&nz], None);
        if !matches!(ending, Ending::Returned(_)) {
            let (code, _) = child::report_guarded(ending, setup.max_frame);
            child::flush_output();
            sys::exit_now(if code == 0 { 1 } else { code });
        }
    }
    blackbox::send(Message::Ready);
    let (mut cpu_before, _) = sys::usage_self();
    let mut title_set = Instant::now();
    let mut was_idle = true;
    loop {
        // Under load the next task is already there: say "idle" only when we will wait.
        if !rx.has_pending() {
            set_title(setup, number, "idle");
            was_idle = true;
        }
        match rx.next() {
            Some(Message::Task { id, format, bytes }) => {
                // Back to back tasks update the title at most every TITLE_EVERY: it is a PHP call.
                if title_set.elapsed() >= TITLE_EVERY || was_idle {
                    set_title(setup, number, &format!("task {id}"));
                    title_set = Instant::now();
                }
                was_idle = false;
                blackbox::begin_task();
                zend::reset_peak_memory();
                let ending = match values::unserialize(format, &bytes) {
                    Ok(payload) => child::call(&setup.handler, &[&payload], setup.soft_timeout),
                    Err(why) => {
                        child::send_channel_failure(format!("the task's payload: {why}"), None);
                        Ending::Internal(why)
                    }
                };
                let mut last = ending.is_final();
                // The task's last messages go in one write.
                blackbox::cork();
                let (code, bailed) = child::report_guarded(ending, setup.max_frame);
                blackbox::report_unsent();
                // After a fatal error PHP does not go on, and neither does a worker.
                last |= bailed | !child::flush_output();
                child::send_stats();
                if last {
                    blackbox::uncork();
                    sys::exit_now(code);
                }
                let (cpu, rss) = sys::usage_self();
                let cpu_ns = cpu.saturating_sub(cpu_before).as_nanos() as u64;
                cpu_before = cpu;
                blackbox::send(Message::TaskEnd { id, cpu_ns, rss });
                blackbox::uncork();
            }
            // Stop, or the parent is gone.
            _ => {
                child::flush_output();
                sys::exit_now(0)
            }
        }
    }
}
