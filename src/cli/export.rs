//! `ferry-export SOURCE`: a store out as a stream on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use super::{Closing, LogArgs, finish_stage, init_logging, selection};
use crate::address::Address;
use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{Error, ErrorKind, ExitStatus, Result};
use crate::protocol::StreamWriter;
use crate::stage::export::incremental::Incremental;
use crate::stage::export::{self, ExportConfig, FilesOptions, defaults};

const EXAMPLES: &str = "\
Examples:
  # The whole database as a stream, saved to a file
  ferry-export sqlite:app.db > app.ndjson

  # Two tables, only active users, straight into another database
  ferry-export sqlite:app.db --table users --table saved_files --where 'users=is_active = 1' \\
    | ferry-import sqlite:copy.db --create

  # After an interrupted import: continue after its last acknowledged STATE
  ferry-export sqlite:app.db --resume | ferry-import sqlite:copy.db --create

  # PostgreSQL to SQLite: two tables (schema public), values recast for SQLite
  ferry-export postgres://app@localhost/app --table users --table email_subscriptions \\
    | ferry-transform --dialect sqlite | ferry-import sqlite:app-copy.db --create

  # Into a Singer target; its last printed state, given back, continues an unfinished stream
  ferry-export sqlite:app.db --singer | target-postgres --config target.json | tail -1 > state.json
  ferry-export sqlite:app.db --singer --state-json state.json | target-postgres --config target.json

  # One user's data: their row and every row that references it, transitively, parents first
  ferry-export sqlite:app.db --root users:id=42 --follow-fks > user-42.ndjson

  # A Cloudflare D1 database (CLOUDFLARE_API_TOKEN set), backed up through its HTTP API
  ferry-export d1://ACCOUNT_ID/DATABASE_ID > d1-backup.ndjson

  # A directory tree: one FILE line per file (path, size, sha256, mtime, mode, content type)
  ferry-export dir:/srv/media > files.ndjson

  # A bucket's inventory: one FILE line per object, SHA-256 from its metadata (or read and hashed)
  ferry-export s3://bucket/media --endpoint https://ACCOUNT_ID.r2.cloudflarestorage.com > inventory.ndjson

  # The catch-up pass before a cutover: only files new or changed since the first run started
  ferry-export dir:/srv/media --since 0193a5c2-7f1e | ferry-import s3://bucket/media

  # A live database: its changes recorded (ferry capture install), copied, then followed
  ferry-export sqlite:app.db | ferry-import postgres://app@new/app --create
  ferry-export sqlite:app.db --follow | ferry-import postgres://app@new/app
  pkill -INT -f 'ferry-export sqlite:app.db --follow'   # ends that follower cleanly, all exit 0

  # Without capture: only the rows whose updated_at moved since the last pass from here
  ferry-export sqlite:app.db --incremental users.updated_at | ferry-import postgres://app@new/app

  # Four shards at once, each its own pipeline and state file (on one machine or four)
  for k in 1 2 3 4; do
    ferry-export postgres://app@old/app --shard $k/4 --state s$k.db \\
      | ferry-import postgres://app@new/app --create --state s$k.db &
  done; wait

