//! The raw system calls that nix does not wrap (pidfd, wait4, prctl, `_exit`, poll with a deadline,
//! the death-signal handler). Each `unsafe` block says why it holds; nothing else in the crate calls
//! `libc` for process control.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::unistd::Pid;

/// How a reaped child ended, and what it cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExitStatus {
    /// `exit()` code, when the child exited.
    pub code: Option<i32>,
    /// Terminating signal, when a signal ended it.
    pub signal: Option<i32>,
    pub core_dumped: bool,
    /// User + system CPU time of the child.
    pub cpu: Duration,
    /// Peak resident set size of the child, bytes.
    pub max_rss: u64,
}

impl ExitStatus {
    /// For a child whose status was taken by someone else.
    pub fn unknown() -> Self {
        ExitStatus {
            code: None,
            signal: None,
            core_dumped: false,
            cpu: Duration::ZERO,
            max_rss: 0,
        }
    }
}

/// How a child ended, without reaping it (`waitid` with `WNOWAIT`); `StillAlive` while it runs.
pub fn peek_exit(pid: Pid) -> Result<nix::sys::wait::WaitStatus, Errno> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(pid), flags) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// `pidfd_open(2)`: `None` where the kernel has no pidfds (before 5.3).
pub fn pidfd_open(pid: Pid) -> Result<Option<OwnedFd>, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return match Errno::last() {
            Errno::ENOSYS => Ok(None),
            e => Err(e),
        };
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
}

/// `wait4(2)` on one child. `block == false` returns `Ok(None)` while it runs.
pub fn wait4(pid: Pid, block: bool) -> Result<Option<ExitStatus>, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value that wait4 overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: status and usage are valid, writable, and live for the call.
        let r = unsafe { libc::wait4(pid.as_raw(), &mut status, flags, &mut usage) };
        if r < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        if r == 0 {
            return Ok(None);
        }
        break;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let (code, signal, core_dumped) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None, false)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)), libc::WCOREDUMP(status))
    } else {
        (None, None, false)
    };
    Ok(Some(ExitStatus {
        code,
        signal,
        core_dumped,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss: usage.ru_maxrss as u64 * 1024,
    }))
}

/// This process's pid (not cached: right after a fork it is the child's).
pub fn current_pid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// Leaves the process at once: no atexit handlers, no destructors, no stdio flush.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// The signal the kernel sends a job child when its parent dies. It is a real-time signal that PHP
/// and its extensions do not use, so that the child can catch it and take its whole process group
/// (the grandchildren the job spawned) down with it; SIGKILL could not be caught.
pub fn death_signal() -> i32 {
    libc::SIGRTMIN() + 6
}

extern "C" fn on_parent_death(_: libc::c_int) {
    // SAFETY: kill is async-signal-safe; 0 means this process's group, which the job leads.
    unsafe {
        libc::kill(0, libc::SIGKILL);
    }
}

/// In a fresh job child: ask to be told of the parent's death, and act on it by killing the group.
/// Returns false when the parent is already gone (it died before we asked).
pub fn arm_parent_death(parent: Pid) -> bool {
    // SAFETY: sigaction with a zeroed struct, a plain extern "C" handler and an empty mask is
    // well-formed; the handler only calls async-signal-safe kill().
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_parent_death as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(death_signal(), &sa, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, death_signal());
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            death_signal() as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    nix::unistd::getppid() == parent
}

/// Monotonic clock in nanoseconds; the same clock in every process of the machine, so a child's
/// timestamps compare with its parent's.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// `poll(2)` for readability on `fds` until one is ready or `deadline` passes (`None`: forever).
/// Sets `ready[i]` for each ready fd; returns whether any is. Retries on EINTR with the time left.
pub fn poll_readable(
    fds: &[RawFd],
    deadline: Option<Instant>,
    ready: &mut Vec<bool>,
) -> Result<bool, Errno> {
    let wanted: Vec<(RawFd, i16)> = fds.iter().map(|&fd| (fd, libc::POLLIN)).collect();
    let mut revents = Vec::new();
    let any = poll_io(&wanted, deadline, &mut revents)?;
    ready.clear();
    ready.extend(revents.iter().map(|r| *r != 0));
    Ok(any)
}

/// `ppoll(2)` for the given events (POLLIN, POLLOUT) on each fd until one is ready or `deadline`
/// passes (`None`: forever); `revents[i]` gets what happened on `fds[i]`. Retries on EINTR.
pub fn poll_io(
    fds: &[(RawFd, i16)],
    deadline: Option<Instant>,
    revents: &mut Vec<i16>,
) -> Result<bool, Errno> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    loop {
        // ppoll takes nanoseconds: a deadline is kept to the microsecond, not rounded up to the
        // next millisecond as poll(2) would.
        let left = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            }
        });
        let ts = left
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: pfds is a valid array of pfds.len() pollfd structs and ts null or a valid
        // timespec, both for the whole call; a null sigmask leaves the mask as it is.
        let r = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                ts,
                std::ptr::null(),
            )
        };
        if r < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        revents.clear();
        revents.extend(pfds.iter().map(|p| p.revents));
        return Ok(r > 0);
    }
}

