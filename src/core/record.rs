//! What the blackbox records: PHP errors and uncaught exceptions, as plain data.
//!
//! These are filled in by the binding layer (in the child, as errors happen) and travel to the
//! parent through [`crate::core::wire`]. Level numbers are PHP's `E_*` constants.

use crate::core::error::Result;
use crate::core::wire::{Reader, Writer};

pub const E_ERROR: i32 = 1;
pub const E_WARNING: i32 = 2;
pub const E_PARSE: i32 = 4;
pub const E_NOTICE: i32 = 8;
pub const E_CORE_ERROR: i32 = 16;
pub const E_CORE_WARNING: i32 = 32;
pub const E_COMPILE_ERROR: i32 = 64;
pub const E_COMPILE_WARNING: i32 = 128;
pub const E_USER_ERROR: i32 = 256;
pub const E_USER_WARNING: i32 = 512;
pub const E_USER_NOTICE: i32 = 1024;
pub const E_STRICT: i32 = 2048;
pub const E_RECOVERABLE_ERROR: i32 = 4096;
pub const E_DEPRECATED: i32 = 8192;
pub const E_USER_DEPRECATED: i32 = 16384;

/// Levels after which PHP does not continue the script (unless a user handler takes them).
pub const FATAL_LEVELS: i32 =
    E_ERROR | E_PARSE | E_CORE_ERROR | E_COMPILE_ERROR | E_USER_ERROR | E_RECOVERABLE_ERROR;

/// The name of the `E_*` constant for a level, as PHP spells it.
pub fn level_name(level: i32) -> &'static str {
    match level {
        E_ERROR => "E_ERROR",
        E_WARNING => "E_WARNING",
        E_PARSE => "E_PARSE",
        E_NOTICE => "E_NOTICE",
        E_CORE_ERROR => "E_CORE_ERROR",
        E_CORE_WARNING => "E_CORE_WARNING",
        E_COMPILE_ERROR => "E_COMPILE_ERROR",
        E_COMPILE_WARNING => "E_COMPILE_WARNING",
        E_USER_ERROR => "E_USER_ERROR",
        E_USER_WARNING => "E_USER_WARNING",
        E_USER_NOTICE => "E_USER_NOTICE",
        E_STRICT => "E_STRICT",
        E_RECOVERABLE_ERROR => "E_RECOVERABLE_ERROR",
        E_DEPRECATED => "E_DEPRECATED",
        E_USER_DEPRECATED => "E_USER_DEPRECATED",
        _ => "E_UNKNOWN",
    }
}

/// One PHP error (notice, warning, deprecation, fatal ...).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorRecord {
    pub level: i32,
    pub message: String,
    pub file: String,
    pub line: u32,
    /// `#0 function() at file:line` lines, innermost first; filled for fatal errors only.
    pub trace: Vec<String>,
}

impl ErrorRecord {
    pub fn is_fatal(&self) -> bool {
        self.level & FATAL_LEVELS != 0
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.i64(self.level as i64);
        w.str(&self.message);
        w.str(&self.file);
        w.u32(self.line);
        w.u32(self.trace.len() as u32);
        for t in &self.trace {
            w.str(t);
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self> {
        let level = r.i64()? as i32;
        let message = r.str()?;
        let file = r.str()?;
        let line = r.u32()?;
        let n = r.u32()?;
        let mut trace = Vec::with_capacity((n as usize).min(64));
        for _ in 0..n {
            trace.push(r.str()?);
        }
        Ok(ErrorRecord {
            level,
            message,
            file,
            line,
            trace,
        })
    }
}

/// An exception as it was thrown in the child, with its `previous` chain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExceptionRecord {
    pub class: String,
    pub message: String,
    pub code: Code,
    pub file: String,
    pub line: u32,
    /// `getTraceAsString()`.
    pub trace: String,
    pub previous: Option<Box<ExceptionRecord>>,
}

/// `getCode()`: an int for most exceptions, a string for some (PDOException's SQLSTATE).
#[derive(Debug, Clone, PartialEq)]
pub enum Code {
    Int(i64),
    Str(String),
}

impl Default for Code {
    fn default() -> Self {
        Code::Int(0)
    }
}

impl Code {
    fn encode(&self, w: &mut Writer) {
        match self {
            Code::Int(n) => {
                w.u8(0);
                w.i64(*n);
            }
            Code::Str(s) => {
                w.u8(1);
                w.str(s);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self> {
        Ok(match r.u8()? {
            0 => Code::Int(r.i64()?),
            _ => Code::Str(r.str()?),
        })
    }
}

/// Deeper `previous` chains are cut: a frame must stay bounded even for a cyclic-looking chain.
pub const MAX_PREVIOUS: usize = 32;

impl ExceptionRecord {
    pub(crate) fn encode(&self, w: &mut Writer) {
        let mut cur = Some(self);
        let mut depth = 0;
        while let Some(e) = cur {
            w.str(&e.class);
            w.str(&e.message);
            e.code.encode(w);
            w.str(&e.file);
            w.u32(e.line);
            w.str(&e.trace);
            cur = e.previous.as_deref().filter(|_| depth + 1 < MAX_PREVIOUS);
            w.u8(cur.is_some() as u8);
            depth += 1;
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self> {
        let mut chain = Vec::new();
        loop {
            let e = ExceptionRecord {
                class: r.str()?,
                message: r.str()?,
                code: Code::decode(r)?,
                file: r.str()?,
                line: r.u32()?,
                trace: r.str()?,
                previous: None,
            };
            chain.push(e);
            if r.u8()? == 0 || chain.len() >= MAX_PREVIOUS {
                break;
            }
        }
        let mut prev: Option<Box<ExceptionRecord>> = None;
        while let Some(mut e) = chain.pop() {
            e.previous = prev;
            prev = Some(Box::new(e));
        }
        Ok(*prev.expect("chain has at least one exception"))
    }

    /// `Class: message in file:line`, as a one-line cause.
    pub fn summary(&self) -> String {
        if self.file.is_empty() {
            format!("{}: {}", self.class, self.message)
        } else {
            format!(
                "{}: {} in {}:{}",
                self.class, self.message, self.file, self.line
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_levels_are_the_ones_that_stop_php() {
        assert!(ErrorRecord {
            level: E_ERROR,
            ..Default::default()
        }
        .is_fatal());
        assert!(ErrorRecord {
            level: E_USER_ERROR,
            ..Default::default()
        }
        .is_fatal());
        assert!(!ErrorRecord {
            level: E_WARNING,
            ..Default::default()
        }
        .is_fatal());
        assert!(!ErrorRecord {
            level: E_DEPRECATED,
            ..Default::default()
        }
        .is_fatal());
        assert_eq!(level_name(E_USER_DEPRECATED), "E_USER_DEPRECATED");
        assert_eq!(level_name(3), "E_UNKNOWN");
    }

    #[test]
    fn long_previous_chains_are_cut_not_lost_whole() {
        let mut e = ExceptionRecord {
            class: "E0".into(),
            ..Default::default()
        };
        for i in 1..100 {
            e = ExceptionRecord {
                class: format!("E{i}"),
                previous: Some(Box::new(e)),
                ..Default::default()
            };
        }
        let mut w = Writer(Vec::new());
        e.encode(&mut w);
        let back = ExceptionRecord::decode(&mut Reader::new(&w.0)).unwrap();
        let mut n = 0;
        let mut cur = Some(&back);
        while let Some(x) = cur {
            n += 1;
            cur = x.previous.as_deref();
        }
        assert_eq!(n, MAX_PREVIOUS);
        assert_eq!(back.class, "E99");
    }
}
