//! Forklift: supervised background processes for PHP. `core` is plain Rust; `php` binds it.

pub mod core;
pub mod php;

use ext_php_rs::flags::IniEntryPermission;
use ext_php_rs::prelude::*;
use ext_php_rs::zend::{IniEntryDef, IniEntryDefs};

static INI: IniEntryDefs<2> = IniEntryDefs::new([
    // Largest frame a job child may send (its return value, serialized), bytes.
    IniEntryDef::new(
        c"forklift.max_frame_size",
        c"67108864",
        IniEntryPermission::All,
    ),
    IniEntryDef::end(),
]);

pub fn startup(_ty: i32, module_number: i32) -> i32 {
    IniEntryDef::register(INI.as_slice(), module_number);
    match php::exceptions::register() {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

extern "C" fn request_shutdown(_ty: i32, _module: i32) -> i32 {
    // An accepted job is run: jobs whose handles were dropped are waited for, not orphaned.
    core::wait::settle_detached();
    php::hooks::clear();
    0
}

extern "C" fn module_shutdown(_ty: i32, _module: i32) -> i32 {
    // Handles still alive at the end of the request are freed after RSHUTDOWN.
    core::wait::settle_detached();
    0
}

#[php_module]
#[php(startup = "startup")]
pub fn get_module(module: ModuleBuilder) -> ModuleBuilder {
    let module = php::fork::register(module);
    module
        .error_observer(|| php::blackbox::Observer)
        .request_shutdown_function(request_shutdown)
        .shutdown_function(module_shutdown)
        .class::<php::result::JobResult>()
        .class::<php::records::ErrorRecord>()
        .class::<php::records::ExceptionRecord>()
        .class::<php::blackbox::Blackbox>()
}