/// Writes what the socket takes now of `bytes`, without waiting; returns how much.
pub fn send_some(fd: RawFd, bytes: &[u8]) -> Result<usize, Errno> {
    let flags = nix::sys::socket::MsgFlags::MSG_NOSIGNAL | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
    loop {
        match nix::sys::socket::send(fd, bytes, flags) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// Reads what is available on a non-blocking fd into `buf`, up to about `budget` bytes; returns
/// whether the stream has ended.
pub fn read_available(fd: &OwnedFd, buf: &mut Vec<u8>, budget: usize) -> Result<bool, Errno> {
    // Small enough that zeroing it costs nothing next to the system call; larger data takes
    // more reads of the same turn.
    let mut chunk = [0u8; 8 * 1024];
    while buf.len() < budget {
        match nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
            Ok(0) => return Ok(true),
            // A short read took all there was: do not spend a system call to hear EAGAIN.
            Ok(n) if n < chunk.len() => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(false);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(false),
            Err(Errno::ECONNRESET) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Writes all of `bytes` to a blocking socket, without SIGPIPE if the reader is gone.
pub fn send_all(fd: RawFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match nix::sys::socket::send(fd, bytes, nix::sys::socket::MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The highest signal number (SIGRTMAX).
pub fn max_signal() -> i32 {
    libc::SIGRTMAX()
}

/// `kill(2)` with any signal number, real-time ones included (nix's `Signal` has none of those).
pub fn send_signal(pid: Pid, signo: i32) -> Result<(), Errno> {
    // SAFETY: kill takes two integers; an invalid signal number is reported as EINVAL.
    if unsafe { libc::kill(pid.as_raw(), signo) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// CPU time (user + system) this process has used so far, and its peak resident memory (bytes).
pub fn usage_self() -> (Duration, u64) {
    // SAFETY: rusage is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as u64 * 1024,
    )
}

/// The `SIGxxx` name of a signal number (`SIGRTMIN+n` for real-time ones).
pub fn signal_name(signo: i32) -> String {
    match nix::sys::signal::Signal::try_from(signo) {
        Ok(s) => s.as_str().to_string(),
        Err(_) if signo >= libc::SIGRTMIN() && signo <= libc::SIGRTMAX() => {
            format!("SIGRTMIN+{}", signo - libc::SIGRTMIN())
        }
        Err(_) => format!("signal {signo}"),
    }
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> Result<OwnedFd, Errno> {
    // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(2)`: `op` is `EPOLL_CTL_ADD`, `_MOD` or `_DEL`; `events` a mask of `EPOLLIN`, ...
pub fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> Result<(), Errno> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: ev is a valid epoll_event for the call (ignored by EPOLL_CTL_DEL).
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `epoll_pwait2(2)` until `deadline` (`None`: forever), to the microsecond; falls back to
/// `epoll_wait` (milliseconds, rounded up) on kernels before 5.11. Fills `out`; EINTR gives an
/// empty `out` (the caller looks at its clock and comes back).
pub fn epoll_wait(
    epfd: RawFd,
    deadline: Option<Instant>,
    out: &mut Vec<libc::epoll_event>,
) -> Result<(), Errno> {
    static NO_PWAIT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    out.clear();
    let cap = out.capacity().max(64);
    out.reserve(cap);
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let n = if !NO_PWAIT2.load(std::sync::atomic::Ordering::Relaxed) {
        let ts = left.map(|l| libc::timespec {
            tv_sec: l.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: l.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: out has room for `cap` events, tsp is null or a valid timespec, the sigmask is
        // null (unchanged); all live for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epfd,
                out.as_mut_ptr(),
                cap as libc::c_int,
                tsp,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if r < 0 && Errno::last() == Errno::ENOSYS {
            NO_PWAIT2.store(true, std::sync::atomic::Ordering::Relaxed);
            return epoll_wait(epfd, deadline, out);
        }
        r as i32
    } else {
        let ms = left.map_or(-1, |l| {
            let ms = l.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        });
        // SAFETY: out has room for `cap` events for the call.
        unsafe { libc::epoll_wait(epfd, out.as_mut_ptr(), cap as libc::c_int, ms) }
    };
    if n < 0 {
        return match Errno::last() {
            Errno::EINTR => Ok(()),
            e => Err(e),
        };
    }
    // SAFETY: the kernel initialised the first n entries.
    unsafe { out.set_len(n as usize) };
    Ok(())
}

/// Raises the soft limit of open files to the hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// The soft and hard limits of open files (`ulimit -n`, `ulimit -Hn`).
pub fn nofile_limits() -> (u64, u64) {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap_or((0, 0))
}

/// In a job child: a one-shot timer that raises the death signal after `after`, so that the job
/// and its group die by their own clock even when the parent cannot act (it is busy in PHP code).
/// The timer is not inherited by the job's own children and is deleted by `exec`.
pub fn arm_backstop(after: Duration) -> Result<(), Errno> {
    // SAFETY: plain-data structs, zeroed then filled; timer_create writes `id`, timer_settime
    // reads `spec`; the death signal's handler was installed by `arm_parent_death`.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_SIGNAL;
        sev.sigev_signo = death_signal();
        let mut id: libc::timer_t = std::mem::zeroed();
        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) < 0 {
            return Err(Errno::last());
        }
        let ns = after.as_nanos().max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ns / 1_000_000_000).min(i64::MAX as u128) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        if libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// Counts the forks of this process (any `fork()`: Forklift's, `pcntl_fork()`, ...), so that state
/// inherited from the parent is recognised as such in the child. See [`fork_generation`].
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Registers the fork counter with `pthread_atfork` (once per process, at module start).
pub fn count_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler is a plain extern "C" fn that only bumps an atomic, which is
        // async-signal-safe and so fine in a child right after fork().
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

/// How many times the processes this one descends from (and it) have been forked since
/// [`count_forks`]: it changes in a child right after `fork()`, and nowhere else.
pub fn fork_generation() -> u64 {
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}
