//! Dialects: a stream's columns and values recast for another engine (`ferry-transform
//! --dialect`). A SCHEMA says whose types it carries in `x-sql-dialect` (`postgres`, `sqlite`; a
//! stream that does not say is taken as SQLite's); converting to the dialect it already has
//! changes nothing.
//!
//! # PostgreSQL to SQLite (and D1)
//!
//! | PostgreSQL | SQLite declared type | value |
//! |---|---|---|
//! | smallint, integer, bigint | SMALLINT, INTEGER, INTEGER (a one-column bigint key becomes the rowid) | same |
//! | real, double precision | REAL | same |
//! | numeric(p,s) with p <= 15 | `NUMERIC(p,s)` | the number (SQLite keeps 15 significant digits exactly, and compares and orders it as a number); with `--numeric text`, as below |
//! | numeric wider or unbounded, money | `NUMERIC TEXT(p,s)` (TEXT affinity: SQLite never rounds it) | the exact digits as text (compared and ordered as text: a warning says so, and `ferry-validate` finds `compared_as_text`); with `--numeric real`, REAL (rounded: asked for) |
//! | boolean | BOOLEAN | 0 / 1 |
//! | text, varchar(n), char(n) | TEXT, VARCHAR(n), CHAR(n) | same |
//! | bytea | BLOB | same |
//! | date, time | DATE, TIME | same text |
//! | timestamp | DATETIME | `YYYY-MM-DD HH:MM:SS[.ffffff]` (SQLite's datetime text) |
//! | timestamptz | TIMESTAMPTZ | the same, in UTC, without the `Z` |
//! | timetz, interval, uuid, inet, cidr, macaddr | TIMETZ, INTERVAL, UUID, INET... | same text |
//! | json, jsonb | `JSON TEXT`, `JSONB TEXT` | the JSON text |
//! | arrays | `INTEGER ARRAY` (the element type; `TEXT ARRAY` for an enum's or another type of the source's own) | the JSON array as text |
//! | arrays of composites | TEXT | PostgreSQL's array text |
//! | enums, anything else | TEXT | same text |
//!
//! Defaults and identity clauses (PostgreSQL expressions) are dropped; PostgreSQL's own index
//! statements are dropped (the target builds indexes from their columns); indexes on expressions
//! are left out, with a warning, and a partial index's condition loses PostgreSQL's casts
//! (`'migrated'::text`), or the index is left out, with a warning, where something else of
//! PostgreSQL's own remains (`= ANY (ARRAY[...])`).
//!
//! # SQLite to PostgreSQL
//!
//! Each column gets the type the PostgreSQL importer would choose (see
//! [`pg_type_for`]), and its values the forms PostgreSQL streams use:
//! 0/1 to booleans where the declared type says BOOLEAN, `YYYY-MM-DD HH:MM:SS` text to ISO
//! timestamps (`T`; `Z` added for TIMESTAMPTZ), numbers to exact decimal text for NUMERIC/DECIMAL
//! columns, JSON text to JSON values for JSON columns and arrays. The names the SQLite dialect
//! writes come back as the types they stood for, so PostgreSQL -> SQLite -> PostgreSQL keeps every
//! type but enums (which come back as text) and array typmods.
//!
//! One concern, kept whole (over 800 lines): the type and value mapping between engines, a table
//! per direction.

use serde_json::{Value as Json, json};

use crate::protocol::Schema;
use crate::value::{self, Codec, JSON_MEDIA_TYPE, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    Sqlite,
    /// Cloudflare D1: SQLite's types.
    D1,
    Postgres,
}

impl Dialect {
    fn family(self) -> &'static str {
        match self {
            Dialect::Sqlite | Dialect::D1 => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// How PostgreSQL numeric columns land in SQLite, which holds a number exactly only up to 15
/// significant digits (more, and its NUMERIC affinity rounds them) and compares text as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NumericAs {
    /// numeric(p,s) with p <= 15 as a number (NUMERIC: exact, compared and ordered as a
    /// number); wider or unbounded numeric as exact digits in TEXT, with a warning
    #[default]
    Auto,
    /// Exact digits as TEXT (compared and ordered as text)
    Text,
    /// REAL (rounded to a double)
    Real,
}

/// The most significant digits SQLite keeps exactly in a number.
pub(crate) const SQLITE_EXACT_DIGITS: u32 = 15;

/// Whether a PostgreSQL column (`x-sql-type`) is a numeric whose values SQLite can hold exactly
/// only as text (wider than 15 digits, or unbounded): compared and ordered there as text.
pub(crate) fn numeric_only_exact_as_text(prop: &Json) -> bool {
    let t = prop
        .get("x-sql-type")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    match t.split_once('(') {
        Some((base, mods)) => base.trim() == "numeric" && !fits_sqlite_number(mods.trim_end_matches(')')),
        // money: up to 17 digits (±92233720368547758.07).
        None => matches!(t.trim(), "numeric" | "money"),
    }
}

/// Whether a numeric's typmod (`12,2`) bounds its values to what SQLite keeps exactly.
fn fits_sqlite_number(mods: &str) -> bool {
    mods.split(',')
        .next()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|p| p <= SQLITE_EXACT_DIGITS)
}

