//! `ferry backup` and `ferry restore`: named backups as compressed streams, restored and then
//! validated against the backup.

use std::path::PathBuf;

use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{Error, ExitStatus, Result};
use crate::protocol::StreamWriter;

/// Where named backups live unless --backups says otherwise.
const BACKUPS_DIR: &str = ".ferry/backups";

const BACKUP_EXAMPLES: &str = "\
Examples:
  ferry backup sqlite:app.db --name before-upgrade   # .ferry/backups/before-upgrade/
  ferry backup postgres://app@db/app --name nightly --table public.orders
  ferry backup --list
  ferry backup --prune --keep 7                      # the plan; --confirm removes them
  ferry backup --prune --older-than 30d --confirm";

#[derive(Debug, clap::Args)]
#[command(after_long_help = BACKUP_EXAMPLES)]
pub struct BackupArgs {
    /// What to back up: sqlite:PATH, postgres://..., d1://ACCOUNT/DB
    #[arg(value_name = "SOURCE", required_unless_present_any = ["list", "prune"])]
    pub source: Option<String>,
    /// The backup's name
    #[arg(long, value_name = "NAME", required_unless_present_any = ["list", "prune"])]
    pub name: Option<String>,
    /// Only this table (repeatable)
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Only these rows and, with --follow-fks, what references them (as ferry-export --root)
    #[arg(long = "root", value_name = "TABLE:COLUMN=VALUE")]
    pub roots: Vec<String>,
    /// With --root: every row that references the root rows, transitively
    #[arg(long, requires = "roots")]
    pub follow_fks: bool,
    /// List the backups (oldest first)
    #[arg(long, conflicts_with_all = ["source", "prune"])]
    pub list: bool,
    /// With --list: one JSON manifest per line
    #[arg(long, requires = "list")]
    pub json: bool,
    /// Remove old backups: those beyond the --keep newest and older than --older-than
    #[arg(long, conflicts_with = "source")]
    pub prune: bool,
    /// With --prune: keep this many of the newest
    #[arg(long, value_name = "N", requires = "prune")]
    pub keep: Option<usize>,
    /// With --prune: only remove backups older than this (30d, 12h, 90m, 3600s, 2w)
    #[arg(long, value_name = "AGE", requires = "prune")]
    pub older_than: Option<String>,
    /// With --prune: act; without it, only say what would go
    #[arg(long, requires = "prune")]
    pub confirm: bool,
    /// Where the backups are
    #[arg(long = "backups", value_name = "DIR", default_value = BACKUPS_DIR)]
    pub dir: PathBuf,
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
}

const RESTORE_EXAMPLES: &str = "\
Examples:
  ferry restore before-upgrade sqlite:restored.db --create   # then validated against the backup
  ferry restore nightly postgres://app@db/app_copy --create
  ferry restore nightly sqlite:app.db --on-conflict overwrite   # into the live copy, rows replaced";

#[derive(Debug, clap::Args)]
#[command(after_long_help = RESTORE_EXAMPLES)]
pub struct RestoreArgs {
    /// The backup's name (ferry backup --list)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to load it: sqlite:PATH, postgres://..., d1://ACCOUNT/DB
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Create missing tables
    #[arg(long)]
    pub create: bool,
    /// What to do with a row whose key is already in the target
    #[arg(long, value_enum, default_value = "fail")]
    pub on_conflict: crate::connect::OnConflict,
    /// Do not validate the target against the backup afterwards
    #[arg(long)]
    pub no_validate: bool,
    /// Where the backups are
    #[arg(long = "backups", value_name = "DIR", default_value = BACKUPS_DIR)]
    pub dir: PathBuf,
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
}

