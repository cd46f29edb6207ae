//! The supervisor: the `bin/forklift run` process before it loads the application. It forks the
//! dispatcher (which loads the application and runs its daemon), holds the pid file once the
//! dispatcher has said which, restarts a dispatcher that dies (backoff with jitter, and gives up
//! after too many deaths in a window), reloads on HUP (a fresh dispatcher loads the new code; the
//! old one hands over its schedule and finishes its runs), and stops on TERM/INT. It runs no
//! application code; its children die with it even after `kill -9` (their parent-death signal).

use std::time::{Duration, Instant};

use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;

use super::dispatch::LINK;
use super::log::{self, Level};
use crate::core::daemon::backoff::{Decision, Restarts};
use crate::core::daemon::link::{self, Down, Handed, Link, Up};
use crate::core::daemon::pidfile::PidFile;
use crate::core::reactor::READABLE;
use crate::core::runtime::{self, ChildId, JobState, SourceId};
use crate::core::spawn::{self, fork_child, Forked};
use crate::core::sys;
use crate::php::exceptions::from_core;
use crate::php::fork::max_frame;
use crate::php::result::JobResult;
use crate::php::{args, child, signals, zend};

/// A dispatcher the supervisor started.
struct Disp {
    cid: ChildId,
    pid: i32,
    link: Link,
    sid: SourceId,
    started: Instant,
    hello: bool,
    ready: bool,
}

/// What the application's daemon said about itself.
struct Config {
    name: String,
    pid_file: PidFile,
    stop_timeout: f64,
    restarts: Restarts,
}

struct Sup {
    config: Option<Config>,
    current: Option<Disp>,
    /// Started by a reload, waiting for the current one to hand over.
    next: Option<Disp>,
    /// Handed over, finishing its runs.
    old: Option<Disp>,
    /// A handover whose successor died before taking it.
    pending: Option<Handed>,
    restart_at: Option<Instant>,
    kill_at: Option<Instant>,
    stopping: bool,
    exit_code: i64,
    restarts: u64,
    notified_ready: bool,
    /// The last error logged (for `--daemonize`'s starter when the start fails).
    last_error: Option<String>,
}

fn name_of(s: &Sup) -> String {
    s.config
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_else(|| "forklift".into())
}

fn say(s: &mut Sup, level: Level, message: &str) {
    if matches!(level, Level::Error | Level::Critical) {
        s.last_error = Some(message.to_string());
    }
    log::stderr(&name_of(s), "supervisor", level, message);
}

thread_local! {
    /// `--daemonize`: the pipe to the process the user started, until the start is decided.
    static STARTER: std::cell::RefCell<Option<std::os::fd::OwnedFd>> = const { std::cell::RefCell::new(None) };
}

/// Tells the process that started a `--daemonize`d daemon how the start went (once).
fn tell_starter(word: &str) {
    if let Some(fd) = STARTER.with(|s| s.borrow_mut().take()) {
        use std::os::fd::AsRawFd;
        spawn::keep_in_children(fd.as_raw_fd());
        let _ = sys::write_all_fd(fd.as_raw_fd(), format!("{word}\n").as_bytes());
    }
}

