//! SQLite as a target: rows go in through prepared multi-row INSERTs inside one transaction per
//! STATE; the commit markers (`_ferry_commits`) are written in the same transaction, so what is
//! in the table and what the marker says can never disagree. Foreign keys are not enforced while
//! loading (the validator checks them after); secondary indexes are built once a stream is
//! complete.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::catalog::describe;
use super::ddl::{MARKER_DDL, create_table_sql, index_sql, sqlite_type_for};
use super::{MARKER_TABLE, row_values, table_exists};
use crate::connect::sql::{conflict_clause, key_condition, quote};
use crate::connect::{
    LoadOptions, Marker, OnConflict, PlanCounts, Prepared, Reject, Report, RowBatch, Target, table_name_for,
};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{Schema, now_rfc3339};
use crate::row::RowShape;
use crate::value::Value;

struct TargetStream {
    table: String,
    /// `INSERT ... VALUES (...)` for `chunk` rows, and for one row.
    insert_many: String,
    insert_one: String,
    /// What an insert does to a row whose key is there: skip it, overwrite it, or fail.
    on_found: OnConflict,
    chunk: usize,
    key_lookup: Option<String>,
    /// `SELECT <every column> FROM table WHERE <key> IS ...`: a row's before-image.
    row_lookup: Option<String>,
    /// `SELECT <every column> FROM table WHERE (<key>) IN (VALUES `: many rows' before-images.
    rows_lookup: Option<String>,
    /// `DELETE FROM table WHERE <key> IS ...`: a change stream's delete.
    delete: Option<String>,
}

impl TargetStream {
    /// The statements that write a stream's rows into `table` and look its keys up there.
    fn new(shape: &RowShape, table: String, on_conflict: OnConflict) -> TargetStream {
        let cols: Vec<String> = shape.columns.iter().map(|c| quote(&c.name)).collect();
        let keys: Vec<String> = shape.key_names().into_iter().map(quote).collect();
        let conflict = conflict_clause(shape, on_conflict);
        let ncols = shape.len().max(1);
        let chunk = (32_000 / ncols).clamp(1, 100);
        let placeholders = format!("({})", vec!["?"; shape.len()].join(", "));
        let head = if shape.is_empty() {
            format!("INSERT INTO {} DEFAULT VALUES", quote(&table))
        } else {
            format!("INSERT INTO {} ({}) VALUES ", quote(&table), cols.join(", "))
        };
        let insert_many = if shape.is_empty() {
            head.clone()
        } else {
            format!("{head}{}{conflict}", vec![placeholders.as_str(); chunk].join(", "))
        };
        let insert_one = if shape.is_empty() {
            head.clone()
        } else {
            format!("{head}{placeholders}{conflict}")
        };
        let row_lookup = (!keys.is_empty() && !cols.is_empty()).then(|| {
            format!(
                "SELECT {} FROM {} WHERE {}",
                cols.join(", "),
                quote(&table),
                key_condition(&keys)
            )
        });
        let rows_lookup = (!keys.is_empty() && !cols.is_empty()).then(|| {
            format!(
                "SELECT {} FROM {} WHERE ({}) IN (VALUES ",
                cols.join(", "),
                quote(&table),
                keys.join(", ")
            )
        });
        let key_lookup =
            (!keys.is_empty()).then(|| format!("SELECT 1 FROM {} WHERE {}", quote(&table), key_condition(&keys)));
        let delete =
            (!keys.is_empty()).then(|| format!("DELETE FROM {} WHERE {}", quote(&table), key_condition(&keys)));
        // An overwrite with nothing but the key to set leaves the row as it was.
        let on_found = match on_conflict {
            OnConflict::Overwrite if shape.key.len() == shape.columns.len() => OnConflict::Skip,
            other => other,
        };
        TargetStream {
            table,
            insert_many,
            insert_one,
            on_found,
            chunk,
            key_lookup,
            row_lookup,
            rows_lookup,
            delete,
        }
    }
}

pub(crate) struct SqliteTarget {
    conn: Connection,
    /// One writer at a time (none for a dry run): held until the target is dropped.
    _lock: Option<crate::lock::FileLock>,
    address: String,
    dry_run: bool,
    in_tx: bool,
    streams: HashMap<String, TargetStream>,
    /// The database file this import made, until its first commit: a run that ends before
    /// committing anything (empty input, an error at the first line) takes it away again, so
    /// nothing half-made is left. (The lock file stays: removing it could let two writers in.)
    made: Option<std::path::PathBuf>,
}

