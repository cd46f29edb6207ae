// The constructor's parameters are PHP's named arguments (`softTimeout:`, like fork()'s), so they
// are spelled in camelCase.
#![allow(non_snake_case)]

//! `Forklift\Pool`: prefork workers that inherit the bootstrapped parent and run
//! `$handler($payload)` per task. The decisions are `core::pool`'s, the waiting the runtime's;
//! here: the class and its options, [`state`] (the pool's turn, results, callbacks), [`task`]
//! (`Forklift\Task`) and [`worker`] (the worker's life in its child).

mod state;
mod task;
mod worker;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ext_php_rs::convert::FromZvalMut;
use ext_php_rs::exception::PhpException;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendHashTable, Zval};

use crate::core::pool::{Config, Refused};
use crate::core::runtime;
use crate::core::sys;
use crate::php::exceptions::{from_core, invalid, pool_ce, pool_full_ce};
use crate::php::fork::max_frame;
use crate::php::limits::Limits;
use crate::php::{args, values, zend};
use state::{check_owner, core, deliver, interruptible_step, step, turn, Inner, Setup};
pub use task::Task;

/// Adds the pool's classes to the extension.
pub fn register(module: ModuleBuilder) -> ModuleBuilder {
    module.class::<Pool>().class::<Task>()
}

/// A pool of prefork workers.
#[php_class]
#[php(name = "Forklift\\Pool")]
#[php(flags = ClassFlags::Final)]
pub struct Pool {
    inner: Rc<RefCell<Inner>>,
}

