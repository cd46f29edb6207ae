//! The few Zend engine symbols ext-php-rs does not bind, behind safe functions. All raw access to
//! the engine's globals from the binding layer goes through here.

use std::ffi::{c_char, CStr};

use ext_php_rs::ffi::{self, zend_class_entry, zend_object};
use ext_php_rs::types::{ZendObject, Zval};
use ext_php_rs::zend::ClassEntry;

unsafe extern "C" {
    fn zend_is_unwind_exit(ex: *const zend_object) -> bool;
    fn zend_memory_peak_usage(real_usage: bool) -> usize;
    fn zend_memory_reset_peak_usage();
    fn php_output_discard_all();
    fn zend_exception_set_previous(exception: *mut zend_object, add_previous: *mut zend_object);
    fn zend_ini_long(name: *const c_char, len: usize, orig: i32) -> i64;
    fn zend_hash_internal_pointer_reset_ex(ht: *mut ffi::HashTable, pos: *mut u32);
    fn zend_hash_move_forward_ex(ht: *mut ffi::HashTable, pos: *mut u32) -> i32;
    fn zend_hash_get_current_key_zval_ex(
        ht: *const ffi::HashTable,
        key: *mut ffi::zval,
        pos: *const u32,
    );
    fn zend_hash_get_current_data_ex(ht: *mut ffi::HashTable, pos: *mut u32) -> *mut ffi::zval;
    fn zend_alter_ini_entry_chars(
        name: *mut ffi::zend_string,
        value: *const c_char,
        value_length: usize,
        modify_type: i32,
        stage: i32,
    ) -> i32;
    fn zend_update_property(
        scope: *mut zend_class_entry,
        obj: *mut zend_object,
        name: *const c_char,
        name_len: usize,
        value: *mut ffi::zval,
    );
    static mut spl_ce_RuntimeException: *mut zend_class_entry;
    static mut output_globals: OutputGlobals;
}

/// The head of PHP's `zend_output_globals` (main/php_output.h): only the handler stack is read.
#[repr(C)]
struct OutputGlobals {
    handlers: ffi::zend_stack,
}

/// `PHP_OUTPUT_HANDLER_DISABLED`: the engine skips a disabled handler when popping it.
const OUTPUT_HANDLER_DISABLED: i32 = 0x2000;

fn globals() -> &'static ffi::_zend_executor_globals {
    // SAFETY: executor globals exist for the whole life of a request on PHP's main thread, which is
    // the only thread that runs Forklift's code; we only read plain fields.
    unsafe { &*ffi::ext_php_rs_executor_globals() }
}

/// Whether the pending exception is PHP's internal "exit()" unwinding marker.
pub fn pending_is_exit() -> bool {
    let ex = globals().exception;
    // SAFETY: a non-null EG(exception) is a live object owned by the engine.
    !ex.is_null() && unsafe { zend_is_unwind_exit(ex) }
}

/// `EG(exit_status)`: the code `exit()` or a fatal error left.
pub fn exit_status() -> i32 {
    globals().exit_status
}

/// `EG(error_reporting)`: the mask in force now (lowered inside `@`).
pub fn error_reporting() -> i32 {
    globals().error_reporting
}

/// `memory_get_peak_usage()`.
pub fn peak_memory() -> u64 {
    // SAFETY: reads the allocator's counter; no arguments to get wrong.
    unsafe { zend_memory_peak_usage(false) as u64 }
}

/// `memory_reset_peak_usage()`: each pool task measures its own peak.
pub fn reset_peak_memory() {
    // SAFETY: resets the allocator's counter; no arguments.
    unsafe { zend_memory_reset_peak_usage() }
}

/// Flushes the job's output buffers to the real output (as PHP does at the end of a request).
pub fn flush_output() {
    // SAFETY: ends every active output handler; valid at any time during a request.
    unsafe { ffi::php_output_end_all() }
}

