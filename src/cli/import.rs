//! `ferry-import TARGET`: a stream from stdin into a store.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::{Closing, LogArgs, finish_stage, init_logging};
use crate::address::Address;
use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::connect::OnConflict;
use crate::error::{Context, ErrorKind, ExitStatus, Result};
use crate::protocol::{DEFAULT_MAX_LINE_BYTES, StreamWriter};
use crate::stage::import::{self, ImportConfig, defaults};

const EXAMPLES: &str = "\
Examples:
  # Copy a database, creating tables (keys, foreign keys, unique, indexes)
  ferry-export sqlite:app.db | ferry-import sqlite:copy.db --create

  # SQLite into PostgreSQL (binary COPY; password from the URL, PGPASSWORD or ~/.pgpass; or all
  # of it from a connection service: postgres://?service=app, or PGSERVICE=app)
  ferry-export sqlite:app.db | ferry-import postgres://app@localhost/app --create

  # Into a managed PostgreSQL over TLS, its certificate checked against its CA (libpq's sslmode,
  # sslrootcert, sslcert, sslkey; sslrootcert=system for a publicly trusted one)
  ferry-export sqlite:app.db | ferry-import --create \\
    'postgres://app@db.example.com/app?sslmode=verify-full&sslrootcert=ca.pem'

  # A Django app's SQLite into the schema `manage.py migrate` made on PostgreSQL (its content
  # types, permissions and migration rows are there already: overwrite them by key)
  ferry-export sqlite:db.sqlite3 | ferry-import postgres://app@db/app --on-conflict overwrite
  # Prometheus metrics of the runs when it ends, for node_exporter's textfile collector
  ferry-export sqlite:app.db | ferry-import sqlite:copy.db --metrics-file /var/lib/node_exporter/ferry.prom

  # ...or into tables ferry makes: jsonb, uuid, and timestamptz for the naive UTC times
  ferry-export sqlite:db.sqlite3 | ferry-import postgres://app@db/app --create --naive-utc

  # From a Singer tap: upserted by key; prints each committed state, as a Singer target does
  tap-postgres --config tap.json --catalog cat.json | ferry-import sqlite:copy.db --create --singer > states.txt

  # Replay a saved stream, replacing rows whose key is already there
  ferry-import sqlite:copy.db --on-conflict overwrite < app.ndjson

  # See what would happen, changing nothing
  ferry-import sqlite:copy.db --create --dry-run < app.ndjson

  # Files into a directory acting as an object store; the upload results (path, key, size, sha256,
  # status, migrated_at) come out as RECORDs of an `uploads` stream, ready for a table import
  ferry-export dir:/srv/media | ferry-import dir:/backup/media > uploads.ndjson

  # The same into Cloudflare R2 (or any S3 API); keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
  ferry-export dir:/srv/media | ferry-import s3://bucket/media \\
    --endpoint https://ACCOUNT_ID.r2.cloudflarestorage.com > uploads.ndjson

