//! `Forklift\\Task`: the handle of one submitted task.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Instant;

use ext_php_rs::exception::PhpException;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::ZendHashTable;

use crate::php::exceptions::pool_ce;
use crate::php::pool::state::{core, turn, Inner, Slot};
use crate::php::result::JobResult;

/// A task submitted to a pool.
#[php_class]
#[php(name = "Forklift\\Task")]
#[php(flags = ClassFlags::Final)]
pub struct Task {
    pub(crate) id: u64,
    pub(crate) slot: Rc<Slot>,
    pub(crate) pool: Weak<RefCell<Inner>>,
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
                if pool.borrow().handed_back.contains(&self.id) {
                    // It will never be done: say so, rather than false forever.
                    return Err(handed_back("Forklift\\Task::isDone()", self.id));
                }
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
                return Err(handed_back("Forklift\\Task::wait()", self.id));
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

/// The error for a task that `shutdown()`/`kill()` handed back before it ran.
pub(crate) fn handed_back(what: &str, id: u64) -> PhpException {
    PhpException::new(
        format!(
            "{what}: task {id} never ran: shutdown() or kill() handed it back (see their return \
             value)"
        ),
        0,
        pool_ce(),
    )
}