/// Drops output buffered by the parent before the fork, so the child does not print it again,
/// without calling the parent's output callbacks (they are the parent's code, docs/architecture.md, "A job's life").
pub fn discard_output() {
    // SAFETY: output_globals is PHP's own (exported) global; its handler stack holds `top`
    // pointers to live php_output_handler structs. We only set a flag bit on each, then let PHP
    // pop them, which skips the callbacks of disabled handlers.
    unsafe {
        let stack = &*std::ptr::addr_of!(output_globals.handlers);
        let handlers = stack.elements as *const *mut ffi::php_output_handler;
        for i in 0..stack.top.max(0) as usize {
            let h = *handlers.add(i);
            if !h.is_null() {
                (*h).flags |= OUTPUT_HANDLER_DISABLED;
            }
        }
        php_output_discard_all()
    }
}

/// Reads an integer ini setting (its current value, `ini_set` included).
pub fn ini_long(name: &CStr) -> i64 {
    // SAFETY: name is a valid NUL-terminated string of the given length.
    unsafe { zend_ini_long(name.as_ptr(), name.count_bytes(), 0) }
}

/// `ZEND_INI_USER`, `ZEND_INI_STAGE_RUNTIME` (Zend/zend_ini.h).
const INI_USER: i32 = 1 << 0;
const INI_STAGE_RUNTIME: i32 = 1 << 4;

/// Sets an ini setting as `ini_set()` would, through the engine's C API: it works while an
/// exception is pending too (a PHP call would not run then). False if the engine refused it.
pub fn set_ini(name: &str, value: &str) -> bool {
    let mut key = ext_php_rs::types::ZendStr::new(name, false);
    // SAFETY: key is a live zend_string for the call; value is valid for value.len() bytes.
    unsafe {
        zend_alter_ini_entry_chars(
            key.as_mut_ptr(),
            value.as_ptr().cast(),
            value.len(),
            INI_USER,
            INI_STAGE_RUNTIME,
        ) == 0
    }
}

pub fn runtime_exception_ce() -> &'static ClassEntry {
    // SAFETY: SPL is always compiled in and registers RuntimeException at MINIT, before ours.
    unsafe { &*spl_ce_RuntimeException }
}

/// Writes a property of `obj` as seen from `scope` (for Exception's protected/private ones).
pub fn update_property(scope: &ClassEntry, obj: &mut ZendObject, name: &CStr, mut value: Zval) {
    // SAFETY: obj is a live object, scope a registered class, value a valid zval that the engine
    // copies (adding its own reference).
    unsafe {
        zend_update_property(
            scope as *const ClassEntry as *mut zend_class_entry,
            obj as *mut ZendObject as *mut zend_object,
            name.as_ptr(),
            name.count_bytes(),
            &mut value as *mut Zval as *mut ffi::zval,
        )
    }
}

/// Reads a property of `obj` as seen from `scope`.
pub fn read_property(scope: &ClassEntry, obj: &ZendObject, name: &CStr) -> Option<Zval> {
    let mut rv = Zval::new();
    // SAFETY: as for update_property; the returned pointer is valid while obj lives, and we
    // take our own reference with shallow_clone before returning.
    unsafe {
        let p = ffi::zend_read_property(
            scope as *const ClassEntry as *mut zend_class_entry,
            obj as *const ZendObject as *mut zend_object,
            name.as_ptr(),
            name.count_bytes(),
            true,
            &mut rv as *mut Zval as *mut ffi::zval,
        );
        (p as *const Zval).as_ref().map(Zval::shallow_clone)
    }
}

/// Sets `previous` of an exception object (Exception::$previous is private).
pub fn set_previous(ex: &mut ZendObject, previous: &ZendObject) {
    let p = previous as *const ZendObject as *mut zend_object;
    // SAFETY: both are live exception objects; set_previous takes over one reference, which we
    // add first so that the caller's stays valid.
    unsafe {
        (*p).gc.refcount += 1;
        zend_exception_set_previous(ex as *mut ZendObject as *mut zend_object, p);
    }
}

/// Runs `f` with `EG(error_reporting)` set to `level`, then restores it, also when `f` ends in a
/// fatal error (which then goes on to bail out as it would have).
pub fn with_error_reporting<R>(level: i32, f: impl FnOnce() -> R) -> R {
    let set = |v: i32| {
        // SAFETY: main-thread access to a plain int field of the executor globals; no reference
        // to them is held while `f` runs.
        unsafe { (*ffi::ext_php_rs_executor_globals()).error_reporting = v };
    };
    let saved = error_reporting();
    set(level);
    let r = ext_php_rs::zend::try_catch(std::panic::AssertUnwindSafe(f));
    set(saved);
    match r {
        Ok(r) => r,
        // SAFETY: re-raising the bailout we caught, to the engine's own catch point.
        Err(ext_php_rs::zend::CatchError::Bailout) => unsafe { ext_php_rs::zend::bailout() },
        Err(e) => panic!("{e}"),
    }
}

