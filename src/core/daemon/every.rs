//! Drift-free interval timers: tick n is due at `start + n × interval`, whatever the callback's run
//! time, so a timer at 1.5 s fires 40 times a minute for a year. A callback that runs past one or
//! more ticks is an overrun: the ticks it covered are missed, and the policy decides whether they
//! are skipped (the next tick is the next one on the grid, the default) or made up by one run at
//! once. The clock is passed in: `cargo test` drives it by hand.

use std::time::{Duration, Instant};

/// What to do with ticks that passed while the timer was late (its callback overran, or the
/// process was busy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Drop them: the next run is the next tick still ahead on the grid.
    Skip,
    /// Run once at once for all of them, then carry on with the grid.
    RunOnce,
}

/// What `Every::fire` found due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// The tick due now (1 is the first, at start + interval).
    pub tick: u64,
    /// Ticks that passed without a run since the last one (an overrun when more than 0).
    pub missed: u64,
    /// Whether to run the callback now: always when nothing was missed; after an overrun only
    /// with [`Missed::RunOnce`] (with [`Missed::Skip`] the next run is the next tick ahead).
    pub run: bool,
}

#[derive(Debug, Clone)]
pub struct Every {
    start: Instant,
    interval: Duration,
    missed: Missed,
    /// The tick the next run is for.
    next: u64,
}

impl Every {
    /// A timer whose first tick is one interval after `start`.
    pub fn new(start: Instant, interval: Duration, missed: Missed) -> Every {
        Every {
            start,
            interval,
            missed,
            next: 1,
        }
    }

    /// The same timer counting from `start` (when the daemon's loop starts).
    pub fn restarted(&self, start: Instant) -> Every {
        Every::new(start, self.interval, self.missed)
    }

    /// When tick `n` is due.
    fn at(&self, n: u64) -> Instant {
        let nanos = self.interval.as_nanos().saturating_mul(n as u128);
        self.start + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }

    /// When the next run is due.
    pub fn due(&self) -> Instant {
        self.at(self.next)
    }

    /// At `now`, if a run is due: which tick it is for and how many were missed; the timer moves
    /// on to the next tick ahead of `now`.
    pub fn fire(&mut self, now: Instant) -> Option<Fired> {
        if now < self.due() {
            return None;
        }
        // The latest tick that is due at `now`.
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let latest = (elapsed / self.interval.as_nanos().max(1)) as u64;
        let missed = latest - self.next;
        self.next = latest + 1;
        Some(Fired {
            tick: latest,
            missed,
            run: missed == 0 || self.missed == Missed::RunOnce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ticks_stay_on_the_grid_whatever_the_callback_costs() {
        let t0 = Instant::now();
        let mut e = Every::new(t0, ms(1500), Missed::Skip);
        let mut now = t0;
        for n in 1..=1000u64 {
            assert_eq!(e.due(), t0 + ms(1500) * n as u32);
            // The callback and the wake-up take 0.3 s of each tick: no drift accumulates.
            now = e.due() + ms(300);
            let fired = Fired {
                tick: n,
                missed: 0,
                run: true,
            };
            assert_eq!(e.fire(now), Some(fired));
        }
        assert!(now < t0 + ms(1500) * 1001);
    }

    #[test]
    fn an_overrun_reports_the_ticks_it_covered_and_skips_to_the_next_tick() {
        let t0 = Instant::now();
        let mut e = Every::new(t0, ms(100), Missed::Skip);
        assert!(e.fire(t0 + ms(100)).unwrap().run);
        // The callback of tick 1 ran 350 ms: ticks 2, 3 and 4 passed while it ran.
        let late = e.fire(t0 + ms(450)).unwrap();
        assert_eq!((late.tick, late.missed, late.run), (4, 2, false));
        assert_eq!(e.due(), t0 + ms(500), "back on the grid");
        assert_eq!(e.fire(t0 + ms(499)), None);
        assert!(e.fire(t0 + ms(500)).unwrap().run);
    }

    #[test]
    fn run_once_makes_up_for_an_overrun_with_a_single_run() {
        let t0 = Instant::now();
        let mut e = Every::new(t0, ms(100), Missed::RunOnce);
        assert!(e.fire(t0 + ms(100)).unwrap().run);
        let late = e.fire(t0 + ms(450)).unwrap();
        assert_eq!((late.tick, late.missed, late.run), (4, 2, true));
        assert_eq!(e.due(), t0 + ms(500));
    }

    #[test]
    fn nothing_fires_before_the_first_interval() {
        let t0 = Instant::now();
        let mut e = Every::new(t0, ms(10), Missed::RunOnce);
        assert_eq!(e.fire(t0 + ms(9)), None);
        assert!(e.fire(t0 + ms(10)).is_some());
    }
}
