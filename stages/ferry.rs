//! ferry: operations on a migration (status) and the demo; see `ferry --help`.

fn main() -> std::process::ExitCode {
    ferry::cli::ops::main()
}
