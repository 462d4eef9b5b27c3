//! What validation asks of a table store, behind one trait ([`Comparable`]): its tables, a
//! table's columns and constraints, counts, and its rows in key order with canonical keys and
//! row hashes. Each SQL store implements it in its own folder (`sqlite/compare.rs`,
//! `postgres/compare.rs`; D1 is read into a temporary SQLite file first), and
//! [`super::open_comparable`] picks one by address. The SQL the checks run is the same
//! everywhere; what differs is how it is executed and how rows come back.

use rusqlite::Connection;

use super::sql::quote;
use super::table_name_for;
use crate::canon::Canon;
use crate::error::{Context, ErrorKind, Result};
use crate::protocol::{ForeignKey, Index, Schema, Unique};
use crate::row::RowHash;
use crate::shard::Range;
use crate::value::Value;

/// One row as the merge sees it: its canonical key, its hash, its input line (a stream's), and
/// its canonical values when the side has them (to name the columns of a changed row).
pub(crate) type MergeRow = (Vec<Value>, RowHash, Option<i64>, Option<Vec<Value>>);

/// What a scan hands its reader: the rows, in key order.
pub(crate) type RowSink<'f> = &'f mut dyn FnMut(&mut dyn Iterator<Item = Result<MergeRow>>) -> Result<()>;

/// What numbers a table's new rows: the counter of one column (a PostgreSQL sequence it owns,
/// SQLite's rowid), and where it stands.
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    pub(crate) column: String,
    /// The last number given out as the next insert sees it: a sequence's last value (None: it
    /// never gave one); SQLite's largest rowid, or with AUTOINCREMENT the larger of that and its
    /// counter.
    pub(crate) last: Option<i64>,
    /// The largest value in the column now.
    pub(crate) max: Option<i64>,
    /// The statement that moves it to `{n}`, where it can be moved.
    pub(crate) fix: Option<String>,
}