/// What happens to one column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conv {
    Keep,
    /// `2024-01-01T12:00:00Z` -> `2024-01-01 12:00:00`.
    TimestampToSqlite,
    /// `2024-01-01 12:00:00` -> `2024-01-01T12:00:00`, with `Z` added when `tz` and no offset.
    TimestampToPg {
        tz: bool,
    },
    DecimalToReal,
    /// Decimal text of at most 15 significant digits to the number SQLite keeps exactly (NaN and
    /// the infinities stay text: SQLite would make NULL of a NaN).
    DecimalToNumber,
    /// Numbers to exact decimal text.
    ToDecimalText,
    /// 0/1 only.
    Boolean,
    /// Text that must be JSON.
    Json,
}

/// A stream's SCHEMA in the new dialect, and how its records change.
#[derive(Debug, Clone)]
pub(crate) struct Converted {
    pub schema: Schema,
    convs: Vec<Conv>,
    /// Some value changes (so the STREAM_END digest does).
    pub values_change: bool,
    /// Some column's JSON form changes (so records are rewritten).
    pub records_change: bool,
}

/// The dialect a SCHEMA's types are in.
pub(crate) fn dialect_of(schema: &Schema) -> &str {
    schema
        .extra
        .get("x-sql-dialect")
        .and_then(Json::as_str)
        .unwrap_or("sqlite")
}

/// Recast a SCHEMA for `to`.
pub(crate) fn convert(schema: &Schema, to: Dialect, numeric: NumericAs) -> Converted {
    let mut out = schema.clone();
    let mut convs = Vec::with_capacity(schema.schema.properties.len());
    if dialect_of(schema) == to.family() {
        convs.resize(schema.schema.properties.len(), Conv::Keep);
        return Converted {
            schema: out,
            convs,
            values_change: false,
            records_change: false,
        };
    }
    let mut records_change = false;
    for (name, prop) in out.schema.properties.iter_mut() {
        // The domain is the source's own type, defined in `x-sql-types` (dropped below); a
        // collation is named in the source's terms.
        if let Some(p) = prop.as_object_mut() {
            p.remove("x-sql-domain");
            p.remove("x-sql-collation");
        }
        let before = Codec::from_property(prop);
        let conv = match to {
            Dialect::Sqlite | Dialect::D1 => to_sqlite(&format!("{}.{name}", schema.stream), prop, numeric),
            Dialect::Postgres => {
                let rowid = is_rowid(schema, name, prop);
                to_postgres(prop, rowid)
            }
        };
        records_change |= Codec::from_property(prop) != before || conv != Conv::Keep;
        convs.push(conv);
    }
    match to {
        Dialect::Sqlite | Dialect::D1 => {
            out.indexes.retain_mut(|ix| {
                if ix.columns.is_empty() {
                    tracing::warn!(stream = %schema.stream, index = %ix.name, "an index on expressions is not carried to SQLite");
                    return false;
                }
                // A partial index's condition is in PostgreSQL's SQL: its casts go.
                let Some(cond) = &ix.where_sql else { return true };
                match predicate_for_sqlite(cond) {
                    Some(c) => {
                        ix.where_sql = Some(c);
                        true
                    }
                    None => {
                        tracing::warn!(stream = %schema.stream, index = %ix.name, condition = %cond, "a partial index whose condition SQLite cannot read is not carried to SQLite");
                        false
                    }
                }
            });
        }
        Dialect::Postgres => {}
    }
    for ix in &mut out.indexes {
        ix.sql = None;
    }
    // Type, generated-column and CHECK definitions are written in the source's SQL.
    out.extra.remove("x-sql-types");
    out.extra.remove("x-sql-generated");
    out.extra.remove("x-sql-checks");
    out.extra.remove("x-sql-partition");
    out.extra.insert("x-sql-dialect".into(), json!(to.family()));
    let values_change = convs.iter().any(|c| {
        matches!(
            c,
            Conv::TimestampToSqlite
                | Conv::TimestampToPg { .. }
                | Conv::DecimalToReal
                | Conv::DecimalToNumber
                | Conv::ToDecimalText
        )
    });
    Converted {
        schema: out,
        convs,
        values_change,
        records_change,
    }
}

/// The rowid of an SQLite table: its one-column `INTEGER PRIMARY KEY`.
fn is_rowid(schema: &Schema, name: &str, prop: &Json) -> bool {
    let declared = prop.get("x-sql-type").and_then(Json::as_str).unwrap_or("");
    schema.key_properties.len() == 1
        && schema.key_properties[0] == name
        && declared.eq_ignore_ascii_case("INTEGER")
        && schema.sqlite.as_ref().is_some_and(|s| !s.without_rowid)
}

/// `type` with or without null, as the property had it.
fn set_type(p: &mut serde_json::Map<String, Json>, types: &[&str]) {
    let nullable = crate::value::property_nullable(&Json::Object(p.clone()));
    let mut t: Vec<&str> = types.to_vec();
    if nullable {
        t.push("null");
    }
    p.insert("type".into(), if t.len() == 1 { json!(t[0]) } else { json!(t) });
}

