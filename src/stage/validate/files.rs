//! Validating files: every file of the source side at its key on the target side, with the same
//! size and SHA-256, and nothing else there. A side is a directory (walked and hashed, every
//! byte read), a bucket, or a stream of FILE messages (stdin or a .ndjson file: what an export
//! saw).
//!
//! A bucket's objects say their SHA-256 in their metadata; an object rewritten with other bytes
//! under the old metadata would pass on that alone. So where the store gives a content hash for
//! free (a single-part ETag is the MD5 of the bytes) and the other side is a directory, the files'
//! MD5 is computed in the same read and checked against it; `--deep` reads and hashes every
//! object. What was taken from metadata only is said in the report.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use rayon::prelude::*;
use serde_json::json;

use super::findings::{Findings, detail};
use super::{Report, StreamReport, ValidateConfig};
use crate::address::Address;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::side::{FindingKind, Severity, Summary, Verdict};
use crate::protocol::{FileMsg, Kind, StreamReader, StreamWriter, now_rfc3339};
use crate::shard::Shard;
use crate::tree::{self, WalkOptions, Walked};

/// What one side says of a file.
#[derive(Debug, Clone, Default)]
struct Seen {
    size: u64,
    /// When known.
    sha256: Option<String>,
    /// The MD5 of the bytes: a directory's files, when the other side is a bucket; a bucket's
    /// object whose ETag is that (a single-part upload's).
    md5: Option<String>,
    /// The SHA-256 came from the object's metadata, not from its bytes.
    trusted: bool,
}

/// One side: relative path (or key) bytes to what it says of each, in byte order.
struct Listing {
    address: String,
    files: BTreeMap<Vec<u8>, Seen>,
    /// Files that could not be read, with why.
    problems: Vec<(Vec<u8>, String)>,
}

/// Whether this validation is about files (either side a directory).
pub(super) fn applies(cfg: &ValidateConfig) -> bool {
    matches!(cfg.source, Some(Address::Dir(_)) | Some(Address::S3(_)))
        || matches!(cfg.target, Some(Address::Dir(_)) | Some(Address::S3(_)))
}

/// `md5`: compute each file's MD5 in the same read, for a bucket's ETags.
fn list_dir(root: &Path, jobs: usize, md5: bool, shard: Option<Shard>) -> Result<Listing> {
    let root = tree::open_root(root)?;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    tree::walk(&root, WalkOptions::default(), None, |w| {
        let rel = match &w {
            Walked::File(e) => &e.rel,
            Walked::Problem { rel, .. } | Walked::Skipped { rel, .. } => rel,
        };
        if shard.is_some_and(|s| !s.owns_path(rel)) {
            return Ok(());
        }
        match w {
            Walked::File(e) => entries.push(e),
            Walked::Problem { rel, message } => problems.push((rel, message)),
            Walked::Skipped { rel, why, .. } => {
                tracing::info!(path = %String::from_utf8_lossy(&rel), "skipped: {why}");
            }
        }
        Ok(())
    })?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|e| Error::new(ErrorKind::Source, format!("starting hashing threads: {e}")))?;
    let hash = |path: &Path| {
        use md5::Digest as _;
        let mut m = md5.then(md5::Md5::new);
        tree::hash_file_into(path, |chunk| {
            if let Some(m) = m.as_mut() {
                m.update(chunk);
            }
            Ok(())
        })
        .map(|h| (h, m.map(|m| hex::encode(m.finalize()))))
    };
    let hashed: Vec<_> = pool.install(|| entries.par_iter().map(|e| hash(&e.abs)).collect());
    let mut files = BTreeMap::new();
    for (e, h) in entries.into_iter().zip(hashed) {
        match h {
            Ok((h, md5)) => {
                let seen = Seen {
                    size: h.size,
                    sha256: Some(h.sha256_hex()),
                    md5,
                    trusted: false,
                };
                files.insert(e.rel, seen);
            }
            Err(m) => problems.push((e.rel, m.to_string())),
        }
    }
    Ok(Listing {
        address: format!("dir:{}", root.display()),
        files,
        problems,
    })
}

