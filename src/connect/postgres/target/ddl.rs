//! The statements that make a PostgreSQL table for a stream (its types, identity, partitions,
//! generated columns) and those deferred until its data is in (keys, indexes, checks, foreign
//! keys), with the hints for a table the target cannot create.

use serde_json::Value as Json;

use crate::connect::sql::{json_valid_columns, literal, quote};
use crate::dialect::declared;
use crate::error::Error;
use crate::protocol::Schema;
use crate::value::{self, Codec};

/// Where a stream's table is: its schema and name, both quoted and qualified, and whether the
/// stream came from PostgreSQL (and keeps its declared types and schema).
pub(super) struct Placed {
    pub(super) pg_schema: String,
    pub(super) table: String,
    pub(super) qualified: String,
    pub(super) from_pg: bool,
}

/// The statements for a table ferry creates: now (`ddl`), once its data is in (`deferred`: keys,
/// indexes, the identity's sequence), and at the end of the run (`fks`).
pub(super) struct NewTable {
    pub(super) ddl: Vec<String>,
    pub(super) deferred: Vec<String>,
    pub(super) fks: Vec<String>,
}

/// The identity columns of a new table, and how each is generated: what PostgreSQL said, or an
/// SQLite rowid key (`INTEGER PRIMARY KEY` of a rowid table).
fn identity_columns(schema: &Schema, from_pg: bool) -> Vec<(String, &'static str)> {
    let mut identity = Vec::new();
    if from_pg {
        for (n, p) in &schema.schema.properties {
            match p.get("x-sql-identity").and_then(Json::as_str) {
                Some("always") => identity.push((n.clone(), "ALWAYS")),
                Some(_) => identity.push((n.clone(), "BY DEFAULT")),
                None => {}
            }
        }
    } else if let ([k], Some(sq)) = (schema.key_properties.as_slice(), &schema.sqlite)
        && !sq.without_rowid
        && schema
            .schema
            .properties
            .get(k)
            .is_some_and(|p| declared(p).0 == "INTEGER")
    {
        identity.push((k.clone(), "BY DEFAULT"));
    }
    identity
}

/// A new table's column definition for column `n` of type `t`.
fn column_definition(schema: &Schema, n: &str, t: &str, from_pg: bool, identity: Option<&str>) -> String {
    let prop = &schema.schema.properties[n];
    // A domain column is declared with its domain; its values travel as the base type (`t`),
    // which binary COPY into the domain takes, checking it.
    let declared = match prop.get("x-sql-domain").and_then(Json::as_str) {
        Some(d) if from_pg => d,
        _ => t,
    };
    let mut c = format!("{} {declared}", quote(n));
    if from_pg && let Some(coll) = prop.get("x-sql-collation").and_then(Json::as_str) {
        c.push_str(&format!(" COLLATE {coll}"));
    }
    if let Some(how) = identity {
        c.push_str(&format!(" GENERATED {how} AS IDENTITY"));
    }
    if !value::property_nullable(prop) {
        c.push_str(" NOT NULL");
    }
    if let Some(d) = prop
        .get("x-sqlite-default")
        .and_then(Json::as_str)
        .and_then(|d| portable_default(d, t))
    {
        c.push_str(&format!(" DEFAULT {d}"));
    }
    c
}

