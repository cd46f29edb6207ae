//! The pool's decisions, driven by hand: a fake in place of the runtime's children table records
//! what the pool sends, signals and arms; events are fed as the runtime would feed them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::*;
use crate::core::child::Reaped;
use crate::core::deadline::{Deadline, Stop};
use crate::core::outcome::Outcome;
use crate::core::runtime::ChildId;
use crate::core::sys::ExitStatus;
use crate::core::wire::FrameDecoder;

#[derive(Default)]
struct Fake {
    /// Messages each worker was sent, in order.
    inbox: HashMap<ChildId, Vec<Message>>,
    signals: Vec<(ChildId, Signal)>,
    armed: HashMap<ChildId, Deadline>,
    /// Workers whose channel is broken.
    broken: Vec<ChildId>,
    /// Workers the pool found lying, and why.
    broken_for: Vec<(ChildId, String)>,
}

impl Workers for Fake {
    fn post(&mut self, w: ChildId, frames: &[u8]) -> bool {
        if self.broken.contains(&w) {
            return false;
        }
        let mut d = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        d.push(frames, &mut out).unwrap();
        self.inbox.entry(w).or_default().extend(out);
        true
    }
    fn signal_group(&mut self, w: ChildId, sig: Signal) {
        self.signals.push((w, sig));
    }
    fn arm(&mut self, w: ChildId, deadline: Deadline, _start: Instant) {
        self.armed.insert(w, deadline);
    }
    fn disarm(&mut self, w: ChildId) {
        self.armed.remove(&w);
    }
    fn break_channel(&mut self, w: ChildId, why: String) {
        self.broken_for.push((w, why));
    }
}

