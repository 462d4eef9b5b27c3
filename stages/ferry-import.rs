//! ferry-import: see `ferry-import --help`; the stage itself is `ferry::stage::import`.

fn main() -> std::process::ExitCode {
    ferry::cli::import::main()
}
