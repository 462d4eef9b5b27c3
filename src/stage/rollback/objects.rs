//! Rollback of files: delete exactly the objects a run created, as its manifest says.
//!
//! Contract:
//! - MUST change nothing without `confirm`: the plan (every object it would delete, and what it
//!   would leave and why) is printed as NDJSON.
//! - MUST delete only objects the run created (`uploaded`, or `uploading` when the object at the
//!   key holds exactly the bytes the run was sending), and only while they still hold those bytes;
//!   an object the run overwrote is left (its earlier bytes are gone) and reported.
//! - MUST refuse, unless `force`, while the original file is missing from the source directory:
//!   deleting the only copy is never the default.
//! - MUST write every action to the audit log before taking it and mark the file `rolled_back`
//!   after, so a rollback can be interrupted and run again (idempotent).

use crate::outcome::FileStatus;
use std::io::Write;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::{Audit, RollbackConfig, RollbackOutcome};
use crate::address::Address;
use crate::checkpoint::{Checkpoint, FileRow};
use crate::connect::objects::s3::S3Settings;
use crate::connect::objects::{self, ObjectStore};
use crate::error::{Error, Result};
use crate::protocol::side::{Action, AuditEntry, Plan};
use crate::protocol::{Kind, StreamWriter, now_rfc3339};

/// The store a manifest row names: `dir:PATH`, or `s3://BUCKET/PREFIX [at ENDPOINT]`.
fn open_target(target: &str, s3: &S3Settings) -> Result<Box<dyn ObjectStore>> {
    let (addr, endpoint) = match target.split_once(" at ") {
        Some((a, e)) => (a, Some(e.to_owned())),
        None => (target, None),
    };
    let settings = S3Settings {
        endpoint: s3.endpoint.clone().or(endpoint),
        region: s3.region.clone(),
    };
    crate::connect::open_store(&Address::parse(addr)?, &settings)
}

/// The stores a rollback has opened, each once, by the target the manifest names.
type Stores = Vec<(String, Box<dyn ObjectStore>)>;

/// Where in `stores` the store of `target` is, opening it the first time.
fn store_at(stores: &mut Stores, target: &str, s3: &S3Settings) -> Result<usize> {
    if let Some(at) = stores.iter().position(|(t, _)| t == target) {
        return Ok(at);
    }
    stores.push((target.to_owned(), open_target(target, s3)?));
    Ok(stores.len() - 1)
}

/// What the plan does with one file, and why.
fn decide(
    row: &FileRow,
    cfg: &RollbackConfig,
    store: &dyn ObjectStore,
    source_root: Option<&Path>,
) -> Result<(Action, String)> {
    let ours_if_present = match row.status {
        FileStatus::Uploaded if cfg.failed_only => return Ok((Action::Keep, "completed (--failed-only)".into())),
        FileStatus::Uploaded | FileStatus::Uploading => true,
        FileStatus::Overwritten => {
            return Ok((
                Action::Keep,
                "this run replaced an earlier object, whose bytes are gone: it cannot be put back".into(),
            ));
        }
        FileStatus::RolledBack => return Ok((Action::Done, "already rolled back".into())),
        other => return Ok((Action::Keep, format!("the run did not create it ({other})"))),
    };
    debug_assert!(ours_if_present);
    match store.head(&row.key)? {
        None => return Ok((Action::Done, "not there".into())),
        Some(info) if info.size != row.size || info.sha256.as_deref() != Some(row.sha256.as_str()) => {
            return Ok((
                Action::Keep,
                "the object at the key now holds other bytes: someone else's".into(),
            ));
        }
        Some(_) => {}
    }
    if !cfg.force {
        match source_root {
            Some(root) => {
                let original = root.join(std::ffi::OsStr::from_bytes(&row.path));
                if !original.is_file() {
                    return Ok((
                        Action::Refuse,
                        format!(
                            "the original {} is gone: this object may be the only copy (--force deletes it anyway)",
                            original.display()
                        ),
                    ));
                }
            }
            None => {
                return Ok((
                    Action::Refuse,
                    "the run's source is not a local directory, so the original cannot be checked (--force deletes it anyway)"
                        .into(),
                ));
            }
        }
    }
    Ok((Action::Delete, String::new()))
}