/// `--daemonize`: forks twice (a new session; the daemon can never get a terminal), `/` as its
/// cwd, stdin from /dev/null, stdout and stderr appended to `log`. Returns `Some(exit code)` in
/// the process the user started, once the daemon has said whether it started; `None` in the
/// daemon, which goes on.
fn detach(log: &str) -> PhpResult<Option<i64>> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    use nix::unistd::{fork, setsid, ForkResult};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let fail = |what: &str, e: nix::Error| {
        crate::php::exceptions::invalid(format!("--daemonize: {what}: {e}"))
    };
    let log_fd = open(
        log,
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o640),
    )
    .map_err(|e| {
        crate::php::exceptions::invalid(format!(
            "--log={log}: cannot open it for appending: {e}; create its directory or choose \
             another file"
        ))
    })?;
    // SAFETY: open returned a new fd that nothing else owns.
    let log_fd = unsafe { OwnedFd::from_raw_fd(log_fd) };
    let null = open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("/dev/null", e))?;
    // SAFETY: as above.
    let null = unsafe { OwnedFd::from_raw_fd(null) };
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail("pipe", e))?;
    // SAFETY: Forklift keeps no thread; nothing has been started yet in this process.
    match unsafe { fork() }.map_err(|e| fail("fork", e))? {
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut word = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match nix::unistd::read(read_end.as_raw_fd(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => word.extend_from_slice(&buf[..n]),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
            let _ = nix::sys::wait::waitpid(child, None);
            let word = String::from_utf8_lossy(&word).trim().to_string();
            if let Some(pid) = word.strip_prefix("ready ") {
                let _ = sys::write_all_fd(
                    1,
                    format!(
                        "forklift: started in the background (supervisor pid {pid}, log: {log})\n"
                    )
                    .as_bytes(),
                );
                return Ok(Some(0));
            }
            let why = word
                .strip_prefix("failed: ")
                .unwrap_or("the daemon exited before it was ready");
            let _ = sys::write_all_fd(
                2,
                format!("forklift: the daemon did not start: {why} (its log: {log})\n").as_bytes(),
            );
            Ok(Some(1))
        }
        ForkResult::Child => {
            drop(read_end);
            let _ = setsid();
            // SAFETY: as above; the session leader leaves at once.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {}
                _ => sys::exit_now(0),
            }
            let _ = nix::unistd::chdir("/");
            // SAFETY: umask has no preconditions.
            unsafe { libc::umask(0o022) };
            for (from, to) in [(&null, 0), (&log_fd, 1), (&log_fd, 2)] {
                // SAFETY: dup2 onto the standard descriptors, which this process owns.
                unsafe { libc::dup2(from.as_raw_fd(), to) };
            }
            drop(null);
            drop(log_fd);
            spawn::close_in_children(write_end.as_raw_fd());
            STARTER.with(|s| *s.borrow_mut() = Some(write_end));
            Ok(None)
        }
    }
}

/// systemd's notify protocol, when `NOTIFY_SOCKET` is set (the `sd-notify` crate).
fn notify(states: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(false, states);
}

pub fn run(dispatcher: &Zval, daemonize: Option<&str>) -> PhpResult<i64> {
    args::callable(dispatcher, "Forklift\\Daemon::supervise(): $dispatcher")?;
    let max_frame = max_frame()?;
    if let Some(log) = daemonize {
        if let Some(code) = detach(log)? {
            // The process the user started: the daemon has said how its start went.
            return Ok(code);
        }
    }
    let own = [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGUSR1,
    ];
    runtime::with(|rt| rt.own_signals(&own)).map_err(from_core)?;
    // What a job spawned and detached (its own session) is reparented here when the job and its
    // dispatcher die, not to init: the supervisor kills it before the next dispatcher starts.
    sys::become_subreaper();
    zend::set_process_title("forklift: supervisor (starting)");
    let mut s = Sup {
        config: None,
        current: None,
        next: None,
        old: None,
        pending: None,
        restart_at: None,
        kill_at: None,
        stopping: false,
        exit_code: 0,
        restarts: 0,
        notified_ready: false,
        last_error: None,
    };
    let result = supervise(&mut s, dispatcher, max_frame);
    let _ = runtime::with(|rt| {
        rt.release_signals();
        Ok(())
    });
    strays(&mut s);
    if let Some(c) = &s.config {
        // A dispatcher that was killed leaves its socket file; nobody answers there now.
        let sock = crate::core::daemon::control::socket_path(c.pid_file.path());
        use std::os::unix::fs::FileTypeExt;
        let is_socket = std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket());
        if is_socket && std::os::unix::net::UnixStream::connect(&sock).is_err() {
            let _ = std::fs::remove_file(&sock);
        }
    }
    tell_starter(&format!(
        "failed: {}",
        s.last_error
            .clone()
            .unwrap_or_else(|| "the daemon stopped before it was ready".into())
    ));
    if let Some(c) = s.config.take() {
        spawn::keep_in_children(c.pid_file.fd());
        c.pid_file.release();
    }
    result.map(|_| s.exit_code)
}

