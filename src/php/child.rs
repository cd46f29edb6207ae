//! What a job child does, from the fork to `_exit`: run the fork hooks and the job, tell the parent
//! how it went, flush its own output, and leave without running the parent's shutdown functions,
//! destructors or request shutdown (docs/architecture.md, "A job's life").

use ext_php_rs::convert::IntoZvalDyn;
use ext_php_rs::types::Zval;
use ext_php_rs::zend::{try_catch, CatchError, ExecutorGlobals};

use crate::core::outcome::record_names;
use crate::core::record::{Code, ExceptionRecord};
use crate::core::runtime;
use crate::core::spawn::ChildEnd;
use crate::core::sys;
use crate::core::wire::Message;
use crate::php::records::read_exception;
use crate::php::{blackbox, hooks, timeout, values, zend};

/// Exit code of a job child whose job threw or died of a fatal error (as PHP's CLI uses).
const EXIT_FAILURE: i32 = 255;
/// Exit code when Forklift itself failed inside the child (EX_SOFTWARE).
const EXIT_INTERNAL: i32 = 70;

/// How the job's PHP code ended.
pub(crate) enum Ending {
    Returned(Zval),
    Threw,
    Exited(i32),
    Fatal,
    Internal(String),
}

impl Ending {
    /// Whether the process cannot go on after this (a pool worker must leave).
    pub(crate) fn is_final(&self) -> bool {
        matches!(
            self,
            Ending::Exited(_) | Ending::Fatal | Ending::Internal(_)
        )
    }
}

/// The first thing a new child does: forget the parent's jobs, deadlines and output buffers, and
/// send its records to `end`.
pub(crate) fn become_child(end: ChildEnd, max_frame: usize) {
    runtime::reset_in_child();
    timeout::forget_inherited();
    blackbox::attach_child(end, max_frame);
    // Output the parent had buffered is the parent's to print, not ours.
    zend::discard_output();
}

/// Calls `callable(...params)` under zend_try (and the soft timeout, if any): how it ended.
pub(crate) fn call(callable: &Zval, params: &[&Zval], soft_timeout: Option<f64>) -> Ending {
    let run = || {
        let Ok(callable) = ext_php_rs::types::ZendCallable::new(callable) else {
            return Ending::Internal("the callable is no longer callable".into());
        };
        let params: Vec<&dyn IntoZvalDyn> = params.iter().map(|z| *z as &dyn IntoZvalDyn).collect();
        let result = match soft_timeout {
            None => callable.try_call(params),
            Some(seconds) => {
                match timeout::run(seconds, "the job (softTimeout)", || {
                    callable.try_call(params)
                }) {
                    Ok((r, own)) => {
                        if own {
                            // The exception leaving the job is the soft timeout's own: say so,
                            // so that it (and no other TimeoutException) makes it a timeout.
                            blackbox::send(Message::SoftTimeout);
                        }
                        r
                    }
                    Err(e) => return Ending::Internal(format!("{e:?}")),
                }
            }
        };
        match result {
            Ok(v) => Ending::Returned(v),
            Err(_) => classify_failure(),
        }
    };
    match try_catch(std::panic::AssertUnwindSafe(run)) {
        Ok(ending) => ending,
        Err(CatchError::Bailout) => Ending::Fatal,
        Err(e) => Ending::Internal(format!("{e}")),
    }
}

/// Flushes the job's own output buffers, as PHP would at the end of a request. False when an
/// output handler died of a fatal error (reported as such).
pub(crate) fn flush_output() -> bool {
    if try_catch(zend::flush_output).is_err() {
        blackbox::send(Message::Fatal);
        return false;
    }
    true
}

/// Last words of a job (or task): peak memory and when it finished.
pub(crate) fn send_stats() {
    blackbox::send(Message::Stats {
        peak_memory: zend::peak_memory(),
        finished_ns: sys::monotonic_ns(),
    });
}

/// Runs `job(...args)` in the freshly forked child and never returns.
pub fn run(
    end: ChildEnd,
    job: &Zval,
    args: &[Zval],
    max_frame: usize,
    soft_timeout: Option<f64>,
) -> ! {
    become_child(end, max_frame);
    // A fatal error in a hook must not bail out into the parent's request shutdown either.
    let ending = match try_catch(hooks::run_child) {
        Ok(Ok(())) => {
            let params: Vec<&Zval> = args.iter().collect();
            call(job, &params, soft_timeout)
        }
        Ok(Err(())) => classify_failure(),
        Err(CatchError::Bailout) => Ending::Fatal,
        Err(e) => Ending::Internal(format!("{e}")),
    };
    leave_if_helper(&ending);
    let (code, _) = report_guarded(ending, max_frame);
    blackbox::report_unsent();
    // Jobs this job forked and let go of are run to their end, as a request end would.
    crate::php::fork::settle_detached();
    flush_output();
    send_stats();
    leave(code)
}

