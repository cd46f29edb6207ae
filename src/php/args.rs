//! Validation of arguments that PHP's type system cannot express, with messages that say what to
//! pass instead. Every public entry point checks its arguments here, before it acts.

use std::time::{Duration, Instant};

use ext_php_rs::exception::PhpException;
use ext_php_rs::flags::DataType;
use ext_php_rs::types::{ZendCallable, Zval};

use crate::php::exceptions::invalid;

/// A short description of a value for error messages: `string "nope"`, `int 3`, `array`, ...
pub fn describe(v: &Zval) -> String {
    match v.get_type() {
        DataType::Null | DataType::Undef => "null".into(),
        DataType::False => "false".into(),
        DataType::True => "true".into(),
        DataType::Long => format!("int {}", v.long().unwrap_or(0)),
        DataType::Double => format!("float {}", v.double().unwrap_or(0.0)),
        DataType::String => {
            // Any bytes: bad UTF-8 replaced, NUL shown (an exception message cannot hold one).
            let s = crate::php::zend::lossy_string(v)
                .unwrap_or_default()
                .replace('\0', "\\0");
            let short: String = s.chars().take(40).collect();
            format!(
                "string \"{short}\"{}",
                if short.len() < s.len() { "..." } else { "" }
            )
        }
        DataType::Array => "array".into(),
        DataType::Object(_) => match v.object().and_then(|o| o.get_class_name().ok()) {
            Some(c) => format!("object of class {c}"),
            None => "object".into(),
        },
        DataType::Resource => "resource".into(),
        other => format!("{other}"),
    }
}

/// `what` must be callable; `what` names it in the message, e.g. "Forklift\\fork(): argument #1 ($job)".
pub fn callable<'a>(v: &'a Zval, what: &str) -> Result<ZendCallable<'a>, PhpException> {
    if !v.is_callable() {
        let why = crate::php::zend::callable_error(v)
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(invalid(format!(
            "{what} must be a callable (a Closure, a function name, [$object, 'method'] or an \
             invokable object), {} given{why}",
            describe(v)
        )));
    }
    ZendCallable::new(v).map_err(|e| invalid(format!("{what} cannot be called: {e}")))
}

/// An optional callable: null is fine.
pub fn optional_callable<'a>(
    v: Option<&'a Zval>,
    what: &str,
) -> Result<Option<&'a Zval>, PhpException> {
    match v {
        None => Ok(None),
        Some(z) if z.is_null() => Ok(None),
        Some(z) => callable(z, what).map(|_| Some(z)),
    }
}

/// A number of seconds given as a PHP value (int or float), for named options.
pub fn number(v: &Zval, what: &str) -> Result<f64, PhpException> {
    match v.get_type() {
        DataType::Long => Ok(v.long().unwrap_or(0) as f64),
        DataType::Double => Ok(v.double().unwrap_or(0.0)),
        _ => Err(invalid(format!(
            "{what} must be a number of seconds (e.g. 2.5), {} given",
            describe(v)
        ))),
    }
}

/// Longest limit accepted, in seconds (about 31 years): beyond it the clock cannot count.
pub const MAX_SECONDS: f64 = 1e9;

/// A deadline in seconds: finite, more than 0, at most [`MAX_SECONDS`].
pub fn positive_seconds(v: f64, what: &str) -> Result<f64, PhpException> {
    if !(v.is_finite() && v > 0.0 && v <= MAX_SECONDS) {
        return Err(invalid(format!(
            "{what} must be a finite number of seconds, more than 0 and at most 1e9 (e.g. 2.5), \
             {v} given"
        )));
    }
    Ok(v)
}

/// The deadline of a wait given `$timeout` seconds (null: none). A finite timeout too large for
/// the clock is as good as none; a negative, NaN or infinite one is an error.
pub fn wait_deadline(timeout: Option<f64>, what: &str) -> Result<Option<Instant>, PhpException> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t > MAX_SECONDS => Ok(None),
        Some(t) => {
            let t = seconds(t, what)?;
            Ok(Some(Instant::now() + Duration::from_secs_f64(t)))
        }
    }
}

/// A duration in seconds: finite, not negative, at most [`MAX_SECONDS`].
pub fn seconds(v: f64, what: &str) -> Result<f64, PhpException> {
    if v.is_nan() || v.is_infinite() || !(0.0..=MAX_SECONDS).contains(&v) {
        return Err(invalid(format!(
            "{what} must be a finite number of seconds, 0 or more and at most 1e9 (e.g. 2.5), \
             {v} given"
        )));
    }
    Ok(v)
}

/// A signal number the kernel knows (1 to SIGRTMAX), e.g. SIGTERM.
pub fn signal(signo: i64, what: &str) -> Result<i32, PhpException> {
    let max = crate::core::sys::max_signal();
    match i32::try_from(signo) {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(format!(
            "{what}: {signo} is not a signal number; pass one of the SIG* constants (1 to {max}), \
             e.g. SIGTERM (15)"
        ))),
    }
}

/// A size in bytes: an int, or a string like "256M" / "1G" / "512K".
pub fn size(v: &Zval, what: &str) -> Result<u64, PhpException> {
    let parsed = match v.long() {
        Some(n) => u64::try_from(n).ok(),
        None => v.string().and_then(|s| {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = num.parse().ok()?;
            let mul = match unit.to_ascii_uppercase().as_str() {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(mul)
        }),
    };
    match parsed {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(format!(
            "{what} must be a size in bytes, more than 0: an int or a string like \"256M\", {} given",
            describe(v)
        ))),
    }
}

/// An optional whole number of at least `min`.
pub fn at_least(v: Option<i64>, what: &str, min: i64) -> Result<Option<u64>, PhpException> {
    match v {
        None => Ok(None),
        Some(n) if n >= min => Ok(Some(n as u64)),
        Some(n) => Err(invalid(format!("{what} must be {min} or more, {n} given"))),
    }
}

/// An optional deadline in seconds (see [`positive_seconds`]).
pub fn optional_seconds(v: Option<f64>, what: &str) -> Result<Option<f64>, PhpException> {
    v.map(|t| positive_seconds(t, what)).transpose()
}
