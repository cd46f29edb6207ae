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
        Reach::Leader,
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
        Reach::Leader,
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
            Reach::Leader,
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
    p.add_every(
        Duration::from_millis(1500),
        Missed::Skip,
        Target::Inline(7),
        Reach::Leader,
    )
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
        Reach::Leader,
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
            Reach::Leader,
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
        Reach::Leader,
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
    p.add_every(
        Duration::from_millis(100),
        Missed::Skip,
        Target::Job(j),
        Reach::Leader,
    )
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

// --- one leader across hosts ---------------------------------------------------------------------

/// A plan with a cron line each minute, an interval timer of 10 s queueing a job, an inline
/// timer of the application (the leader's), a consumer's poll that reaches every host and the
/// lock check.
fn shared_plan(c: &Fake) -> (Plan, JobId, JobId, JobId) {
    let (mut p, l) = plan_with_default();
    let cron = job(&mut p, "cron", Placement::Lane(l));
    let tick = job(&mut p, "tick", Placement::Parallel);
    let work = job(&mut p, "work", Placement::Parallel);
    p.add_cron(
        Schedule::parse("* * * * *", Some("UTC")).unwrap(),
        Missed::Skip,
        cron,
        Reach::Leader,
    );
    p.add_every(secs(10), Missed::Skip, Target::Job(tick), Reach::Leader)
        .unwrap();
    p.add_every(secs(10), Missed::Skip, Target::Inline(0), Reach::Leader)
        .unwrap();
    p.add_every(secs(10), Missed::Skip, Target::Inline(1), Reach::EveryHost)
        .unwrap();
    p.add_every(
        secs(1),
        Missed::RunOnce,
        Target::Leadership,
        Reach::EveryHost,
    )
    .unwrap();
    p.start(c.now(), None);
    (p, cron, tick, work)
}

/// Fires as the dispatcher does: a due lock check alone (answered "no change"), then the rest.
fn fire_all(p: &mut Plan, now: Clock) -> Vec<Fired> {
    let mut fired = p.fire(now);
    if fired == [Fired::Leadership] {
        fired.extend(p.fire(now));
    }
    fired
}

fn queued_jobs(p: &Plan, fired: &[Fired]) -> Vec<JobId> {
    fired
        .iter()
        .filter_map(|f| match f {
            Fired::Queued(r) => Some(p.run(*r).unwrap().job),
            _ => None,
        })
        .collect()
}

#[test]
fn a_standby_fires_only_what_reaches_every_host_and_still_runs_what_is_asked() {
    let mut c = Fake::new();
    let (mut p, cron, _, work) = shared_plan(&c);
    p.stand_by();
    assert!(p.is_standby());
    assert_eq!(
        p.next_cron(cron),
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 10, 1, 0).unwrap())
    );
    assert_eq!(
        p.next_run(Target::Job(cron), c.now()),
        None,
        "status shows no next run: it is the leader's"
    );
    // 10:00:30 → 10:03:30 in steps of a second: three cron times and 18 ticks pass.
    let mut fired = Vec::new();
    for _ in 0..180 {
        let now = c.go(secs(1));
        fired.extend(fire_all(&mut p, now));
    }
    assert_eq!(
        fired.iter().filter(|f| **f == Fired::Leadership).count(),
        180,
        "the lock is checked each second"
    );
    assert_eq!(
        fired
            .iter()
            .filter(|f| matches!(f, Fired::Inline { callback: 1, .. }))
            .count(),
        18,
        "the every-host poll runs"
    );
    assert!(
        fired
            .iter()
            .all(|f| matches!(f, Fired::Leadership | Fired::Inline { callback: 1, .. })),
        "no cron run, no leader timer, nothing missed: {fired:?}"
    );
    assert_eq!(p.overruns(), 0, "the leader's times are not missed here");
    assert!(p.jobs().all(|(_, _, s)| s.missed == 0 && s.skipped == 0));
    // What application code asks for runs on every host.
    let r = p.ask(work, None, c.now().wall, Trigger::Asked).unwrap();
    assert_eq!(p.startable(), vec![r]);
    // Its wake is the next every-host entry, not a cron time in the past.
    assert_eq!(p.next_wake(c.now()), Some(c.now().mono + secs(1)));
}

