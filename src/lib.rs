//! ferry: move data between stores and prove nothing was lost.
//!
//! A pipeline of small stages speaking one NDJSON stream ([`protocol`]):
//! `ferry-export SOURCE | ferry-transform OPS | ferry-import TARGET`, then `ferry-validate`.
//! Each stage is a plain function over a reader and a writer in [`stage`]; the binaries in
//! `stages/` parse flags ([`cli`]) and call them. Stores sit behind two traits in [`connect`].

#![warn(unreachable_pub)]

pub mod address;
pub(crate) mod canon;
pub(crate) mod checkpoint;
pub mod cli;
pub mod connect;
pub mod d1double;
pub(crate) mod dialect;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod human;
pub(crate) mod interrupt;
pub(crate) mod jq;
#[cfg(test)]
mod layering;
pub(crate) mod lock;
pub(crate) mod outcome;
pub mod protocol;
pub(crate) mod retry;
pub(crate) mod row;
pub mod sample;
pub mod shard;
pub mod stage;
pub(crate) mod tree;
pub(crate) mod tuning;
pub(crate) mod value;

pub use error::{Error, ErrorKind, ExitStatus, Result};
