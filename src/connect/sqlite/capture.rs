//! Change capture for a SQLite database: triggers that ferry installs record the key of every
//! row inserted, updated or deleted, in commit order, into `_ferry_changes` (a `seq` that only
//! grows, the table, and up to [`MAX_KEY`] key values kept exactly as stored: no type affinity).
//! An update that changes a key records the old key too. The rows themselves are read when the
//! changes are exported (the row as it is then, or a delete if it is gone), so the triggers cost
//! one small insert per row written, and replaying a change twice changes nothing.
//!
//! Everything capture makes is named `_ferry_changes` or `_ferry_capture_*`; removing it drops
//! exactly those.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::catalog::{describe, list_tables};
use super::table_exists;
use crate::connect::CapturePlan;
use crate::connect::sql::{literal, quote};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::value::Value;

/// The table the triggers write into.
pub(crate) const CHANGES_TABLE: &str = "_ferry_changes";
/// The most key columns a captured table may have.
pub(crate) const MAX_KEY: usize = 8;
const TRIGGER_PREFIX: &str = "_ferry_capture_";
/// The triggers capture puts on each table: after insert, update and delete.
pub(crate) const TRIGGERS_PER_TABLE: usize = 3;
/// The names of capture's triggers (`?1`: [`TRIGGER_PREFIX`]), with their tables.
const TRIGGERS_SQL: &str = "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'trigger' AND substr(name, 1, length(?1)) = ?1 ORDER BY name";

/// [`TRIGGERS_SQL`] with its prefix written in (for a store that takes no parameters here).
pub(crate) fn triggers_sql() -> String {
    TRIGGERS_SQL.replace("?1", &literal(Some(TRIGGER_PREFIX)))
}

pub(crate) fn key_columns() -> Vec<String> {
    (0..MAX_KEY).map(|i| format!("k{i}")).collect()
}

/// The statements that start capturing every table of `conn` that has a primary key.
pub(crate) fn install_plan(conn: &Connection, address: &str) -> Result<CapturePlan> {
    let mut plan = CapturePlan::default();
    plan.statements.push(format!(
        "CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, {})",
        key_columns().join(", ")
    ));
    for name in list_tables(conn, address)? {
        let t = describe(conn, &name, address)?;
        if t.pk.is_empty() {
            let why = "it has no primary key: a change names its row by key";
            plan.left_out.push((name, why.into()));
            continue;
        }
        if t.pk.len() > MAX_KEY {
            plan.left_out
                .push((name, format!("its key has more than {MAX_KEY} columns")));
            continue;
        }
        let slots = key_columns()[..t.pk.len()].join(", ");
        let of = |row: &str| -> Vec<String> { t.pk.iter().map(|k| format!("{row}.{}", quote(k))).collect() };
        let (new, old) = (of("NEW").join(", "), of("OLD").join(", "));
        let changed: Vec<String> =
            t.pk.iter()
                .map(|k| format!("OLD.{0} IS NOT NEW.{0}", quote(k)))
                .collect();
        let record = |values: &str| {
            format!(
                "INSERT INTO {CHANGES_TABLE} (tbl, {slots}) VALUES ({}, {values});",
                literal(Some(&name))
            )
        };
        let trigger = |what: &str| quote(&format!("{TRIGGER_PREFIX}{name}_{what}"));
        let table = quote(&name);
        plan.statements.push(format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER INSERT ON {table} BEGIN {} END",
            trigger("insert"),
            record(&new)
        ));
        plan.statements.push(format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER UPDATE ON {table} BEGIN \
             INSERT INTO {CHANGES_TABLE} (tbl, {slots}) SELECT {}, {old} WHERE {}; {} END",
            trigger("update"),
            literal(Some(&name)),
            changed.join(" OR "),
            record(&new)
        ));
        plan.statements.push(format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER DELETE ON {table} BEGIN {} END",
            trigger("delete"),
            record(&old)
        ));
        plan.tables.push(name);
    }
    Ok(plan)
}

/// The statements that stop capturing and take away everything capture made.
pub(crate) fn remove_plan(conn: &Connection, address: &str) -> Result<Vec<String>> {
    let e = || format!("{address}: looking for ferry's capture triggers");
    let mut st = conn.prepare(TRIGGERS_SQL).ctx(ErrorKind::Source, e)?;
    let names = st
        .query_map([TRIGGER_PREFIX], |r| r.get::<_, String>(0))
        .ctx(ErrorKind::Source, e)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .ctx(ErrorKind::Source, e)?;
    Ok(removal(
        &names,
        table_exists(conn, CHANGES_TABLE).ctx(ErrorKind::Source, e)?,
    ))
}

