use super::*;
use crate::core::daemon::cron::local;
use chrono::TimeZone;

/// A clock the test moves by hand.
struct Fake {
    t0: Instant,
    w0: DateTime<Utc>,
    at: Duration,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            t0: Instant::now(),
            // 2026-03-02 10:00:30 UTC, a Monday.
            w0: Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 30).unwrap(),
            at: Duration::ZERO,
        }
    }
    fn now(&self) -> Clock {
        Clock {
            mono: self.t0 + self.at,
            wall: self.w0 + chrono::Duration::from_std(self.at).unwrap(),
        }
    }
    fn go(&mut self, d: Duration) -> Clock {
        self.at += d;
        self.now()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn plan_with_default() -> (Plan, LaneId) {
    let mut p = Plan::new();
    let l = p.add_lane("default").unwrap();
    (p, l)
}

fn job(p: &mut Plan, name: &str, placement: Placement) -> JobId {
    p.add_job(JobDef {
        name: name.into(),
        placement,
        overlap: false,
    })
    .unwrap()
}

#[test]
fn a_lane_runs_one_at_a_time_in_order() {
    let (mut p, l) = plan_with_default();
    let mut c = Fake::new();
    let a = job(&mut p, "a", Placement::Lane(l));
    let b = job(&mut p, "b", Placement::Lane(l));
    p.start(c.now(), None);
    let ra = p.ask(a, None, c.now().wall, Trigger::Asked).unwrap();
    let rb = p.ask(b, None, c.now().wall, Trigger::Asked).unwrap();
    assert_eq!(p.startable(), vec![ra]);
    p.started(ra, 100, c.now());
    assert_eq!(p.startable(), vec![], "b waits for a");
    assert_eq!(p.queued(l), 1);
    let now = c.go(secs(2));
    let run = p.ended(ra, "ok", true, 2.0, None, now).unwrap();
    assert_eq!(run.job, a);
    assert_eq!(p.startable(), vec![rb]);
}

#[test]
fn parallel_runs_all_start_at_once_and_lanes_do_not_wait_for_each_other() {
    let (mut p, l) = plan_with_default();
    let always = p.add_lane("always").unwrap();
    let c = Fake::new();
    let x = job(&mut p, "x", Placement::Lane(l));
    let y = job(&mut p, "y", Placement::Lane(always));
    let par: Vec<JobId> = (0..3)
        .map(|i| job(&mut p, &format!("p{i}"), Placement::Parallel))
        .collect();
    p.start(c.now(), None);
    let mut asked = vec![];
    for j in par.iter().chain([&x, &y]) {
        asked.push(p.ask(*j, None, c.now().wall, Trigger::Asked).unwrap());
    }
    let mut started = p.startable();
    started.sort();
    assert_eq!(started, asked, "3 parallel + the head of each lane");
}

#[test]
fn a_job_still_running_is_not_started_again_and_that_is_counted() {
    let (mut p, l) = plan_with_default();
    let mut c = Fake::new();
    let a = job(&mut p, "a", Placement::Lane(l));
    p.start(c.now(), None);
    let r = p.ask(a, None, c.now().wall, Trigger::Asked).unwrap();
    assert_eq!(
        p.ask(a, None, c.now().wall, Trigger::Asked),
        Err("already queued".into())
    );
    p.startable();
    p.started(r, 4242, c.now());
    let err = p.ask(a, None, c.now().wall, Trigger::Cron).unwrap_err();
    assert!(err.starts_with("still running (pid 4242"), "{err}");
    let stats = p.jobs().find(|(id, ..)| *id == a).unwrap().2.clone();
    assert_eq!(stats.skipped, 2);
    let now = c.go(secs(1));
    p.ended(r, "ok", true, 1.0, None, now);
    assert!(
        p.ask(a, None, now.wall, Trigger::Cron).is_ok(),
        "free again"
    );
}

#[test]
fn overlap_true_lets_runs_pile_up() {
    let (mut p, _) = plan_with_default();
    let c = Fake::new();
    let a = p
        .add_job(JobDef {
            name: "a".into(),
            placement: Placement::Parallel,
            overlap: true,
        })
        .unwrap();
    p.start(c.now(), None);
    for _ in 0..3 {
        p.ask(a, None, c.now().wall, Trigger::Asked).unwrap();
    }
    assert_eq!(p.startable().len(), 3);
}

#[test]
fn cron_fires_each_minute_once_and_reports_the_next_time() {
    let (mut p, l) = plan_with_default();
    let mut c = Fake::new();
    let a = job(&mut p, "a", Placement::Lane(l));
    p.add_cron(
        Schedule::parse("* * * * *", Some("UTC")).unwrap(),
        Missed::Skip,
        a,
    );
    p.start(c.now(), None);
    let next = p.next_cron(a).unwrap();
    assert_eq!(next, Utc.with_ymd_and_hms(2026, 3, 2, 10, 1, 0).unwrap());
    // The wake is the cron time (30 s ahead), never later.
    let wake = p.next_wake(c.now()).unwrap();
    assert_eq!(wake, c.now().mono + secs(30));
    assert!(p.fire(c.go(secs(29))).is_empty());
    let fired = p.fire(c.go(secs(1)));
    let [Fired::Queued(r)] = fired.as_slice() else {
        panic!("{fired:?}")
    };
    assert_eq!(p.run(*r).unwrap().scheduled, next);
    assert!(p.fire(c.go(Duration::from_millis(10))).is_empty(), "once");
}

#[test]
fn a_late_loop_skips_the_cron_times_it_slept_through_but_runs_the_latest() {
    let (mut p, l) = plan_with_default();
    let mut c = Fake::new();
    let a = job(&mut p, "a", Placement::Lane(l));
    p.add_cron(
        Schedule::parse("* * * * *", Some("UTC")).unwrap(),
        Missed::Skip,
        a,
    );
    p.start(c.now(), None);
    // 3 min 40 s pass (an inline callback hogged the loop): 10:01, 10:02, 10:03 and 10:04 passed.
    let fired = p.fire(c.go(secs(220)));
    assert!(
        fired.contains(&Fired::Missed {
            target: Target::Job(a),
            count: 3
        }),
        "{fired:?}"
    );
    let queued: Vec<_> = fired
        .iter()
        .filter_map(|f| match f {
            Fired::Queued(r) => Some(p.run(*r).unwrap().scheduled),
            _ => None,
        })
        .collect();
    assert_eq!(
        queued,
        vec![Utc.with_ymd_and_hms(2026, 3, 2, 10, 4, 0).unwrap()]
    );
    assert_eq!(
        p.next_cron(a).unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 2, 10, 5, 0).unwrap()
    );
}

