//! PHP values over the channel: `serialize`/`unserialize`, or igbinary's when it is loaded (the
//! child and the parent are the same program, so both sides agree; the format byte says which).

use ext_php_rs::flags::DataType;
use ext_php_rs::types::{ZendCallable, Zval};
use ext_php_rs::zend::ExecutorGlobals;

use crate::core::record::ExceptionRecord;
use crate::php::records::read_exception;

pub const FORMAT_PHP: u8 = 0;
pub const FORMAT_IGBINARY: u8 = 1;

/// Nesting depth up to which a returned array is searched for resources.
const RESOURCE_SEARCH_DEPTH: usize = 512;

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
    })?;
    match func.try_call(vec![v]) {
        Ok(z) => match z.zend_str() {
            Some(s) => Ok((format, s.as_bytes().to_vec())),
            None => Err(Unsendable {
                message: format!("{name}() did not return a string"),
                previous: None,
            }),
        },
        Err(_) => {
            let previous = ExecutorGlobals::take_exception().map(|ex| read_exception(&ex));
            let why = previous
                .as_ref()
                .map(|p| p.message.clone())
                .unwrap_or_default();
            Err(Unsendable {
                message: format!("{named} cannot be serialized: {why}"),
                previous,
            })
        }
    }
}

/// Unserializes a value sent by a child. `Err` says why not (never a PHP warning).
pub fn unserialize(format: u8, bytes: &[u8]) -> Result<Zval, String> {
    let name = match format {
        FORMAT_PHP => "unserialize",
        FORMAT_IGBINARY => "igbinary_unserialize",
        other => return Err(format!("unknown value format {other}")),
    };
    let func =
        ZendCallable::try_from_name(name).map_err(|e| format!("{name}() is not available: {e}"))?;
    let mut arg = Zval::new();
    arg.set_binary(bytes.to_vec());
    // unserialize() reports garbage with an E_WARNING and `false`: silence it for the call and tell
    // the two falses apart by the payload.
    let value = crate::php::zend::with_error_reporting(0, || func.try_call(vec![&arg]));
    match value {
        Ok(z) if z.is_false() && !is_serialized_false(format, bytes) => Err(format!(
            "the job's return value ({} bytes) could not be unserialized",
            bytes.len()
        )),
        Ok(z) => Ok(z),
        Err(_) => {
            let why = ExecutorGlobals::take_exception()
                .map(|ex| read_exception(&ex).message)
                .unwrap_or_default();
            Err(format!(
                "the job's return value could not be unserialized: {why}"
            ))
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
/// objects, declared properties included). Each array and object is looked at once, so a graph of
/// shared references costs its size, not the number of paths through it. Objects that decide their
/// own serialization (`__serialize`, `__sleep`, Serializable) are left to it.
fn find_resource(v: &Zval, depth: usize) -> Option<String> {
    find_in(v, depth, &mut std::collections::HashSet::new())
}

fn find_in(v: &Zval, depth: usize, seen: &mut std::collections::HashSet<usize>) -> Option<String> {
    let v = if v.is_reference() { v.reference()? } else { v };
    // A declared property, in an object's property table, points to its slot.
    let v = if v.is_indirect() { v.indirect()? } else { v };
    let v = if v.is_reference() { v.reference()? } else { v };
    if depth == 0 {
        return None;
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
            let custom = ["__serialize", "__sleep"]
                .iter()
                .any(|m| ce.function_table.get(*m).is_some())
                || ce.instance_of(ext_php_rs::zend::ce::serializable());
            if custom {
                return None;
            }
            (obj.get_properties().ok()?, true)
        }
        _ => return None,
    };
    for (k, item) in table.iter() {
        if let Some(inner) = find_in(item, depth - 1, seen) {
            let inner = inner.trim_start_matches(" at ");
            return Some(if object {
                format!(" at ->{k}{inner}")
            } else {
                format!(" at [{k}]{inner}")
            });
        }
    }
    None
}
