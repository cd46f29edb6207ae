//! PHP values over the channel: `serialize`/`unserialize`, or igbinary's when it is loaded (the
//! child and the parent are the same program, so both sides agree; the format byte says which).

use ext_php_rs::flags::DataType;
use ext_php_rs::types::{ZendCallable, Zval};
use ext_php_rs::zend::ExecutorGlobals;

use crate::core::record::{ExceptionRecord, E_NOTICE, E_WARNING};
use crate::php::records::read_exception;

pub const FORMAT_PHP: u8 = 0;
pub const FORMAT_IGBINARY: u8 = 1;

/// Nesting depth up to which a returned array is searched for resources.
const RESOURCE_SEARCH_DEPTH: usize = 4096;

thread_local! {
    static IGBINARY: std::cell::OnceCell<bool> = const { std::cell::OnceCell::new() };
}

/// Extensions are loaded at startup, so this is decided once per process.
fn has_igbinary() -> bool {
    IGBINARY.with(|i| *i.get_or_init(|| ZendCallable::try_from_name("igbinary_serialize").is_ok()))
}

/// Why a value could not be sent; becomes a `Forklift\ChannelException` record.
pub struct Unsendable {
    pub message: String,
    pub previous: Option<ExceptionRecord>,
    /// Serializing ended the process's PHP code (`exit()` in `__sleep`/`__serialize`, memory
    /// exhausted): the engine's unwinding marker is left pending for the caller to handle.
    pub unwinding: bool,
}

/// Why a value sent by the other side could not be taken.
#[derive(Debug)]
pub enum Unreadable {
    /// It is not a valid serialization, or its `__wakeup`/`__unserialize` threw.
    Failed(String),
    /// `exit()` in `__wakeup`/`__unserialize`, or memory exhausted: the engine's unwinding marker
    /// is left pending, the process is ending.
    Unwinding,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Failed(why) => f.write_str(why),
            Unreadable::Unwinding => f.write_str(
                "the process ended (exit() or memory exhausted) while the value was unserialized",
            ),
        }
    }
}

/// Serializes a job's return value.
/// What is being sent, for messages.
#[derive(Clone, Copy)]
pub enum Subject {
    /// A job's (or task's) return value, child → parent.
    ReturnValue,
    /// A pool task's payload, parent → worker.
    Payload,
}

/// Serializes a value for the channel.
pub fn serialize(v: &Zval, subject: Subject) -> Result<(u8, Vec<u8>), Unsendable> {
    let (holds, named) = match subject {
        Subject::ReturnValue => ("the job returned a resource", "the job's return value"),
        Subject::Payload => ("the payload holds a resource", "the payload"),
    };
    if let Some(path) = find_resource(v, RESOURCE_SEARCH_DEPTH) {
        return Err(Unsendable {
            message: format!(
                "{holds}{path}: resources (files, sockets, connections) cannot \
                 leave the process; return plain data instead"
            ),
            previous: None,
            unwinding: false,
        });
    }
    let (format, name) = if has_igbinary() {
        (FORMAT_IGBINARY, "igbinary_serialize")
    } else {
        (FORMAT_PHP, "serialize")
    };
    let func = ZendCallable::try_from_name(name).map_err(|e| Unsendable {
        message: format!("{name}() is not available: {e}"),
        previous: None,
        unwinding: false,
    })?;
    match func.try_call(vec![v]) {
        Ok(z) => match z.zend_str() {
            Some(s) => Ok((format, s.as_bytes().to_vec())),
            None => Err(Unsendable {
                message: format!("{name}() did not return a string"),
                previous: None,
                unwinding: false,
            }),
        },
        Err(_) if crate::php::zend::pending_is_exit() => Err(Unsendable {
            message: format!("{named} could not be serialized: the process ended meanwhile"),
            previous: None,
            unwinding: true,
        }),
        Err(_) => {
            let previous = ExecutorGlobals::take_exception().map(|ex| read_exception(&ex));
            let why = previous
                .as_ref()
                .map(|p| p.message.clone())
                .unwrap_or_default();
            Err(Unsendable {
                message: format!("{named} cannot be serialized: {why}"),
                previous,
                unwinding: false,
            })
        }
    }
}

