//! Named backups: an export kept as a zstd-compressed stream with a manifest, listed, restored
//! into any target (and validated there), and pruned by age and count.
//!
//! A backup is a directory `DIR/NAME/` holding `stream.ndjson.zst` and `manifest.json`. It is
//! written under a temporary name and renamed into place once the stream has been read back
//! whole (every STREAM_END's count and digest checked against its records), so a backup that is
//! listed is complete: a failure or a kill leaves no half-written backup behind. The manifest
//! records the source (redacted), when, every stream's rows and digest, and the compressed
//! file's size and SHA-256, which a restore checks before reading it.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context as _, Error, ErrorKind, Result};
use crate::protocol::side::FindingKind;
use crate::protocol::{Kind, StreamReader, StreamWriter};

pub(crate) const STREAM_FILE: &str = "stream.ndjson.zst";
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// Findings on a stream read back that mean it is not what was written.
const INTEGRITY: &[FindingKind] = &[
    FindingKind::StreamEndMismatch,
    FindingKind::StreamIncomplete,
    FindingKind::InvalidRecord,
    FindingKind::InvalidStream,
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StreamEntry {
    pub stream: String,
    pub rows: u64,
    pub digest: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub name: String,
    pub source: String,
    pub created_at: String,
    pub ferry_version: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
    pub streams: Vec<StreamEntry>,
}

/// A backup name: a file name of its own, no path.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_alphanumeric() || "-_.@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "backup name {name:?}: use letters, digits and - _ . @ + (not starting with a dot)"
        )))
    }
}