/// Everything that makes a stream's table `at` with columns of `types`; `place` qualifies the
/// table of another stream (a foreign key's).
pub(super) fn new_table(
    schema: &Schema,
    types: &[(String, String)],
    at: &Placed,
    place: &dyn Fn(&str) -> String,
) -> NewTable {
    let (from_pg, qualified) = (at.from_pg, at.qualified.as_str());
    let identity = identity_columns(schema, from_pg);
    let mut ddl = Vec::new();
    if from_pg {
        ddl.extend(user_types(schema));
    }
    let mut cols: Vec<String> = types
        .iter()
        .map(|(n, t)| {
            let how = identity.iter().find(|(c, _)| c == n).map(|(_, how)| *how);
            column_definition(schema, n, t, from_pg, how)
        })
        .collect();
    if from_pg {
        cols.extend(generated_columns(schema));
    }
    if at.pg_schema != "public" {
        ddl.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&at.pg_schema)));
    }
    let mut create = format!("CREATE TABLE {qualified} (\n  {}\n)", cols.join(",\n  "));
    let (by, partitions) = if from_pg {
        partitions(schema, qualified)
    } else {
        (None, Vec::new())
    };
    if let Some(by) = by {
        create.push_str(&format!(" PARTITION BY {by}"));
    }
    ddl.push(create);
    ddl.extend(partitions);
    for (n, t) in types {
        if t == "jsonb" && Codec::from_property(&schema.schema.properties[n]) == Codec::Any {
            ddl.push(format!(
                "COMMENT ON COLUMN {qualified}.{} IS 'ferry: x-sqlite-dynamic'",
                quote(n)
            ));
        }
    }
    let identity: Vec<String> = identity.into_iter().map(|(c, _)| c).collect();
    let (deferred, fks) = deferred_ddl(schema, qualified, (&at.pg_schema, &at.table), from_pg, &identity, place);
    NewTable { ddl, deferred, fks }
}

/// An identifier as PostgreSQL prints it: bare when it can be (an approximation of
/// `quote_ident`, which also quotes keywords).
pub(super) fn ident(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain { s.to_owned() } else { quote(s) }
}

/// Statements creating the types a PostgreSQL stream's columns use, where they are missing: the
/// enums, composites and domains its SCHEMA defines (`x-sql-types`, the ones others use first),
/// and the enums its columns list labels for (a stream from an older producer).
pub(super) fn user_types(schema: &Schema) -> Vec<String> {
    let enum_body = |labels: &[Json]| {
        let labels: Vec<String> = labels
            .iter()
            .filter_map(Json::as_str)
            .map(|l| literal(Some(l)))
            .collect();
        format!("ENUM ({})", labels.join(", "))
    };
    // Each type's name and the statement creating it.
    let mut defs: Vec<(String, String)> = Vec::new();
    let listed = schema.extra.get("x-sql-types").and_then(Json::as_array);
    for t in listed.into_iter().flatten() {
        let Some(name) = t.get("name").and_then(Json::as_str) else {
            continue;
        };
        if let Some(d) = t.get("domain") {
            let Some(base) = d.get("base").and_then(Json::as_str) else {
                continue;
            };
            let mut create = format!("CREATE DOMAIN {name} AS {base}");
            if let Some(c) = d.get("collation").and_then(Json::as_str) {
                create.push_str(&format!(" COLLATE {c}"));
            }
            if let Some(e) = d.get("default").and_then(Json::as_str) {
                create.push_str(&format!(" DEFAULT {e}"));
            }
            if d.get("not_null").and_then(Json::as_bool) == Some(true) {
                create.push_str(" NOT NULL");
            }
            for c in d.get("checks").and_then(Json::as_array).into_iter().flatten() {
                if let (Some(n), Some(def)) = (
                    c.get("name").and_then(Json::as_str),
                    c.get("definition").and_then(Json::as_str),
                ) {
                    create.push_str(&format!(" CONSTRAINT {} {def}", quote(n)));
                }
            }
            defs.push((name.to_owned(), create));
            continue;
        }
        let body = if let Some(labels) = t.get("enum").and_then(Json::as_array) {
            enum_body(labels)
        } else {
            let attributes: Vec<String> = t
                .get("attributes")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    Some(format!(
                        "{} {}",
                        quote(a.get("name")?.as_str()?),
                        a.get("type")?.as_str()?
                    ))
                })
                .collect();
            format!("({})", attributes.join(", "))
        };
        defs.push((name.to_owned(), format!("CREATE TYPE {name} AS {body}")));
    }
    for p in schema.schema.properties.values() {
        let (Some(t), Some(Json::Array(labels))) = (p.get("x-sql-type").and_then(Json::as_str), p.get("enum")) else {
            continue;
        };
        if defs.iter().any(|(n, _)| n == t) {
            continue;
        }
        defs.push((t.to_owned(), format!("CREATE TYPE {t} AS {}", enum_body(labels))));
    }
    let mut out = Vec::new();
    for (name, create) in defs {
        schema_for(&name, &mut out);
        out.push(format!(
            "DO $ferry$ BEGIN {create}; EXCEPTION WHEN duplicate_object THEN NULL; END $ferry$"
        ));
    }
    out
}

