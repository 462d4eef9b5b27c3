//! The stages, each a function over a reader and a writer (see each module's contract).

pub mod assess;
pub mod backup;
pub mod entity;
pub mod export;
pub mod import;
pub mod rollback;
pub mod status;
pub mod transform;
pub mod validate;
