//! PostgreSQL as a source.
//!
//! The whole export reads one `REPEATABLE READ READ ONLY` snapshot. Tables come from the catalog
//! (ordinary and partitioned tables of every schema but the system ones and ferry's own), as
//! streams named `schema.table`, parents before children. Each table's rows are one
//! `COPY (SELECT ... ORDER BY key) TO STDOUT` in key order, in the key's own collation (the order
//! of its index, so no sort); a resumed export starts strictly after the bookmark's key
//! (`WHERE (k1, k2) > (v1, v2)`). A table without a primary key is read in storage order and
//! cannot resume in the middle: it starts over.
//!
//! # Values (see the protocol's table)
//!
//! | PostgreSQL | in the stream | schema |
//! |---|---|---|
//! | smallint, integer, bigint | integer digits | `integer` |
//! | real, double precision | shortest round-trip number (a `real` widened exactly); `"NaN"`, `"Infinity"` | `number` |
//! | numeric | its exact text (`"1.50"`, `"NaN"`, 1000 digits) | `string`, `format: x-singer.decimal` |
//! | money | its exact amount as numeric text (never the locale's `$1,234.50`) | `string`, `format: x-singer.decimal` |
//! | boolean | `true` / `false` | `boolean` |
//! | text, varchar, char, name, citext | string | `string` |
//! | bytea | base64 | `string`, `contentEncoding: base64` |
//! | date | `YYYY-MM-DD` (`infinity`, `-infinity` and `... BC` as PostgreSQL writes them) | `format: date` |
//! | timestamp | `YYYY-MM-DDTHH:MM:SS[.ffffff]`, no offset | `format: date-time` |
//! | timestamptz | `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (UTC) | `format: date-time` |
//! | time, timetz, interval (ISO 8601: `P1Y2M3DT4H5M6S`), uuid, inet, cidr, macaddr, enums, anything else | PostgreSQL's text | `string` (enums list their labels in `enum`) |
//! | json | the original text, as a string | `string`, `x-sql-type: json` |
//! | jsonb | the JSON value itself | `x-sql-type: jsonb` |
//! | arrays | JSON arrays (`array_to_json`); an array of composites as PostgreSQL's text | `array` (`string`) |
//! | jsonb that ferry wrote for an SQLite dynamic column | the original values | `x-sqlite-dynamic` |
//!
//! Every property carries `x-sql-type` (the type as `format_type()` writes it; a domain as its base
//! type, with the domain in `x-sql-domain`; an enum schema-qualified), `x-sql-collation` when the
//! column's collation is not its type's, `x-sql-default` when there is a default, and
//! `x-sql-identity`
//! (`always` / `by default`) for identity columns and for `serial` columns (whose default is the
//! sequence they own), with `x-sql-sequence`, the last number that sequence handed out (a target
//! moves its own past it, so numbers the source gave out are not given again). Generated columns are not exported: the target computes them.
//!
//! What a PostgreSQL target needs to recreate the table goes with the SCHEMA: `x-sql-types`, the
//! enum, composite and domain types its columns use (directly, in arrays, through domains or
//! inside other composites), each `{"name": "public.mood", "enum": [labels]}`, `{"name":
//! "public.pair", "attributes": [{"name": "a", "type": "integer"}]}` or `{"name":
//! "public.posint", "domain": {"base": "integer", "not_null": false, "default": null,
//! "collation": null, "checks": [{"name": "posint_check", "definition": "CHECK ((VALUE > 0))"}]}}`,
//! the ones others use first; and
//! `x-sql-generated`, its generated columns as `{"name", "type", "expression"}`; and
//! `x-sql-checks`, its CHECK constraints as `{"name", "definition", "valid"}` (`definition` as
//! `pg_get_constraintdef` writes it; `valid` false for one added `NOT VALID`); and, for a
//! partitioned table, `x-sql-partition`: `{"by": "RANGE (at)", "partitions": [{"name":
//! "public.ev_2024", "of": null, "bound": "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
//! "by": null}]}`, parents first (`of` null: a partition of this table; `by` set: partitioned in
//! turn). A partitioned table's rows go as one stream, read through the table.
//!
//! One concern, kept whole (over 800 lines): reading a PostgreSQL snapshot into streams; the
//! catalog, COPY and the reader are their own files.

pub(crate) mod follow;

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};

use super::catalog::COMPOSITE_ARRAY;
use super::conn::{PgAddress, pg_error};
use super::copy as pgcopy;
use super::read::PgConn;
use crate::connect::sql::quote;
use crate::connect::{RowAccess, Selection, Source, StreamPlan};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Bookmark, ForeignKey, Index, ObjectSchema, References, Schema, SourceInfo, TableRef, Unique};
use crate::row::RowShape;
use crate::shard::{Range, Shard};
use crate::value::{self, Codec, Value, ValueRef};

/// How a column is read: what to select, and how its COPY text becomes a stream value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float4,
    Float8,
    /// numeric, and money (selected as numeric).
    Decimal,
    Money,
    Bool,
    Text,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    /// json: the text exactly.
    JsonText,
    Jsonb,
    Array,
    /// jsonb holding an SQLite dynamic column (ferry's column comment says so).
    Dynamic,
}

