//! The frame codec: `[len: u32 LE][body: len bytes]` on a `SOCK_STREAM` socket. [`FrameDecoder`]
//! takes bytes as they arrive and yields whole frames' bodies turned into [`Message`]s; a frame over
//! the size limit (refused from its header, before its body is read), a body that does not decode,
//! or bytes left over at the end of the stream are errors of that channel only. [`Writer`] and
//! [`Reader`] are the bounds-checked little-endian helpers every payload is written and read with.

use crate::core::error::{Error, Result};
use crate::core::wire::message::Message;

/// Bytes of the length prefix.
pub const HEADER: usize = 4;

/// Most bytes a frame adds around what it carries (length, kind, a task's id and format byte):
/// the decoder takes frames of up to `forklift.max_frame_size` plus this, so the documented limit
/// is exactly the largest value that can be sent.
pub const ENVELOPE: usize = 16;

/// Turns a byte stream into messages. Once it has failed it stays failed and ignores further input.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_frame: usize,
    failed: Option<Error>,
}

impl FrameDecoder {
    /// `max_payload`: the largest value or record a frame may carry (`forklift.max_frame_size`).
    pub fn new(max_payload: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max_frame: max_payload.saturating_add(ENVELOPE),
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
                    "a frame of {} bytes is over the limit: forklift.max_frame_size is {} bytes \
                     (the largest value, serialized), and a frame adds at most {ENVELOPE}",
                    len + HEADER,
                    self.max_frame - ENVELOPE
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
