//! ferry: move data between stores and prove nothing was lost.
//!
//! A pipeline of small stages speaking one NDJSON stream ([`protocol`]):
//! `ferry-export SOURCE | ferry-transform OPS | ferry-import TARGET`, then `ferry-validate`.
//! Each stage is a plain function over a reader and a writer in [`stage`]; the binaries in
//! `stages/` parse flags ([`cli`]) and call them. Stores sit behind two traits in [`connect`].

pub mod address;
pub mod canon;
pub mod checkpoint;
pub mod cli;
pub mod connect;
pub mod d1double;
pub mod dialect;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod human;
pub mod interrupt;
pub mod jq;
#[cfg(test)]
mod layering;
pub mod lock;
pub mod protocol;
pub mod retry;
pub mod row;
pub mod sample;
pub mod stage;
pub mod tree;
pub mod tuning;
pub mod value;

pub use error::{Error, ErrorKind, ExitStatus, Result};
