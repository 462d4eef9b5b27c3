//! What ferry asks a PostgreSQL server about its tables: their columns and names, and ferry's
//! lock on a table (who holds it).

use std::collections::BTreeSet;

use super::read::PgConn;
use crate::connect::sql::literal;

/// The expression that takes ferry's lock on a table (by its qualified SQL name) for the session,
/// true when it did: a session advisory lock, so a process that dies lets go of it.
pub(crate) fn try_lock_sql(qualified: &str) -> String {
    format!(
        "pg_try_advisory_lock(hashtext('ferry'), hashtext({}))",
        literal(Some(qualified))
    )
}

/// The same lock, shared: the shards of one export hold it together, and it keeps out whoever
/// asks for it whole (a plain import, a rollback).
pub(crate) fn try_lock_shared_sql(qualified: &str) -> String {
    format!(
        "pg_try_advisory_lock_shared(hashtext('ferry'), hashtext({}))",
        literal(Some(qualified))
    )
}

/// Who holds ferry's lock on the table `$1`: its application name (ferry's say which program,
/// process and host), server pid, and since when.
pub(crate) const LOCK_HOLDER_SQL: &str = "SELECT format('%s (server pid %s, connected from %s since %s)',
        coalesce(nullif(a.application_name, ''), 'a session'), a.pid,
        coalesce(host(a.client_addr), 'a local socket'), date_trunc('second', a.backend_start))
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = (hashtext('ferry')::bigint & 4294967295)::oid
      AND l.objid = (hashtext($1)::bigint & 4294967295)::oid
    LIMIT 1";

/// SQL: whether the type `t` (a `pg_type` row) is an array of composites. Such a column travels
/// as PostgreSQL's array text, not as JSON (whose objects no array literal reads back): the export
/// and validate read it so alike.
pub(crate) const COMPOSITE_ARRAY: &str =
    "(t.typcategory = 'A' AND EXISTS (SELECT 1 FROM pg_type et WHERE et.oid = t.typelem AND et.typtype = 'c'))";

/// Columns of a table and whether each is nullable, for reading (validate).
pub(crate) fn table_columns(
    client: &PgConn,
    qualified: &str,
) -> std::result::Result<Option<Vec<(String, String)>>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    // A domain reads as its base type; an array of composites as text, as the export reads it;
    // generated columns are computed, never compared.
    let sql = format!(
        "SELECT a.attname::text,
                CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
                     WHEN {COMPOSITE_ARRAY} THEN 'text'
                     ELSE format_type(a.atttypid, a.atttypmod) END
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
         ORDER BY a.attnum"
    );
    let rows = client.query(sql.as_str(), &[&qualified])?;
    Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
}

/// Names of the tables in a schema (without ferry's own).
pub(crate) fn list_tables(
    client: &PgConn,
    schema: &str,
) -> std::result::Result<BTreeSet<String>, tokio_postgres::Error> {
    let rows = client.query(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE '\\_ferry\\_%'",
        &[&schema],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether a column of type `t` (as `format_type` writes it) holds text, which a shard's range
/// compares by its bytes (`COLLATE "C"`, SQLite's order) so every store splits it alike.
pub(crate) fn text_like(t: &str) -> bool {
    [
        "text",
        "character varying",
        "character",
        "varchar",
        "char",
        "citext",
        "name",
    ]
    .iter()
    .any(|p| t == *p || t.starts_with(&format!("{p}(")))
}

/// A column in a shard's range condition: text in byte order.
pub(crate) fn in_byte_order(quoted: &str, t: &str) -> String {
    if text_like(t) {
        format!("{quoted} COLLATE \"C\"")
    } else {
        quoted.to_owned()
    }
}

/// A shard's bound as a literal for a column of type `t`.
pub(crate) fn literal_of(v: &crate::value::Value, t: &str) -> String {
    use crate::value::Value;
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => format!("{f:e}::float8"),
        Value::Blob(b) => format!("'\\x{}'::bytea", hex::encode(b)),
        Value::Text(b) if text_like(t) => literal(Some(&String::from_utf8_lossy(b))),
        Value::Text(b) => format!("{}::{t}", literal(Some(&String::from_utf8_lossy(b)))),
    }
}
