//! Entity exports: the rows of a root (`--root users:id=42`) and, with `--follow-fks`, every row
//! that references them, transitively, in foreign-key order: one user's data as a file.
//!
//! The subset is computed by the source itself: each table gets a row filter (the same
//! `--where` an export takes) that selects its rows by subqueries on the filters of the tables it
//! references, parents before children, so a child row is in when the row it points at is. A
//! table that references itself by one column (`users.invited_by -> users.id`) takes its whole
//! chain, through a recursive query. References that close a cycle between two tables are not
//! followed back (said in the log); rows the subset's rows point at outside it (a shared `tags`
//! table, say) are not in it: import them first, or the target's foreign keys will say so.

use std::collections::HashMap;

use crate::connect::sql::quote;
use crate::connect::{Selection, StreamPlan};
use crate::error::{Error, Result};

/// `TABLE:COLUMN=VALUE`: the rows a subset starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub table: String,
    pub column: String,
    pub value: String,
}

impl Root {
    pub fn parse(spec: &str) -> Result<Root> {
        let bad = || Error::usage(format!("--root {spec:?}: expected TABLE:COLUMN=VALUE (users:id=42)"));
        let (table, rest) = spec.split_once(':').ok_or_else(bad)?;
        let (column, value) = rest.split_once('=').ok_or_else(bad)?;
        if table.is_empty() || column.is_empty() || value.is_empty() {
            return Err(bad());
        }
        Ok(Root {
            table: table.to_owned(),
            column: column.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The value as an SQL literal: a number as it is, anything else a quoted string.
    fn literal(&self) -> String {
        if self.value.parse::<i64>().is_ok() || self.value.parse::<f64>().is_ok_and(f64::is_finite) {
            self.value.clone()
        } else {
            format!("'{}'", self.value.replace('\'', "''"))
        }
    }
}

/// The selection that exports the subset: its tables, each with its row filter.
pub(crate) fn selection(plans: &[StreamPlan], roots: &[Root], follow_fks: bool) -> Result<Selection> {
    let names = || {
        plans
            .iter()
            .map(|p| p.schema.stream.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let table_of = |p: &StreamPlan| {
        p.schema
            .table
            .as_ref()
            .map(|t| match &t.schema {
                Some(s) => format!("{}.{}", quote(s), quote(&t.name)),
                None => quote(&t.name),
            })
            .unwrap_or_else(|| quote(&p.schema.stream))
    };
    let mut conds: HashMap<String, Vec<String>> = HashMap::new();
    for r in roots {
        let plan = plans
            .iter()
            .find(|p| p.schema.stream == r.table || p.schema.table.as_ref().is_some_and(|t| t.name == r.table))
            .ok_or_else(|| {
                Error::usage(format!(
                    "--root {}: no table {:?} (tables: {})",
                    r.table,
                    r.table,
                    names()
                ))
            })?;
        if !plan.schema.schema.properties.contains_key(&r.column) {
            return Err(Error::usage(format!(
                "--root {}:{}: {} has no column {:?}",
                r.table, r.column, plan.schema.stream, r.column
            )));
        }
        conds
            .entry(plan.schema.stream.clone())
            .or_default()
            .push(format!("{} = {}", quote(&r.column), r.literal()));
    }
    if follow_fks {
        // Plans come parents first: a table's filter is whole before its children read it.
        for (i, plan) in plans.iter().enumerate() {
            let me = &plan.schema.stream;
            let mut mine = conds.remove(me).unwrap_or_default();
            for fk in &plan.schema.foreign_keys {
                let parent = &fk.references.stream;
                if parent == me {
                    continue;
                }
                let Some(p) = plans.iter().position(|p| p.schema.stream == *parent) else {
                    continue;
                };
                if p > i {
                    tracing::info!(stream = %me, references = %parent, "a reference that closes a cycle is not followed back");
                    continue;
                }
                let Some(parent_cond) = conds.get(parent) else {
                    continue;
                };
                let cols = fk.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
                let refs = fk
                    .references
                    .columns
                    .iter()
                    .map(|c| quote(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                let tuple = |s: String| if fk.columns.len() > 1 { format!("({s})") } else { s };
                mine.push(format!(
                    "{} IN (SELECT {refs} FROM {} WHERE {})",
                    tuple(cols),
                    table_of(&plans[p]),
                    or(parent_cond)
                ));
            }
            if !mine.is_empty() {
                // Rows reached through the table's own one-column reference to itself, as deep
                // as the chain goes.
                for fk in plan.schema.foreign_keys.iter().filter(|fk| fk.references.stream == *me) {
                    let ([c], [r]) = (fk.columns.as_slice(), fk.references.columns.as_slice()) else {
                        tracing::warn!(stream = %me, "a reference of a table to itself over several columns is not followed");
                        continue;
                    };
                    let t = table_of(plan);
                    let (c, r) = (quote(c), quote(r));
                    let base = or(&mine);
                    mine = vec![format!(
                        "{r} IN (WITH RECURSIVE ferry_chain(k) AS (SELECT {r} FROM {t} WHERE {base} UNION SELECT ferry_t.{r} FROM {t} AS ferry_t JOIN ferry_chain ON ferry_t.{c} = ferry_chain.k) SELECT k FROM ferry_chain)"
                    )];
                }
                conds.insert(me.clone(), mine);
            }
        }
    }
    let mut tables = Vec::new();
    let mut filters = Vec::new();
    for plan in plans {
        if let Some(c) = conds.get(&plan.schema.stream) {
            tables.push(plan.schema.stream.clone());
            filters.push((plan.schema.stream.clone(), or(c)));
        }
    }
    Ok(Selection {
        tables,
        exclude: Vec::new(),
        filters,
    })
}

fn or(conds: &[String]) -> String {
    match conds {
        [one] => one.clone(),
        many => many.iter().map(|c| format!("({c})")).collect::<Vec<_>>().join(" OR "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_parse_and_quote_their_values() {
        let r = Root::parse("users:id=42").unwrap();
        assert_eq!(
            (r.table.as_str(), r.column.as_str(), r.literal()),
            ("users", "id", "42".to_owned())
        );
        assert_eq!(
            Root::parse("main.users:email=o'neil@x").unwrap().literal(),
            "'o''neil@x'"
        );
        assert_eq!(Root::parse("t:c=a=b").unwrap().value, "a=b");
        for bad in ["users", "users:id", "users:=1", ":id=1", "users:id="] {
            assert!(Root::parse(bad).is_err(), "{bad}");
        }
    }
}