#[derive(Debug, Clone)]
struct PgColumn {
    name: String,
    sql_type: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
struct PgTable {
    schema: String,
    name: String,
    columns: Vec<PgColumn>,
    key: Vec<usize>,
}

impl PgTable {
    fn qualified(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }
}

pub(crate) struct PgSource {
    address: PgAddress,
    client: PgConn,
    in_snapshot: bool,
    tables: HashMap<String, PgTable>,
    /// The logical replication session of `--changes`/`--follow`, once started.
    follow: Option<follow::Follow>,
}

/// What the catalog says of one column (a row of [`PgSource::catalog_columns`], read by name).
struct CatalogColumn {
    attnum: i32,
    name: String,
    /// Its type as PostgreSQL writes it (a domain's base type; an enum's qualified name).
    sql_type: String,
    /// The type's (or the domain's base type's) name and category.
    typname: String,
    category: String,
    notnull: bool,
    default: Option<String>,
    identity: String,
    /// Non-empty for a generated column.
    generated: String,
    comment: String,
    /// An enum's labels, in order.
    labels: Option<Vec<String>>,
    owns_sequence: bool,
    /// The last number its sequence (serial or identity) handed out, where it handed one out and
    /// may be read.
    sequence_last: Option<i64>,
    composite_array: bool,
    /// Its type, element type or base type is not built in.
    own_type: bool,
    domain: Option<String>,
    /// Only where the column's differs from its type's.
    collation: Option<String>,
}

impl CatalogColumn {
    fn read(r: &tokio_postgres::Row) -> CatalogColumn {
        CatalogColumn {
            attnum: r.get("attnum"),
            name: r.get("name"),
            sql_type: r.get("sql_type"),
            typname: r.get("typname"),
            category: r.get("category"),
            notnull: r.get("not_null"),
            default: r.get("default_sql"),
            identity: r.get("identity"),
            generated: r.get("generated"),
            comment: r.get("comment"),
            labels: r.get("labels"),
            owns_sequence: r.get("owns_sequence"),
            sequence_last: r.get("sequence_last"),
            composite_array: r.get("composite_array"),
            own_type: r.get("own_type"),
            domain: r.get("domain"),
            collation: r.get("collation"),
        }
    }

    /// How its values are read.
    fn kind(&self) -> Kind {
        match (self.typname.as_str(), self.category.as_str()) {
            // An array of composites stays in PostgreSQL's text: as JSON its elements would be
            // objects, which no array literal takes back.
            (_, "A") if self.composite_array => Kind::Text,
            (_, "A") => Kind::Array,
            ("int2" | "int4" | "int8", _) => Kind::Int,
            ("float4", _) => Kind::Float4,
            ("float8", _) => Kind::Float8,
            ("numeric", _) => Kind::Decimal,
            ("money", _) => Kind::Money,
            ("bool", _) => Kind::Bool,
            ("bytea", _) => Kind::Bytea,
            ("date", _) => Kind::Date,
            ("timestamp", _) => Kind::Timestamp,
            ("timestamptz", _) => Kind::TimestampTz,
            ("json", _) => Kind::JsonText,
            ("jsonb", _) if self.comment.starts_with("ferry: x-sqlite-dynamic") => Kind::Dynamic,
            ("jsonb", _) => Kind::Jsonb,
            _ => Kind::Text,
        }
    }

    /// Its stream property: JSON types, format, enum labels, and the `x-sql-*` extensions.
    fn property(&self, kind: Kind) -> Map<String, Json> {
        let mut p = Map::new();
        let mut types: Vec<&str> = match kind {
            Kind::Int => vec!["integer"],
            Kind::Float4 | Kind::Float8 => vec!["number"],
            Kind::Bool => vec!["boolean"],
            Kind::Jsonb => vec!["object", "array", "string", "number", "boolean"],
            Kind::Array => vec!["array"],
            Kind::Dynamic => vec![],
            _ => vec!["string"],
        };
        if !self.notnull && !types.is_empty() {
            types.push("null");
        }
        match types.as_slice() {
            [] => {}
            [one] => {
                p.insert("type".into(), json!(one));
            }
            many => {
                p.insert("type".into(), json!(many));
            }
        }
        let format = match kind {
            Kind::Decimal | Kind::Money => Some(("format", json!("x-singer.decimal"))),
            Kind::Bytea => Some(("contentEncoding", json!("base64"))),
            Kind::Date => Some(("format", json!("date"))),
            Kind::Timestamp | Kind::TimestampTz => Some(("format", json!("date-time"))),
            Kind::Dynamic => Some(("x-sqlite-dynamic", json!(true))),
            _ if self.typname == "uuid" => Some(("format", json!("uuid"))),
            _ if self.typname == "time" => Some(("format", json!("time"))),
            _ => None,
        };
        if let Some((k, v)) = format {
            p.insert(k.into(), v);
        }
        if let Some(l) = &self.labels {
            let mut e: Vec<Json> = l.iter().cloned().map(Json::String).collect();
            if !self.notnull {
                e.push(Json::Null);
            }
            p.insert("enum".into(), Json::Array(e));
        }
        p.insert("x-sql-type".into(), json!(self.sql_type));
        if let Some(d) = &self.domain {
            // The column's declared type; `x-sql-type` stays its base type, which decides how
            // values are read and compared. The domain itself is in `x-sql-types`.
            p.insert("x-sql-domain".into(), json!(d));
        }
        if let Some(c) = &self.collation {
            p.insert("x-sql-collation".into(), json!(c));
        }
        let serial = self.owns_sequence && self.default.as_deref().is_some_and(|d| d.starts_with("nextval("));
        let identity = match self.identity.as_str() {
            "a" => Some("always"),
            "d" => Some("by default"),
            _ if serial => Some("by default"),
            _ => None,
        };
        if let Some(i) = identity {
            p.insert("x-sql-identity".into(), json!(i));
            if let Some(last) = self.sequence_last {
                p.insert("x-sql-sequence".into(), json!(last));
            }
        }
        if let Some(d) = self.default.as_ref().filter(|_| !serial) {
            p.insert("x-sql-default".into(), json!(d));
        }
        p
    }
}

/// A table's primary key, unique constraints and foreign keys (with the parents they reference).
#[derive(Default)]
struct Keys {
    primary: Vec<String>,
    unique: Vec<Unique>,
    foreign: Vec<ForeignKey>,
    parents: Vec<String>,
}

impl PgSource {
    pub(crate) fn open(url: &str) -> Result<PgSource> {
        let address = PgAddress::parse(url, "ferry-export")?;
        let client = PgConn::open(&address)?;
        Ok(PgSource {
            address,
            client,
            in_snapshot: false,
            tables: HashMap::new(),
            follow: None,
        })
    }

