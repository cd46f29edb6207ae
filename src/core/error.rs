//! The one error type of the core. The binding layer maps each variant to a PHP exception class
//! (see `src/php/exceptions.rs`); messages say what went wrong and, where it helps, what to do.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A caller passed something that cannot work; the message says what to change.
    InvalidArgument(String),
    /// `fork()` itself failed (EAGAIN: process limit, ENOMEM: no memory for page tables).
    Fork(nix::Error),
    /// A resource limit stops the call (open files, processes); the message names the limit and
    /// what to change.
    Limit(String),
    /// A system call that supervision relies on failed.
    System {
        call: &'static str,
        errno: nix::Error,
    },
    /// The channel between a job and its parent carried something that is not a valid frame.
    Channel(String),
    /// An application callback (a fork hook) threw; its PHP exception is pending and is what the
    /// caller sees.
    Hook(&'static str),
    /// A pool's task or call outlived the pool (it was destroyed meanwhile, e.g. by a signal
    /// handler).
    PoolGone,
    /// A handle was used from a process that does not own the job (e.g. inside a forked child).
    NotOwner { pid: i32, owner: i32, current: i32 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(msg) => f.write_str(msg),
            Error::Fork(errno) => write!(
                f,
                "fork() failed: {errno}; the process limit (ulimit -u, pids cgroup) or memory is \
                 exhausted: wait for running jobs before starting more"
            ),
            Error::Limit(msg) => f.write_str(msg),
            Error::System { call, errno } => write!(f, "{call}() failed: {errno}"),
            Error::Channel(msg) => write!(f, "job channel: {msg}"),
            Error::Hook(msg) => f.write_str(msg),
            Error::PoolGone => f.write_str(
                "the pool is gone (it was destroyed meanwhile); keep the pool until its tasks are \
                 done",
            ),
            Error::NotOwner {
                pid,
                owner,
                current,
            } => write!(
                f,
                "process {pid} is a child of process {owner}, not of this process ({current}): \
                 only the process that forked a job can wait for it or signal it"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn sys(call: &'static str, errno: nix::Error) -> Self {
        Error::System { call, errno }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
