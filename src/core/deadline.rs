//! A wall-clock limit on a child and the one escalation that enforces it: SIGTERM at the deadline,
//! SIGKILL after the grace period, each step an explicit state. Plain jobs, pool tasks and (next)
//! the daemon's jobs all use this type; the runtime (`core::runtime`) wakes for [`Escalation::due`]
//! and sends what [`Escalation::step`] says. A job child also carries a backstop of its own (see
//! `sys::arm_backstop`): if the parent cannot act, the child dies at [`Deadline::backstop`].
//!
//! This module only decides; it sends no signal itself.

use std::time::{Duration, Instant};

/// How long after timeout + grace a job's own timer kills it when its parent has not: long enough
/// that a parent that is listening always acts first.
pub const BACKSTOP_MARGIN: Duration = Duration::from_millis(250);

/// A wall-clock limit: SIGTERM `timeout` after the start, SIGKILL `grace` later.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadline {
    pub timeout: Duration,
    pub grace: Duration,
}

impl Deadline {
    /// When, after the start, the child's own timer kills it and its group.
    pub fn backstop(&self) -> Duration {
        self.timeout + self.grace + BACKSTOP_MARGIN
    }
}

/// Where an escalation stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    /// Nothing sent yet; SIGTERM is due at `term_at`.
    Armed { term_at: Instant },
    /// SIGTERM sent at `since`; SIGKILL is due at `kill_at`.
    Terminating { since: Instant, kill_at: Instant },
    /// SIGKILL sent (after SIGTERM).
    Killed,
}

/// What to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Term,
    Kill,
}

/// How a child that ran past its deadline was stopped, as the report tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM ended it within the grace period.
    Term,
    /// SIGTERM, then SIGKILL after the grace period.
    TermThenKill,
    /// Its own backstop timer killed it: the parent was busy elsewhere (in PHP code).
    OwnTimer,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Escalation {
    pub limits: Deadline,
    pub started: Instant,
    pub stage: Stage,
}

impl Escalation {
    pub fn start(limits: Deadline, started: Instant) -> Escalation {
        Escalation {
            limits,
            started,
            stage: Stage::Armed {
                term_at: started + limits.timeout,
            },
        }
    }

    /// The next instant at which `step` has something to do.
    pub fn due(&self) -> Option<Instant> {
        match self.stage {
            Stage::Armed { term_at } => Some(term_at),
            Stage::Terminating { kill_at, .. } => Some(kill_at),
            Stage::Killed => None,
        }
    }

    /// Moves on if something is due at `now`; returns what to send. With no grace, SIGTERM and
    /// SIGKILL are due at once: call until it returns `None`.
    pub fn step(&mut self, now: Instant) -> Option<Action> {
        match self.stage {
            Stage::Armed { term_at } if now >= term_at => {
                self.stage = Stage::Terminating {
                    since: now,
                    kill_at: now + self.limits.grace,
                };
                Some(Action::Term)
            }
            Stage::Terminating { kill_at, .. } if now >= kill_at => {
                self.stage = Stage::Killed;
                Some(Action::Kill)
            }
            _ => None,
        }
    }

    /// Whether the deadline has passed at `now` (whether or not anything was sent).
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.started + self.limits.timeout
    }

    /// How the child, which has ended by `status_signal` (its terminating signal, if any), was
    /// stopped for its deadline; `None` when it ended on its own before the parent acted.
    pub fn stop(&self, status_signal: Option<i32>, now: Instant) -> Option<Stop> {
        match self.stage {
            // SIGKILL was sent; but a job that ended of SIGTERM, or on its own after it, before
            // the SIGKILL landed was stopped by SIGTERM: the report says what happened.
            Stage::Killed if status_signal == Some(libc::SIGKILL) => Some(Stop::TermThenKill),
            Stage::Killed => Some(Stop::Term),
            // Killed while the parent had not sent SIGKILL: only the child's own timer does that
            // to a job past its deadline (or someone else's kill -9; it is a timeout either way).
            Stage::Armed { .. } | Stage::Terminating { .. }
                if status_signal == Some(libc::SIGKILL)
                    && now >= self.started + self.limits.backstop() - BACKSTOP_MARGIN =>
            {
                Some(Stop::OwnTimer)
            }
            Stage::Terminating { .. } => Some(Stop::Term),
            Stage::Armed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64, grace_ms: u64) -> Deadline {
        Deadline {
            timeout: Duration::from_millis(timeout_ms),
            grace: Duration::from_millis(grace_ms),
        }
    }

    #[test]
    fn term_at_the_deadline_then_kill_after_the_grace() {
        let t0 = Instant::now();
        let mut e = Escalation::start(limits(100, 50), t0);
        assert_eq!(e.due(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(e.step(t0 + Duration::from_millis(99)), None);
        let t1 = t0 + Duration::from_millis(120);
        assert_eq!(e.step(t1), Some(Action::Term));
        assert_eq!(e.due(), Some(t1 + Duration::from_millis(50)));
        assert_eq!(e.step(t1 + Duration::from_millis(49)), None);
        assert_eq!(e.step(t1 + Duration::from_millis(50)), Some(Action::Kill));
        assert_eq!(e.due(), None);
        assert_eq!(e.step(t1 + Duration::from_secs(9)), None);
        assert_eq!(e.stop(Some(libc::SIGKILL), t1), Some(Stop::TermThenKill));
    }

    #[test]
    fn no_grace_means_term_and_kill_at_once() {
        let t0 = Instant::now();
        let mut e = Escalation::start(limits(10, 0), t0);
        let t = t0 + Duration::from_millis(10);
        assert_eq!(e.step(t), Some(Action::Term));
        assert_eq!(e.step(t), Some(Action::Kill));
        assert_eq!(e.step(t), None);
    }

    #[test]
    fn the_report_never_claims_a_kill_that_did_not_happen() {
        let t0 = Instant::now();
        let mut e = Escalation::start(limits(100, 1000), t0);
        // Ended on its own before the deadline.
        assert_eq!(e.stop(None, t0 + Duration::from_millis(50)), None);
        e.step(t0 + Duration::from_millis(100));
        // SIGTERM did it.
        assert_eq!(
            e.stop(Some(libc::SIGTERM), t0 + Duration::from_millis(150)),
            Some(Stop::Term)
        );
        // A SIGKILL the parent never sent, at the backstop: the job's own timer.
        let at_backstop = t0 + limits(100, 1000).backstop();
        assert_eq!(
            e.stop(Some(libc::SIGKILL), at_backstop),
            Some(Stop::OwnTimer)
        );
        let armed = Escalation::start(limits(100, 1000), t0);
        assert_eq!(
            armed.stop(Some(libc::SIGKILL), at_backstop),
            Some(Stop::OwnTimer)
        );
        // Killed early by someone else: not a timeout.
        assert_eq!(
            armed.stop(Some(libc::SIGKILL), t0 + Duration::from_millis(10)),
            None
        );
    }
}