Each STATE in the input is a barrier: everything before it is committed (with a commit marker kept
in the target's _ferry_commits table, in the same transaction), recorded in the state file, then
echoed on stdout (for the next program of a pipe: not onto a terminal). If the import is killed at any instant, run the same pipeline again: rows already
committed are skipped, nothing is lost or duplicated. Rows the target refuses go to a reject file.
Files are create-only: one already at its key with the same size and SHA-256 counts as done, a
different one is a conflict (--on-conflict overwrite replaces it); every file's outcome is kept in the
state file's manifest, so a re-run sends nothing for files already done.
Exit status: 0 done; 2 error; 3 done, but rows or files were rejected (the reject file says which
and why); 4 stopped early: the input ended without END, or the reader of stdout went away before
the acknowledgements and results were delivered (re-run to finish); 130 interrupted (Ctrl-C).
A closing line on stderr says what was read, written, skipped and rejected.";

/// Import a ferry stream (or a Singer stream) from stdin into a store.
#[derive(Debug, Parser)]
#[command(name = "ferry-import", version, about, after_long_help = super::with_tuning(EXAMPLES))]
pub struct ImportArgs {
    /// The store to write: sqlite:PATH (or a path ending in .db, .sqlite, .sqlite3),
    /// postgres://USER@HOST:PORT/DB[?sslmode=...], d1://ACCOUNT_ID/DATABASE_ID (with
    /// CLOUDFLARE_API_TOKEN); for files (from ferry-export dir:...), dir:PATH or s3://BUCKET/PREFIX
    pub target: String,
    /// Read the stream from FILE instead of stdin
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Create missing tables (and columns) from the stream's SCHEMA
    #[arg(long)]
    pub create: bool,
    /// PostgreSQL, with --create: date-times without an offset are UTC (as Django and Rails store
    /// them in SQLite), so their new columns are timestamptz rather than timestamp
    #[arg(long)]
    pub naive_utc: bool,
    /// PostgreSQL: the schema for streams that do not name one (from SQLite, say) [default: public]
    #[arg(long, value_name = "NAME")]
    pub schema: Option<String>,
    /// What to do with a row whose key is already in the target [default: fail; overwrite for a
    /// Singer stream (no BEGIN), which Singer targets upsert by key]
    #[arg(long, value_enum)]
    pub on_conflict: Option<OnConflict>,
    /// Write on stdout what a Singer target writes: each STATE's value alone, one per line, once
    /// everything before it is committed (the last line is the state to give the tap next time)
    #[arg(long)]
    pub singer: bool,
    /// Print the plan (tables to create, rows to insert/skip/overwrite) as NDJSON; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep no rollback journal of the rows written into existing, non-empty tables: faster
    /// upserts, but `ferry rollback` cannot undo them (tables created or found empty still can be)
    #[arg(long)]
    pub no_rollback_journal: bool,
    /// The state file (checkpoint)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
    /// When the import ends (however it ends), write the state file's runs as Prometheus
    /// metrics to PATH, whole (node_exporter's textfile collector reads *.prom files)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Where rejected rows go [default: rejects-RUN_ID.ndjson next to the state file]
    #[arg(long, value_name = "PATH")]
    pub reject_file: Option<PathBuf>,
    /// Stop with an error once more than N rows have been rejected
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_REJECTS)]
    pub max_rejects: u64,
    /// Import everything again, ignoring what the target's commit markers say is already there
    #[arg(long)]
    pub fresh: bool,
    /// Do not check STREAM_END row counts and digests against what arrived
    #[arg(long)]
    pub no_verify: bool,
    /// Longest input line accepted, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
    /// Object stores: files put at once
    #[arg(long, value_name = "N", default_value_t = defaults::JOBS)]
    pub jobs: usize,
    /// S3: the endpoint URL (R2: https://ACCOUNT_ID.r2.cloudflarestorage.com) [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3: the region [env: AWS_REGION; default: auto]
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Rows buffered per stream before they are written into the open transaction
    #[arg(long, value_name = "N", default_value_t = defaults::WRITE_ROWS, hide = true)]
    pub write_rows: usize,
    /// ...or this many bytes of input, whichever comes first
    #[arg(long, value_name = "BYTES", default_value_t = defaults::WRITE_BYTES, hide = true)]
    pub write_bytes: usize,
    #[command(flatten)]
    pub log: LogArgs,
}

impl ImportArgs {
    pub fn config(&self) -> Result<ImportConfig> {
        Ok(ImportConfig {
            target: Address::parse(&self.target)?,
            create: self.create,
            on_conflict: self.on_conflict,
            dry_run: self.dry_run,
            state_path: self.state.clone(),
            reject_path: self.reject_file.clone(),
            max_rejects: self.max_rejects,
            fresh: self.fresh,
            verify_stream_end: !self.no_verify,
            max_line: self.max_line_bytes,
            schema: self.schema.clone(),
            write_rows: self.write_rows.max(1),
            write_bytes: self.write_bytes.max(1),
            jobs: self.jobs.max(1),
            s3: crate::connect::objects::s3::S3Settings {
                endpoint: self.endpoint.clone(),
                region: self.region.clone(),
            },
            input_totals: input_totals(self.input.as_ref()),
            journal_rows: !self.no_rollback_journal,
            naive_utc: self.naive_utc,
            singer_output: self.singer,
        })
    }
}

pub fn main() -> ExitCode {
    let args = super::args_or_exit("ferry-import", ImportArgs::try_parse());
    init_logging(&args.log);
    crate::interrupt::install();
    let mut closing = Closing::new("ferry-import");
    let result = run(&args, &mut closing);
    finish_stage(&args.log, &closing, result)
}