    fn err(&self, what: &str, e: tokio_postgres::Error) -> Error {
        let e = pg_error(&self.address.redacted, what, e);
        // A source that went away mid-export cannot continue the same snapshot: the export stops,
        // and `--resume` picks up after what the importer acknowledged.
        match e.kind() {
            ErrorKind::Transient => Error::new(
                ErrorKind::Source,
                format!(
                    "{e}; run the same pipeline again with ferry-export --resume to continue after what was imported"
                ),
            ),
            _ => Error::new(ErrorKind::Source, e.to_string()),
        }
    }

    fn snapshot(&mut self) -> Result<()> {
        if !self.in_snapshot {
            self.client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .map_err(|e| self.err("starting a snapshot", e))?;
            self.in_snapshot = true;
        }
        Ok(())
    }

    fn query(
        &mut self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        match self.client.query(sql, params) {
            Ok(r) => Ok(r),
            Err(e) => Err(self.err(what, e)),
        }
    }

    /// One table's columns, key and constraints, as a SCHEMA; `partition_by` is the partition key
    /// of a partitioned table.
    fn describe(
        &mut self,
        oid: u32,
        schema: &str,
        name: &str,
        estimate: f32,
        partition_by: Option<&str>,
    ) -> Result<(PgTable, Schema, Vec<String>)> {
        let stream = format!("{schema}.{name}");
        let what = format!("reading the definition of {stream}");
        let catalog = self.catalog_columns(oid, &what)?;
        let attnames: HashMap<i32, String> = catalog.iter().map(|c| (c.attnum, c.name.clone())).collect();
        let names = |nums: &[i16]| -> Option<Vec<String>> {
            nums.iter().map(|n| attnames.get(&(*n as i32)).cloned()).collect()
        };
        let mut columns = Vec::new();
        let mut props = Map::new();
        let mut generated = Vec::new();
        for c in &catalog {
            if !c.generated.is_empty() {
                // Not a value of the row: its definition goes with the SCHEMA, for `--create`.
                generated.push(json!({"name": c.name, "type": c.sql_type, "expression": c.default}));
                continue;
            }
            let kind = c.kind();
            props.insert(c.name.clone(), Json::Object(c.property(kind)));
            columns.push(PgColumn {
                name: c.name.clone(),
                sql_type: c.sql_type.clone(),
                kind,
            });
        }
        if !generated.is_empty() {
            let names: Vec<&str> = generated.iter().filter_map(|g| g["name"].as_str()).collect();
            tracing::info!(stream = %stream, columns = %names.join(", "), "generated columns are not exported (the target computes them)");
        }
        // Only when a column's type, element type or base type is not built in.
        let user_types = if catalog.iter().any(|c| c.own_type) {
            self.user_types(oid, &what)?
        } else {
            Vec::new()
        };
        let keys = self.constraints(oid, &what, &names)?;
        let checks = self.checks(oid, &what)?;
        let indexes = self.indexes(oid, &what, &names)?;

        let index_of: HashMap<&str, usize> = columns.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
        let key = keys
            .primary
            .iter()
            .filter_map(|k| index_of.get(k.as_str()).copied())
            .collect();
        let table = PgTable {
            schema: schema.to_owned(),
            name: name.to_owned(),
            columns,
            key,
        };
        let mut extra = Map::new();
        extra.insert("x-sql-dialect".into(), json!("postgres"));
        if !user_types.is_empty() {
            extra.insert("x-sql-types".into(), Json::Array(user_types));
        }
        if !generated.is_empty() {
            extra.insert("x-sql-generated".into(), Json::Array(generated));
        }
        if !checks.is_empty() {
            extra.insert("x-sql-checks".into(), Json::Array(checks));
        }
        if let Some(by) = partition_by {
            extra.insert("x-sql-partition".into(), self.partitioning(oid, by, &what)?);
        }
        let schema = Schema {
            schema: ObjectSchema {
                properties: props,
                ..Default::default()
            },
            key_properties: keys.primary,
            table: Some(TableRef {
                schema: Some(schema.to_owned()),
                name: name.to_owned(),
            }),
            foreign_keys: keys.foreign,
            unique: keys.unique,
            indexes,
            row_estimate: (estimate >= 0.0).then_some(estimate as u64),
            extra,
            ..Schema::new(stream)
        };
        Ok((table, schema, keys.parents))
    }

