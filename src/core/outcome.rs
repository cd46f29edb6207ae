//! How a job ended, decided from what the child said and how the kernel says it exited.
//!
//! The rules, first match wins:
//! 1. killed by a signal → `Signal` (whatever it said before, which is kept);
//! 2. it reported a fatal error → `Fatal`, the cause being the last fatal error record;
//! 3. it called `exit()` → `Exit` with that code;
//! 4. it threw → `Exception`;
//! 5. its channel broke (garbage, truncated, oversized frame) → `Exception` (a channel record, see [`RecordNames`]);
//! 6. it sent a value and exited 0 → `Ok`;
//! 7. anything else (it left without a word) → `Exit` with its exit code.
//!
//! Over all of these: a job the parent had to stop at its deadline, or whose in-process timeout
//! threw its timeout exception and did not catch it, is `Timeout` (see [`Report::time_out`]).

use crate::core::deadline::Stop;
use crate::core::error::Error;
use crate::core::record::{Code, ErrorRecord, ExceptionRecord};
use crate::core::sys::ExitStatus;
use crate::core::wire::Message;

/// How PHP's fatal error for memory exhaustion begins.
const OOM_MESSAGE: &str = "Allowed memory size of ";

/// The class names of the records that are Forklift's own: a broken channel, a task the pool failed
/// before it ran, and the in-process timeout's exception (which makes an outcome `Timeout`). The
/// binding layer sets the PHP class names once at startup ([`name_records`]); the core only needs
/// them to be distinct, and uses neutral names until then (in `cargo test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordNames {
    pub channel: &'static str,
    pub pool: &'static str,
    pub timeout: &'static str,
}

static NAMES: std::sync::OnceLock<RecordNames> = std::sync::OnceLock::new();

/// Sets the class names of Forklift's own records (once; later calls change nothing).
pub fn name_records(names: RecordNames) {
    let _ = NAMES.set(names);
}

pub fn record_names() -> RecordNames {
    *NAMES.get_or_init(|| RecordNames {
        channel: "ChannelError",
        pool: "PoolStopped",
        timeout: "Timeout",
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Exception,
    Fatal,
    Exit,
    Signal,
    Timeout,
    /// A fatal "Allowed memory size exhausted": the job went over its memory limit.
    Oom,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Exception => "exception",
            Outcome::Fatal => "fatal",
            Outcome::Exit => "exit",
            Outcome::Signal => "signal",
            Outcome::Timeout => "timeout",
            Outcome::Oom => "oom",
        }
    }
}

/// Everything known about a finished job.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub pid: i32,
    pub outcome: Outcome,
    /// Serialized return value and its format byte, for `Ok`.
    pub value: Option<(u8, Vec<u8>)>,
    pub exception: Option<ExceptionRecord>,
    /// Every error record, in the order raised.
    pub errors: Vec<ErrorRecord>,
    /// The fatal error that ended the job, for `Fatal`.
    pub fatal: Option<ErrorRecord>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
    /// Wall-clock seconds from fork to the end of the job.
    pub duration: f64,
    /// CPU seconds (user + system).
    pub cpu_time: f64,
    /// The child's `memory_get_peak_usage()`, when it could tell.
    pub peak_memory: Option<u64>,
    /// Peak resident set size, bytes (from `wait4`).
    pub max_rss: u64,
    /// For `Timeout` ended at its wall-clock deadline: the deadline in seconds, and how it was
    /// stopped.
    pub deadline: Option<(f64, Stop)>,
}

