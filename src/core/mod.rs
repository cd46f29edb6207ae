//! The pure-Rust core: forking supervised children, the one event loop that supervises them, the
//! channel protocol, deadlines, outcomes and the pool's decisions. No PHP types here; `cargo test`
//! covers it without a PHP runtime.

pub mod child;
pub mod daemon;
pub mod deadline;
pub mod error;
pub mod outcome;
pub mod pool;
pub mod reactor;
pub mod record;
pub mod runtime;
pub mod spawn;
pub mod sys;
pub mod timer;
pub mod wire;