/// A database this import made and never committed to goes again.
impl Drop for SqliteTarget {
    fn drop(&mut self) {
        let Some(path) = self.made.take() else { return };
        match Connection::open_in_memory() {
            Ok(none) => drop(std::mem::replace(&mut self.conn, none).close()),
            Err(_) => return,
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        tracing::debug!(path = %path.display(), "nothing was committed: the database this run made is removed");
    }
}

impl SqliteTarget {
    pub(crate) fn open(path: &Path, dry_run: bool) -> Result<SqliteTarget> {
        // Named by its absolute path, as sources are: the state file records it, and a rollback
        // run from another directory must find this database, not one of the same name there.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let address = format!("sqlite:{}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            return Err(Error::new(
                ErrorKind::Target,
                format!("{address}: directory {} does not exist", dir.display()),
            ));
        }
        let lock = match dry_run {
            true => None,
            false => Some(lock_database(path, &address)?),
        };
        let made = (!dry_run && !path.exists()).then(|| path.clone());
        let conn = if dry_run {
            if path.exists() {
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            } else {
                Connection::open_in_memory()
            }
        } else {
            Connection::open(path)
        }
        .ctx(ErrorKind::Target, || format!("{address}: cannot open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .ctx(ErrorKind::Target, || address.clone())?;
        if !dry_run {
            configure(&conn, &address)?;
        }
        Ok(SqliteTarget {
            conn,
            _lock: lock,
            address,
            dry_run,
            in_tx: false,
            streams: HashMap::new(),
            made,
        })
    }

    fn begin(&mut self) -> Result<()> {
        if !self.in_tx && !self.dry_run {
            self.conn.execute_batch("BEGIN IMMEDIATE").ctx(ErrorKind::Target, || {
                format!("{}: starting a transaction", self.address)
            })?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn table_exists(&self, table: &str) -> Result<bool> {
        table_exists(&self.conn, table).ctx(ErrorKind::Target, || {
            format!("{}: looking up table {table}", self.address)
        })
    }

    fn target_err(&self, stream: &str, what: &str) -> impl FnOnce() -> String {
        let m = format!("{}: stream {stream}: {what}", self.address);
        move || m
    }

    /// Execute one insert; a constraint failure is returned as `Ok(Err(message))`.
    fn exec_insert(&self, sql: &str, rows: &[Value]) -> Result<Result<usize, (String, bool)>> {
        let mut st = self
            .conn
            .prepare_cached(sql)
            .ctx(ErrorKind::Target, || format!("{}: preparing {sql}", self.address))?;
        for (i, v) in rows.iter().enumerate() {
            st.raw_bind_parameter(i + 1, v)
                .ctx(ErrorKind::Target, || format!("{}: binding a value", self.address))?;
        }
        match st.raw_execute() {
            Ok(n) => Ok(Ok(n)),
            Err(rusqlite::Error::SqliteFailure(f, msg)) if f.code == ErrorCode::ConstraintViolation => {
                // 1555 PRIMARYKEY, 2579 ROWID, 2067 UNIQUE: a uniqueness failure (maybe the key).
                let unique = matches!(f.extended_code, 1555 | 2579 | 2067);
                Ok(Err((msg.unwrap_or_else(|| f.to_string()), unique)))
            }
            Err(e) => Err(Error::new(ErrorKind::Target, format!("{}: writing rows", self.address)).with_source(e)),
        }
    }

    fn key_exists(&self, lookup: &str, shape: &RowShape, row: &[Value]) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached(lookup)
            .ctx(ErrorKind::Target, || format!("{}: {lookup}", self.address))?;
        let keys: Vec<&Value> = shape.key.iter().map(|&i| &row[i]).collect();
        st.exists(rusqlite::params_from_iter(keys))
            .ctx(ErrorKind::Target, || format!("{}: {lookup}", self.address))
    }

    /// Get an existing table ready for a stream: is it empty, did an unfinished run of the same
    /// source make it, and (with `--create`) add the columns it lacks.
    fn prepare_existing(
        &mut self,
        schema: &Schema,
        shape: &RowShape,
        opts: &LoadOptions,
        table: &str,
        prepared: &mut Prepared,
    ) -> Result<()> {
        let stream = schema.stream.as_str();
        prepared.empty = !self
            .conn
            .query_row(&format!("SELECT EXISTS (SELECT 1 FROM {})", quote(table)), [], |r| {
                r.get::<_, bool>(0)
            })
            .ctx(ErrorKind::Target, self.target_err(stream, "looking at the table"))?;
        // A table an unfinished run of the same source made: this run goes on with that
        // load, undone with it, with no row-by-row journal.
        prepared.continued =
            !prepared.empty && !self.dry_run && self.unfinished_by(&opts.source, schema.bookmark_name())?;
        let have: BTreeSet<String> = {
            let mut st = self.conn.prepare("SELECT name FROM pragma_table_info(?1)").ctx(
                ErrorKind::Target,
                self.target_err(stream, "reading the table's columns"),
            )?;
            st.query_map([table], |r| r.get(0))
                .and_then(|it| it.collect::<rusqlite::Result<_>>())
                .ctx(
                    ErrorKind::Target,
                    self.target_err(stream, "reading the table's columns"),
                )?
        };
        let missing: Vec<&str> = shape
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .filter(|c| !have.contains(*c))
            .collect();
        if !missing.is_empty() && opts.create && !self.dry_run {
            // --create makes what is missing: a SCHEMA that gained columns adds them.
            self.begin()?;
            for name in &missing {
                let prop = &schema.schema.properties[*name];
                let ty = sqlite_type_for(prop);
                let ddl = format!("ALTER TABLE {} ADD COLUMN {} {ty}", quote(table), quote(name));
                tracing::warn!(stream, table = %table, column = %name, "adding a column the stream has and the table lacks");
                self.conn.execute_batch(&ddl).ctx(
                    ErrorKind::Target,
                    self.target_err(stream, &format!("adding column {name}")),
                )?;
                prepared.created.push(ddl);
            }
        } else if !missing.is_empty() {
            return Err(crate::connect::missing_columns(&self.address, table, stream, &missing));
        }
        Ok(())
    }

    /// Create a stream's table (and its AUTOINCREMENT counter) in the open transaction, and
    /// record the indexes to build once its data is in.
    fn create_table(
        &mut self,
        schema: &Schema,
        opts: &LoadOptions,
        table: &str,
        prepared: &mut Prepared,
    ) -> Result<()> {
        let stream = schema.stream.as_str();
        let ddl = create_table_sql(schema, table);
        if !self.dry_run {
            self.begin()?;
            self.conn.execute_batch(&ddl).ctx(
                ErrorKind::Target,
                self.target_err(stream, &format!("creating table {table} with:\n{ddl}\n")),
            )?;
            if let Some(seq) = schema.sqlite.as_ref().and_then(|s| s.sequence)
                && self.table_exists("sqlite_sequence")?
            {
                self.conn
                        .execute(
                            "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)",
                            params![table, seq],
                        )
                        .ctx(ErrorKind::Target, self.target_err(stream, "setting the AUTOINCREMENT sequence"))?;
            }
        }
        prepared.created.push(ddl);
        prepared.deferred = index_sql(schema, table);
        // Recorded even when there is no index to build: a marker with work pending also
        // says that an unfinished run made the table.
        self.set_pending(&opts.source, schema.bookmark_name(), &opts.run_id, &prepared.deferred)?;
        Ok(())
    }

    /// Move an existing AUTOINCREMENT table's counter past the last number the source's counter handed
    /// out (only forward), so the application is not given a number again. Inside the run's
    /// transaction.
    fn counter_past(&mut self, schema: &Schema, table: &str) -> Result<()> {
        let Some(seq) = schema.sqlite.as_ref().and_then(|s| s.sequence) else {
            return Ok(());
        };
        if self.dry_run || !self.table_exists("sqlite_sequence")? {
            return Ok(());
        }
        self.begin()?;
        self.conn
            .execute(
                "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1 AND seq < ?2",
                params![table, seq],
            )
            .ctx(
                ErrorKind::Target,
                self.target_err(&schema.stream, "moving the AUTOINCREMENT counter forward"),
            )?;
        Ok(())
    }
}

/// Set the database up for loading: `FERRY_SQLITE_PRAGMAS` (WAL and `synchronous=NORMAL` by
/// default: a commit may be lost to a power cut, never half kept, and its commit marker with
/// it, so a resume sends it again), foreign keys not enforced while loading. What SQLite did not
/// take, or what a setting risks, is said.
fn configure(conn: &Connection, address: &str) -> Result<()> {
    let want = &crate::tuning::Tuning::get().sqlite;
    let configuring = || format!("{address}: configuring (is it a SQLite database?)");
    conn.execute_batch(&format!("{} PRAGMA foreign_keys=OFF;", want.sql()))
        .ctx(ErrorKind::Target, configuring)?;
    let read = |pragma: &str| -> Result<String> {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
        .ctx(ErrorKind::Target, configuring)
    };
    let journal = read("journal_mode")?;
    if !journal.eq_ignore_ascii_case(want.journal_mode) {
        tracing::warn!(target = address, asked = want.journal_mode, kept = %journal, "SQLite did not take the journal mode asked for");
    }
    if let Some(n) = want.page_size
        && read("page_size")? != n.to_string()
    {
        tracing::warn!(target = address, asked = n, kept = %read("page_size")?, "page_size applies to a new database only: this one keeps its own");
    }
    if want.synchronous == "OFF" {
        tracing::warn!(
            target = address,
            "synchronous=OFF: a power cut or an operating system crash during the import can corrupt the database; a killed ferry cannot"
        );
    }
    Ok(())
}

/// Take the lock that lets one ferry process at a time write the database at `path` (`what`:
/// its address, for the message the second comer gets).
pub(crate) fn lock_database(path: &Path, what: &str) -> Result<crate::lock::FileLock> {
    crate::lock::FileLock::acquire(
        &crate::lock::sqlite_lock_path(path),
        what,
        &crate::lock::Holder::this_process(),
    )
}

impl Target for SqliteTarget {
    fn address(&self) -> String {
        self.address.clone()
    }

    fn markers(&mut self, source: &str) -> Result<HashMap<String, Marker>> {
        if !self.table_exists(MARKER_TABLE)? {
            return Ok(HashMap::new());
        }
        let mut st = self
            .conn
            .prepare("SELECT stream, run_id, position, complete, bookmark FROM _ferry_commits WHERE source = ?1")
            .ctx(ErrorKind::Target, || {
                format!("{}: reading commit markers", self.address)
            })?;
        let rows = st
            .query_map([source], |r| {
                Ok(Marker {
                    source: source.to_owned(),
                    stream: r.get(0)?,
                    run_id: r.get(1)?,
                    position: r.get::<_, Option<i64>>(2)?.map(|p| p as u64),
                    complete: r.get(3)?,
                    bookmark: r.get(4)?,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Target, || {
                format!("{}: reading commit markers", self.address)
            })?;
        Ok(rows.into_iter().map(|m| (m.stream.clone(), m)).collect())
    }

    fn prepare(&mut self, schema: &Schema, shape: &RowShape, opts: &LoadOptions) -> Result<Prepared> {
        let stream = schema.stream.as_str();
        if crate::connect::postgres_types(schema, opts) {
            return Err(Error::usage(format!(
                "stream {stream} carries PostgreSQL types and values; recast it for SQLite first: ... | ferry-transform --dialect sqlite | ferry-import {}",
                self.address
            )));
        }
        let table = table_name_for(stream).to_owned();
        let mut prepared = Prepared {
            table: table.clone(),
            ..Default::default()
        };
        let exists = self.table_exists(&table)?;
        prepared.existed = exists;
        if exists {
            self.prepare_existing(schema, shape, opts, &table, &mut prepared)?;
            self.counter_past(schema, &table)?;
        } else if !opts.create {
            return Err(crate::connect::no_table(&self.address, &table, stream));
        } else {
            self.create_table(schema, opts, &table, &mut prepared)?;
        }

        if !self.dry_run || exists {
            let t = describe(&self.conn, &table, &self.address)?;
            prepared.null_key = t.pk_nullable() && t.pk == shape.key_names();
        }
        if shape.key.is_empty() && opts.on_conflict != OnConflict::Fail {
            tracing::warn!(
                stream,
                "the stream has no key: --on-conflict has nothing to match on, rows are appended"
            );
        }
        let ts = TargetStream::new(shape, table, opts.on_conflict);
        if !self.dry_run && !shape.is_empty() {
            // Prepare now so that a mismatch (say, ON CONFLICT with no matching key) fails before any row.
            self.conn.prepare_cached(&ts.insert_one).ctx(
                ErrorKind::Target,
                self.target_err(
                    stream,
                    "preparing the insert (does the table's primary key match the stream's key_properties?)",
                ),
            )?;
        }
        self.streams.insert(stream.to_owned(), ts);
        Ok(prepared)
    }

    fn write(&mut self, stream: &str, shape: &RowShape, batch: RowBatch) -> Result<Vec<Report>> {
        let batch = &batch;
        self.begin()?;
        let ts = self
            .streams
            .get(stream)
            .ok_or_else(|| Error::new(ErrorKind::Target, format!("stream {stream} was not prepared")))?;
        let n = batch.ncols;
        let mut report = Report {
            stream: stream.to_owned(),
            ..Default::default()
        };
        let total = batch.len();
        // SQLite stores a NaN as NULL: such rows are refused, never silently changed.
        let nan_row = |r: usize| batch.row(r).iter().any(|v| matches!(v, Value::Real(f) if f.is_nan()));
        let has_nan = batch.values.iter().any(|v| matches!(v, Value::Real(f) if f.is_nan()));
        let mut start = 0;
        while start < total {
            let take = if total - start >= ts.chunk && n > 0 {
                ts.chunk
            } else {
                1
            };
            if has_nan && (start..start + take).any(nan_row) {
                for r in start..start + take {
                    if nan_row(r) {
                        let msg = "a NaN floating-point value, which SQLite cannot store (it would become NULL)";
                        report.rejects.push(Reject::of(shape, batch, r, msg.into()));
                    } else {
                        self.write_one(ts, shape, batch, r, &mut report)?;
                    }
                }
                start += take;
                continue;
            }
            let sql = if take == ts.chunk && take > 1 {
                &ts.insert_many
            } else {
                &ts.insert_one
            };
            let values = &batch.values[start * n..(start + take) * n];
            match self.exec_insert(sql, values)? {
                Ok(changed) => {
                    report.written += changed as u64;
                    report.skipped += (take - changed) as u64;
                }
                Err(_) if take > 1 => {
                    // Find the rows at fault one by one; the failed statement changed nothing.
                    for r in start..start + take {
                        self.write_one(ts, shape, batch, r, &mut report)?;
                    }
                }
                Err(_) => self.write_one(ts, shape, batch, start, &mut report)?,
            }
            start += take;
        }
        Ok(vec![report])
    }

    fn delete(&mut self, stream: &str, shape: &RowShape, batch: RowBatch) -> Result<Vec<Report>> {
        self.begin()?;
        let address = self.address.clone();
        let sql = self
            .streams
            .get(stream)
            .and_then(|ts| ts.delete.clone())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Target,
                    format!("stream {stream} was not prepared with a key"),
                )
            })?;
        let e = || format!("{address}: stream {stream}: deleting rows");
        let mut st = self.conn.prepare_cached(&sql).ctx(ErrorKind::Target, e)?;
        let mut report = Report {
            stream: stream.to_owned(),
            ..Default::default()
        };
        for r in 0..batch.len() {
            let row = batch.row(r);
            let key = shape.key.iter().map(|&i| &row[i]);
            st.execute(rusqlite::params_from_iter(key)).ctx(ErrorKind::Target, e)?;
            // Applied, whether its row was there or already gone (the closing line adds up).
            report.deleted += 1;
        }
        Ok(vec![report])
    }

    fn current_rows(
        &mut self,
        stream: &str,
        shape: &RowShape,
        batch: &RowBatch,
    ) -> Result<Option<Vec<Option<Vec<Value>>>>> {
        let Some((lookup, head)) = self
            .streams
            .get(stream)
            .and_then(|t| t.row_lookup.clone().zip(t.rows_lookup.clone()))
        else {
            return Ok(None);
        };
        let address = self.address.clone();
        let e = || format!("{address}: reading a row's before-image");
        let print = |vals: &mut dyn Iterator<Item = &Value>| format!("{:?}", vals.collect::<Vec<_>>());
        let per = (500 / shape.key.len().max(1)).max(1);
        let tuple = format!("({})", vec!["?"; shape.key.len()].join(", "));
        let mut out: Vec<Option<Vec<Value>>> = Vec::with_capacity(batch.len());
        for start in (0..batch.len()).step_by(per) {
            let end = (start + per).min(batch.len());
            let sql = format!("{head}{})", vec![tuple.as_str(); end - start].join(", "));
            let params: Vec<&Value> = (start..end)
                .flat_map(|r| shape.key.iter().map(move |&i| &batch.row(r)[i]))
                .collect();
            let mut found: HashMap<String, Vec<Value>> = HashMap::new();
            {
                let mut st = self.conn.prepare_cached(&sql).ctx(ErrorKind::Target, e)?;
                let mut rows = st.query(rusqlite::params_from_iter(params)).ctx(ErrorKind::Target, e)?;
                while let Some(got) = rows.next().ctx(ErrorKind::Target, e)? {
                    let vals = row_values(got, shape.len()).ctx(ErrorKind::Target, e)?;
                    found.insert(print(&mut shape.key.iter().map(|&i| &vals[i])), vals);
                }
            }
            let printed: Vec<String> = (start..end)
                .map(|r| print(&mut shape.key.iter().map(|&i| &batch.row(r)[i])))
                .collect();
            // A row found under a key spelled otherwise (by the column's affinity or collation),
            // or a null in a key (which IN never matches): those rows are looked up one by one.
            let asked: std::collections::HashSet<&String> = printed.iter().collect();
            let odd = found.keys().any(|k| !asked.contains(k));
            for (r, key) in (start..end).zip(&printed) {
                let row = batch.row(r);
                let has_null = shape.key.iter().any(|&i| matches!(row[i], Value::Null));
                match found.get(key) {
                    Some(v) => out.push(Some(v.clone())),
                    None if odd || has_null => {
                        let mut st = self.conn.prepare_cached(&lookup).ctx(ErrorKind::Target, e)?;
                        let keys: Vec<&Value> = shape.key.iter().map(|&i| &row[i]).collect();
                        out.push(
                            st.query_row(rusqlite::params_from_iter(keys), |got| row_values(got, shape.len()))
                                .optional()
                                .ctx(ErrorKind::Target, e)?,
                        );
                    }
                    None => out.push(None),
                }
            }
        }
        Ok(Some(out))
    }

    fn plan(&mut self, stream: &str, shape: &RowShape, batch: &RowBatch) -> Result<PlanCounts> {
        let mut counts = PlanCounts::default();
        let Some(ts) = self.streams.get(stream) else {
            return Ok(counts);
        };
        let exists = self.table_exists(&ts.table)?;
        for r in 0..batch.len() {
            let found = match (&ts.key_lookup, exists) {
                (Some(lookup), true) => self.key_exists(lookup, shape, batch.row(r))?,
                _ => false,
            };
            counts.count(found, ts.on_found);
        }
        Ok(counts)
    }

    fn commit(&mut self, markers: &[Marker]) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        self.begin()?;
        let address = self.address.clone();
        let e = || format!("{address}: committing");
        self.conn.execute_batch(MARKER_DDL).ctx(ErrorKind::Target, e)?;
        {
            let mut st = self
                .conn
                .prepare_cached(
                    "INSERT INTO _ferry_commits (source, stream, run_id, position, complete, bookmark, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (source, stream) DO UPDATE SET run_id = excluded.run_id,
                         position = max(coalesce(position, 0), coalesce(excluded.position, 0)),
                         complete = max(complete, excluded.complete),
                         bookmark = coalesce(excluded.bookmark, bookmark), updated_at = excluded.updated_at",
                )
                .ctx(ErrorKind::Target, e)?;
            let now = now_rfc3339();
            for m in markers {
                st.execute(params![
                    m.source,
                    m.stream,
                    m.run_id,
                    m.position.map(|p| p as i64),
                    m.complete,
                    m.bookmark,
                    now
                ])
                .ctx(ErrorKind::Target, e)?;
            }
        }
        self.conn.execute_batch("COMMIT").ctx(ErrorKind::Target, e)?;
        self.in_tx = false;
        self.made = None;
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        if self.in_tx {
            self.in_tx = false;
            // A COMMIT that failed for a full disk (or I/O) was rolled back by SQLite already.
            if self.conn.is_autocommit() {
                return Ok(());
            }
            self.conn
                .execute_batch("ROLLBACK")
                .ctx(ErrorKind::Target, || format!("{}: rolling back", self.address))?;
        }
        Ok(())
    }

    fn finish_stream(&mut self, source: &str, bookmark_name: &str) -> Result<Vec<String>> {
        if self.dry_run || !self.table_exists(MARKER_TABLE)? {
            return Ok(vec![]);
        }
        let pending: Option<String> = self
            .conn
            .query_row(
                "SELECT pending_ddl FROM _ferry_commits WHERE source = ?1 AND stream = ?2",
                [source, bookmark_name],
                |r| r.get(0),
            )
            .optional()
            .ctx(ErrorKind::Target, || {
                format!("{}: reading deferred indexes", self.address)
            })?
            .flatten();
        let Some(pending) = pending else {
            return Ok(vec![]);
        };
        let statements: Vec<String> = serde_json::from_str(&pending).unwrap_or_default();
        if !statements.is_empty() {
            tracing::info!(
                stream = bookmark_name,
                statements = statements.len(),
                "building keys and indexes"
            );
        }
        self.begin()?;
        for s in &statements {
            self.conn.execute_batch(s).ctx(ErrorKind::Target, || {
                format!(
                    "{}: stream {bookmark_name}: building an index with:\n{s}\n",
                    self.address
                )
            })?;
        }
        self.conn
            .execute(
                "UPDATE _ferry_commits SET pending_ddl = NULL WHERE source = ?1 AND stream = ?2",
                [source, bookmark_name],
            )
            .ctx(ErrorKind::Target, || {
                format!("{}: recording built indexes", self.address)
            })?;
        self.conn
            .execute_batch("COMMIT")
            .ctx(ErrorKind::Target, || format!("{}: committing indexes", self.address))?;
        self.in_tx = false;
        Ok(statements)
    }
}

