//! Forklift's PHP exception hierarchy and the one place that maps core errors onto it.
//!
//! ```text
//! RuntimeException
//! └─ Forklift\ForkliftException
//!    ├─ Forklift\InvalidArgumentException   a wrong argument; the message says what to pass
//!    ├─ Forklift\ForkException              fork() failed (process limit, memory)
//!    ├─ Forklift\ChannelException           a job's channel broke (names records of that cause)
//!    ├─ Forklift\TimeoutException           an in-process deadline passed (Forklift\timeout, softTimeout)
//!    ├─ Forklift\PoolException              the pool cannot go on (workers crash at start) or is shut
//!    │  └─ Forklift\PoolFullException       submit() on a full queue with blockWhenFull: false
//!    └─ Forklift\JobFailedException         valueOrThrow() on a failed job; getResult()
//! ```
//! The classes are built with `ClassBuilder` (not `#[php_class]`) so they keep Exception's own
//! object handlers: file, line and trace are filled in and PHP code can construct them.

use std::sync::atomic::{AtomicPtr, Ordering};

use ext_php_rs::builders::{ClassBuilder, ClassProperty, FunctionBuilder};
use ext_php_rs::exception::PhpException;
use ext_php_rs::flags::{ClassFlags, DataType, MethodFlags, PropertyFlags};
use ext_php_rs::types::{ZendObject, Zval};
use ext_php_rs::zend::{ClassEntry, ExecuteData};

use crate::core::error::Error;
use crate::php::zend;

static FORKLIFT: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static INVALID_ARGUMENT: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static FORK: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static CHANNEL: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static TIMEOUT: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static POOL: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static POOL_FULL: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static JOB_FAILED: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());

fn ce(slot: &AtomicPtr<ClassEntry>) -> &'static ClassEntry {
    // SAFETY: set once at MINIT by `register`, before any PHP code runs; class entries live until
    // MSHUTDOWN.
    unsafe { &*slot.load(Ordering::Acquire) }
}

pub fn forklift_ce() -> &'static ClassEntry {
    ce(&FORKLIFT)
}
fn invalid_argument_ce() -> &'static ClassEntry {
    ce(&INVALID_ARGUMENT)
}
fn fork_ce() -> &'static ClassEntry {
    ce(&FORK)
}
fn channel_ce() -> &'static ClassEntry {
    ce(&CHANNEL)
}
pub fn pool_ce() -> &'static ClassEntry {
    ce(&POOL)
}
pub fn pool_full_ce() -> &'static ClassEntry {
    ce(&POOL_FULL)
}
pub fn timeout_ce() -> &'static ClassEntry {
    ce(&TIMEOUT)
}
fn job_failed_ce() -> &'static ClassEntry {
    ce(&JOB_FAILED)
}

/// Registers the exception classes; called from MINIT.
pub fn register() -> ext_php_rs::error::Result<()> {
    // The core's own records (a broken channel, a task the pool never ran, the in-process
    // timeout) carry these PHP classes.
    crate::core::outcome::name_records(crate::core::outcome::RecordNames {
        channel: "Forklift\\ChannelException",
        pool: "Forklift\\PoolException",
        timeout: "Forklift\\TimeoutException",
    });
    ClassBuilder::new("Forklift\\ForkliftException")
        .extends((zend::runtime_exception_ce, "\\RuntimeException"))
        .registration(|ce, _| FORKLIFT.store(ce, Ordering::Release))
        .register()?;
    type Registered =
        fn(&'static mut ClassEntry, Box<[Box<[ext_php_rs::ffi::_zend_internal_arg_info]>]>);
    let sub = |name: &str, registered: Registered| {
        ClassBuilder::new(name)
            .extends((forklift_ce, "\\Forklift\\ForkliftException"))
            .registration(registered)
            .register()
    };
    sub("Forklift\\InvalidArgumentException", |ce, _| {
        INVALID_ARGUMENT.store(ce, Ordering::Release)
    })?;
    sub("Forklift\\ForkException", |ce, _| {
        FORK.store(ce, Ordering::Release)
    })?;
    sub("Forklift\\ChannelException", |ce, _| {
        CHANNEL.store(ce, Ordering::Release)
    })?;
    sub("Forklift\\TimeoutException", |ce, _| {
        TIMEOUT.store(ce, Ordering::Release)
    })?;
    sub("Forklift\\PoolException", |ce, _| {
        POOL.store(ce, Ordering::Release)
    })?;
    ClassBuilder::new("Forklift\\PoolFullException")
        .extends((pool_ce, "\\Forklift\\PoolException"))
        .registration(|ce, _| POOL_FULL.store(ce, Ordering::Release))
        .register()?;
    ClassBuilder::new("Forklift\\JobFailedException")
        .extends((forklift_ce, "\\Forklift\\ForkliftException"))
        .flags(ClassFlags::Final)
        .property(ClassProperty {
            name: "result".into(),
            flags: PropertyFlags::Private,
            default: None,
            docs: &[],
            ty: None,
            nullable: true,
            readonly: false,
            default_stub: None,
        })
        .method(
            FunctionBuilder::new("getResult", job_failed_get_result).returns(
                DataType::Object("Forklift\\JobResult".into()),
                false,
                false,
            ),
            MethodFlags::Public,
        )
        .registration(|ce, _| JOB_FAILED.store(ce, Ordering::Release))
        .register()
}

extern "C" fn job_failed_get_result(ex: &mut ExecuteData, retval: &mut Zval) {
    ext_php_rs::zend::run_handler(std::panic::AssertUnwindSafe(|| {
        let Some(this) = ex.get_self() else { return };
        if let Some(z) = zend::read_property(job_failed_ce(), this, c"result") {
            *retval = z;
        }
    }));
}

/// `Forklift\InvalidArgumentException` with a message that says what to pass instead.
pub fn invalid(msg: impl Into<String>) -> PhpException {
    PhpException::new(msg.into(), 0, invalid_argument_ce())
}

/// The PHP exception for a core error.
pub fn from_core(err: Error) -> PhpException {
    let class = match &err {
        Error::InvalidArgument(_) => invalid_argument_ce(),
        Error::Fork(_) | Error::Limit(_) => fork_ce(),
        Error::Channel(_) => channel_ce(),
        Error::PoolGone => pool_ce(),
        Error::System { .. } | Error::NotOwner { .. } | Error::Hook(_) => forklift_ce(),
    };
    PhpException::new(err.to_string(), 0, class)
}

/// A `Forklift\JobFailedException` carrying `result` (a `Forklift\JobResult` object).
pub fn job_failed(message: String, result: Zval) -> PhpException {
    let ce = job_failed_ce();
    let mut obj = ZendObject::new(ce);
    let base = ext_php_rs::zend::ce::exception();
    let mut msg = Zval::new();
    if msg.set_string(&message, false).is_ok() {
        zend::update_property(base, &mut obj, c"message", msg);
    }
    zend::update_property(ce, &mut obj, c"result", result);
    let mut zv = Zval::new();
    zv.set_object(&mut obj);
    PhpException::from_message(String::new()).with_object(zv)
}
