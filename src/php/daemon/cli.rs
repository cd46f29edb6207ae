//! What `bin/forklift`'s commands ask of a running daemon, found by its pid file: its status and
//! metrics (through the status socket beside the pid file), and signals to its supervisor with a
//! wait until every process of the daemon has exited (pidfds, not polling `kill -0`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ext_php_rs::prelude::*;
use nix::unistd::Pid;

use crate::core::daemon::{control, pidfile};
use crate::core::sys;
use crate::php::args;
use crate::php::exceptions::{forklift_ce, from_core, invalid};

/// Where a daemon's pid file is when the application names none: `$FORKLIFT_RUN_DIR`, else
/// `/run/forklift` for root, else `$XDG_RUNTIME_DIR/forklift`, else `/tmp/forklift-UID`. The
/// directory is made (owner only) if missing, and refused unless it belongs to this user and
/// no one else may write in it (in /tmp another user could have made it first).
pub fn default_pid_file(name: &str) -> PhpResult<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let dir = run_dirs(uid).swap_remove(0);
    if std::fs::symlink_metadata(&dir).is_err() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| {
        invalid(format!(
            "cannot make the run directory {} for the pid file: {e}; create it, set \
             FORKLIFT_RUN_DIR, or pass pidFile:",
            dir.display()
        ))
    })?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(invalid(format!(
            "the run directory {} is not a directory of this user (uid {uid}) that only it may \
             write to (owner {}, mode {:o}); someone else could swap the pid file there: remove \
             it, set FORKLIFT_RUN_DIR to a directory of yours, or pass pidFile:",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(dir.join(format!("{name}.pid")))
}

/// The run directories of user `uid`, the one this environment uses first (see
/// [`default_pid_file`]), then those other environments of the same user use (a daemon under
/// systemd has no XDG_RUNTIME_DIR; a login session has one).
fn run_dirs(uid: u32) -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let xdg = env("XDG_RUNTIME_DIR").map(|d| d.join("forklift"));
    let mut dirs: Vec<PathBuf> = env("FORKLIFT_RUN_DIR").into_iter().collect();
    if uid == 0 {
        dirs.push(PathBuf::from("/run/forklift"));
    }
    dirs.extend(xdg);
    dirs.push(PathBuf::from(format!("/tmp/forklift-{uid}")));
    dirs.push(PathBuf::from(format!("/run/user/{uid}/forklift")));
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The run directories of this user that exist and are its own (for finding its daemons).
pub fn existing_run_dirs() -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    run_dirs(uid)
        .into_iter()
        .filter(|d| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir() && m.uid() == uid))
        .map(|d| d.display().to_string())
        .collect()
}

fn not_running(pid_file: &str) -> PhpException {
    PhpException::new(
        format!(
            "no daemon runs with pid file {pid_file} (no live process holds it); start one with \
             bin/forklift run APP.php, or pass the daemon's --pid-file"
        ),
        3,
        forklift_ce(),
    )
}

pub fn query(pid_file: &str, what: &str, timeout: f64) -> PhpResult<String> {
    let timeout = args::positive_seconds(timeout, "Forklift\\Daemon::query(): $timeout")?;
    let path = Path::new(pid_file);
    if pidfile::holder(path).map_err(from_core)?.is_none() {
        return Err(not_running(pid_file));
    }
    let socket = control::socket_path(path);
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    loop {
        match control::query(&socket, what, Duration::from_secs_f64(timeout)) {
            Ok(body) if body.starts_with("error: ") => {
                return Err(invalid(body.trim_end().to_string()))
            }
            Ok(body) => return Ok(body),
            // A reload: the new dispatcher binds the socket in a moment.
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(PhpException::new(
                    format!(
                        "the daemon of {pid_file} holds its pid file but its status socket {} \
                         does not answer: {e}; it may be starting, stopping or stuck (see its \
                         log)",
                        socket.display()
                    ),
                    4,
                    forklift_ce(),
                ))
            }
        }
    }
}

/// `pid` and every process below it, from /proc.
pub fn tree_of(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    out.extend(sys::descendants_of(pid).into_iter().map(|(p, _)| p));
    out
}

/// Waits until every pidfd says its process has exited, or `deadline`; true if all did.
fn wait_all(fds: &[OwnedFd], deadline: Instant) -> bool {
    let mut live: Vec<&OwnedFd> = fds.iter().collect();
    while !live.is_empty() {
        let polled: Vec<(i32, i16)> = live.iter().map(|f| (f.as_raw_fd(), libc::POLLIN)).collect();
        let mut revents = Vec::new();
        if sys::poll_io(&polled, Some(deadline), &mut revents).is_err() {
            return false;
        }
        let before = live.len();
        live = live
            .into_iter()
            .zip(revents.iter().chain(std::iter::repeat(&0)))
            .filter(|(_, r)| **r == 0)
            .map(|(f, _)| f)
            .collect();
        if live.len() == before && Instant::now() >= deadline {
            return false;
        }
    }
    true
}