Streams come parents first (foreign-key order), each table's rows in primary-key order (rowid order
for a table without a key), all read from one snapshot (PostgreSQL: one REPEATABLE READ READ ONLY
transaction, rows through COPY; streams are named schema.table; D1: keyset pages, one request
each, paced inside the API's rate limit, not one snapshot). A directory's files come in byte
order of their paths, each read once and hashed (SHA-256) on --jobs threads; a file that cannot be
read, or changes while it is read, is an ERROR line naming it and is left out (the closing line counts them as left out, the import reports each).
Exit status: 0 done (a --follow told to stop by Ctrl-C or SIGTERM ends its stream and is done);
2 error; 4 the reader of stdout went away before the end; 130 interrupted (Ctrl-C, SIGTERM:
everything up to the last STATE was delivered). A closing line on stderr says which.";

/// Export a store as a ferry stream (NDJSON) on stdout.
#[derive(Debug, Parser)]
#[command(name = "ferry-export", version, about, after_long_help = super::with_tuning(EXAMPLES))]
pub struct ExportArgs {
    /// The store to read: sqlite:PATH (or a path ending in .db, .sqlite, .sqlite3),
    /// postgres://USER@HOST:PORT/DB[?sslmode=...], d1://ACCOUNT_ID/DATABASE_ID, dir:PATH (a directory tree of
    /// files), or s3://BUCKET/PREFIX
    /// (the objects' listing, with the SHA-256 from their metadata)
    pub source: String,
    /// Export only this table (repeatable); by table (users) or stream name (main.users)
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Leave this table out (repeatable)
    #[arg(long = "exclude", value_name = "TABLE")]
    pub exclude: Vec<String>,
    /// Only the rows of TABLE matching a SQL condition (repeatable)
    #[arg(long = "where", value_name = "TABLE=CONDITION")]
    pub filters: Vec<String>,
    /// An entity export: only the rows of TABLE whose COLUMN is VALUE (repeatable), e.g.
    /// users:id=42
    #[arg(long = "root", value_name = "TABLE:COLUMN=VALUE", conflicts_with_all = ["tables", "filters"])]
    pub roots: Vec<String>,
    /// With --root: also every row that references those rows, transitively, parents first (one
    /// user and everything that is theirs)
    #[arg(long, requires = "roots")]
    pub follow_fks: bool,
    /// Continue the last import from this source recorded in the state file, after its last
    /// acknowledged STATE (streams it completed are skipped)
    #[arg(long)]
    pub resume: bool,
    /// The state file (checkpoint) to resume from (and, for dir:, the hash cache)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
    /// Emit a STATE (a resume point) every N rows
    #[arg(long, value_name = "N", default_value_t = defaults::STATE_EVERY)]
    pub state_every: u64,
    /// ...and at least every SECONDS
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::STATE_INTERVAL_SECS)]
    pub state_interval: f64,
    /// Emit only SCHEMA, RECORD and STATE, for Singer targets: streams named by table
    /// (schema-table outside SQLite's main), date and time columns marked format date-time,
    /// date or time
    #[arg(long)]
    pub singer: bool,
    /// Start from a Singer state: the last STATE value a Singer target printed (or Meltano's
    /// {"singer_state": ...}). Streams it has unfinished continue after their bookmark; streams
    /// it has complete are read again in full, as a Singer full-table sync is
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub state_json: Option<PathBuf>,
    /// A catch-up pass: every table as changes (upserts by key), and TABLE only from where the
    /// last pass from this source left its COLUMN (an updated_at, or a key that only grows);
    /// repeatable. The first pass sends every row and keeps the watermark
    #[arg(long, value_name = "TABLE.COLUMN")]
    pub incremental: Vec<String>,
    /// With --incremental: also send a delete for each row TARGET holds and the source no
    /// longer does (both sides' keys read in key order and compared, once per table)
    #[arg(long, value_name = "TARGET", requires = "incremental")]
    pub detect_deletes: Option<String>,
    /// Export the changes recorded since the last ones the target acknowledged (after `ferry
    /// capture install` on SQLite, PostgreSQL or D1), each table as a change stream, then stop
    #[arg(long, conflicts_with_all = ["incremental", "resume", "state_json", "singer", "roots"])]
    pub changes: bool,
    /// --changes, and keep sending them as they are made, until SIGINT or SIGTERM (then the
    /// stream ends cleanly, everything so far sent)
    #[arg(long)]
    pub follow: bool,
    /// Export only part K of N (1 <= K <= N): each table's rows in the K-th of N ranges of its
    /// first key column (integers in equal steps between the least and greatest value, so keys
    /// crowded at one end make uneven shards; other keys by row counts), a table without a key
    /// whole in the shard a hash of its name picks; or the files whose path hashes to K. The N
    /// parts never overlap and together are everything; give each shard its own --state file
    /// (see the README's "Beyond one machine")
    #[arg(long, value_name = "K/N", conflicts_with_all = ["changes", "follow", "incremental", "roots"])]
    pub shard: Option<crate::shard::Shard>,
    /// dir: the name of the file stream
    #[arg(long, value_name = "NAME", default_value = defaults::FILE_STREAM)]
    pub stream: String,
    /// dir: follow symbolic links (only those that stay inside the tree)
    #[arg(long)]
    pub follow_symlinks: bool,
    /// dir: files read and hashed at once
    #[arg(long, value_name = "N", default_value_t = defaults::HASH_JOBS)]
    pub jobs: usize,
    /// S3: the endpoint URL [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3: the region [env: AWS_REGION; default: auto]
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// dir: read and hash every file, even those whose size, times and inode are exactly as when
    /// the state file's hash cache last saw them
    #[arg(long)]
    pub rehash: bool,
    /// dir: only files new or changed since WHEN: an RFC 3339 time, or a run id (prefix) in the
    /// state file, meaning when that run started (the catch-up pass before a cutover)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    #[command(flatten)]
    pub log: LogArgs,
}

