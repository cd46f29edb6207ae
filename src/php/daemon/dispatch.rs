//! The dispatcher's loop. Each round: signals and socket requests that came in, runs that ended
//! (their JobResult, `onJobEnd`), timers and cron lines that are due (inline callbacks, runs
//! queued), runs that can start (forked, `onJobStart`), the stop; then one turn of the process's
//! runtime until the next thing is due. Application callbacks run here, between turns, with no
//! borrow of Forklift's state held; never inside a signal handler.
//!
//! Under `bin/forklift run` the supervisor's link is a source of the same loop (hello, go, reload
//! handover); alone, `run()` takes the pid file itself.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use ext_php_rs::exception::PhpException;
use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;
use ext_php_rs::zend::ExecutorGlobals;

use super::app::{aborting, call_app, guarded, say, take_abort, take_error, Abort};
use super::leader;
use super::log::{self, Level};
use super::runs::{collect_ended, fire_due, report_dropped, skips_summed, start_runs};
use super::Daemon;
use crate::core::daemon::control::{self, Control};
use crate::core::daemon::link::{Down, Handed, Link, Up};
use crate::core::daemon::pidfile::PidFile;
use crate::core::daemon::plan::{Clock, Handover, Target};
use crate::core::daemon::status::{unix, PoolStatus, Status};
use crate::core::reactor::READABLE;
use crate::core::runtime::{self, JobState, SourceId};
use crate::core::spawn;
use crate::core::sys;
use crate::php::exceptions::{from_core, invalid};
use crate::php::fork::max_frame;
use crate::php::pool::for_daemon;
use crate::php::{signals, zend};

/// Signals the daemon always owns while it runs.
const OWN: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

/// Grace between SIGTERM and SIGKILL for runs still going at the stop timeout.
const STOP_GRACE: Duration = Duration::from_secs(5);

thread_local! {
    /// The link to the supervisor, set in a dispatcher child right after its fork.
    pub(super) static LINK: RefCell<Option<Link>> = const { RefCell::new(None) };
    /// How many dispatchers the supervisor started before this one.
    static RESTARTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static SUPERVISOR: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
    static STARTED: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
    static STATE: RefCell<&'static str> = const { RefCell::new("running") };
}

/// The status table as JSON.
pub(super) fn status_json(d: &Daemon) -> String {
    serde_json::to_string(&status(d)).unwrap_or_else(|_| "{}".into())
}

/// The status table, from the plan, the runtime and /proc at this moment.
fn status(d: &Daemon) -> Status {
    let pools = pool_status(d);
    let s = d.inner.borrow();
    let mut st = Status {
        name: s.name.clone(),
        state: STATE.with(|x| x.borrow().to_string()),
        supervisor: SUPERVISOR.with(|c| c.get()),
        dispatcher: sys::current_pid(),
        dispatcher_started: STARTED.with(|c| c.get()),
        dispatcher_restarts: RESTARTS.with(|c| c.get()),
        dispatcher_rss: crate::core::daemon::status::rss_of(sys::current_pid()),
        pools,
        ..Default::default()
    };
    let schedule_of = |name: &str| {
        s.plan
            .job(name)
            .and_then(|id| s.jobs[id.0].schedule.clone())
    };
    st.fill_from(&s.plan, schedule_of);
    st.counters = s.counters.series();
    st.leader = s.leader.as_ref().map(|l| l.status());
    for (n, i) in s.inline.iter().enumerate() {
        let next = s.plan.next_run(Target::Inline(n), Clock::now());
        st.jobs.push(crate::core::daemon::status::JobStatus {
            name: i.name.clone(),
            next_run: next.map(unix),
            schedule: Some(format!("every {} s (in the dispatcher)", i.interval)),
            runs: i.runs,
            missed: i.overruns,
            last_duration: i.last_duration,
            last_error: i.last_error.clone(),
            ..Default::default()
        });
    }
    st
}

/// The daemon's pools, taken out of its state (their calls may run application code).
fn pools_of(d: &Daemon) -> Vec<Zval> {
    d.inner
        .borrow()
        .pools
        .iter()
        .map(Zval::shallow_clone)
        .collect()
}

/// The pools' part of the status.
fn pool_status(d: &Daemon) -> Vec<PoolStatus> {
    let pools = pools_of(d);
    pools.iter().filter_map(for_daemon::status).collect()
}

