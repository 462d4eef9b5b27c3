//! The stages, each a function over a reader and a writer (see each module's contract).

pub(crate) mod assess;
pub(crate) mod backup;
pub(crate) mod capture;
pub(crate) mod cutover;
pub(crate) mod entity;
pub mod export;
pub mod import;
pub(crate) mod metrics;
pub(crate) mod rollback;
pub(crate) mod status;
pub mod transform;
pub mod validate;
