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
    /// When that tick was due (the run is late by now − due).
    pub due: Instant,
    /// Ticks that passed without a run since the last one, this one included when it does not
    /// run (an overrun when more than 0).
    pub missed: u64,
    /// Whether to run the callback now: when no tick was missed before this one; after an
    /// overrun with [`Missed::RunOnce`] always, with [`Missed::Skip`] only if this tick is late
    /// by at most half an interval (else the next run is the next tick ahead).
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
        let skipped = latest - self.next;
        self.next = latest + 1;
        let due = self.at(latest);
        let run = skipped == 0
            || self.missed == Missed::RunOnce
            || now.saturating_duration_since(due) <= self.interval / 2;
        Some(Fired {
            tick: latest,
            due,
            missed: skipped + u64::from(!run),
            run,
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
                due: e.due(),
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
        // The callback of tick 1 ran 360 ms: ticks 2, 3 and 4 passed while it ran; tick 4 is
        // 60 ms late, more than half an interval: it is skipped too.
        let late = e.fire(t0 + ms(460)).unwrap();
        assert_eq!((late.tick, late.missed, late.run), (4, 3, false));
        assert_eq!(e.due(), t0 + ms(500), "back on the grid");
        assert_eq!(e.fire(t0 + ms(499)), None);
        assert!(e.fire(t0 + ms(500)).unwrap().run);
    }

    #[test]
    fn a_tick_a_little_late_after_an_overrun_still_runs() {
        let t0 = Instant::now();
        let mut e = Every::new(t0, ms(100), Missed::Skip);
        assert!(e.fire(t0 + ms(100)).unwrap().run);
        // Ticks 2 and 3 passed; tick 3 (due at 300) is only 20 ms late: it runs, 1 missed.
        let late = e.fire(t0 + ms(320)).unwrap();
        assert_eq!(
            (late.tick, late.missed, late.run, late.due),
            (3, 1, true, t0 + ms(300))
        );
        // Every tick is either run or counted: 3 ticks, 2 runs, 1 missed.
    }

    #[test]
    fn run_once_makes_up_for_an_overrun_with_a_single_run() {
        let t0 = Instant::now();
        let mut e = Every::new(t0, ms(100), Missed::RunOnce);
        assert!(e.fire(t0 + ms(100)).unwrap().run);
        let late = e.fire(t0 + ms(450)).unwrap();
        assert_eq!((late.tick, late.missed, late.run), (4, 2, true));
        assert_eq!(late.due, t0 + ms(400));
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