/// Add to `ddl`, once, the statement creating the schema of `name` (schema-qualified as
/// `quote_ident` writes it) when it is not `public`.
pub(super) fn schema_for(name: &str, ddl: &mut Vec<String>) {
    if let Some((ns, _)) = name.split_once('.')
        && ns != "public"
    {
        let create = format!("CREATE SCHEMA IF NOT EXISTS {ns}");
        if !ddl.contains(&create) {
            ddl.push(create);
        }
    }
}

/// A table that cannot be created for a type the target lacks (an extension's, or one defined
/// elsewhere): which columns have it, and what to do.
pub(super) fn missing_type_hint(e: Error, types: &[(String, String)]) -> Error {
    let missing = e
        .message()
        .split_once("type \"")
        .and_then(|(_, rest)| rest.split_once("\" does not exist"))
        .map(|(t, _)| t.trim_end_matches("[]").to_owned());
    let Some(missing) = missing else { return e };
    let base = |t: &str| {
        let t = t.trim_end_matches("[]");
        let t = t.split_once('(').map_or(t, |(b, _)| b);
        t.rsplit('.').next().unwrap_or(t).trim_matches('"').to_owned()
    };
    let unqualified = base(&missing);
    let columns: Vec<String> = types
        .iter()
        .filter(|(_, t)| base(t) == unqualified)
        .map(|(n, t)| format!("{} ({t})", quote(n)))
        .collect();
    lacking(
        e,
        &format!("type {missing}"),
        &columns,
        "CREATE EXTENSION for an extension's type, or CREATE TYPE",
    )
}

/// `e`, a table the target could not create for want of `what`, with the `columns` that use it
/// and what to do (`create`: how to make it there); `e` as it is if no column is known to.
pub(super) fn lacking(e: Error, what: &str, columns: &[String], create: &str) -> Error {
    if columns.is_empty() {
        return e;
    }
    Error::new(
        e.kind(),
        format!(
            "{}; the target has no {what}, used by column {}: create it there first ({create}), or create the table yourself and import without --create; then run the same pipeline again",
            e.message(),
            columns.join(", ")
        ),
    )
}

