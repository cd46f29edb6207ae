//! What a job child does, from the fork to `_exit`: run the fork hooks and the job, tell the parent
//! how it went, flush its own output, and leave without running the parent's shutdown functions,
//! destructors or request shutdown (DESIGN.md §3).

use ext_php_rs::convert::IntoZvalDyn;
use ext_php_rs::types::Zval;
use ext_php_rs::zend::{try_catch, CatchError, ExecutorGlobals};

use crate::core::ipc::Message;
use crate::core::outcome::CHANNEL_EXCEPTION;
use crate::core::process::ChildEnd;
use crate::core::record::{Code, ExceptionRecord};
use crate::core::{sys, wait};
use crate::php::records::read_exception;
use crate::php::{blackbox, hooks, timeout, values, zend};

/// Exit code of a job child whose job threw or died of a fatal error (as PHP's CLI uses).
const EXIT_FAILURE: i32 = 255;
/// Exit code when Forklift itself failed inside the child (EX_SOFTWARE).
const EXIT_INTERNAL: i32 = 70;

/// How the job's PHP code ended.
enum Ending {
    Returned(Zval),
    Threw,
    Exited(i32),
    Fatal,
    Internal(String),
}

/// Runs `job(...args)` in the freshly forked child and never returns.
pub fn run(
    end: ChildEnd,
    job: &Zval,
    args: &[Zval],
    max_frame: usize,
    soft_timeout: Option<f64>,
) -> ! {
    wait::forget_inherited();
    timeout::forget_inherited();
    blackbox::attach_child(end, max_frame);
    // Output the parent had buffered is the parent's to print, not ours.
    zend::discard_output();

    let ending = match try_catch(std::panic::AssertUnwindSafe(|| {
        call_job(job, args, soft_timeout)
    })) {
        Ok(ending) => ending,
        Err(CatchError::Bailout) => Ending::Fatal,
        Err(e) => Ending::Internal(format!("{e}")),
    };
    let code = report(ending, max_frame);
    blackbox::report_unsent();

    // Jobs this job forked and let go of are run to their end, as a request end would.
    wait::settle_detached();
    // The job's own output buffers, as PHP would flush them at the end of a request.
    if try_catch(zend::flush_output).is_err() {
        blackbox::send(Message::Fatal);
    }
    blackbox::send(Message::Stats {
        peak_memory: zend::peak_memory(),
        finished_ns: sys::monotonic_ns(),
    });
    sys::exit_now(code)
}

fn call_job(job: &Zval, args: &[Zval], soft_timeout: Option<f64>) -> Ending {
    if hooks::run_child().is_err() {
        return classify_failure();
    }
    let Ok(callable) = ext_php_rs::types::ZendCallable::new(job) else {
        return Ending::Internal("the job is no longer callable".into());
    };
    let params: Vec<&dyn IntoZvalDyn> = args.iter().map(|z| z as &dyn IntoZvalDyn).collect();
    let result = match soft_timeout {
        None => callable.try_call(params),
        Some(seconds) => match timeout::run(seconds, "the job (softTimeout)", || {
            callable.try_call(params)
        }) {
            Ok(r) => r,
            Err(e) => return Ending::Internal(format!("{e:?}")),
        },
    };
    match result {
        Ok(v) => Ending::Returned(v),
        Err(_) => classify_failure(),
    }
}

/// After a failed call: an uncaught exception, `exit()`, or a fatal error that unwound like exit.
fn classify_failure() -> Ending {
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

/// Sends the job's ending to the parent; returns the child's exit code.
fn report(ending: Ending, max_frame: usize) -> i32 {
    match ending {
        Ending::Returned(value) => match values::serialize(&value) {
            Ok((format, bytes)) if Message::value_frame_len(bytes.len()) <= max_frame => {
                blackbox::send(Message::Value { format, bytes });
                0
            }
            Ok((_, bytes)) => {
                send_channel_failure(
                    format!(
                        "the job's return value is {} bytes serialized, which makes a frame of {} \
                         bytes, over the limit of {} bytes (forklift.max_frame_size): return less \
                         data, or raise the limit",
                        bytes.len(),
                        Message::value_frame_len(bytes.len()),
                        max_frame
                    ),
                    None,
                );
                EXIT_FAILURE
            }
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

fn send_channel_failure(message: String, previous: Option<ExceptionRecord>) {
    blackbox::send(Message::Exception(ExceptionRecord {
        class: CHANNEL_EXCEPTION.into(),
        message,
        code: Code::Int(0),
        previous: previous.map(Box::new),
        ..Default::default()
    }));
}
