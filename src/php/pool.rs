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

use crate::core::deadline::Deadline;
use crate::core::ipc::Message;
use crate::core::pool::{Config, Refused};
use crate::core::runtime::{self, PoolId};
use crate::core::spawn::{fork_child, ChildEnd, Forked, Receiver};
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

impl Setup {
    /// A copy for the fork, so that no borrow of the pool is held across it.
    fn copy(&self) -> Setup {
        Setup {
            handler: self.handler.shallow_clone(),
            on_start: self.on_start.as_ref().map(Zval::shallow_clone),
            soft_timeout: self.soft_timeout,
            memory_limit: self.memory_limit.clone(),
            name: self.name.clone(),
            max_frame: self.max_frame,
        }
    }
}

/// Where a task's result lands; shared by the pool and the task's handle.
type Slot = RefCell<Option<JobResult>>;

struct Inner {
    /// The process that made the pool; its workers are that process's children only.
    owner: i32,
    /// The pool's supervision state, in the process's runtime.
    id: PoolId,
    setup: Setup,
    block_when_full: bool,
    on_result: Vec<Zval>,
    /// Results of tasks whose `Task` handle still exists.
    slots: HashMap<u64, Weak<Slot>>,
    /// Finished tasks whose `onResult` callbacks have not run yet (a callback that throws stops
    /// the round; the rest get theirs at the pool's next call).
    undelivered: std::collections::VecDeque<(u64, JobResult)>,
    /// Tasks handed back by `shutdown()`/`kill()` before they ran.
    handed_back: std::collections::HashSet<u64>,
    /// Set once the runtime has forgotten the pool (after its workers are gone).
    removed: bool,
}

fn not_ours(owner: i32, current: i32) -> PhpException {
    PhpException::new(
        format!(
            "this Forklift\\Pool belongs to process {owner}, not to this process ({current}): a \
             forked job or worker cannot use its parent's pool; make a pool in the child"
        ),
        0,
        forklift_ce(),
    )
}

/// Errors unless called in the process that made the pool (not in a child that inherited it).
fn check_owner(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
    let current = runtime::with(|rt| Ok(rt.pid())).map_err(from_core)?;
    let owner = inner.borrow().owner;
    if current != owner {
        return Err(not_ours(owner, current));
    }
    Ok(())
}

