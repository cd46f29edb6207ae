//! The binding layer: the only code that touches Zend types. It validates arguments, maps core
//! errors to PHP exceptions and converts values; the work itself is in `crate::core`.

pub mod args;
pub mod blackbox;
pub mod child;
pub mod daemon;
pub mod exceptions;
pub mod fork;
pub mod hooks;
pub mod limits;
pub mod pool;
pub mod records;
pub mod result;
pub mod signals;
pub mod timeout;
pub mod values;
pub mod zend;