impl Fake {
    /// Ids of the tasks worker `w` was sent.
    fn tasks(&self, w: ChildId) -> Vec<u64> {
        self.inbox
            .get(&w)
            .map(|m| {
                m.iter()
                    .filter_map(|m| match m {
                        Message::Task { id, .. } => Some(*id),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn stops(&self, w: ChildId) -> usize {
        self.inbox
            .get(&w)
            .map_or(0, |m| m.iter().filter(|m| **m == Message::Stop).count())
    }
}

fn config(workers: usize) -> Config {
    Config {
        workers,
        deadline: None,
        max_jobs: None,
        max_memory: None,
        ttl: None,
        idle_ttl: None,
        retries: 0,
        queue_size: 100,
        prefetch: 8,
        max_start_failures: 5,
    }
}

/// A pool with `n` workers forked and ready; their ids are 0..n.
fn ready_pool(config: Config, fake: &mut Fake) -> (Pool, Vec<ChildId>) {
    let mut pool = Pool::new(config);
    let n = pool.missing(Instant::now());
    let ids: Vec<ChildId> = (0..n as u32).map(ChildId::for_test).collect();
    for (k, id) in ids.iter().enumerate() {
        let number = pool.next_number();
        pool.add_worker(number, *id, 1000 + k as i32);
        pool.on_messages(*id, vec![Message::Ready], fake);
    }
    (pool, ids)
}

fn submit(pool: &mut Pool, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| pool.submit(0, b"i:1;".to_vec()).unwrap())
        .collect()
}

fn ended(id: u64) -> Vec<Message> {
    vec![
        Message::Value {
            format: 0,
            bytes: b"i:2;".to_vec(),
        },
        Message::TaskEnd {
            id,
            cpu_ns: 1,
            rss: 1 << 20,
        },
    ]
}

fn reaped(signal: Option<i32>, stopped: Option<(Deadline, Stop)>) -> Reaped {
    Reaped {
        messages: Vec::new(),
        channel_error: None,
        status: ExitStatus {
            code: if signal.is_none() { Some(0) } else { None },
            signal,
            core_dumped: false,
            cpu: Duration::ZERO,
            max_rss: 0,
        },
        observed_ns: sys::monotonic_ns(),
        stopped,
    }
}

#[test]
fn a_short_queue_goes_one_task_per_worker() {
    let mut fake = Fake::default();
    let (mut pool, w) = ready_pool(config(3), &mut fake);
    submit(&mut pool, 2);
    pool.service(Instant::now(), &mut fake);
    let counts: Vec<usize> = w.iter().map(|id| fake.tasks(*id).len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 2);
    assert!(counts.iter().all(|&c| c <= 1), "{counts:?}");
    assert_eq!(pool.running(), 2);
}

#[test]
fn a_backlog_fills_only_workers_whose_tasks_have_been_short() {
    let mut fake = Fake::default();
    let (mut pool, w) = ready_pool(config(2), &mut fake);
    let first = submit(&mut pool, 2);
    pool.service(Instant::now(), &mut fake);
    // Worker 0 finishes its (short) task; worker 1's has not ended: no history.
    let on0 = fake.tasks(w[0])[0];
    pool.on_messages(w[0], ended(on0), &mut fake);
    assert_eq!(pool.take_finished().len(), 1);
    submit(&mut pool, 10);
    pool.service(Instant::now(), &mut fake);
    assert_eq!(fake.tasks(w[0]).len(), 1 + 8, "filled up to prefetch");
    assert_eq!(
        fake.tasks(w[1]).len(),
        1,
        "no history, nothing queued behind its task"
    );
    assert_eq!(pool.queued(), 2);
    assert!(first.contains(&on0));
}

#[test]
fn prefetch_never_overruns_max_jobs_and_the_worker_is_stopped_after_them() {
    let mut fake = Fake::default();
    let mut c = config(1);
    c.max_jobs = Some(3);
    let (mut pool, w) = ready_pool(c, &mut fake);
    submit(&mut pool, 1);
    pool.service(Instant::now(), &mut fake);
    pool.on_messages(w[0], ended(1), &mut fake);
    submit(&mut pool, 6);
    pool.service(Instant::now(), &mut fake);
    // max_jobs 3 less up to 10 % jitter (none below 10): exactly 3 tasks in all.
    assert_eq!(fake.tasks(w[0]), vec![1, 2, 3]);
    pool.on_messages(w[0], [ended(2), ended(3)].concat(), &mut fake);
    pool.service(Instant::now(), &mut fake);
    assert_eq!(fake.stops(w[0]), 1, "recycled once idle after 3 tasks");
    pool.on_exit(w[0], reaped(None, None), &mut fake);
    assert_eq!(pool.counters().recycled, 1);
    assert_eq!(pool.missing(Instant::now()), 1, "a fresh worker is wanted");
}

#[test]
fn a_crash_retries_the_running_task_and_gives_back_the_ones_it_had_not_begun() {
    let mut fake = Fake::default();
    let mut c = config(1);
    c.retries = 1;
    let (mut pool, w) = ready_pool(c, &mut fake);
    submit(&mut pool, 1);
    pool.service(Instant::now(), &mut fake);
    pool.on_messages(w[0], ended(1), &mut fake);
    assert_eq!(pool.take_finished()[0].id, 1);
    submit(&mut pool, 4);
    pool.service(Instant::now(), &mut fake);
    assert_eq!(fake.tasks(w[0]), vec![1, 2, 3, 4, 5]);
    pool.on_exit(w[0], reaped(Some(libc::SIGSEGV), None), &mut fake);
    assert!(
        pool.take_finished().is_empty(),
        "task 2 is retried, not finished"
    );
    assert_eq!(pool.counters().retried, 1);
    assert_eq!(pool.queued(), 4, "2 (retry) then 3, 4, 5 unrun, in order");
    let mut fake2 = Fake::default();
    let id = ChildId::for_test(9);
    let n = pool.next_number();
    pool.add_worker(n, id, 2000);
    pool.on_messages(id, vec![Message::Ready], &mut fake2);
    pool.service(Instant::now(), &mut fake2);
    assert_eq!(
        fake2.tasks(id),
        vec![2],
        "no history on the new worker: one at a time"
    );
    pool.on_exit(id, reaped(Some(libc::SIGSEGV), None), &mut fake2);
    let done = pool.take_finished();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, 2);
    assert_eq!(done[0].attempts, 2);
    assert_eq!(done[0].report.outcome, Outcome::Signal);
}

#[test]
fn a_task_deadline_is_armed_at_its_start_and_disarmed_at_its_end() {
    let mut fake = Fake::default();
    let mut c = config(1);
    let limits = Deadline {
        timeout: Duration::from_millis(100),
        grace: Duration::from_millis(10),
    };
    c.deadline = Some(limits);
    c.retries = 3;
    let (mut pool, w) = ready_pool(c, &mut fake);
    submit(&mut pool, 2);
    pool.service(Instant::now(), &mut fake);
    assert_eq!(fake.armed.get(&w[0]), Some(&limits));
    pool.on_messages(w[0], ended(1), &mut fake);
    assert!(fake.armed.is_empty(), "task 1 ended in time");
    pool.service(Instant::now(), &mut fake);
    assert_eq!(fake.armed.get(&w[0]), Some(&limits), "task 2 armed");
    // The runtime stopped the worker at the deadline: a timeout, never retried.
    pool.on_exit(
        w[0],
        reaped(Some(libc::SIGKILL), Some((limits, Stop::TermThenKill))),
        &mut fake,
    );
    let done = pool.take_finished();
    let last = done.last().unwrap();
    assert_eq!(last.id, 2);
    assert_eq!(last.report.outcome, Outcome::Timeout);
    assert_eq!(last.attempts, 1);
    assert_eq!(pool.counters().timed_out, 1);
}

#[test]
fn workers_dying_at_start_back_off_then_stop_the_pool_and_fail_what_waits() {
    let mut fake = Fake::default();
    let mut pool = Pool::new(config(1));
    let queued = submit(&mut pool, 3);
    let mut now = Instant::now();
    for k in 0..5u32 {
        assert_eq!(pool.missing(now), 1, "attempt {k}");
        let id = ChildId::for_test(k);
        let n = pool.next_number();
        pool.add_worker(n, id, 3000 + k as i32);
        pool.on_messages(id, vec![], &mut fake);
        pool.on_exit(id, reaped(None, None), &mut fake);
        if k < 4 {
            assert_eq!(pool.missing(now), 0, "backing off");
            now = pool.next_timer(now).expect("a respawn timer");
            assert_eq!(
                pool.next_timer(now),
                None,
                "nothing to wake for once it is due"
            );
        }
    }
    let cause = pool.stopped().expect("stopped").to_string();
    // A worker still starting when the pool stopped is killed; its death changes nothing.
    let late = ChildId::for_test(99);
    let n = pool.next_number();
    pool.add_worker(n, late, 4000);
    pool.on_exit(late, reaped(Some(libc::SIGKILL), None), &mut fake);
    assert_eq!(pool.stopped(), Some(cause.as_str()));
    assert!(
        cause.contains("5 workers in a row died before they were ready"),
        "{cause}"
    );
    let done = pool.take_finished();
    assert_eq!(done.iter().map(|f| f.id).collect::<Vec<_>>(), queued);
    assert!(done
        .iter()
        .all(|f| f.attempts == 0 && f.report.cause().starts_with("not run:")));
    assert_eq!(pool.missing(now), 0, "no more forks");
    assert_eq!(
        pool.submit(0, vec![]),
        Err(Refused::Stopped(cause)),
        "and no more tasks"
    );
}

#[test]
fn close_hands_back_what_waits_and_stops_idle_workers_while_busy_ones_finish() {
    let mut fake = Fake::default();
    let (mut pool, w) = ready_pool(config(2), &mut fake);
    submit(&mut pool, 1);
    pool.service(Instant::now(), &mut fake);
    let busy = if fake.tasks(w[0]).is_empty() {
        w[1]
    } else {
        w[0]
    };
    let idle = if busy == w[0] { w[1] } else { w[0] };
    submit(&mut pool, 2);
    let back = pool.close(false, &mut fake);
    assert_eq!(back.iter().map(|u| u.id).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(fake.stops(idle), 1);
    assert_eq!(fake.stops(busy), 0, "it finishes its task first");
    pool.on_messages(busy, ended(1), &mut fake);
    pool.service(Instant::now(), &mut fake);
    assert_eq!(fake.stops(busy), 1);
    assert_eq!(
        pool.missing(Instant::now()),
        0,
        "nothing is forked while closing"
    );
    assert!(fake.signals.is_empty(), "a graceful close kills nothing");
    assert_eq!(pool.submit(0, vec![]), Err(Refused::Closed));
}

#[test]
fn kill_signals_every_worker_and_hands_back_prefetched_tasks() {
    let mut fake = Fake::default();
    let (mut pool, w) = ready_pool(config(1), &mut fake);
    submit(&mut pool, 1);
    pool.service(Instant::now(), &mut fake);
    pool.on_messages(w[0], ended(1), &mut fake);
    assert_eq!(pool.take_finished()[0].id, 1);
    submit(&mut pool, 3);
    pool.service(Instant::now(), &mut fake);
    assert_eq!(fake.tasks(w[0]), vec![1, 2, 3, 4]);
    let back = pool.close(true, &mut fake);
    assert_eq!(back.iter().map(|u| u.id).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(fake.signals, vec![(w[0], Signal::SIGKILL)]);
    pool.on_exit(w[0], reaped(Some(libc::SIGKILL), None), &mut fake);
    let done = pool.take_finished();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, 2);
    assert_eq!(pool.workers_left(), 0);
    assert!(pool.idle());
}

#[test]
fn a_full_queue_refuses_and_a_broken_worker_gives_its_tasks_back() {
    let mut fake = Fake::default();
    let mut c = config(1);
    c.queue_size = 2;
    let (mut pool, w) = ready_pool(c, &mut fake);
    submit(&mut pool, 2);
    assert_eq!(pool.submit(0, vec![]), Err(Refused::Full));
    fake.broken.push(w[0]);
    pool.service(Instant::now(), &mut fake);
    assert_eq!(pool.queued(), 2, "nothing was lost on a broken channel");
    assert_eq!(pool.running(), 0);
}

#[test]
fn a_forged_end_of_task_breaks_the_workers_channel_and_fails_only_its_task() {
    let mut fake = Fake::default();
    let (mut pool, w) = ready_pool(config(1), &mut fake);
    submit(&mut pool, 2);
    pool.service(Instant::now(), &mut fake);
    pool.on_messages(w[0], ended(999), &mut fake);
    assert_eq!(fake.broken_for.len(), 1);
    assert!(fake.broken_for[0]
        .1
        .contains("task 999 ended while it ran task 1"));
    assert!(
        pool.take_finished().is_empty(),
        "no task is credited with the forged end"
    );
    assert_eq!(pool.running(), 1);
}

#[test]
fn a_worker_slower_to_start_than_its_ttl_still_runs_a_task_before_it_is_retired() {
    let mut fake = Fake::default();
    let mut c = config(1);
    c.ttl = Some(Duration::from_nanos(1));
    let (mut pool, w) = ready_pool(c, &mut fake);
    submit(&mut pool, 1);
    pool.service(Instant::now() + Duration::from_secs(1), &mut fake);
    assert_eq!(
        fake.tasks(w[0]),
        vec![1],
        "it gets the task although its ttl is long past"
    );
    assert_eq!(fake.stops(w[0]), 0);
    pool.on_messages(w[0], ended(1), &mut fake);
    pool.service(Instant::now() + Duration::from_secs(1), &mut fake);
    assert_eq!(fake.stops(w[0]), 1, "then it is retired");
}

#[test]
fn idle_ttl_never_takes_a_worker_away_from_a_queued_task() {
    let mut fake = Fake::default();
    let mut c = config(1);
    c.idle_ttl = Some(Duration::from_nanos(1));
    let (mut pool, w) = ready_pool(c, &mut fake);
    submit(&mut pool, 1);
    pool.service(Instant::now() + Duration::from_secs(1), &mut fake);
    assert_eq!(fake.tasks(w[0]), vec![1]);
    assert_eq!(fake.stops(w[0]), 0);
    pool.on_messages(w[0], ended(1), &mut fake);
    pool.service(Instant::now() + Duration::from_secs(1), &mut fake);
    assert_eq!(fake.stops(w[0]), 1, "idle with nothing queued: retired");
}
