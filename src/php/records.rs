//! `Forklift\ErrorRecord` and `Forklift\ExceptionRecord`: the blackbox's records as immutable PHP
//! value objects, and the reading of a live PHP exception into a record.

use ext_php_rs::boxed::ZBox;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendHashTable, ZendObject, Zval};

use crate::core::record;

#[php_class]
#[php(name = "Forklift\\ErrorRecord")]
#[php(flags = ClassFlags::Final)]
pub struct ErrorRecord {
    pub(crate) inner: record::ErrorRecord,
}

#[php_impl]
impl ErrorRecord {
    /// The `E_*` level, e.g. `E_WARNING` (2).
    pub fn level(&self) -> i64 {
        self.inner.level as i64
    }
    /// The level's constant name, e.g. `"E_WARNING"`.
    pub fn level_name(&self) -> &'static str {
        record::level_name(self.inner.level)
    }
    pub fn message(&self) -> String {
        self.inner.message.clone()
    }
    pub fn file(&self) -> String {
        self.inner.file.clone()
    }
    pub fn line(&self) -> i64 {
        self.inner.line as i64
    }
    /// For fatal errors: the call stack when it happened, innermost first (`#0 file(line): fn()`).
    pub fn trace(&self) -> Vec<String> {
        self.inner.trace.clone()
    }
    /// Whether this level stops PHP (E_ERROR, E_USER_ERROR, E_PARSE, ...).
    pub fn is_fatal(&self) -> bool {
        self.inner.is_fatal()
    }
    /// What `var_dump()` and `print_r()` show: every getter's value, under the getter's name.
    #[php(name = "__debugInfo")]
    pub fn debug_info(&self) -> PhpResult<ZBox<ZendHashTable>> {
        let mut out = ZendHashTable::new();
        out.insert("level", self.level())?;
        out.insert("levelName", self.level_name())?;
        out.insert("message", self.message())?;
        out.insert("file", self.file())?;
        out.insert("line", self.line())?;
        out.insert("trace", self.trace())?;
        Ok(out)
    }
    pub fn __to_string(&self) -> String {
        format!(
            "{}: {} in {}:{}",
            record::level_name(self.inner.level),
            self.inner.message,
            self.inner.file,
            self.inner.line
        )
    }
}

#[php_class]
#[php(name = "Forklift\\ExceptionRecord")]
#[php(flags = ClassFlags::Final)]
pub struct ExceptionRecord {
    pub(crate) inner: record::ExceptionRecord,
}

#[php_impl]
impl ExceptionRecord {
    /// The class of the exception as it was thrown, e.g. `"RuntimeException"`.
    pub fn class_name(&self) -> String {
        self.inner.class.clone()
    }
    pub fn message(&self) -> String {
        self.inner.message.clone()
    }
    /// `getCode()`: an int, or a string where the exception used one (PDOException).
    pub fn code(&self) -> Zval {
        let mut z = Zval::new();
        match &self.inner.code {
            record::Code::Int(n) => z.set_long(*n),
            record::Code::Str(s) => {
                let _ = z.set_string(s, false);
            }
        }
        z
    }
    pub fn file(&self) -> String {
        self.inner.file.clone()
    }
    pub fn line(&self) -> i64 {
        self.inner.line as i64
    }
    /// `getTraceAsString()` of the exception in the child.
    pub fn trace(&self) -> String {
        self.inner.trace.clone()
    }
    pub fn previous(&self) -> Option<ExceptionRecord> {
        self.inner
            .previous
            .as_deref()
            .map(|p| ExceptionRecord { inner: p.clone() })
    }
    /// What `var_dump()` and `print_r()` show: every getter's value, under the getter's name; the
    /// previous exception dumps itself in turn.
    #[php(name = "__debugInfo")]
    pub fn debug_info(&self) -> PhpResult<ZBox<ZendHashTable>> {
        let mut out = ZendHashTable::new();
        out.insert("className", self.class_name())?;
        out.insert("message", self.message())?;
        out.insert("code", self.code())?;
        out.insert("file", self.file())?;
        out.insert("line", self.line())?;
        out.insert("trace", self.trace())?;
        out.insert("previous", self.previous())?;
        Ok(out)
    }
    pub fn __to_string(&self) -> String {
        self.inner.summary()
    }
}

/// Reads a thrown PHP exception (and its `previous` chain) into a record.
pub fn read_exception(ex: &ZendObject) -> record::ExceptionRecord {
    let mut chain = Vec::new();
    let mut cur: Option<Zval> = None;
    loop {
        let obj = match &cur {
            None => ex,
            Some(z) => match z.object() {
                Some(o) => o,
                None => break,
            },
        };
        let call = |m: &str| obj.try_call_method(m, vec![]).ok();
        // Bytes that are not UTF-8 (a path, a message quoting binary data) are replaced, not
        // the whole text lost.
        let text = |m: &str| {
            call(m)
                .and_then(|z| crate::php::zend::lossy_string(&z))
                .unwrap_or_default()
        };
        chain.push(record::ExceptionRecord {
            class: obj.get_class_name().unwrap_or_default(),
            message: text("getMessage"),
            code: match call("getCode") {
                Some(z) if z.is_long() => record::Code::Int(z.long().unwrap_or(0)),
                Some(z) => {
                    record::Code::Str(crate::php::zend::lossy_string(&z).unwrap_or_default())
                }
                None => record::Code::Int(0),
            },
            file: text("getFile"),
            line: call("getLine").and_then(|z| z.long()).unwrap_or(0) as u32,
            trace: text("getTraceAsString"),
            previous: None,
        });
        if chain.len() >= record::MAX_PREVIOUS {
            break;
        }
        cur = call("getPrevious");
    }
    let mut prev: Option<Box<record::ExceptionRecord>> = None;
    while let Some(mut e) = chain.pop() {
        e.previous = prev;
        prev = Some(Box::new(e));
    }
    *prev.expect("the exception itself is in the chain")
}