#[test]
fn taking_the_lead_starts_the_schedule_at_that_instant_as_a_handover_does() {
    let mut c = Fake::new();
    let (mut p, cron, tick, _) = shared_plan(&c);
    p.stand_by();
    // Standby from 10:00:30 to 10:02:45: 10:01 and 10:02 were the other host's.
    let now = c.go(secs(135));
    let fired = fire_all(&mut p, now);
    assert!(!queued_jobs(&p, &fired).contains(&cron));
    p.lead(now);
    assert!(!p.is_standby());
    assert_eq!(
        p.next_cron(cron),
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 10, 3, 0).unwrap()),
        "cron times up to the takeover were the other host's"
    );
    assert!(
        fire_all(&mut p, c.go(Duration::from_millis(100)))
            .iter()
            .all(|f| *f == Fired::Leadership || matches!(f, Fired::Inline { callback: 1, .. })),
        "nothing of the leader's is made up at the takeover"
    );
    // The interval timers count from the takeover: first tick 10 s after it.
    assert_eq!(
        p.next_run(Target::Job(tick), now),
        Some(now.wall + chrono::Duration::seconds(10))
    );
    let fired = fire_all(&mut p, c.go(Duration::from_millis(9_900)));
    assert_eq!(queued_jobs(&p, &fired), vec![tick]);
    assert!(fired.contains(&Fired::Inline {
        callback: 0,
        missed: 0
    }));
    // 10:03:00 runs here, once.
    let now = c.go(secs(5));
    assert_eq!(
        now.wall,
        Utc.with_ymd_and_hms(2026, 3, 2, 10, 3, 0).unwrap()
    );
    let fired = fire_all(&mut p, now);
    let [r] = queued_jobs(&p, &fired)[..] else {
        panic!("{fired:?}")
    };
    assert_eq!(r, cron);
    assert!(
        p.jobs().all(|(_, _, s)| s.missed == 0),
        "the other host's times are not missed here"
    );
}

#[test]
fn leading_again_is_nothing_new_and_a_dispatcher_that_led_from_its_start_keeps_its_handover() {
    let mut c = Fake::new();
    let (mut p, l) = plan_with_default();
    let a = job(&mut p, "a", Placement::Lane(l));
    p.add_cron(
        Schedule::parse("* * * * *", Some("UTC")).unwrap(),
        Missed::Skip,
        a,
        Reach::Leader,
    );
    // A reload: the old dispatcher handled times up to 10:00:50; this one took the lock at its
    // start, so it never stood by and goes on from the handover, not from its own start.
    let h = Handover {
        until: Some(Utc.with_ymd_and_hms(2026, 3, 2, 9, 59, 50).unwrap()),
        ..Default::default()
    };
    p.start(c.now(), Some(&h));
    p.lead(c.now());
    let fired = fire_all(&mut p, c.now());
    assert_eq!(
        queued_jobs(&p, &fired),
        vec![a],
        "10:00 was nobody's yet: it runs"
    );
    // Held again at each check: the schedule goes on as it was.
    let next = p.next_cron(a);
    p.lead(c.go(secs(1)));
    assert_eq!(p.next_cron(a), next);
}

#[test]
fn losing_the_lead_keeps_the_runs_already_queued_and_stops_new_ones() {
    let mut c = Fake::new();
    let (mut p, l) = plan_with_default();
    let a = job(&mut p, "a", Placement::Lane(l));
    let long = job(&mut p, "long", Placement::Lane(l));
    p.add_cron(
        Schedule::parse("* * * * *", Some("UTC")).unwrap(),
        Missed::Skip,
        a,
        Reach::Leader,
    );
    p.start(c.now(), None);
    let busy = p.ask(long, None, c.now().wall, Trigger::Asked).unwrap();
    assert_eq!(p.startable(), vec![busy]);
    p.started(busy, 10, c.now());
    // 10:01 fires while this one leads; the lane is busy, so its run waits in the queue.
    let fired = fire_all(&mut p, c.go(secs(30)));
    let [Fired::Queued(queued)] = fired[..] else {
        panic!("{fired:?}")
    };
    p.stand_by();
    let now = c.go(secs(60));
    assert!(
        fire_all(&mut p, now).is_empty(),
        "10:02 is the new leader's"
    );
    p.ended(busy, "ok", true, 90.0, None, now);
    assert_eq!(
        p.startable(),
        vec![queued],
        "a run asked for while leading still runs"
    );
    assert_eq!(p.overruns(), 0);
}

#[test]
fn a_due_lock_check_fires_alone_so_that_the_leader_s_entries_wait_for_its_answer() {
    let mut c = Fake::new();
    let (mut p, cron, _, _) = shared_plan(&c);
    // The loop stalled from 10:00:30 to 10:01:10 (longer than a lock's lifetime): 10:01 is due,
    // and so is the check.
    let now = c.go(secs(40));
    assert_eq!(p.fire(now), vec![Fired::Leadership]);
    // Another host took the lock meanwhile: nothing of the leader's fires here.
    p.stand_by();
    let fired = p.fire(now);
    assert!(queued_jobs(&p, &fired).is_empty(), "{fired:?}");
    assert!(
        !fired
            .iter()
            .any(|f| matches!(f, Fired::Inline { callback: 0, .. })),
        "{fired:?}"
    );
    assert_eq!(
        p.next_cron(cron),
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 10, 1, 0).unwrap())
    );
}