/// Dropping capture's triggers `names`, and the change table where there is one.
pub(crate) fn removal(names: &[String], changes_table: bool) -> Vec<String> {
    let mut out: Vec<String> = names.iter().map(|n| format!("DROP TRIGGER {}", quote(n))).collect();
    if changes_table {
        out.push(format!("DROP TABLE {CHANGES_TABLE}"));
    }
    out
}

/// Whether capture's triggers are on `table`.
pub(crate) fn is_captured(conn: &Connection, address: &str, table: &str) -> Result<bool> {
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 AND substr(name, 1, length(?2)) = ?2",
            [table, TRIGGER_PREFIX],
            |r| r.get(0),
        )
        .ctx(ErrorKind::Source, || {
            format!("{address}: looking for capture's triggers")
        })?;
    Ok(n == TRIGGERS_PER_TABLE as i64)
}

/// Say that the keyed table `table` of the database at `address` is not captured, and what to run.
pub(crate) fn warn_uncaptured(table: &str, address: &str) {
    tracing::warn!(
        table = %table,
        "not captured (made after `ferry capture install`?): its changes are not followed; run `ferry capture install {address}` again"
    );
}

/// Whether the database is in WAL mode, where readers and the writer do not wait for each other.
pub(crate) fn is_wal(conn: &Connection, address: &str) -> Result<bool> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .ctx(ErrorKind::Source, || format!("{address}: reading its journal mode"))?;
    Ok(mode.eq_ignore_ascii_case("wal"))
}

/// Changes recorded and not yet trimmed, and the newest one's seq.
pub(crate) fn pending(conn: &Connection, address: &str) -> Result<Option<(u64, u64)>> {
    let e = || format!("{address}: reading {CHANGES_TABLE}");
    if !table_exists(conn, CHANGES_TABLE).ctx(ErrorKind::Source, e)? {
        return Ok(None);
    }
    let n: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {CHANGES_TABLE}"), [], |r| r.get(0))
        .ctx(ErrorKind::Source, e)?;
    Ok(Some((n as u64, newest(conn, address)?)))
}

/// The newest change's seq, as SQL: trimmed to nothing, the table still numbers on from its
/// largest seq ever (AUTOINCREMENT).
pub(crate) fn newest_sql() -> String {
    format!(
        "coalesce((SELECT max(seq) FROM {CHANGES_TABLE}), (SELECT seq FROM sqlite_sequence WHERE name = '{CHANGES_TABLE}'), 0)"
    )
}

/// The newest change's seq ([`newest_sql`]). Without counting what waits (a follower asks on
/// every pass).
fn newest(conn: &Connection, address: &str) -> Result<u64> {
    let max: Option<i64> = conn
        .query_row(&format!("SELECT {}", newest_sql()), [], |r| r.get(0))
        .ctx(ErrorKind::Source, || format!("{address}: reading {CHANGES_TABLE}"))?;
    Ok(max.unwrap_or(0) as u64)
}

