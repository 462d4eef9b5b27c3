//! `ferry-d1-double`: a local stand-in for Cloudflare D1's HTTP API (see [`crate::d1double`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::{LogArgs, finish, init_logging};
use crate::d1double::{self, Config};
use crate::error::{Error, ErrorKind, Result};
use crate::{ExitStatus, human};

const EXAMPLES: &str = "Examples:
  # A double on a free port, databases under ./d1, with the real limits:
  CLOUDFLARE_API_TOKEN=dev ferry-d1-double --dir d1 --port-file d1.port &
  export CLOUDFLARE_API_BASE_URL=http://127.0.0.1:$(cat d1.port)/client/v4 CLOUDFLARE_API_TOKEN=dev
  ferry-export sqlite:app.db | ferry-import d1://local/app --create

  # The rate limit 60 times faster (1,200 requests per 5 s, lockouts of 5 s):
  ferry-d1-double --dir d1 --token dev --port 8787 --scale 60";

/// Serve Cloudflare D1's HTTP API on 127.0.0.1, backed by SQLite files, with D1's limits
#[derive(Debug, Parser)]
#[command(name = "ferry-d1-double", version, after_help = EXAMPLES)]
pub struct DoubleArgs {
    /// Where the databases live (DIR/DATABASE_ID.sqlite3; created on first use)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The token it accepts [env: CLOUDFLARE_API_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The port on 127.0.0.1 (0: a free one)
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Write the port here once listening
    #[arg(long, value_name = "PATH")]
    pub port_file: Option<PathBuf>,
    /// Divide every duration (rate window, lockout, time per request) by this
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Requests allowed per window
    #[arg(long, default_value_t = 1200)]
    pub rate_limit: u64,
    #[command(flatten)]
    pub log: LogArgs,
}

pub fn main() -> ExitCode {
    let args = super::args_or_exit("ferry-d1-double", DoubleArgs::try_parse());
    init_logging(&args.log);
    finish("ferry-d1-double", run(&args))
}

fn run(args: &DoubleArgs) -> Result<ExitStatus> {
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("CLOUDFLARE_API_TOKEN").ok().filter(|t| !t.is_empty()))
        .ok_or_else(|| Error::usage("give the token it accepts: --token, or CLOUDFLARE_API_TOKEN"))?;
    let mut cfg = Config::new(args.dir.clone(), token);
    cfg.scale = args.scale;
    cfg.rate_limit = args.rate_limit;
    let running = d1double::serve(cfg, args.port)?;
    if let Some(p) = &args.port_file {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, running.port.to_string())
            .and_then(|()| std::fs::rename(&tmp, p))
            .map_err(|e| Error::new(ErrorKind::Io, format!("writing {}: {e}", p.display())))?;
    }
    human::say(&format!(
        "ferry-d1-double: serving D1's API at {} (databases in {})",
        running.base_url(),
        args.dir.display()
    ));
    loop {
        std::thread::park();
    }
}
