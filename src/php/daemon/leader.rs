//! One dispatcher across hosts: the daemon's leader lock, an application object implementing
//! `Forklift\Cluster\Lock` (`acquire()`, `held()`, `release()`, `holder()`), asked from the loop
//! at the dispatcher's start and then every `$every` seconds (the plan's
//! [`Target::Leadership`](crate::core::daemon::plan::Target) entry, which fires in standby too).
//! The answer moves the plan between leading and standing by; each change is logged.
//!
//! What it deliberately does not do: decide anything on an error. A lock object that throws, or
//! answers something else than `true`, counts as "not held": two leaders for a moment are worse
//! than none.

use ext_php_rs::types::Zval;

use super::app::{guarded, say, take_error};
use super::log::Level;
use super::Daemon;
use crate::core::daemon::plan::Clock;
use crate::core::daemon::status::{unix, LeaderStatus};

/// The lock and what the dispatcher knows of it.
pub(crate) struct Leader {
    pub(crate) lock: Zval,
    /// Whether this dispatcher holds the lock (as last checked).
    leading: bool,
    /// Checked at least once (the first answer is logged whatever it is).
    checked: bool,
    /// Who holds it, as `holder()` last said ("host:pid"), for status and the log.
    holder: Option<String>,
    /// Since when this dispatcher leads or stands by (Unix time).
    since: f64,
    /// The last error the lock gave, logged once until it changes or the lock answers again.
    error: Option<String>,
}

impl Leader {
    pub(crate) fn new(lock: Zval) -> Leader {
        Leader {
            lock,
            leading: false,
            checked: false,
            holder: None,
            since: 0.0,
            error: None,
        }
    }

    pub(crate) fn status(&self) -> LeaderStatus {
        LeaderStatus {
            state: if self.leading { "leader" } else { "standby" }.into(),
            holder: self.holder.clone(),
            since: self.since,
        }
    }
}

/// Calls `$lock->$method()`: its value, or the exception's text (`exit()` or a fatal error in
/// it: `None`, and the loop ends).
fn call(lock: &Zval, method: &str) -> Option<Result<Zval, String>> {
    let obj = lock.object()?;
    let called = guarded(|| obj.try_call_method(method, vec![]))?;
    if let Some(why) = take_error() {
        return Some(Err(why));
    }
    if crate::php::zend::pending_is_exit() {
        return None;
    }
    Some(called.map_err(|e| format!("{e}")))
}

/// Asks the lock (`acquire()` while standing by, `held()` while leading) and moves the plan.
pub(super) fn check(d: &Daemon) {
    let Some((lock, leading, checked, known, before)) = d.inner.borrow().leader.as_ref().map(|l| {
        (
            l.lock.shallow_clone(),
            l.leading,
            l.checked,
            l.holder.clone(),
            l.error.clone(),
        )
    }) else {
        return;
    };
    let method = if leading { "held" } else { "acquire" };
    let answer = match call(&lock, method) {
        None => return,
        Some(Ok(v)) if v.bool() == Some(true) => Ok(true),
        Some(Ok(v)) if v.bool() == Some(false) => Ok(false),
        Some(Ok(v)) => Err(format!(
            "{method}() returned {}, not a bool",
            crate::php::args::describe(&v)
        )),
        Some(Err(why)) => Err(format!("{method}() threw {why}")),
    };
    let holds = *answer.as_ref().unwrap_or(&false);
    // Who holds it: for status and the log. Not asked when the lock just failed.
    let holder = match (&answer, call(&lock, "holder")) {
        (Err(_), _) | (_, None) => None,
        (_, Some(Ok(v))) => v.str().map(str::to_string),
        (_, Some(Err(_))) => None,
    };
    if let Err(why) = &answer {
        if before.as_deref() != Some(why) {
            say(
                d,
                Level::Error,
                &format!(
                    "leader lock: {why}; taken as not held (standby until it answers true; said \
                     once until the error changes)"
                ),
            );
        }
    }
    let now = Clock::now();
    {
        let mut s = d.inner.borrow_mut();
        let s = &mut *s;
        if let Some(l) = s.leader.as_mut() {
            l.error = answer.as_ref().err().cloned();
            l.holder = holder.clone();
            l.checked = true;
            if holds != l.leading || !checked {
                l.leading = holds;
                l.since = unix(now.wall);
            }
        }
        if holds {
            s.plan.lead(now);
        } else {
            s.plan.stand_by();
        }
    }
    let by = holder.as_deref().unwrap_or("nobody known");
    match (checked, leading, holds) {
        (_, false, true) => say(
            d,
            Level::Info,
            &format!("leader: took the lock ({by}); the schedule runs here"),
        ),
        (_, true, false) => say(
            d,
            Level::Warning,
            &format!("standby: lost the lock (held by {by}); the schedule runs there"),
        ),
        (false, _, false) => say(
            d,
            Level::Info,
            &format!("standby: lock held by {by}; the schedule runs there"),
        ),
        (true, false, false) if answer.is_ok() && holder.is_some() && holder != known => {
            say(d, Level::Info, &format!("standby: lock held by {by} now"))
        }
        _ => {}
    }
}

/// Gives the lock back (the stop, a reload's handover): a standby takes over at its next check,
/// not after a timeout. An exception is logged; the lock then ends with the connection.
pub(super) fn release(d: &Daemon, why: &str) {
    let lock = {
        let mut s = d.inner.borrow_mut();
        let Some(l) = s.leader.as_mut() else { return };
        if !l.leading {
            return;
        }
        l.leading = false;
        l.holder = None;
        l.since = unix(Clock::now().wall);
        l.lock.shallow_clone()
    };
    d.inner.borrow_mut().plan.stand_by();
    match call(&lock, "release") {
        None => {}
        Some(Ok(_)) => say(
            d,
            Level::Info,
            &format!("leader: released the lock ({why})"),
        ),
        Some(Err(e)) => say(
            d,
            Level::Error,
            &format!("leader lock: release() threw {e} ({why})"),
        ),
    }
}