fn to_sqlite(name: &str, prop: &mut Json, numeric: NumericAs) -> Conv {
    let json_array = crate::value::property_types(prop).contains(&"array");
    let only_exact_as_text = numeric_only_exact_as_text(prop);
    let Some(p) = prop.as_object_mut() else {
        return Conv::Keep;
    };
    let pg = p
        .get("x-sql-type")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let dynamic = p.get("x-sqlite-dynamic").and_then(Json::as_bool) == Some(true);
    let has_enum = p.contains_key("enum");
    p.remove("x-sql-default");
    p.remove("x-sql-identity");
    p.remove("x-sql-sequence");
    if dynamic {
        p.remove("x-sql-type");
        return Conv::Keep;
    }
    let (base, mods) = match pg.split_once('(') {
        Some((b, rest)) => (
            format!("{}{}", b.trim(), rest.split_once(')').map_or("", |(_, tail)| tail)),
            rest.split(')').next().map(|m| m.replace(' ', "")),
        ),
        None => (pg.clone(), None),
    };
    let with_mods = |name: &str| match &mods {
        Some(m) => format!("{name}({m})"),
        None => name.to_owned(),
    };
    let mut conv = Conv::Keep;
    let declared: String = match base.as_str() {
        // PostgreSQL's array text (an array of composites) is text to SQLite.
        b if b.ends_with("[]") && !json_array => "TEXT".into(),
        b if b.ends_with("[]") => {
            set_type(p, &["string"]);
            let element = b.trim_end_matches("[]");
            // An enum's (or any type of the source's own) comes back as text, as the enum does.
            let element = if builtin(element) { element } else { "text" };
            format!("{} ARRAY", element.to_ascii_uppercase())
        }
        "smallint" => "SMALLINT".into(),
        "integer" | "bigint" => "INTEGER".into(),
        "real" | "double precision" => "REAL".into(),
        "numeric" | "money" if numeric == NumericAs::Real => {
            p.remove("format");
            set_type(p, &["number"]);
            conv = Conv::DecimalToReal;
            "REAL".into()
        }
        "numeric" if numeric == NumericAs::Auto && !only_exact_as_text => {
            p.remove("format");
            set_type(p, &["number"]);
            conv = Conv::DecimalToNumber;
            with_mods("NUMERIC")
        }
        "numeric" | "money" => {
            if numeric == NumericAs::Auto && only_exact_as_text {
                tracing::warn!(
                    column = %name,
                    r#type = %pg,
                    "this column can hold more than the 15 significant digits SQLite keeps exactly in a number: it goes to SQLite as its exact digits in TEXT, which SQLite compares, orders and sums as text, not as numbers (--numeric real: numbers, rounded to a double; --numeric text: this, without the warning)"
                );
            }
            with_mods("NUMERIC TEXT")
        }
        "boolean" => {
            set_type(p, &["integer"]);
            "BOOLEAN".into()
        }
        "character varying" => with_mods("VARCHAR"),
        "character" => with_mods("CHAR"),
        "text" | "name" | "citext" => "TEXT".into(),
        "bytea" => "BLOB".into(),
        "date" => "DATE".into(),
        "time without time zone" => "TIME".into(),
        "time with time zone" => "TIMETZ".into(),
        "timestamp without time zone" | "timestamp with time zone" => {
            p.remove("format");
            conv = Conv::TimestampToSqlite;
            if base.contains("with time zone") {
                "TIMESTAMPTZ"
            } else {
                "DATETIME"
            }
            .into()
        }
        "interval" | "uuid" | "inet" | "cidr" | "macaddr" | "macaddr8" => base.to_ascii_uppercase(),
        "json" | "jsonb" => {
            set_type(p, &["string"]);
            format!("{} TEXT", base.to_ascii_uppercase())
        }
        _ if has_enum => "TEXT".into(),
        _ => "TEXT".into(),
    };
    p.insert("x-sql-type".into(), json!(declared));
    conv
}

/// Whether a PostgreSQL type name (as `format_type` writes it, without typmod) is built in, so
/// that any PostgreSQL target has it.
fn builtin(name: &str) -> bool {
    matches!(
        name,
        "smallint"
            | "integer"
            | "bigint"
            | "real"
            | "double precision"
            | "numeric"
            | "money"
            | "boolean"
            | "character varying"
            | "character"
            | "text"
            | "name"
            | "\"char\""
            | "bytea"
            | "date"
            | "time without time zone"
            | "time with time zone"
            | "timestamp without time zone"
            | "timestamp with time zone"
            | "interval"
            | "uuid"
            | "inet"
            | "cidr"
            | "macaddr"
            | "macaddr8"
            | "json"
            | "jsonb"
            | "jsonpath"
            | "xml"
            | "bit"
            | "bit varying"
            | "oid"
            | "pg_lsn"
            | "point"
            | "line"
            | "lseg"
            | "box"
            | "path"
            | "polygon"
            | "circle"
            | "tsvector"
            | "tsquery"
            | "int4range"
            | "int8range"
            | "numrange"
            | "daterange"
            | "tsrange"
            | "tstzrange"
    )
}