/// Write backup `name` under `dir` from an export (`export` writes the stream to the writer it
/// is given). Returns its manifest.
pub(crate) fn create(
    dir: &Path,
    name: &str,
    source: &str,
    export: impl FnOnce(&mut StreamWriter<zstd::Encoder<'static, std::fs::File>>) -> Result<()>,
) -> Result<Manifest> {
    check_name(name)?;
    let final_dir = dir.join(name);
    if final_dir.exists() {
        return Err(Error::usage(format!(
            "a backup named {name:?} exists already in {} (choose another name, or remove it with ferry backup --prune)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).ctx(ErrorKind::Io, || format!("creating {}", dir.display()))?;
    // What a killed backup of this name left behind goes first.
    if let Ok(entries) = std::fs::read_dir(dir) {
        let stale = format!(".{name}.partial-");
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&stale) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    std::fs::create_dir(&tmp).ctx(ErrorKind::Io, || format!("creating {}", tmp.display()))?;
    let result = (|| {
        let path = tmp.join(STREAM_FILE);
        let file = std::fs::File::create(&path).ctx(ErrorKind::Io, || format!("creating {}", path.display()))?;
        let encoder = zstd::Encoder::new(file, 3).ctx(ErrorKind::Io, || "starting compression")?;
        let mut out = StreamWriter::new(encoder);
        export(&mut out)?;
        let encoder = out.into_inner()?;
        let file = encoder
            .finish()
            .ctx(ErrorKind::Io, || format!("finishing {}", path.display()))?;
        file.sync_all()
            .ctx(ErrorKind::Io, || format!("syncing {}", path.display()))?;
        drop(file);
        let manifest = read_back(&path, name, source)?;
        let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        let mpath = tmp.join(MANIFEST_FILE);
        let mut m = std::fs::File::create(&mpath).ctx(ErrorKind::Io, || format!("creating {}", mpath.display()))?;
        m.write_all(text.as_bytes())
            .and_then(|()| m.sync_all())
            .ctx(ErrorKind::Io, || format!("writing {}", mpath.display()))?;
        std::fs::rename(&tmp, &final_dir).ctx(ErrorKind::Io, || {
            format!("moving the backup into {}", final_dir.display())
        })?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(manifest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Read a written backup back whole: every STREAM_END checked against its records, the file's
/// SHA-256 taken. The manifest that describes it.
fn read_back(path: &Path, name: &str, source: &str) -> Result<Manifest> {
    let (bytes, sha256) = crate::tree::sha256_of(path).ctx(ErrorKind::Io, || format!("reading {}", path.display()))?;
    let streams = check_stream(path)?;
    Ok(Manifest {
        name: name.to_owned(),
        source: source.to_owned(),
        created_at: crate::protocol::now_rfc3339(),
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        file: STREAM_FILE.to_owned(),
        bytes,
        sha256,
        rows: streams.iter().map(|s| s.rows).sum(),
        streams,
    })
}

/// Validate a compressed stream on its own; its streams as STREAM_END says, once checked.
fn check_stream(path: &Path) -> Result<Vec<StreamEntry>> {
    let cfg = crate::stage::validate::ValidateConfig {
        max_listed: 5,
        allow_unverified: true,
        ..crate::stage::validate::ValidateConfig::for_stream(None)
    };
    let mut sink = StreamWriter::new(std::io::sink());
    let report = crate::stage::validate::run(&cfg, open_stream(path)?, &mut sink)?;
    // What the data itself holds (orphans, duplicate keys the source has) is kept as it is; a
    // stream that does not add up is not.
    let broken: Vec<_> = report
        .findings
        .iter()
        .filter(|(kind, n)| **n > 0 && INTEGRITY.contains(kind))
        .collect();
    if !broken.is_empty() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("the backup read back does not add up ({broken:?}): nothing was kept"),
        ));
    }
    // The streams and their counts, from the STREAM_END lines.
    let mut out = Vec::new();
    let mut reader = StreamReader::new(open_stream(path)?, crate::protocol::DEFAULT_MAX_LINE_BYTES);
    while let Some(line) = reader.next_line()? {
        if line.kind == Kind::StreamEnd {
            let v: serde_json::Value = serde_json::from_str(line.text).map_err(|e| line.error(e.to_string()))?;
            out.push(StreamEntry {
                stream: v["stream"].as_str().unwrap_or_default().to_owned(),
                rows: v["rows"].as_u64().unwrap_or(0),
                digest: v.get("digest").cloned(),
            });
        }
    }
    Ok(out)
}

/// The decompressed stream of a backup file.
pub(crate) fn open_stream(path: &Path) -> Result<BufReader<zstd::Decoder<'static, BufReader<std::fs::File>>>> {
    let f = std::fs::File::open(path).ctx(ErrorKind::Io, || format!("opening {}", path.display()))?;
    let d = zstd::Decoder::new(f).ctx(ErrorKind::Io, || format!("reading {}", path.display()))?;
    Ok(BufReader::with_capacity(1 << 20, d))
}

/// Every backup under `dir`, oldest first.
pub(crate) fn list(dir: &Path) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(e.path().join(MANIFEST_FILE))
            && let Ok(m) = serde_json::from_str::<Manifest>(&text)
        {
            out.push(m);
        }
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// Backup `name`, its file checked against the manifest's size and SHA-256: the manifest and the
/// stream file's path.
pub(crate) fn open(dir: &Path, name: &str) -> Result<(Manifest, PathBuf)> {
    check_name(name)?;
    let at = dir.join(name);
    let text = std::fs::read_to_string(at.join(MANIFEST_FILE)).map_err(|_| {
        let known: Vec<String> = list(dir).unwrap_or_default().into_iter().map(|m| m.name).collect();
        Error::usage(format!(
            "no backup named {name:?} in {} (backups: {})",
            dir.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ))
    })?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: an unreadable manifest: {e}", at.display())))?;
    let path = at.join(&m.file);
    let (n, got) = crate::tree::sha256_of(&path).ctx(ErrorKind::Io, || format!("reading {}", path.display()))?;
    if n != m.bytes || got != m.sha256 {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "backup {name:?} is damaged: {} is {n} bytes with SHA-256 {got}, the manifest says {} bytes, {}",
                path.display(),
                m.bytes,
                m.sha256
            ),
        ));
    }
    Ok((m, path))
}

/// Remove backups beyond the `keep` newest that are older than `older_than` (both optional;
/// with neither, nothing goes). Dry run unless `confirm`. The backups removed (or that would be).
pub(crate) fn prune(
    dir: &Path,
    keep: Option<usize>,
    older_than: Option<std::time::Duration>,
    confirm: bool,
) -> Result<Vec<Manifest>> {
    let all = list(dir)?;
    let now = jiff::Timestamp::now();
    let n = all.len();
    let mut gone = Vec::new();
    for (i, m) in all.into_iter().enumerate() {
        let newest_rank = n - i; // 1 = the newest
        let beyond_keep = keep.is_none_or(|k| newest_rank > k);
        let old_enough = older_than.is_none_or(|age| {
            m.created_at
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| now.duration_since(t).as_secs_f64() >= age.as_secs_f64())
        });
        if (keep.is_some() || older_than.is_some()) && beyond_keep && old_enough {
            if confirm {
                std::fs::remove_dir_all(dir.join(&m.name))
                    .ctx(ErrorKind::Io, || format!("removing backup {}", m.name))?;
            }
            gone.push(m);
        }
    }
    Ok(gone)
}