/// Undo a run of files: delete the objects it created, abort the multipart uploads it left.
pub(super) fn undo_run<W: Write>(
    cp: &mut Checkpoint,
    cfg: &RollbackConfig,
    run_id: &str,
    audit: &mut Audit,
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    let rows = cp.files_of_run(run_id)?;
    let uploads: Vec<_> = cp
        .multipart_open()?
        .into_iter()
        .filter(|u| u.run_id == run_id)
        .collect();
    if rows.is_empty() && uploads.is_empty() {
        // Killed before it put anything, or every file it put was put again by a later run
        // (which now owns it): nothing of this run's own to undo.
        let mut line = Plan::new(Action::Nothing);
        line.run = Some(run_id.to_owned());
        line.why = Some(
            "the run left nothing of its own: no table journal, no file recorded as its, no unfinished upload".into(),
        );
        out.write_json(&line, Kind::Other)?;
        return Ok(RollbackOutcome::default());
    }
    // A shard's source is the directory too (each shard's files are its own to undo).
    let source_root = cp.run_source(run_id)?.and_then(|s| {
        let (whole, _) = crate::shard::split_identity(&s);
        whole.strip_prefix("dir:").map(PathBuf::from)
    });
    let mut stores = Stores::new();
    let mut plan: Vec<(usize, Action, String)> = Vec::new();
    for (target, row) in &rows {
        let at = store_at(&mut stores, target, &cfg.s3)?;
        let (action, why) = decide(row, cfg, stores[at].1.as_ref(), source_root.as_deref())?;
        plan.push((at, action, why));
    }
    let refused = plan.iter().filter(|p| p.1 == Action::Refuse).count();
    // Not while an import puts objects there.
    let mut locks = Vec::new();
    if cfg.confirm {
        for (target, _) in &stores {
            locks.push(crate::stage::import::files::lock_store(&cfg.state_path, target)?);
        }
    }
    let mut outcome = RollbackOutcome::default();
    for ((target, row), (at, action, why)) in rows.iter().zip(plan) {
        let key = stores[at].1.full_key(&row.key);
        let act = cfg.confirm && refused == 0;
        match action {
            Action::Delete if act => {
                let mut entry = AuditEntry::now(Action::Delete, run_id, target);
                entry.key = Some(Json::String(key.clone()));
                entry.size = Some(row.size);
                entry.sha256 = Some(row.sha256.clone());
                audit.write(&entry)?;
                stores[at].1.delete(&row.key)?;
                let note = format!("rolled back at {}", now_rfc3339());
                cp.set_file_status(target, &row.key, FileStatus::RolledBack, Some(&note))?;
                outcome.deleted += 1;
            }
            Action::Delete => outcome.would_delete += 1,
            Action::Refuse => outcome.refused += 1,
            Action::Keep => outcome.kept += 1,
            _ if row.status == FileStatus::RolledBack => outcome.already_undone += 1,
            _ => {}
        }
        let mut line = Plan::new(action.shown(act));
        line.target = Some(target.clone());
        line.key = Some(Json::String(key));
        line.path = Some(String::from_utf8_lossy(&row.path).into_owned());
        line.size = Some(row.size);
        line.status = Some(row.status.as_str());
        line.why = (!why.is_empty()).then_some(why);
        out.write_json(&line, Kind::Other)?;
    }
    // Multipart uploads the run started and never completed or aborted (killed mid-file, or the
    // store went away): their parts are stored, and billed, until aborted. Nothing of them is an
    // object, so this is safe whatever else the plan refuses.
    for u in uploads {
        let at = store_at(&mut stores, &u.target, &cfg.s3)?;
        let key = stores[at].1.full_key(&u.key);
        if u.upload_id == objects::INTENT {
            // No id to abort by: said, not acted on.
            let mut line = Plan::new(Action::UnknownUpload);
            line.target = Some(u.target.clone());
            line.key = Some(Json::String(key));
            line.why = Some(crate::stage::import::files::UNKNOWN_UPLOAD.into());
            out.write_json(&line, Kind::Other)?;
            outcome.unknown_uploads += 1;
            continue;
        }
        let shown = if cfg.confirm {
            let mut entry = AuditEntry::now(Action::AbortMultipart, run_id, &u.target);
            entry.key = Some(Json::String(key.clone()));
            entry.upload_id = Some(u.upload_id.clone());
            audit.write(&entry)?;
            stores[at].1.abort_upload(&u.key, &u.upload_id)?;
            cp.multipart_ended(&u.target, &u.key, &u.upload_id)?;
            outcome.aborted += 1;
            Action::Aborted
        } else {
            outcome.would_abort += 1;
            Action::Abort
        };
        let mut line = Plan::new(shown);
        line.target = Some(u.target);
        line.key = Some(Json::String(key));
        line.upload_id = Some(u.upload_id);
        line.why = Some("a multipart upload the run left unfinished".into());
        out.write_json(&line, Kind::Other)?;
    }
    out.flush()?;
    if cfg.confirm && refused > 0 {
        return Err(Error::usage(format!(
            "{refused} objects would be deleted while their originals are missing (listed on stdout as \"refuse\"); nothing was deleted; restore the originals, or use --force"
        )));
    }
    Ok(outcome)
}
