//! When the supervisor restarts a dispatcher that died, and when it stops trying. Exponential
//! backoff with jitter (`restartDelay × 2^(streak−1)`, capped at `restartDelayMax`, then drawn in
//! [50 %, 100 %] of that), a streak that starts over after a healthy run (`healthy_after`), and a
//! start limit like systemd's `StartLimitBurst`/`StartLimitIntervalSec`: the `restartBurst`-th death
//! within `restartWindow` gives up. Pure: the clock is passed in, the jitter comes from a seeded
//! xorshift, so `cargo test` drives it by hand.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::core::error::{Error, Result};

/// How the supervisor restarts a dying dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The first delay (`restartDelay`, default 0.5 s); it doubles with each death in a streak.
    pub base: Duration,
    /// The longest delay (`restartDelayMax`, default 30 s).
    pub max: Duration,
    /// How many deaths within `window` make the supervisor give up (`restartBurst`, default 5).
    pub burst: u32,
    /// The window deaths are counted in (`restartWindow`, default 60 s).
    pub window: Duration,
    /// A dispatcher that ran at least this long before dying was healthy: the next delay is the
    /// first one again (default 10 s).
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            burst: 5,
            window: Duration::from_secs(60),
            healthy_after: Duration::from_secs(10),
        }
    }
}

impl RestartPolicy {
    /// Refuses a policy that cannot work: no burst, no window, or a first delay longer than the
    /// longest one.
    pub fn validate(&self) -> Result<()> {
        if self.burst == 0 {
            return Err(Error::InvalidArgument(
                "restartBurst must be at least 1 (got 0): it is how many dispatcher deaths within \
                 restartWindow make the daemon give up; use e.g. 5"
                    .to_owned(),
            ));
        }
        if self.window.is_zero() {
            return Err(Error::InvalidArgument(
                "restartWindow must be longer than 0 s: it is the time restartBurst deaths are \
                 counted in; use e.g. 60 s"
                    .to_owned(),
            ));
        }
        if self.base > self.max {
            return Err(Error::InvalidArgument(format!(
                "restartDelay ({}) is longer than restartDelayMax ({}): lower restartDelay or \
                 raise restartDelayMax",
                secs(self.base),
                secs(self.max)
            )));
        }
        Ok(())
    }
}

/// What to do about a dispatcher that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay; `attempt` is the place in the current streak (1 after a
    /// healthy run).
    Restart { after: Duration, attempt: u32 },
    /// Stop trying: `deaths` deaths fell within `window`.
    GiveUp { deaths: u32, window: Duration },
}

/// The supervisor's memory of dispatcher deaths under one [`RestartPolicy`].
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: RestartPolicy,
    /// Deaths within the window, oldest first.
    deaths: VecDeque<Instant>,
    /// Deaths in a row without a healthy run in between.
    streak: u32,
    /// xorshift64 state, never 0.
    rng: u64,
}