/// With no dispatcher alive: kills and reaps what the daemon's jobs left behind.
fn strays(s: &mut Sup) {
    if s.current.is_some() || s.next.is_some() || s.old.is_some() {
        return;
    }
    let n = sys::kill_and_reap_strays(Duration::from_millis(200));
    if n > 0 {
        say(
            s,
            Level::Warning,
            &format!("killed {n} process(es) that jobs had left running outside their group"),
        );
    }
}

fn spawn_dispatcher(dispatcher: &Zval, max_frame: usize) -> PhpResult<Disp> {
    let (ours, theirs) = link::pair().map_err(from_core)?;
    spawn::close_in_children(ours.raw_fd());
    match fork_child(None).map_err(from_core)? {
        Forked::Child(end) => {
            LINK.with(|l| *l.borrow_mut() = Some(theirs));
            zend::set_process_title("forklift: dispatcher (loading the application)");
            child::run(end, dispatcher, &[], max_frame, None)
        }
        Forked::Parent(spawned) => {
            drop(theirs);
            let pid = spawned.pid.as_raw();
            let (cid, sid) = runtime::with(|rt| {
                let cid = rt.adopt_job(spawned, max_frame, None)?;
                let sid = rt.add_source(ours.raw_fd(), READABLE)?;
                Ok((cid, sid))
            })
            .map_err(from_core)?;
            Ok(Disp {
                cid,
                pid,
                link: ours,
                sid,
                started: Instant::now(),
                hello: false,
                ready: false,
            })
        }
    }
}

fn forget(d: Disp) {
    let _ = runtime::with(|rt| {
        rt.remove_source(d.sid, d.link.raw_fd());
        Ok(())
    });
    spawn::keep_in_children(d.link.raw_fd());
}

fn begin_stop(s: &mut Sup, why: &str) {
    if s.stopping {
        return;
    }
    s.stopping = true;
    s.restart_at = None;
    notify(&[sd_notify::NotifyState::Stopping]);
    let timeout = s.config.as_ref().map(|c| c.stop_timeout).unwrap_or(30.0);
    // The dispatcher's own stop timeout, its grace, and a margin: then SIGKILL.
    s.kill_at = Some(Instant::now() + Duration::from_secs_f64(timeout + 5.0 + 2.0));
    say(s, Level::Info, &format!("stopping ({why})"));
    for d in [&s.current, &s.next, &s.old].into_iter().flatten() {
        let _ = sys::send_signal(nix::unistd::Pid::from_raw(d.pid), libc::SIGTERM);
    }
    zend::set_process_title(&format!("forklift: {} supervisor (stopping)", name_of(s)));
}

