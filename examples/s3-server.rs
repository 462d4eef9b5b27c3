//! A local S3-protocol server for benchmarks and for trying ferry: s3s-fs over a directory, SigV4
//! on, the same one the tests use (tests/common/s3.rs).
//!
//!   cargo run --release --example s3-server -- ROOT BUCKET
//!
//! Prints `PORT` on its first line, then serves on 127.0.0.1:PORT until killed. The keys are
//! the test ones: AWS_ACCESS_KEY_ID=FERRYTESTACCESSKEY01 and the secret in tests/common/s3.rs.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)] // a tool, not a pipeline stage

#[allow(dead_code)]
#[path = "../tests/common/s3.rs"]
mod s3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, bucket] = args.as_slice() else {
        eprintln!("usage: s3-server ROOT BUCKET");
        std::process::exit(2);
    };
    let server = s3::S3Server::start(std::path::Path::new(root), bucket);
    println!("{}", server.port);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
