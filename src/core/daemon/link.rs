//! The supervisor's link with its dispatcher: a socketpair made before the fork, one JSON object a
//! line. The dispatcher introduces itself once it has loaded the application (`Hello`: its name,
//! pid file, stop timeout, restart policy); the supervisor answers `Go` (with what a previous
//! dispatcher handed over at a reload) or `Refuse` (another instance holds the pid file). At a
//! reload the supervisor asks the old dispatcher to `HandOver`; it stops scheduling and says what
//! is left (`Handed`), then reports each of its jobs that ends (`Ended`).
//!
//! Messages are small and the peer reads them at once, so sends block (briefly); reads never do:
//! the socket is a source of the loop.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use chrono::{DateTime, Utc};
use nix::errno::Errno;
use nix::sys::socket::{recv, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use super::backoff::RestartPolicy;
use super::plan::Handover;
use crate::core::error::{Error, Result};
use crate::core::sys;

/// The restart policy as the application sets it (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    pub burst: u32,
    pub window: f64,
    pub delay: f64,
    pub delay_max: f64,
}

impl Restart {
    pub fn policy(&self) -> RestartPolicy {
        let d = std::time::Duration::from_secs_f64;
        RestartPolicy {
            base: d(self.delay),
            max: d(self.delay_max),
            burst: self.burst,
            window: d(self.window),
            ..RestartPolicy::default()
        }
    }
}

/// What was handed over, on the wire (times as Unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Handed {
    pub until: Option<f64>,
    pub running: Vec<String>,
    pub queued: Vec<(String, f64)>,
}

fn from_unix(t: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros((t * 1e6) as i64).unwrap_or_default()
}

impl From<&Handover> for Handed {
    fn from(h: &Handover) -> Handed {
        Handed {
            until: h.until.map(super::status::unix),
            running: h.running.clone(),
            queued: h
                .queued
                .iter()
                .map(|(n, t)| (n.clone(), super::status::unix(*t)))
                .collect(),
        }
    }
}

impl From<&Handed> for Handover {
    fn from(h: &Handed) -> Handover {
        Handover {
            until: h.until.map(from_unix),
            running: h.running.clone(),
            queued: h
                .queued
                .iter()
                .map(|(n, t)| (n.clone(), from_unix(*t)))
                .collect(),
        }
    }
}

/// Dispatcher → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Up {
    Hello {
        name: String,
        pid_file: String,
        stop_timeout: f64,
        restart: Restart,
    },
    /// Scheduling: the status socket answers.
    Ready,
    Handed(Handed),
    Ended {
        job: String,
    },
}

/// Supervisor → dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Down {
    Go {
        handover: Option<Handed>,
        supervisor: i32,
        restarts: u64,
    },
    Refuse {
        message: String,
    },
    HandOver,
    /// A job the previous dispatcher still ran has ended there.
    EndedElsewhere {
        job: String,
    },
}

/// One end of the link.
pub struct Link {
    fd: OwnedFd,
    buf: Vec<u8>,
    closed: bool,
}

/// Makes both ends (close-on-exec).
pub fn pair() -> Result<(Link, Link)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair", e))?;
    Ok((Link::new(a), Link::new(b)))
}

impl Link {
    pub fn new(fd: OwnedFd) -> Link {
        Link {
            fd,
            buf: Vec::new(),
            closed: false,
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends one message; false when the peer is gone.
    pub fn send<T: Serialize>(&self, msg: &T) -> bool {
        let mut line = serde_json::to_vec(msg).expect("link messages serialize");
        line.push(b'\n');
        sys::send_all(self.fd.as_raw_fd(), &line).is_ok()
    }

    /// Reads what has arrived, without waiting; the complete messages, in order. A line that is
    /// not a message closes the link (the peer is not a Forklift process of this version).
    pub fn receive<T: for<'de> Deserialize<'de>>(&mut self) -> Vec<T> {
        let mut chunk = [0u8; 4096];
        loop {
            match recv(self.fd.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            match serde_json::from_slice(&line[..line.len() - 1]) {
                Ok(m) => out.push(m),
                Err(_) => self.closed = true,
            }
        }
        out
    }

    /// Waits (blocking, up to `timeout`) for the next message.
    pub fn wait<T: for<'de> Deserialize<'de>>(
        &mut self,
        timeout: Option<std::time::Duration>,
    ) -> Option<T> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let mut got = self.receive::<T>();
            if !got.is_empty() {
                return Some(got.remove(0));
            }
            if self.closed {
                return None;
            }
            let mut revents = Vec::new();
            if sys::poll_io(&[(self.raw_fd(), libc::POLLIN)], deadline, &mut revents).is_err() {
                return None;
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) && revents.is_empty() {
                return None;
            }
        }
    }

    /// Whether the peer has closed its end (or sent garbage).
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_in_order_and_a_closed_peer_is_seen() {
        let (a, mut b) = pair().unwrap();
        let hello = Up::Hello {
            name: "shop".into(),
            pid_file: "/run/x.pid".into(),
            stop_timeout: 30.0,
            restart: Restart {
                burst: 5,
                window: 60.0,
                delay: 0.5,
                delay_max: 30.0,
            },
        };
        assert!(a.send(&hello));
        assert!(a.send(&Up::Ready));
        assert_eq!(b.receive::<Up>(), vec![hello, Up::Ready]);
        assert!(b.receive::<Up>().is_empty());
        drop(a);
        assert!(b.wait::<Up>(None).is_none());
        assert!(b.is_closed());
    }

    #[test]
    fn a_handover_survives_the_wire() {
        let h = Handover {
            until: Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            running: vec!["long".into()],
            queued: vec![(
                "a".into(),
                DateTime::from_timestamp(1_700_000_060, 0).unwrap(),
            )],
        };
        let json = serde_json::to_string(&Down::Go {
            handover: Some(Handed::from(&h)),
            supervisor: 1,
            restarts: 2,
        })
        .unwrap();
        let Down::Go {
            handover: Some(back),
            ..
        } = serde_json::from_str(&json).unwrap()
        else {
            panic!("{json}")
        };
        assert_eq!(Handover::from(&back), h);
    }
}