/// A table store a validation reads.
pub(crate) trait Comparable {
    /// The store's address, as reports show it (no password).
    fn address(&self) -> &str;
    /// Tables, without the store's and ferry's own.
    fn tables(&self) -> Result<Vec<String>>;
    /// The table a stream is in.
    fn table_for(&self, stream: &str) -> String {
        table_name_for(stream).to_owned()
    }
    /// A table's expression in SQL (`main."t"`, `"public"."t"`).
    fn table_expr(&self, table: &str) -> String;
    /// A table's columns (and for SQLite its keys and constraints), or None when it is not there.
    fn describe(&self, table: &str) -> Result<Option<Described>>;
    fn count_where(&self, table: &str, cond: &str) -> Result<u64>;
    fn count(&self, table: &str) -> Result<u64> {
        self.count_where(table, "true")
    }
    /// Groups of rows sharing the same non-null values in `cols`, with their sizes (at most
    /// `limit` groups).
    fn duplicates(&self, table: &str, cols: &[String], limit: usize) -> Result<Vec<(Vec<Value>, u64)>>;
    /// Rows of `child` whose non-null reference finds no row in `parent`.
    fn orphans(&self, child: &str, cols: &[String], parent: &str, pcols: &[String]) -> Result<u64> {
        let notnull = cols
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let join = cols
            .iter()
            .zip(pcols)
            .map(|(c, p)| format!("p.{} = c.{}", quote(p), quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let cond = format!("{notnull} AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {join})");
        self.count_where(&format!("{child} AS c"), &cond)
    }
    /// Read a table (or a spill) as `s` says, handing `f` its rows.
    fn scan_rows(&self, s: &Scan<'_>, f: RowSink<'_>) -> Result<()>;
    /// Whether the store's declared column types decide how its values compare, and its streams
    /// are the ones an export of it names (PostgreSQL's).
    fn typed(&self) -> bool {
        false
    }
    /// The counters that number a table's new rows (none where it has none, or they cannot be
    /// read: a note says so).
    fn counters(&self, _table: &str) -> Result<Vec<Counter>> {
        Ok(vec![])
    }
    /// A shard's range (see [`crate::shard`]) of a table this side `described`, as a condition in
    /// this store's SQL, text compared by its bytes (None: every row).
    fn range_condition(&self, described: &Described, range: &Range) -> Option<String>;
    /// The rows of the table expression `expr` that meet `cond`, as a table expression of their
    /// own (a temporary view, gone with the connection).
    fn restricted(&self, expr: &str, cond: &str) -> Result<String>;
}

/// A name for a temporary view, unique in this process.
pub(crate) fn view_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "ferry_shard_{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl dyn Comparable + '_ {
    /// Read a table (or a spill) as `s` says, handing `f` an iterator of rows with canonical keys
    /// and row hashes; what `f` returns.
    pub(crate) fn scan<R>(
        &self,
        s: &Scan<'_>,
        f: impl FnOnce(&mut dyn Iterator<Item = Result<MergeRow>>) -> Result<R>,
    ) -> Result<R> {
        let mut f = Some(f);
        let mut out = None;
        self.scan_rows(s, &mut |rows| {
            let f = f.take().expect("a scan hands its rows over once");
            out = Some(f(rows)?);
            Ok(())
        })?;
        Ok(out.expect("a scan hands its rows over"))
    }
}

/// Table metadata as either side describes it.
#[derive(Debug, Clone)]
pub(crate) struct TableMeta {
    pub(crate) stream: String,
    pub(crate) columns: Vec<String>,
    pub(crate) key: Vec<String>,
    pub(crate) unique: Vec<Vec<String>>,
    pub(crate) fks: Vec<ForeignKey>,
}

/// The column sets whose values are unique: unique constraints, and unique indexes on plain
/// columns that cover every row (no WHERE).
fn unique_sets(unique: &[Unique], indexes: &[Index]) -> Vec<Vec<String>> {
    let from_indexes = indexes
        .iter()
        .filter(|i| i.unique && i.where_sql.is_none() && !i.columns.is_empty());
    unique
        .iter()
        .map(|u| u.columns.clone())
        .chain(from_indexes.map(|i| i.columns.clone()))
        .collect()
}

/// `SELECT <selected>, count(*)` of the groups of rows of `table` sharing the same non-null
/// values in `cols`, at most `limit` groups; `select` is how a store reads a column back.
pub(crate) fn duplicates_sql(table: &str, cols: &[String], limit: usize, select: impl Fn(&str) -> String) -> String {
    let list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    let selected = cols.iter().map(|c| select(c)).collect::<Vec<_>>().join(", ");
    let notnull = cols
        .iter()
        .map(|c| format!("{} IS NOT NULL", quote(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "SELECT {selected}, count(*) FROM {table} WHERE {notnull} GROUP BY {list} HAVING count(*) > 1 LIMIT {limit}"
    )
}

impl TableMeta {
    pub(crate) fn from_table(t: &super::sqlite::catalog::TableInfo) -> TableMeta {
        TableMeta {
            stream: format!("main.{}", t.name),
            columns: t.stored_columns().map(|c| c.name.clone()).collect(),
            key: t.pk.clone(),
            unique: unique_sets(&t.unique, &t.indexes),
            fks: t.foreign_keys.clone(),
        }
    }

    pub(crate) fn from_schema(s: &Schema) -> TableMeta {
        TableMeta {
            stream: s.stream.clone(),
            columns: s.schema.properties.keys().cloned().collect(),
            key: s.key_properties.clone(),
            unique: unique_sets(&s.unique, &s.indexes),
            fks: s.foreign_keys.clone(),
        }
    }

    /// Columns worth keeping for a stream spilled to disk: key, constrained and referenced ones.
    pub(crate) fn constrained(&self) -> Vec<String> {
        let mut cols: Vec<String> = Vec::new();
        let mut add = |c: &String| {
            if !cols.contains(c) && self.columns.contains(c) {
                cols.push(c.clone());
            }
        };
        self.key.iter().for_each(&mut add);
        self.unique.iter().flatten().for_each(&mut add);
        self.fks.iter().flat_map(|f| &f.columns).for_each(&mut add);
        if self.key.is_empty() {
            self.columns.iter().for_each(&mut add);
        }
        cols
    }
}

/// A table as one side has it.
pub(crate) struct Described {
    /// Column names and types (declared for SQLite, `format_type()` for PostgreSQL), in order.
    pub(crate) columns: Vec<(String, String)>,
    /// Columns marked as holding an SQLite dynamic column (PostgreSQL jsonb).
    pub(crate) dynamic: Vec<String>,
    /// Keys and constraints (SQLite; PostgreSQL reading comes with PostgreSQL export).
    pub(crate) meta: Option<TableMeta>,
}

impl Described {
    /// The canonical form of each named column when this side is the one that decides it.
    pub(crate) fn canon_of(&self, column: &str) -> Canon {
        match self.columns.iter().find(|(n, _)| n == column) {
            Some((n, t)) if self.meta.is_none() => Canon::for_pg_type(t, self.dynamic.contains(n)),
            _ => Canon::Exact,
        }
    }

    /// How a column compares when this table (the target) is compared with a table the source
    /// describes (`source`, a PostgreSQL one): the target's canonical form, else the source's;
    /// money as the decimal it is, whatever the other side's type.
    pub(crate) fn canon_against(&self, source: Option<&Described>, column: &str) -> Canon {
        match (self.canon_of(column), source.map(|s| s.canon_of(column))) {
            (Canon::Exact, Some(s)) => s,
            (_, Some(Canon::Money)) => Canon::Money,
            (canon, _) => canon,
        }
    }

    /// The expression that reads a column of this (PostgreSQL) table in its canonical form.
    pub(crate) fn select(&self, column: &str) -> String {
        match self.columns.iter().find(|(n, _)| n == column) {
            Some((n, t)) => Canon::for_pg_type(t, self.dynamic.contains(n)).pg_select(&quote(n)),
            None => quote(column),
        }
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.columns.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// What a scan reads: `cols` of `table` (or the spill's `_ferry_h`/`_ferry_line` when
/// `spilled`) ordered by `key`, each key made canonical by `key_canon`, each row hashed by
/// `hasher` over the values made canonical by `canons`.
#[derive(Clone, Copy)]
pub(crate) struct Scan<'a> {
    pub(crate) table: &'a str,
    pub(crate) key: &'a [String],
    pub(crate) key_canon: &'a [Canon],
    pub(crate) cols: &'a [String],
    pub(crate) canons: &'a [Canon],
    pub(crate) hasher: &'a dyn Fn(&[Value]) -> RowHash,
    pub(crate) spilled: bool,
    /// How the PostgreSQL side describes its columns (how to select each).
    pub(crate) described: Option<&'a Described>,
}

/// A private on-disk database that SQLite deletes on close (an empty path), set up for bulk
/// writes nobody needs to survive a crash.
pub(crate) fn temporary_db() -> Result<Connection> {
    let conn = Connection::open("").ctx(ErrorKind::Io, || "opening a temporary database")?;
    conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384;")
        .ctx(ErrorKind::Io, || "configuring a temporary database")?;
    Ok(conn)
}
