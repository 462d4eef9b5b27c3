//! PostgreSQL, as a source and as a target.
//!
//! - [`conn`]: the address, the connection and its errors;
//! - [`tls`]: `sslmode` and the server's certificate;
//! - [`catalog`]: tables, columns and ferry's table locks;
//! - [`copy`]: binary and text COPY, value by value;
//! - [`read`]: a blocking client for readers (export, validate, rollback);
//! - [`source`]: `ferry-export postgres://...`;
//! - [`target`]: `ferry-import postgres://...` (types, the pipelined commit, replay).

pub(crate) mod catalog;
pub(crate) mod compare;
pub(crate) mod conn;
pub(crate) mod copy;
pub(crate) mod journal;
pub(crate) mod read;
pub(crate) mod source;
pub(crate) mod target;
pub(crate) mod tls;