fn to_postgres(prop: &mut Json, rowid: bool) -> Conv {
    let pg = pg_type_for(prop, PgTyping::default());
    let Some(p) = prop.as_object_mut() else {
        return Conv::Keep;
    };
    let codec = Codec::from_property(&Json::Object(p.clone()));
    p.insert("x-sql-type".into(), json!(pg));
    if rowid {
        p.insert("x-sql-identity".into(), json!("by default"));
    }
    if codec == Codec::Any {
        return Conv::Keep;
    }
    let base = pg.split('(').next().unwrap_or("").to_owned();
    match base.as_str() {
        "boolean" if codec == Codec::Integer => {
            set_type(p, &["boolean"]);
            Conv::Boolean
        }
        "timestamp" | "timestamptz" if codec == Codec::Text => {
            p.insert("format".into(), json!("date-time"));
            Conv::TimestampToPg {
                tz: base == "timestamptz",
            }
        }
        "numeric" => {
            set_type(p, &["string"]);
            p.insert("format".into(), json!("x-singer.decimal"));
            Conv::ToDecimalText
        }
        "jsonb" | "json" if codec == Codec::Text && base == "jsonb" => {
            set_type(p, &["object", "array", "string", "number", "boolean"]);
            Conv::Json
        }
        b if b.ends_with("[]") && codec == Codec::Text => {
            set_type(p, &["array"]);
            Conv::Json
        }
        "date" => {
            p.insert("format".into(), json!("date"));
            Conv::Keep
        }
        "uuid" => {
            p.insert("format".into(), json!("uuid"));
            Conv::Keep
        }
        _ => Conv::Keep,
    }
}

impl Converted {
    /// Recast one row's values in place; a value the new type cannot take is an error naming it.
    pub(crate) fn convert_row(&self, row: &mut [Value]) -> Result<(), String> {
        for (i, conv) in self.convs.iter().enumerate() {
            let v = &mut row[i];
            if *v == Value::Null {
                continue;
            }
            let name = || self.schema.schema.properties.keys().nth(i).cloned().unwrap_or_default();
            match conv {
                Conv::Keep => {}
                Conv::TimestampToSqlite => {
                    if let Value::Text(t) = v {
                        if t.len() > 10 && t[10] == b'T' {
                            t[10] = b' ';
                        }
                        if t.last() == Some(&b'Z') {
                            t.pop();
                        }
                    }
                }
                Conv::TimestampToPg { tz } => {
                    if let Value::Text(t) = v {
                        if t.len() > 10 && t[10] == b' ' {
                            t[10] = b'T';
                        }
                        let has_offset = t.len() > 19 && t[19..].iter().any(|b| matches!(b, b'Z' | b'+' | b'-'));
                        if *tz && t.len() > 10 && !has_offset && !t.ends_with(b"infinity") {
                            t.push(b'Z');
                        }
                    }
                }
                Conv::DecimalToNumber => {
                    if let Value::Text(t) = v
                        && let Some(f) = std::str::from_utf8(t)
                            .ok()
                            .and_then(|s| s.parse::<f64>().ok())
                            .filter(|f| f.is_finite())
                    {
                        *v = Value::Real(f);
                    }
                }
                Conv::DecimalToReal => {
                    if let Value::Text(t) = v {
                        let s = String::from_utf8_lossy(t);
                        let f: f64 = s
                            .parse()
                            .map_err(|_| format!("column {}: {s:?} is not a number", name()))?;
                        *v = Value::Real(f);
                    }
                }
                Conv::ToDecimalText => match v {
                    Value::Integer(n) => *v = Value::text(&n.to_string()),
                    Value::Real(f) if f.is_finite() => *v = Value::text(ryu::Buffer::new().format_finite(*f)),
                    Value::Real(f) => {
                        *v = Value::text(if f.is_nan() {
                            "NaN"
                        } else if *f > 0.0 {
                            "Infinity"
                        } else {
                            "-Infinity"
                        })
                    }
                    Value::Text(_) => {}
                    Value::Blob(_) => return Err(format!("column {}: bytes are not a decimal number", name())),
                    Value::Null => {}
                },
                Conv::Boolean => match v {
                    Value::Integer(0 | 1) => {}
                    other => {
                        return Err(format!(
                            "column {}: {} is not a boolean (0 or 1)",
                            name(),
                            other.as_ref()
                        ));
                    }
                },
                Conv::Json => match v {
                    Value::Text(t) if serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok() => {}
                    other => return Err(format!("column {}: {} is not JSON", name(), other.as_ref())),
                },
            }
        }
        Ok(())
    }
}

/// The declared SQLite type, upper case, without its parenthesised part, and that part.
pub(crate) fn declared(prop: &Json) -> (String, Option<String>) {
    let t = prop
        .get("x-sql-type")
        .and_then(Json::as_str)
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    match t.split_once('(') {
        Some((base, rest)) => (
            base.trim().to_owned(),
            Some(rest.trim_end_matches(')').replace(' ', "")),
        ),
        None => (t, None),
    }
}