pub fn signal_running(pid_file: &str, signal: i64, wait: bool, timeout: f64) -> PhpResult<bool> {
    const M: &str = "Forklift\\Daemon::signalRunning()";
    let signo = args::signal(signal, M)?;
    let timeout = args::seconds(timeout, &format!("{M}: $timeout"))?;
    let Some(pid) = pidfile::holder(Path::new(pid_file)).map_err(from_core)? else {
        return Err(not_running(pid_file));
    };
    check_is_supervisor(pid, pid_file)?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    if signo == libc::SIGHUP {
        return reload(pid, pid_file, wait, deadline);
    }
    let tree = tree_of(pid);
    let fds: Vec<OwnedFd> = tree
        .iter()
        .filter_map(|p| sys::pidfd_open(Pid::from_raw(*p)).ok().flatten())
        .collect();
    sys::send_signal(Pid::from_raw(pid), signo)
        .map_err(|e| invalid(format!("kill -{signo} {pid}: {e}")))?;
    if !wait {
        return Ok(true);
    }
    Ok(wait_all(&fds, deadline))
}

/// Refuses to signal a process that is not a Forklift daemon of this user: a pid file can be
/// stale-but-locked by someone else, or point anywhere.
fn check_is_supervisor(pid: i32, pid_file: &str) -> PhpResult<()> {
    use std::os::unix::fs::MetadataExt;
    let title = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid())
        .ok();
    // A supervisor, or a dispatcher run() without one: both hold their pid file.
    if !title.starts_with("forklift: ") {
        return Err(invalid(format!(
            "pid file {pid_file} names pid {pid}, which is not a Forklift daemon (its command \
             line is \"{title}\"); not signalling it: check the pid file"
        )));
    }
    if me != 0 && owner != Some(me) {
        return Err(invalid(format!(
            "pid {pid} (pid file {pid_file}) belongs to another user (uid {}); not signalling it",
            owner.map(|o| o.to_string()).unwrap_or_else(|| "?".into())
        )));
    }
    Ok(())
}

/// HUP; with `wait`, true once every dispatcher that ran before has exited and a new one answers
/// (false at the deadline: the new one did not load, or the old one is still finishing).
fn reload(pid: i32, pid_file: &str, wait: bool, deadline: Instant) -> PhpResult<bool> {
    let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !title.contains("supervisor") {
        return Err(invalid(format!(
            "pid {pid} (pid file {pid_file}) is a daemon run without its supervisor (run() \
             called directly): a reload needs the supervisor that bin/forklift run starts"
        )));
    }
    // The dispatchers now: the supervisor's children.
    let before: Vec<i32> = sys::descendants_of(pid)
        .into_iter()
        .filter(|(_, parent)| *parent == pid)
        .map(|(p, _)| p)
        .collect();
    let fds: Vec<OwnedFd> = before
        .iter()
        .filter_map(|p| sys::pidfd_open(Pid::from_raw(*p)).ok().flatten())
        .collect();
    sys::send_signal(Pid::from_raw(pid), libc::SIGHUP)
        .map_err(|e| invalid(format!("kill -HUP {pid}: {e}")))?;
    if !wait {
        return Ok(true);
    }
    if !wait_all(&fds, deadline) {
        return Ok(false);
    }
    while Instant::now() < deadline {
        match dispatcher_pid(pid_file) {
            Some(new) if !before.contains(&new) => return Ok(true),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(false)
}

fn dispatcher_pid(pid_file: &str) -> Option<i32> {
    let socket = control::socket_path(Path::new(pid_file));
    let body = control::query(&socket, "status", Duration::from_secs(2)).ok()?;
    let st: crate::core::daemon::status::Status = serde_json::from_str(&body).ok()?;
    (st.state == "running").then_some(st.dispatcher)
}

/// `bin/forklift metrics --listen=HOST:PORT`: serves `GET /metrics` on a loopback address, each
/// request answered from the daemon's status socket. The HTTP server (`tiny_http`, a maintained
/// crate) runs threads: this is only ever called by a process that serves and never forks, and it
/// never returns (it ends with the process, on SIGTERM or SIGINT).
pub fn serve_metrics(pid_file: &str, listen: &str) -> PhpResult<()> {
    const M: &str = "Forklift\\Daemon::serveMetrics()";
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        invalid(format!(
            "{M}: \"{listen}\" is not an address and port; pass e.g. 127.0.0.1:9464 or [::1]:9464"
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(invalid(format!(
            "{M}: {addr} is not a loopback address; the metrics listener only binds 127.0.0.1 or \
             ::1 (put a reverse proxy in front to expose it)"
        )));
    }
    if crate::core::runtime::with(|rt| Ok(rt.detached_running() > 0)).unwrap_or(false) {
        return Err(invalid(format!(
            "{M}: this process supervises jobs; serve metrics from a process of its own \
             (bin/forklift metrics --listen)"
        )));
    }
    // Check once that the daemon answers, so that a wrong pid file is said now.
    query(pid_file, "ping", 5.0)?;
    let server = tiny_http::Server::http(addr)
        .map_err(|e| invalid(format!("{M}: cannot listen on {addr}: {e}")))?;
    let socket = control::socket_path(Path::new(pid_file));
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = if path != "/metrics" || *request.method() != tiny_http::Method::Get {
            tiny_http::Response::from_string("only GET /metrics is served here\n")
                .with_status_code(404)
        } else {
            match control::query(&socket, "metrics", Duration::from_secs(5)) {
                Ok(body) => tiny_http::Response::from_string(body).with_header(
                    "Content-Type: text/plain; version=0.0.4; charset=utf-8"
                        .parse::<tiny_http::Header>()
                        .expect("a valid header"),
                ),
                Err(e) => tiny_http::Response::from_string(format!(
                    "the daemon's status socket {} does not answer: {e}\n",
                    socket.display()
                ))
                .with_status_code(503),
            }
        };
        let _ = request.respond(response);
    }
    Ok(())
}
