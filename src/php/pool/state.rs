//! The PHP side of one pool: what a worker is forked with, the task slots and pending callbacks, and
//! the pool's turn — fork what is missing (from a top-level frame), one turn of the process's
//! loop, then results and `onResult` callbacks outside the runtime.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Instant;

use ext_php_rs::convert::IntoZval;
use ext_php_rs::exception::PhpException;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendCallable, Zval};

use crate::core::runtime::{self, PoolId};
use crate::core::spawn::{fork_child, Forked};
use crate::php::exceptions::{forklift_ce, from_core};
use crate::php::pool::worker::worker_main;
use crate::php::result::JobResult;
use crate::php::{hooks, signals};

/// What a worker needs to know, fixed when the pool is made.
pub(crate) struct Setup {
    pub(crate) handler: Zval,
    pub(crate) on_start: Option<Zval>,
    pub(crate) soft_timeout: Option<f64>,
    pub(crate) memory_limit: Option<String>,
    pub(crate) name: String,
    pub(crate) max_frame: usize,
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
pub(crate) type Slot = RefCell<Option<JobResult>>;

pub(crate) struct Inner {
    /// The process that made the pool; its workers are that process's children only.
    pub(crate) owner: i32,
    /// The pool's supervision state, in the process's runtime.
    pub(crate) id: PoolId,
    pub(crate) setup: Setup,
    pub(crate) block_when_full: bool,
    pub(crate) on_result: Vec<Zval>,
    /// Results of tasks whose `Task` handle still exists.
    pub(crate) slots: HashMap<u64, Weak<Slot>>,
    /// Finished tasks whose `onResult` callbacks have not run yet (a callback that throws stops
    /// the round; the rest get theirs at the pool's next call).
    pub(crate) undelivered: std::collections::VecDeque<(u64, JobResult)>,
    /// Tasks handed back by `shutdown()`/`kill()` before they ran.
    pub(crate) handed_back: std::collections::HashSet<u64>,
    /// Payloads of tasks that `shutdown()`/`kill()` took out of the queue and have not returned
    /// yet (a signal handler or a deadline may cut that call short: the next one returns them).
    pub(crate) handback: Vec<crate::core::pool::Unrun>,
    /// Set once the runtime has forgotten the pool (after its workers are gone).
    pub(crate) removed: bool,
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
pub(crate) fn check_owner(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
    let current = runtime::with(|rt| Ok(rt.pid())).map_err(from_core)?;
    let owner = inner.borrow().owner;
    if current != owner {
        return Err(not_ours(owner, current));
    }
    Ok(())
}

/// Forks the workers the pool is missing, from this top-level frame: no borrow of the pool or the
/// runtime is held across a fork.
pub(crate) fn spawn_missing(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
    let id = inner.borrow().id;
    let missing =
        runtime::with(|rt| Ok(rt.pool(id)?.missing(Instant::now()))).map_err(from_core)?;
    if missing == 0 {
        return Ok(());
    }
    let setup = inner.borrow().setup.copy();
    for _ in 0..missing {
        let number = runtime::with(|rt| Ok(rt.pool(id)?.next_number())).map_err(from_core)?;
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
pub(crate) fn collect(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
    let id = inner.borrow().id;
    let finished = runtime::with(|rt| Ok(rt.pool(id)?.take_finished())).map_err(from_core)?;
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
pub(crate) fn core<R>(
    inner: &Rc<RefCell<Inner>>,
    f: impl FnOnce(&mut crate::core::pool::Pool) -> R,
) -> PhpResult<R> {
    let id = inner.borrow().id;
    runtime::with(|rt| Ok(f(rt.pool(id)?))).map_err(from_core)
}

/// One turn of the process's loop for this pool: fork missing workers, wait (at most until
/// `deadline`), take finished tasks. Callbacks are not run here.
pub(crate) fn step(inner: &Rc<RefCell<Inner>>, deadline: Option<Instant>) -> PhpResult<()> {
    spawn_missing(inner)?;
    let deadline = no_wait_if_results(inner, deadline)?;
    runtime::with(|rt| rt.turn(deadline)).map_err(from_core)?;
    collect(inner)
}

/// Tasks may have finished while another call waited (the loop reads every worker, whoever
/// waits): their results are taken at once, with no wait.
fn no_wait_if_results(
    inner: &Rc<RefCell<Inner>>,
    deadline: Option<Instant>,
) -> PhpResult<Option<Instant>> {
    Ok(if core(inner, |c| c.has_finished())? {
        Some(Instant::now())
    } else {
        deadline
    })
}

/// `step`, cut short by a signal: its handler (or an enclosing `timeout()`) runs after the turn,
/// and an exception it leaves reaches the caller.
pub(crate) fn interruptible_step(
    inner: &Rc<RefCell<Inner>>,
    deadline: Option<Instant>,
) -> PhpResult<()> {
    spawn_missing(inner)?;
    let deadline = no_wait_if_results(inner, deadline)?;
    runtime::with(|rt| rt.turn_unless(deadline, Some(&signals::interrupted))).map_err(from_core)?;
    collect(inner)?;
    signals::run_pending()
}

/// Runs one turn and then the `onResult` callbacks, with no borrow of the pool held while they
/// run (they may submit more tasks).
pub(crate) fn turn(inner: &Rc<RefCell<Inner>>, deadline: Option<Instant>) -> PhpResult<()> {
    check_owner(inner)?;
    interruptible_step(inner, deadline)?;
    // A pool that gave up has killed its workers: reap them now, none is left a zombie.
    while core(inner, |c| c.stopped().is_some() && c.workers_left() > 0)? {
        step(inner, None)?;
    }
    deliver(inner)
}

/// Runs the `onResult` callbacks of the finished tasks, oldest first. Each result is taken off the
/// list before its callbacks run, so none gets them twice and a throw leaves the rest for later.
pub(crate) fn deliver(inner: &Rc<RefCell<Inner>>) -> PhpResult<()> {
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