/// How stream columns map to PostgreSQL types (see [`pg_type_for`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PgTyping {
    /// The stream's types are PostgreSQL's own: `x-sql-type` is kept as it is.
    pub from_postgres: bool,
    /// Date-times without an offset are UTC (Django and Rails store them so in SQLite): their
    /// columns become `timestamptz`, not `timestamp`.
    pub naive_utc: bool,
}

/// The PostgreSQL type for a stream column (the table is in [`crate::connect::postgres::target`]'s
/// docs). The SQLite-to-PostgreSQL dialect, the PostgreSQL importer and `ferry assess --to
/// postgres` all use it, so they agree.
pub(crate) fn pg_type_for(prop: &Json, typing: PgTyping) -> String {
    let t = pg_type_unzoned(prop, typing.from_postgres);
    match typing.naive_utc {
        true => with_time_zone(&t).unwrap_or(t),
        false => t,
    }
}

/// `timestamp` (with a precision, an array) as the same `timestamp with time zone`; None for any
/// other type.
fn with_time_zone(t: &str) -> Option<String> {
    let rest = t.strip_prefix("timestamp")?;
    if let Some(r) = rest.find(" without time zone") {
        return Some(format!(
            "timestamp{}{}",
            &rest[..r],
            rest[r..].replacen("without", "with", 1)
        ));
    }
    let (precision, tail) = match rest.strip_prefix('(') {
        Some(r) => r.split_once(')').map(|(p, tail)| (format!("({p})"), tail))?,
        None => (String::new(), rest),
    };
    (tail.is_empty() || tail.starts_with('[')).then(|| format!("timestamp{precision} with time zone{tail}"))
}

fn pg_type_unzoned(prop: &Json, from_postgres: bool) -> String {
    if from_postgres && let Some(t) = prop.get("x-sql-type").and_then(Json::as_str) {
        return t.to_owned();
    }
    let (decl, mods) = declared(prop);
    let format = prop.get("format").and_then(Json::as_str).unwrap_or("");
    let is = |names: &[&str]| names.iter().any(|n| decl == *n);
    // The first word decides for the names ferry's SQLite dialect writes (`NUMERIC TEXT(12,2)`,
    // `JSONB TEXT`, `INTEGER ARRAY`), which keep TEXT affinity in SQLite.
    let first = decl.split_whitespace().next().unwrap_or("");
    let numeric = || match &mods {
        Some(m) if m.split(',').all(|p| p.parse::<u32>().is_ok()) => format!("numeric({m})"),
        _ => "numeric".into(),
    };
    if let Some(elem) = decl.strip_suffix(" ARRAY") {
        return format!("{}[]", elem.to_ascii_lowercase());
    }
    match Codec::from_property(prop) {
        Codec::Any => "jsonb".into(),
        Codec::Json => "jsonb".into(),
        Codec::Boolean => "boolean".into(),
        Codec::Bytes(_) => "bytea".into(),
        Codec::Integer if is(&["BOOL", "BOOLEAN"]) => "boolean".into(),
        Codec::Integer if first.contains("DEC") || first == "NUMERIC" => numeric(),
        Codec::Integer => "bigint".into(),
        Codec::Number if first.contains("DEC") || first == "NUMERIC" => numeric(),
        Codec::Number if value::property_types(prop).contains(&"integer") => "numeric".into(),
        // No declared type (a Singer tap's `number`): numeric keeps each value's digits, and sums
        // them exactly, as Singer targets do.
        Codec::Number if decl.is_empty() => "numeric".into(),
        Codec::Number => "double precision".into(),
        Codec::Text if first.contains("DEC") || first == "NUMERIC" || format.ends_with("decimal") => numeric(),
        Codec::Text if format == "date" || is(&["DATE"]) => "date".into(),
        Codec::Text if is(&["TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"]) => "timestamptz".into(),
        Codec::Text if format == "date-time" || is(&["DATETIME", "TIMESTAMP"]) => "timestamp".into(),
        Codec::Text if is(&["TIMETZ", "TIME WITH TIME ZONE"]) => "timetz".into(),
        Codec::Text if format == "time" || is(&["TIME"]) => "time".into(),
        Codec::Text if format == "uuid" || is(&["UUID"]) => "uuid".into(),
        // PostgreSQL's json (exact text) came through the SQLite dialect as `JSON TEXT`; any other
        // JSON column becomes jsonb.
        Codec::Text if decl == "JSON TEXT" => "json".into(),
        Codec::Text if first == "JSON" || first == "JSONB" => "jsonb".into(),
        // Text that a CHECK keeps valid JSON (Django's JSONField on SQLite).
        Codec::Text if prop.get("contentMediaType").and_then(Json::as_str) == Some(JSON_MEDIA_TYPE) => "jsonb".into(),
        Codec::Text if is(&["INTERVAL", "INET", "CIDR", "MACADDR", "MACADDR8"]) => decl.to_ascii_lowercase(),
        Codec::Text if is(&["VARCHAR", "CHARACTER VARYING", "NVARCHAR", "VARYING CHARACTER"]) => match mods {
            Some(n) if n.parse::<u32>().is_ok_and(|n| n > 0) => format!("varchar({n})"),
            _ => "text".into(),
        },
        Codec::Text => "text".into(),
    }
}

