//! The pure-Rust core: processes, the channel protocol, outcomes and waiting. No PHP types here;
//! `cargo test` covers it without a PHP runtime.

pub mod error;
pub mod ipc;
pub mod outcome;
pub mod pool;
pub mod process;
pub mod record;
pub mod sys;
pub mod timer;
pub mod wait;
