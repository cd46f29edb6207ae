//! The core's process handling with real forks, without PHP: outcomes decided from real exits,
//! real signals and real bytes on the channel, all supervised by the runtime's one loop. Run with
//! `--test-threads=1`: forking from a multi-threaded harness is what Forklift's own rules forbid.

use std::time::{Duration, Instant};

use forklift::core::deadline::{Deadline, Stop};
use forklift::core::outcome::{Outcome, Report};
use forklift::core::record::{ErrorRecord, E_WARNING};
use forklift::core::runtime::{self, ChildId};
use forklift::core::spawn::{fork_child, ChildEnd, Forked};
use forklift::core::sys;
use forklift::core::wire::Message;

/// Forks a child under `deadline` that runs `body` with its channel, then leaves with `_exit(code)`.
fn spawn_with(
    max_frame: usize,
    deadline: Option<Deadline>,
    body: impl FnOnce(&ChildEnd) -> i32,
) -> ChildId {
    match fork_child(deadline.map(|d| d.backstop())).expect("fork") {
        Forked::Parent(spawned) => {
            runtime::with(|rt| rt.adopt_job(spawned, max_frame, deadline)).expect("adopt")
        }
        Forked::Child(end) => {
            runtime::reset_in_child();
            let code = body(&end);
            sys::exit_now(code)
        }
    }
}

fn spawn(body: impl FnOnce(&ChildEnd) -> i32) -> ChildId {
    spawn_with(1 << 20, None, body)
}

/// Waits until one of `ids` has finished or `deadline` passes; the index of a finished one.
fn wait_first(ids: &[ChildId], deadline: Option<Instant>) -> Option<usize> {
    runtime::with(|rt| loop {
        if let Some(i) = rt.first_finished(ids.iter().copied()) {
            return Ok(Some(i));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        rt.turn(deadline)?;
    })
    .unwrap()
}

fn wait_one(id: ChildId) -> Report {
    wait_first(&[id], None);
    runtime::with(|rt| Ok(rt.take_report(id)))
        .unwrap()
        .expect("finished")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn value_and_warning_sent_by_a_child_arrive_with_an_ok_outcome() {
    let job = spawn(|end| {
        end.send(&Message::Error(ErrorRecord {
            level: E_WARNING,
            message: "disk almost full".into(),
            file: "/job.php".into(),
            line: 7,
            trace: vec![],
        }));
        end.send(&Message::Value {
            format: 0,
            bytes: b"s:2:\"hi\";".to_vec(),
        });
        end.send(&Message::Stats {
            peak_memory: 1234,
            finished_ns: sys::monotonic_ns(),
        });
        0
    });
    let report = wait_one(job);
    assert_eq!(report.outcome, Outcome::Ok);
    assert_eq!(report.value.as_ref().unwrap().1, b"s:2:\"hi\";");
    assert_eq!(report.errors[0].message, "disk almost full");
    assert_eq!(report.peak_memory, Some(1234));
    assert!(report.max_rss > 0);
}

#[test]
fn a_child_killed_by_a_signal_keeps_the_records_it_sent_before() {
    let job = spawn(|end| {
        end.send(&Message::Error(ErrorRecord {
            level: E_WARNING,
            message: "last words".into(),
            ..Default::default()
        }));
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
        0
    });
    let report = wait_one(job);
    assert_eq!(report.outcome, Outcome::Signal);
    assert_eq!(report.signal, Some(libc::SIGKILL));
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].message, "last words");
}

#[test]
fn a_large_value_does_not_deadlock_child_and_parent() {
    // Far larger than a socket buffer: the child blocks in send until the parent reads.
    let big = vec![b'x'; 900_000];
    let expected = big.clone();
    let job = spawn(move |end| {
        end.send(&Message::Value {
            format: 0,
            bytes: big,
        });
        0
    });
    let report = wait_one(job);
    assert_eq!(report.outcome, Outcome::Ok);
    assert_eq!(report.value.as_ref().unwrap().1, expected);
}

