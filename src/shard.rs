//! `--shard K/N`: one of N disjoint parts of an export or a validation, which together cover
//! everything, so N machines (or N processes under a scheduler) can each move one.
//!
//! - A table is split on its first key column into N ranges of about equal rows, from bounds the
//!   source computes the same way for every shard: for integers, equal steps between the column's
//!   least and greatest values (two index reads); otherwise the values at the row positions
//!   `count * j / N` in key order. Shard K takes `bound(K-1) <= key < bound(K)`, the first shard
//!   everything below its upper bound (and keys that are NULL), the last everything from its lower
//!   bound up: each row is in exactly one shard whatever the bounds turn out to be.
//! - A table without a key goes whole to one shard, chosen by a hash of its stream name.
//! - A file goes to the shard a hash (SHA-256) of its path picks.
//!
//! The bounds are computed from the data, so shards started while the source still changes can
//! disagree on them: each shard's report carries its ranges, and merging the reports checks that
//! together they tile every table (`ferry-validate --merge`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::value::Value;

/// Part `k` (from 1) of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    pub k: u32,
    pub n: u32,
}

impl FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Shard, Error> {
        let bad = || {
            Error::usage(format!(
                "--shard {s}: expected K/N, the part K (from 1) of N parts, as in --shard 2/4"
            ))
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || k == 0 || k > n {
            return Err(Error::usage(format!(
                "--shard {s}: K must be between 1 and N (and N at least 1)"
            )));
        }
        Ok(Shard { k, n })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// A source identity (`SourceInfo::identity`) split into the identity every shard shares and
/// the shard (`K/N`), when it names one.
pub(crate) fn split_identity(identity: &str) -> (&str, Option<&str>) {
    match identity.rsplit_once(" --shard ") {
        Some((whole, shard)) => (whole, Some(shard)),
        None => (identity, None),
    }
}

/// The first eight bytes of a SHA-256, as a number: a hash that is the same on every machine
/// and in every version.
fn stable_hash(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    u64::from_be_bytes(d[..8].try_into().expect("eight bytes"))
}

impl Shard {
    /// Whether a file (by its path in the tree or bucket) is this shard's.
    pub fn owns_path(&self, path: &[u8]) -> bool {
        stable_hash(path) % u64::from(self.n) == u64::from(self.k - 1)
    }

    /// Whether a table without a key (which goes whole to one shard) is this shard's.
    pub fn owns_whole(&self, stream: &str) -> bool {
        self.owns_path(stream.as_bytes())
    }

    /// This shard's part of a column whose values run from `min` to `max`: equal steps.
    pub fn integer_range(&self, min: i64, max: i64) -> (Option<i64>, Option<i64>) {
        let (min, span) = (i128::from(min), i128::from(max) - i128::from(min) + 1);
        let bound = |j: u32| (min + span * i128::from(j) / i128::from(self.n)) as i64;
        (
            (self.k > 1).then(|| bound(self.k - 1)),
            (self.k < self.n).then(|| bound(self.k)),
        )
    }

    /// The row positions (in key order, from 0, among `count` rows with a key) whose keys bound
    /// this shard: the lower one (inclusive) and the upper one (exclusive).
    pub fn positions(&self, count: u64) -> (Option<u64>, Option<u64>) {
        let at = |j: u32| (u128::from(count) * u128::from(j) / u128::from(self.n)) as u64;
        (
            (self.k > 1).then(|| at(self.k - 1)),
            (self.k < self.n).then(|| at(self.k)),
        )
    }
}

/// A shard's part of one table: the keys from `from` (inclusive) up to `to` (exclusive) of its
/// first key column, or the whole table or none of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Range {
    /// The whole table (a table without a key, this shard's; or a single shard).
    All,
    /// None of it (a table without a key, another shard's).
    Nothing,
    Keys {
        column: String,
        from: Option<Value>,
        to: Option<Value>,
        /// Rows whose column is NULL are here too (the first shard's).
        nulls: bool,
    },
}

impl Range {
    /// The range as a SQL condition on a table's rows, `quote` writing the column's name and
    /// `literal` a bound, each in the store's own SQL; None for the whole table.
    pub fn condition(&self, quoted: &dyn Fn(&str) -> String, literal: &dyn Fn(&Value) -> String) -> Option<String> {
        let Range::Keys {
            column,
            from,
            to,
            nulls,
        } = self
        else {
            return match self {
                Range::Nothing => Some("false".into()),
                _ => None,
            };
        };
        let c = quoted(column);
        let mut parts = Vec::new();
        if let Some(v) = from {
            parts.push(format!("{c} >= {}", literal(v)));
        }
        if let Some(v) = to {
            parts.push(format!("{c} < {}", literal(v)));
        }
        match (parts.is_empty(), nulls) {
            (true, _) => None,
            (false, true) => Some(format!("({c} IS NULL OR {})", parts.join(" AND "))),
            (false, false) => Some(parts.join(" AND ")),
        }
    }