    /// What the catalog says of each column of the table `oid`, in order.
    fn catalog_columns(&mut self, oid: u32, what: &str) -> Result<Vec<CatalogColumn>> {
        let sql = format!(
            "SELECT a.attnum::int4 AS attnum, a.attname::text AS name,
                    CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
                         WHEN t.typtype = 'e' THEN quote_ident(tn.nspname) || '.' || quote_ident(t.typname)
                         ELSE format_type(a.atttypid, a.atttypmod) END AS sql_type,
                    CASE WHEN t.typtype = 'd' THEN bt.typname::text ELSE t.typname::text END AS typname,
                    CASE WHEN t.typtype = 'd' THEN bt.typcategory::text ELSE t.typcategory::text END AS category,
                    a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default_sql,
                    a.attidentity::text AS identity, a.attgenerated::text AS generated,
                    coalesce(col_description(a.attrelid, a.attnum), '') AS comment,
                    CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e
                         WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END AS labels,
                    EXISTS (SELECT 1 FROM pg_depend dp JOIN pg_class s ON s.oid = dp.objid AND s.relkind = 'S'
                            WHERE dp.refobjid = a.attrelid AND dp.refobjsubid = a.attnum AND dp.deptype = 'a')
                      AS owns_sequence,
                    (SELECT CASE WHEN has_sequence_privilege(q.s, 'SELECT,USAGE') THEN pg_sequence_last_value(q.s) END
                       FROM (SELECT pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)::regclass AS s) q
                      WHERE q.s IS NOT NULL) AS sequence_last,
                    {COMPOSITE_ARRAY} AS composite_array,
                    EXISTS (SELECT 1 FROM pg_type x WHERE x.oid IN (t.oid, t.typelem, t.typbasetype)
                            AND x.typnamespace <> 'pg_catalog'::regnamespace) AS own_type,
                    CASE WHEN t.typtype = 'd' THEN quote_ident(tn.nspname) || '.' || quote_ident(t.typname) END
                      AS domain,
                    (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                       FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                      WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation) AS collation
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             JOIN pg_namespace tn ON tn.oid = t.typnamespace
             LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum"
        );
        Ok(self
            .query(what, &sql, &[&oid])?
            .iter()
            .map(CatalogColumn::read)
            .collect())
    }

    /// The table's primary key, unique constraints and foreign keys (`names`: column numbers to
    /// names).
    fn constraints(&mut self, oid: u32, what: &str, names: &dyn Fn(&[i16]) -> Option<Vec<String>>) -> Result<Keys> {
        let cons = self.query(
            what,
            "SELECT c.conname::text AS name, c.contype::text AS kind, c.conkey AS columns,
                    c.confkey AS parent_columns, fn.nspname::text AS parent_schema,
                    f.relname::text AS parent_table, c.confdeltype::text AS on_delete,
                    c.confupdtype::text AS on_update, c.condeferrable AS deferrable
             FROM pg_constraint c
             LEFT JOIN pg_class f ON f.oid = c.confrelid
             LEFT JOIN pg_namespace fn ON fn.oid = f.relnamespace
             WHERE c.conrelid = $1 AND c.contype IN ('p', 'u', 'f')
               -- not the copies a foreign key to a partitioned table keeps for each partition
               AND c.conparentid = 0
             ORDER BY c.contype, c.conname",
            &[&oid],
        )?;
        let action = |c: &str| match c {
            "r" => Some("RESTRICT".to_owned()),
            "c" => Some("CASCADE".to_owned()),
            "n" => Some("SET NULL".to_owned()),
            "d" => Some("SET DEFAULT".to_owned()),
            _ => None,
        };
        let mut keys = Keys::default();
        for r in &cons {
            let name: String = r.get("name");
            let kind: String = r.get("kind");
            let conkey: Vec<i16> = r.get::<_, Option<Vec<i16>>>("columns").unwrap_or_default();
            let Some(columns) = names(&conkey) else { continue };
            match kind.as_str() {
                "p" => keys.primary = columns,
                "u" => keys.unique.push(Unique {
                    name: Some(name),
                    columns,
                }),
                _ => {
                    let confkey: Vec<i16> = r.get::<_, Option<Vec<i16>>>("parent_columns").unwrap_or_default();
                    let (ps, pt): (String, String) = (r.get("parent_schema"), r.get("parent_table"));
                    let parent_columns = self.attribute_names(&ps, &pt, &confkey)?;
                    let parent = format!("{ps}.{pt}");
                    keys.parents.push(parent.clone());
                    keys.foreign.push(ForeignKey {
                        name: Some(name),
                        columns,
                        references: References {
                            stream: parent,
                            columns: parent_columns,
                        },
                        on_delete: action(&r.get::<_, String>("on_delete")),
                        on_update: action(&r.get::<_, String>("on_update")),
                        deferrable: r.get("deferrable"),
                    });
                }
            }
        }
        Ok(keys)
    }