#[test]
fn a_cron_time_too_late_to_run_is_missed_under_skip_and_run_under_run_once() {
    for (policy, runs) in [(Missed::Skip, 0), (Missed::RunOnce, 1)] {
        let (mut p, l) = plan_with_default();
        let mut c = Fake::new();
        let a = job(&mut p, "a", Placement::Lane(l));
        p.add_cron(
            Schedule::parse("0 * * * *", Some("UTC")).unwrap(),
            policy,
            a,
        );
        p.start(c.now(), None);
        // 11:00 passes while the loop is stuck until 11:05.
        let fired = p.fire(c.go(secs(3600 + 270)));
        let queued = fired
            .iter()
            .filter(|f| matches!(f, Fired::Queued(_)))
            .count();
        assert_eq!(queued, runs, "{policy:?}: {fired:?}");
    }
}

#[test]
fn an_interval_timer_fires_on_its_grid() {
    let mut p = Plan::new();
    let mut c = Fake::new();
    p.add_every(Duration::from_millis(1500), Missed::Skip, Target::Inline(7))
        .unwrap();
    p.start(c.now(), None);
    assert_eq!(
        p.next_wake(c.now()),
        Some(c.now().mono + Duration::from_millis(1500))
    );
    let mut fired = 0;
    for _ in 0..100 {
        // Every wake comes 0.2 s late: still one run per tick, no drift.
        let due = p.next_wake(c.now()).unwrap();
        let now = c.go(due - c.now().mono + Duration::from_millis(200));
        for f in p.fire(now) {
            assert_eq!(
                f,
                Fired::Inline {
                    callback: 7,
                    missed: 0
                }
            );
            fired += 1;
        }
    }
    assert_eq!(fired, 100);
    assert_eq!(
        p.next_wake(c.now()),
        Some(c.t0 + Duration::from_millis(1500 * 101))
    );
}