fn supervise(s: &mut Sup, dispatcher: &Zval, max_frame: usize) -> PhpResult<()> {
    s.current = Some(spawn_dispatcher(dispatcher, max_frame)?);
    // systemd's watchdog (WatchdogSec=): a ping at half the interval, from the loop itself.
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(10)));
    let mut next_ping = watchdog.map(|every| Instant::now() + every);
    loop {
        if let (Some(every), Some(at)) = (watchdog, next_ping) {
            if Instant::now() >= at {
                notify(&[sd_notify::NotifyState::Watchdog]);
                next_ping = Some(Instant::now() + every);
            }
        }
        let (sigs, ready) =
            runtime::with(|rt| Ok((rt.take_signals(), rt.take_ready()))).map_err(from_core)?;
        for sig in sigs {
            match sig {
                libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                    begin_stop(s, &sys::signal_name(sig))
                }
                libc::SIGHUP => reload(s, dispatcher, max_frame)?,
                libc::SIGUSR1 => {
                    if let Some(d) = &s.current {
                        let _ = sys::send_signal(nix::unistd::Pid::from_raw(d.pid), libc::SIGUSR1);
                    }
                }
                _ => {}
            }
        }
        for (sid, _) in ready {
            on_link(s, sid)?;
        }
        check_exits(s)?;
        if !s.notified_ready && s.current.is_none() && s.next.is_none() && s.restart_at.is_none() {
            // The first dispatcher never got going.
            return Ok(());
        }
        let now = Instant::now();
        if s.restart_at.is_some_and(|t| now >= t) && !s.stopping {
            s.restart_at = None;
            s.restarts += 1;
            let d = spawn_dispatcher(dispatcher, max_frame)?;
            say(
                s,
                Level::Info,
                &format!("dispatcher started again (pid {})", d.pid),
            );
            s.current = Some(d);
        }
        if s.stopping && s.current.is_none() && s.next.is_none() && s.old.is_none() {
            say(
                s,
                Level::Info,
                "stopped: every process of the daemon has exited",
            );
            return Ok(());
        }
        if s.kill_at.is_some_and(|t| now >= t) {
            s.kill_at = None;
            say(
                s,
                Level::Error,
                "the dispatcher did not stop in time: SIGKILL to its group",
            );
            let ids: Vec<ChildId> = [&s.current, &s.next, &s.old]
                .into_iter()
                .flatten()
                .map(|d| d.cid)
                .collect();
            runtime::with(|rt| {
                for id in ids {
                    rt.expire_job(id, Duration::ZERO);
                }
                Ok(())
            })
            .map_err(from_core)?;
        }
        let wake = [s.restart_at, s.kill_at, next_ping]
            .into_iter()
            .flatten()
            .min();
        let waited = runtime::with(|rt| rt.turn_unless_ready(wake, Some(&signals::interrupted)))
            .map_err(from_core)?;
        if !waited {
            signals::run_pending()?;
        }
    }
}

fn reload(s: &mut Sup, dispatcher: &Zval, max_frame: usize) -> PhpResult<()> {
    if s.stopping {
        return Ok(());
    }
    if s.next.is_some() || s.old.is_some() {
        say(
            s,
            Level::Warning,
            "SIGHUP: a reload is already under way; ignored",
        );
        return Ok(());
    }
    match &s.current {
        Some(d) if d.ready => {
            notify(&[sd_notify::NotifyState::Reloading]);
            let d = spawn_dispatcher(dispatcher, max_frame)?;
            say(
                s,
                Level::Info,
                &format!(
                    "SIGHUP: reloading; new dispatcher pid {} loads the application",
                    d.pid
                ),
            );
            s.next = Some(d);
        }
        Some(_) => say(
            s,
            Level::Warning,
            "SIGHUP: the dispatcher is still starting; ignored",
        ),
        None => {
            // Waiting to restart after a death: restart now.
            s.restart_at = Some(Instant::now());
        }
    }
    Ok(())
}

/// Which of the dispatchers a source belongs to.
fn which(s: &mut Sup, sid: SourceId) -> Option<&mut Disp> {
    [&mut s.current, &mut s.next, &mut s.old]
        .into_iter()
        .flatten()
        .find(|d| d.sid == sid)
}