/// Between turns: the daemon's pools replace workers, take results and run their callbacks.
fn service_pools(d: &Daemon) {
    let pools = pools_of(d);
    for p in &pools {
        let Some(result) = guarded(|| for_daemon::service(p).is_ok()) else {
            return;
        };
        if !result {
            if let Some(why) = take_error() {
                say(
                    d,
                    Level::Error,
                    &format!("a pool's onResult callback threw: {why}"),
                );
            }
        }
    }
}

fn pools_idle(d: &Daemon) -> bool {
    d.inner.borrow().pools.iter().all(for_daemon::idle)
}

/// At the end of a stop: the pools are shut down (or killed, after the stop timeout).
fn close_pools(d: &Daemon, kill: bool) {
    let pools = pools_of(d);
    for p in &pools {
        match for_daemon::close(p, kill) {
            Ok(0) => {}
            Ok(n) => say(
                d,
                Level::Warning,
                &format!("a pool was killed at the stop timeout: {n} queued task(s) were not run"),
            ),
            Err(_) => {
                if let Some(why) = take_error() {
                    say(
                        d,
                        Level::Error,
                        &format!("a pool could not be shut down cleanly: {why}"),
                    );
                }
            }
        }
    }
}

/// Things the loop found, handled outside any borrow.
#[derive(Default)]
struct Round {
    signals: Vec<i32>,
    ready: Vec<(SourceId, crate::core::reactor::Event)>,
}

struct Loop {
    control: Option<Control>,
    link: Option<(Link, SourceId)>,
    pid_file: Option<PidFile>,
    stop_deadline: Option<Instant>,
    expired: bool,
    /// Runs ended in this dispatcher while a successor waits (a reload): reported upward.
    handed_over: bool,
    owned: Vec<i32>,
}

pub(super) fn run(d: &Daemon) -> PhpResult<i64> {
    {
        let s = d.inner.borrow();
        if let Some(pid) = s.running_in {
            return Err(invalid(format!(
                "Forklift\\Daemon::run(): this daemon already runs (in process {pid}); call run() \
                 once"
            )));
        }
    }
    let max_frame = max_frame()?;
    let me = sys::current_pid();
    STARTED.with(|c| c.set(unix(chrono::Utc::now())));
    let mut lp = Loop {
        control: None,
        link: None,
        pid_file: None,
        stop_deadline: None,
        expired: false,
        handed_over: false,
        owned: Vec::new(),
    };
    let link = LINK.with(|l| l.borrow_mut().take());
    let mut handover: Option<Handover> = None;
    let (name, pid_file_path, stop_timeout, restart) = {
        let s = d.inner.borrow();
        (
            s.name.clone(),
            s.pid_file.clone(),
            s.stop_timeout,
            s.restart,
        )
    };
    match link {
        Some(mut link) => {
            link.send(&Up::Hello {
                name: name.clone(),
                pid_file: pid_file_path.display().to_string(),
                stop_timeout,
                restart,
            });
            match link.wait::<Down>(None) {
                Some(Down::Go {
                    handover: h,
                    supervisor,
                    restarts,
                }) => {
                    handover = h.as_ref().map(Handover::from);
                    SUPERVISOR.with(|c| c.set(Some(supervisor)));
                    RESTARTS.with(|c| c.set(restarts));
                }
                Some(Down::Refuse { message }) => {
                    return Err(invalid(message));
                }
                _ => {
                    // The supervisor is gone (or sent nonsense): nothing to run for.
                    return Ok(1);
                }
            }
            let fd = link.raw_fd();
            spawn::close_in_children(fd);
            let sid = runtime::with(|rt| rt.add_source(fd, READABLE)).map_err(from_core)?;
            lp.link = Some((link, sid));
        }
        None => {
            let pf = PidFile::acquire(&pid_file_path, me).map_err(from_core)?;
            spawn::close_in_children(pf.fd());
            lp.pid_file = Some(pf);
        }
    }
    let result = serve(d, &mut lp, handover, max_frame);
    // Whatever happened: give back the signals, the socket, the pid file.
    runtime::with(|rt| {
        if let Some(c) = lp.control.take() {
            c.close(rt);
        }
        if let Some((link, sid)) = lp.link.take() {
            rt.remove_source(sid, link.raw_fd());
            spawn::keep_in_children(link.raw_fd());
        }
        rt.release_signals();
        Ok(())
    })
    .map_err(from_core)?;
    if let Some(pf) = lp.pid_file.take() {
        spawn::keep_in_children(pf.fd());
        pf.release();
    }
    d.inner.borrow_mut().running_in = None;
    if let Some(a) = take_abort() {
        if a == Abort::Fatal {
            // Cleaned up: pass the fatal error on to PHP, which ends the script as it would have.
            // SAFETY: nothing of ours that needs dropping lives in the frames this jumps over
            // (the loop's state was released above; `result` holds only a message).
            drop(result);
            unsafe { ext_php_rs::zend::bailout() }
        }
    }
    result
}

