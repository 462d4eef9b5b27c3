//! ferry-d1-double: Cloudflare D1's HTTP API on 127.0.0.1, backed by SQLite; see `--help`.

fn main() -> std::process::ExitCode {
    ferry::cli::d1double::main()
}