#[test]
fn stop_drops_what_has_not_started_and_refuses_new_runs() {
    let (mut p, l) = plan_with_default();
    let c = Fake::new();
    let a = job(&mut p, "a", Placement::Lane(l));
    let b = job(&mut p, "b", Placement::Lane(l));
    p.add_cron(
        Schedule::parse("* * * * *", Some("UTC")).unwrap(),
        Missed::Skip,
        a,
    );
    p.start(c.now(), None);
    let ra = p.ask(a, None, c.now().wall, Trigger::Asked).unwrap();
    p.ask(b, None, c.now().wall, Trigger::Asked).unwrap();
    p.startable();
    p.started(ra, 1, c.now());
    let dropped = p.stop();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].job, b);
    assert!(p.next_wake(c.now()).is_none(), "no timers while stopping");
    assert!(p.ask(b, None, c.now().wall, Trigger::Asked).is_err());
    assert!(!p.is_idle(), "a still runs");
    p.ended(ra, "ok", true, 0.1, None, c.now());
    assert!(p.is_idle());
}

#[test]
fn a_reload_hands_over_without_losing_or_repeating_a_cron_time() {
    let mut c = Fake::new();
    let make = || {
        let (mut p, l) = plan_with_default();
        let a = job(&mut p, "a", Placement::Lane(l));
        let b = job(&mut p, "b", Placement::Lane(l));
        let long = job(&mut p, "long", Placement::Parallel);
        p.add_cron(
            Schedule::parse("* * * * *", Some("UTC")).unwrap(),
            Missed::Skip,
            a,
        );
        (p, a, b, long)
    };
    let (mut old, _, b, long) = make();
    old.start(c.now(), None);
    let rl = old.ask(long, None, c.now().wall, Trigger::Asked).unwrap();
    let r1 = old.ask(b, None, c.now().wall, Trigger::Asked).unwrap();
    let r2 = old
        .ask(old.job("a").unwrap(), None, c.now().wall, Trigger::Asked)
        .unwrap();
    for r in old.startable() {
        old.started(r, 10, c.now());
    }
    assert!(old.run(r2).unwrap().started.is_none(), "a waits behind b");
    // HUP at 10:00:50; the new dispatcher is ready 20 s later, at 10:01:10 (10:01 passed meanwhile).
    let (h, pinned) = old.hand_over(c.go(secs(20)));
    assert!(pinned.is_empty());
    assert_eq!(h.queued.len(), 1, "a, queued behind b");
    let mut running = h.running.clone();
    running.sort();
    assert_eq!(running, vec!["b".to_string(), "long".to_string()]);
    assert_eq!(
        old.fire(c.go(secs(20))),
        vec![],
        "the old one fires nothing more"
    );
    let (mut new, a, _, long2) = make();
    new.start(c.now(), Some(&h));
    let fired = new.fire(c.now());
    // 10:01 ran in neither: the new one runs it now... but a is already queued (handed over).
    assert_eq!(
        fired,
        vec![Fired::Skipped {
            job: a,
            reason: "already queued".into()
        }]
    );
    assert!(
        new.ask(long2, None, c.now().wall, Trigger::Asked).is_err(),
        "long runs in the old one"
    );
    new.ended_elsewhere("long");
    assert!(new.ask(long2, None, c.now().wall, Trigger::Asked).is_ok());
    let _ = (rl, r1);
}