/// A process the job forked behind Forklift's back (`pcntl_fork()`) that ended (`exit()`) comes
/// back here, through the job's own frames: it is not the job, so it leaves at once, saying
/// nothing on the job's channel and touching nothing of the job's.
pub(crate) fn leave_if_helper(ending: &Ending) {
    if blackbox::is_helper() {
        let code = match ending {
            Ending::Exited(code) => *code,
            Ending::Returned(_) => 0,
            _ => EXIT_FAILURE,
        };
        sys::exit_now(code);
    }
}

/// Ends a job child or worker: what it spawned and left running (also in another session, after
/// a double fork) is killed first, so nothing it started outlives it; then `_exit`.
pub(crate) fn leave(code: i32) -> ! {
    // Jobs it forked and let go of are run to their end first (an accepted job is run).
    crate::php::fork::settle_detached();
    sys::kill_descendants(LEAVE_ROUNDS);
    sys::exit_now(code)
}

/// Walks of the descendant tree at the end of a child (each kills what it finds; a descendant
/// that forks meanwhile is found by the next).
const LEAVE_ROUNDS: usize = 20;

/// After a failed call: an uncaught exception, `exit()`, or a fatal error that unwound like exit.
pub(crate) fn classify_failure() -> Ending {
    if zend::pending_is_exit() {
        let status = zend::exit_status();
        // Drop the unwinding marker so that flushing output afterwards runs normally.
        drop(ExecutorGlobals::take_exception());
        if blackbox::fatal_seen() && status == EXIT_FAILURE {
            Ending::Fatal
        } else {
            Ending::Exited(status)
        }
    } else if ExecutorGlobals::has_exception() {
        Ending::Threw
    } else {
        Ending::Internal("the job failed without an exception".into())
    }
}

/// `report` under zend_try: serializing the value runs PHP code (`__serialize`, `__sleep`) that may
/// die of a fatal error, which must not bail out into the parent's request shutdown.
/// Returns the exit code, and whether it died of a fatal error itself.
pub(crate) fn report_guarded(ending: Ending, max_frame: usize) -> (i32, bool) {
    match try_catch(std::panic::AssertUnwindSafe(|| report(ending, max_frame))) {
        Ok(code) => (code, false),
        Err(_) => {
            blackbox::send(Message::Fatal);
            (EXIT_FAILURE, true)
        }
    }
}

/// Sends the job's ending to the parent; returns the child's exit code.
fn report(ending: Ending, max_frame: usize) -> i32 {
    match ending {
        Ending::Returned(value) => match values::serialize(&value, values::Subject::ReturnValue) {
            Ok((format, bytes)) if bytes.len() <= max_frame => {
                blackbox::send(Message::Value { format, bytes });
                0
            }
            Ok((_, bytes)) => {
                send_channel_failure(
                    format!(
                        "the job's return value is {} bytes serialized, over the limit of {} \
                         bytes (forklift.max_frame_size): return less data, or raise the limit",
                        bytes.len(),
                        max_frame
                    ),
                    None,
                );
                EXIT_FAILURE
            }
            // exit() in __sleep, memory exhausted while serializing: that is how the job ended.
            Err(u) if u.unwinding => report(classify_failure(), max_frame),
            Err(u) => {
                send_channel_failure(u.message, u.previous);
                EXIT_FAILURE
            }
        },
        Ending::Threw => {
            if let Some(ex) = ExecutorGlobals::take_exception() {
                blackbox::send(Message::Exception(read_exception(&ex)));
            }
            EXIT_FAILURE
        }
        Ending::Exited(code) => {
            blackbox::send(Message::Exit(code));
            code
        }
        Ending::Fatal => {
            blackbox::send(Message::Fatal);
            EXIT_FAILURE
        }
        Ending::Internal(why) => {
            blackbox::send(Message::Exception(ExceptionRecord {
                class: "Forklift\\ForkliftException".into(),
                message: format!("internal error in the job child: {why}"),
                code: Code::Int(0),
                ..Default::default()
            }));
            EXIT_INTERNAL
        }
    }
}

pub(crate) fn send_channel_failure(message: String, previous: Option<ExceptionRecord>) {
    blackbox::send(Message::Exception(ExceptionRecord {
        class: record_names().channel.into(),
        message,
        code: Code::Int(0),
        previous: previous.map(Box::new),
        ..Default::default()
    }));
}
