//! A one-shot POSIX timer that raises a signal in this process at a given instant, for in-process
//! timeouts. The caller provides the signal handler (the binding layer's, which only flips flags)
//! and the timer lives exactly as long as the [`SignalTimer`]: dropping it deletes the timer and
//! puts back the signal disposition that was there before.
//!
//! Not a wall-clock deadline on a child: those are kept by the parent (`process::Deadline`).

use std::time::Instant;

use nix::errno::Errno;

use crate::core::error::{Error, Result};

pub struct SignalTimer {
    id: libc::timer_t,
    signo: i32,
    previous: libc::sigaction,
}

impl SignalTimer {
    /// Installs `handler` for `signo` (without `SA_RESTART`, so that a blocking `sleep()` returns
    /// early) and creates a disarmed CLOCK_MONOTONIC timer that raises it.
    pub fn new(signo: i32, handler: extern "C" fn(libc::c_int)) -> Result<SignalTimer> {
        // SAFETY: plain-data structs, zeroed then filled; sigaction and timer_create only read
        // them and write `previous` / `id`, which live for the calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signo, &sa, &mut previous) < 0 {
                return Err(Error::sys("sigaction", Errno::last()));
            }
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_SIGNAL;
            sev.sigev_signo = signo;
            let mut id: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) < 0 {
                let errno = Errno::last();
                libc::sigaction(signo, &previous, std::ptr::null_mut());
                return Err(Error::sys("timer_create", errno));
            }
            Ok(SignalTimer {
                id,
                signo,
                previous,
            })
        }
    }

    /// Fires once at `at` (at once if it has passed), replacing any earlier setting.
    pub fn arm_at(&self, at: Instant) -> Result<()> {
        let left = at.saturating_duration_since(Instant::now());
        let spec = crate::core::sys::one_shot(left);
        // SAFETY: id is a live timer of ours; spec is a valid itimerspec.
        if unsafe { libc::timer_settime(self.id, 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(Error::sys("timer_settime", Errno::last()));
        }
        Ok(())
    }
}

impl SignalTimer {
    /// In a forked child: POSIX timers are not inherited, so this timer's id means nothing here
    /// (deleting it could delete one of the child's own timers that got the same id). Only the
    /// signal disposition that was copied is put back.
    pub fn forget_in_child(self) {
        // SAFETY: restores the disposition saved in `new`, as Drop does, without timer_delete.
        unsafe {
            libc::sigaction(self.signo, &self.previous, std::ptr::null_mut());
        }
        std::mem::forget(self);
    }
}

impl Drop for SignalTimer {
    fn drop(&mut self) {
        // SAFETY: with the signal blocked, delete our timer, take away a signal it may have left
        // pending (so that it never reaches the previous disposition, which for a real-time
        // signal is to terminate), restore the disposition saved in `new`, unblock.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, self.signo);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
            libc::timer_delete(self.id);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == self.signo {}
            libc::sigaction(self.signo, &self.previous, std::ptr::null_mut());
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
    }
}
