//! A job's or pool task's limits (`timeout:`, `grace:`, `softTimeout:`), checked in one place for
//! `Forklift\\fork()` and `Forklift\\Pool`.

use std::time::Duration;

use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;

use crate::core::deadline::Deadline;
use crate::php::args;
use crate::php::exceptions::invalid;

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
        Limits::new(timeout, grace, soft, what)
    }

    /// Checks `timeout`, `grace` and `softTimeout` together, for `fork()` and `Forklift\\Pool`
    /// alike; `what` names the caller in messages.
    pub fn new(
        timeout: Option<f64>,
        grace: Option<f64>,
        soft: Option<f64>,
        what: &str,
    ) -> PhpResult<Limits> {
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
