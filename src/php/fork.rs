//! `Forklift\fork`, `Forklift\Process`, `Forklift\wait_any` and `Forklift\on_fork`.

use std::time::Duration;

use ext_php_rs::convert::FromZvalMut;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ArrayKey, ZendHashTable, Zval};

use crate::core::process::{fork_job, Deadline, Forked, Job, Reader};
use crate::core::wait::{self, wait_first};
use crate::php::exceptions::{from_core, invalid};
use crate::php::result::JobResult;
use crate::php::{args, child, hooks, zend};

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

/// A job's limits, from `fork()`'s named arguments.
#[derive(Default)]
pub struct Limits {
    /// Wall clock, kept by the parent.
    pub deadline: Option<Deadline>,
    /// In-process, throws `Forklift\TimeoutException` inside the job.
    pub soft_timeout: Option<f64>,
}

/// Default time between SIGTERM and SIGKILL at a job's deadline.
const DEFAULT_GRACE: f64 = 1.0;

impl Limits {
    /// Reads `timeout:`, `grace:` and `softTimeout:`; `what` names the caller in messages.
    pub fn from_named(named: Vec<(String, Zval)>, what: &str) -> PhpResult<Limits> {
        let (mut timeout, mut grace, mut soft) = (None, None, None);
        for (name, value) in named {
            let slot = match name.as_str() {
                "timeout" => &mut timeout,
                "grace" => &mut grace,
                "softTimeout" => &mut soft,
                other => {
                    return Err(invalid(format!(
                        "{what}: unknown named argument ${other}; the job's options are timeout:, \
                         grace: and softTimeout: (seconds), its arguments are passed by position"
                    )))
                }
            };
            *slot = Some(args::number(&value, &format!("{what}: ${name}"))?);
        }
        let timeout = timeout
            .map(|t| args::positive_seconds(t, &format!("{what}: $timeout")))
            .transpose()?;
        let grace = grace
            .map(|g| args::seconds(g, &format!("{what}: $grace")))
            .transpose()?;
        let soft = soft
            .map(|t| args::positive_seconds(t, &format!("{what}: $softTimeout")))
            .transpose()?;
        if grace.is_some() && timeout.is_none() {
            return Err(invalid(format!(
                "{what}: grace: only applies with a timeout: (the time between SIGTERM at the \
                 timeout and SIGKILL); add timeout: or drop grace:"
            )));
        }
        if let (Some(s), Some(t)) = (soft, timeout) {
            if s >= t {
                return Err(invalid(format!(
                    "{what}: softTimeout: ({s} s) must be shorter than timeout: ({t} s): the job \
                     gets its TimeoutException first, the kill comes later"
                )));
            }
        }
        Ok(Limits {
            deadline: timeout.map(|t| Deadline {
                timeout: Duration::from_secs_f64(t),
                grace: Duration::from_secs_f64(grace.unwrap_or(DEFAULT_GRACE)),
            }),
            soft_timeout: soft,
        })
    }
}