fn serve(
    d: &Daemon,
    lp: &mut Loop,
    handover: Option<Handover>,
    max_frame: usize,
) -> PhpResult<i64> {
    let name = d.inner.borrow().name.clone();
    d.inner.borrow_mut().running_in = Some(sys::current_pid());
    let mut own: Vec<i32> = OWN.to_vec();
    for (s, _) in &d.inner.borrow().handlers {
        if !own.contains(s) {
            own.push(*s);
        }
    }
    lp.owned = own.clone();
    let socket = control::socket_path(&d.inner.borrow().pid_file);
    runtime::with(|rt| {
        rt.own_signals(&own)?;
        lp.control = Some(Control::bind(&socket, rt)?);
        Ok(())
    })
    .map_err(from_core)?;
    d.inner
        .borrow_mut()
        .plan
        .start(Clock::now(), handover.as_ref());
    // Leader or standby before anything fires: a dispatcher that takes the lock now goes on
    // from the handover; one that does not leaves the schedule to the holder.
    leader::check(d);
    if let Some(a) = aborting() {
        return aborted(d, a);
    }
    zend::set_process_title(&format!("forklift: {name} dispatcher"));
    STATE.with(|s| *s.borrow_mut() = "running");
    if let Some((link, _)) = &lp.link {
        link.send(&Up::Ready);
    }
    say(
        d,
        Level::Info,
        &format!(
            "started (pid {}, status socket {})",
            sys::current_pid(),
            socket.display()
        ),
    );
    let on_started: Vec<Zval> = d
        .inner
        .borrow()
        .on_started
        .iter()
        .map(Zval::shallow_clone)
        .collect();
    for f in on_started {
        call_app(d, &f, &[], "onStart");
        if let Some(a) = aborting() {
            return aborted(d, a);
        }
    }
    // Runs onStart asked for start now, before a stop() it also asked for drops them.
    start_runs(d, max_frame)?;
    loop {
        let round = runtime::with(|rt| {
            Ok(Round {
                signals: rt.take_signals(),
                ready: rt.take_ready(),
            })
        })
        .map_err(from_core)?;
        for signo in round.signals {
            on_signal(d, lp, signo)?;
        }
        for (sid, _) in round.ready {
            on_source(d, lp, sid)?;
        }
        if let Some(a) = aborting() {
            return aborted(d, a);
        }
        if d.inner.borrow().stop_asked && !d.inner.borrow().plan.is_stopping() {
            begin_stop(d, lp, "stop() was called");
        }
        collect_ended(
            d,
            if lp.handed_over {
                lp.link.as_ref().map(|(l, _)| l)
            } else {
                None
            },
        )?;
        service_pools(d);
        fire_due(d)?;
        start_runs(d, max_frame)?;
        if let Some(a) = aborting() {
            return aborted(d, a);
        }
        // Stopping: done when nothing runs (pools idle too); at the stop timeout, what runs is
        // ended.
        let stopping = d.inner.borrow().plan.is_stopping();
        if stopping && d.inner.borrow().plan.is_idle() && (lp.expired || pools_idle(d)) {
            close_pools(d, lp.expired);
            let how = if lp.handed_over {
                "handed over"
            } else {
                "stopped"
            };
            say(d, Level::Info, &format!("{how}: every run has ended"));
            return Ok(0);
        }
        let now = Instant::now();
        if let Some(deadline) = lp.stop_deadline {
            if now >= deadline && !lp.expired {
                lp.expired = true;
                let ids: Vec<_> = d.inner.borrow().children.values().copied().collect();
                say(
                    d,
                    Level::Warning,
                    &format!(
                        "stop timeout passed: ending {} run(s) (SIGTERM, SIGKILL after {} s)",
                        ids.len(),
                        STOP_GRACE.as_secs()
                    ),
                );
                runtime::with(|rt| {
                    for id in ids {
                        rt.expire_job(id, STOP_GRACE);
                    }
                    Ok(())
                })
                .map_err(from_core)?;
                // Look again at once: with no run of its own left (only pools' tasks), the stop
                // ends now, killing the pools; nothing else would wake the loop for it.
                continue;
            }
        }
        let wake = {
            let s = d.inner.borrow();
            let clients =
                runtime::with(|rt| Ok(lp.control.as_mut().and_then(|c| c.expire(now, rt))))
                    .map_err(from_core)?;
            [
                s.plan.next_wake(Clock::now()),
                lp.stop_deadline.filter(|_| !lp.expired),
                clients,
            ]
            .into_iter()
            .flatten()
            .min()
        };
        if d.inner.borrow().stop_asked && !d.inner.borrow().plan.is_stopping() {
            continue;
        }
        let waited = runtime::with(|rt| rt.turn_unless_ready(wake, Some(&signals::interrupted)))
            .map_err(from_core)?;
        if !waited {
            if let Err(e) = signals::run_pending() {
                // A pcntl handler threw or exit() was called: stop, and say why.
                begin_stop(d, lp, "an exception left a signal handler");
                if ExecutorGlobals::has_exception() {
                    end_now(d, Duration::from_secs(1));
                    return Err(e);
                }
            }
        }
    }
}

