//! PHP code that must run while Forklift blocks: the application's signal handlers (pcntl's
//! async signals), an enclosing `Forklift\timeout()`. The loop's wait ends as soon as the engine
//! has something to run (see `Runtime::turn_unless`); the waiting call then runs it here, at a
//! defined point between turns with no borrow held, never inside Forklift's bookkeeping. If it
//! leaves an exception pending (a handler threw or called `exit()`, a deadline passed), the
//! Forklift call returns it to its caller; the jobs it waited for are untouched and a later call
//! finds them as they are.

use ext_php_rs::exception::PhpException;
use ext_php_rs::prelude::*;
use ext_php_rs::zend::ExecutorGlobals;

use crate::php::zend;

/// The predicate the loop's interruptible wait checks.
pub fn interrupted() -> bool {
    zend::interrupt_pending()
}

/// Runs what is pending; `Err` (with the exception pending) when the call must return now.
pub fn run_pending() -> PhpResult<()> {
    if !zend::interrupt_pending() {
        return Ok(());
    }
    if !zend::run_interrupts() {
        return Err(PhpException::from(
            "the wait was cut short: max_execution_time is over",
        ));
    }
    if ExecutorGlobals::has_exception() {
        // It is pending and is what the caller sees.
        return Err(PhpException::from(
            "a signal handler or deadline interrupted the wait",
        ));
    }
    Ok(())
}
