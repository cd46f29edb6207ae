//! What travels on a channel: the message kinds between a job child (or pool worker) and its
//! parent, their encoding into one frame each, and how a record too large for the frame limit is
//! shrunk rather than dropped. This module knows nothing of PHP: values are opaque bytes here.

use crate::core::error::{Error, Result};
use crate::core::record::{ErrorRecord, ExceptionRecord};
use crate::core::wire::frame::{Reader, Writer, HEADER};

/// What a child says to its parent, in the order it says it.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A PHP error raised in the child, sent as it happens.
    Error(ErrorRecord),
    /// The job returned: the serialized value and the serializer that made it.
    Value { format: u8, bytes: Vec<u8> },
    /// The job threw, or its value could not be sent.
    Exception(ExceptionRecord),
    /// The job called `exit($code)`.
    Exit(i32),
    /// A fatal error ended the job; the last fatal `Error` record before it is the cause.
    Fatal,
    /// Last words of a child that ends on its own: peak PHP memory and when it finished.
    Stats { peak_memory: u64, finished_ns: u64 },
    /// The exception leaving the job is its own soft timeout's (`softTimeout:`), not another one.
    SoftTimeout,
    /// Pool, parent → worker: run this task (serialized payload).
    Task { id: u64, format: u8, bytes: Vec<u8> },
    /// Pool, parent → worker: leave after the current task.
    Stop,
    /// Pool, worker → parent: started and set up (onWorkerStart done), waiting for tasks.
    Ready,
    /// Pool, worker → parent: task `id` is done and the worker lives on; its CPU time and the
    /// worker's peak resident memory so far. Everything the worker sent since it was handed the
    /// task is the task's.
    TaskEnd { id: u64, cpu_ns: u64, rss: u64 },
}

pub(crate) const KIND_ERROR: u8 = 1;
pub(crate) const KIND_VALUE: u8 = 2;
pub(crate) const KIND_EXCEPTION: u8 = 3;
pub(crate) const KIND_EXIT: u8 = 4;
pub(crate) const KIND_FATAL: u8 = 5;
pub(crate) const KIND_STATS: u8 = 6;
pub(crate) const KIND_TASK: u8 = 7;
pub(crate) const KIND_STOP: u8 = 8;
pub(crate) const KIND_READY: u8 = 9;
pub(crate) const KIND_TASK_END: u8 = 10;
pub(crate) const KIND_SOFT_TIMEOUT: u8 = 11;

impl Message {
    /// The whole frame, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.0.extend_from_slice(&[0; HEADER]);
        match self {
            Message::Error(r) => {
                w.u8(KIND_ERROR);
                r.encode(&mut w);
            }
            Message::Value { format, bytes } => {
                w.u8(KIND_VALUE);
                w.u8(*format);
                w.0.extend_from_slice(bytes);
            }
            Message::Exception(e) => {
                w.u8(KIND_EXCEPTION);
                e.encode(&mut w);
            }
            Message::Exit(code) => {
                w.u8(KIND_EXIT);
                w.i64(*code as i64);
            }
            Message::Fatal => w.u8(KIND_FATAL),
            Message::Stats {
                peak_memory,
                finished_ns,
            } => {
                w.u8(KIND_STATS);
                w.u64(*peak_memory);
                w.u64(*finished_ns);
            }
            Message::Task { id, format, bytes } => {
                w.u8(KIND_TASK);
                w.u64(*id);
                w.u8(*format);
                w.0.extend_from_slice(bytes);
            }
            Message::Stop => w.u8(KIND_STOP),
            Message::SoftTimeout => w.u8(KIND_SOFT_TIMEOUT),
            Message::Ready => w.u8(KIND_READY),
            Message::TaskEnd { id, cpu_ns, rss } => {
                w.u8(KIND_TASK_END);
                w.u64(*id);
                w.u64(*cpu_ns);
                w.u64(*rss);
            }
        }
        let len = (w.0.len() - HEADER) as u32;
        w.0[..HEADER].copy_from_slice(&len.to_le_bytes());
        w.0
    }

    /// Shrinks an error or exception record until its frame fits in `max_frame` bytes (at least
    /// [`MIN_FIT`]): traces go first, then the `previous` chain, then the texts are cut. A record is
    /// never dropped for being long, and one long record never breaks the channel.
    pub fn fit(mut self, max_frame: usize) -> Message {
        let fits = |m: &Message| m.encode().len() <= max_frame.max(MIN_FIT);
        if fits(&self) {
            return self;
        }
        let budget = max_frame.max(MIN_FIT) / 4;
        match &mut self {
            Message::Error(r) => {
                r.trace.clear();
                if !fits(&self) {
                    if let Message::Error(r) = &mut self {
                        cut(&mut r.message, budget);
                        cut(&mut r.file, budget);
                    }
                }
            }
            Message::Exception(e) => {
                let mut cur = Some(&mut *e);
                while let Some(x) = cur {
                    x.trace = "(trace left out: the record is over forklift.max_frame_size)".into();
                    cur = x.previous.as_deref_mut();
                }
                if !fits(&self) {
                    if let Message::Exception(e) = &mut self {
                        e.previous = None;
                        cut(&mut e.message, budget);
                        cut(&mut e.file, budget);
                        cut(&mut e.class, budget);
                    }
                }
            }
            _ => {}
        }
        self
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Message> {
        let (&kind, rest) = body
            .split_first()
            .ok_or_else(|| Error::Channel("empty frame".into()))?;
        let mut r = Reader::new(rest);
        let msg = match kind {
            KIND_ERROR => Message::Error(ErrorRecord::decode(&mut r)?),
            KIND_VALUE => {
                let format = r.u8()?;
                Message::Value {
                    format,
                    bytes: r.rest().to_vec(),
                }
            }
            KIND_EXCEPTION => Message::Exception(ExceptionRecord::decode(&mut r)?),
            KIND_EXIT => Message::Exit(r.i64()? as i32),
            KIND_FATAL => Message::Fatal,
            KIND_STATS => Message::Stats {
                peak_memory: r.u64()?,
                finished_ns: r.u64()?,
            },
            KIND_TASK => Message::Task {
                id: r.u64()?,
                format: r.u8()?,
                bytes: r.rest().to_vec(),
            },
            KIND_STOP => Message::Stop,
            KIND_SOFT_TIMEOUT => Message::SoftTimeout,
            KIND_READY => Message::Ready,
            KIND_TASK_END => Message::TaskEnd {
                id: r.u64()?,
                cpu_ns: r.u64()?,
                rss: r.u64()?,
            },
            other => return Err(Error::Channel(format!("unknown frame kind {other}"))),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// The smallest frame limit records are shrunk to fit in.
pub const MIN_FIT: usize = 1024;

/// Cuts `s` to at most `max` bytes (on a character boundary), saying how much was cut.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let removed = s.len() - end;
    s.truncate(end);
    s.push_str(&format!("... ({removed} bytes cut)"));
}