/// Application code called `exit()` or died in the dispatcher: what runs is ended (SIGTERM to
/// its groups, SIGKILL a second later) and reaped, then `run()` gives the exit or the fatal error
/// back to PHP. Only Rust runs here (after a fatal error the engine may not be used).
fn aborted(d: &Daemon, a: Abort) -> PhpResult<i64> {
    let running = d.inner.borrow().children.len();
    let name = d.inner.borrow().name.clone();
    let why = match a {
        // PHP ends a fatal error at run time with the same unwinding as exit() (exit status 255).
        Abort::Exit if crate::php::zend::exit_status() == 255 => {
            "application code died of a fatal error (or called exit(255))"
        }
        Abort::Exit => "application code called exit()",
        Abort::Fatal => "application code died of a fatal error",
    };
    log::stderr(
        &name,
        "dispatcher",
        Level::Critical,
        &format!("{why} in the dispatcher: it stops now; {running} running run(s) are ended"),
    );
    end_now(d, Duration::from_secs(1));
    Err(PhpException::from(why.to_string()))
}

/// Something went wrong in the loop itself: what runs is ended (their groups killed after
/// `grace`) before the exception leaves `run()`, so no run is left without its supervisor.
fn end_now(d: &Daemon, grace: Duration) {
    let ids: Vec<_> = d
        .inner
        .borrow_mut()
        .children
        .drain()
        .map(|(_, c)| c)
        .collect();
    let _ = runtime::with(|rt| {
        for id in &ids {
            rt.expire_job(*id, grace);
        }
        while ids
            .iter()
            .any(|id| rt.job_state(*id) == Some(JobState::Running))
        {
            rt.turn(Some(Instant::now() + Duration::from_millis(100)))?;
        }
        for id in &ids {
            rt.take_report(*id);
        }
        Ok(())
    });
}

fn begin_stop(d: &Daemon, lp: &mut Loop, why: &str) {
    if d.inner.borrow().plan.is_stopping() {
        return;
    }
    let (dropped, timeout) = {
        let mut s = d.inner.borrow_mut();
        s.stop_asked = true;
        (s.plan.stop(), s.stop_timeout)
    };
    // Nothing is scheduled from now on: a standby may take over at once.
    leader::release(d, "stopping");
    STATE.with(|s| *s.borrow_mut() = "stopping");
    lp.stop_deadline = Some(Instant::now() + Duration::from_secs_f64(timeout));
    let running = d.inner.borrow().children.len();
    say(
        d,
        Level::Info,
        &format!(
            "stopping ({why}): no new runs; {running} running run(s) may finish within {timeout} s"
        ),
    );
    report_dropped(d, dropped, "the daemon is stopping");
    zend::set_process_title(&format!(
        "forklift: {} dispatcher (stopping)",
        d.inner.borrow().name
    ));
}