/// A table that cannot be created for a collation the target lacks (one the source defined with
/// CREATE COLLATION, or a locale this server does not have): which columns use it, and what to do.
pub(super) fn missing_collation_hint(e: Error, schema: &Schema) -> Error {
    let missing = e
        .message()
        .split_once("collation \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(c, _)| c.to_owned())
        .filter(|_| e.message().contains("does not exist"));
    let Some(missing) = missing else { return e };
    let columns: Vec<String> = schema
        .schema
        .properties
        .iter()
        .filter(|(_, p)| {
            p.get("x-sql-collation")
                .and_then(Json::as_str)
                .is_some_and(|c| c.replace('"', "").ends_with(&missing))
        })
        .map(|(n, _)| quote(n))
        .collect();
    lacking(e, &format!("collation {missing}"), &columns, "CREATE COLLATION")
}

/// The generated columns a PostgreSQL stream's table has (`x-sql-generated`), as column
/// definitions: computed by the target, never carried as values.
pub(super) fn generated_columns(schema: &Schema) -> Vec<String> {
    let listed = schema.extra.get("x-sql-generated").and_then(Json::as_array);
    listed
        .into_iter()
        .flatten()
        .filter_map(|g| {
            let (name, ty, expr) = (
                g.get("name")?.as_str()?,
                g.get("type")?.as_str()?,
                g.get("expression")?.as_str()?,
            );
            Some(format!("{} {ty} GENERATED ALWAYS AS ({expr}) STORED", quote(name)))
        })
        .collect()
}

/// A partitioned PostgreSQL table's partition key (`x-sql-partition`), and the statements creating
/// its partitions (and theirs), each in its own schema, after the table `qualified`.
pub(super) fn partitions(schema: &Schema, qualified: &str) -> (Option<String>, Vec<String>) {
    let Some(p) = schema.extra.get("x-sql-partition") else {
        return (None, Vec::new());
    };
    let mut out = Vec::new();
    for part in p.get("partitions").and_then(Json::as_array).into_iter().flatten() {
        let (Some(name), Some(bound)) = (
            part.get("name").and_then(Json::as_str),
            part.get("bound").and_then(Json::as_str),
        ) else {
            continue;
        };
        schema_for(name, &mut out);
        let of = part.get("of").and_then(Json::as_str).unwrap_or(qualified);
        let mut create = format!("CREATE TABLE {name} PARTITION OF {of} {bound}");
        if let Some(by) = part.get("by").and_then(Json::as_str) {
            create.push_str(&format!(" PARTITION BY {by}"));
        }
        out.push(create);
    }
    (p.get("by").and_then(Json::as_str).map(str::to_owned), out)
}

/// The last number the source's counter handed out for each column it generates: a PostgreSQL
/// sequence's (`x-sql-sequence`), or SQLite's AUTOINCREMENT counter for the rowid key. The target's
/// sequence goes past them as well as past the data, so the application is not given a number
/// again (one of a row deleted since, or of an insert that was rolled back).
pub(super) fn sequence_floors(schema: &Schema) -> Vec<(String, i64)> {
    let mut floors: Vec<(String, i64)> = schema
        .schema
        .properties
        .iter()
        .filter_map(|(n, p)| Some((n.clone(), p.get("x-sql-sequence")?.as_i64()?)))
        .collect();
    if let (Some(seq), [k]) = (
        schema.sqlite.as_ref().and_then(|s| s.sequence),
        schema.key_properties.as_slice(),
    ) && !floors.iter().any(|(c, _)| c == k)
    {
        floors.push((k.clone(), seq));
    }
    floors
}

/// The deferred statements for a table ferry created: keys, unique constraints, indexes, the
/// identity's sequence; and, separately, its foreign keys.
pub(super) fn deferred_ddl(
    schema: &Schema,
    qualified: &str,
    (pg_schema, table): (&str, &str),
    from_pg: bool,
    identity: &[String],
    place: &dyn Fn(&str) -> String,
) -> (Vec<String>, Vec<String>) {
    let list = |cols: &[String]| cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    let short = |s: String| s.chars().take(63).collect::<String>();
    let mut ddl = Vec::new();
    if !schema.key_properties.is_empty() {
        ddl.push(format!(
            "ALTER TABLE {qualified} ADD PRIMARY KEY ({})",
            list(&schema.key_properties)
        ));
    }
    for u in &schema.unique {
        if u.columns.iter().all(|c| schema.schema.properties.contains_key(c)) {
            ddl.push(format!("ALTER TABLE {qualified} ADD UNIQUE ({})", list(&u.columns)));
        }
    }
    // PostgreSQL's own definition keeps the method, operator classes and expressions, as long as
    // the index is on the same table name.
    let here = format!(" ON {}.{} ", ident(pg_schema), ident(table));
    for ix in &schema.indexes {
        // A partitioned table's index reads `ON ONLY`: on the table itself it covers every
        // partition.
        let sql = ix.sql.as_deref().map(|s| s.replacen(" ON ONLY ", " ON ", 1));
        if let Some(sql) = sql.filter(|s| from_pg && s.contains(&here)) {
            ddl.push(
                sql.replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
                    .replacen("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX IF NOT EXISTS ", 1),
            );
            continue;
        }
        if ix.columns.is_empty() || !ix.columns.iter().all(|c| schema.schema.properties.contains_key(c)) {
            tracing::warn!(stream = %schema.stream, index = %ix.name, "an index on expressions is not carried to PostgreSQL");
            continue;
        }
        let mut s = format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {qualified} ({})",
            if ix.unique { "UNIQUE " } else { "" },
            quote(&short(ix.name.clone())),
            list(&ix.columns)
        );
        if let Some(w) = &ix.where_sql {
            s.push_str(&format!(" WHERE {w}"));
        }
        ddl.push(s);
    }
    let floors = sequence_floors(schema);
    for col in identity {
        let floor = floors.iter().find(|(c, _)| c == col).map_or(0, |(_, f)| *f);
        ddl.push(format!(
            "SELECT setval(pg_get_serial_sequence({}, {}), m, true) FROM (SELECT GREATEST(coalesce(max({}), 0), {floor}) AS m FROM {qualified}) x WHERE m > 0",
            literal(Some(qualified)),
            literal(Some(col)),
            quote(col)
        ));
    }
    if from_pg {
        // CHECK constraints after the data, as the source has them (one it never validated stays
        // NOT VALID); one the rows break is left out with a warning, like an index.
        let checks = schema.extra.get("x-sql-checks").and_then(Json::as_array);
        for c in checks.into_iter().flatten() {
            let (Some(name), Some(def)) = (
                c.get("name").and_then(Json::as_str),
                c.get("definition").and_then(Json::as_str),
            ) else {
                continue;
            };
            // (`pg_get_constraintdef` writes NOT VALID itself.)
            let add_not_valid = c.get("valid").and_then(Json::as_bool) == Some(false) && !def.ends_with(" NOT VALID");
            ddl.push(format!(
                "ALTER TABLE {qualified} ADD CONSTRAINT {} {def}{}",
                quote(name),
                if add_not_valid { " NOT VALID" } else { "" }
            ));
        }
        for (n, p) in &schema.schema.properties {
            if let Some(d) = p.get("x-sql-default").and_then(Json::as_str) {
                ddl.push(format!(
                    "ALTER TABLE {qualified} ALTER COLUMN {} SET DEFAULT {d}",
                    quote(n)
                ));
            }
        }
    }
    let mut fks = Vec::new();
    for (n, fk) in schema.foreign_keys.iter().enumerate() {
        // Named as PostgreSQL names them: a number only after a name already taken.
        let taken = schema.foreign_keys[..n]
            .iter()
            .filter(|f| f.columns == fk.columns)
            .count();
        let name = short(format!(
            "{table}_{}_fkey{}",
            fk.columns.join("_"),
            if taken > 0 { taken.to_string() } else { String::new() }
        ));
        let mut s = format!(
            "ALTER TABLE {qualified} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})",
            quote(&name),
            list(&fk.columns),
            place(&fk.references.stream),
            list(&fk.references.columns)
        );
        if let Some(a) = &fk.on_delete {
            s.push_str(&format!(" ON DELETE {a}"));
        }
        if let Some(a) = &fk.on_update {
            s.push_str(&format!(" ON UPDATE {a}"));
        }
        if fk.deferrable {
            s.push_str(" DEFERRABLE INITIALLY DEFERRED");
        }
        s.push_str(" NOT VALID");
        fks.push(s);
        fks.push(format!("ALTER TABLE {qualified} VALIDATE CONSTRAINT {}", quote(&name)));
    }
    (ddl, fks)
}

