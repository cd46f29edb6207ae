//! The channel between a child and its parent: frames ([`frame`]) carrying messages
//! ([`message`]). One format for every channel (jobs and pool workers alike).

pub mod frame;
pub mod message;

pub use frame::{FrameDecoder, Reader, Writer, ENVELOPE, HEADER};
pub use message::{Message, MIN_FIT};

#[cfg(test)]
mod tests;
