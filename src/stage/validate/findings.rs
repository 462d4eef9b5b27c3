//! What validation reports: FINDING lines on stdout, each with its stream, kind and detail.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde_json::{Value as Json, json};

use super::hasher;
use crate::error::Result;
use crate::protocol::{Kind, StreamWriter};
use crate::value::Value;

pub(super) struct Findings<'w, W: Write> {
    pub(super) out: &'w mut StreamWriter<W>,
    pub(super) listed: HashMap<(String, String), usize>,
    pub(super) max_listed: usize,
    pub(super) counts: BTreeMap<String, u64>,
}

impl<W: Write> Findings<'_, W> {
    /// Record a finding; it is listed on stdout while under the cap for its stream and kind.
    pub(super) fn add(
        &mut self,
        stream: &str,
        kind: &str,
        severity: &str,
        mut detail: serde_json::Map<String, Json>,
    ) -> Result<()> {
        *self.counts.entry(kind.to_owned()).or_default() += 1;
        let n = self.listed.entry((stream.to_owned(), kind.to_owned())).or_default();
        *n += 1;
        if *n > self.max_listed {
            return Ok(());
        }
        let mut line = serde_json::Map::new();
        line.insert("type".into(), json!("FINDING"));
        line.insert("stream".into(), json!(stream));
        line.insert("kind".into(), json!(kind));
        line.insert("severity".into(), json!(severity));
        line.append(&mut detail);
        let text = Json::Object(line).to_string();
        self.out.write_line(text.as_bytes(), Kind::Other)
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

/// Finding kinds that are reported but do not fail a validation by themselves.
pub(super) const WARNING_KINDS: &[&str] = &[
    "column_extra",
    "fk_orphans_in_source",
    "unique_violation_in_source",
    "key_null_in_source",
];

/// A key as a finding shows it: a JSON object of its columns.
pub(super) fn key_json(cols: &[String], vals: &[Value]) -> Json {
    match hasher("", cols) {
        Ok(s) => s.columns_json(&(0..cols.len()).collect::<Vec<_>>(), |i| vals[i].as_ref()),
        Err(_) => Json::Null,
    }
}
