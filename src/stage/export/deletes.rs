//! `--detect-deletes TARGET` with `--incremental`: a watermark sees rows written, never rows
//! deleted. This finds them: the keys of a table in the source and in the target, both read in
//! key order (as `ferry-validate` reads them, keys in their canonical form), merged; a key only
//! the target has is a row the source deleted, and goes out as a delete. The cost is a read of
//! both sides' keys (an index scan each), paid once per table per pass.

use std::cmp::Ordering;

use crate::canon::Canon;
use crate::connect::compare::{Comparable, Scan};
use crate::error::{Error, ErrorKind, Result};
use crate::row::RowHash;
use crate::value::{Value, compare_keys};

/// Both stores, opened for reading keys.
pub(super) struct Detector {
    source: Box<dyn Comparable>,
    target: Box<dyn Comparable>,
}

impl Detector {
    pub(super) fn open(
        source: &crate::address::Address,
        target: &crate::address::Address,
        schema: Option<&str>,
    ) -> Result<Detector> {
        Ok(Detector {
            source: crate::connect::open_comparable(source, ErrorKind::Source, schema)?,
            target: crate::connect::open_comparable(target, ErrorKind::Target, schema)?,
        })
    }

    /// Each key of `stream`'s table (its key columns `key`) that the target holds and the source
    /// does not, in key order. A table the target does not have yet has none.
    pub(super) fn deleted(
        &self,
        stream: &str,
        key: &[String],
        each: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<u64> {
        let (src, tgt) = (self.source.as_ref(), self.target.as_ref());
        let (stable, ttable) = (src.table_for(stream), tgt.table_for(stream));
        let Some(described) = tgt.describe(&ttable)? else {
            return Ok(0);
        };
        // The keys compare as in a validation.
        let source_described = if src.typed() { src.describe(&stable)? } else { None };
        let canons: Vec<Canon> = key
            .iter()
            .map(|c| described.canon_against(source_described.as_ref(), c))
            .collect();
        let none = |_: &[Value]| -> RowHash { [0; 32] };
        let (sexpr, texpr) = (src.table_expr(&stable), tgt.table_expr(&ttable));
        let source = Scan {
            table: &sexpr,
            key,
            key_canon: &canons,
            cols: key,
            canons: &canons,
            hasher: &none,
            spilled: false,
            described: source_described.as_ref(),
        };
        let target = Scan {
            table: &texpr,
            described: Some(&described),
            ..source
        };
        let mut found = 0;
        src.scan(&source, |a| {
            tgt.scan(&target, |b| {
                let mut next_a = a.next().transpose()?;
                let mut next_b = b.next().transpose()?;
                while let Some((kb, ..)) = &next_b {
                    let order = match &next_a {
                        Some((ka, ..)) => compare_keys(ka, kb),
                        None => Ordering::Greater,
                    };
                    match order {
                        Ordering::Less => next_a = a.next().transpose()?,
                        Ordering::Equal => {
                            next_a = a.next().transpose()?;
                            next_b = b.next().transpose()?;
                        }
                        Ordering::Greater => {
                            let (k, ..) = next_b
                                .take()
                                .ok_or_else(|| Error::new(ErrorKind::Source, "a key vanished"))?;
                            each(k)?;
                            found += 1;
                            next_b = b.next().transpose()?;
                        }
                    }
                }
                Ok(())
            })
        })?;
        Ok(found)
    }
}
