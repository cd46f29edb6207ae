//! Framing for the channel between a job child and its parent.
//!
//! A frame is `[len: u32 LE][kind: u8][payload: len - 1 bytes]` on a `SOCK_STREAM` socketpair.
//! [`FrameDecoder`] takes bytes as they arrive and yields whole frames; a frame whose declared length
//! is over the limit, an unknown kind, or bytes left over at end of stream are errors of that channel
//! only. This module knows nothing of PHP: payloads are opaque bytes here, typed by [`Message`].

use crate::core::error::{Error, Result};
use crate::core::record::{ErrorRecord, ExceptionRecord};

/// Bytes of the length prefix.
pub const HEADER: usize = 4;

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

const KIND_ERROR: u8 = 1;
const KIND_VALUE: u8 = 2;
const KIND_EXCEPTION: u8 = 3;
const KIND_EXIT: u8 = 4;
const KIND_FATAL: u8 = 5;
const KIND_STATS: u8 = 6;
const KIND_TASK: u8 = 7;
const KIND_STOP: u8 = 8;
const KIND_READY: u8 = 9;
const KIND_TASK_END: u8 = 10;

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

    /// Length of the frame `encode` would make, without making it (for the size limit).
    pub fn value_frame_len(bytes: usize) -> usize {
        HEADER + 2 + bytes
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

    fn decode(body: &[u8]) -> Result<Message> {
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

/// Turns a byte stream into messages. Once it has failed it stays failed and ignores further input.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_frame: usize,
    failed: Option<Error>,
}

impl FrameDecoder {
    /// `max_frame`: the largest frame accepted, header included.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max_frame,
            failed: None,
        }
    }

    /// Feeds bytes; returns the messages completed by them. An error is returned once, then the
    /// decoder ignores the rest of the stream.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Message>) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let result = loop {
            let avail = &self.buf[start..];
            if avail.len() < HEADER {
                break Ok(());
            }
            let len = u32::from_le_bytes(avail[..HEADER].try_into().unwrap()) as usize;
            if len + HEADER > self.max_frame {
                break Err(Error::Channel(format!(
                    "a frame of {} bytes is over the limit of {} bytes (forklift.max_frame_size)",
                    len + HEADER,
                    self.max_frame
                )));
            }
            if avail.len() < HEADER + len {
                break Ok(());
            }
            match Message::decode(&avail[HEADER..HEADER + len]) {
                Ok(m) => out.push(m),
                Err(e) => break Err(e),
            }
            start += HEADER + len;
        };
        self.buf.drain(..start);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        result
    }

    /// End of stream: bytes of an unfinished frame left over are an error.
    pub fn finish(&mut self) -> Result<()> {
        if self.failed.is_some() || self.buf.is_empty() {
            return Ok(());
        }
        let err = Error::Channel(format!(
            "the stream ended inside a frame ({} bytes of it arrived)",
            self.buf.len()
        ));
        self.failed = Some(err.clone());
        self.buf = Vec::new();
        Err(err)
    }

    /// Bytes of an unfinished frame held back.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn failed(&self) -> Option<&Error> {
        self.failed.as_ref()
    }
}