    /// CHECK constraints of the table itself (a partition's inherited ones come with its parent).
    fn checks(&mut self, oid: u32, what: &str) -> Result<Vec<Json>> {
        let rows = self.query(
            what,
            "SELECT c.conname::text AS name, pg_get_constraintdef(c.oid) AS definition, c.convalidated AS valid
             FROM pg_constraint c
             WHERE c.conrelid = $1 AND c.contype = 'c' AND c.conislocal
             ORDER BY c.conname",
            &[&oid],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                json!({"name": r.get::<_, String>("name"), "definition": r.get::<_, String>("definition"),
                    "valid": r.get::<_, bool>("valid")})
            })
            .collect())
    }

    /// The table's indexes other than its constraints' (`names`: column numbers to names); an
    /// index on an expression has no columns.
    fn indexes(&mut self, oid: u32, what: &str, names: &dyn Fn(&[i16]) -> Option<Vec<String>>) -> Result<Vec<Index>> {
        let rows = self.query(
            what,
            "SELECT i.relname::text AS name, x.indisunique AS is_unique, x.indkey::int2[] AS columns,
                    x.indnkeyatts::int4 AS key_columns, pg_get_indexdef(x.indexrelid) AS definition,
                    pg_get_expr(x.indpred, x.indrelid) AS predicate
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = $1
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid)
             ORDER BY i.relname",
            &[&oid],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let keys: Vec<i16> = r.get("columns");
                let nkey: i32 = r.get("key_columns");
                let keys = &keys[..(nkey.max(0) as usize).min(keys.len())];
                Index {
                    name: r.get("name"),
                    columns: if keys.contains(&0) {
                        vec![]
                    } else {
                        names(keys).unwrap_or_default()
                    },
                    unique: r.get("is_unique"),
                    where_sql: r.get("predicate"),
                    sql: Some(r.get("definition")),
                }
            })
            .collect())
    }

    /// The enum, composite and domain types a table's columns use, directly or through arrays,
    /// domains and other composites, each with its definition, the ones others use first: what a
    /// target needs before it can create the table (`x-sql-types`). Attribute and base types are
    /// written schema-qualified wherever they are not built in.
    fn user_types(&mut self, oid: u32, what: &str) -> Result<Vec<Json>> {
        self.client
            .batch_execute("SET LOCAL search_path = pg_catalog")
            .map_err(|e| self.err(what, e))?;
        let rows = self.query(
            what,
            "WITH RECURSIVE uses(oid, depth) AS (
                 SELECT a.atttypid, 0 FROM pg_attribute a
                  WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
               UNION
                 SELECT x.oid, u.depth + 1
                   FROM uses u JOIN pg_type t ON t.oid = u.oid,
                        LATERAL (SELECT t.typelem WHERE t.typcategory = 'A' AND t.typelem <> 0
                                 UNION ALL SELECT t.typbasetype WHERE t.typtype = 'd'
                                 UNION ALL SELECT ca.atttypid FROM pg_attribute ca
                                  WHERE t.typtype = 'c' AND ca.attrelid = t.typrelid
                                    AND ca.attnum > 0 AND NOT ca.attisdropped) x(oid)
                  WHERE u.depth < 32)
             SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname), t.typtype::text,
                    CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e
                         WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END,
                    CASE WHEN t.typtype = 'c' THEN ARRAY(SELECT json_build_object('name', ca.attname::text,
                              'type', format_type(ca.atttypid, ca.atttypmod))::text
                         FROM pg_attribute ca WHERE ca.attrelid = t.typrelid AND ca.attnum > 0
                          AND NOT ca.attisdropped ORDER BY ca.attnum) END,
                    CASE WHEN t.typtype = 'd' THEN json_build_object(
                         'base', format_type(t.typbasetype, t.typtypmod),
                         'not_null', t.typnotnull,
                         'default', pg_get_expr(t.typdefaultbin, 0),
                         'collation', (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                                         FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                        WHERE co.oid = t.typcollation AND t.typcollation <> bt.typcollation),
                         'checks', coalesce((SELECT json_agg(json_build_object('name', k.conname::text,
                                         'definition', pg_get_constraintdef(k.oid)) ORDER BY k.conname)
                                       FROM pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c'),
                                     '[]'::json))::text END
               FROM (SELECT oid, max(depth) AS depth FROM uses GROUP BY oid) u
               JOIN pg_type t ON t.oid = u.oid
               JOIN pg_namespace n ON n.oid = t.typnamespace
               LEFT JOIN pg_class c ON c.oid = t.typrelid
               LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
              WHERE t.typtype IN ('e', 'd') OR (t.typtype = 'c' AND c.relkind = 'c')
              ORDER BY u.depth DESC, 1",
            &[&oid],
        );
        let reset = self.client.batch_execute("SET LOCAL search_path TO DEFAULT");
        let rows = rows?;
        reset.map_err(|e| self.err(what, e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                let kind: String = r.get(1);
                if kind == "e" {
                    json!({"name": name, "enum": r.get::<_, Option<Vec<String>>>(2).unwrap_or_default()})
                } else if kind == "d" {
                    let domain = r.get::<_, Option<String>>(4).unwrap_or_default();
                    json!({"name": name, "domain": serde_json::from_str::<Json>(&domain).unwrap_or(Json::Null)})
                } else {
                    let attributes: Vec<Json> = r
                        .get::<_, Option<Vec<String>>>(3)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|a| serde_json::from_str(a).ok())
                        .collect();
                    json!({"name": name, "attributes": attributes})
                }
            })
            .collect())
    }

    /// How a partitioned table is partitioned (`x-sql-partition`): its partition key `by`, and its
    /// partitions, parents before their own partitions, each with its bound and, when it is
    /// partitioned in turn, its key; `of` names the partition's parent, null for this table. Its
    /// rows are exported through the table itself, as one stream.
    fn partitioning(&mut self, oid: u32, by: &str, what: &str) -> Result<Json> {
        let rows = self.query(
            what,
            "WITH RECURSIVE tree(relid, parent, depth) AS (
                 SELECT i.inhrelid, i.inhparent, 1 FROM pg_inherits i WHERE i.inhparent = $1
               UNION ALL
                 SELECT i.inhrelid, i.inhparent, t.depth + 1
                   FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid WHERE t.depth < 32)
             SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                    CASE WHEN t.parent <> $1 THEN quote_ident(pn.nspname) || '.' || quote_ident(p.relname) END,
                    pg_get_expr(c.relpartbound, c.oid),
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
               FROM tree t
               JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_class p ON p.oid = t.parent JOIN pg_namespace pn ON pn.oid = p.relnamespace
              WHERE c.relispartition
              ORDER BY t.depth, 1",
            &[&oid],
        )?;
        let partitions: Vec<Json> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.get::<_, String>(0),
                    "of": r.get::<_, Option<String>>(1),
                    "bound": r.get::<_, Option<String>>(2),
                    "by": r.get::<_, Option<String>>(3),
                })
            })
            .collect();
        Ok(json!({"by": by, "partitions": partitions}))
    }

    fn attribute_names(&mut self, schema: &str, table: &str, nums: &[i16]) -> Result<Vec<String>> {
        let rows = self.query(
            "reading a foreign key",
            "SELECT a.attname::text FROM pg_attribute a JOIN unnest($3::int2[]) WITH ORDINALITY k(n, o) ON a.attnum = k.n
             WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                 WHERE n.nspname = $1 AND c.relname = $2)
             ORDER BY k.o",
            &[&schema, &table, &nums],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// One row of a COPY, as the exporter reads it.
struct Row<'a> {
    values: &'a [Value],
}

