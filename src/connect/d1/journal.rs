//! D1's rollback journal, as `ferry rollback` undoes it ([`InPlaceJournal`]).

use serde_json::Value as Json;

use super::client::{D1Client, Stmt};
use crate::connect::journal::{InPlaceJournal, key_json, key_pairs};
use crate::connect::sql::literal;
use crate::error::{ErrorKind, Result};
use crate::row::RowShape;

/// A D1 database whose journal a rollback undoes.
pub(crate) struct D1Journal {
    client: D1Client,
    /// The database's writer lock while it is held (`lock`).
    lock: Option<String>,
}

impl D1Journal {
    pub(crate) fn open(url: &str) -> Result<D1Journal> {
        Ok(D1Journal {
            client: D1Client::open(url, ErrorKind::Target)?,
            lock: None,
        })
    }
}

impl InPlaceJournal for D1Journal {
    fn exists(&mut self, name: &str) -> Result<bool> {
        match self.client.try_raw(&[format!("SELECT 1 FROM {name} LIMIT 0")])? {
            Ok(_) => Ok(true),
            Err(m) if m.contains("no such table") => Ok(false),
            Err(m) => Err(self.client.refused(name, &m)),
        }
    }

    fn count(&mut self, name: &str) -> Result<u64> {
        if !self.exists(name)? {
            return Ok(0);
        }
        let sql = format!("SELECT count(*) FROM {name}");
        let results = self.client.exec(&[Stmt::plain(sql.as_str())])?;
        let row = results
            .first()
            .and_then(|r| r["results"].get(0).cloned())
            .unwrap_or_default();
        Ok(row
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Json::as_u64)
            .unwrap_or(0))
    }

    fn keys(&mut self, shape: &RowShape, first_entries: &str) -> Result<Vec<(bool, Json)>> {
        let sql = format!(
            "SELECT b._ferry_inserted, json_object({}) FROM {first_entries} ORDER BY b._ferry_seq DESC",
            key_pairs(shape)
        );
        Ok(self
            .client
            .raw(&[sql])?
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let inserted = r.first().and_then(Json::as_i64) == Some(1);
                (
                    inserted,
                    key_json(r.get(1).and_then(Json::as_str).unwrap_or("").to_owned()),
                )
            })
            .collect())
    }

    fn forget_markers(&mut self, run_id: &str) -> Result<Vec<String>> {
        Ok(if self.exists("_ferry_commits")? {
            vec![format!(
                "DELETE FROM _ferry_commits WHERE run_id = {}",
                literal(Some(run_id))
            )]
        } else {
            vec![]
        })
    }

    /// The database is locked by its lock row, as an import locks it.
    fn lock(&mut self, _tables: &[String]) -> Result<()> {
        self.lock = Some(super::target::take_lock(&mut self.client)?);
        Ok(())
    }

    fn unlock(&mut self) {
        if let Some(token) = self.lock.take() {
            super::target::release_lock(&mut self.client, &token);
        }
    }

    fn apply(&mut self, _what: &str, stmts: &[String]) -> Result<Vec<u64>> {
        // One request is one transaction; the keys are checked at its end.
        let mut all = vec![Stmt::plain("PRAGMA defer_foreign_keys = on")];
        all.extend(stmts.iter().map(|s| Stmt::plain(s.as_str())));
        let results = self.client.exec(&all)?;
        Ok(results
            .iter()
            .skip(1)
            .map(|r| r["meta"]["changes"].as_u64().unwrap_or(0))
            .collect())
    }
}
