//! `Forklift\fork`, `Forklift\Process`, `Forklift\wait_any` and `Forklift\on_fork`.

use std::time::Instant;

use ext_php_rs::convert::FromZvalMut;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendHashTable, Zval};

use crate::core::runtime::{self, ChildId, JobState};
use crate::core::spawn::{fork_child, Forked};
use crate::php::exceptions::{from_core, invalid};
use crate::php::limits::Limits;
use crate::php::result::JobResult;
use crate::php::{args, child, hooks, signals, zend};

/// Adds this module's functions and classes to the extension.
pub fn register(module: ModuleBuilder) -> ModuleBuilder {
    module
        .class::<Process>()
        .function(wrap_function!(fork))
        .function(wrap_function!(wait_any))
        .function(wrap_function!(on_fork))
}

/// Smallest sensible `forklift.max_frame_size`: room for an error record with a short message.
const MIN_FRAME: i64 = 1024;

pub(crate) fn max_frame() -> PhpResult<usize> {
    let v = zend::ini_long(c"forklift.max_frame_size");
    if v < MIN_FRAME {
        let raw = zend::ini_string("forklift.max_frame_size").unwrap_or_else(|| v.to_string());
        return Err(invalid(format!(
            "forklift.max_frame_size is \"{raw}\"; it must be a number of bytes, at least {MIN_FRAME} \
             (the default is 67108864, 64 MiB)"
        )));
    }
    // The frame header holds a u32 length.
    Ok(v.min(u32::MAX as i64) as usize)
}

/// Runs `$job(...$args)` in a forked child and returns its handle. Named arguments `timeout:`,
/// `grace:` and `softTimeout:` set the job's limits.
#[php_function]
#[php(name = "Forklift\\fork")]
pub fn fork(job: &Zval, args: &[&Zval]) -> PhpResult<Process> {
    args::callable(job, "Forklift\\fork(): argument #1 ($job)")?;
    let limits = Limits::from_named(zend::extra_named_args(), "Forklift\\fork()")?;
    let max_frame = max_frame()?;
    // Reap what has ended, keep what is due: a loop that only forks still supervises.
    runtime::with(|rt| rt.poll()).map_err(from_core)?;
    let job_args: Vec<Zval> = args.iter().map(|z| z.shallow_clone()).collect();
    if hooks::run_prepare().is_err() {
        // The hook's exception is pending and is what the caller sees.
        return Err(PhpException::from(
            "a Forklift\\on_fork() prepare hook threw",
        ));
    }
    let backstop = limits.deadline.map(|d| d.backstop());
    match fork_child(backstop).map_err(from_core)? {
        Forked::Child(end) => child::run(end, job, &job_args, max_frame, limits.soft_timeout),
        Forked::Parent(spawned) => {
            let pid = spawned.pid.as_raw();
            let (id, owner) = runtime::with(|rt| {
                Ok((rt.adopt_job(spawned, max_frame, limits.deadline)?, rt.pid()))
            })
            .map_err(from_core)?;
            let process = Process {
                id: Some(id),
                owner,
                pid,
                result: None,
            };
            if hooks::run_parent().is_err() {
                // `process` is dropped here and its job detached: it still runs and is reaped.
                return Err(PhpException::from(
                    "a Forklift\\on_fork() parent hook threw",
                ));
            }
            Ok(process)
        }
    }
}

/// Waits until every job whose handle was dropped has ended (an accepted job is run).
pub fn settle_detached() {
    while runtime::with(|rt| Ok(rt.detached_running())).unwrap_or(0) > 0 {
        if runtime::with(|rt| rt.turn(None)).is_err() {
            return;
        }
    }
}

/// Registers fork hooks; each argument may be null.
#[php_function]
#[php(name = "Forklift\\on_fork")]
pub fn on_fork(
    prepare: Option<&Zval>,
    parent: Option<&Zval>,
    child: Option<&Zval>,
) -> PhpResult<()> {
    let prepare = args::optional_callable(prepare, "Forklift\\on_fork(): argument #1 ($prepare)")?;
    let parent = args::optional_callable(parent, "Forklift\\on_fork(): argument #2 ($parent)")?;
    let child = args::optional_callable(child, "Forklift\\on_fork(): argument #3 ($child)")?;
    if prepare.is_none() && parent.is_none() && child.is_none() {
        return Err(invalid(
            "Forklift\\on_fork() needs at least one callable: on_fork(prepare: ..., parent: ..., child: ...)",
        ));
    }
    hooks::register(prepare, parent, child);
    Ok(())
}