impl SqliteTarget {
    fn write_one(
        &self,
        ts: &TargetStream,
        shape: &RowShape,
        batch: &RowBatch,
        r: usize,
        report: &mut Report,
    ) -> Result<()> {
        match self.exec_insert(&ts.insert_one, batch.row(r))? {
            Ok(changed) => {
                report.written += changed as u64;
                report.skipped += (1 - changed.min(1)) as u64;
            }
            Err((msg, unique)) => {
                let is_key = unique
                    && match &ts.key_lookup {
                        Some(lookup) => self.key_exists(lookup, shape, batch.row(r))?,
                        None => false,
                    };
                if is_key {
                    return Err(crate::connect::key_conflict(shape, batch, r, &ts.table, None));
                }
                report.rejects.push(Reject::of(shape, batch, r, msg));
            }
        }
        Ok(())
    }

    /// Record (in the open transaction) the deferred DDL of a stream, so that it is built even if
    /// the stream's SCHEMA is never seen again.
    /// Whether an unfinished run of `source` made the stream's table: its marker still has work
    /// pending (set when the table is made) and the stream is not complete.
    fn unfinished_by(&self, source: &str, bookmark_name: &str) -> Result<bool> {
        if !self.table_exists(MARKER_TABLE)? {
            return Ok(false);
        }
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM _ferry_commits WHERE source = ?1 AND stream = ?2
                     AND pending_ddl IS NOT NULL AND NOT complete)",
                [source, bookmark_name],
                |r| r.get(0),
            )
            .ctx(ErrorKind::Target, || {
                format!("{}: reading commit markers", self.address)
            })
    }

    fn set_pending(&mut self, source: &str, bookmark_name: &str, run_id: &str, ddl: &[String]) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        self.begin()?;
        let e = || format!("{}: recording deferred indexes", self.address);
        self.conn.execute_batch(MARKER_DDL).ctx(ErrorKind::Target, e)?;
        let text = serde_json::to_string(ddl).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "INSERT INTO _ferry_commits (source, stream, run_id, position, complete, pending_ddl, updated_at)
                 VALUES (?1, ?2, ?3, NULL, 0, ?4, ?5)
                 ON CONFLICT (source, stream) DO UPDATE SET pending_ddl = excluded.pending_ddl",
                params![source, bookmark_name, run_id, text, now_rfc3339()],
            )
            .ctx(ErrorKind::Target, e)?;
        Ok(())
    }
}