fn list_stream<R: BufRead>(input: R, max_line: usize) -> Result<Listing> {
    let mut reader = StreamReader::new(input, max_line);
    let mut files = BTreeMap::new();
    let mut address = "the stream".to_owned();
    let mut problems = Vec::new();
    let mut whole = super::spill::Whole::default();
    while let Some(line) = reader.next_line()? {
        whole.see(&line)?;
        match line.kind {
            Kind::Begin => {
                let b: crate::protocol::Begin = line.parse()?;
                if let Some(s) = b.source {
                    address = s.address;
                }
            }
            Kind::File => {
                let f: FileMsg = line.parse()?;
                let key = match &f.key {
                    Some(k) => k.as_bytes().to_vec(),
                    None => f.path_bytes().map_err(|e| line.error(e))?,
                };
                let seen = Seen {
                    size: f.size,
                    sha256: Some(f.sha256.clone()),
                    ..Default::default()
                };
                if files.insert(key, seen).is_some() {
                    problems.push((
                        f.path.into_bytes(),
                        format!("listed twice in the stream (line {})", line.no),
                    ));
                }
            }
            Kind::Error => {
                let e: crate::protocol::ErrorMsg = line.parse()?;
                // What the export left out on purpose (a link not followed) a walk leaves out too.
                let left_out = e.left_out().is_some();
                if let Some(p) = e.path.filter(|_| !left_out) {
                    problems.push((p.into_bytes(), e.message));
                }
            }
            _ => {}
        }
    }
    whole.check(reader.line_no())?;
    Ok(Listing {
        address,
        files,
        problems,
    })
}

/// One side's listing; `other`: the other side's address.
fn side<R: BufRead>(
    addr: Option<&Address>,
    other: Option<&Address>,
    input: &mut Option<R>,
    cfg: &ValidateConfig,
) -> Result<Listing> {
    match addr {
        Some(Address::Dir(p)) => list_dir(p, 8, matches!(other, Some(Address::S3(_))) && !cfg.deep, cfg.shard),
        Some(Address::Stream(Some(p))) => {
            let f = std::fs::File::open(p).ctx(ErrorKind::Source, || format!("opening {}", p.display()))?;
            list_stream(std::io::BufReader::new(f), cfg.max_line)
        }
        Some(Address::Stream(None)) | None => match input.take() {
            Some(i) => list_stream(i, cfg.max_line),
            None => Err(Error::usage("only one side can be the stream on stdin")),
        },
        Some(Address::S3(url)) => {
            let store = crate::connect::objects::s3::S3Store::open(url, &cfg.s3)?;
            let address = crate::connect::objects::ObjectStore::address(&store);
            let mut files = BTreeMap::new();
            // Objects without the SHA-256 in their metadata are read and hashed (all, when deep).
            for o in store.list(16, cfg.deep)? {
                if cfg.shard.is_some_and(|s| !s.owns_path(o.key.as_bytes())) {
                    continue;
                }
                let md5 = o.etag.as_deref().and_then(etag_md5);
                let seen = Seen {
                    size: o.size,
                    trusted: !o.read,
                    sha256: o.sha256,
                    md5,
                };
                files.insert(o.key.into_bytes(), seen);
            }
            let problems = Vec::new();
            Ok(Listing {
                address,
                files,
                problems,
            })
        }
        Some(other) => Err(Error::usage(format!(
            "{} holds tables, not files: validate files against a dir: (or a stream of FILE lines)",
            other.redacted()
        ))),
    }
}

/// The MD5 a single-part upload's ETag is (`"<32 hex>"`); a multipart one's (`"<hex>-N"`) is
/// not the MD5 of the bytes.
fn etag_md5(etag: &str) -> Option<String> {
    let t = etag.trim_matches('"').to_ascii_lowercase();
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())).then_some(t)
}

