//! The wire protocol: the messages sites exchange and the framing that carries them.
//!
//! Framing never trusts its input: every frame is length-limited, versioned and checksummed, and
//! decoding any byte string yields a value or an error, never a panic.

mod frame;
pub mod handshake;
mod message;

pub use frame::*;
pub use message::{JoinResult, Message, RemoveRefusal, MESSAGE_TYPES};