impl RowAccess for Row<'_> {
    fn get(&self, i: usize) -> ValueRef<'_> {
        self.values[i].as_ref()
    }

    fn rowid(&self) -> Option<i64> {
        None
    }
}

/// The stream value of one COPY text field.
fn read_field(kind: Kind, t: &[u8]) -> std::result::Result<Value, String> {
    let text = || std::str::from_utf8(t).map_err(|_| "not UTF-8".to_owned());
    Ok(match kind {
        Kind::Int => Value::Integer(text()?.parse().map_err(|_| format!("{:?} is not an integer", text()))?),
        Kind::Float4 => Value::Real(text()?.parse::<f32>().map_err(|e| e.to_string())? as f64),
        Kind::Float8 => Value::Real(text()?.parse::<f64>().map_err(|e| e.to_string())?),
        Kind::Bool => Value::Integer(i64::from(t == b"t")),
        Kind::Bytea => match t.strip_prefix(b"\\x") {
            Some(h) => Value::Blob(hex::decode(h).map_err(|e| e.to_string())?),
            None => return Err("bytea not in hex form".into()),
        },
        Kind::Timestamp | Kind::TimestampTz => {
            let mut v = t.to_vec();
            if v.len() > 10 && v[10] == b' ' {
                v[10] = b'T';
            }
            if kind == Kind::TimestampTz && v.ends_with(b"+00") {
                v.truncate(v.len() - 3);
                v.push(b'Z');
            }
            Value::Text(v)
        }
        Kind::Dynamic => {
            let mut d = serde_json::Deserializer::from_slice(t);
            serde::de::DeserializeSeed::deserialize(value::ValueSeed(Codec::Any), &mut d).map_err(|e| e.to_string())?
        }
        Kind::Decimal | Kind::Money | Kind::Text | Kind::Date | Kind::JsonText | Kind::Jsonb | Kind::Array => {
            Value::Text(t.to_vec())
        }
    })
}

