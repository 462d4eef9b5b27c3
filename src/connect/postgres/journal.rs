//! PostgreSQL's rollback journal, as `ferry rollback` undoes it ([`InPlaceJournal`]).

use serde_json::Value as Json;

use super::catalog::{LOCK_HOLDER_SQL, try_lock_sql};
use super::conn::{PgAddress, pg_error};
use super::read::PgConn;
use crate::connect::journal::{InPlaceJournal, key_json, key_pairs};
use crate::connect::sql::literal;
use crate::error::Result;
use crate::row::RowShape;

/// A PostgreSQL database whose journal a rollback undoes.
pub(crate) struct PgJournal {
    conn: PgConn,
    /// As the state file recorded it: no password.
    address: String,
}

impl PgJournal {
    pub(crate) fn open(url: &str) -> Result<PgJournal> {
        let a = PgAddress::parse(url, "ferry-rollback")?;
        Ok(PgJournal {
            conn: PgConn::open(&a)?,
            address: a.redacted,
        })
    }

    /// Take ferry's lock on a table for this session, or say who holds it.
    fn lock_table(&mut self, qualified: &str) -> Result<()> {
        let sql = format!("SELECT {}", try_lock_sql(qualified));
        let got: bool = self
            .conn
            .query_one(&sql, &[])
            .map(|r| r.get(0))
            .map_err(|e| pg_error(&self.address, "locking a table", e))?;
        if got {
            return Ok(());
        }
        let who = self
            .conn
            .query_one(LOCK_HOLDER_SQL, &[&qualified])
            .map_or_else(|_| "another session".to_owned(), |r| r.get(0));
        Err(crate::lock::busy(
            &format!("table {qualified} of {}", self.address),
            &who,
        ))
    }
}

impl InPlaceJournal for PgJournal {
    fn exists(&mut self, name: &str) -> Result<bool> {
        self.conn
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .map(|r| r.get(0))
            .map_err(|e| pg_error(&self.address, "looking up a table", e))
    }

    fn count(&mut self, name: &str) -> Result<u64> {
        if !self.exists(name)? {
            return Ok(0);
        }
        let sql = format!("SELECT count(*) FROM {name}");
        self.conn
            .query_one(&sql as &str, &[])
            .map(|r| r.get::<_, i64>(0) as u64)
            .map_err(|e| pg_error(&self.address, "counting a table's rows", e))
    }

    fn keys(&mut self, shape: &RowShape, first_entries: &str) -> Result<Vec<(bool, Json)>> {
        let sql = format!(
            "SELECT b._ferry_inserted, json_build_object({})::text FROM {first_entries} ORDER BY b._ferry_seq DESC",
            key_pairs(shape)
        );
        Ok(self
            .conn
            .query(&sql, &[])
            .map_err(|e| pg_error(&self.address, "reading the rollback journal", e))?
            .into_iter()
            .map(|r| (r.get(0), key_json(r.get(1))))
            .collect())
    }

    fn forget_markers(&mut self, run_id: &str) -> Result<Vec<String>> {
        let literal = literal(Some(run_id));
        Ok(self
            .conn
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relname = '_ferry_commits' AND c.relkind = 'r'",
                &[],
            )
            .map_err(|e| pg_error(&self.address, "looking up the commit markers", e))?
            .iter()
            .map(|r| format!("DELETE FROM {} WHERE run_id = {literal}", r.get::<_, String>(0)))
            .collect())
    }

    fn insert_keeping_identity(&self) -> &'static str {
        " OVERRIDING SYSTEM VALUE"
    }

    /// The tables are locked as the import locks them, for this session.
    fn lock(&mut self, tables: &[String]) -> Result<()> {
        tables.iter().try_for_each(|t| self.lock_table(t))
    }

    fn apply(&mut self, what: &str, stmts: &[String]) -> Result<Vec<u64>> {
        // Replica mode fires no foreign-key triggers: no cascade, no order between tables. Only
        // a superuser may set it; otherwise the keys hold, and undoing newest first keeps them.
        if self
            .conn
            .batch_execute("SET session_replication_role = replica")
            .is_err()
        {
            tracing::info!(
                "not allowed to set session_replication_role: foreign keys stay checked during the rollback"
            );
        }
        let changed = self
            .conn
            .execute_in_transaction(stmts)
            .map_err(|e| pg_error(&self.address, what, e))?;
        let _ = self.conn.batch_execute("RESET session_replication_role");
        Ok(changed)
    }
}