/// The totals a regular input file (given, or on stdin) announces at its end.
fn input_totals(path: Option<&PathBuf>) -> Option<crate::protocol::reader::Totals> {
    use std::os::fd::AsFd as _;
    let file = match path {
        Some(p) => std::fs::File::open(p).ok()?,
        None => std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().ok()?),
    };
    crate::protocol::reader::totals_at_end(&file)
}

/// The input: a file if given, else stdin.
pub(crate) fn open_input(path: Option<&PathBuf>) -> Result<Box<dyn BufRead>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufReader::with_capacity(
            256 * 1024,
            std::fs::File::open(p).ctx(ErrorKind::Io, || format!("opening {}", p.display()))?,
        )),
        // Read ahead on a thread (up to 8 MiB) so the stage upstream is not held up.
        None => Box::new(crate::protocol::reader::ReadAhead::stdin(1 << 20, 8)),
    })
}

fn run(args: &ImportArgs, closing: &mut Closing) -> Result<ExitStatus> {
    let cfg = args.config()?;
    let input = open_input(args.input.as_ref())?;
    let mut o = import::ImportOutcome::default();
    // The acknowledgements of a table import are for the next program in a pipe: a terminal
    // gets none of them (the closing line says what was done). A plan, or a files import's
    // results, are shown wherever stdout goes.
    let tables = !matches!(cfg.target, Address::Dir(_) | Address::S3(_));
    let result = if tables && !cfg.dry_run && StreamWriter::stdout_is_terminal() {
        tracing::info!(
            "stdout is a terminal: the acknowledgements are not printed (pipe or redirect stdout to keep them)"
        );
        import::run_counted(&cfg, input, &mut StreamWriter::new(std::io::sink()), &mut o)
    } else {
        import::run_counted(&cfg, input, &mut StreamWriter::stdout()?, &mut o)
    };
    if o.files {
        closing
            .count("files_read", o.received)
            .count("uploaded", o.written)
            .count("present", o.skipped)
            .count("already_done", o.already)
            .count("not_put", o.rejected)
            .count("left_out", o.left_out);
    } else {
        closing
            .count("streams", o.streams)
            .count("rows_read", o.received)
            .count("written", o.written)
            .count("skipped", o.skipped)
            .count("already_done", o.already)
            .count("rejected", o.rejected);
        if o.deleted > 0 {
            // Only a change stream deletes.
            closing.count("deleted", o.deleted);
        }
    }
    if let Some(path) = &o.reject_path {
        closing.note(format!("rejects in {}", path.display()));
    }
    if let Err(e) = &result
        && !cfg.dry_run
    {
        // A stop from outside (a signal, a reader or producer gone, a fault that outlasted the
        // retries) is finished by running again; anything else needs its cause fixed first.
        let outside = matches!(
            e.kind(),
            ErrorKind::Truncated | ErrorKind::BrokenPipe | ErrorKind::Interrupted | ErrorKind::Transient
        );
        let again = if outside {
            "run the same pipeline again to finish"
        } else {
            "fix what the error says, then run the same pipeline again to finish"
        };
        // Resuming after the last committed row is right only when nothing but the stop itself
        // went wrong (it trusts the rows before that point to be unchanged).
        let resume = if outside {
            " (ferry-export --resume starts after those rows instead of reading them again)"
        } else {
            ""
        };
        closing.note(match (o.files, o.acknowledged) {
            (true, _) => format!(
                "every file settled before the last acknowledged STATE is recorded in the manifest (the next run sends nothing for those); {again}"
            ),
            (false, Some((line, seq))) => format!(
                "committed up to the STATE at line {line} (seq {seq}), nothing after it; {again}{resume}"
            ),
            (false, None) => format!("no STATE was acknowledged: nothing was committed; {again}"),
        });
    }
    let metrics = match &args.metrics_file {
        Some(path) if !cfg.dry_run => crate::stage::metrics::write_file(&cfg.state_path, path),
        _ => Ok(()),
    };
    result?;
    metrics?;
    if cfg.dry_run {
        closing.verdict("dry run, nothing changed");
    }
    Ok(if o.rejected > 0 && !cfg.dry_run {
        ExitStatus::Rejected
    } else {
        ExitStatus::Ok
    })
}