/// Say what of an SQLite table's definition its new PostgreSQL table leaves out, written as it is
/// in SQLite's SQL: CHECK constraints (but a `json_valid()` CHECK of a column made jsonb, which
/// the type itself keeps) and defaults it cannot carry (`random()`, `strftime('%s', 'now')`).
pub(super) fn say_what_is_not_carried(schema: &Schema, types: &[(String, String)]) {
    let stream = schema.stream.as_str();
    for check in schema.sqlite.iter().flat_map(|sq| &sq.checks) {
        let of_jsonb = json_valid_columns(check)
            .iter()
            .any(|c| types.iter().any(|(n, t)| t == "jsonb" && n.eq_ignore_ascii_case(c)));
        if !of_jsonb {
            tracing::warn!(stream, check = %check, "a CHECK in SQLite's SQL is not carried to the new PostgreSQL table: add it there if the application relies on it");
        }
    }
    for (n, t) in types {
        let default = schema.schema.properties[n]
            .get("x-sqlite-default")
            .and_then(Json::as_str);
        if let Some(d) = default.filter(|d| portable_default(d, t).is_none()) {
            tracing::warn!(stream, column = %n, default = %d, "a default in SQLite's SQL is not carried to the new PostgreSQL table: add it there if the application relies on it");
        }
    }
}