impl Restarts {
    /// No deaths yet. `seed` drives the jitter (e.g. the supervisor's pid mixed with the time), so
    /// daemons restarting together spread out, and a test gets the same delays every run.
    pub fn new(policy: RestartPolicy, seed: u64) -> Restarts {
        Restarts {
            policy,
            deaths: VecDeque::new(),
            streak: 0,
            rng: splitmix64(seed).max(1),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// The dispatcher (started at `started`) died at `now`: restart after how long, or give up.
    pub fn on_death(&mut self, started: Instant, now: Instant) -> Decision {
        let window = self.policy.window;
        while let Some(&oldest) = self.deaths.front() {
            if now.saturating_duration_since(oldest) >= window {
                self.deaths.pop_front();
            } else {
                break;
            }
        }
        self.deaths.push_back(now);
        let deaths = u32::try_from(self.deaths.len()).unwrap_or(u32::MAX);
        if deaths >= self.policy.burst {
            return Decision::GiveUp { deaths, window };
        }

        if now.saturating_duration_since(started) >= self.policy.healthy_after {
            self.streak = 1;
        } else {
            self.streak = self.streak.saturating_add(1);
        }
        let full = self.delay(self.streak);
        Decision::Restart {
            after: self.jitter(full),
            attempt: self.streak,
        }
    }

    /// Human text for a [`Decision::GiveUp`], for the log and the exit message.
    pub fn give_up_text(deaths: u32, window: Duration) -> String {
        format!(
            "the dispatcher died {deaths} times within {}; giving up (as systemd's \
             StartLimitBurst). Fix the cause shown above, then start the daemon again",
            secs(window)
        )
    }

    /// `base × 2^(attempt−1)`, capped at `max`, before jitter.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(63);
        let factor = 1u32.checked_shl(exp).unwrap_or(u32::MAX);
        match self.policy.base.checked_mul(factor) {
            Some(d) if d < self.policy.max => d,
            _ => self.policy.max,
        }
    }

    /// A delay drawn uniformly in [50 %, 100 %] of `full`.
    fn jitter(&mut self, full: Duration) -> Duration {
        let nanos = u64::try_from(full.as_nanos()).unwrap_or(u64::MAX);
        let span = nanos / 2;
        let low = nanos - span;
        let pick = match span.checked_add(1) {
            Some(n) => self.next() % n,
            None => self.next(),
        };
        Duration::from_nanos(low + pick)
    }

    /// xorshift64: enough to spread restarts, not for anything secret.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// Spreads a seed's bits (so seeds 1 and 2 start far apart), as splitmix64 does.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A duration for messages: "60 s", "0.5 s".
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{} s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn restart(d: Decision) -> (Duration, u32) {
        match d {
            Decision::Restart { after, attempt } => (after, attempt),
            other => panic!("expected Restart, got {other:?}"),
        }
    }

    /// A policy with a burst too large to matter, for delay tests.
    fn no_limit() -> RestartPolicy {
        RestartPolicy {
            burst: 1000,
            ..RestartPolicy::default()
        }
    }

    #[test]
    fn defaults_are_valid() {
        let p = RestartPolicy::default();
        assert_eq!(p.base, 500 * MS);
        assert_eq!(p.max, Duration::from_secs(30));
        assert_eq!(p.burst, 5);
        assert_eq!(p.window, Duration::from_secs(60));
        assert_eq!(p.healthy_after, Duration::from_secs(10));
        p.validate().unwrap();
    }

    #[test]
    fn validate_names_the_option() {
        let bad = |p: RestartPolicy| match p.validate() {
            Err(Error::InvalidArgument(msg)) => msg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        let d = RestartPolicy::default();
        assert!(bad(RestartPolicy { burst: 0, ..d }).starts_with("restartBurst"));
        let msg = bad(RestartPolicy {
            window: Duration::ZERO,
            ..d
        });
        assert!(msg.starts_with("restartWindow"), "{msg}");
        let msg = bad(RestartPolicy {
            base: Duration::from_secs(60),
            ..d
        });
        assert!(msg.contains("restartDelay (60 s)"), "{msg}");
        assert!(msg.contains("restartDelayMax (30 s)"), "{msg}");
        RestartPolicy { base: d.max, ..d }.validate().unwrap();
    }

    #[test]
    fn delays_grow_and_cap() {
        let t0 = Instant::now();
        let mut r = Restarts::new(no_limit(), 7);
        let mut now = t0;
        let mut full = Vec::new();
        for attempt in 1..=12 {
            let started = now;
            now += Duration::from_secs(1); // ran 1 s: not healthy
            let (after, a) = restart(r.on_death(started, now));
            assert_eq!(a, attempt);
            let expect = r.delay(attempt);
            assert!(
                after >= expect / 2 && after <= expect,
                "{after:?} vs {expect:?}"
            );
            full.push(expect);
            now += after;
        }
        assert_eq!(full[0], 500 * MS);
        assert_eq!(full[1], Duration::from_secs(1));
        assert_eq!(full[2], Duration::from_secs(2));
        assert_eq!(full[5], Duration::from_secs(16));
        assert_eq!(full[6], Duration::from_secs(30));
        assert_eq!(full[11], Duration::from_secs(30));
        // Far past any shift width.
        assert_eq!(r.delay(200), Duration::from_secs(30));
        assert_eq!(r.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_within_bounds_deterministic_and_seeded() {
        let draw = |seed: u64| -> Vec<Duration> {
            let mut r = Restarts::new(no_limit(), seed);
            (0..200).map(|_| r.jitter(Duration::from_secs(8))).collect()
        };
        let a = draw(1);
        for d in &a {
            assert!(
                *d >= Duration::from_secs(4) && *d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
        assert_eq!(a, draw(1), "same seed, same delays");
        assert_ne!(a, draw(2), "different seeds differ");
        assert_ne!(draw(0), draw(1), "seed 0 works too");
        // Spread over the range, not stuck at one end.
        assert!(a.iter().any(|d| *d < Duration::from_secs(5)));
        assert!(a.iter().any(|d| *d > Duration::from_secs(7)));
        // Degenerate delays.
        let mut r = Restarts::new(no_limit(), 3);
        assert_eq!(r.jitter(Duration::ZERO), Duration::ZERO);
        assert!(r.jitter(Duration::from_nanos(1)) <= Duration::from_nanos(1));
    }

    #[test]
    fn healthy_run_resets_streak() {
        let t0 = Instant::now();
        let mut r = Restarts::new(no_limit(), 9);
        assert_eq!(restart(r.on_death(t0, t0 + MS)).1, 1);
        assert_eq!(restart(r.on_death(t0, t0 + 2 * MS)).1, 2);
        assert_eq!(restart(r.on_death(t0, t0 + 3 * MS)).1, 3);
        // Ran exactly healthy_after: healthy.
        let started = t0 + Duration::from_secs(1);
        let (after, attempt) = restart(r.on_death(started, started + Duration::from_secs(10)));
        assert_eq!(attempt, 1);
        assert!(after <= 500 * MS && after >= 250 * MS, "{after:?}");
        let now = started + Duration::from_secs(11);
        assert_eq!(restart(r.on_death(now, now)).1, 2);
    }

    #[test]
    fn burst_within_window_gives_up() {
        let t0 = Instant::now();
        let mut r = Restarts::new(RestartPolicy::default(), 1);
        for i in 0..4u32 {
            let now = t0 + Duration::from_secs(u64::from(i) * 10);
            restart(r.on_death(now, now + MS));
        }
        // The 5th death, 41 s after the first: within 60 s.
        let now = t0 + Duration::from_secs(41);
        assert_eq!(
            r.on_death(now, now),
            Decision::GiveUp {
                deaths: 5,
                window: Duration::from_secs(60)
            }
        );
        assert_eq!(
            Restarts::give_up_text(5, Duration::from_secs(60)),
            "the dispatcher died 5 times within 60 s; giving up (as systemd's StartLimitBurst). \
             Fix the cause shown above, then start the daemon again"
        );
    }

    #[test]
    fn healthy_deaths_still_count_towards_burst() {
        let t0 = Instant::now();
        let mut r = Restarts::new(RestartPolicy::default(), 1);
        let mut started = t0;
        for i in 1..=5u64 {
            let now = t0 + Duration::from_secs(11 * i);
            let d = r.on_death(started, now);
            if i < 5 {
                assert_eq!(restart(d).1, 1);
            } else {
                assert!(matches!(d, Decision::GiveUp { deaths: 5, .. }), "{d:?}");
            }
            started = now;
        }
    }

    #[test]
    fn burst_of_one_gives_up_at_once() {
        let t0 = Instant::now();
        let policy = RestartPolicy {
            burst: 1,
            ..RestartPolicy::default()
        };
        let mut r = Restarts::new(policy, 1);
        assert!(matches!(
            r.on_death(t0, t0),
            Decision::GiveUp { deaths: 1, .. }
        ));
    }

    #[test]
    fn deaths_spread_over_more_than_window_never_give_up() {
        let t0 = Instant::now();
        let mut r = Restarts::new(RestartPolicy::default(), 5);
        // 4 deaths per 60 s for an hour: never 5 within any 60 s.
        for i in 0..240u64 {
            let now = t0 + Duration::from_secs(15 * i);
            restart(r.on_death(now, now + MS));
        }
        // A death exactly `window` after an old one: the old one is forgotten.
        let mut r = Restarts::new(RestartPolicy::default(), 5);
        for i in 0..4u64 {
            let now = t0 + Duration::from_secs(i);
            restart(r.on_death(now, now));
        }
        let now = t0 + Duration::from_secs(60);
        restart(r.on_death(now, now));
        // …but 1 s..3 s, 60 s and now are 5 within 60 s.
        let now = t0 + Duration::from_millis(60_500);
        assert!(matches!(
            r.on_death(now, now),
            Decision::GiveUp { deaths: 5, .. }
        ));
    }

    #[test]
    fn secs_formats() {
        assert_eq!(secs(Duration::from_secs(60)), "60 s");
        assert_eq!(secs(500 * MS), "0.5 s");
        assert_eq!(secs(1250 * MS), "1.25 s");
    }
}
