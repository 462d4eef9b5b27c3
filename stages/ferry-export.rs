//! ferry-export: see `ferry-export --help`; the stage itself is `ferry::stage::export`.

fn main() -> std::process::ExitCode {
    ferry::cli::export::main()
}
