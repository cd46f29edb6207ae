//! Signals the daemon owns while its loop runs (TERM, INT, HUP, USR1 and the application's own):
//! blocked in the process and read from a signalfd by the loop, so none is lost and no code runs
//! in a signal handler. A forked child must not inherit them blocked: [`unblock_owned_in_child`]
//! runs right after every fork.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;

/// Bit n set: signal n is owned (blocked and read from a signalfd). Signals above 63 are never
/// owned (the real-time ones Forklift uses for its own timers stay with their handlers).
static OWNED: AtomicU64 = AtomicU64::new(0);

fn set_of(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks `signals` and returns a signalfd (non-blocking, close-on-exec) that reads them.
/// `signals` must be 1..=63 (checked by the caller, which names the bad one).
pub fn own_signals(signals: &[i32]) -> Result<OwnedFd, Errno> {
    let set = set_of(signals);
    // SAFETY: set is a valid sigset_t; -1 asks for a new signalfd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd was just returned by signalfd and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut bits = 0u64;
    for &s in signals {
        bits |= 1 << s;
    }
    OWNED.fetch_or(bits, Ordering::SeqCst);
    // SAFETY: set is valid; the old mask is not needed.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    Ok(fd)
}

/// Gives `signals` back: unblocked (a pending one is delivered now, to its disposition).
pub fn release_signals(signals: &[i32]) {
    let mut bits = 0u64;
    for &s in signals {
        bits |= 1 << s;
    }
    OWNED.fetch_and(!bits, Ordering::SeqCst);
    let set = set_of(signals);
    // SAFETY: set is valid.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// In a freshly forked child: unblock what the parent owned, so that a job can be stopped with
/// SIGTERM and the application's own handlers work in it.
pub fn unblock_owned_in_child() {
    let bits = OWNED.swap(0, Ordering::SeqCst);
    if bits == 0 {
        return;
    }
    let signals: Vec<i32> = (1..64).filter(|s| bits & (1 << s) != 0).collect();
    let set = set_of(&signals);
    // SAFETY: set is valid.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// Reads every signal waiting in a signalfd; appends their numbers to `out`.
pub fn read_signals(fd: &OwnedFd, out: &mut Vec<i32>) {
    loop {
        // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                &mut info as *mut _ as *mut libc::c_void,
                size,
            )
        };
        if n as usize != size {
            return; // EAGAIN: all read (a signalfd read is never partial)
        }
        out.push(info.ssi_signo as i32);
    }
}