/// Whether a `set_error_handler()` handler is installed.
pub fn has_user_error_handler() -> bool {
    !matches!(
        globals().user_error_handler.get_type(),
        ext_php_rs::flags::DataType::Undef | ext_php_rs::flags::DataType::Null
    )
}

/// PHP's own reason why `v` is not callable (e.g. `class stdClass does not have a method "nope"`).
pub fn callable_error(v: &Zval) -> Option<String> {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: v is a valid zval; zend_is_callable_ex only reads it and, on failure, may store an
    // emalloc'ed message in `error`, which we copy and free.
    unsafe {
        let ok = ffi::zend_is_callable_ex(
            v as *const Zval as *mut ffi::zval,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut error,
        );
        if error.is_null() {
            return None;
        }
        let message = CStr::from_ptr(error).to_string_lossy().into_owned();
        ffi::_efree(error.cast());
        (!ok).then_some(message)
    }
}

/// The raw string value of an ini setting, for error messages.
pub fn ini_string(name: &str) -> Option<String> {
    ext_php_rs::zend::ExecutorGlobals::get()
        .ini_values()
        .get(name)
        .cloned()
        .flatten()
}

/// `ZEND_CALL_HAS_EXTRA_NAMED_PARAMS` (Zend/zend_compile.h).
const CALL_HAS_EXTRA_NAMED_PARAMS: u32 = 1 << 27;

/// Named arguments of the running internal function call that matched no parameter (the engine
/// collects them for a variadic function), in the order given.
pub fn extra_named_args() -> Vec<(String, Zval)> {
    let ex = globals().current_execute_data;
    let mut out = Vec::new();
    // SAFETY: during an internal function's handler EG(current_execute_data) is that call's
    // frame; `extra_named_params` is valid exactly when the call-info flag says so.
    unsafe {
        if ex.is_null() || (*ex).This.u1.type_info & CALL_HAS_EXTRA_NAMED_PARAMS == 0 {
            return out;
        }
        let table = (*ex).extra_named_params as *const ext_php_rs::types::ZendHashTable;
        if let Some(table) = table.as_ref() {
            for (key, value) in table.iter() {
                out.push((key.to_string(), value.shallow_clone()));
            }
        }
    }
    out
}

fn vm_interrupt_flag() -> &'static std::sync::atomic::AtomicBool {
    // SAFETY: EG(vm_interrupt) is a bool the engine (and signal handlers) access atomically; it
    // lives as long as the executor globals.
    unsafe {
        let eg = ffi::ext_php_rs_executor_globals();
        std::sync::atomic::AtomicBool::from_ptr(std::ptr::addr_of_mut!((*eg).vm_interrupt.value))
    }
}

/// Whether the engine has something to run at its next safe point (`EG(vm_interrupt)`): a PHP
/// signal handler (pcntl's async signals), Forklift's in-process timeout, max_execution_time.
pub fn interrupt_pending() -> bool {
    vm_interrupt_flag().load(std::sync::atomic::Ordering::SeqCst)
}

/// Does now what the engine does at a safe point: clears the flag and calls the interrupt hooks
/// (pcntl's signal handlers, Forklift's timeout). They may leave an exception pending (a handler
/// threw or called `exit()`). False when it is `max_execution_time` that expired: only the engine
/// may act on that, once the running internal function has returned.
pub fn run_interrupts() -> bool {
    // SAFETY: as above for timed_out; zend_interrupt_function is the engine's hook, called with
    // the current frame exactly as the VM calls it.
    unsafe {
        let eg = ffi::ext_php_rs_executor_globals();
        let timed_out =
            std::sync::atomic::AtomicBool::from_ptr(std::ptr::addr_of_mut!((*eg).timed_out.value));
        if timed_out.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        vm_interrupt_flag().store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(hook) = ffi::zend_interrupt_function {
            hook((*eg).current_execute_data);
        }
    }
    true
}