#[test]
fn garbage_on_the_channel_is_an_error_of_that_job_only() {
    let bad = spawn(|end| {
        sys::send_all(end.raw_fd(), &[5, 0, 0, 0, 200, 1, 2, 3, 4]).unwrap();
        0
    });
    let good = spawn(|end| {
        end.send(&Message::Value {
            format: 0,
            bytes: b"i:1;".to_vec(),
        });
        0
    });
    let bad_report = wait_one(bad);
    assert_eq!(bad_report.outcome, Outcome::Exception);
    assert!(bad_report
        .exception
        .unwrap()
        .message
        .contains("unknown frame kind 200"));
    assert_eq!(wait_one(good).outcome, Outcome::Ok);
}

#[test]
fn a_frame_cut_short_by_the_childs_death_is_reported_as_truncated() {
    let job = spawn(|end| {
        let frame = Message::Value {
            format: 0,
            bytes: vec![1; 100],
        }
        .encode();
        sys::send_all(end.raw_fd(), &frame[..50]).unwrap();
        0
    });
    let report = wait_one(job);
    assert_eq!(report.outcome, Outcome::Exception);
    assert!(report
        .exception
        .as_ref()
        .unwrap()
        .message
        .contains("ended inside a frame"));
}

#[test]
fn an_oversized_frame_fails_the_job_without_reading_it_all() {
    let job = spawn_with(1024, None, |end| {
        end.send(&Message::Value {
            format: 0,
            bytes: vec![0; 10_000],
        });
        0
    });
    let report = wait_one(job);
    assert_eq!(report.outcome, Outcome::Exception);
    assert!(report
        .exception
        .as_ref()
        .unwrap()
        .message
        .contains("forklift.max_frame_size is 1024 bytes"));
}

#[test]
fn wait_first_returns_the_job_that_ends_first_and_honours_a_deadline() {
    let (r, w) = nix::unistd::pipe().unwrap();
    let w_raw = std::os::fd::AsRawFd::as_raw_fd(&w);
    let slow = spawn(move |_| {
        // Blocks until the parent closes its write end (ours is closed first).
        // The child's copy of the write end must go, or its read would never see end-of-file.
        let _ = nix::unistd::close(w_raw);
        let mut b = [0u8; 1];
        let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b);
        0
    });
    let fast = spawn(|_| 4);
    let started = Instant::now();
    assert_eq!(wait_first(&[slow, fast], None), Some(1));
    assert_eq!(wait_one(fast).exit_code, Some(4));
    let none = wait_first(&[slow], Some(Instant::now() + ms(30)));
    assert_eq!(none, None, "the slow job is still blocked on its pipe");
    assert!(started.elapsed() >= ms(30));
    drop(w);
    assert_eq!(wait_one(slow).exit_code, Some(0));
}

#[test]
fn a_deadline_is_kept_by_sigterm_and_the_report_says_so() {
    let job = spawn_with(
        1 << 20,
        Some(Deadline {
            timeout: ms(50),
            grace: ms(2000),
        }),
        |_| {
            std::thread::sleep(Duration::from_secs(30));
            0
        },
    );
    let started = Instant::now();
    let report = wait_one(job);
    assert_eq!(report.outcome, Outcome::Timeout);
    assert_eq!(report.signal, Some(libc::SIGTERM));
    assert_eq!(report.deadline, Some((0.05, Stop::Term)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no SIGKILL needed"
    );
}

#[test]
fn a_job_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let job = spawn_with(
        1 << 20,
        Some(Deadline {
            timeout: ms(30),
            grace: ms(30),
        }),
        |_| {
            // SAFETY (test child): ignoring SIGTERM is a plain sigaction.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            std::thread::sleep(Duration::from_secs(30));
            0
        },
    );
    let report = wait_one(job);
    assert_eq!(report.outcome, Outcome::Timeout);
    assert_eq!(report.signal, Some(libc::SIGKILL));
    assert_eq!(report.deadline, Some((0.03, Stop::TermThenKill)));
}

