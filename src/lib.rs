//! Forklift: supervised background processes for PHP. `core` is plain Rust; `php` binds it.

pub mod core;
pub mod php;

use ext_php_rs::flags::IniEntryPermission;
use ext_php_rs::prelude::*;
use ext_php_rs::zend::{IniEntryDef, IniEntryDefs};

static INI: IniEntryDefs<2> = IniEntryDefs::new([
    // Largest frame a job child may send (its return value, serialized), bytes. Checked when used,
    // so that a bad value raises an exception that says what to set instead.
    IniEntryDef {
        on_modify: Some(accept_ini_change),
        ..IniEntryDef::new(
            c"forklift.max_frame_size",
            c"67108864",
            IniEntryPermission::All,
        )
    },
    IniEntryDef::end(),
]);

/// Without an on_modify handler the engine refuses `ini_restore()` at runtime.
unsafe extern "C" fn accept_ini_change(
    _entry: *mut ext_php_rs::ffi::zend_ini_entry,
    _new_value: *mut ext_php_rs::ffi::zend_string,
    _arg1: *mut std::ffi::c_void,
    _arg2: *mut std::ffi::c_void,
    _arg3: *mut std::ffi::c_void,
    _stage: std::ffi::c_int,
) -> std::ffi::c_int {
    0 // SUCCESS
}

pub fn startup(_ty: i32, module_number: i32) -> i32 {
    core::sys::count_forks();
    IniEntryDef::register(INI.as_slice(), module_number);
    php::timeout::install_interrupt_hook();
    match php::exceptions::register() {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

extern "C" fn request_shutdown(_ty: i32, _module: i32) -> i32 {
    // An accepted job is run: jobs whose handles were dropped are waited for, not orphaned.
    php::fork::settle_detached();
    php::hooks::clear();
    // A timeout() left by a fatal error must not fire in shutdown code or the next request.
    php::timeout::close_all();
    0
}

extern "C" fn module_shutdown(_ty: i32, _module: i32) -> i32 {
    // Handles still alive at the end of the request are freed after RSHUTDOWN.
    php::fork::settle_detached();
    0
}

#[php_module]
#[php(startup = "startup")]
pub fn get_module(module: ModuleBuilder) -> ModuleBuilder {
    let module = php::fork::register(module);
    let module = php::timeout::register(module);
    let module = php::pool::register(module);
    let module = php::daemon::register(module);
    module
        .error_observer(|| php::blackbox::Observer)
        .request_shutdown_function(request_shutdown)
        .shutdown_function(module_shutdown)
        .class::<php::result::JobResult>()
        .class::<php::records::ErrorRecord>()
        .class::<php::records::ExceptionRecord>()
        .class::<php::blackbox::Blackbox>()
}