#[test]
fn names_are_checked_and_unique() {
    let (mut p, l) = plan_with_default();
    job(&mut p, "a", Placement::Lane(l));
    let dup = p.add_job(JobDef {
        name: "a".into(),
        placement: Placement::Parallel,
        overlap: false,
    });
    assert!(matches!(dup, Err(Error::InvalidArgument(m)) if m.contains("already exists")));
    assert!(p.add_lane("default").is_err());
    assert!(p.add_lane("").is_err());
    let e = p.lane_or_error("nope").unwrap_err().to_string();
    assert!(
        e.contains("unknown lane \"nope\"") && e.contains("lanes now: default"),
        "{e}"
    );
}

#[test]
fn stats_count_outcomes_durations_and_the_last_error() {
    let (mut p, l) = plan_with_default();
    let c = Fake::new();
    let a = job(&mut p, "a", Placement::Lane(l));
    p.start(c.now(), None);
    for (outcome, ok, d) in [("ok", true, 0.2), ("fatal", false, 3.0), ("ok", true, 0.3)] {
        let r = p.ask(a, None, c.now().wall, Trigger::Asked).unwrap();
        p.startable();
        p.started(r, 1, c.now());
        let err = (!ok).then(|| "boom".to_string());
        p.ended(r, outcome, ok, d, err, c.now());
    }
    let s = p.jobs().next().unwrap().2;
    assert_eq!(s.runs, 3);
    assert_eq!(s.outcomes, vec![("ok".into(), 2), ("fatal".into(), 1)]);
    assert_eq!(s.last_error.as_deref(), Some("boom"));
    assert_eq!(s.last_outcome.as_deref(), Some("ok"));
    assert_eq!(s.duration_buckets.iter().sum::<u64>(), 3);
    assert!((s.duration_sum - 3.5).abs() < 1e-9);
}

#[test]
fn cron_in_a_zone_follows_its_clock_across_dst() {
    // Europe/Berlin, 2026-03-29: 02:30 does not exist; a 02:30 job fires once, at the change.
    let (mut p, l) = plan_with_default();
    let a = job(&mut p, "a", Placement::Lane(l));
    p.add_cron(
        Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap(),
        Missed::Skip,
        a,
    );
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let start = local(tz, 2026, 3, 28, 12, 0);
    let c = Clock {
        mono: Instant::now(),
        wall: start,
    };
    p.start(c, None);
    let next = p.next_cron(a).unwrap();
    assert_eq!(next, local(tz, 2026, 3, 29, 3, 0), "fires at the change");
}

#[test]
fn a_forked_interval_run_is_scheduled_at_its_tick_not_when_the_loop_got_to_it() {
    let mut p = Plan::new();
    let mut c = Fake::new();
    let j = job(&mut p, "tick", Placement::Parallel);
    p.add_every(Duration::from_millis(100), Missed::Skip, Target::Job(j))
        .unwrap();
    p.start(c.now(), None);
    let start_wall = c.now().wall;
    // The loop wakes 30 ms after the tick.
    let fired = p.fire(c.go(Duration::from_millis(130)));
    let [Fired::Queued(r)] = fired.as_slice() else {
        panic!("{fired:?}")
    };
    assert_eq!(
        p.run(*r).unwrap().scheduled,
        start_wall + chrono::Duration::milliseconds(100)
    );
}

#[test]
fn pinned_runs_are_dropped_at_a_reload_not_handed_over() {
    let c = Fake::new();
    let (mut p, lane) = plan_with_default();
    let j = p
        .add_job(JobDef {
            name: "m".into(),
            placement: Placement::Lane(lane),
            overlap: true,
        })
        .unwrap();
    p.start(c.now(), None);
    let first = p.ask(j, None, c.now().wall, Trigger::Asked).unwrap();
    let pinned = p.ask(j, None, c.now().wall, Trigger::Asked).unwrap();
    let plain = p.ask(j, None, c.now().wall, Trigger::Asked).unwrap();
    p.describe(pinned, Some("App\\Msg".into()), true);
    assert_eq!(p.startable(), vec![first]);
    p.started(first, 10, c.now());
    let (h, dropped) = p.hand_over(c.now());
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].id, pinned);
    assert_eq!(dropped[0].label.as_deref(), Some("App\\Msg"));
    assert_eq!(
        h.queued.len(),
        1,
        "only the plain run ({plain:?}) is handed over"
    );
}
