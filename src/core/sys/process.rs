//! Process control that nix does not wrap: pidfd, wait4 with rusage, `waitid(WNOWAIT)`, `_exit`,
//! real-time signals, the parent-death signal and the job's backstop timer, the fork counter.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

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

/// The process group a job child made for itself at its start (its own pid): what the death
/// signal's handler kills. Not `kill(0, ..)`: a job may have moved into another group (its
/// parent's, even), which must not be touched.
static JOB_GROUP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_parent_death(_: libc::c_int) {
    let group = JOB_GROUP.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: kill and getpid are async-signal-safe. The job's own group first (what it spawned),
    // then the job itself wherever it is now.
    unsafe {
        if group > 0 {
            libc::kill(-group, libc::SIGKILL);
        }
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// In a fresh job child: ask to be told of the parent's death, and act on it by killing the group.
/// Returns false when the parent is already gone (it died before we asked).
pub fn arm_parent_death(parent: Pid) -> bool {
    JOB_GROUP.store(current_pid(), std::sync::atomic::Ordering::Relaxed);
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

/// In a job child: a one-shot timer that raises the death signal after `after` (the job and its
/// group die), and SIGKILL shortly after, so that the job dies by its own clock even when the
/// parent cannot act (it is busy in PHP code). The timers are not inherited by the job's own
/// children and are deleted by `exec`.
pub fn arm_backstop(after: Duration) -> Result<(), Errno> {
    arm_timer(death_signal(), after)?;
    // A job that blocks signals (pcntl_sigprocmask) never takes the death signal: SIGKILL, which
    // cannot be blocked, follows a little later (its grandchildren are then killed by the parent
    // when it reaps it).
    arm_timer(libc::SIGKILL, after + Duration::from_millis(100))
}

/// A one-shot CLOCK_MONOTONIC timer that sends `signo` to this process after `after`; it lives
/// as long as the process.
fn arm_timer(signo: i32, after: Duration) -> Result<(), Errno> {
    // SAFETY: plain-data structs, zeroed then filled; timer_create writes `id`, timer_settime
    // reads `spec`.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_SIGNAL;
        sev.sigev_signo = signo;
        let mut id: libc::timer_t = std::mem::zeroed();
        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) < 0 {
            return Err(Errno::last());
        }
        let spec = one_shot(after);
        if libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`), so that
/// a grandchild whose parent exits (or that calls `setsid()` after a double fork) stays in this
/// process's tree, where [`kill_descendants`] finds it.
pub fn become_subreaper() {
    // SAFETY: prctl with an integer option and flag.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// SIGKILLs every descendant of this process (its whole tree, also those in other sessions or
/// process groups). Each is signalled through a pidfd taken while its parent is still the one it
/// was found under, so a pid reused by a stranger is never signalled. Repeats until a look finds
/// nothing alive (a descendant may fork meanwhile), at most `rounds` times. Returns how many were
/// killed. Costs one `waitid` when the process has no children (the usual case): as a subreaper
/// (see [`become_subreaper`]) it then has no descendants either.
pub fn kill_descendants(rounds: usize) -> usize {
    let me = current_pid();
    let mut killed = 0;
    for _ in 0..rounds {
        if !has_children() {
            break;
        }
        let mut found = 0;
        for (pid, parent) in descendants_of(me) {
            if let Ok(Some(fd)) = pidfd_open(Pid::from_raw(pid)) {
                // With the pidfd held the pid cannot be reused: check it is still the child.
                if parent_of(pid) == Some(parent) && kill_pidfd(&fd) {
                    found += 1;
                }
            }
        }
        killed += found;
        if found == 0 {
            break;
        }
    }
    killed
}

/// Whether this process has any child, running or exited (`waitid` without reaping).
/// For a process none of whose children is supervised at the moment (the daemon's supervisor
/// between dispatchers): kills every descendant — strays that left their job's group and session
/// and were reparented here (a subreaper) — and reaps them, for at most `wait`. Processes are
/// reparented while this runs (a dying job's children move up to us), so it scans again until
/// none is left. Returns how many were killed.
pub fn kill_and_reap_strays(wait: std::time::Duration) -> usize {
    let me = current_pid();
    let until = std::time::Instant::now() + wait;
    let mut killed = std::collections::HashSet::new();
    loop {
        // Reap what has died (only strays are our children now).
        // SAFETY: waitpid with a null status pointer and WNOHANG.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        let left = descendants_of(me);
        if left.is_empty() || std::time::Instant::now() >= until {
            return killed.len();
        }
        for (pid, _) in left {
            if killed.contains(&pid) {
                continue;
            }
            let Ok(Some(fd)) = pidfd_open(Pid::from_raw(pid)) else {
                continue;
            };
            // With the pidfd held the pid cannot be reused: check it is still below us.
            if !is_below(pid, me) {
                continue;
            }
            if kill_pidfd(&fd) {
                killed.insert(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// SIGKILL through a pidfd (the pid cannot have been reused while the fd is held).
fn kill_pidfd(fd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal with a live pidfd, a signal and no info.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Whether `pid` has `root` among its ancestors (walking /proc, at most 64 levels).
fn is_below(pid: i32, root: i32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        match parent_of(p) {
            Some(parent) if parent == root => return true,
            Some(parent) if parent > 1 => p = parent,
            _ => return false,
        }
    }
    false
}

fn has_children() -> bool {
    // SAFETY: siginfo_t is plain data that waitid fills in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer for the call; WNOWAIT | WNOHANG neither reaps nor blocks.
    let r = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    r == 0
}

/// The live descendants of `root`, each with the parent it was found under, from every
/// `/proc/PID/stat` (the kernel may not have `/proc/PID/task/*/children`).
pub fn descendants_of(root: i32) -> Vec<(i32, i32)> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && pid != root {
                out.push((pid, parent));
                frontier.push(pid);
            }
        }
    }
    out
}

/// The parent pid of `pid` from `/proc/PID/stat`, and only while it is not a zombie.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
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

/// A `timespec` of `d` (saturating at the largest one).
pub fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// An `itimerspec` that fires once, `after` from now (a zero would disarm: at least 1 ns).
pub fn one_shot(after: Duration) -> libc::itimerspec {
    libc::itimerspec {
        it_interval: timespec(Duration::ZERO),
        it_value: timespec(after.max(Duration::from_nanos(1))),
    }
}
