//! The daemon's log: the application's PSR-3 logger when given (Monolog works), else timestamped
//! lines on stderr. Called from the loop between turns, never inside Forklift's bookkeeping; a
//! logger that throws loses that line (to stderr instead), never the daemon.

use ext_php_rs::types::{ZendHashTable, Zval};
use ext_php_rs::zend::ExecutorGlobals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Notice,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }
}

/// A line on stderr: `2026-11-25T19:30:00.123Z shop dispatcher[1234] warning: message`.
pub fn stderr(name: &str, role: &str, level: Level, message: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let pid = std::process::id();
    // One write(2) a line, so that the lines of the supervisor, the dispatchers and the jobs that
    // share the stream never interleave.
    // A message (a job's exception, say) cannot start a line of its own: newlines are escaped.
    let message = message.replace('\n', "\\n").replace('\r', "\\r");
    let line = format!("{now} {name} {role}[{pid}] {}: {message}\n", level.name());
    let _ = crate::core::sys::write_all_fd(2, line.as_bytes());
}

/// Logs through `logger` (a PSR-3 object) or, without one, to stderr.
pub fn log(logger: Option<&Zval>, name: &str, role: &str, level: Level, message: &str) {
    let Some(logger) = logger else {
        stderr(name, role, level, message);
        return;
    };
    let Some(obj) = logger.object() else {
        stderr(name, role, level, message);
        return;
    };
    let context = ZendHashTable::new();
    let mut ctx = Zval::new();
    ctx.set_hashtable(context);
    let called = obj
        .try_call_method(
            "log",
            vec![&level.name().to_string(), &message.to_string(), &ctx],
        )
        .is_ok();
    if crate::php::zend::pending_is_exit() {
        // exit() in the logger: the marker stays pending; the dispatcher ends its loop.
        stderr(name, role, level, message);
        return;
    }
    if ExecutorGlobals::has_exception() || !called {
        drop(ExecutorGlobals::take_exception());
        stderr(name, role, level, message);
        stderr(
            name,
            role,
            Level::Warning,
            "the logger failed; the line above went to stderr",
        );
    }
}
