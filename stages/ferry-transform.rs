//! ferry-transform: see `ferry-transform --help`; the stage itself is `ferry::stage::transform`.

fn main() -> std::process::ExitCode {
    ferry::cli::transform::main()
}
