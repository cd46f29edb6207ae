//! `Forklift\JobResult`: how a job ended, as an immutable value object.

use std::rc::Rc;

use ext_php_rs::boxed::ZBox;
use ext_php_rs::convert::IntoZval;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendHashTable, Zval};

use crate::core::outcome::{Outcome, Report};
use crate::core::sys::signal_name;
use crate::php::exceptions;
use crate::php::records::{ErrorRecord, ExceptionRecord};
use crate::php::values;

#[php_class]
#[php(name = "Forklift\\JobResult")]
#[php(flags = ClassFlags::Final)]
pub struct JobResult {
    report: Rc<Report>,
    value: Rc<Zval>,
    attempts: u32,
}

impl JobResult {
    /// Builds the result of a finished job, unserializing its value in this (the parent) process.
    pub fn from_report(mut report: Report) -> JobResult {
        let mut value = Zval::new();
        value.set_null();
        if let Some((format, bytes)) = report.value.take() {
            match values::unserialize(format, &bytes) {
                Ok(v) => value = v,
                // Unwinding: the parent is ending (exit() in __wakeup, memory exhausted); the
                // engine's marker stays pending and ends it once this call returns.
                Err(why) => report.fail_channel(format!("the job's return value: {why}")),
            }
        }
        JobResult {
            report: Rc::new(report),
            value: Rc::new(value),
            attempts: 1,
        }
    }

    /// For a pool task: how many times it ran (retries after its worker crashed).
    pub fn with_attempts(mut self, attempts: u32) -> JobResult {
        self.attempts = attempts;
        self
    }

    /// Another handle on the same result (a new PHP object, the same data and value).
    pub fn share(&self) -> JobResult {
        JobResult {
            report: Rc::clone(&self.report),
            value: Rc::clone(&self.value),
            attempts: self.attempts,
        }
    }
}

#[php_impl]
impl JobResult {
    /// `"ok"`, `"exception"`, `"fatal"`, `"exit"`, `"signal"`, `"timeout"` or `"oom"`.
    pub fn outcome(&self) -> &'static str {
        self.report.outcome.as_str()
    }
    /// Whether the job returned a value (outcome `"ok"`).
    pub fn ok(&self) -> bool {
        self.report.ok()
    }
    /// The job's return value; null unless the outcome is `"ok"`.
    pub fn value(&self) -> Zval {
        self.value.shallow_clone()
    }
    /// The job's return value, or a `Forklift\JobFailedException` carrying this result.
    pub fn value_or_throw(&self) -> PhpResult<Zval> {
        if self.report.ok() {
            return Ok(self.value.shallow_clone());
        }
        let me = self
            .share()
            .into_zval(false)
            .map_err(|e| PhpException::from(e.to_string()))?;
        Err(exceptions::job_failed(
            format!("job {} failed: {}", self.report.pid, self.report.cause()),
            me,
        ))
    }
    /// Why the job failed, in one line; null when it succeeded.
    pub fn cause(&self) -> Option<String> {
        (!self.report.ok()).then(|| self.report.cause())
    }
    /// The child's exit code; null when a signal ended it, or for a pool task whose worker lived on.
    pub fn exit_code(&self) -> Option<i64> {
        self.report.exit_code.map(i64::from)
    }
    /// The signal that ended the child; null when it exited.
    pub fn signal(&self) -> Option<i64> {
        self.report.signal.map(i64::from)
    }
    /// `"SIGKILL"`, `"SIGSEGV"`, ...; null when it exited.
    pub fn signal_name(&self) -> Option<String> {
        self.report.signal.map(signal_name)
    }
    pub fn core_dumped(&self) -> bool {
        self.report.core_dumped
    }
    /// Wall-clock seconds from fork to the end of the job.
    pub fn duration(&self) -> f64 {
        self.report.duration
    }
    /// CPU seconds (user + system) the child used.
    pub fn cpu_time(&self) -> f64 {
        self.report.cpu_time
    }
    /// The child's `memory_get_peak_usage()`, bytes; null when it died before it could say.
    pub fn peak_memory(&self) -> Option<i64> {
        self.report.peak_memory.map(|m| m as i64)
    }
    /// The child's peak resident set size, bytes.
    pub fn max_rss(&self) -> i64 {
        self.report.max_rss as i64
    }
    /// Every PHP error the job raised, in order (list of `Forklift\ErrorRecord`).
    pub fn errors(&self) -> Vec<ErrorRecord> {
        self.report
            .errors
            .iter()
            .map(|e| ErrorRecord { inner: e.clone() })
            .collect()
    }
    /// The uncaught exception, for outcome `"exception"`.
    pub fn exception(&self) -> Option<ExceptionRecord> {
        self.report
            .exception
            .as_ref()
            .map(|e| ExceptionRecord { inner: e.clone() })
    }
    /// The fatal error that ended the job, for outcome `"fatal"`.
    pub fn fatal_error(&self) -> Option<ErrorRecord> {
        self.report
            .fatal
            .as_ref()
            .map(|e| ErrorRecord { inner: e.clone() })
    }
    /// Whether a deadline ended the job: its `timeout:` (the parent stopped it) or its
    /// `softTimeout:` (a `Forklift\TimeoutException` it did not catch).
    pub fn timed_out(&self) -> bool {
        self.report.timed_out()
    }
    /// How many times the job ran: 1, or more for a pool task retried after its worker crashed.
    pub fn attempts(&self) -> i64 {
        self.attempts as i64
    }
    /// The pid the job ran as.
    pub fn pid(&self) -> i64 {
        self.report.pid as i64
    }
    /// What `var_dump()` and `print_r()` show: every getter's value, under the getter's name.
    #[php(name = "__debugInfo")]
    pub fn debug_info(&self) -> PhpResult<ZBox<ZendHashTable>> {
        let mut out = ZendHashTable::new();
        out.insert("outcome", self.outcome())?;
        out.insert("ok", self.ok())?;
        out.insert("value", self.value())?;
        out.insert("cause", self.cause())?;
        out.insert("exitCode", self.exit_code())?;
        out.insert("signal", self.signal())?;
        out.insert("signalName", self.signal_name())?;
        out.insert("coreDumped", self.core_dumped())?;
        out.insert("timedOut", self.timed_out())?;
        out.insert("duration", self.duration())?;
        out.insert("cpuTime", self.cpu_time())?;
        out.insert("peakMemory", self.peak_memory())?;
        out.insert("maxRss", self.max_rss())?;
        out.insert("errors", self.errors())?;
        out.insert("exception", self.exception())?;
        out.insert("fatalError", self.fatal_error())?;
        out.insert("attempts", self.attempts())?;
        out.insert("pid", self.pid())?;
        Ok(out)
    }
    pub fn __to_string(&self) -> String {
        match self.report.outcome {
            Outcome::Ok => format!("job {} ok in {:.3}s", self.report.pid, self.report.duration),
            _ => format!("job {} failed: {}", self.report.pid, self.report.cause()),
        }
    }
}