/// `30d`, `12h`, `90m`, `3600s`, `2w`.
fn age(text: &str) -> Result<std::time::Duration> {
    let bad = || {
        Error::usage(format!(
            "--older-than {text:?}: expected a number and a unit: 30d, 12h, 90m, 3600s, 2w"
        ))
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let n: f64 = text[..text.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        'w' => 7.0 * 86400.0,
        _ => return Err(bad()),
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(n * secs))
}

pub(super) fn run_backup(b: &BackupArgs) -> Result<ExitStatus> {
    use crate::stage::backup;
    let say = crate::human::say;
    if b.list {
        let all = backup::list(&b.dir)?;
        let mut out = StreamWriter::stdout()?;
        if b.json {
            for m in &all {
                out.write_line(
                    serde_json::to_string(m).unwrap_or_default().as_bytes(),
                    crate::protocol::Kind::Other,
                )?;
            }
        } else {
            let head = format!(
                "{:<24} {:<28} {:>12} {:>12}  source",
                "name", "created", "rows", "bytes"
            );
            out.write_line(head.as_bytes(), crate::protocol::Kind::Other)?;
            for m in &all {
                let line = format!(
                    "{:<24} {:<28} {:>12} {:>12}  {}",
                    m.name, m.created_at, m.rows, m.bytes, m.source
                );
                out.write_line(line.as_bytes(), crate::protocol::Kind::Other)?;
            }
        }
        out.flush()?;
        return Ok(ExitStatus::Ok);
    }
    if b.prune {
        if b.keep.is_none() && b.older_than.is_none() {
            return Err(Error::usage("--prune needs --keep N, --older-than AGE, or both"));
        }
        let older = b.older_than.as_deref().map(age).transpose()?;
        let gone = backup::prune(&b.dir, b.keep, older, b.confirm)?;
        for m in &gone {
            say(&format!(
                "ferry backup: {} {} ({}, {} rows)",
                if b.confirm { "removed" } else { "would remove" },
                m.name,
                m.created_at,
                m.rows
            ));
        }
        if !b.confirm {
            say(&format!(
                "ferry backup --prune (dry run): {} would go; --confirm to remove them",
                gone.len()
            ));
        }
        return Ok(ExitStatus::Ok);
    }
    let (Some(source), Some(name)) = (&b.source, &b.name) else {
        return Err(Error::usage("ferry backup SOURCE --name NAME (or --list, or --prune)"));
    };
    let cfg = crate::stage::export::ExportConfig {
        roots: b
            .roots
            .iter()
            .map(|r| crate::stage::entity::Root::parse(r))
            .collect::<Result<_>>()?,
        follow_fks: b.follow_fks,
        ..crate::stage::export::ExportConfig::of(
            crate::address::Address::parse(source)?,
            crate::cli::selection(&b.tables, &[], &[])?,
            b.state.clone(),
        )
    };
    let redacted = cfg.source.redacted();
    let m = backup::create(&b.dir, name, &redacted, |out| {
        crate::stage::export::run(&cfg, out).map(|_| ())
    })?;
    say(&format!(
        "ferry backup: {} of {} written: {} streams, {} rows, {} bytes compressed, in {}",
        m.name,
        m.source,
        m.streams.len(),
        m.rows,
        m.bytes,
        b.dir.join(&m.name).display()
    ));
    Ok(ExitStatus::Ok)
}

pub(super) fn run_restore(r: &RestoreArgs) -> Result<ExitStatus> {
    use crate::stage::backup;
    let (m, path) = backup::open(&r.dir, &r.name)?;
    let cfg = crate::stage::import::ImportConfig {
        create: r.create,
        on_conflict: Some(r.on_conflict),
        ..crate::stage::import::ImportConfig::new(crate::address::Address::parse(&r.target)?, r.state.clone())
    };
    let mut sink = StreamWriter::new(std::io::sink());
    let outcome = crate::stage::import::run(&cfg, backup::open_stream(&path)?, &mut sink)?;
    crate::human::say(&format!(
        "ferry restore: {} ({} rows from {}) loaded into {}: {} rows written, {} already there, {} rejected",
        m.name,
        m.rows,
        m.source,
        cfg.target.redacted(),
        outcome.written,
        outcome.already,
        outcome.rejected
    ));
    if r.no_validate {
        return Ok(ExitStatus::Ok);
    }
    let vcfg = crate::stage::validate::ValidateConfig::for_stream(Some(cfg.target.clone()));
    let mut out = StreamWriter::stdout()?;
    let report = crate::stage::validate::run(&vcfg, backup::open_stream(&path)?, &mut out)?;
    out.flush()?;
    Ok(if report.passed() {
        crate::human::say(&format!(
            "ferry restore: {} validated equal to backup {}",
            cfg.target.redacted(),
            m.name
        ));
        ExitStatus::Ok
    } else {
        crate::human::say(&format!(
            "ferry restore: {} differs from backup {} (findings on stdout)",
            cfg.target.redacted(),
            m.name
        ));
        ExitStatus::Differences
    })
}