/// A partial index's condition as PostgreSQL writes it back (`(status <> 'migrated'::text)`), in
/// SQL SQLite reads: its casts (`::text`, `::character varying(20)`, `::integer[]`) dropped,
/// strings and quoted names left alone. None when something PostgreSQL's own remains (`ARRAY[`,
/// `ANY (`, a cast this cannot see the end of).
fn predicate_for_sqlite(cond: &str) -> Option<String> {
    const MORE: [&str; 4] = [" varying", " precision", " without time zone", " with time zone"];
    let mut out = String::with_capacity(cond.len());
    // The same without its strings and quoted names: what is checked for PostgreSQL's own syntax.
    let mut code = String::with_capacity(cond.len());
    let mut rest = cond;
    while let Some(c) = rest.chars().next() {
        if c == '\'' || c == '"' {
            // A string or a quoted name, whole (a doubled quote stays inside).
            let mut end = 1;
            loop {
                match rest[end..].find(c) {
                    Some(i) if rest[end + i + 1..].starts_with(c) => end += i + 2,
                    Some(i) => {
                        end += i + 1;
                        break;
                    }
                    None => return None,
                }
            }
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else if let Some(after) = rest.strip_prefix("::") {
            // The type: a name (maybe quoted or qualified), words that continue it, a typmod, [].
            let name = after
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || ch == '"'))
                .unwrap_or(after.len());
            if name == 0 {
                return None;
            }
            let mut t = &after[name..];
            for m in MORE {
                if let Some(r) = t.strip_prefix(m) {
                    t = r;
                }
            }
            if let Some(r) = t.strip_prefix('(') {
                t = &r[r.find(')')? + 1..];
            }
            while let Some(r) = t.strip_prefix("[]") {
                t = r;
            }
            rest = t;
        } else {
            out.push(c);
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let upper = code.to_ascii_uppercase();
    (!["ARRAY[", "ANY (", "ANY(", "ALL (", "ALL(", "::"]
        .iter()
        .any(|p| upper.contains(p)))
    .then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg_schema() -> Schema {
        let mut s: Schema = serde_json::from_value(json!({
            "stream": "public.t",
            "schema": {"type": "object", "properties": {
                "id": {"type": "integer", "x-sql-type": "bigint", "x-sql-identity": "always"},
                "n": {"type": ["string", "null"], "format": "x-singer.decimal", "x-sql-type": "numeric(12,2)"},
                "b": {"type": ["boolean", "null"], "x-sql-type": "boolean"},
                "ts": {"type": ["string", "null"], "format": "date-time", "x-sql-type": "timestamp with time zone"},
                "jb": {"type": ["object", "array", "string", "number", "boolean", "null"], "x-sql-type": "jsonb"},
                "a": {"type": ["array", "null"], "x-sql-type": "integer[]"},
                "iv": {"type": ["string", "null"], "x-sql-type": "interval"}
            }},
            "key_properties": ["id"],
            "indexes": [{"name": "e", "columns": [], "sql": "CREATE INDEX e ON public.t (lower(x))"}]
        }))
        .unwrap();
        s.extra.insert("x-sql-dialect".into(), json!("postgres"));
        s
    }

    #[test]
    fn arrays_of_the_sources_own_types_become_text() {
        let mut pg: Schema = serde_json::from_value(json!({
            "stream": "public.t",
            "schema": {"type": "object", "properties": {
                "moods": {"type": ["array", "null"], "x-sql-type": "mood[]"},
                "colors": {"type": ["array", "null"], "x-sql-type": "extra.color[]"},
                "tags": {"type": ["string", "null"], "x-sql-type": "tagged[]"},
                "amounts": {"type": ["array", "null"], "x-sql-type": "numeric(10,2)[]"},
                "n": {"type": "integer", "x-sql-type": "integer", "x-sql-domain": "public.posint"},
                "s": {"type": "string", "x-sql-type": "text", "x-sql-collation": "pg_catalog.\"C\""}
            }},
            "x-sql-types": [{"name": "public.mood", "enum": ["sad"]}],
            "x-sql-generated": [{"name": "g", "type": "integer", "expression": "1"}],
            "x-sql-checks": [{"name": "c", "definition": "CHECK (true)", "valid": true}],
            "x-sql-partition": {"by": "LIST (n)", "partitions": []}
        }))
        .unwrap();
        pg.extra.insert("x-sql-dialect".into(), json!("postgres"));
        let lite = convert(&pg, Dialect::Sqlite, NumericAs::Text).schema;
        let types: Vec<&str> = lite
            .schema
            .properties
            .values()
            .map(|p| p["x-sql-type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["TEXT ARRAY", "TEXT ARRAY", "TEXT", "NUMERIC ARRAY", "INTEGER", "TEXT"]
        );
        for k in ["x-sql-types", "x-sql-generated", "x-sql-checks", "x-sql-partition"] {
            assert!(!lite.extra.contains_key(k), "{k} is PostgreSQL's SQL");
        }
        for p in lite.schema.properties.values() {
            assert!(
                p.get("x-sql-domain").is_none(),
                "the domain goes with the types that define it"
            );
            assert!(p.get("x-sql-collation").is_none(), "PostgreSQL's collation names");
        }
    }

    #[test]
    fn numerics_that_sqlite_keeps_exactly_become_numbers_and_wider_ones_exact_text() {
        let pg = pg_schema();
        let numeric = |t: &str| {
            let mut s = pg.clone();
            s.schema.properties =
                serde_json::from_value(json!({"v": {"type": ["string", "null"], "x-sql-type": t}})).unwrap();
            let c = convert(&s, Dialect::Sqlite, NumericAs::Auto);
            let declared = c.schema.schema.properties["v"]["x-sql-type"]
                .as_str()
                .unwrap()
                .to_owned();
            (declared, c)
        };
        let (declared, c) = numeric("numeric(12,2)");
        assert_eq!(declared, "NUMERIC(12,2)");
        for (text, want) in [
            ("1.50", Value::Real(1.5)),
            ("-9999999999.99", Value::Real(-9999999999.99)),
            ("NaN", Value::text("NaN")),
        ] {
            let mut row = vec![Value::text(text)];
            c.convert_row(&mut row).unwrap();
            assert_eq!(row[0], want, "{text}");
        }
        assert!(c.values_change);
        assert_eq!(numeric("numeric(15)").0, "NUMERIC(15)");
        assert_eq!(numeric("numeric(16,2)").0, "NUMERIC TEXT(16,2)");
        assert_eq!(numeric("numeric").0, "NUMERIC TEXT");
        assert_eq!(numeric("money").0, "NUMERIC TEXT");
    }

    #[test]
    fn postgres_to_sqlite_and_back_keeps_types_and_values() {
        let pg = pg_schema();
        let lite = convert(&pg, Dialect::Sqlite, NumericAs::Text);
        let types: Vec<&str> = lite
            .schema
            .schema
            .properties
            .values()
            .map(|p| p["x-sql-type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "INTEGER",
                "NUMERIC TEXT(12,2)",
                "BOOLEAN",
                "TIMESTAMPTZ",
                "JSONB TEXT",
                "INTEGER ARRAY",
                "INTERVAL"
            ]
        );
        assert!(lite.schema.indexes.is_empty());
        assert!(lite.values_change && lite.records_change);
        let mut row = vec![
            Value::Integer(1),
            Value::text("1.50"),
            Value::Integer(1),
            Value::text("2024-01-01T12:00:00.5Z"),
            Value::text("{\"a\": 1}"),
            Value::text("[1,2]"),
            Value::text("P1D"),
        ];
        lite.convert_row(&mut row).unwrap();
        assert_eq!(row[3], Value::text("2024-01-01 12:00:00.5"));

        // Back: the SQLite export would say these declared types.
        let mut back_in = lite.schema.clone();
        back_in.extra.remove("x-sql-dialect");
        let back = convert(&back_in, Dialect::Postgres, NumericAs::Text);
        let types: Vec<&str> = back
            .schema
            .schema
            .properties
            .values()
            .map(|p| p["x-sql-type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "bigint",
                "numeric(12,2)",
                "boolean",
                "timestamptz",
                "jsonb",
                "integer[]",
                "interval"
            ]
        );
        back.convert_row(&mut row).unwrap();
        assert_eq!(row[3], Value::text("2024-01-01T12:00:00.5Z"));
        assert_eq!(row[1], Value::text("1.50"));
        assert_eq!(
            Codec::from_property(&back.schema.schema.properties["b"]),
            Codec::Boolean
        );
        assert_eq!(Codec::from_property(&back.schema.schema.properties["jb"]), Codec::Json);
    }

    #[test]
    fn same_dialect_changes_nothing_and_bad_values_are_named() {
        let pg = pg_schema();
        let same = convert(&pg, Dialect::Postgres, NumericAs::Text);
        assert_eq!(same.schema, pg);
        assert!(!same.records_change);

        let lite: Schema = serde_json::from_value(json!({
            "stream": "main.t",
            "schema": {"type": "object", "properties": {
                "flag": {"type": "integer", "x-sql-type": "BOOLEAN"},
                "doc": {"type": "string", "x-sql-type": "JSON"}
            }},
            "key_properties": []
        }))
        .unwrap();
        let c = convert(&lite, Dialect::Postgres, NumericAs::Text);
        let err = c.convert_row(&mut [Value::Integer(2), Value::text("{}")]).unwrap_err();
        assert!(err.contains("column flag") && err.contains("not a boolean"), "{err}");
        let err = c
            .convert_row(&mut [Value::Integer(1), Value::text("{oops")])
            .unwrap_err();
        assert!(err.contains("column doc") && err.contains("not JSON"), "{err}");
    }

    #[test]
    fn numeric_as_real_is_asked_for() {
        let c = convert(&pg_schema(), Dialect::Sqlite, NumericAs::Real);
        assert_eq!(c.schema.schema.properties["n"]["x-sql-type"], "REAL");
        let mut row = vec![Value::Null; 7];
        row[1] = Value::text("1.50");
        c.convert_row(&mut row).unwrap();
        assert_eq!(row[1], Value::Real(1.5));
    }

    #[test]
    fn a_partial_index_condition_loses_its_postgresql_casts_or_the_index_goes() {
        assert_eq!(
            predicate_for_sqlite("(status <> 'migrated'::text)").as_deref(),
            Some("(status <> 'migrated')")
        );
        assert_eq!(
            predicate_for_sqlite("((code)::character varying(20) = 'a::b'::character varying) AND (n > (0)::numeric)")
                .as_deref(),
            Some("((code) = 'a::b') AND (n > (0))")
        );
        assert_eq!(
            predicate_for_sqlite("(\"odd::name\" IS NOT NULL AND at > '2020-01-01'::timestamp without time zone)")
                .as_deref(),
            Some("(\"odd::name\" IS NOT NULL AND at > '2020-01-01')")
        );
        assert_eq!(
            predicate_for_sqlite("(deleted_at IS NULL)").as_deref(),
            Some("(deleted_at IS NULL)")
        );
        assert_eq!(
            predicate_for_sqlite("((kind)::text = ANY ((ARRAY['a'::character varying])::text[]))"),
            None
        );
        assert_eq!(predicate_for_sqlite("(x = 'unterminated)"), None);
    }

    #[test]
    fn sqlite_columns_map_to_types_that_hold_them_exactly() {
        let t = |p: Json| pg_type_for(&p, PgTyping::default());
        assert_eq!(t(json!({"type": "integer", "x-sql-type": "INTEGER"})), "bigint");
        assert_eq!(t(json!({"type": "integer", "x-sql-type": "BOOLEAN"})), "boolean");
        assert_eq!(
            t(json!({"type": ["number", "null"], "x-sql-type": "REAL"})),
            "double precision"
        );
        // A Singer tap's number, no declared type: its digits kept, summed exactly.
        assert_eq!(t(json!({"type": ["number", "null"]})), "numeric");
        assert_eq!(
            t(json!({"type": ["number", "null"], "x-sql-type": "NUMERIC(12, 2)"})),
            "numeric(12,2)"
        );
        assert_eq!(t(json!({"type": ["integer", "number"], "x-sql-type": ""})), "numeric");
        assert_eq!(t(json!({"type": "string", "x-sql-type": "DATETIME"})), "timestamp");
        assert_eq!(t(json!({"type": "string", "x-sql-type": "VARCHAR(20)"})), "varchar(20)");
        assert_eq!(t(json!({"type": "string", "x-sql-type": "TEXT"})), "text");
        assert_eq!(t(json!({"type": "string", "contentEncoding": "base64"})), "bytea");
        assert_eq!(
            t(json!({"type": ["integer", "string"], "x-sqlite-dynamic": true})),
            "jsonb"
        );
        assert_eq!(
            pg_type_for(
                &json!({"type": "string", "x-sql-type": "interval"}),
                PgTyping {
                    from_postgres: true,
                    naive_utc: false
                }
            ),
            "interval"
        );
        // Django's JSONField on SQLite: text kept valid by a CHECK, marked by the exporter.
        assert_eq!(
            t(json!({"type": "string", "x-sql-type": "text", "contentMediaType": "application/json"})),
            "jsonb"
        );
        assert_eq!(
            t(json!({"type": "string", "x-sql-type": "char(32)", "format": "uuid"})),
            "uuid"
        );
        // Naive date-times said to be UTC.
        let utc = |p: Json, from_postgres| {
            pg_type_for(
                &p,
                PgTyping {
                    from_postgres,
                    naive_utc: true,
                },
            )
        };
        assert_eq!(
            utc(json!({"type": "string", "x-sql-type": "datetime"}), false),
            "timestamp with time zone"
        );
        assert_eq!(utc(json!({"type": "string", "x-sql-type": "DATE"}), false), "date");
        for (from, to) in [
            ("timestamp without time zone", "timestamp with time zone"),
            ("timestamp(3) without time zone", "timestamp(3) with time zone"),
            ("timestamp without time zone[]", "timestamp with time zone[]"),
            ("timestamp with time zone", "timestamp with time zone"),
            ("timestamp(6)", "timestamp(6) with time zone"),
            ("timestamptz", "timestamptz"),
            ("time without time zone", "time without time zone"),
        ] {
            assert_eq!(utc(json!({"type": "string", "x-sql-type": from}), true), to, "{from}");
        }
        // The names ferry's SQLite dialect writes come back as the types they stood for.
        assert_eq!(
            t(json!({"type": "string", "x-sql-type": "NUMERIC TEXT(12,2)"})),
            "numeric(12,2)"
        );
        assert_eq!(t(json!({"type": "string", "x-sql-type": "JSONB TEXT"})), "jsonb");
        assert_eq!(t(json!({"type": "string", "x-sql-type": "JSON TEXT"})), "json");
        assert_eq!(t(json!({"type": "string", "x-sql-type": "INTEGER ARRAY"})), "integer[]");
        assert_eq!(t(json!({"type": "string", "x-sql-type": "TIMESTAMPTZ"})), "timestamptz");
        assert_eq!(t(json!({"type": "string", "x-sql-type": "INTERVAL"})), "interval");
    }
}