/// Open the database for writing (capture's own statements, trimming), waiting for the app's
/// writers rather than failing.
pub(crate) fn open_for_writing(path: &Path, address: &str) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .ctx(ErrorKind::Source, || format!("{address}: cannot open for writing"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .ctx(ErrorKind::Source, || address.to_owned())?;
    Ok(conn)
}

/// Run statements in one transaction: all of them, or none.
pub(crate) fn apply(conn: &mut Connection, address: &str, statements: &[String]) -> Result<()> {
    let e = || format!("{address}: changing capture");
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .ctx(ErrorKind::Source, e)?;
    for s in statements {
        tx.execute_batch(s)
            .ctx(ErrorKind::Source, || format!("{address}: {s}"))?;
    }
    tx.commit().ctx(ErrorKind::Source, e)
}

/// Forget the changes up to `seq` (the target has them): the change table stays small.
pub(crate) fn trim(conn: &Connection, address: &str, seq: u64) -> Result<u64> {
    if !table_exists(conn, CHANGES_TABLE).ctx(ErrorKind::Source, || address.to_owned())? {
        return Err(not_installed(address));
    }
    let n = conn
        .execute(&format!("DELETE FROM {CHANGES_TABLE} WHERE seq <= ?1"), [seq as i64])
        .ctx(ErrorKind::Source, || format!("{address}: trimming {CHANGES_TABLE}"))?;
    Ok(n as u64)
}

/// The keys changed after `after` up to `upto`, in the order they changed: each table's name and
/// its key values (as many as its key has).
pub(crate) fn changed_keys(
    conn: &Connection,
    address: &str,
    after: u64,
    upto: u64,
    each: &mut dyn FnMut(&str, Vec<Value>) -> Result<()>,
) -> Result<()> {
    let e = || format!("{address}: reading {CHANGES_TABLE}");
    if !table_exists(conn, CHANGES_TABLE).ctx(ErrorKind::Source, e)? {
        return Err(not_installed(address));
    }
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT tbl, {} FROM {CHANGES_TABLE} WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
            key_columns().join(", ")
        ))
        .ctx(ErrorKind::Source, e)?;
    let bound = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut rows = st.query([bound(after), bound(upto)]).ctx(ErrorKind::Source, e)?;
    while let Some(r) = rows.next().ctx(ErrorKind::Source, e)? {
        let table: String = r.get(0).ctx(ErrorKind::Source, e)?;
        let key: Vec<Value> = (0..MAX_KEY)
            .map(|i| r.get_ref(i + 1).map(|v| super::from_sql(v).to_owned()))
            .collect::<rusqlite::Result<_>>()
            .ctx(ErrorKind::Source, e)?;
        each(&table, key)?;
    }
    Ok(())
}

/// The newest change's seq (0: none yet).
pub(crate) fn latest(conn: &Connection, address: &str) -> Result<u64> {
    if !table_exists(conn, CHANGES_TABLE).ctx(ErrorKind::Source, || address.to_owned())? {
        return Err(not_installed(address));
    }
    newest(conn, address)
}

pub(crate) fn not_installed(address: &str) -> Error {
    Error::new(
        ErrorKind::Source,
        format!(
            "{address}: no changes are being captured (no {CHANGES_TABLE} table): run `ferry capture install {address}` first, then copy the tables, then export the changes"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_record_every_key_written_in_order_and_removal_takes_only_capture() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE pairs (a TEXT, b BLOB, v, PRIMARY KEY (a, b)) WITHOUT ROWID;
             CREATE TABLE log (line TEXT);
             CREATE TRIGGER app_trigger AFTER INSERT ON log BEGIN SELECT 1; END;",
        )
        .unwrap();
        let plan = install_plan(&conn, "sqlite:t").unwrap();
        assert_eq!(plan.tables, ["pairs", "users"]);
        assert_eq!(plan.left_out.len(), 1, "{:?}", plan.left_out);
        apply(&mut conn, "sqlite:t", &plan.statements).unwrap();
        conn.execute_batch(
            "INSERT INTO users VALUES (1, 'a'), (2, 'b');
             UPDATE users SET name = 'c' WHERE id = 1;
             UPDATE users SET id = 3 WHERE id = 2;
             DELETE FROM users WHERE id = 1;
             INSERT INTO pairs VALUES ('x', x'00ff', 1);",
        )
        .unwrap();
        let mut seen = Vec::new();
        changed_keys(&conn, "sqlite:t", 0, u64::MAX, &mut |t, k| {
            seen.push((t.to_owned(), k[..2].to_vec()));
            Ok(())
        })
        .unwrap();
        let users = |i: i64| ("users".to_owned(), vec![Value::Integer(i), Value::Null]);
        assert_eq!(
            seen,
            vec![
                users(1),
                users(2),
                users(1),
                users(2),
                users(3),
                users(1),
                ("pairs".to_owned(), vec![Value::text("x"), Value::Blob(vec![0, 255])]),
            ]
        );
        assert_eq!(latest(&conn, "sqlite:t").unwrap(), 7);
        assert_eq!(trim(&conn, "sqlite:t", 6).unwrap(), 6);
        assert_eq!(trim(&conn, "sqlite:t", 7).unwrap(), 1);
        assert_eq!(
            pending(&conn, "sqlite:t").unwrap(),
            Some((0, 7)),
            "numbering goes on after a trim"
        );
        let drop = remove_plan(&conn, "sqlite:t").unwrap();
        assert_eq!(drop.len(), 2 * 3 + 1, "{drop:?}");
        apply(&mut conn, "sqlite:t", &drop).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%ferry%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
        let app: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'app_trigger'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(app, 1);
    }
}