/// Runs `$job(...$args)` in a forked child and returns its handle. Named arguments `timeout:`,
/// `grace:` and `softTimeout:` set the job's limits.
#[php_function]
#[php(name = "Forklift\\fork")]
pub fn fork(job: &Zval, args: &[&Zval]) -> PhpResult<Process> {
    args::callable(job, "Forklift\\fork(): argument #1 ($job)")?;
    let limits = Limits::from_named(zend::extra_named_args(), "Forklift\\fork()")?;
    let max_frame = max_frame()?;
    wait::reap_detached();
    let job_args: Vec<Zval> = args.iter().map(|z| z.shallow_clone()).collect();
    if hooks::run_prepare().is_err() {
        // The hook's exception is pending and is what the caller sees.
        return Err(PhpException::from(
            "a Forklift\\on_fork() prepare hook threw",
        ));
    }
    match fork_job(max_frame, limits.deadline, Reader::Any).map_err(from_core)? {
        Forked::Child(end) => child::run(end, job, &job_args, max_frame, limits.soft_timeout),
        Forked::Parent(handle) => {
            let process = Process {
                job: Some(handle),
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
    let deadline = args::wait_deadline(timeout, "Forklift\\wait_any(): argument #2 ($timeout)")?;
    if processes.is_empty() {
        return Err(invalid(
            "Forklift\\wait_any(): argument #1 ($processes) is empty; pass at least one Forklift\\Process",
        ));
    }
    wait::reap_detached();
    let mut keys = Vec::new();
    let mut handles: Vec<Zval> = Vec::new();
    let mut seen = Vec::new();
    for (key, value) in processes.iter() {
        let Some(obj) = value
            .object()
            .filter(|_| value.extract::<&Process>().is_some())
        else {
            return Err(invalid(format!(
                "Forklift\\wait_any(): element [{key}] of argument #1 ($processes) must be a \
                 Forklift\\Process, {} given",
                args::describe(value)
            )));
        };
        // The same handle twice would be two mutable borrows of one object: wait on it once.
        let id = obj.handle;
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let mut k = Zval::new();
        match key {
            ArrayKey::Long(n) => k.set_long(n),
            other => k.set_string(&other.to_string(), false)?,
        }
        keys.push(k);
        handles.push(value.shallow_clone());
    }
    let mut procs: Vec<&mut Process> = handles
        .iter_mut()
        .map(|z| <&mut Process>::from_zval_mut(z).expect("checked to be a Process above"))
        .collect();
    let finished = procs.iter().position(|p| p.result.is_some());
    let index = match finished {
        Some(i) => Some(i),
        None => {
            let mut jobs: Vec<&mut Job> = procs
                .iter_mut()
                .map(|p| p.job.as_mut().expect("running"))
                .collect();
            wait_first(&mut jobs, deadline).map_err(from_core)?
        }
    };
    let Some(i) = index else {
        let mut null = Zval::new();
        null.set_null();
        return Ok(null);
    };
    procs[i].settle();
    // The key as the array has it: int keys stay ints.
    Ok(keys.swap_remove(i))
}

/// A job running (or finished) in a child process.
#[php_class]
#[php(name = "Forklift\\Process")]
#[php(flags = ClassFlags::Final)]
pub struct Process {
    /// `None` only once finished and settled into `result`.
    job: Option<Job>,
    result: Option<JobResult>,
}

impl Process {
    /// Turns a finished job into its result (once).
    fn settle(&mut self) {
        if self.result.is_some() {
            return;
        }
        if let Some(report) = self.job.as_mut().and_then(Job::take_report) {
            self.result = Some(JobResult::from_report(report));
            self.job = None;
        }
    }

    fn pid_raw(&self) -> i64 {
        match (&self.job, &self.result) {
            (Some(j), _) => j.pid() as i64,
            (None, Some(r)) => r.pid(),
            (None, None) => 0,
        }
    }
}

#[php_impl]
impl Process {
    /// The child's process id.
    pub fn pid(&self) -> i64 {
        self.pid_raw()
    }

    /// Whether the child still runs. Never blocks; reaps the child once it has exited.
    pub fn is_running(&mut self) -> PhpResult<bool> {
        if self.result.is_some() {
            return Ok(false);
        }
        wait::reap_detached();
        let job = self
            .job
            .as_mut()
            .expect("a process without result has a job");
        job.check_owner().map_err(from_core)?;
        if !job.has_exited() {
            return Ok(true);
        }
        wait::wait_one(job).map_err(from_core)?;
        self.settle();
        Ok(false)
    }

    /// Waits for the job to end and returns its result; later calls return the same result.
    pub fn wait(&mut self) -> PhpResult<JobResult> {
        if let Some(r) = &self.result {
            return Ok(r.share());
        }
        let job = self
            .job
            .as_mut()
            .expect("a process without result has a job");
        wait::wait_one(job).map_err(from_core)?;
        self.settle();
        wait::reap_detached();
        Ok(self.result.as_ref().expect("settled").share())
    }

    /// Sends a signal to the child; false when it has already ended.
    pub fn signal(&mut self, signo: i64) -> PhpResult<bool> {
        let signo = args::signal(signo, "Forklift\\Process::signal()")?;
        match self.job.as_ref() {
            Some(job) => job.signal(signo).map_err(from_core),
            None => Ok(false),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            wait::detach(job);
        }
    }
}
