//! Any bytes as a ferry stream: the reader, SCHEMA parsing and record decoding must never panic,
//! and what decodes must encode and decode back the same (`ferry::fuzzing::stream`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferry::fuzzing::stream(data);
});
