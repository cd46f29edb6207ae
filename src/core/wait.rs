//! Waiting for jobs without busy polling: one `poll(2)` over every job's channel (read as data
//! arrives, so a child never blocks on a full socket) and its pidfd (readable once it exits).
//!
//! Also home of the detached jobs: handles dropped while their child still runs. They are reaped
//! here, never left as zombies: at every Forklift call (`reap_detached`) and, blocking, when the
//! request ends (`settle_detached`).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::core::error::{Error, Result};
use crate::core::process::{forget_inboxes, open_inboxes, Job};
use crate::core::sys;

/// How often a job is checked on kernels without pidfd (< 5.3), where its exit cannot be polled.
const NO_PIDFD_TICK: Duration = Duration::from_millis(5);

/// Waits until one of `jobs` has finished (it is then reaped and has its report) or `deadline`
/// passes. Returns the index of a finished job, or `None` at the deadline.
pub fn wait_first(jobs: &mut [&mut Job], deadline: Option<Instant>) -> Result<Option<usize>> {
    for job in jobs.iter() {
        job.check_owner()?;
    }
    let mut fds = Vec::new();
    let mut ready = Vec::new();
    loop {
        if let Some(i) = jobs.iter().position(|j| j.report().is_some()) {
            return Ok(Some(i));
        }
        // Every open channel of this process, not only those of `jobs`: see process::INBOXES.
        let inboxes = open_inboxes();
        fds.clear();
        fds.extend(inboxes.iter().filter_map(|i| i.borrow().fd()));
        let channels = fds.len();
        let mut pidfd_of = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            if let Some(fd) = job.pidfd() {
                fds.push(fd);
                pidfd_of.push(i);
            }
        }
        let blind = jobs.iter().any(|j| !j.has_pidfd());
        let tick = blind.then(|| Instant::now() + NO_PIDFD_TICK);
        // Wake for the caller's deadline, the no-pidfd tick, and every job's timeout or grace end.
        let poll_deadline = [deadline, tick]
            .into_iter()
            .chain(inboxes.iter().map(|i| i.borrow().next_deadline()))
            .flatten()
            .min();
        sys::poll_readable(&fds, poll_deadline, &mut ready).map_err(|e| Error::sys("poll", e))?;
        for (inbox, _) in inboxes.iter().zip(&ready[..channels]).filter(|(_, r)| **r) {
            inbox.borrow_mut().pump();
        }
        let now = Instant::now();
        for inbox in &inboxes {
            inbox.borrow_mut().enforce(now);
        }
        let mut exited = ready[channels..]
            .iter()
            .position(|r| *r)
            .map(|k| pidfd_of[k]);
        if blind && exited.is_none() {
            exited = jobs.iter().position(|j| !j.has_pidfd() && j.has_exited());
        }
        if let Some(i) = exited {
            jobs[i].finish()?;
            return Ok(Some(i));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// Waits for one job to finish and returns its report.
pub fn wait_one(job: &mut Job) -> Result<&crate::core::outcome::Report> {
    wait_first(&mut [&mut *job], None)?;
    Ok(job
        .report()
        .expect("wait_first without deadline returns a finished job"))
}

thread_local! {
    static DETACHED: RefCell<Vec<Job>> = const { RefCell::new(Vec::new()) };
}

/// Takes over a job whose handle is gone; it will be reaped, not left a zombie.
pub fn detach(job: Job) {
    if job.report().is_some() || job.check_owner().is_err() {
        return;
    }
    DETACHED.with(|d| d.borrow_mut().push(job));
}

/// Keeps the deadlines that are due now, of every job of this process. Never blocks.
pub fn enforce_deadlines() {
    if !crate::core::process::any_deadline() {
        return;
    }
    let now = Instant::now();
    for inbox in open_inboxes() {
        inbox.borrow_mut().enforce(now);
    }
}

/// Reaps the detached jobs that have exited; reads the channels of the others. Never blocks.
pub fn reap_detached() {
    enforce_deadlines();
    DETACHED.with(|d| {
        let mut d = d.borrow_mut();
        d.retain_mut(|job| {
            job.pump();
            !(job.has_exited() && job.finish().is_ok())
        });
    });
}

/// Waits for every detached job to finish (when the request ends: an accepted job is run).
pub fn settle_detached() {
    let mut jobs = DETACHED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    for job in jobs.iter_mut() {
        let _ = wait_one(job);
    }
}

/// In a new job child: the detached jobs are the parent's, not ours.
pub fn forget_inherited() {
    DETACHED.with(|d| d.borrow_mut().clear());
    forget_inboxes();
}