impl Report {
    /// `started_ns`/`observed_ns`: monotonic times of the fork and of the parent seeing the exit.
    pub fn decide(
        pid: i32,
        messages: Vec<Message>,
        channel_error: Option<&Error>,
        status: ExitStatus,
        started_ns: u64,
        observed_ns: u64,
    ) -> Report {
        let mut errors = Vec::new();
        let mut value = None;
        let mut exception = None;
        let mut exit_call = None;
        let mut fatal_seen = false;
        let mut stats = None;
        let mut soft_timeout = false;
        for m in messages {
            match m {
                Message::Error(r) => errors.push(r),
                Message::Value { format, bytes } => value = Some((format, bytes)),
                Message::Exception(e) => exception = Some(e),
                Message::Exit(code) => exit_call = Some(code),
                Message::Fatal => fatal_seen = true,
                Message::SoftTimeout => soft_timeout = true,
                Message::Stats {
                    peak_memory,
                    finished_ns,
                } => stats = Some((peak_memory, finished_ns)),
                // Pool bookkeeping: tasks are cut out of the stream before it gets here.
                Message::Task { .. } | Message::Stop | Message::Ready | Message::TaskEnd { .. } => {
                }
            }
        }
        let fatal = fatal_seen.then(|| {
            errors
                .iter()
                .rev()
                .find(|e| e.is_fatal())
                .or(errors.last())
                .cloned()
                .unwrap_or_else(|| ErrorRecord {
                    message: "fatal error (no record of it arrived)".into(),
                    ..Default::default()
                })
        });
        let outcome = if status.signal.is_some() {
            Outcome::Signal
        } else if fatal
            .as_ref()
            .is_some_and(|f| f.message.starts_with(OOM_MESSAGE))
        {
            Outcome::Oom
        } else if fatal.is_some() {
            Outcome::Fatal
        } else if exit_call.is_some() {
            Outcome::Exit
        } else if exception.is_some() {
            Outcome::Exception
        } else if let Some(err) = channel_error {
            exception = Some(ExceptionRecord {
                class: record_names().channel.into(),
                message: err.to_string(),
                code: Code::Int(0),
                ..Default::default()
            });
            Outcome::Exception
        } else if value.is_some() && status.code == Some(0) {
            Outcome::Ok
        } else {
            Outcome::Exit
        };
        if outcome != Outcome::Ok {
            value = None;
        }
        let finished_ns = stats
            .map(|s| s.1)
            .filter(|&f| f >= started_ns)
            .unwrap_or(observed_ns);
        Report {
            pid,
            outcome,
            value,
            exception: if outcome == Outcome::Exception {
                exception
            } else {
                None
            },
            errors,
            fatal: if matches!(outcome, Outcome::Fatal | Outcome::Oom) {
                fatal
            } else {
                None
            },
            exit_code: status.code,
            signal: status.signal,
            core_dumped: status.core_dumped,
            duration: finished_ns.saturating_sub(started_ns) as f64 / 1e9,
            cpu_time: status.cpu.as_secs_f64(),
            peak_memory: stats.map(|s| s.0),
            max_rss: status.max_rss,
            deadline: None,
        }
        .soft_timeout_is_a_timeout(soft_timeout)
    }

    /// The job's own soft timeout, uncaught, is a timeout (any other TimeoutException is an
    /// exception like any other).
    fn soft_timeout_is_a_timeout(mut self, marked: bool) -> Report {
        if marked
            && self.outcome == Outcome::Exception
            && self
                .exception
                .as_ref()
                .is_some_and(|e| e.class == record_names().timeout)
        {
            self.outcome = Outcome::Timeout;
        }
        self
    }

    /// The job was stopped at its deadline of `seconds`, as `how` says. Whatever it was doing,
    /// its outcome is `Timeout`; its records are kept.
    pub fn time_out(&mut self, seconds: f64, how: Stop) {
        self.outcome = Outcome::Timeout;
        self.value = None;
        self.fatal = None;
        self.deadline = Some((seconds, how));
    }

    pub fn timed_out(&self) -> bool {
        self.outcome == Outcome::Timeout
    }

    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// The parent could not take the value the child sent (it did not unserialize): the job failed
    /// with a channel record saying why.
    pub fn fail_channel(&mut self, message: String) {
        self.outcome = Outcome::Exception;
        self.value = None;
        self.exception = Some(ExceptionRecord {
            class: record_names().channel.into(),
            message,
            code: Code::Int(0),
            ..Default::default()
        });
    }

