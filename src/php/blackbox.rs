//! The blackbox: a Zend error observer, registered at MINIT, that records PHP errors.
//!
//! In a job child every error is sent to the parent at once, so the records made before a fatal
//! error, a segfault or a SIGKILL are kept. In any process, `Forklift\Blackbox::capture()` collects
//! the errors raised while a callable runs. The observer sees errors before any `set_error_handler`
//! handler does and whatever that handler decides; it records those that `error_reporting` lets
//! through at that moment (so `@`-silenced ones are not recorded), and fatal ones always.

use std::cell::{Cell, RefCell};

use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;
use ext_php_rs::zend::{ErrorInfo, ErrorObserver};

use crate::core::record;
use crate::core::spawn::ChildEnd;
use crate::core::wire::Message;
use crate::php::args;
use crate::php::records::ErrorRecord;
use crate::php::zend;

/// Frames kept in the trace of a fatal error.
const TRACE_FRAMES: usize = 20;

/// Records a job sends at most; past this, non-fatal errors are only counted (a loop raising a
/// notice a million times must not flood the parent's memory), and a last record says how many.
pub const MAX_RECORDS: u64 = 1000;

/// Levels a `set_error_handler` handler can never take: these always end the script.
const UNHANDLEABLE: i32 =
    record::E_ERROR | record::E_PARSE | record::E_CORE_ERROR | record::E_COMPILE_ERROR;

thread_local! {
    /// Set in a job child: where its records go, and the largest frame the parent accepts.
    static CHANNEL: RefCell<Option<(ChildEnd, usize)>> = const { RefCell::new(None) };
    /// Whether a fatal error was recorded in this job child (tells "Allowed memory size exhausted",
    /// which unwinds like exit(255), from a real exit(255)).
    static FATAL_SEEN: Cell<bool> = const { Cell::new(false) };
    /// Records sent by this job child, and those counted but not sent past [`MAX_RECORDS`].
    static SENT: Cell<u64> = const { Cell::new(0) };
    static UNSENT: Cell<u64> = const { Cell::new(0) };
    /// The fork generation of the job child the channel belongs to (see `is_helper`).
    static JOB_GENERATION: Cell<u64> = const { Cell::new(0) };
    /// While corked, frames are gathered here and sent in one write by `uncork`.
    static CORK: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    /// Open `Blackbox::capture` calls, innermost last.
    static CAPTURES: RefCell<Vec<Vec<record::ErrorRecord>>> = const { RefCell::new(Vec::new()) };
}

/// The observer registered with the engine. Its state lives in the thread-locals above.
pub struct Observer;

impl ErrorObserver for Observer {
    fn should_observe(&self, _: ErrorType) -> bool {
        true
    }

    fn on_error(&self, info: &ErrorInfo) {
        let level = info.error_type.bits() as i32;
        let fatal = level & record::FATAL_LEVELS != 0;
        if !fatal && zend::error_reporting() & level == 0 {
            return;
        }
        let in_child = CHANNEL.with(|c| c.borrow().is_some());
        let capturing = CAPTURES.with(|c| !c.borrow().is_empty());
        if !in_child && !capturing {
            return;
        }
        let trace = if fatal { fatal_trace(info) } else { Vec::new() };

        let rec = record::ErrorRecord {
            level,
            message: info.message.to_string(),
            file: info.filename.unwrap_or("").to_string(),
            line: info.lineno,
            trace,
        };
        if capturing {
            CAPTURES.with(|c| {
                // Nested captures: the error happened while each of them ran.
                for open in c.borrow_mut().iter_mut() {
                    open.push(rec.clone());
                }
            });
        }
        if in_child {
            // An E_USER_ERROR that a handler takes does not end the job; note only the fatal
            // errors that will, to tell "Allowed memory size exhausted" from exit(255) later.
            if level & UNHANDLEABLE != 0 || (fatal && !zend::has_user_error_handler()) {
                FATAL_SEEN.with(|f| f.set(true));
            }
            if !fatal && SENT.with(Cell::get) >= MAX_RECORDS {
                UNSENT.with(|u| u.set(u.get() + 1));
                return;
            }
            SENT.with(|s| s.set(s.get() + 1));
            send(Message::Error(rec));
        }
    }
}

fn fatal_trace(info: &ErrorInfo) -> Vec<String> {
    let frames = info.backtrace().unwrap_or_default();
    frames
        .iter()
        .take(TRACE_FRAMES)
        .enumerate()
        .map(|(i, f)| {
            let func = match (&f.class, &f.function) {
                (Some(c), Some(fun)) => format!("{c}->{fun}()"),
                (None, Some(fun)) => format!("{fun}()"),
                _ => "{main}".into(),
            };
            match &f.file {
                // The innermost frame's line is where the error is, which the engine has not
                // stored in the frame yet.
                Some(file) => {
                    let line = if i == 0 && f.line == 0 {
                        info.lineno
                    } else {
                        f.line
                    };
                    format!("#{i} {func} at {file}:{line}")
                }
                None => format!("#{i} {func} [internal function]"),
            }
        })
        .collect()
}

