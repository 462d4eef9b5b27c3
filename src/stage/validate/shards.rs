//! `ferry-validate --merge`: one verdict for a sharded migration from its shards' reports
//! (`ferry-validate --shard K/N ... --report`). It passes only when every shard of the same N
//! compared the same source and target and passed, each shard once, and the parts they compared
//! tile every table: the first open below, the last open above, each upper bound the next
//! shard's lower bound (a table without a key whole in exactly one shard). Shards whose bounds
//! were computed from different data (the source changed between them) do not tile, and fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::side::Verdict;
use crate::shard::Shard;

/// The shards' reports merged.
#[derive(Debug, Default, Serialize)]
pub struct Merged {
    pub status: Verdict,
    pub source: String,
    pub target: String,
    pub shards: u32,
    /// Per stream: rows on each side, summed over the shards.
    pub streams: BTreeMap<String, (u64, u64)>,
    /// What keeps the verdict from passing, one line each.
    pub problems: Vec<String>,
}

/// One shard's report, as far as the merge reads it.
struct ShardReport {
    path: PathBuf,
    shard: Shard,
    status: String,
    source: String,
    target: String,
    ranges: BTreeMap<String, Json>,
    rows: BTreeMap<String, (u64, u64)>,
}

fn read(path: &Path) -> Result<ShardReport> {
    let what = || format!("reading the report {}", path.display());
    let text = std::fs::read_to_string(path).ctx(ErrorKind::Usage, what)?;
    let r: Json = serde_json::from_str(&text).ctx(ErrorKind::Usage, what)?;
    let not_a_shard = || {
        Error::usage(format!(
            "{} is not a shard's report: make each with ferry-validate SOURCE TARGET --shard K/N --report PATH",
            path.display()
        ))
    };
    let part = r.get("shard").ok_or_else(not_a_shard)?;
    let shard: Shard = serde_json::from_value(part["shard"].clone()).map_err(|_| not_a_shard())?;
    let ranges = part["ranges"]
        .as_object()
        .ok_or_else(not_a_shard)?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let text_of = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    let rows = r["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let n = |k: &str| s[k].as_u64().unwrap_or(0);
                    (text_of_stream(s), (n("source_rows"), n("target_rows")))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ShardReport {
        path: path.to_owned(),
        shard,
        status: text_of("status"),
        source: text_of("source"),
        target: text_of("target"),
        ranges,
        rows,
    })
}

fn text_of_stream(s: &Json) -> String {
    s["stream"].as_str().unwrap_or_default().to_owned()
}

/// Merge the reports at `paths` into one verdict.
pub fn merge(paths: &[PathBuf]) -> Result<Merged> {
    let reports: Vec<ShardReport> = paths.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let first = reports
        .first()
        .ok_or_else(|| Error::usage("--merge needs the shards' reports"))?;
    let mut m = Merged {
        source: first.source.clone(),
        target: first.target.clone(),
        shards: first.shard.n,
        ..Default::default()
    };
    let n = first.shard.n;
    // A shard that found differences makes the whole different; anything else wrong leaves it
    // unproved.
    let mut different = false;
    for r in &reports {
        let at = r.path.display();
        if r.shard.n != n {
            m.problems
                .push(format!("{at} is shard {} where the others are of {n}", r.shard));
        }
        if (r.source.as_str(), r.target.as_str()) != (m.source.as_str(), m.target.as_str()) {
            m.problems.push(format!(
                "{at} compared {} with {}, not {} with {}",
                r.source, r.target, m.source, m.target
            ));
        }
        if r.status != "pass" {
            different = true;
            m.problems.push(format!(
                "shard {} did not pass ({}): its counts are in {at}, the keys in that validation's FINDING lines",
                r.shard, r.status
            ));
        }
    }
    let mut by_k: BTreeMap<u32, &ShardReport> = BTreeMap::new();
    for r in &reports {
        if let Some(other) = by_k.get(&r.shard.k) {
            m.problems.push(format!(
                "shard {} is there twice ({} and {})",
                r.shard,
                other.path.display(),
                r.path.display()
            ));
            continue;
        }
        by_k.insert(r.shard.k, r);
        for (stream, (s, t)) in &r.rows {
            let e = m.streams.entry(stream.clone()).or_default();
            e.0 += s;
            e.1 += t;
        }
    }
    let missing: Vec<String> = (1..=n)
        .filter(|k| !by_k.contains_key(k))
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        m.problems.push(format!(
            "no report for shard {}: its part was not compared",
            missing.join(", ")
        ));
    } else {
        let streams: std::collections::BTreeSet<&String> = reports.iter().flat_map(|r| r.ranges.keys()).collect();
        for stream in streams {
            let parts: Vec<Option<&Json>> = by_k.values().map(|r| r.ranges.get(stream)).collect();
            if let Some(problem) = gap(&parts) {
                m.problems.push(format!("{stream}: {problem}"));
            }
        }
    }
    m.status = match (different, m.problems.is_empty()) {
        (true, _) => Verdict::Fail,
        (false, true) => Verdict::Pass,
        (false, false) => Verdict::Unverified,
    };
    Ok(m)
}

