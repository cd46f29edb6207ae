//! The status socket: a unix socket beside the pid file (mode 0600, owner only), answered by the
//! dispatcher from its loop. A client connects and writes one line (`status`, `metrics`); the
//! dispatcher answers with one body and closes. Every socket is non-blocking and registered with
//! the runtime's reactor, so a slow or silent client never holds the loop: it is read and written
//! as it becomes ready, and dropped after [`CLIENT_TIMEOUT`].
//!
//! [`query`] is the client side (the CLI's).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::core::error::{Error, Result};
use crate::core::reactor::{READABLE, WRITABLE};
use crate::core::runtime::{Runtime, SourceId};
use crate::core::spawn;

/// A client that has not sent its request, or not taken its answer, in this time is dropped.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line.
const MAX_REQUEST: usize = 256;

/// The status socket's path for a pid file: `shop.pid` → `shop.sock`.
pub fn socket_path(pid_file: &Path) -> PathBuf {
    match pid_file.extension() {
        Some(e) if e == "pid" => pid_file.with_extension("sock"),
        _ => {
            let mut p = pid_file.as_os_str().to_owned();
            p.push(".sock");
            PathBuf::from(p)
        }
    }
}

struct Client {
    stream: UnixStream,
    request: Vec<u8>,
    answer: Option<(Vec<u8>, usize)>,
    since: Instant,
}

/// The listening socket and its clients.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    source: SourceId,
    clients: HashMap<SourceId, Client>,
    /// Out of file descriptors: the listener is not waited on until then (a pending connection
    /// that cannot be accepted would wake the loop at once, forever).
    paused_until: Option<Instant>,
}

/// How long the listener rests after accept() ran out of file descriptors.
const PAUSE: Duration = Duration::from_millis(100);