/// Waits until one of `$processes` has finished; returns its key, or null once `$timeout` seconds
/// have passed.
#[php_function]
#[php(name = "Forklift\\wait_any")]
pub fn wait_any(processes: &ZendHashTable, timeout: Option<f64>) -> PhpResult<Zval> {
    const W: &str = "Forklift\\wait_any()";
    let deadline = args::wait_deadline(timeout, &format!("{W}: argument #2 ($timeout)"))?;
    if processes.is_empty() {
        return Err(invalid(format!(
            "{W}: argument #1 ($processes) is empty; pass at least one Forklift\\Process"
        )));
    }
    let me = runtime::with(|rt| Ok(rt.pid())).map_err(from_core)?;
    // One pass checks the arguments and finds a finished job; it stops at the first, so draining
    // n finished jobs costs O(n) in all, not O(n) per call.
    let mut entries: Vec<(Zval, Zval)> = Vec::new();
    let mut ids = Vec::new();
    let mut problem = None;
    let mut found = None;
    runtime::with(|rt| {
        zend::for_each_entry(processes, |key, value| {
            let Some(p) = value.extract::<&Process>() else {
                problem = Some(invalid(format!(
                    "{W}: element [{}] of argument #1 ($processes) must be a \
                     Forklift\\Process, {} given",
                    zend::key_text(&key),
                    args::describe(value)
                )));
                return false;
            };
            let index = entries.len();
            let finished = match p.id {
                None => true,
                Some(id) => {
                    if let Err(e) = p.check_owner(me) {
                        problem = Some(from_core(e));
                        return false;
                    }
                    ids.push((index, id));
                    rt.job_state(id) == Some(JobState::Finished)
                }
            };
            entries.push((key, value.shallow_clone()));
            if finished {
                found = Some(index);
            }
            !finished
        });
        Ok(())
    })
    .map_err(from_core)?;
    if let Some(e) = problem {
        return Err(e);
    }
    let index = match found {
        Some(i) => Some(i),
        None => loop {
            let found = runtime::with(|rt| loop {
                if let Some(k) = rt.first_finished(ids.iter().map(|(_, id)| *id)) {
                    return Ok(Some(Some(ids[k].0)));
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Some(None));
                }
                if !rt.turn_unless(deadline, Some(&signals::interrupted))? {
                    return Ok(None);
                }
            })
            .map_err(from_core)?;
            match found {
                Some(index) => break index,
                // PHP code to run first (a signal handler, a deadline): outside the runtime.
                None => signals::run_pending()?,
            }
        },
    };
    let Some(index) = index else {
        let mut null = Zval::new();
        null.set_null();
        return Ok(null);
    };
    let (key, mut handle) = entries.swap_remove(index);
    if let Some(p) = <&mut Process>::from_zval_mut(&mut handle) {
        p.settle()?;
    }
    // The key as the array has it: int keys stay ints, string keys keep every byte.
    Ok(key)
}

/// A job running (or finished) in a child process.
#[php_class]
#[php(name = "Forklift\\Process")]
#[php(flags = ClassFlags::Final)]
pub struct Process {
    /// The job in this process's runtime; `None` once finished and settled into `result`.
    id: Option<ChildId>,
    /// The process that forked the job: only it can wait for it or signal it.
    owner: i32,
    pid: i32,
    result: Option<JobResult>,
}

impl Process {
    fn check_owner(&self, current: i32) -> crate::core::error::Result<()> {
        if current != self.owner {
            return Err(crate::core::error::Error::NotOwner {
                pid: self.pid,
                owner: self.owner,
                current,
            });
        }
        Ok(())
    }

    /// The job's id, if this process may use it and it is not settled yet.
    fn running_id(&self) -> PhpResult<Option<ChildId>> {
        let Some(id) = self.id else { return Ok(None) };
        let me = runtime::with(|rt| Ok(rt.pid())).map_err(from_core)?;
        self.check_owner(me).map_err(from_core)?;
        Ok(Some(id))
    }

    /// Turns a finished job into its result (once). The value is unserialized here, outside the
    /// runtime: that may run the application's `__unserialize`.
    fn settle(&mut self) -> PhpResult<()> {
        let Some(id) = self.id else { return Ok(()) };
        if let Some(report) = runtime::with(|rt| Ok(rt.take_report(id))).map_err(from_core)? {
            self.result = Some(JobResult::from_report(report));
            self.id = None;
        }
        Ok(())
    }
}

#[php_impl]
impl Process {
    /// The child's process id.
    pub fn pid(&self) -> i64 {
        self.pid as i64
    }

    /// Whether the child still runs. Never blocks; reaps the child once it has exited.
    pub fn is_running(&mut self) -> PhpResult<bool> {
        let Some(id) = self.running_id()? else {
            return Ok(false);
        };
        let state = runtime::with(|rt| {
            rt.poll()?;
            Ok(rt.job_state(id))
        })
        .map_err(from_core)?;
        if state == Some(JobState::Running) {
            return Ok(true);
        }
        self.settle()?;
        Ok(false)
    }

    /// Waits for the job to end and returns its result; later calls return the same result.
    pub fn wait(&mut self) -> PhpResult<JobResult> {
        if let Some(id) = self.running_id()? {
            loop {
                let ended = runtime::with(|rt| {
                    while rt.job_state(id) == Some(JobState::Running) {
                        if !rt.turn_unless(None, Some(&signals::interrupted))? {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })
                .map_err(from_core)?;
                if ended {
                    break;
                }
                // PHP code to run first (a signal handler, a deadline): outside the runtime.
                signals::run_pending()?;
            }
            self.settle()?;
        }
        match &self.result {
            Some(r) => Ok(r.share()),
            None => Err(PhpException::from(
                "Forklift\\Process::wait(): the job is unknown to this process's runtime",
            )),
        }
    }

    /// Sends a signal to the child; false when it has already ended.
    pub fn signal(&mut self, signo: i64) -> PhpResult<bool> {
        let signo = args::signal(signo, "Forklift\\Process::signal()")?;
        match self.running_id()? {
            Some(id) => runtime::with(|rt| rt.signal_job(id, signo)).map_err(from_core),
            None => Ok(false),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // In a child that inherited this handle the runtime is a new one: nothing to detach.
            let _ = runtime::with(|rt| {
                if rt.pid() == self.owner {
                    rt.detach(id);
                }
                Ok(())
            });
        }
    }
}