fn on_link(s: &mut Sup, sid: SourceId) -> PhpResult<()> {
    let Some(d) = which(s, sid) else {
        return Ok(());
    };
    let pid = d.pid;
    let messages: Vec<Up> = d.link.receive();
    let is_next = s.next.as_ref().is_some_and(|n| n.sid == sid);
    let is_old = s.old.as_ref().is_some_and(|n| n.sid == sid);
    for m in messages {
        match m {
            Up::Hello {
                name,
                pid_file,
                stop_timeout,
                restart,
            } => {
                if let Some(d) = which(s, sid) {
                    d.hello = true;
                }
                hello(s, sid, is_next, name, pid_file, stop_timeout, restart)?;
            }
            Up::Ready => {
                if let Some(d) = which(s, sid) {
                    d.ready = true;
                }
                say(s, Level::Info, &format!("dispatcher pid {pid} is running"));
                zend::set_process_title(&format!("forklift: {} supervisor", name_of(s)));
                if !s.notified_ready {
                    s.notified_ready = true;
                    tell_starter(&format!("ready {}", sys::current_pid()));
                    notify(&[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status(&format!("dispatcher pid {pid}")),
                    ]);
                } else {
                    notify(&[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status(&format!("reloaded: dispatcher pid {pid}")),
                    ]);
                }
            }
            Up::Handed(h) => {
                // The current dispatcher has handed over: its successor takes the schedule.
                if let Some(old) = s.current.take() {
                    s.old = Some(old);
                }
                s.restarts += 1;
                match s.next.take() {
                    Some(n) => {
                        n.link.send(&Down::Go {
                            handover: Some(h),
                            supervisor: sys::current_pid(),
                            restarts: s.restarts,
                        });
                        s.current = Some(n);
                    }
                    None => {
                        s.pending = Some(h);
                        s.restart_at = Some(Instant::now());
                    }
                }
            }
            Up::Ended { job } => {
                if is_old {
                    if let Some(c) = &s.current {
                        c.link.send(&Down::EndedElsewhere { job });
                    }
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn hello(
    s: &mut Sup,
    sid: SourceId,
    is_next: bool,
    name: String,
    pid_file: String,
    stop_timeout: f64,
    restart: link::Restart,
) -> PhpResult<()> {
    let me = sys::current_pid();
    if s.config.is_none() {
        match PidFile::acquire(std::path::Path::new(&pid_file), me) {
            Ok(pf) => {
                spawn::close_in_children(pf.fd());
                let seed = (me as u64) << 32 ^ sys::monotonic_ns();
                s.config = Some(Config {
                    name: name.clone(),
                    pid_file: pf,
                    stop_timeout,
                    restarts: Restarts::new(restart.policy(), seed),
                });
                zend::set_process_title(&format!("forklift: {name} supervisor"));
            }
            Err(e) => {
                let message = e.to_string();
                if let Some(d) = which(s, sid) {
                    d.link.send(&Down::Refuse {
                        message: message.clone(),
                    });
                }
                log::stderr(&name, "supervisor", Level::Error, &message);
                s.last_error = Some(message);
                s.exit_code = 1;
                s.stopping = true;
                return Ok(());
            }
        }
    } else if let Some(c) = &mut s.config {
        if c.pid_file.path() != std::path::Path::new(&pid_file) || c.name != name {
            let msg = format!(
                "the application now names the daemon \"{name}\" with pid file {pid_file}; a \
                 running daemon keeps \"{}\" and {} (stop and start it to change them)",
                c.name,
                c.pid_file.path().display()
            );
            log::stderr(&c.name, "supervisor", Level::Warning, &msg);
        }
        c.stop_timeout = stop_timeout;
    }
    if is_next {
        // A reload: the running dispatcher hands over first; the new one gets Go after.
        match &s.current {
            Some(c) => {
                c.link.send(&Down::HandOver);
            }
            None => {
                if let Some(n) = s.next.take() {
                    n.link.send(&Down::Go {
                        handover: s.pending.take(),
                        supervisor: me,
                        restarts: s.restarts,
                    });
                    s.current = Some(n);
                }
            }
        }
        return Ok(());
    }
    let handover = s.pending.take();
    let restarts = s.restarts;
    if let Some(d) = which(s, sid) {
        d.link.send(&Down::Go {
            handover,
            supervisor: me,
            restarts,
        });
    }
    Ok(())
}

fn take_result(d: &Disp) -> PhpResult<Option<JobResult>> {
    let report = runtime::with(|rt| {
        Ok(match rt.job_state(d.cid) {
            Some(JobState::Running) => None,
            _ => rt.take_report(d.cid),
        })
    })
    .map_err(from_core)?;
    Ok(report.map(JobResult::from_report))
}

fn describe(r: &JobResult) -> String {
    match r.cause() {
        Some(c) => format!("{}: {c}", r.outcome()),
        None => r.outcome().to_string(),
    }
}

fn check_exits(s: &mut Sup) -> PhpResult<()> {
    if let Some(d) = &s.old {
        if let Some(r) = take_result(d)? {
            say(
                s,
                Level::Info,
                &format!(
                    "previous dispatcher pid {} has finished ({})",
                    d.pid,
                    describe(&r)
                ),
            );
            forget(s.old.take().expect("checked"));
        }
    }
    if let Some(d) = &s.next {
        if let Some(r) = take_result(d)? {
            let handed = s.current.is_none();
            if s.stopping {
                let pid = d.pid;
                say(
                    s,
                    Level::Info,
                    &format!(
                        "new dispatcher pid {pid} ended ({}): the daemon is stopping",
                        describe(&r)
                    ),
                );
                forget(s.next.take().expect("checked"));
                return Ok(());
            }
            say(
                s,
                Level::Error,
                &format!(
                    "reload failed: the new dispatcher pid {} died while loading the application \
                     ({}); {}",
                    d.pid,
                    describe(&r),
                    if handed {
                        "starting another"
                    } else {
                        "the running dispatcher goes on with the old code"
                    }
                ),
            );
            forget(s.next.take().expect("checked"));
        }
    }
    let Some(d) = &s.current else { return Ok(()) };
    let Some(r) = take_result(d)? else {
        return Ok(());
    };
    let d = s.current.take().expect("checked");
    let (pid, hello, started) = (d.pid, d.hello, d.started);
    forget(d);
    if s.stopping {
        if s.exit_code == 0 && !r.ok() {
            say(
                s,
                Level::Warning,
                &format!("dispatcher pid {pid} ended: {}", describe(&r)),
            );
        }
        return Ok(());
    }
    if !s.notified_ready {
        // No dispatcher has ever run: the same start would fail the same way again (APP.php
        // threw, the status socket cannot be made, ...); say why and stop instead of looping.
        let stage = if hello {
            "the daemon failed while starting"
        } else {
            "the application failed before its daemon started"
        };
        say(
            s,
            Level::Error,
            &format!("{stage} ({}); nothing was started", describe(&r)),
        );
        s.exit_code = 1;
        s.stopping = true;
        return Ok(());
    }
    if r.ok() {
        say(
            s,
            Level::Info,
            &format!("dispatcher pid {pid} stopped by itself (stop()); stopping"),
        );
        s.stopping = true;
        return Ok(());
    }
    say(
        s,
        Level::Error,
        &format!("dispatcher pid {pid} died: {}", describe(&r)),
    );
    strays(s);
    let now = Instant::now();
    let decision = match s.config.as_mut() {
        Some(c) => c.restarts.on_death(started, now),
        None => Decision::Restart {
            after: Duration::from_millis(500),
            attempt: 1,
        },
    };
    match decision {
        Decision::Restart { after, attempt } => {
            say(
                s,
                Level::Warning,
                &format!(
                    "restarting the dispatcher in {:.2} s (attempt {attempt})",
                    after.as_secs_f64()
                ),
            );
            s.restart_at = Some(now + after);
        }
        Decision::GiveUp { deaths, window } => {
            say(s, Level::Critical, &Restarts::give_up_text(deaths, window));
            s.exit_code = 1;
            begin_stop(s, "too many dispatcher deaths");
        }
    }
    Ok(())
}