impl Control {
    /// Binds the socket at `path` (a stale socket file there is replaced; a symlink or another
    /// kind of file is refused) and registers it with the loop.
    pub fn bind(path: &Path, rt: &mut Runtime) -> Result<Control> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::InvalidArgument(format!(
                    "status socket {} is a symbolic link; Forklift does not follow links: remove \
                     it, or put the pid file (the socket lives beside it) elsewhere",
                    path.display()
                )))
            }
            Ok(m) => {
                use std::os::unix::fs::FileTypeExt;
                if !m.file_type().is_socket() {
                    return Err(Error::InvalidArgument(format!(
                        "{} exists and is not a socket; Forklift puts its status socket there \
                         (beside the pid file): move that file away",
                        path.display()
                    )));
                }
                // Left by a daemon that died — unless something still answers there (a daemon
                // whose pid file was removed under it): never take a live daemon's socket.
                if UnixStream::connect(path).is_ok() {
                    return Err(Error::InvalidArgument(format!(
                        "a daemon already answers at {} although its pid file is gone (removed by \
                         hand or by a tmp cleaner?); stop that daemon first (kill -TERM the \
                         process titled \"forklift: NAME supervisor\"), or use another pidFile",
                        path.display()
                    )));
                }
                let _ = std::fs::remove_file(path);
            }
            Err(_) => {}
        }
        // sockaddr_un holds 108 bytes with the terminating NUL.
        let len = path.as_os_str().len();
        if len > 107 {
            return Err(Error::InvalidArgument(format!(
                "the status socket path {} is {len} bytes; unix sockets allow at most 107: give \
                 the daemon a shorter pidFile path (the socket goes beside it)",
                path.display()
            )));
        }
        // Owner only from the start: no moment where another user could connect.
        // SAFETY: umask has no preconditions; it is set back at once.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot create the status socket {}: {e}; check that its directory exists and is \
                 writable by this user",
                path.display()
            ))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::sys("fcntl", errno_of(&e)))?;
        let fd = listener.as_raw_fd();
        spawn::close_in_children(fd);
        let source = rt.add_source(fd, READABLE)?;
        Ok(Control {
            listener,
            path: path.to_path_buf(),
            source,
            clients: HashMap::new(),
            paused_until: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `source` is one of this socket's (the listener or a client).
    pub fn owns(&self, source: SourceId) -> bool {
        source == self.source || self.clients.contains_key(&source)
    }

    /// Handles readiness of one of its sources. Returns the requests that are complete: the
    /// caller answers each with [`Control::answer`].
    pub fn ready(&mut self, source: SourceId, rt: &mut Runtime) -> Vec<(SourceId, String)> {
        let mut requests = Vec::new();
        if source == self.source {
            self.accept(rt);
            return requests;
        }
        let Some(client) = self.clients.get_mut(&source) else {
            return requests;
        };
        if client.answer.is_some() {
            self.write(source, rt);
            return requests;
        }
        let mut buf = [0u8; MAX_REQUEST];
        loop {
            match client.stream.read(&mut buf) {
                Ok(0) => {
                    self.drop_client(source, rt);
                    return requests;
                }
                Ok(n) => {
                    client.request.extend_from_slice(&buf[..n]);
                    if let Some(end) = client.request.iter().position(|b| *b == b'\n') {
                        let line = String::from_utf8_lossy(&client.request[..end])
                            .trim()
                            .to_string();
                        requests.push((source, line));
                        return requests;
                    }
                    if client.request.len() > MAX_REQUEST {
                        self.drop_client(source, rt);
                        return requests;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return requests,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_client(source, rt);
                    return requests;
                }
            }
        }
    }

    /// Sends `body` to the client that asked; as much now as the socket takes, the rest when it
    /// is writable again.
    pub fn answer(&mut self, source: SourceId, body: String, rt: &mut Runtime) {
        if let Some(c) = self.clients.get_mut(&source) {
            c.answer = Some((body.into_bytes(), 0));
            self.write(source, rt);
        }
    }

    /// Drops clients that have taken too long, and listens again after a pause; returns when
    /// this must be called next.
    pub fn expire(&mut self, now: Instant, rt: &mut Runtime) -> Option<Instant> {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
            let _ = rt.set_interest(self.source, self.listener.as_raw_fd(), READABLE);
        }
        let late: Vec<SourceId> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.since) >= CLIENT_TIMEOUT)
            .map(|(s, _)| *s)
            .collect();
        for s in late {
            self.drop_client(s, rt);
        }
        self.clients
            .values()
            .map(|c| c.since + CLIENT_TIMEOUT)
            .chain(self.paused_until)
            .min()
    }

    fn accept(&mut self, rt: &mut Runtime) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if !peer_is_us(&stream) || stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    let Ok(source) = rt.add_source(fd, READABLE) else {
                        continue;
                    };
                    spawn::close_in_children(fd);
                    self.clients.insert(
                        source,
                        Client {
                            stream,
                            request: Vec::new(),
                            answer: None,
                            since: Instant::now(),
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // EMFILE and the like: the client waits in the backlog; stop waiting on the
                // listener for a moment, or its readiness would spin the loop.
                Err(_) => {
                    self.paused_until = Some(Instant::now() + PAUSE);
                    let _ = rt.set_interest(self.source, self.listener.as_raw_fd(), 0);
                    return;
                }
            }
        }
    }

    fn write(&mut self, source: SourceId, rt: &mut Runtime) {
        let Some(c) = self.clients.get_mut(&source) else {
            return;
        };
        let Some((body, pos)) = c.answer.as_mut() else {
            return;
        };
        loop {
            if *pos >= body.len() {
                self.drop_client(source, rt);
                return;
            }
            match c.stream.write(&body[*pos..]) {
                Ok(n) => *pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let _ = rt.set_interest(source, c.stream.as_raw_fd(), WRITABLE);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_client(source, rt);
                    return;
                }
            }
        }
    }

    fn drop_client(&mut self, source: SourceId, rt: &mut Runtime) {
        if let Some(c) = self.clients.remove(&source) {
            let fd = c.stream.as_raw_fd();
            rt.remove_source(source, fd);
            spawn::keep_in_children(fd);
        }
    }

    /// Stops answering: every socket closed, the socket file removed.
    pub fn close(mut self, rt: &mut Runtime) {
        let sources: Vec<SourceId> = self.clients.keys().copied().collect();
        for s in sources {
            self.drop_client(s, rt);
        }
        let fd = self.listener.as_raw_fd();
        rt.remove_source(self.source, fd);
        spawn::keep_in_children(fd);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Only the daemon's own user (or root) may ask; the socket's mode already says so, this holds
/// even if the file's mode is changed.
fn peer_is_us(stream: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) => {
            let uid = cred.uid();
            // SAFETY: geteuid has no preconditions.
            uid == 0 || uid == unsafe { libc::geteuid() }
        }
        Err(_) => false,
    }
}

fn errno_of(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// Asks the daemon whose status socket is `path`: sends `request`, returns the whole answer.
pub fn query(path: &Path, request: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}
