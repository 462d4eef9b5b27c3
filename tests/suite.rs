//! The integration tests, as one test binary: one link, one throwaway PostgreSQL cluster for all
//! of them. Each module tests one part through the real binaries and real servers; run one part
//! with `cargo test --test suite crash::` (a name filter), all with `cargo test`.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests fail loudly and report what they did

mod common;

mod assess;
mod backup;
mod changes;
mod clients;
mod counters;
mod crash;
mod d1;
mod diskfull;
mod entity;
mod faults;
mod files;
mod fuzz_corpus;
mod hostile;
mod malformed;
mod pg_export;
mod pipeline;
mod postgres;
mod protocol;
mod resume;
mod rollback;
mod roundtrip;
mod s3;
mod serve;
mod shards;
mod transform;