/// A key value as an SQL literal of its column's type, for the resume condition.
fn key_literal(v: &Value, col: &PgColumn) -> String {
    let text = match (v, col.kind) {
        (Value::Integer(i), Kind::Bool) => (if *i == 1 { "true" } else { "false" }).to_owned(),
        (Value::Integer(i), _) => i.to_string(),
        (Value::Real(f), _) if f.is_nan() => "NaN".into(),
        (Value::Real(f), _) if f.is_infinite() => (if *f > 0.0 { "Infinity" } else { "-Infinity" }).into(),
        (Value::Real(f), _) => ryu::Buffer::new().format_finite(*f).to_owned(),
        (Value::Blob(b), _) => format!("\\x{}", hex::encode(b)),
        (v, Kind::Dynamic) => {
            let mut out = Vec::new();
            pgcopy::dynamic_json(v.as_ref(), &mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
        (Value::Text(t), _) => String::from_utf8_lossy(t).into_owned(),
        (Value::Null, _) => return "NULL".into(),
    };
    let ty = if col.kind == Kind::Money {
        "money"
    } else {
        col.sql_type.as_str()
    };
    format!("'{}'::{ty}", text.replace('\'', "''"))
}

impl Source for PgSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "postgres".into(),
            address: self.address.redacted.clone(),
            selection: None,
            shard: None,
        }
    }

    fn discover(&mut self, selection: &Selection) -> Result<Vec<StreamPlan>> {
        follow::warn_if_forgotten(self);
        self.snapshot()?;
        let rows = self.query(
            "listing tables",
            "SELECT c.oid, n.nspname::text, c.relname::text, c.reltuples,
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_%' AND c.relname NOT LIKE '\\_ferry\\_%'
             ORDER BY n.nspname, c.relname",
            &[],
        )?;
        let all: Vec<(u32, String, String, f32, Option<String>)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        let pairs: Vec<(String, String)> = all
            .iter()
            .map(|(_, s, t, _, _)| (format!("{s}.{t}"), t.clone()))
            .collect();
        let unmatched = selection.unmatched(&pairs);
        if !unmatched.is_empty() {
            let known: Vec<&str> = pairs.iter().map(|(s, _)| s.as_str()).collect();
            return Err(Error::usage(format!(
                "{}: no table named {} (tables: {})",
                self.address.redacted,
                unmatched.join(", "),
                known.join(", ")
            )));
        }
        let mut found = Vec::new();
        for (oid, schema, name, estimate, partition_by) in &all {
            if selection.includes(&format!("{schema}.{name}"), name) {
                found.push(self.describe(*oid, schema, name, *estimate, partition_by.as_deref())?);
            }
        }
        let names: Vec<&str> = found.iter().map(|(_, s, _)| s.stream.as_str()).collect();
        let refs: Vec<Vec<&str>> = found
            .iter()
            .map(|(_, _, p)| p.iter().map(String::as_str).collect())
            .collect();
        let (order, cycle) = crate::connect::parents_first(&names, &refs);
        if !cycle.is_empty() {
            tracing::warn!(
                tables = %cycle.join(", "),
                "foreign keys form a cycle: these tables are exported in name order; targets add foreign keys after all data"
            );
        }
        let mut slots: Vec<Option<(PgTable, Schema, Vec<String>)>> = found.into_iter().map(Some).collect();
        let mut plans = Vec::with_capacity(slots.len());
        for i in order {
            let Some((table, schema, _)) = slots[i].take() else {
                continue;
            };
            let filter = selection.filter_for(&schema.stream, &table.name).map(str::to_owned);
            let resumable = !table.key.is_empty();
            self.tables.insert(schema.stream.clone(), table);
            plans.push(StreamPlan {
                schema,
                filter,
                resumable,
            });
        }
        Ok(plans)
    }

    fn scan(
        &mut self,
        plan: &StreamPlan,
        shape: &RowShape,
        after: Option<&Bookmark>,
        row: &mut dyn FnMut(&dyn RowAccess) -> Result<()>,
    ) -> Result<()> {
        self.snapshot()?;
        let stream = plan.schema.stream.clone();
        let t = crate::connect::discovered(&self.tables, &self.address.redacted, &stream)?.clone();
        // The stream's columns, in its order (the shape comes from the SCHEMA discover made).
        let cols: Vec<&PgColumn> = shape
            .columns
            .iter()
            .map(|c| t.columns.iter().find(|p| p.name == c.name))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::new(ErrorKind::Source, format!("{stream}: the stream's columns changed")))?;
        let select: Vec<String> = cols
            .iter()
            .map(|c| match c.kind {
                Kind::Money => format!("{}::numeric", quote(&c.name)),
                Kind::Array => format!("array_to_json({})", quote(&c.name)),
                _ => quote(&c.name),
            })
            .collect();
        let mut sql = format!(
            "SELECT {} FROM {}",
            if select.is_empty() {
                "NULL".to_owned()
            } else {
                select.join(", ")
            },
            t.qualified()
        );
        let mut conds = Vec::new();
        if let Some(f) = &plan.filter {
            conds.push(format!("({f})"));
        }
        let key_cols: Vec<&PgColumn> = t.key.iter().map(|&i| &t.columns[i]).collect();
        if let Some(b) = after.and_then(|b| b.after.as_ref())
            && !key_cols.is_empty()
        {
            let mut lits = Vec::new();
            for c in &key_cols {
                let Some(j) = b.get(&c.name) else {
                    return Err(Error::new(
                        ErrorKind::Input,
                        format!("{stream}: the resume point has no value for key column {}", c.name),
                    ));
                };
                let codec = shape
                    .column_index(&c.name)
                    .map_or(Codec::Any, |i| shape.columns[i].codec);
                let v = value::decode_json(j, codec).map_err(|e| {
                    Error::new(
                        ErrorKind::Input,
                        format!("{stream}: the resume point's {}: {e}", c.name),
                    )
                })?;
                lits.push(key_literal(&v, c));
            }
            let names: Vec<String> = key_cols.iter().map(|c| quote(&c.name)).collect();
            conds.push(format!("({}) > ({})", names.join(", "), lits.join(", ")));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        if !key_cols.is_empty() {
            let names: Vec<String> = key_cols.iter().map(|c| quote(&c.name)).collect();
            sql.push_str(" ORDER BY ");
            sql.push_str(&names.join(", "));
        }
        let copy = format!("COPY ({sql}) TO STDOUT");
        let what = format!("reading {stream}");
        let mut reader = match self.client.copy_out(copy.as_str()) {
            Ok(r) => r,
            Err(e) => {
                let e = pg_error(&self.address.redacted, &what, e);
                return Err(Error::new(ErrorKind::Source, e.to_string()));
            }
        };
        let kinds: Vec<Kind> = cols.iter().map(|c| c.kind).collect();
        let mut buf = Vec::with_capacity(4096);
        let mut fields = Vec::with_capacity(kinds.len());
        let mut values = vec![Value::Null; kinds.len()];
        let address = self.address.redacted.clone();
        let mut n: u64 = 0;
        loop {
            let more = reader.next_row(&mut buf, &mut fields).map_err(|e| {
                Error::new(
                    ErrorKind::Source,
                    format!(
                        "{address}: {what}: {e}; run the same pipeline again with ferry-export --resume to continue"
                    ),
                )
            })?;
            if !more {
                break;
            }
            if fields.len() != kinds.len().max(1) {
                return Err(Error::new(
                    ErrorKind::Source,
                    format!(
                        "{address}: {what}: a row with {} fields, expected {}",
                        fields.len(),
                        kinds.len()
                    ),
                ));
            }
            for (i, kind) in kinds.iter().enumerate() {
                values[i] = match &fields[i] {
                    None => Value::Null,
                    Some(r) => read_field(*kind, &buf[r.clone()]).map_err(|e| {
                        Error::new(
                            ErrorKind::Source,
                            format!("{address}: {what}: column {} of row {}: {e}", cols[i].name, n + 1),
                        )
                    })?,
                };
            }
            n += 1;
            row(&Row { values: &values })?;
        }
        Ok(())
    }

    fn changes(&mut self) -> Option<&mut dyn crate::connect::ChangeSource> {
        Some(self)
    }

    fn shard_range(&mut self, plan: &StreamPlan, shard: Shard) -> Result<(Range, Option<String>)> {
        self.snapshot()?;
        let stream = &plan.schema.stream;
        let t = crate::connect::discovered(&self.tables, &self.address.redacted, stream)?.clone();
        let Some(col) = t.key.first().map(|&i| t.columns[i].clone()) else {
            let whole = shard.n == 1 || shard.owns_whole(stream);
            let range = if whole { Range::All } else { Range::Nothing };
            let cond = range.condition(&|c| quote(c), &|_| String::new());
            return Ok((range, cond));
        };
        let mut order = PgKeyOrder {
            source: self,
            table: t.qualified(),
            column: col.clone(),
            filter: plan.filter.as_ref().map(|f| format!(" AND ({f})")).unwrap_or_default(),
            what: format!("splitting {stream} into shards"),
            counted: None,
        };
        let range = crate::connect::shard_range_of(&col.name, shard, &mut order)?;
        // Text in byte order, bounds written as the validation writes them on either side.
        let t = &col.sql_type;
        let cond = range.condition(&|c| super::catalog::in_byte_order(&quote(c), t), &|v| {
            super::catalog::literal_of(v, t)
        });
        Ok((range, cond))
    }
}

