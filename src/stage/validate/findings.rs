//! What validation reports: FINDING lines on stdout, each with its stream, kind and detail.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde_json::Value as Json;

use super::hasher;
use crate::error::Result;
use crate::protocol::side::{Finding, FindingKind, Severity};
use crate::protocol::{Kind, StreamWriter};
use crate::value::Value;

pub(super) struct Findings<'w, W: Write> {
    pub(super) out: &'w mut StreamWriter<W>,
    pub(super) listed: HashMap<(String, FindingKind), usize>,
    pub(super) max_listed: usize,
    pub(super) counts: BTreeMap<FindingKind, u64>,
}

impl<'w, W: Write> Findings<'w, W> {
    /// Findings written to `out`, at most `max_listed` of each kind per stream.
    pub(super) fn new(out: &'w mut StreamWriter<W>, max_listed: usize) -> Self {
        Findings {
            out,
            listed: HashMap::new(),
            max_listed,
            counts: BTreeMap::new(),
        }
    }

    /// Record a finding; it is listed on stdout while under the cap for its stream and kind.
    pub(super) fn add(
        &mut self,
        stream: &str,
        kind: FindingKind,
        severity: Severity,
        detail: serde_json::Map<String, Json>,
    ) -> Result<()> {
        *self.counts.entry(kind).or_default() += 1;
        let n = self.listed.entry((stream.to_owned(), kind)).or_default();
        *n += 1;
        if *n > self.max_listed {
            return Ok(());
        }
        let line = Finding {
            stream: stream.to_owned(),
            kind,
            severity,
            detail,
        };
        self.out.write_json(&line, Kind::Other)
    }
}

/// A finding's fields; null ones (a line number the side does not have) are left out.
pub(super) fn detail(pairs: &[(&str, Json)]) -> serde_json::Map<String, Json> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A key as a finding shows it: a JSON object of its columns.
pub(super) fn key_json(cols: &[String], vals: &[Value]) -> Json {
    match hasher("", cols) {
        Ok(s) => s.columns_json(&(0..cols.len()).collect::<Vec<_>>(), |i| vals[i].as_ref()),
        Err(_) => Json::Null,
    }
}
