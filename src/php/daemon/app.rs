//! Calling the application's code from the dispatcher: callbacks and the logger run under
//! zend_try; an exception is logged and cleared (a callback never takes the dispatcher down);
//! `exit()` or a fatal error marks the loop to end at once ([`Abort`]), and the rest of the
//! dispatcher only runs Rust until it has.

use ext_php_rs::types::{ZendCallable, Zval};
use ext_php_rs::zend::{try_catch, ExecutorGlobals};

use super::log::{self, Level};
use super::Daemon;

fn logger(d: &Daemon) -> (Option<Zval>, String) {
    let s = d.inner.borrow();
    (s.logger.as_ref().map(Zval::shallow_clone), s.name.clone())
}

pub(super) fn say(d: &Daemon, level: Level, message: &str) {
    let (logger, name) = logger(d);
    if aborting().is_some() || logger.is_none() {
        log::stderr(&name, "dispatcher", level, message);
        return;
    }
    // The logger is application code: exit() or a fatal error in it ends the loop too.
    if guarded(|| log::log(logger.as_ref(), &name, "dispatcher", level, message)).is_none() {
        log::stderr(&name, "dispatcher", level, message);
    }
}

/// Why the loop must end at once: application code called `exit()` (the unwinding marker is
/// pending and must reach PHP untouched) or died of a fatal error (the engine bailed out; only
/// Rust may run until the bailout is passed on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Abort {
    Exit,
    Fatal,
}

thread_local! {
    static ABORT: std::cell::Cell<Option<Abort>> = const { std::cell::Cell::new(None) };
}

pub(super) fn abort(a: Abort) {
    ABORT.with(|c| {
        if c.get() != Some(Abort::Fatal) {
            c.set(Some(a));
        }
    });
}

/// Takes the reason the loop ended early (once: the next run starts clean).
pub(super) fn take_abort() -> Option<Abort> {
    ABORT.with(|c| c.take())
}

/// Whether the loop must end now (application code exited or died).
pub(super) fn aborting() -> Option<Abort> {
    if crate::php::zend::pending_is_exit() {
        abort(Abort::Exit);
    }
    ABORT.with(|c| c.get())
}

/// Takes the exception application code left, as text for the log; `None` (and the loop is
/// told to end) when it is `exit()`'s unwinding marker, which must stay pending.
pub(super) fn take_error() -> Option<String> {
    if crate::php::zend::pending_is_exit() {
        abort(Abort::Exit);
        return None;
    }
    let ex = ExecutorGlobals::take_exception()?;
    let rec = crate::php::records::read_exception(&ex);
    Some(format!(
        "{}: {} in {}:{}",
        rec.class, rec.message, rec.file, rec.line
    ))
}

/// Runs application code under zend_try: a fatal error in it ends the loop (see [`Abort`]).
pub(super) fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    if aborting().is_some() {
        return None;
    }
    match try_catch(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(_) => {
            abort(Abort::Fatal);
            None
        }
    }
}

/// Calls an application callback; an exception it throws is logged (with where it came from)
/// and cleared: a callback never takes the dispatcher down. Returns the exception's text.
/// `exit()` or a fatal error in it ends the loop instead (see [`Abort`]).
pub(super) fn call_app(
    d: &Daemon,
    f: &Zval,
    params: &[&dyn ext_php_rs::convert::IntoZvalDyn],
    what: &str,
) -> Option<String> {
    let Ok(callable) = ZendCallable::new(f) else {
        return Some("not callable".into());
    };
    let ok = guarded(|| callable.try_call(params.to_vec()).is_ok())?;
    if ok && !ExecutorGlobals::has_exception() {
        return None;
    }
    let message = take_error()?;
    say(d, Level::Error, &format!("{what} threw {message}"));
    Some(message)
}
