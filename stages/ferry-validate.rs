//! ferry-validate: see `ferry-validate --help`; the stage itself is `ferry::stage::validate`.

fn main() -> std::process::ExitCode {
    ferry::cli::validate::main()
}