/// Why the shards' parts of one stream (in shard order) do not tile it, if they do not.
fn gap(parts: &[Option<&Json>]) -> Option<String> {
    if let Some(k) = parts.iter().position(Option::is_none) {
        return Some(format!("shard {} did not compare it", k + 1));
    }
    let parts: Vec<&Json> = parts.iter().flatten().copied().collect();
    if parts.iter().all(|p| *p == "hash of the path") {
        return None;
    }
    let whole: Vec<usize> = (0..parts.len()).filter(|&i| parts[i] == "all").collect();
    let none = parts.iter().filter(|p| **p == "none").count();
    if whole.len() + none == parts.len() {
        return match whole.len() {
            1 => None,
            0 => Some("no shard compared it".into()),
            _ => Some("several shards compared all of it".into()),
        };
    }
    let n = parts.len();
    for (i, p) in parts.iter().enumerate() {
        if !p.is_object() {
            return Some(format!(
                "shard {} compared {p} where the others compared key ranges",
                i + 1
            ));
        }
        if p["column"] != parts[0]["column"] {
            return Some("the shards split it on different columns".into());
        }
        if i == 0 && (!p["from"].is_null() || p["nulls"] != json!(true)) {
            return Some("the first shard's part does not start at the beginning".into());
        }
        if i == n - 1 && !p["to"].is_null() {
            return Some(format!("the last shard's part ends at {}", p["to"]));
        }
        if i + 1 < n && (p["to"].is_null() || p["to"] != parts[i + 1]["from"]) {
            return Some(format!(
                "shard {} ends at {} but shard {} starts at {}: the source changed between them (run every shard's validation on the same data)",
                i + 1,
                p["to"],
                i + 2,
                parts[i + 1]["from"]
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_that_tile_pass_and_gaps_overlaps_and_doubles_are_named() {
        let k = |from: Json, to: Json, nulls: bool| json!({"column": "id", "from": from, "to": to, "nulls": nulls});
        let a = k(Json::Null, json!({"int": 10}), true);
        let b = k(json!({"int": 10}), json!({"int": 20}), false);
        let c = k(json!({"int": 20}), Json::Null, false);
        assert_eq!(gap(&[Some(&a), Some(&b), Some(&c)]), None);
        let b2 = k(json!({"int": 11}), json!({"int": 20}), false);
        assert!(
            gap(&[Some(&a), Some(&b2), Some(&c)])
                .unwrap()
                .contains("the source changed")
        );
        assert!(gap(&[Some(&a), None, Some(&c)]).unwrap().contains("shard 2 did not"));
        assert!(gap(&[Some(&b), Some(&c)]).unwrap().contains("first shard"));
        let (all, none) = (json!("all"), json!("none"));
        assert_eq!(gap(&[Some(&none), Some(&all), Some(&none)]), None);
        assert!(gap(&[Some(&all), Some(&all)]).unwrap().contains("several"));
        assert!(gap(&[Some(&none), Some(&none)]).unwrap().contains("no shard"));
    }
}