    /// One line saying why the job did not succeed (for exception messages and logs).
    pub fn cause(&self) -> String {
        match self.outcome {
            Outcome::Ok => "the job succeeded".into(),
            Outcome::Signal => {
                let sig = self.signal.unwrap_or(0);
                format!(
                    "killed by signal {} ({}){}",
                    sig,
                    crate::core::sys::signal_name(sig),
                    if self.core_dumped {
                        ", core dumped"
                    } else {
                        ""
                    }
                )
            }
            Outcome::Fatal => {
                let f = self.fatal.as_ref().expect("fatal outcome has a record");
                format!("fatal error: {} in {}:{}", f.message, f.file, f.line)
            }
            Outcome::Exit => format!("exited with code {}", self.exit_code.unwrap_or(-1)),
            Outcome::Exception => {
                let e = self
                    .exception
                    .as_ref()
                    .expect("exception outcome has a record");
                if e.class == record_names().pool {
                    format!("not run: {}", e.message)
                } else {
                    format!("uncaught {}", e.summary())
                }
            }
            Outcome::Oom => {
                let f = self.fatal.as_ref().expect("oom outcome has a record");
                let limit = f.message[OOM_MESSAGE.len()..]
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .map(|b| format!(" of {} MB", b / (1 << 20)))
                    .unwrap_or_default();
                format!(
                    "out of memory: exceeded the memory limit{limit} ({} in {}:{})",
                    f.message, f.file, f.line
                )
            }
            Outcome::Timeout => match (self.deadline, &self.exception) {
                (Some((seconds, how)), _) => match how {
                    Stop::Term => format!("timed out after {seconds} s: stopped with SIGTERM"),
                    Stop::TermThenKill => {
                        format!("timed out after {seconds} s: stopped with SIGTERM, then SIGKILL")
                    }
                    Stop::OwnTimer => format!(
                        "timed out after {seconds} s: killed (SIGKILL) by its own timer at timeout + \
                         grace, as its parent was busy and did not stop it"
                    ),
                },
                (None, Some(e)) => format!("timed out: {}", e.summary()),
                (None, None) => "timed out".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{E_ERROR, E_WARNING};
    use std::time::Duration;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus {
            code: Some(code),
            signal: None,
            core_dumped: false,
            cpu: Duration::ZERO,
            max_rss: 0,
        }
    }
    fn killed(sig: i32) -> ExitStatus {
        ExitStatus {
            code: None,
            signal: Some(sig),
            core_dumped: false,
            cpu: Duration::ZERO,
            max_rss: 0,
        }
    }
    fn warning() -> Message {
        Message::Error(ErrorRecord {
            level: E_WARNING,
            message: "careful".into(),
            ..Default::default()
        })
    }
    fn value() -> Message {
        Message::Value {
            format: 0,
            bytes: b"i:1;".to_vec(),
        }
    }

    #[test]
    fn value_and_clean_exit_is_ok_with_errors_kept() {
        let r = Report::decide(1, vec![warning(), value()], None, exited(0), 0, 10);
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.errors.len(), 1);
        assert!(r.value.is_some());
    }

    #[test]
    fn signal_wins_over_everything_said_before() {
        let r = Report::decide(
            1,
            vec![warning(), value(), Message::Fatal],
            None,
            killed(9),
            0,
            10,
        );
        assert_eq!(r.outcome, Outcome::Signal);
        assert!(r.value.is_none());
        assert_eq!(r.errors.len(), 1, "records before the kill are kept");
        assert_eq!(r.cause(), "killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn fatal_names_the_last_fatal_record_not_a_later_warning() {
        let fatal = Message::Error(ErrorRecord {
            level: E_ERROR,
            message: "Allowed memory size of 1 bytes exhausted".into(),
            file: "/j.php".into(),
            line: 4,
            trace: vec![],
        });
        let r = Report::decide(
            1,
            vec![fatal, warning(), Message::Fatal],
            None,
            exited(255),
            0,
            10,
        );
        assert_eq!(r.outcome, Outcome::Oom);
        assert!(
            r.cause()
                .starts_with("out of memory: exceeded the memory limit of 0 MB"),
            "{}",
            r.cause()
        );
        let plain = Message::Error(ErrorRecord {
            level: E_ERROR,
            message: "Call to undefined".into(),
            ..Default::default()
        });
        let r = Report::decide(1, vec![plain, Message::Fatal], None, exited(255), 0, 10);
        assert_eq!(r.outcome, Outcome::Fatal);
    }

    #[test]
    fn explicit_exit_is_an_exit_with_its_code() {
        let r = Report::decide(1, vec![Message::Exit(3)], None, exited(3), 0, 10);
        assert_eq!(r.outcome, Outcome::Exit);
        assert_eq!(r.exit_code, Some(3));
    }

    #[test]
    fn a_deadline_the_parent_enforced_wins_over_the_signal_it_sent() {
        let mut r = Report::decide(1, vec![warning()], None, killed(15), 0, 10);
        r.time_out(2.5, Stop::Term);
        assert_eq!(r.outcome, Outcome::Timeout);
        assert!(r.timed_out());
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.cause(), "timed out after 2.5 s: stopped with SIGTERM");
    }

    #[test]
    fn the_jobs_own_soft_timeout_uncaught_is_a_timeout_and_any_other_is_an_exception() {
        let e = ExceptionRecord {
            class: record_names().timeout.into(),
            message: "late".into(),
            ..Default::default()
        };
        let own = vec![Message::SoftTimeout, Message::Exception(e.clone())];
        let r = Report::decide(1, own, None, exited(255), 0, 10);
        assert_eq!(r.outcome, Outcome::Timeout);
        assert_eq!(r.exception.as_ref().unwrap().message, "late");
        let other = Report::decide(1, vec![Message::Exception(e)], None, exited(255), 0, 10);
        assert_eq!(other.outcome, Outcome::Exception);
    }

    #[test]
    fn broken_channel_becomes_a_channel_exception() {
        let err = Error::Channel("unknown frame kind 99".into());
        let r = Report::decide(1, vec![value()], Some(&err), exited(0), 0, 10);
        assert_eq!(r.outcome, Outcome::Exception);
        let e = r.exception.unwrap();
        assert_eq!(e.class, record_names().channel);
        assert!(e.message.contains("unknown frame kind 99"));
    }

    #[test]
    fn silent_exit_is_an_exit_and_duration_uses_the_childs_clock() {
        let r = Report::decide(
            1,
            vec![Message::Stats {
                peak_memory: 5,
                finished_ns: 400,
            }],
            None,
            exited(0),
            100,
            1_000_000,
        );
        assert_eq!(r.outcome, Outcome::Exit);
        assert_eq!(r.peak_memory, Some(5));
        assert!((r.duration - 300e-9).abs() < 1e-12);
    }
}