#[test]
fn a_job_dies_by_its_own_timer_while_its_parent_is_busy_and_is_reported_as_timed_out() {
    let limits = Deadline {
        timeout: ms(50),
        grace: ms(50),
    };
    let job = spawn_with(1 << 20, Some(limits), |_| {
        std::thread::sleep(Duration::from_secs(30));
        0
    });
    let pid = runtime::with(|rt| Ok(rt.pid())).unwrap();
    // The parent is "busy in PHP code": it does not enter the loop until well past the backstop.
    let busy_until = Instant::now() + limits.backstop() + ms(400);
    while Instant::now() < busy_until {
        std::hint::spin_loop();
    }
    assert_eq!(pid, sys::current_pid());
    let report = wait_one(job);
    assert_eq!(report.outcome, Outcome::Timeout);
    assert_eq!(report.signal, Some(libc::SIGKILL));
    assert_eq!(report.deadline, Some((0.05, Stop::OwnTimer)));
    assert!(
        report.duration <= limits.backstop().as_secs_f64() + 0.001,
        "duration {} is when it died, not when the parent looked",
        report.duration
    );
}

#[test]
fn a_thousand_concurrent_jobs_are_all_reaped_with_their_values() {
    sys::raise_nofile_limit();
    let ids: Vec<ChildId> = (0..1000u32)
        .map(|n| {
            spawn(move |end| {
                end.send(&Message::Value {
                    format: 0,
                    bytes: n.to_le_bytes().to_vec(),
                });
                0
            })
        })
        .collect();
    let mut left: Vec<(u32, ChildId)> = (0..1000u32).zip(ids).collect();
    while !left.is_empty() {
        let ids: Vec<ChildId> = left.iter().map(|(_, id)| *id).collect();
        let i = wait_first(&ids, None).unwrap();
        let (n, id) = left.swap_remove(i);
        let report = runtime::with(|rt| Ok(rt.take_report(id))).unwrap().unwrap();
        assert_eq!(report.outcome, Outcome::Ok);
        assert_eq!(report.value.unwrap().1, n.to_le_bytes());
    }
    // Nothing left behind: no zombie children.
    assert!(matches!(
        nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
        Err(nix::errno::Errno::ECHILD)
    ));
}

#[test]
fn a_child_never_reads_the_channels_it_inherited_from_its_parent() {
    let (r, w) = nix::unistd::pipe().unwrap();
    let w_raw = std::os::fd::AsRawFd::as_raw_fd(&w);
    let sibling = spawn(move |end| {
        let _ = nix::unistd::close(w_raw);
        let mut b = [0u8; 1];
        let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b);
        end.send(&Message::Value {
            format: 0,
            bytes: b"mine".to_vec(),
        });
        0
    });
    // A second child forked behind Forklift's back (as pcntl_fork() does) that then uses
    // Forklift: it must get a fresh runtime, not its parent's children and channels.
    // SAFETY (test): the harness runs this test on one thread (--test-threads=1).
    let prober = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let (state, pid) = runtime::with(|rt| Ok((rt.job_state(sibling), rt.pid()))).unwrap();
            sys::exit_now((state.is_none() && pid == sys::current_pid()) as i32)
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let status = nix::sys::wait::waitpid(prober, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(prober, 1));
    drop(w);
    let report = wait_one(sibling);
    assert_eq!(report.value.unwrap().1, b"mine");
}

#[test]
fn a_job_child_leads_its_own_process_group() {
    let job = spawn(|_| {
        let me = nix::unistd::getpid();
        (nix::unistd::getpgrp() == me) as i32
    });
    assert_eq!(wait_one(job).exit_code, Some(1));
}