/// Unserializes a value sent by the other side. `Err` says why not (never a PHP warning).
pub fn unserialize(format: u8, bytes: &[u8]) -> Result<Zval, Unreadable> {
    let name = match format {
        FORMAT_PHP => "unserialize",
        FORMAT_IGBINARY => "igbinary_unserialize",
        other => return Err(Unreadable::Failed(format!("unknown value format {other}"))),
    };
    let func = ZendCallable::try_from_name(name)
        .map_err(|e| Unreadable::Failed(format!("{name}() is not available: {e}")))?;
    let mut arg = Zval::new();
    arg.set_binary(bytes.to_vec());
    // unserialize() reports garbage with an E_NOTICE or E_WARNING and `false`: silence those for
    // the call (fatal errors still show) and tell the two falses apart by the payload.
    let quiet = crate::php::zend::error_reporting() & !(E_NOTICE | E_WARNING);
    // Forklift's own bookkeeping: a signal handler or deadline must not land inside a value's
    // __wakeup and change the result; they run right after.
    let value = crate::php::timeout::deferring_interrupts(|| {
        crate::php::zend::with_error_reporting(quiet, || func.try_call(vec![&arg]))
    });
    match value {
        Ok(z) if z.is_false() && !is_serialized_false(format, bytes) => {
            Err(Unreadable::Failed(format!(
                "the value ({} bytes) could not be unserialized",
                bytes.len()
            )))
        }
        Ok(z) => Ok(z),
        Err(_) if crate::php::zend::pending_is_exit() => Err(Unreadable::Unwinding),
        Err(_) => {
            let why = ExecutorGlobals::take_exception()
                .map(|ex| read_exception(&ex).message)
                .unwrap_or_default();
            Err(Unreadable::Failed(format!(
                "the value could not be unserialized: {why}"
            )))
        }
    }
}

fn is_serialized_false(format: u8, bytes: &[u8]) -> bool {
    match format {
        FORMAT_PHP => bytes == b"b:0;",
        // igbinary: 4-byte header then the type byte 0x04 (false).
        _ => bytes.len() == 5 && bytes[4] == 0x04,
    }
}

/// Where a resource hides in `v` (`""` for `v` itself, `" at [key]->prop"` inside arrays and
/// objects, declared and private properties included, and inside PHP's own containers such as
/// ArrayObject or SplObjectStorage, whose `__serialize()` is asked). Each array and object is looked
/// at once, so a graph of shared references costs its size, not the number of paths through it.
/// Classes of the application that decide their own serialization (`__serialize`, `__sleep`,
/// Serializable) are left to it.
fn find_resource(v: &Zval, depth: usize) -> Option<String> {
    find_in(v, depth, &mut std::collections::HashSet::new())
}

fn find_in(v: &Zval, depth: usize, seen: &mut std::collections::HashSet<usize>) -> Option<String> {
    let v = if v.is_reference() { v.reference()? } else { v };
    // A declared property, in an object's property table, points to its slot.
    let v = if v.is_indirect() { v.indirect()? } else { v };
    let v = if v.is_reference() { v.reference()? } else { v };
    if depth == 0 {
        return Some(format!(
            " (nested more than {RESOURCE_SEARCH_DEPTH} levels deep, too deep to check)"
        ));
    }
    let (table, object) = match v.get_type() {
        DataType::Resource => return Some(String::new()),
        DataType::Array => {
            let table = v.array()?;
            if !seen.insert(table as *const _ as usize) {
                return None;
            }
            (table, false)
        }
        DataType::Object(_) => {
            let obj = v.object()?;
            if !seen.insert(obj as *const _ as usize) {
                return None;
            }
            let ce = obj.get_class_entry();
            let has_serialize = ce.function_table.get("__serialize").is_some();
            let custom = has_serialize
                || ce.function_table.get("__sleep").is_some()
                || ce.instance_of(ext_php_rs::zend::ce::serializable());
            if custom {
                // PHP's own classes (ArrayObject, SplObjectStorage, ...) serialize what their
                // __serialize() returns: look there. The application's own are left to it.
                let internal =
                    ce.type_ as u8 == ZEND_INTERNAL || declared_by_php(ce, "__serialize");
                if !(has_serialize && internal) {
                    return None;
                }
                let data = obj.try_call_method("__serialize", vec![]).ok()?;
                return find_in(&data, depth - 1, seen).map(|inner| {
                    let inner = inner.trim_start_matches(" at ");
                    format!(" at ->__serialize(){inner}")
                });
            }
            (obj.get_properties().ok()?, true)
        }
        _ => return None,
    };
    let mut found = None;
    crate::php::zend::for_each_entry(table, |key, item| {
        if let Some(inner) = find_in(item, depth - 1, seen) {
            let inner = inner.trim_start_matches(" at ");
            let key = crate::php::zend::key_text(&key);
            found = Some(if object {
                format!(" at ->{key}{inner}")
            } else {
                format!(" at [{key}]{inner}")
            });
            return false;
        }
        true
    });
    found
}

/// Whether `method` of `ce` is PHP's own (an application class that extends ArrayObject without
/// overriding `__serialize` serializes as ArrayObject does).
fn declared_by_php(ce: &ext_php_rs::zend::ClassEntry, method: &str) -> bool {
    let Some(entry) = ce.function_table.get(method) else {
        return false;
    };
    // SAFETY: a function table entry is a pointer zval to a live zend_function, whose first byte
    // (the common header's `type`) says internal or user.
    unsafe {
        entry
            .ptr::<ext_php_rs::ffi::zend_function>()
            .is_some_and(|f| (*f).type_ == ZEND_INTERNAL)
    }
}

/// `ZEND_INTERNAL_CLASS` / `ZEND_INTERNAL_FUNCTION` (Zend/zend_compile.h).
const ZEND_INTERNAL: u8 = 1;