/// Refuses at once a pool that the process's limits cannot hold, rather than forking workers for a
/// minute before one fails: each worker holds 2 open files in the parent, and is a process.
fn check_worker_limits(workers: usize, what: &str) -> PhpResult<()> {
    // Room for the application's own files besides the workers'.
    let need = (workers as u64).saturating_mul(2).saturating_add(64);
    let (soft, hard) = sys::nofile_limits();
    if need > hard {
        return Err(invalid(format!(
            "{what}: $workers: {workers} workers need about {need} open files (2 each), over this \
             process's limit of {hard} (ulimit -Hn): use fewer workers, or raise the limit \
             (LimitNOFILE= in a systemd unit)"
        )));
    }
    if need > soft {
        sys::raise_nofile_limit();
    }
    if let Some(max) = sys::nproc_limit() {
        if workers as u64 >= max {
            return Err(invalid(format!(
                "{what}: $workers: {workers} workers are over the process limit of {max} \
                 (ulimit -u) for this user: use fewer workers, or raise the limit"
            )));
        }
    }
    Ok(())
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
        let workers =
            args::at_least(Some(workers), &format!("{W}: $workers"), 1)?.unwrap_or(1) as usize;
        let limits = Limits::new(timeout, grace, softTimeout, W)?;
        check_worker_limits(workers, W)?;
        let max_jobs = args::at_least(maxJobs, &format!("{W}: $maxJobs"), 1)?;
        let max_memory = maxMemory
            .filter(|z| !z.is_null())
            .map(|z| args::size(z, &format!("{W}: $maxMemory")))
            .transpose()?;
        let ttl = args::optional_seconds(ttl, &format!("{W}: $ttl"))?;
        let idle_ttl = args::optional_seconds(idleTtl, &format!("{W}: $idleTtl"))?;
        let memory_limit = memoryLimit
            .filter(|z| !z.is_null())
            .map(|z| args::size(z, &format!("{W}: $memoryLimit")))
            .transpose()?;
        let retries =
            args::at_least(Some(retries), &format!("{W}: $retries"), 0)?.unwrap_or(0) as u32;
        let queue_size =
            args::at_least(Some(queueSize), &format!("{W}: $queueSize"), 1)?.unwrap_or(1) as usize;
        let on_start = args::optional_callable(onWorkerStart, &format!("{W}: $onWorkerStart"))?;
        if name.is_empty() || name.len() > 64 {
            return Err(invalid(format!(
                "{W}: $name must be 1 to 64 characters, it shows in process titles"
            )));
        }
        let config = Config {
            workers,
            deadline: limits.deadline,
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
            soft_timeout: limits.soft_timeout,
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
            handback: Vec::new(),
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
        let limit = self.inner.borrow().setup.max_frame;
        if bytes.len() > limit {
            return Err(invalid(format!(
                "Forklift\\Pool::submit(): the payload is {} bytes serialized, over the limit of \
                 {limit} bytes (forklift.max_frame_size): send less (an id, a path), or raise the \
                 limit before making the pool",
                bytes.len()
            )));
        }
        let pool = self.inner.borrow().id;
        loop {
            let accepted = runtime::with(|rt| {
                let submitted = rt.pool(pool)?.submit(format, bytes.clone());
                // Hand it to an idle worker at once (one write, no wait); otherwise it waits for
                // one.
                if submitted.is_ok() && rt.pool(pool)?.has_idle_worker() {
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
        let mut problem = None;
        let me = Rc::as_ptr(&self.inner);
        zend::for_each_entry(tasks, |key, value| {
            let mut v = value.shallow_clone();
            let Some(task) = <&mut Task>::from_zval_mut(&mut v) else {
                problem = Some(invalid(format!(
                    "Forklift\\Pool::waitAny(): element [{}] of argument #1 ($tasks) must be a \
                     Forklift\\Task, {} given",
                    zend::key_text(&key),
                    args::describe(value)
                )));
                return false;
            };
            if task.pool.as_ptr() != me {
                problem = Some(invalid(format!(
                    "Forklift\\Pool::waitAny(): element [{}] of argument #1 ($tasks) is a task \
                     of another pool; wait for it with that pool",
                    zend::key_text(&key)
                )));
                return false;
            }
            if task.slot.borrow().is_none() && self.inner.borrow().handed_back.contains(&task.id) {
                problem = Some(task::handed_back("Forklift\\Pool::waitAny()", task.id));
                return false;
            }
            entries.push((key, Rc::clone(&task.slot)));
            true
        });
        if let Some(e) = problem {
            return Err(e);
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
        {
            let mut i = self.inner.borrow_mut();
            for u in &unrun {
                i.slots.remove(&u.id);
                i.handed_back.insert(u.id);
            }
            i.handback.extend(unrun);
        }
        // The workers go first; callbacks run after, so that one that throws cannot leave the
        // pool half stopped. A signal handler or a deadline may cut this short: the payloads
        // wait in `handback` for the next shutdown()/kill().
        while core(&self.inner, |c| c.workers_left())? > 0 {
            interruptible_step(&self.inner, None)?;
        }
        let unrun = std::mem::take(&mut self.inner.borrow_mut().handback);
        let mut back = Vec::new();
        for u in unrun {
            let payload = values::unserialize(u.format, &u.bytes)
                .map_err(|e| PhpException::from(e.to_string()))?;
            back.push((u.id as i64, payload));
        }
        deliver(&self.inner)?;
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
        // This may run while an exception unwinds the stack: keep it, do the work, give it back.
        let _ = zend::with_exception_aside(|| quietly(&self.inner));
        let id = self.inner.borrow().id;
        let _ = runtime::with(|rt| {
            rt.remove_pool(id);
            Ok(())
        });
        self.inner.borrow_mut().removed = true;
    }
}

/// What a daemon does with the pools it owns (`Forklift\Daemon::pool()`): between its turns it
/// replaces workers, takes finished tasks and runs `onResult`; it shows them in status; at its
/// stop it waits until they are idle and shuts them down (or kills them at its stop timeout).
pub(crate) mod for_daemon {
    use super::*;
    use crate::core::daemon::status::PoolStatus;

    fn pool_of(z: &Zval) -> Option<&Pool> {
        z.extract::<&Pool>()
    }

    /// Between turns: missing workers forked, finished tasks taken, callbacks run.
    pub(crate) fn service(z: &Zval) -> PhpResult<()> {
        let Some(p) = pool_of(z) else { return Ok(()) };
        if p.inner.borrow().removed {
            return Ok(());
        }
        check_owner(&p.inner)?;
        state::spawn_missing(&p.inner)?;
        state::collect(&p.inner)?;
        deliver(&p.inner)
    }

    /// Whether no task is queued or running.
    pub(crate) fn idle(z: &Zval) -> bool {
        match pool_of(z) {
            Some(p) if !p.inner.borrow().removed => core(&p.inner, |c| c.idle()).unwrap_or(true),
            _ => true,
        }
    }

    /// Shuts the pool down (or kills it); how many queued tasks were handed back unrun.
    pub(crate) fn close(z: &Zval, kill: bool) -> PhpResult<usize> {
        let mut z = z.shallow_clone();
        match <&mut Pool>::from_zval_mut(&mut z) {
            Some(p) if !p.inner.borrow().removed => Ok(p.close(kill)?.len()),
            _ => Ok(0),
        }
    }

    pub(crate) fn status(z: &Zval) -> Option<PoolStatus> {
        let p = pool_of(z)?;
        let name = p.inner.borrow().setup.name.clone();
        core(&p.inner, |c| {
            let counters = c.counters().clone();
            PoolStatus {
                name,
                workers: c.workers().len() as u64,
                busy: c.running() as u64,
                queued: c.queued() as u64,
                worker_restarts: counters.recycled + counters.crashed,
                tasks_done: counters.completed,
            }
        })
        .ok()
    }
}
