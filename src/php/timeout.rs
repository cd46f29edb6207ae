//! In-process timeouts: `Forklift\timeout()` and a job's `softTimeout:`.
//!
//! A POSIX timer raises SIGRTMIN+7 at the earliest open deadline; the handler only sets two flags,
//! one of them the engine's `vm_interrupt`. At the next safe point the engine calls
//! `zend_interrupt_function`, where Forklift (after whatever hook was there before, e.g. pcntl's
//! async signals) throws `Forklift\TimeoutException` for the outermost scope whose deadline has
//! passed. The handler is installed without SA_RESTART, so `sleep()`/`usleep()` return early.
//! While an expired scope is still open (its code caught the exception and went on), the
//! exception is thrown again every [`REFIRE`]: an outer deadline holds whatever inner code does.
//! The timer and the signal handler exist only while at least one scope is open.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ext_php_rs::exception::PhpException;
use ext_php_rs::ffi;
use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;

use crate::core::timer::SignalTimer;
use crate::php::exceptions::{from_core, timeout_ce};
use crate::php::{args, zend};

/// Adds `Forklift\timeout` to the extension.
pub fn register(module: ModuleBuilder) -> ModuleBuilder {
    module.function(wrap_function!(timeout))
}

/// Runs `$fn` and returns what it returns; throws `Forklift\TimeoutException` inside it once
/// `$seconds` have passed.
#[php_function]
#[php(name = "Forklift\\timeout")]
pub fn timeout(seconds: f64, r#fn: &Zval) -> PhpResult<Zval> {
    let seconds = args::positive_seconds(seconds, "Forklift\\timeout(): argument #1 ($seconds)")?;
    let callable = args::callable(r#fn, "Forklift\\timeout(): argument #2 ($fn)")?;
    match run(seconds, "Forklift\\timeout(): the callable", || {
        callable.try_call(vec![])
    })?
    .0
    {
        Ok(value) => Ok(value),
        // The callable's exception (a TimeoutException or its own) is pending and wins.
        Err(_) => Err(PhpException::from("the callable threw")),
    }
}

/// How soon an expired scope that is still open throws again.
const REFIRE: Duration = Duration::from_millis(10);

struct Scope {
    deadline: Instant,
    seconds: f64,
    what: &'static str,
    fired: bool,
    /// The object handle of the last TimeoutException thrown for this scope.
    thrown: Option<u32>,
}

thread_local! {
    static SCOPES: RefCell<Vec<Scope>> = const { RefCell::new(Vec::new()) };
    static TIMER: RefCell<Option<SignalTimer>> = const { RefCell::new(None) };
}

/// Set by the signal handler, taken by the interrupt hook.
static FIRED: AtomicBool = AtomicBool::new(false);

/// The signal the in-process timer raises.
pub fn timer_signal() -> i32 {
    libc::SIGRTMIN() + 7
}

extern "C" fn on_timer_signal(_: libc::c_int) {
    FIRED.store(true, Ordering::SeqCst);
    // SAFETY: EG(vm_interrupt) is a bool the engine reads as an atomic; storing through an
    // AtomicBool is async-signal-safe and is what PHP's own timeout signal handler does.
    unsafe {
        let eg = ffi::ext_php_rs_executor_globals();
        AtomicBool::from_ptr(std::ptr::addr_of_mut!((*eg).vm_interrupt.value))
            .store(true, Ordering::SeqCst);
    }
}

static mut PREVIOUS_HOOK: Option<unsafe extern "C" fn(*mut ffi::zend_execute_data)> = None;

/// Chains Forklift's interrupt hook in front of the engine's (MINIT).
pub fn install_interrupt_hook() {
    // SAFETY: MINIT runs once, on the main thread, before any PHP code; the globals are the
    // engine's documented extension points.
    unsafe {
        PREVIOUS_HOOK = ffi::zend_interrupt_function;
        ffi::zend_interrupt_function = Some(interrupt);
    }
}

/// Set while Forklift runs PHP code as part of its own bookkeeping (unserializing a result): the
/// interrupt hooks (pcntl's handlers, the in-process timeout) are held back until it is done, so
/// that a handler's exception or a deadline never lands inside it and changes a result.
static DEFER: AtomicBool = AtomicBool::new(false);
/// An interrupt came while deferred: raise it again once the bookkeeping is done.
static DEFERRED: AtomicBool = AtomicBool::new(false);
/// How many scopes were open when interrupts were held back: those wait, newer ones do not.
static DEFER_FLOOR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f` (Forklift's own use of PHP code) with interrupts held back; they run at the next
/// safe point after it (or at the waiting call's next check).
pub fn deferring_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let outer = DEFER.swap(true, Ordering::SeqCst);
    if !outer {
        DEFER_FLOOR.store(SCOPES.with(|s| s.borrow().len()), Ordering::SeqCst);
    }
    let result = ext_php_rs::zend::try_catch(std::panic::AssertUnwindSafe(f));
    if !outer {
        DEFER.store(false, Ordering::SeqCst);
        if DEFERRED.swap(false, Ordering::SeqCst) {
            // Whatever was held back (a deadline, a signal handler) runs at the next safe point.
            FIRED.store(true, Ordering::SeqCst);
            // SAFETY: as in on_timer_signal: the engine reads this flag as an atomic.
            unsafe {
                let eg = ffi::ext_php_rs_executor_globals();
                AtomicBool::from_ptr(std::ptr::addr_of_mut!((*eg).vm_interrupt.value))
                    .store(true, Ordering::SeqCst);
            }
        }
    }
    match result {
        Ok(r) => r,
        // SAFETY: re-raising the bailout we caught, to the engine's own catch point.
        Err(ext_php_rs::zend::CatchError::Bailout) => unsafe { ext_php_rs::zend::bailout() },
        Err(e) => panic!("{e}"),
    }
}

unsafe extern "C" fn interrupt(execute_data: *mut ffi::zend_execute_data) {
    if DEFER.load(Ordering::SeqCst) {
        // The application's handlers wait; only deadlines of scopes opened since may act.
        DEFERRED.store(true, Ordering::SeqCst);
    } else if let Some(previous) = unsafe { PREVIOUS_HOOK } {
        // SAFETY: set once at MINIT; calling the hook that was there before, as the engine would.
        unsafe { previous(execute_data) };
    }
    if FIRED.swap(false, Ordering::SeqCst) {
        ext_php_rs::zend::run_handler(std::panic::AssertUnwindSafe(on_deadline));
    }
}

/// At a safe point after the timer fired: throw for the outermost expired scope, re-arm.
fn on_deadline() {
    let now = Instant::now();
    // While Forklift holds interrupts back, scopes opened before it did wait; scopes opened
    // inside (a timeout() in a result's __wakeup) keep their deadlines.
    let floor = if DEFER.load(Ordering::SeqCst) {
        DEFER_FLOOR.load(Ordering::SeqCst)
    } else {
        0
    };
    let mut held_back = false;
    let expired = SCOPES.with(|s| {
        let mut s = s.borrow_mut();
        for x in s.iter_mut().take(floor).filter(|x| x.deadline <= now) {
            // Held back: it throws once the bookkeeping is done; meanwhile the timer only
            // comes back every REFIRE, not at once over and over.
            x.fired = true;
            held_back = true;
        }
        s.iter_mut()
            .enumerate()
            .find(|(i, x)| *i >= floor && x.deadline <= now)
            .map(|(i, x)| {
                x.fired = true;
                (
                    i,
                    format!("{} ran past its deadline of {} s", x.what, x.seconds),
                )
            })
    });
    if held_back {
        DEFERRED.store(true, Ordering::SeqCst);
    }
    if let Some((index, message)) = expired {
        if !ext_php_rs::zend::ExecutorGlobals::has_exception() {
            let _ = ext_php_rs::exception::throw(timeout_ce(), &message);
            let handle = pending_exception_handle();
            SCOPES.with(|s| {
                if let Some(scope) = s.borrow_mut().get_mut(index) {
                    scope.thrown = handle;
                }
            });
        }
    }
    rearm();
}

/// The object handle of the pending exception, if any.
fn pending_exception_handle() -> Option<u32> {
    // SAFETY: main-thread read of EG(exception), a pointer to a live object or null.
    unsafe {
        let ex = (*ffi::ext_php_rs_executor_globals()).exception;
        (!ex.is_null()).then(|| (*ex).handle)
    }
}

/// Arms the timer for the next thing to do: the earliest unexpired deadline, or a re-fire for a
/// scope that expired and is still open.
fn rearm() {
    let next = SCOPES.with(|s| {
        s.borrow()
            .iter()
            .map(|x| {
                if x.fired {
                    Instant::now() + REFIRE
                } else {
                    x.deadline
                }
            })
            .min()
    });
    if let Some(at) = next {
        TIMER.with(|t| {
            if let Some(timer) = t.borrow().as_ref() {
                let _ = timer.arm_at(at);
            }
        });
    }
}

/// Runs `f` under a deadline of `seconds`; `what` names it in the exception's message. The
/// exception, if any, is left pending for the caller; `f`'s result is returned either way, with
/// whether the exception pending now is this scope's own TimeoutException.
pub fn run<R>(
    seconds: f64,
    what: &'static str,
    f: impl FnOnce() -> R,
) -> Result<(R, bool), PhpException> {
    let deadline = Instant::now()
        .checked_add(Duration::from_secs_f64(seconds))
        .ok_or_else(|| PhpException::from("deadline out of range"))?;
    let first = SCOPES.with(|s| s.borrow().is_empty());
    if first {
        let timer = SignalTimer::new(timer_signal(), on_timer_signal).map_err(from_core)?;
        TIMER.with(|t| *t.borrow_mut() = Some(timer));
    }
    SCOPES.with(|s| {
        s.borrow_mut().push(Scope {
            deadline,
            seconds,
            what,
            fired: false,
            thrown: None,
        })
    });
    rearm();
    let socket_timeout = SocketTimeout::at_most(seconds);
    // A fatal error inside `f` bails out past us: close the scope first, then let it go on, so
    // that no deadline fires in shutdown functions.
    let result = ext_php_rs::zend::try_catch(std::panic::AssertUnwindSafe(f));
    socket_timeout.restore();
    let scope = SCOPES.with(|s| s.borrow_mut().pop());
    let own = scope
        .and_then(|x| x.thrown)
        .is_some_and(|h| pending_exception_handle() == Some(h));
    if SCOPES.with(|s| s.borrow().is_empty()) {
        // No scope left: no timer, no handler, no stale flag.
        TIMER.with(|t| t.borrow_mut().take());
        FIRED.store(false, Ordering::SeqCst);
    } else {
        rearm();
    }
    match result {
        Ok(r) => Ok((r, own)),
        // SAFETY: re-raising the bailout we caught, to the engine's own catch point.
        Err(ext_php_rs::zend::CatchError::Bailout) => unsafe { ext_php_rs::zend::bailout() },
        Err(e) => Err(PhpException::from(format!(
            "internal error in Forklift\\timeout(): {e}"
        ))),
    }
}

/// PHP retries a socket stream's poll(2) when a signal interrupts it, for the stream's whole
/// timeout, so the timer cannot cut a blocking socket read or write short. What Forklift can do:
/// streams opened inside a `timeout()` get a timeout of at most the scope's, rounded up to a whole
/// second (`default_socket_timeout` counts whole seconds), so such a read returns soon after the
/// deadline and the `TimeoutException` follows at once.
struct SocketTimeout {
    /// The setting to put back, when this scope lowered it.
    previous: Option<String>,
}

impl SocketTimeout {
    fn at_most(seconds: f64) -> SocketTimeout {
        const NAME: &str = "default_socket_timeout";
        let current = zend::ini_long(c"default_socket_timeout");
        let wanted = (seconds.ceil() as i64).max(1);
        let mut previous = None;
        if current <= 0 || current > wanted {
            let old = zend::ini_string(NAME).unwrap_or_else(|| current.to_string());
            if zend::set_ini(NAME, &wanted.to_string()) {
                previous = Some(old);
            }
        }
        SocketTimeout { previous }
    }

    fn restore(self) {
        if let Some(previous) = self.previous {
            zend::set_ini("default_socket_timeout", &previous);
        }
    }
}

/// At the end of a request: scopes a fatal error left open are closed, their timer deleted, so
/// that no deadline fires in shutdown code or the next request.
pub fn close_all() {
    SCOPES.with(|s| s.borrow_mut().clear());
    TIMER.with(|t| t.borrow_mut().take());
    FIRED.store(false, Ordering::SeqCst);
}

/// In a new job child: the parent's scopes are not ours (and fork did not copy its timer).
pub fn forget_inherited() {
    SCOPES.with(|s| s.borrow_mut().clear());
    if let Some(timer) = TIMER.with(|t| t.borrow_mut().take()) {
        timer.forget_in_child();
    }
    FIRED.store(false, Ordering::SeqCst);
}
