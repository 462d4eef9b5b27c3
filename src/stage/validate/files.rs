//! Validating files: every file of the source side at its key on the target side, with the same
//! size and SHA-256, and nothing else there. A side is a directory (walked and hashed, every
//! byte read) or a stream of FILE messages (stdin or a .ndjson file: what an export saw).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use rayon::prelude::*;
use serde_json::json;

use super::{Findings, Report, StreamReport, ValidateConfig, detail};
use crate::address::Address;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{FileMsg, Kind, StreamReader, StreamWriter, now_rfc3339};
use crate::tree::{self, WalkOptions, Walked};

/// One side: relative path (or key) bytes to size and SHA-256 (when known), in byte order.
struct Listing {
    address: String,
    files: BTreeMap<Vec<u8>, (u64, Option<String>)>,
    /// Files that could not be read, with why.
    problems: Vec<(Vec<u8>, String)>,
}

/// Whether this validation is about files (either side a directory).
pub fn applies(cfg: &ValidateConfig) -> bool {
    matches!(cfg.source, Some(Address::Dir(_)) | Some(Address::S3(_)))
        || matches!(cfg.target, Some(Address::Dir(_)) | Some(Address::S3(_)))
}

fn list_dir(root: &Path, jobs: usize) -> Result<Listing> {
    let root = tree::open_root(root)?;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    tree::walk(&root, WalkOptions::default(), None, |w| {
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
    let hashed: Vec<_> = pool.install(|| entries.par_iter().map(|e| tree::hash_file(&e.abs)).collect());
    let mut files = BTreeMap::new();
    for (e, h) in entries.into_iter().zip(hashed) {
        match h {
            Ok(h) => {
                let sha = h.sha256_hex();
                files.insert(e.rel, (h.size, Some(sha)));
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
    let mut whole = super::Whole::default();
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
                if files.insert(key, (f.size, Some(f.sha256.clone()))).is_some() {
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

fn side<R: BufRead>(addr: Option<&Address>, input: &mut Option<R>, cfg: &ValidateConfig) -> Result<Listing> {
    match addr {
        Some(Address::Dir(p)) => list_dir(p, 8),
        Some(Address::Stream(Some(p))) => {
            let f = std::fs::File::open(p).ctx(ErrorKind::Source, || format!("opening {}", p.display()))?;
            list_stream(std::io::BufReader::new(f), cfg.max_line)
        }
        Some(Address::Stream(None)) | None => match input.take() {
            Some(i) => list_stream(i, cfg.max_line),
            None => Err(Error::usage("only one side can be the stream on stdin")),
        },
        Some(Address::S3(url)) => {
            let store = crate::connect::s3::S3Store::open(url, &cfg.s3)?;
            let address = crate::connect::objects::ObjectStore::address(&store);
            let mut files = BTreeMap::new();
            // Objects without the SHA-256 in their metadata are read and hashed.
            for o in store.list(16)? {
                files.insert(o.key.into_bytes(), (o.size, o.sha256));
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

pub fn run<R: BufRead, W: Write>(cfg: &ValidateConfig, input: R, out: &mut StreamWriter<W>) -> Result<Report> {
    let started_at = now_rfc3339();
    let mut input = Some(input);
    let src = side(cfg.source.as_ref(), &mut input, cfg)?;
    let Some(target) = cfg.target.as_ref() else {
        return Err(Error::usage("validating files needs a target (a dir:)"));
    };
    let dst = side(Some(target), &mut input, cfg)?;
    if src.files.is_empty() && dst.files.is_empty() && src.problems.is_empty() && dst.problems.is_empty() {
        return Err(Error::input(format!(
            "nothing was compared: {} and {} hold no files; a validation passes only on something proved equal",
            src.address, dst.address
        )));
    }
    let mut findings = Findings {
        out,
        listed: Default::default(),
        max_listed: cfg.max_listed,
        counts: BTreeMap::new(),
    };
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
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, va)), Some((kb, vb))) if ka == kb => {
                // A side that does not know the SHA-256 is listed as unverified, not changed.
                let differ = va.0 != vb.0 || matches!((&va.1, &vb.1), (Some(x), Some(y)) if x != y);
                if differ {
                    sr.changed += 1;
                    findings.add(
                        stream,
                        "changed",
                        "error",
                        detail(&[
                            ("key", json!({"path": name(ka)})),
                            ("source", json!({"size": va.0, "sha256": va.1})),
                            ("target", json!({"size": vb.0, "sha256": vb.1})),
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
                    "missing",
                    "error",
                    detail(&[("key", json!({"path": name(ka)})), ("size", json!(va.0))]),
                )?;
                a.next();
            }
            (_, Some((kb, vb))) => {
                sr.extra += 1;
                findings.add(
                    stream,
                    "extra",
                    "error",
                    detail(&[("key", json!({"path": name(kb)})), ("size", json!(vb.0))]),
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
                "unverified",
                "error",
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
    sr.status = if bad == 0 { "pass" } else { "fail" }.into();
    let status = if bad > 0 {
        "fail"
    } else if unverified.is_empty() || cfg.allow_unverified {
        "pass"
    } else {
        "unverified"
    };
    let report = Report {
        status: status.into(),
        source: src.address,
        target: dst.address,
        started_at,
        finished_at: now_rfc3339(),
        streams: vec![sr],
        findings: findings.counts.clone(),
        unverified,
        notes: Vec::new(),
    };
    let summary = json!({
        "type": "SUMMARY",
        "status": report.status,
        "source": report.source,
        "target": report.target,
        "streams": 1,
        "files_source": report.streams[0].source_rows,
        "files_target": report.streams[0].target_rows,
        "findings": report.findings,
        "unverified": report.unverified,
    });
    findings.out.write_line(summary.to_string().as_bytes(), Kind::End)?;
    if let Some(path) = &cfg.report {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text + "\n").ctx(ErrorKind::Io, || format!("writing the report {}", path.display()))?;
    }
    Ok(report)
}