/// Forks the workers the pool is missing, from this top-level frame: no borrow of the pool or the
/// runtime is held across a fork.
fn spawn_missing(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
    let id = inner.borrow().id;
    let missing = runtime::with(|rt| Ok(rt.pool(id).missing(Instant::now()))).map_err(from_core)?;
    if missing == 0 {
        return Ok(());
    }
    let setup = inner.borrow().setup.copy();
    for _ in 0..missing {
        let number = runtime::with(|rt| Ok(rt.pool(id).next_number())).map_err(from_core)?;
        // The application's fork hooks run around a worker's fork as around any other.
        if hooks::run_prepare().is_err() {
            return Err(PhpException::from(
                "a Forklift\\on_fork() prepare hook threw",
            ));
        }
        match fork_child(None).map_err(from_core)? {
            Forked::Child(end) => worker_main(end, &setup, number),
            Forked::Parent(spawned) => {
                runtime::with(|rt| rt.adopt_worker(spawned, setup.max_frame, id, number))
                    .map_err(from_core)?;
                if hooks::run_parent().is_err() {
                    return Err(PhpException::from(
                        "a Forklift\\on_fork() parent hook threw",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Takes the pool's finished tasks: results to their slots and to `undelivered`. Unserializing a
/// value may run the application's code, so it happens here, outside the runtime.
fn collect(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
    let id = inner.borrow().id;
    let finished = runtime::with(|rt| Ok(rt.pool(id).take_finished())).map_err(from_core)?;
    for f in finished {
        let result = JobResult::from_report(f.report).with_attempts(f.attempts);
        let mut i = inner.borrow_mut();
        if let Some(slot) = i.slots.remove(&f.id).and_then(|w| w.upgrade()) {
            *slot.borrow_mut() = Some(result.share());
        }
        if !i.on_result.is_empty() {
            i.undelivered.push_back((f.id, result));
        }
    }
    Ok(())
}

/// Runs `f` on the pool's supervision state in the runtime.
fn core<R>(
    inner: &Rc<RefCell<Inner>>,
    f: impl FnOnce(&mut crate::core::pool::Pool) -> R,
) -> PhpResult<R> {
    let id = inner.borrow().id;
    runtime::with(|rt| Ok(f(rt.pool(id)))).map_err(from_core)
}

/// One turn of the process's loop for this pool: fork missing workers, wait (at most until
/// `deadline`), take finished tasks. Callbacks are not run here.
fn step(inner: &Rc<RefCell<Inner>>, deadline: Option<Instant>) -> PhpResult<()> {
    spawn_missing(inner)?;
    runtime::with(|rt| rt.turn(deadline)).map_err(from_core)?;
    collect(inner)
}

/// Runs one turn and then the `onResult` callbacks, with no borrow of the pool held while they
/// run (they may submit more tasks).
fn turn(inner: &Rc<RefCell<Inner>>, deadline: Option<Instant>) -> PhpResult<()> {
    check_owner(inner)?;
    step(inner, deadline)?;
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
        prefetch = 8
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
        let (id, owner) =
            runtime::with(|rt| Ok((rt.add_pool(config), rt.pid()))).map_err(from_core)?;
        let inner = Inner {
            owner,
            id,
            setup,
            block_when_full: blockWhenFull,
            on_result: Vec::new(),
            slots: HashMap::new(),
            undelivered: Default::default(),
            handed_back: Default::default(),
            removed: false,
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
        let pool = self.inner.borrow().id;
        loop {
            let accepted = runtime::with(|rt| {
                let submitted = rt.pool(pool).submit(format, bytes.clone());
                // Hand it to an idle worker at once (one write, no wait); otherwise it waits for
                // one.
                if submitted.is_ok() && rt.pool(pool).has_idle_worker() {
                    rt.service_pool(pool);
                }
                Ok(submitted)
            })
            .map_err(from_core)?;
            // Accepted: from here nothing may throw, or a caller who retries runs it twice.
            let refused = match accepted {
                Ok(id) => {
                    let slot = Rc::new(RefCell::new(None));
                    self.inner
                        .borrow_mut()
                        .slots
                        .insert(id, Rc::downgrade(&slot));
                    return Ok(Task {
                        id,
                        slot,
                        pool: Rc::downgrade(&self.inner),
                    });
                }
                Err(r) => r,
            };
            match refused {
                Refused::Full if self.inner.borrow().block_when_full => turn(&self.inner, None)?,
                Refused::Full => {
                    return Err(PhpException::new(
                        format!(
                            "Forklift\\Pool::submit(): the queue is full ({} tasks wait): wait for \
                             results, raise queueSize:, or pass blockWhenFull: true",
                            core(&self.inner, |c| c.queued())?
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
        while !core(&self.inner, |c| c.idle())? {
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
        let (list, c, queued, running) = core(&self.inner, |c| {
            (c.workers(), c.counters().clone(), c.queued(), c.running())
        })?;
        let mut out = ZendHashTable::new();
        let mut workers = ZendHashTable::new();
        for w in list {
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
        out.insert("workers", workers)?;
        out.insert("queued", queued as i64)?;
        out.insert("running", running as i64)?;
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
        match core(&self.inner, |c| c.stopped().map(str::to_string))? {
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
        if core(&self.inner, |c| c.stopped().is_some() && c.idle())? {
            return self.raise_if_stopped();
        }
        Ok(())
    }

    fn close(&mut self, kill: bool) -> PhpResult<Vec<(i64, Zval)>> {
        check_owner(&self.inner)?;
        let id = self.inner.borrow().id;
        let unrun = runtime::with(|rt| Ok(rt.close_pool(id, kill))).map_err(from_core)?;
        while core(&self.inner, |c| c.workers_left())? > 0 {
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
        // A copy inherited by a forked child: the workers are the parent's business.
        if check_owner(&self.inner).is_err() {
            return;
        }
        // An accepted task is run: finish the queue (without callbacks: the pool's user is gone),
        // then let the workers go.
        let quietly = |inner: &Rc<RefCell<Inner>>| -> PhpResult<()> {
            while !core(inner, |c| c.idle() || c.stopped().is_some())? {
                step(inner, None)?;
            }
            let id = inner.borrow().id;
            runtime::with(|rt| Ok(rt.close_pool(id, false))).map_err(from_core)?;
            while core(inner, |c| c.workers_left())? > 0 {
                step(inner, None)?;
            }
            Ok(())
        };
        let _ = quietly(&self.inner);
        let id = self.inner.borrow().id;
        let _ = runtime::with(|rt| {
            rt.remove_pool(id);
            Ok(())
        });
        self.inner.borrow_mut().removed = true;
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
            if pool.borrow().removed {
                return Err(PhpException::new(
                    "Forklift\\Task::wait(): its pool is gone; keep the pool until its tasks are done".into(),
                    0,
                    pool_ce(),
                ));
            }
            if let Some(cause) = core(&pool, |c| c.stopped().map(str::to_string))? {
                if core(&pool, |c| c.idle())? && self.slot.borrow().is_none() {
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
fn worker_main(end: ChildEnd, setup: &Setup, number: usize) -> ! {
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