    /// The range as a report shows it: `{"column": "id", "from": 1000, "to": 2000}`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Range::All => serde_json::json!("all"),
            Range::Nothing => serde_json::json!("none"),
            Range::Keys {
                column,
                from,
                to,
                nulls,
            } => serde_json::json!({
                "column": column,
                "from": from.as_ref().map(tagged),
                "to": to.as_ref().map(tagged),
                "nulls": nulls,
            }),
        }
    }
}

/// A bound as JSON, in the self-describing form that keeps its kind (text, bytes, number).
fn tagged(v: &Value) -> serde_json::Value {
    let mut out = Vec::new();
    crate::value::write_tagged(v.as_ref(), &mut out);
    serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_read_from_k_slash_n_and_wrong_ones_are_refused() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { k: 2, n: 4 });
        assert_eq!("1/1".parse::<Shard>().unwrap().to_string(), "1/1");
        for bad in ["0/4", "5/4", "2", "a/b", "1/0", "-1/4", ""] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains("--shard"), "{bad}: {e}");
        }
    }

    #[test]
    fn integer_ranges_tile_the_span_without_gaps_or_overlaps() {
        for n in 1..=7u32 {
            for (min, max) in [(1i64, 10i64), (-5, 5), (0, 0), (i64::MIN, i64::MAX), (7, 1_000_003)] {
                let ranges: Vec<_> = (1..=n).map(|k| Shard { k, n }.integer_range(min, max)).collect();
                assert_eq!(ranges[0].0, None, "the first shard is open below");
                assert_eq!(ranges[n as usize - 1].1, None, "the last is open above");
                for w in ranges.windows(2) {
                    assert_eq!(w[0].1, w[1].0, "each upper bound is the next lower bound");
                }
                // Every value in the span falls in exactly one shard.
                for v in [min, max, min / 2 + max / 2] {
                    let owners = ranges
                        .iter()
                        .filter(|(lo, hi)| lo.is_none_or(|l| v >= l) && hi.is_none_or(|h| v < h))
                        .count();
                    assert_eq!(owners, 1, "{v} in {n} shards of {min}..={max}");
                }
            }
        }
    }

    #[test]
    fn positions_split_rows_evenly_and_files_spread_over_every_shard() {
        let s = |k| Shard { k, n: 4 };
        assert_eq!(s(1).positions(100), (None, Some(25)));
        assert_eq!(s(2).positions(100), (Some(25), Some(50)));
        assert_eq!(s(4).positions(100), (Some(75), None));
        let mut per_shard = [0u32; 4];
        for i in 0..4000 {
            let path = format!("media/{i}.jpg");
            let owners: Vec<u32> = (1..=4).filter(|&k| s(k).owns_path(path.as_bytes())).collect();
            assert_eq!(owners.len(), 1, "{path} belongs to exactly one shard");
            per_shard[owners[0] as usize - 1] += 1;
        }
        assert!(per_shard.iter().all(|&c| c > 850), "{per_shard:?}");
    }

    #[test]
    fn a_range_is_a_condition_that_keeps_nulls_in_the_first_shard() {
        let q = |c: &str| format!("\"{c}\"");
        let lit = |v: &Value| match v {
            Value::Integer(i) => i.to_string(),
            _ => "?".into(),
        };
        let keys = |from, to, nulls| Range::Keys {
            column: "id".into(),
            from,
            to,
            nulls,
        };
        assert_eq!(
            keys(None, Some(Value::Integer(10)), true).condition(&q, &lit).unwrap(),
            r#"("id" IS NULL OR "id" < 10)"#
        );
        assert_eq!(
            keys(Some(Value::Integer(10)), Some(Value::Integer(20)), false)
                .condition(&q, &lit)
                .unwrap(),
            r#""id" >= 10 AND "id" < 20"#
        );
        assert_eq!(keys(None, None, true).condition(&q, &lit), None);
        assert_eq!(Range::All.condition(&q, &lit), None);
        assert_eq!(Range::Nothing.condition(&q, &lit).unwrap(), "false");
    }
}