/// An SQLite default as a PostgreSQL default for a column of type `pg_type`: literals (a number
/// for a numeric column, 0/1 for a boolean, a string for a text column) and SQLite's clock
/// ([`current_time_default`]); anything else (another SQLite function, say) is left out rather
/// than guessed.
pub(super) fn portable_default(d: &str, pg_type: &str) -> Option<String> {
    let d = d.trim();
    if let Some(now) = current_time_default(d, pg_type) {
        return Some(now);
    }
    let number = d.parse::<f64>().is_ok();
    let string = d.starts_with('\'') && d.ends_with('\'') && d.len() >= 2;
    match pg_type {
        "boolean" if d == "1" || d == "0" => Some(if d == "1" { "true" } else { "false" }.into()),
        "boolean" => None,
        "bigint" | "double precision" => number.then(|| d.to_owned()),
        t if t.starts_with("numeric") => number.then(|| d.to_owned()),
        t if t == "text" || t.starts_with("varchar") => string.then(|| d.to_owned()),
        _ => None,
    }
}

/// SQLite's clock defaults (`CURRENT_TIMESTAMP`, `datetime('now')`, and the date and time ones),
/// which write UTC as text, as the same moment for a column of `pg_type`: an instant for
/// timestamptz, UTC's wall clock for timestamp, date and time, SQLite's own text for a text column.
fn current_time_default(d: &str, pg_type: &str) -> Option<String> {
    let mut bare = d.trim();
    while let Some(inner) = bare.strip_prefix('(').and_then(|b| b.strip_suffix(')')) {
        bare = inner.trim();
    }
    let bare = bare.to_ascii_lowercase();
    let (text_format, cast) = match bare.as_str() {
        "current_timestamp" | "datetime('now')" => ("YYYY-MM-DD HH24:MI:SS", "timestamp(0)"),
        "current_date" | "date('now')" => ("YYYY-MM-DD", "date"),
        "current_time" | "time('now')" => ("HH24:MI:SS", "time(0)"),
        _ => return None,
    };
    let utc = "(now() AT TIME ZONE 'UTC')";
    match pg_type {
        "timestamp with time zone" | "timestamptz" if cast.starts_with("timestamp") => Some("CURRENT_TIMESTAMP".into()),
        t if t.starts_with("timestamp") && !t.contains("with time zone") && cast.starts_with("timestamp") => {
            Some(format!("{utc}::{cast}"))
        }
        "date" if cast == "date" => Some(format!("{utc}::date")),
        t if t.starts_with("time") && !t.starts_with("timestamp") && cast.starts_with("time(") => {
            Some(format!("{utc}::{cast}"))
        }
        t if t == "text" || t.starts_with("varchar") => Some(format!("to_char({utc}, '{text_format}')")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_defaults_only_and_of_the_column_type() {
        assert_eq!(portable_default("0", "bigint").as_deref(), Some("0"));
        assert_eq!(portable_default("1", "boolean").as_deref(), Some("true"));
        assert_eq!(portable_default("'local'", "text").as_deref(), Some("'local'"));
        assert_eq!(portable_default("'local'", "bigint"), None);
        assert_eq!(portable_default("strftime('%s', 'now')", "bigint"), None);
        assert_eq!(portable_default("random()", "bigint"), None);
    }

    #[test]
    fn sqlite_clock_defaults_become_the_same_moment() {
        let utc = "(now() AT TIME ZONE 'UTC')";
        assert_eq!(
            portable_default("CURRENT_TIMESTAMP", "timestamp with time zone").as_deref(),
            Some("CURRENT_TIMESTAMP")
        );
        assert_eq!(
            portable_default("(datetime('now'))", "timestamp without time zone"),
            Some(format!("{utc}::timestamp(0)"))
        );
        assert_eq!(
            portable_default("current_timestamp", "text"),
            Some(format!("to_char({utc}, 'YYYY-MM-DD HH24:MI:SS')"))
        );
        assert_eq!(portable_default("CURRENT_DATE", "date"), Some(format!("{utc}::date")));
        assert_eq!(portable_default("CURRENT_DATE", "bigint"), None);
        assert_eq!(portable_default("CURRENT_TIME", "timestamp with time zone"), None);
    }
}