fn on_signal(d: &Daemon, lp: &mut Loop, signo: i32) -> PhpResult<()> {
    let handlers: Vec<Zval> = d
        .inner
        .borrow()
        .handlers
        .iter()
        .filter(|(s, _)| *s == signo)
        .map(|(_, f)| f.shallow_clone())
        .collect();
    for h in handlers {
        call_app(
            d,
            &h,
            &[&(signo as i64)],
            &format!("the handler of signal {signo}"),
        );
    }
    match signo {
        libc::SIGTERM | libc::SIGINT => {
            begin_stop(d, lp, &sys::signal_name(signo));
        }
        libc::SIGHUP if lp.link.is_none() => say(
            d,
            Level::Warning,
            "SIGHUP: a reload needs the supervisor (run the daemon with bin/forklift run); ignored",
        ),
        libc::SIGUSR1 => {
            let status = status_json(d);
            say(d, Level::Info, &format!("status: {status}"));
        }
        _ => {}
    }
    Ok(())
}

fn on_source(d: &Daemon, lp: &mut Loop, sid: SourceId) -> PhpResult<()> {
    if lp.control.as_ref().is_some_and(|c| c.owns(sid)) {
        let requests = runtime::with(|rt| {
            Ok(lp
                .control
                .as_mut()
                .map(|c| c.ready(sid, rt))
                .unwrap_or_default())
        })
        .map_err(from_core)?;
        for (client, request) in requests {
            let body = match request.as_str() {
                "status" => status_json(d),
                "metrics" => status(d).metrics(),
                "ping" => "pong\n".into(),
                other => {
                    format!("error: unknown request \"{other}\"; ask status, metrics or ping\n")
                }
            };
            runtime::with(|rt| {
                if let Some(c) = lp.control.as_mut() {
                    c.answer(client, body, rt);
                }
                Ok(())
            })
            .map_err(from_core)?;
        }
        return Ok(());
    }
    let Some((link, link_sid)) = lp.link.as_mut() else {
        return Ok(());
    };
    if *link_sid != sid {
        return Ok(());
    }
    let messages: Vec<Down> = link.receive();
    let closed = link.is_closed();
    for m in messages {
        match m {
            Down::HandOver => {
                let (h, pinned) = d.inner.borrow_mut().plan.hand_over(Clock::now());
                report_dropped(
                    d,
                    pinned,
                    "a reload (it carries arguments that only this dispatcher has)",
                );
                STATE.with(|s| *s.borrow_mut() = "reloading");
                lp.handed_over = true;
                // The successor answers status from now on.
                runtime::with(|rt| {
                    if let Some(c) = lp.control.take() {
                        c.close(rt);
                    }
                    Ok(())
                })
                .map_err(from_core)?;
                let running = h.running.len();
                // Before the answer: the new dispatcher, started on it, tries the lock at once.
                leader::release(d, "reload: handed over to the new dispatcher");
                if let Some((link, _)) = &lp.link {
                    link.send(&Up::Handed(Handed::from(&h)));
                }
                let timeout = d.inner.borrow().stop_timeout;
                lp.stop_deadline = Some(Instant::now() + Duration::from_secs_f64(timeout));
                say(
                    d,
                    Level::Info,
                    &format!(
                        "reload: handed over to the new dispatcher ({} queued run(s)); {running} \
                         running run(s) finish here",
                        h.queued.len()
                    ),
                );
                zend::set_process_title(&format!(
                    "forklift: {} dispatcher (old, finishing)",
                    d.inner.borrow().name
                ));
            }
            Down::EndedElsewhere { job } => {
                d.inner.borrow_mut().plan.ended_elsewhere(&job);
                skips_summed(d, &job);
            }
            Down::Go { .. } | Down::Refuse { .. } => {}
        }
    }
    if closed {
        // The supervisor is gone (its death signal ends us too); stop cleanly if we can.
        if let Some((link, sid)) = lp.link.take() {
            runtime::with(|rt| {
                rt.remove_source(sid, link.raw_fd());
                Ok(())
            })
            .map_err(from_core)?;
            spawn::keep_in_children(link.raw_fd());
        }
        begin_stop(d, lp, "the supervisor is gone");
    }
    Ok(())
}
