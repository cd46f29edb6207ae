//! The core's process handling with real forks, without PHP: outcomes decided from real exits,
//! real signals and real bytes on the channel. Run with `--test-threads=1`: forking from a
//! multi-threaded harness is what Forklift's own rules forbid.

use std::time::{Duration, Instant};

use forklift::core::ipc::Message;
use forklift::core::outcome::Outcome;
use forklift::core::process::{fork_job, Forked, Job, Reader};
use forklift::core::record::{ErrorRecord, E_WARNING};
use forklift::core::sys;
use forklift::core::wait::{wait_first, wait_one};

/// Forks a child that runs `body` with its channel fd, then leaves with `_exit(code)`.
fn spawn(body: impl FnOnce(&forklift::core::process::ChildEnd) -> i32) -> Job {
    match fork_job(1 << 20, None, Reader::Any).expect("fork") {
        Forked::Parent(job) => job,
        Forked::Child(end) => {
            let code = body(&end);
            sys::exit_now(code)
        }
    }
}

#[test]
fn value_and_warning_sent_by_a_child_arrive_with_an_ok_outcome() {
    let mut job = spawn(|end| {
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
    let report = wait_one(&mut job).unwrap();
    assert_eq!(report.outcome, Outcome::Ok);
    assert_eq!(report.value.as_ref().unwrap().1, b"s:2:\"hi\";");
    assert_eq!(report.errors[0].message, "disk almost full");
    assert_eq!(report.peak_memory, Some(1234));
    assert!(report.max_rss > 0);
}

#[test]
fn a_child_killed_by_a_signal_keeps_the_records_it_sent_before() {
    let mut job = spawn(|end| {
        end.send(&Message::Error(ErrorRecord {
            level: E_WARNING,
            message: "last words".into(),
            ..Default::default()
        }));
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
        0
    });
    let report = wait_one(&mut job).unwrap();
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
    let mut job = spawn(move |end| {
        end.send(&Message::Value {
            format: 0,
            bytes: big,
        });
        0
    });
    let report = wait_one(&mut job).unwrap();
    assert_eq!(report.outcome, Outcome::Ok);
    assert_eq!(report.value.as_ref().unwrap().1, expected);
}

#[test]
fn garbage_on_the_channel_is_an_error_of_that_job_only() {
    let mut bad = spawn(|end| {
        sys::send_all(end.raw_fd(), &[5, 0, 0, 0, 200, 1, 2, 3, 4]).unwrap();
        0
    });
    let mut good = spawn(|end| {
        end.send(&Message::Value {
            format: 0,
            bytes: b"i:1;".to_vec(),
        });
        0
    });
    let bad_report = wait_one(&mut bad).unwrap().clone();
    assert_eq!(bad_report.outcome, Outcome::Exception);
    assert!(bad_report
        .exception
        .unwrap()
        .message
        .contains("unknown frame kind 200"));
    assert_eq!(wait_one(&mut good).unwrap().outcome, Outcome::Ok);
}

#[test]
fn a_frame_cut_short_by_the_childs_death_is_reported_as_truncated() {
    let mut job = spawn(|end| {
        let frame = Message::Value {
            format: 0,
            bytes: vec![1; 100],
        }
        .encode();
        sys::send_all(end.raw_fd(), &frame[..50]).unwrap();
        0
    });
    let report = wait_one(&mut job).unwrap();
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
    let mut job = match fork_job(1024, None, Reader::Any).unwrap() {
        Forked::Parent(job) => job,
        Forked::Child(end) => {
            end.send(&Message::Value {
                format: 0,
                bytes: vec![0; 10_000],
            });
            sys::exit_now(0)
        }
    };
    let report = wait_one(&mut job).unwrap();
    assert_eq!(report.outcome, Outcome::Exception);
    assert!(report
        .exception
        .as_ref()
        .unwrap()
        .message
        .contains("over the limit of 1024 bytes"));
}

#[test]
fn wait_first_returns_the_job_that_ends_first_and_honours_a_deadline() {
    let (r, w) = nix::unistd::pipe().unwrap();
    let w_raw = std::os::fd::AsRawFd::as_raw_fd(&w);
    let mut slow = spawn(move |_| {
        // Blocks until the parent closes its write end (ours is closed first).
        // The child's copy of the write end must go, or its read would never see end-of-file.
        let _ = nix::unistd::close(w_raw);
        let mut b = [0u8; 1];
        let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b);
        0
    });
    let mut fast = spawn(|_| 4);
    let started = Instant::now();
    let idx = wait_first(&mut [&mut slow, &mut fast], None).unwrap();
    assert_eq!(idx, Some(1));
    assert_eq!(fast.report().unwrap().exit_code, Some(4));
    let none = wait_first(
        &mut [&mut slow],
        Some(Instant::now() + Duration::from_millis(30)),
    )
    .unwrap();
    assert_eq!(none, None, "the slow job is still blocked on its pipe");
    assert!(started.elapsed() >= Duration::from_millis(30));
    drop(w);
    assert_eq!(wait_one(&mut slow).unwrap().exit_code, Some(0));
}

#[test]
fn a_job_child_leads_its_own_process_group() {
    let mut job = spawn(|_| {
        let me = nix::unistd::getpid();
        (nix::unistd::getpgrp() == me) as i32
    });
    assert_eq!(wait_one(&mut job).unwrap().exit_code, Some(1));
}