/// Little-endian writer for frame payloads.
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Reader matching [`Writer`]; every read is bounds-checked.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(Error::Channel(format!(
                "a frame is shorter than its contents say ({} bytes missing)",
                n - self.data.len()
            )));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn str(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
    pub fn finish(&self) -> Result<()> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(Error::Channel(format!(
                "{} unexpected bytes at the end of a frame",
                self.data.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Code;

    fn sample() -> Vec<Message> {
        vec![
            Message::Error(ErrorRecord {
                level: 2,
                message: "Undefined variable $x".into(),
                file: "/app/job.php".into(),
                line: 12,
                trace: vec!["#0 /app/job.php(3): run()".into()],
            }),
            Message::Value {
                format: 0,
                bytes: b"i:42;".to_vec(),
            },
            Message::Exception(ExceptionRecord {
                class: "RuntimeException".into(),
                message: "outer".into(),
                code: Code::Int(7),
                file: "/a.php".into(),
                line: 3,
                trace: "#0 {main}".into(),
                previous: Some(Box::new(ExceptionRecord {
                    class: "LogicException".into(),
                    message: "inner".into(),
                    code: Code::Int(0),
                    file: "/b.php".into(),
                    line: 9,
                    trace: String::new(),
                    previous: None,
                })),
            }),
            Message::Exit(3),
            Message::Fatal,
            Message::Stats {
                peak_memory: 2 << 20,
                finished_ns: 123_456_789,
            },
            Message::Task {
                id: 7,
                format: 1,
                bytes: b"payload".to_vec(),
            },
            Message::Stop,
            Message::Ready,
            Message::TaskEnd {
                id: 7,
                cpu_ns: 5,
                rss: 6,
            },
        ]
    }

    fn stream(msgs: &[Message]) -> Vec<u8> {
        msgs.iter().flat_map(|m| m.encode()).collect()
    }

    #[test]
    fn every_message_kind_survives_a_round_trip() {
        let msgs = sample();
        let mut d = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        d.push(&stream(&msgs), &mut out).unwrap();
        d.finish().unwrap();
        assert_eq!(out, msgs);
    }

    #[test]
    fn frames_split_at_every_byte_boundary_are_reassembled() {
        let msgs = sample();
        let bytes = stream(&msgs);
        for chunk in 1..8 {
            let mut d = FrameDecoder::new(1 << 20);
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.push(piece, &mut out).unwrap();
            }
            d.finish().unwrap();
            assert_eq!(out, msgs, "chunk size {chunk}");
        }
    }

    #[test]
    fn long_records_are_shrunk_to_fit_the_frame_limit_not_dropped() {
        let long = "é".repeat(5000);
        let error = Message::Error(ErrorRecord {
            level: 2,
            message: long.clone(),
            file: "/f.php".into(),
            line: 1,
            trace: vec![long.clone(); 10],
        });
        let fitted = error.fit(2048);
        assert!(fitted.encode().len() <= 2048);
        let Message::Error(r) = fitted else {
            panic!("still an error record")
        };
        assert!(
            r.message.starts_with("éé") && r.message.ends_with("bytes cut)"),
            "{}",
            r.message
        );
        assert_eq!(r.file, "/f.php");

        let mut e = ExceptionRecord {
            class: "E".into(),
            message: long.clone(),
            trace: long.clone(),
            ..Default::default()
        };
        e.previous = Some(Box::new(e.clone()));
        let fitted = Message::Exception(e).fit(2048);
        assert!(fitted.encode().len() <= 2048);

        let small = Message::Exit(3);
        assert_eq!(small.clone().fit(2048), small);
    }

    #[test]
    fn oversized_frame_is_refused_before_its_body_arrives() {
        let mut d = FrameDecoder::new(64);
        let mut out = Vec::new();
        let err = d.push(&1000u32.to_le_bytes(), &mut out).unwrap_err();
        assert!(
            err.to_string().contains("over the limit of 64 bytes"),
            "{err}"
        );
        // Everything after is ignored, and the failure is remembered.
        d.push(&stream(&sample()), &mut out).unwrap();
        assert!(out.is_empty());
        assert!(d.failed().is_some());
    }

    #[test]
    fn truncated_stream_is_an_error_at_finish() {
        let bytes = Message::Exit(1).encode();
        let mut d = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        d.push(&bytes[..bytes.len() - 2], &mut out).unwrap();
        assert!(out.is_empty());
        let err = d.finish().unwrap_err();
        assert!(err.to_string().contains("ended inside a frame"), "{err}");
    }

    #[test]
    fn unknown_kind_and_short_payloads_are_channel_errors() {
        let mut out = Vec::new();
        let mut d = FrameDecoder::new(1 << 20);
        let err = d.push(&[1, 0, 0, 0, 99], &mut out).unwrap_err();
        assert!(err.to_string().contains("unknown frame kind 99"), "{err}");

        let mut d = FrameDecoder::new(1 << 20);
        let err = d
            .push(&[3, 0, 0, 0, KIND_EXIT, 1, 2], &mut out)
            .unwrap_err();
        assert!(
            err.to_string().contains("shorter than its contents"),
            "{err}"
        );

        let mut d = FrameDecoder::new(1 << 20);
        let err = d.push(&[0, 0, 0, 0], &mut out).unwrap_err();
        assert!(err.to_string().contains("empty frame"), "{err}");
    }

    /// Deterministic garbage: no input may panic the decoder, and valid frames before the garbage
    /// are still delivered.
    #[test]
    fn garbage_never_panics_and_keeps_the_frames_before_it() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let good = stream(&sample());
        for round in 0..2000 {
            let mut bytes = good.clone();
            let n = (round % 64) + 1;
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            let mut d = FrameDecoder::new(4096);
            let mut out = Vec::new();
            let _ = d.push(&bytes, &mut out);
            let _ = d.finish();
            assert!(out.len() >= sample().len(), "round {round}");
            assert_eq!(&out[..sample().len()], &sample()[..]);
        }
    }
}