pub(super) fn run<R: BufRead, W: Write>(cfg: &ValidateConfig, input: R, out: &mut StreamWriter<W>) -> Result<Report> {
    let started_at = now_rfc3339();
    let mut input = Some(input);
    let Some(target) = cfg.target.as_ref() else {
        return Err(Error::usage("validating files needs a target (a dir:)"));
    };
    let src = side(cfg.source.as_ref(), Some(target), &mut input, cfg)?;
    let dst = side(Some(target), cfg.source.as_ref(), &mut input, cfg)?;
    if src.files.is_empty() && dst.files.is_empty() && src.problems.is_empty() && dst.problems.is_empty() {
        return Err(Error::input(format!(
            "nothing was compared: {} and {} hold no files; a validation passes only on something proved equal",
            src.address, dst.address
        )));
    }
    let mut findings = Findings::new(out, cfg.max_listed);
    let stream = "files";
    let mut sr = StreamReport {
        stream: stream.into(),
        table: String::new(),
        source_rows: src.files.len() as u64,
        target_rows: dst.files.len() as u64,
        ..Default::default()
    };
    let name = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    let mut a = src.files.iter().peekable();
    let mut b = dst.files.iter().peekable();
    // Objects whose SHA-256 was taken from their metadata alone, with nothing of their bytes
    // checked (no single-part ETag to compare, no --deep).
    let mut trusted = 0u64;
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, va)), Some((kb, vb))) if ka == kb => {
                // A side that does not know the SHA-256 is listed as unverified, not changed.
                let sha_differs = matches!((&va.sha256, &vb.sha256), (Some(x), Some(y)) if x != y);
                // The bytes the store has are not the file's, whatever the metadata says.
                let md5_differs = matches!((&va.md5, &vb.md5), (Some(x), Some(y)) if x != y);
                let checked = |s: &Seen, o: &Seen| !s.trusted || (s.md5.is_some() && o.md5.is_some());
                trusted += u64::from(!checked(va, vb)) + u64::from(!checked(vb, va));
                if va.size != vb.size || sha_differs || md5_differs {
                    sr.changed += 1;
                    let why = (md5_differs && !sha_differs).then_some(
                        "the object's bytes are not the file's (its ETag is not their MD5), though its metadata says the same SHA-256",
                    );
                    findings.add(
                        stream,
                        FindingKind::Changed,
                        Severity::Fail,
                        detail(&[
                            ("key", json!({"path": name(ka)})),
                            ("source", json!({"size": va.size, "sha256": va.sha256})),
                            ("target", json!({"size": vb.size, "sha256": vb.sha256})),
                            ("message", json!(why)),
                        ]),
                    )?;
                }
                a.next();
                b.next();
            }
            (Some((ka, va)), kb) if kb.is_none_or(|(kb, _)| ka < kb) => {
                sr.missing += 1;
                findings.add(
                    stream,
                    FindingKind::Missing,
                    Severity::Fail,
                    detail(&[("key", json!({"path": name(ka)})), ("size", json!(va.size))]),
                )?;
                a.next();
            }
            (_, Some((kb, vb))) => {
                sr.extra += 1;
                findings.add(
                    stream,
                    FindingKind::Extra,
                    Severity::Fail,
                    detail(&[("key", json!({"path": name(kb)})), ("size", json!(vb.size))]),
                )?;
                b.next();
            }
            (Some(_), None) => unreachable!("handled above"),
        }
    }
    let mut unverified = Vec::new();
    for (which, l) in [("source", &src), ("target", &dst)] {
        for (p, m) in &l.problems {
            let text = format!("{which} {}: {m}", name(p));
            findings.add(
                stream,
                FindingKind::Unverified,
                Severity::Fail,
                detail(&[
                    ("key", json!({"path": name(p)})),
                    ("side", json!(which)),
                    ("message", json!(m)),
                ]),
            )?;
            unverified.push(text);
        }
    }
    let bad = sr.missing + sr.extra + sr.changed;
    sr.status = if bad == 0 { Verdict::Pass } else { Verdict::Fail };
    let status = if bad > 0 {
        Verdict::Fail
    } else if unverified.is_empty() || cfg.allow_unverified {
        Verdict::Pass
    } else {
        Verdict::Unverified
    };
    let report = Report {
        status,
        source: src.address,
        target: dst.address,
        started_at,
        finished_at: now_rfc3339(),
        streams: vec![sr],
        findings: findings.counts.clone(),
        unverified,
        notes: (trusted > 0)
            .then(|| format!(
                "{trusted} objects' SHA-256 was taken from their metadata without their bytes being checked (a multipart upload's ETag is not an MD5, and a stream side has none to compare): --deep reads and hashes every object"
            ))
            .into_iter()
            .collect(),
        shard: cfg.shard.map(|shard| super::ShardPart {
            shard,
            ranges: [(stream.to_owned(), json!("hash of the path"))].into(),
        }),
    };
    let summary = Summary {
        status: report.status,
        source: Some(report.source.clone()),
        target: Some(report.target.clone()),
        streams: Some(1),
        files_source: Some(report.streams[0].source_rows),
        files_target: Some(report.streams[0].target_rows),
        findings: Some(report.findings.clone()),
        unverified: Some(report.unverified.clone()),
        trusted_metadata: Some(trusted),
        ..Default::default()
    };
    findings.out.write_json(&summary, Kind::End)?;
    report.write_to(cfg.report.as_deref())?;
    Ok(report)
}