/// A table's first key column, read for a shard's bounds (in the column's own order and
/// collation, the one the shard's condition compares in).
struct PgKeyOrder<'s> {
    source: &'s mut PgSource,
    table: String,
    column: PgColumn,
    /// ` AND (--where)`, or nothing.
    filter: String,
    what: String,
    /// Rows with a key, once counted (a count reads the whole table).
    counted: Option<u64>,
}

impl crate::connect::KeyOrder for PgKeyOrder<'_> {
    fn ends(&mut self) -> Result<Option<(Value, Value)>> {
        let (c, table, filter) = (quote(&self.column.name), &self.table, &self.filter);
        if self.column.kind != Kind::Int {
            // Not integers: the bounds come from row positions, once there are rows.
            return Ok((self.count()? > 0).then_some((Value::Null, Value::Null)));
        }
        let sql = format!("SELECT min({c})::int8, max({c})::int8 FROM {table} WHERE {c} IS NOT NULL{filter}");
        let r = self.source.query(&self.what, &sql, &[])?;
        let (min, max): (Option<i64>, Option<i64>) = (r[0].get(0), r[0].get(1));
        Ok(min.zip(max).map(|(a, b)| (Value::Integer(a), Value::Integer(b))))
    }

    fn count(&mut self) -> Result<u64> {
        if let Some(n) = self.counted {
            return Ok(n);
        }
        let (c, table, filter) = (quote(&self.column.name), &self.table, &self.filter);
        let sql = format!("SELECT count({c}) FROM {table} WHERE {c} IS NOT NULL{filter}");
        let n: i64 = self.source.query(&self.what, &sql, &[])?[0].get(0);
        self.counted = Some(n as u64);
        Ok(n as u64)
    }

    fn at(&mut self, position: u64) -> Result<Option<Value>> {
        let (c, table, filter) = (quote(&self.column.name), &self.table, &self.filter);
        let order = super::catalog::in_byte_order(&c, &self.column.sql_type);
        let sql =
            format!("SELECT {c}::text FROM {table} WHERE {c} IS NOT NULL{filter} ORDER BY {order} OFFSET $1 LIMIT 1");
        let r = self.source.query(&self.what, &sql, &[&(position as i64)])?;
        Ok(r.first().map(|r| Value::text(r.get::<_, String>(0).as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_as_the_protocol_says() {
        assert_eq!(
            read_field(Kind::Int, b"-9223372036854775808"),
            Ok(Value::Integer(i64::MIN))
        );
        assert_eq!(read_field(Kind::Float4, b"1.1"), Ok(Value::Real(1.1f32 as f64)));
        assert!(matches!(read_field(Kind::Float8, b"NaN"), Ok(Value::Real(f)) if f.is_nan()));
        assert_eq!(
            read_field(Kind::Float8, b"-Infinity"),
            Ok(Value::Real(f64::NEG_INFINITY))
        );
        assert_eq!(read_field(Kind::Bool, b"t"), Ok(Value::Integer(1)));
        assert_eq!(read_field(Kind::Bytea, b"\\x00ff"), Ok(Value::Blob(vec![0, 255])));
        assert_eq!(
            read_field(Kind::Timestamp, b"2024-02-29 23:59:59.999999"),
            Ok(Value::text("2024-02-29T23:59:59.999999"))
        );
        assert_eq!(
            read_field(Kind::TimestampTz, b"2024-02-29 23:59:59+00"),
            Ok(Value::text("2024-02-29T23:59:59Z"))
        );
        assert_eq!(read_field(Kind::Decimal, b"1.50"), Ok(Value::text("1.50")));
        assert_eq!(read_field(Kind::Dynamic, b"{\"real\": \"1.5\"}"), Ok(Value::Real(1.5)));
        assert_eq!(read_field(Kind::Dynamic, b"7"), Ok(Value::Integer(7)));
    }

    #[test]
    fn key_literals_are_typed_and_quoted() {
        let col = |kind, t: &str| PgColumn {
            name: "k".into(),
            sql_type: t.into(),
            kind,
        };
        assert_eq!(
            key_literal(&Value::Integer(5), &col(Kind::Int, "bigint")),
            "'5'::bigint"
        );
        assert_eq!(
            key_literal(&Value::text("it's"), &col(Kind::Text, "text")),
            "'it''s'::text"
        );
        assert_eq!(
            key_literal(&Value::Integer(1), &col(Kind::Bool, "boolean")),
            "'true'::boolean"
        );
        assert_eq!(
            key_literal(&Value::Blob(vec![1]), &col(Kind::Bytea, "bytea")),
            "'\\x01'::bytea"
        );
        assert_eq!(
            key_literal(&Value::text("1.5"), &col(Kind::Money, "money")),
            "'1.5'::money"
        );
    }
}