impl ExportArgs {
    pub fn config(&self) -> Result<ExportConfig> {
        if self.state_every == 0 {
            return Err(Error::usage("--state-every must be at least 1"));
        }
        if !(self.state_interval.is_finite() && self.state_interval > 0.0) {
            return Err(Error::usage("--state-interval must be a positive number of seconds"));
        }
        Ok(ExportConfig {
            source: Address::parse(&self.source)?,
            selection: selection(&self.tables, &self.exclude, &self.filters)?,
            state_every: self.state_every,
            state_interval: Duration::from_secs_f64(self.state_interval),
            resume: self.resume,
            state_path: self.state.clone(),
            singer: self.singer,
            state_json: self.state_json.clone(),
            roots: self
                .roots
                .iter()
                .map(|r| crate::stage::entity::Root::parse(r))
                .collect::<Result<_>>()?,
            follow_fks: self.follow_fks,
            detect_deletes: self.detect_deletes.as_deref().map(Address::parse).transpose()?,
            changes: self.changes || self.follow,
            follow: self.follow,
            shard: self.shard,
            incremental: self
                .incremental
                .iter()
                .map(|s| Incremental::parse(s))
                .collect::<Result<_>>()?,
            files: FilesOptions {
                stream: self.stream.clone(),
                follow_symlinks: self.follow_symlinks,
                jobs: self.jobs.max(1),
                since: self.since.as_deref().map(|w| since(w, &self.state)).transpose()?,
                rehash: self.rehash,
                s3: crate::connect::objects::s3::S3Settings {
                    endpoint: self.endpoint.clone(),
                    region: self.region.clone(),
                },
            },
        })
    }
}

/// `--since`: a time, or when a run in the state file started.
fn since(when: &str, state: &std::path::Path) -> Result<std::time::SystemTime> {
    if let Ok(t) = when.parse::<jiff::Timestamp>() {
        return Ok(t.into());
    }
    let cp = crate::checkpoint::Checkpoint::open_existing(state)?.ok_or_else(|| {
        Error::usage(format!(
            "--since {when:?}: not an RFC 3339 time, and there is no state file at {} to look it up as a run",
            state.display()
        ))
    })?;
    let (run, started) = cp.run_started(when)?.ok_or_else(|| {
        Error::usage(format!(
            "--since {when:?}: not an RFC 3339 time (2024-05-01T12:00:00Z) nor a run in {}",
            state.display()
        ))
    })?;
    let t: jiff::Timestamp = started
        .parse()
        .map_err(|e| Error::usage(format!("run {run} has an unreadable start time {started:?}: {e}")))?;
    Ok(t.into())
}

pub fn main() -> ExitCode {
    let args = super::args_or_exit("ferry-export", ExportArgs::try_parse());
    init_logging(&args.log);
    crate::interrupt::install();
    let mut closing = Closing::new("ferry-export");
    let result = run(&args, &mut closing);
    finish_stage(&args.log, &closing, result)
}

fn run(args: &ExportArgs, closing: &mut Closing) -> Result<ExitStatus> {
    let cfg = args.config()?;
    let mut out = StreamWriter::stdout()?;
    let result = export::run(&cfg, &mut out);
    let sent = out.counts();
    // A Singer stream has no STREAM_END: the export's own count.
    let streams = match (&result, cfg.singer) {
        (Ok(o), true) => o.streams,
        _ => sent.stream_ends,
    };
    closing.count("streams", streams);
    if sent.files > 0 || matches!(cfg.source, Address::Dir(_) | Address::S3(_)) {
        closing.count("files", sent.files);
    } else {
        closing.count("rows", sent.records);
    }
    if sent.errors > 0 {
        closing.count("left_out", sent.errors);
        closing.note("an ERROR line in the stream names each thing left out (unreadable, or a link or special file not followed), and the import reports each");
    }
    if let Err(e) = &result
        && sent.states > 0
    {
        let note = match e.kind() {
            // A Singer target keeps its own state: it is what goes on.
            _ if cfg.singer => {
                "give the last state the Singer target printed to --state-json to go on from there".to_owned()
            }
            // Changes go on from what the target acknowledged, by themselves.
            _ if cfg.changes => format!(
                "{} STATEs sent: run the same command again to go on after the last changes the import acknowledged",
                sent.states
            ),
            // The reader went away: the import stopped, and its own message says why.
            ErrorKind::BrokenPipe => format!(
                "{} STATEs sent before the reader stopped (the import's message says why): once that is put right, `--resume` continues after the last STATE the import acknowledged",
                sent.states
            ),
            _ => format!(
                "{} STATEs sent: `--resume` continues after the last one the import acknowledged",
                sent.states
            ),
        };
        closing.note(note);
    }
    result.map(|_| ExitStatus::Ok)
}