/// Calls `f(key, value)` for each entry of `ht`, in order, until it returns false. Keys come as PHP
/// values (int, or a string of any bytes): ext-php-rs's own iteration cannot take string keys that
/// are not UTF-8 (it panics).
pub fn for_each_entry(
    ht: &ext_php_rs::types::ZendHashTable,
    mut f: impl FnMut(Zval, &Zval) -> bool,
) {
    let table = ht as *const ext_php_rs::types::ZendHashTable as *mut ffi::HashTable;
    let mut pos: u32 = 0;
    // SAFETY: the table is live for the whole call and not changed by `f` (which only reads);
    // the position is our own, the engine's API walks it over live entries only.
    unsafe {
        zend_hash_internal_pointer_reset_ex(table, &mut pos);
        loop {
            let data = zend_hash_get_current_data_ex(table, &mut pos);
            if data.is_null() {
                return;
            }
            let mut key = Zval::new();
            zend_hash_get_current_key_zval_ex(table, &mut key as *mut Zval as *mut ffi::zval, &pos);
            if !f(key, &*(data as *const Zval)) {
                return;
            }
            zend_hash_move_forward_ex(table, &mut pos);
        }
    }
}

/// A PHP string's bytes as text, bad UTF-8 replaced rather than the whole string lost; other
/// values as PHP converts them (ints, floats, bools, null).
pub fn lossy_string(z: &Zval) -> Option<String> {
    if let Some(s) = z.zend_str() {
        return Some(String::from_utf8_lossy(s.as_bytes()).into_owned());
    }
    z.coerce_to_string()
}

/// An array key or property name for messages: private and protected names lose their mangling
/// (`"\0Class\0prop"` is `prop`).
pub fn key_text(key: &Zval) -> String {
    if let Some(n) = key.long() {
        return n.to_string();
    }
    let text = lossy_string(key).unwrap_or_default();
    match text.strip_prefix('\0') {
        Some(rest) => rest.split('\0').next_back().unwrap_or(rest).to_string(),
        None => text,
    }
}

/// Runs `f` with the pending exception (if any) set aside and put back after: Forklift's work in
/// a destructor that runs while an exception unwinds the stack (a pool going out of scope) must
/// neither lose that exception nor be refused by the engine because of it. An exception `f` leaves
/// is dropped: the one that was unwinding wins.
pub fn with_exception_aside<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: main-thread access to EG(exception), a plain pointer field; the object it points to
    // is kept alive by the reference EG held, which we hold meanwhile and give back.
    let saved = unsafe {
        let eg = ffi::ext_php_rs_executor_globals();
        std::mem::replace(&mut (*eg).exception, std::ptr::null_mut())
    };
    let r = f();
    if !saved.is_null() {
        drop(ext_php_rs::zend::ExecutorGlobals::take_exception());
        // SAFETY: as above; EG(exception) is null again after the take.
        unsafe {
            (*ffi::ext_php_rs_executor_globals()).exception = saved;
        }
    }
    r
}

/// Sets the process title (`ps`, `top`) where PHP can (the CLI); elsewhere does nothing.
pub fn set_process_title(title: &str) {
    if let Ok(f) = ext_php_rs::types::ZendCallable::try_from_name("cli_set_process_title") {
        let _ = f.try_call(vec![&title.to_string()]);
    }
}

/// Whether `object` has a method `name` (callable or magic `__call`), as `method_exists()` says.
pub fn has_method(object: &Zval, name: &str) -> bool {
    let Ok(f) = ext_php_rs::types::ZendCallable::try_from_name("method_exists") else {
        return false;
    };
    f.try_call(vec![object, &name.to_string()])
        .ok()
        .and_then(|r| r.bool())
        .unwrap_or(false)
}

/// A JSON text (made by Forklift) as PHP arrays.
pub fn json_decode(json: &str) -> ext_php_rs::prelude::PhpResult<Zval> {
    let f = ext_php_rs::types::ZendCallable::try_from_name("json_decode")
        .map_err(|_| ext_php_rs::exception::PhpException::from("json_decode() is missing"))?;
    f.try_call(vec![&json.to_string(), &true])
        .map_err(|_| ext_php_rs::exception::PhpException::from("json_decode() failed"))
}
