//! The raw system calls that nix does not wrap, behind safe functions. Each `unsafe` block says
//! why it holds; nothing else in the core calls `libc` for process control.

mod io;
mod limits;
mod process;
mod signals;

pub use io::*;
pub use limits::*;
pub use process::*;
pub use signals::*;