/// Makes this process a job child whose records go to `end`.
pub fn attach_child(end: ChildEnd, max_frame: usize) {
    CHANNEL.with(|c| *c.borrow_mut() = Some((end, max_frame)));
    JOB_GENERATION.with(|g| g.set(crate::core::sys::fork_generation()));
    FATAL_SEEN.with(|f| f.set(false));
    SENT.with(|s| s.set(0));
    UNSENT.with(|u| u.set(0));
    // Captures open in the parent when it forked are the parent's; the child starts clean.
    CAPTURES.with(|c| c.borrow_mut().clear());
}

/// Sends a message to the parent (in a job child; a no-op elsewhere). Records too long for the
/// frame limit are shrunk, not lost.
pub fn send(msg: Message) {
    if is_helper() {
        return;
    }
    CHANNEL.with(|c| {
        if let Some((end, max_frame)) = c.borrow().as_ref() {
            let mut frame = msg.encode();
            if frame.len() > *max_frame {
                frame = msg.fit(*max_frame).encode();
            }
            let corked = CORK.with(|k| match k.borrow_mut().as_mut() {
                Some(buf) => {
                    buf.extend_from_slice(&frame);
                    true
                }
                None => false,
            });
            if !corked {
                end.send_frame(&frame);
            }
        }
    });
}

/// Whether this process is not the job child itself but a process the job forked behind
/// Forklift's back (`pcntl_fork()`), which inherited its channel: it must never speak on it.
pub fn is_helper() -> bool {
    CHANNEL.with(|c| c.borrow().is_some())
        && JOB_GENERATION.with(Cell::get) != crate::core::sys::fork_generation()
}

/// Gathers the frames sent from now on, to go in one write at `uncork` (a pool task's last
/// messages: its ending, stats and end marker cost one system call, not four).
pub fn cork() {
    CORK.with(|k| *k.borrow_mut() = Some(Vec::new()));
}

/// Sends what was gathered since `cork`.
pub fn uncork() {
    if is_helper() {
        return;
    }
    if let Some(buf) = CORK.with(|k| k.borrow_mut().take()) {
        if !buf.is_empty() {
            CHANNEL.with(|c| {
                if let Some((end, _)) = c.borrow().as_ref() {
                    end.send_frame(&buf);
                }
            });
        }
    }
}

/// In a pool worker, before each task: the record cap and the fatal flag are per task.
pub fn begin_task() {
    FATAL_SEEN.with(|f| f.set(false));
    SENT.with(|s| s.set(0));
    UNSENT.with(|u| u.set(0));
}

/// In a job child at its end: says how many records were counted but not sent, if any.
pub fn report_unsent() {
    let unsent = UNSENT.with(Cell::get);
    if unsent > 0 {
        send(Message::Error(record::ErrorRecord {
            level: record::E_WARNING,
            message: format!(
                "Forklift: {unsent} more errors were raised and not recorded (a job keeps its \
                 first {MAX_RECORDS} records and every fatal one)"
            ),
            ..Default::default()
        }));
    }
}

pub fn fatal_seen() -> bool {
    FATAL_SEEN.with(|f| f.get())
}

/// `Forklift\Blackbox`: error capture without forking.
#[php_class]
#[php(name = "Forklift\\Blackbox")]
#[php(flags = ext_php_rs::flags::ClassFlags::Final)]
pub struct Blackbox;

#[php_impl]
impl Blackbox {
    /// Runs `$fn` and returns the errors (list of `Forklift\ErrorRecord`) it raised. An exception
    /// thrown by `$fn` propagates, as it would without the capture.
    pub fn capture(r#fn: &Zval) -> PhpResult<Vec<ErrorRecord>> {
        let callable = args::callable(r#fn, "Forklift\\Blackbox::capture(): argument #1 ($fn)")?;
        CAPTURES.with(|c| c.borrow_mut().push(Vec::new()));
        let result = callable.try_call(vec![]);
        let records = CAPTURES.with(|c| c.borrow_mut().pop()).unwrap_or_default();
        match result {
            // The exception stays pending and reaches the caller unchanged.
            Err(_) => Ok(Vec::new()),
            Ok(_) => Ok(records
                .into_iter()
                .map(|inner| ErrorRecord { inner })
                .collect()),
        }
    }
}
