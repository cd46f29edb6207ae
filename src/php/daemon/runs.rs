//! The life of the runs in the dispatcher: asked for (`queue()`/`start()`, timers and cron lines
//! that fire), started (forked with their arguments and title, `onJobStart`), ended (their
//! JobResult, `onJobEnd`), or dropped visibly (a run that never started gets an `onJobEnd` whose
//! result is null). The loop in [`super::dispatch`] calls these between turns.

use std::time::Instant;

use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;

use super::app::{aborting, call_app, guarded, say, take_error};
use super::leader;
use super::log::Level;
use super::{Asked, Daemon, JobRun, State};
use crate::core::daemon::link::{Link, Up};
use crate::core::daemon::plan::{Clock, Fired, Placement, RunId, Target, Trigger};
use crate::core::daemon::status::unix;
use crate::core::runtime::{self, JobState};
use crate::core::spawn::{fork_child, Forked};
use crate::core::sys;
use crate::php::exceptions::{from_core, invalid};
use crate::php::result::JobResult;
use crate::php::{child, hooks, zend};

/// `queue()` / `start()`: a run of a job asked for by application code.
pub(super) fn ask(
    d: &Daemon,
    job: &str,
    placement: Option<Placement>,
    what: &str,
    asked: Asked,
) -> PhpResult<Option<i64>> {
    let mut s = d.inner.borrow_mut();
    if s.running_in.is_some_and(|pid| pid != sys::current_pid()) {
        return Err(invalid(format!(
            "{what}: called in process {}, not in the daemon's dispatcher ({}): a job cannot \
             queue runs of its daemon (return what it needs and queue from onJobEnd)",
            sys::current_pid(),
            s.running_in.unwrap_or(0)
        )));
    }
    let Some(id) = s.plan.job(job) else {
        let names: Vec<String> = s.plan.jobs().map(|(_, def, _)| def.name.clone()).collect();
        return Err(invalid(format!(
            "{what}: no job named \"{job}\"; define it with $daemon->job('{job}', fn () => ...) \
             (jobs now: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let now = Clock::now();
    match s.plan.ask(id, placement, now.wall, Trigger::Asked) {
        Ok(run) => {
            let pinned = !asked.args.is_empty();
            s.plan.describe(run, asked.label, pinned);
            if pinned {
                s.args.insert(run, asked.args);
            }
            Ok(Some(run.0 as i64))
        }
        Err(reason) => {
            drop(s);
            skipped(d, job, &reason);
            Ok(None)
        }
    }
}

/// A run not started by the overlap rule: the first is logged, the ones after it are counted and
/// summed up when the job next ends (a timer every 50 ms must not write 20 lines a second).
fn skipped(d: &Daemon, job: &str, reason: &str) {
    let first = {
        let mut s = d.inner.borrow_mut();
        let n = s.skips.entry(job.to_string()).or_insert(0);
        *n += 1;
        *n == 1
    };
    if first {
        say(
            d,
            Level::Notice,
            &format!("job {job} not started: {reason} (further skips are counted until it ends)"),
        );
    }
}

/// When a job ends: how many of its runs were skipped meanwhile, logged once.
pub(super) fn skips_summed(d: &Daemon, job: &str) {
    let n = d.inner.borrow_mut().skips.remove(job).unwrap_or(0);
    if n > 1 {
        say(
            d,
            Level::Notice,
            &format!(
                "job {job}: {} more run(s) were not started while it ran",
                n - 1
            ),
        );
    }
}

/// Runs asked for and never started (a stop, or a reload for runs that carry arguments): each
/// is logged and handed back visibly: its onJobEnd has no result.
pub(super) fn report_dropped(d: &Daemon, dropped: Vec<crate::core::daemon::plan::Run>, why: &str) {
    for r in dropped {
        let (name, event) = {
            let mut s = d.inner.borrow_mut();
            s.args.remove(&r.id);
            (s.plan.job_def(r.job).name.clone(), job_run_of(&s, &r, None))
        };
        say(
            d,
            Level::Warning,
            &format!("run of {name} (due {}) not started: {why}", r.scheduled),
        );
        emit(d, false, Some(event));
    }
}

pub(super) fn fire_due(d: &Daemon) -> PhpResult<()> {
    let mut fired = d.inner.borrow_mut().plan.fire(Clock::now());
    if fired == [Fired::Leadership] {
        // The lock's answer first; then what is due, as the leader or as a standby.
        leader::check(d);
        if aborting().is_some() {
            return Ok(());
        }
        fired = d.inner.borrow_mut().plan.fire(Clock::now());
    }
    for f in fired {
        match f {
            Fired::Inline { callback, .. } => {
                let (f, name, interval) = {
                    let s = d.inner.borrow();
                    let i = &s.inline[callback];
                    (i.callable.shallow_clone(), i.name.clone(), i.interval)
                };
                let started = Instant::now();
                let error = call_app(d, &f, &[], &format!("timer {name}"));
                let took = started.elapsed().as_secs_f64();
                {
                    let mut s = d.inner.borrow_mut();
                    let i = &mut s.inline[callback];
                    i.runs += 1;
                    i.last_duration = Some(took);
                    if error.is_some() {
                        i.last_error = error;
                    }
                }
                if took > interval {
                    let warn = {
                        let mut s = d.inner.borrow_mut();
                        let i = &mut s.inline[callback];
                        i.long_runs += 1;
                        i.warning_due().then(|| std::mem::take(&mut i.long_runs))
                    };
                    if let Some(n) = warn {
                        let more = if n > 1 {
                            format!(" ({n} such runs in the last minute; said once a minute)")
                        } else {
                            String::new()
                        };
                        say(
                            d,
                            Level::Warning,
                            &format!(
                                "timer {name}: its callback ran {took:.3} s, over its interval of \
                                 {interval} s (an overrun; the ticks it covered are skipped){more}"
                            ),
                        );
                    }
                }
            }
            Fired::Leadership => leader::check(d),
            Fired::Missed { target, count } => {
                let said = {
                    let mut s = d.inner.borrow_mut();
                    match target {
                        Target::Inline(n) => {
                            // Ticks a slow callback covered: said with its overrun warnings, at
                            // most once a minute (a receive that blocks each time is normal).
                            let i = &mut s.inline[n];
                            i.overruns += count;
                            i.missed_unsaid += count;
                            i.warning_due().then(|| {
                                let n = std::mem::take(&mut i.missed_unsaid);
                                format!(
                                    "timer {}: {n} tick(s) passed without a run (the loop or its \
                                     callback was late; said at most once a minute)",
                                    i.name
                                )
                            })
                        }
                        Target::Job(j) => Some(format!(
                            "{}: {count} scheduled time(s) passed without a run (the loop was late)",
                            s.plan.job_def(j).name
                        )),
                        Target::Leadership => Some(format!(
                            "the leader lock's check: {count} time(s) passed without a run (the loop was late)"
                        )),
                    }
                };
                if let Some(text) = said {
                    say(d, Level::Warning, &text);
                }
            }
            Fired::Skipped { job, reason } => {
                let name = d.inner.borrow().plan.job_def(job).name.clone();
                skipped(d, &name, &reason);
            }
            Fired::Queued(_) => {}
        }
    }
    Ok(())
}

/// The JobRun the events get.
fn job_run(s: &State, id: RunId, result: Option<JobResult>) -> Option<JobRun> {
    Some(job_run_of(s, s.plan.run(id)?, result))
}

pub(super) fn job_run_of(
    s: &State,
    run: &crate::core::daemon::plan::Run,
    result: Option<JobResult>,
) -> JobRun {
    let def = s.plan.job_def(run.job);
    JobRun {
        id: run.id.0,
        name: def.name.clone(),
        lane: match run.placement {
            Placement::Lane(l) => Some(s.plan.lane_name(l).to_string()),
            Placement::Parallel => None,
        },
        pid: run.pid.unwrap_or(0),
        trigger: run.trigger.name().to_string(),
        label: run.label.clone(),
        schedule: s.jobs[run.job.0].schedule.clone(),
        scheduled_at: unix(run.scheduled),
        started_at: run.started.map(|(w, _)| unix(w)).unwrap_or(0.0),
        result,
    }
}

pub(super) fn start_runs(d: &Daemon, max_frame: usize) -> PhpResult<()> {
    let startable = d.inner.borrow_mut().plan.startable();
    for id in startable {
        let (callable, deadline, soft, title, name, args) = {
            let mut s = d.inner.borrow_mut();
            let args = s.args.remove(&id).unwrap_or_default();
            let Some(run) = s.plan.run(id) else { continue };
            let spec = &s.jobs[run.job.0];
            let def = s.plan.job_def(run.job);
            let lane = match run.placement {
                Placement::Lane(l) => s.plan.lane_name(l).to_string(),
                Placement::Parallel => "parallel".to_string(),
            };
            let title = format!(
                "forklift: {} {lane} - {} - {}",
                s.name,
                def.name,
                run.label
                    .clone()
                    .or_else(|| spec.schedule.clone())
                    .unwrap_or_else(|| run.trigger.name().to_string())
            );
            (
                spec.callable.shallow_clone(),
                spec.deadline,
                spec.soft_timeout,
                title,
                def.name.clone(),
                args,
            )
        };
        let Some(prepared) = guarded(|| hooks::run_prepare().is_ok()) else {
            // exit() or a fatal error in the hook: the run is not started, the loop ends.
            not_started(
                d,
                id,
                &name,
                "an on_fork() prepare hook ended the dispatcher".into(),
            );
            return Ok(());
        };
        if !prepared {
            let why = take_error().unwrap_or_default();
            not_started(
                d,
                id,
                &name,
                format!("an on_fork() prepare hook threw: {why}"),
            );
            continue;
        }
        let backstop = deadline.map(|dl| dl.backstop());
        match fork_child(backstop) {
            Ok(Forked::Child(end)) => {
                zend::set_process_title(&title);
                child::run(end, &callable, &args, max_frame, soft)
            }
            Ok(Forked::Parent(spawned)) => {
                let pid = spawned.pid.as_raw();
                let cid = runtime::with(|rt| rt.adopt_job(spawned, max_frame, deadline))
                    .map_err(from_core)?;
                let event = {
                    let mut s = d.inner.borrow_mut();
                    s.children.insert(id, cid);
                    s.plan.started(id, pid, Clock::now());
                    job_run(&s, id, None)
                };
                if guarded(|| hooks::run_parent().is_ok()) == Some(false) {
                    if let Some(why) = take_error() {
                        say(
                            d,
                            Level::Error,
                            &format!("an on_fork() parent hook threw ({why}); the run goes on"),
                        );
                    }
                }
                emit(d, true, event);
            }
            Err(e) => {
                not_started(d, id, &name, format!("{e}"));
            }
        }
    }
    Ok(())
}

/// A run that could not start fails visibly: logged, counted, and its onJobEnd gets a JobRun
/// whose result() is null.
pub(super) fn not_started(d: &Daemon, id: RunId, name: &str, why: String) {
    say(
        d,
        Level::Error,
        &format!("job {name} could not start: {why}"),
    );
    let event = {
        let mut s = d.inner.borrow_mut();
        s.args.remove(&id);
        let event = job_run(&s, id, None);
        s.plan.not_started(id, "not started", why, Clock::now());
        event
    };
    emit(d, false, event);
}

pub(super) fn emit(d: &Daemon, start: bool, run: Option<JobRun>) {
    let Some(run) = run else { return };
    let listeners: Vec<Zval> = {
        let s = d.inner.borrow();
        let l = if start {
            &s.on_job_start
        } else {
            &s.on_job_end
        };
        l.iter().map(Zval::shallow_clone).collect()
    };
    if listeners.is_empty() {
        return;
    }
    let what = if start { "onJobStart" } else { "onJobEnd" };
    let mut z = Zval::new();
    if ext_php_rs::convert::IntoZval::set_zval(run, &mut z, false).is_err() {
        return;
    }
    for f in listeners {
        call_app(d, &f, &[&z], what);
    }
}

pub(super) fn collect_ended(d: &Daemon, handed_over: Option<&Link>) -> PhpResult<()> {
    let running: Vec<(RunId, crate::core::runtime::ChildId)> = d
        .inner
        .borrow()
        .children
        .iter()
        .map(|(r, c)| (*r, *c))
        .collect();
    for (run, cid) in running {
        // A finished run's report, taken out of the runtime; None while it runs. A run the
        // runtime does not know (never: it is only forgotten once taken) is dropped here.
        let (report, known) = runtime::with(|rt| {
            Ok(match rt.job_state(cid) {
                Some(JobState::Running) => (None, true),
                Some(JobState::Finished) => (rt.take_report(cid), true),
                None => (None, false),
            })
        })
        .map_err(from_core)?;
        let Some(report) = report else {
            if !known {
                d.inner.borrow_mut().children.remove(&run);
                let name = {
                    let s = d.inner.borrow();
                    s.plan
                        .run(run)
                        .map(|r| s.plan.job_def(r.job).name.clone())
                        .unwrap_or_default()
                };
                not_started(
                    d,
                    run,
                    &name,
                    "its child is unknown to the runtime (a bug)".into(),
                );
            }
            continue;
        };
        let result = JobResult::from_report(report);
        let outcome = result.outcome().to_string();
        let ok = result.ok();
        let duration = result.duration();
        let cause = result.cause();
        let (event, name) = {
            let mut s = d.inner.borrow_mut();
            s.children.remove(&run);
            let event = job_run(&s, run, Some(result.share()));
            let ended = s
                .plan
                .ended(run, &outcome, ok, duration, cause.clone(), Clock::now());
            let name = ended
                .map(|r| s.plan.job_def(r.job).name.clone())
                .unwrap_or_default();
            (event, name)
        };
        let pid = event.as_ref().map(|e| e.pid).unwrap_or(0);
        match &cause {
            None => say(
                d,
                Level::Info,
                &format!("job {name} (pid {pid}) ended: {outcome} in {duration:.3} s"),
            ),
            Some(c) => say(
                d,
                Level::Warning,
                &format!("job {name} (pid {pid}) ended: {outcome} in {duration:.3} s: {c}"),
            ),
        }
        skips_summed(d, &name);
        if let Some(link) = handed_over {
            link.send(&Up::Ended { job: name.clone() });
        }
        emit(d, false, event);
    }
    Ok(())
}
