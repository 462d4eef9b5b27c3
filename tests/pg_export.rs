//! PostgreSQL as a source, against a real server (a private throwaway cluster, or FERRY_TEST_PG):
//! every type out and back in exactly, across engines through the dialects, resumable, with
//! clear errors.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests fail loudly by design

use crate::common;
use std::io::Read;

use crate::common::pg::{self, PASSWORD};
use crate::common::{Dir, all_ok, written_and_already};

/// A new database holding the type matrix (testdata/pg_matrix.sql); its URL.
fn matrix_db() -> String {
    let url = pg::cluster().database("matrix");
    let sql = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/pg_matrix.sql")).unwrap();
    pg::connect(&url).batch_execute(&sql).unwrap();
    url
}

/// Every row of a table in PostgreSQL's own text form, in key order, without the named columns.
fn rows_text(url: &str, table: &str, without: &[&str]) -> Vec<String> {
    let mut c = pg::connect(url);
    let cols: Vec<String> = c
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|n| !without.contains(&n.as_str()))
        .map(|n| format!("\"{n}\""))
        .collect();
    let mut out = String::new();
    c.copy_out(format!("COPY (SELECT {} FROM {table} ORDER BY 1) TO STDOUT", cols.join(", ")).as_str())
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out.lines().map(str::to_owned).collect()
}

/// Each column's type as PostgreSQL prints it.
fn types(url: &str, table: &str) -> Vec<(String, String)> {
    pg::connect(url)
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn type_of<'a>(types: &'a [(String, String)], col: &str) -> &'a str {
    types.iter().find(|(n, _)| n == col).map_or("?", |(_, t)| t.as_str())
}

/// `ferry-export FROM... [| ferry-transform --dialect D] | ferry-import TO --create`, every stage
/// ok.
fn copy_create(d: &Dir, from: &[&str], dialect: Option<&str>, to: &str) {
    let transform = dialect.map(|dl| ["--dialect", dl]);
    let mut stages: Vec<(&str, &[&str])> = vec![("ferry-export", from)];
    if let Some(args) = &transform {
        stages.push(("ferry-transform", args));
    }
    let import = [to, "--create"];
    stages.push(("ferry-import", &import));
    all_ok(&d.pipe(&stages, b""));
}

#[test]
fn every_type_goes_from_postgresql_to_postgresql_exactly() {
    let d = Dir::new();
    let src = matrix_db();
    let dst = pg::cluster().database("copy");
    let runs = d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&dst, "--create"])], b"");
    all_ok(&runs);
    assert!(!runs[0].stderr().contains(PASSWORD) && !runs[0].stdout().contains(PASSWORD));
    // The same rows, value for value, in PostgreSQL's own spelling (the generated column is not
    // carried as values: the target computes it, from the same expression).
    assert_eq!(
        rows_text(&src, "public.matrix", &[]),
        rows_text(&dst, "public.matrix", &[])
    );
    assert_eq!(
        rows_text(&src, "public.parent", &[]),
        rows_text(&dst, "public.parent", &[])
    );
    // The same types, the enum created, the identity, keys, indexes (expressions too) and defaults.
    let (a, b) = (types(&src, "public.matrix"), types(&dst, "public.matrix"));
    for (col, t) in &b {
        assert_eq!(t, type_of(&a, col), "column {col}");
    }
    let mut c = pg::connect(&dst);
    let identity: String = c
        .query_one(
            "SELECT attidentity::text FROM pg_attribute WHERE attrelid = 'public.matrix'::regclass AND attname = 'id'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(identity, "a", "GENERATED ALWAYS stays so");
    let next: i64 = c
        .query_one("SELECT nextval(pg_get_serial_sequence('public.parent', 'id'))", &[])
        .unwrap()
        .get(0);
    assert_eq!(next, 4, "a serial column's sequence continues after the data");
    let indexes: Vec<String> = c
        .query(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'matrix' ORDER BY indexname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(indexes.iter().any(|i| i.contains("lower(t)")), "{indexes:?}");
    assert!(
        indexes.iter().any(|i| i.contains("WHERE (ts IS NOT NULL)")),
        "{indexes:?}"
    );
    let default: String = c
        .query_one(
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'public.matrix'::regclass
             AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'public.matrix'::regclass AND attname = 'bo')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(default, "false");
    let fk: String = c
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'public.matrix'::regclass AND contype = 'f'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(fk.contains("REFERENCES parent(id) ON DELETE CASCADE"), "{fk}");

    // Proved equal across the two servers; then differences injected are each found by key.
    d.run("ferry-validate", &[&src, &dst], b"").ok();
    c.batch_execute(
        "UPDATE public.matrix SET jb = '{\"a\": 1}' WHERE id = 1;
         UPDATE public.matrix SET tstz = tstz + interval '1 microsecond' WHERE id = 3;
         DELETE FROM public.matrix WHERE id = 2;
         INSERT INTO public.parent (id, name) VALUES (99, 'extra');",
    )
    .unwrap();
    let v = d.run("ferry-validate", &[&src, &dst], b"");
    v.expect_code(1);
    let findings: Vec<(String, String)> = v
        .lines()
        .iter()
        .filter(|l| l["type"] == "FINDING")
        .map(|l| (l["kind"].as_str().unwrap().to_owned(), l["key"].to_string()))
        .collect();
    let columns_of = |id: i64| {
        v.lines()
            .iter()
            .find(|l| l["kind"] == "changed" && l["key"]["id"] == id)
            .map(|l| l["columns"].clone())
    };
    assert_eq!(
        columns_of(1),
        Some(serde_json::json!(["jb"])),
        "the finding names the column"
    );
    assert_eq!(columns_of(3), Some(serde_json::json!(["tstz"])));
    for expected in [
        ("changed", r#"{"id":1}"#),
        ("changed", r#"{"id":3}"#),
        ("missing", r#"{"id":2}"#),
        ("extra", r#"{"id":99}"#),
    ] {
        assert!(
            findings.iter().any(|(k, key)| k == expected.0 && key == expected.1),
            "{expected:?} in {findings:?}"
        );
    }
}

#[test]
fn user_defined_types_and_generated_columns_are_recreated_in_postgresql() {
    let d = Dir::new();
    let src = pg::cluster().database("udt");
    pg::connect(&src)
        .batch_execute(
            "CREATE SCHEMA extra;
             CREATE TYPE extra.color AS ENUM ('red', 'green', 'it''s');
             CREATE TYPE mood AS ENUM ('sad', 'ok');
             CREATE TYPE pair AS (a integer, b text);
             CREATE TYPE tagged AS (m mood, c extra.color[], p pair, amount numeric(8, 2));
             CREATE DOMAIN extra.code AS varchar(8) COLLATE \"C\" DEFAULT 'none' NOT NULL
               CONSTRAINT code_shape CHECK (VALUE ~ '^[a-z]+$');
             CREATE DOMAIN cheerful AS mood CHECK (VALUE <> 'sad');
             CREATE TABLE things (
               id integer PRIMARY KEY,
               code extra.code,
               ch cheerful,
               label text COLLATE \"C\",
               moods mood[],
               p pair,
               tg tagged,
               tags tagged[],
               amounts numeric(10, 2)[],
               span int4range,
               words tsvector,
               flags bit(4),
               n integer CONSTRAINT n_floor CHECK (n > -100),
               doubled integer GENERATED ALWAYS AS (n * 2) STORED,
               CHECK (doubled <> 1)
             );
             CREATE INDEX things_doubled ON things (doubled);
             INSERT INTO things (id, code, ch, moods, p, tg, tags, amounts, span, words, flags, n) VALUES
               (1, 'abc', 'ok', '{sad,ok}', '(1,\"x, y\")', '(ok,\"{green,it''s}\",\"(2,z)\",1.50)',
                ARRAY['(sad,{red},\"(3,)\",0)'::tagged, NULL], '{1.50,NULL,-0.01}', '[1,5)',
                'a fat:2 cat', B'1010', 21),
               (2, DEFAULT, NULL, '{}', '(,)', NULL, '{}', '{}', 'empty', '', B'0000', NULL),
               (3, 'xyz', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, -4);
             ALTER TABLE things ADD CONSTRAINT below_1000 CHECK (id < 1000) NOT VALID;",
        )
        .unwrap();
    let dst = pg::cluster().database("udt_copy");
    copy_create(&d, &[&src], None, &dst);
    // Every type created (enums, composites, one inside another, arrays of both, another
    // schema's), every value the same, and the generated column computed by the target.
    assert_eq!(types(&src, "public.things"), types(&dst, "public.things"));
    assert_eq!(
        rows_text(&src, "public.things", &[]),
        rows_text(&dst, "public.things", &[])
    );
    let mut c = pg::connect(&dst);
    let generated: String = c
        .query_one(
            "SELECT attgenerated::text FROM pg_attribute WHERE attrelid = 'public.things'::regclass AND attname = 'doubled'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(generated, "s", "a generated column, not a copy of its values");
    c.batch_execute("UPDATE things SET n = 5 WHERE id = 3").unwrap();
    let doubled: i32 = c
        .query_one("SELECT doubled FROM things WHERE id = 3", &[])
        .unwrap()
        .get(0);
    assert_eq!(doubled, 10);
    c.batch_execute("UPDATE things SET n = -4 WHERE id = 3").unwrap();
    let labels: Vec<String> = c
        .query("SELECT unnest(enum_range(NULL::extra.color))::text", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(labels, ["red", "green", "it's"], "labels in their order");
    let index: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'things_doubled'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(index, 1, "the index on the generated column");
    let checks = |url: &str| -> Vec<String> {
        pg::connect(url)
            .query(
                "SELECT conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated FROM pg_constraint
                 WHERE conrelid = 'public.things'::regclass AND contype = 'c' ORDER BY conname",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(checks(&src).len(), 3);
    assert_eq!(
        checks(&src),
        checks(&dst),
        "CHECK constraints, named, NOT VALID kept so"
    );
    let refused = c.batch_execute("UPDATE things SET n = -500 WHERE id = 3");
    let refused = refused.unwrap_err();
    assert_eq!(refused.as_db_error().and_then(|e| e.constraint()), Some("n_floor"));
    // The domains, as the source defines them: base type, collation, default, NOT NULL and
    // named checks; and the target enforces them.
    let domains = |url: &str| -> Vec<String> {
        pg::connect(url)
            .query(
                "SELECT format('%s %s %s %s %s %s', t.typnamespace::regnamespace, t.typname,
                               format_type(t.typbasetype, t.typtypmod), co.collname, t.typnotnull,
                               pg_get_expr(t.typdefaultbin, 0))
                        || coalesce(' ' || k.conname || ' ' || pg_get_constraintdef(k.oid), '')
                   FROM pg_type t JOIN pg_collation co ON co.oid = t.typcollation OR t.typcollation = 0 AND co.oid = 100
                   LEFT JOIN pg_constraint k ON k.contypid = t.oid
                  WHERE t.typtype = 'd' AND t.typnamespace <> 'information_schema'::regnamespace ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(domains(&src).len(), 2);
    assert_eq!(domains(&src), domains(&dst));
    // A column's own collation.
    let collations = |url: &str| -> Vec<(String, String)> {
        pg::connect(url)
            .query(
                "SELECT a.attname::text, co.collname::text FROM pg_attribute a
                   JOIN pg_collation co ON co.oid = a.attcollation
                  WHERE a.attrelid = 'public.things'::regclass AND a.attnum > 0 ORDER BY a.attnum",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    assert!(collations(&src).contains(&("label".into(), "C".into())));
    assert_eq!(collations(&src), collations(&dst));
    let refused = c
        .batch_execute("UPDATE things SET code = 'NOT' WHERE id = 3")
        .unwrap_err();
    assert_eq!(refused.as_db_error().and_then(|e| e.constraint()), Some("code_shape"));
    let refused = c
        .batch_execute("UPDATE things SET ch = 'sad' WHERE id = 3")
        .unwrap_err();
    assert_eq!(
        refused.as_db_error().and_then(|e| e.constraint()),
        Some("cheerful_check")
    );
    d.run("ferry-validate", &[&src, &dst], b"").ok();
    // Into a second database whose types exist already: used as they are.
    let again = pg::cluster().database("udt_again");
    pg::connect(&again)
        .batch_execute("CREATE TYPE pair AS (a integer, b text)")
        .unwrap();
    copy_create(&d, &[&src], None, &again);
    d.run("ferry-validate", &[&src, &again], b"").ok();

    // Into SQLite they become text (composites in PostgreSQL's spelling, arrays as JSON), proved
    // equal across engines.
    let lite = d.db("udt.db");
    copy_create(&d, &[&src], Some("sqlite"), &lite);
    d.run("ferry-validate", &[&src, &lite], b"").ok();
    let p: String = d
        .open("udt.db")
        .query_row("SELECT p FROM things WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(p, "(1,\"x, y\")");
    // And on into a new PostgreSQL database: the source's own types come back as text (an enum
    // array as text[]), the built-in ones as themselves, every value equal.
    let back = pg::cluster().database("udt_back");
    copy_create(&d, &[&lite], Some("postgres"), &back);
    d.run("ferry-validate", &[&src, &back], b"").ok();
    let t = types(&back, "public.things");
    for (col, ty) in [
        ("moods", "text[]"),
        ("p", "text"),
        ("tags", "text"),
        ("amounts", "numeric[]"),
    ] {
        assert_eq!(type_of(&t, col), ty, "column {col}");
    }
}

#[test]
fn a_partitioned_table_is_recreated_partitioned_with_each_row_in_its_partition() {
    let d = Dir::new();
    let src = pg::cluster().database("parts");
    pg::connect(&src)
        .batch_execute(
            "CREATE SCHEMA archive;
             CREATE TABLE ev (id bigint GENERATED ALWAYS AS IDENTITY, at date NOT NULL, v text NOT NULL,
                              PRIMARY KEY (id, at, v)) PARTITION BY RANGE (at);
             CREATE TABLE archive.ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE ev_rest PARTITION OF ev DEFAULT PARTITION BY LIST (v);
             CREATE TABLE ev_rest_a PARTITION OF ev_rest FOR VALUES IN ('a', 'it''s');
             CREATE TABLE ev_rest_other PARTITION OF ev_rest DEFAULT;
             CREATE INDEX ev_lower_v ON ev (lower(v));
             CREATE TABLE note (id integer PRIMARY KEY, ev_id bigint, ev_at date, ev_v text,
                                FOREIGN KEY (ev_id, ev_at, ev_v) REFERENCES ev);
             INSERT INTO ev (at, v) SELECT DATE '2024-01-01' + i * 3, CASE i % 3 WHEN 0 THEN 'a' WHEN 1 THEN 'it''s' ELSE 'b' END
               FROM generate_series(0, 299) i;
             INSERT INTO note VALUES (1, 1, '2024-01-01', 'a'), (2, 299, DATE '2024-01-01' + 894, 'it''s');",
        )
        .unwrap();
    let where_rows = |url: &str| -> Vec<String> {
        pg::connect(url)
            .query(
                "SELECT p || ' ' || count(*) FROM (SELECT tableoid::regclass::text AS p FROM ev) x GROUP BY p ORDER BY p",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let tree = |url: &str| -> Vec<String> {
        pg::connect(url)
            .query(
                "SELECT c.oid::regclass::text || ' ' || c.relkind::text || ' ' || coalesce(pg_get_expr(c.relpartbound, c.oid), '')
                        || ' ' || coalesce(pg_get_partkeydef(c.oid), '')
                   FROM pg_class c WHERE c.relname LIKE 'ev%' AND c.relkind IN ('r', 'p', 'I', 'i') ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(where_rows(&src).len(), 3);

    let dst = pg::cluster().database("parts_copy");
    copy_create(&d, &[&src], None, &dst);
    // The same partitions, bounds and keys, indexes on every partition, each row where the
    // source has it, and the foreign key to the partitioned table.
    assert_eq!(tree(&src), tree(&dst));
    assert_eq!(where_rows(&src), where_rows(&dst));
    assert_eq!(rows_text(&src, "public.ev", &[]), rows_text(&dst, "public.ev", &[]));
    d.run("ferry-validate", &[&src, &dst], b"").ok();
    let mut c = pg::connect(&dst);
    let fk: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'note'::regclass AND contype = 'f' AND convalidated",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fk, 1);
    let next: i64 = c
        .query_one("INSERT INTO ev (at, v) VALUES ('2030-01-01', 'a') RETURNING id", &[])
        .unwrap()
        .get(0);
    assert_eq!(next, 301, "the identity goes on after the data");

    // Into SQLite, one table with every partition's rows, proved equal.
    let lite = d.db("parts.db");
    copy_create(&d, &[&src], Some("sqlite"), &lite);
    d.run("ferry-validate", &[&src, &lite], b"").ok();
}

#[test]
fn a_type_the_target_lacks_is_named_with_its_column_and_what_to_do() {
    let d = Dir::new();
    let src = pg::cluster().database("rowtype");
    pg::connect(&src)
        .batch_execute(
            "CREATE TABLE address (street text);
             CREATE COLLATION mine (provider = libc, locale = 'C');
             CREATE TABLE people (id integer PRIMARY KEY, home address, name text COLLATE mine);
             INSERT INTO people VALUES (1, ROW('Main St'), 'Ann');",
        )
        .unwrap();
    // Only `people`: its column's type is the row type of a table left behind.
    let dst = pg::cluster().database("rowtype_copy");
    let import = || {
        let runs = d.pipe(
            &[
                ("ferry-export", &[&src, "--table", "public.people"]),
                ("ferry-import", &[&dst, "--create"]),
            ],
            b"",
        );
        runs.into_iter().nth(1).unwrap()
    };
    import()
        .expect_code(2)
        .stderr_has("creating \"public\".\"people\"")
        .stderr_has("type \"address\" does not exist")
        .stderr_has("column \"home\" (address)")
        .stderr_has("CREATE TYPE");
    let tables: i64 = pg::connect(&dst)
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'people'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing half-created");
    // Created there first, the same pipeline goes as far as the next thing missing: the
    // collation of another column, named the same way.
    pg::connect(&dst)
        .batch_execute("CREATE TYPE address AS (street text)")
        .unwrap();
    import()
        .expect_code(2)
        .stderr_has("the target has no collation public.mine, used by column \"name\"")
        .stderr_has("CREATE COLLATION");
    pg::connect(&dst)
        .batch_execute("CREATE COLLATION mine (provider = libc, locale = 'C')")
        .unwrap();
    copy_create(&d, &[&src, "--table", "public.people"], None, &dst);
    d.run("ferry-validate", &[&src, &dst, "--table", "public.people"], b"")
        .ok();
}

#[test]
fn postgresql_to_sqlite_and_back_keeps_every_value() {
    let d = Dir::new();
    let src = matrix_db();
    let lite = d.db("copy.db");
    copy_create(&d, &[&src], Some("sqlite"), &lite);
    let conn = d.open("copy.db");
    let declared: Vec<(String, String)> =
        common::column::<String>(&conn, "SELECT name || '=' || type FROM pragma_table_info('matrix')")
            .into_iter()
            .map(|s| {
                let (a, b) = s.split_once('=').unwrap();
                (a.to_owned(), b.to_owned())
            })
            .collect();
    // numeric(12,2) fits the 15 digits SQLite keeps exactly: a number, compared and ordered as
    // one; the unbounded numeric stays exact text.
    assert_eq!(type_of(&declared, "n2"), "NUMERIC(12,2)");
    assert_eq!(type_of(&declared, "n"), "NUMERIC TEXT");
    assert_eq!(type_of(&declared, "tstz"), "TIMESTAMPTZ");
    assert_eq!(type_of(&declared, "ai"), "INTEGER ARRAY");
    // SQLite's own forms: datetime text in UTC, 0/1, numbers, JSON as text.
    let row: (String, i64, f64, String, String) = conn
        .query_row("SELECT tstz, bo, n2, jb, ai FROM matrix WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap();
    assert_eq!(row.0, "2024-06-30 21:59:59.5");
    assert_eq!(row.1, 1);
    assert_eq!(row.2, 1234567890.12);
    let numbers: i64 = conn
        .query_row(
            "SELECT count(*) FROM matrix WHERE n2 > 1000 AND typeof(n2) = 'real'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(numbers, 1, "compared as a number");
    assert!(row.3.contains("123456789012345678901234567890.5"), "{}", row.3);
    assert_eq!(row.4, "[1,null,3]");
    // Equal across engines; the column SQLite holds as text is named: its values compare and
    // sort as text there.
    let v = d.run("ferry-validate", &[&src, &lite], b"");
    v.ok();
    let as_text: Vec<String> = v
        .lines()
        .iter()
        .filter(|l| l["kind"] == "compared_as_text")
        .map(|l| format!("{} {}", l["column"].as_str().unwrap(), l["severity"].as_str().unwrap()))
        .collect();
    assert!(as_text.contains(&"n warning".to_owned()), "{v:?}");
    assert!(!as_text.iter().any(|c| c.starts_with("n2 ")), "{v:?}");

    // And back into PostgreSQL: the same values, and the types the SQLite names stood for.
    let back = pg::cluster().database("back");
    copy_create(&d, &[&lite], Some("postgres"), &back);
    d.run("ferry-validate", &[&src, &back], b"").ok();
    d.run("ferry-validate", &[&lite, &back], b"").ok();
    let t = types(&back, "public.matrix");
    for (col, ty) in [
        ("n2", "numeric(12,2)"),
        ("bo", "boolean"),
        ("b", "bytea"),
        ("d", "date"),
        ("tm", "time without time zone"),
        ("ttz", "time with time zone"),
        ("ts", "timestamp without time zone"),
        ("tstz", "timestamp with time zone"),
        ("iv", "interval"),
        ("u", "uuid"),
        ("j", "json"),
        ("jb", "jsonb"),
        ("ai", "integer[]"),
        ("at", "text[]"),
        ("ip", "inet"),
        ("net", "cidr"),
        ("f8", "double precision"),
    ] {
        assert_eq!(type_of(&t, col), ty, "column {col}");
    }
    // Every value in PostgreSQL's spelling, as the source has it (columns whose type widened
    // or became text compared by value above).
    let exact = [
        "id", "n2", "b", "bo", "d", "tm", "ttz", "ts", "tstz", "iv", "u", "j", "jb", "ai", "at", "ip", "net", "f8", "t",
    ];
    let pick = |url: &str| {
        let mut c = pg::connect(url);
        let mut out = String::new();
        c.copy_out(
            format!(
                "COPY (SELECT {} FROM public.matrix ORDER BY id) TO STDOUT",
                exact.join(", ")
            )
            .as_str(),
        )
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
        out
    };
    assert_eq!(pick(&src), pick(&back));
}

#[test]
fn sqlite_to_postgresql_and_back_keeps_every_value() {
    let d = Dir::new();
    let c = d.open("src.db");
    c.execute_batch(
        "CREATE TABLE things (
           id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT, b BLOB, flag BOOLEAN, at DATETIME, day DATE,
           doc JSON, u UUID, anything);
         INSERT INTO things VALUES
           (1, 9223372036854775807, -0.0, 'héllo 🦀 \"q\" \\ back', x'00ff', 1, '2024-01-01 12:34:56.123456', '2024-02-29',
            '{\"a\": [1, 2.5], \"b\": null}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 42),
           (2, -9223372036854775808, 5e-324, '', x'', 0, '1970-01-01 00:00:00', '0001-01-01', '[]', NULL, 'text'),
           (3, 0, 1e308, 'x', NULL, NULL, NULL, NULL, 'null', NULL, 1.5),
           (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, x'01'),
           (5, 7, 0.1, char(9) || char(10), zeroblob(3), 1, '2000-02-29 23:59:59', '9999-12-31', '\"s\"', NULL, NULL);",
    )
    .unwrap();
    drop(c);
    let src = d.db("src.db");
    let url = pg::cluster().database("lite");
    copy_create(&d, &[&src], None, &url);
    d.run("ferry-validate", &[&src, &url], b"").ok();
    let back = d.db("back.db");
    copy_create(&d, &[&url], Some("sqlite"), &back);
    // SQLite against SQLite compares storage classes and bytes exactly.
    d.run("ferry-validate", &[&src, &back], b"").ok();
    let (a, b) = (d.open("src.db"), d.open("back.db"));
    assert_eq!(
        common::dump(&a, "things", "id"),
        common::dump(&b, "things", "id"),
        "every value, class and byte"
    );
}

#[test]
fn a_killed_import_resumes_after_the_last_key_and_the_rerun_is_exactly_once() {
    let d = Dir::new();
    let url = pg::cluster().database("resume");
    let mut c = pg::connect(&url);
    // A composite text key: the cursor compares rows in the key's own order.
    c.batch_execute(
        "CREATE TABLE events (region text, n bigint, payload text, PRIMARY KEY (region, n));
         INSERT INTO events SELECT (ARRAY['north','south','east','west','O''Brien'])[1 + i % 5], i, repeat('x', i % 40)
           FROM generate_series(1, 60000) i;",
    )
    .unwrap();
    let dst = d.db("dst.db");
    // export | transform --dialect sqlite | import, killed once the importer has acknowledged
    // a few STATEs.
    d.pipe_killed_after(
        &[
            ("ferry-export", &[&url, "--state-every", "2000"]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&dst, "--create"]),
        ],
        6,
    );
    let before = common::count(&d.open("dst.db"), "events");
    assert!(before > 0 && before < 60000, "killed mid-way: {before} rows in");

    // --resume: the export starts after the last acknowledged key; nothing is written twice.
    let runs = d.pipe(
        &[
            ("ferry-export", &[&url, "--resume", "--state-every", "2000"]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&dst, "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    let (written, already) = written_and_already(&runs[2]);
    assert_eq!(written + before as u64, 60000, "written {written}, already {already}");
    assert_eq!(common::count(&d.open("dst.db"), "events"), 60000);
    d.run("ferry-validate", &[&url, &dst], b"").ok();

    // And a plain re-run of the whole pipeline has nothing to do.
    let again = d.pipe(
        &[
            ("ferry-export", &[&url]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&dst, "--create"]),
        ],
        b"",
    );
    all_ok(&again);
    assert_eq!(written_and_already(&again[2]), (0, 60000));
}

#[test]
fn export_errors_name_what_to_do() {
    let d = Dir::new();
    let url = pg::cluster().database("errors");
    let mut c = pg::connect(&url);
    c.batch_execute(
        "CREATE TABLE open_data (id int PRIMARY KEY);
         CREATE TABLE secrets (id int PRIMARY KEY);
         CREATE ROLE reader LOGIN PASSWORD 'readerpw';
         GRANT SELECT ON open_data TO reader;",
    )
    .unwrap();
    // A table that is not there: named, with the tables that are.
    d.run("ferry-export", &[&url, "--table", "nope"], b"")
        .expect_code(2)
        .stderr_has("no table named nope")
        .stderr_has("public.open_data");
    // A table the role may not read: the server's reason, and the way around it.
    let reader = url.replacen(&format!("{}:{PASSWORD}@", pg::cluster().user), "reader:readerpw@", 1);
    assert_ne!(reader, url, "the test URL carries user and password");
    d.run("ferry-export", &[&reader], b"")
        .expect_code(2)
        .stderr_has("permission denied")
        .stderr_has("secrets");
    d.run("ferry-export", &[&reader, "--exclude", "secrets"], b"").ok();
    // A wrong password: said, and never printed.
    let wrong = url.replacen(PASSWORD, "not-the-password", 1);
    let r = d.run("ferry-export", &[&wrong], b"");
    r.expect_code(2).stderr_has("password authentication failed");
    assert!(!r.stderr().contains("not-the-password"));
    // No server there.
    let dead = url.replacen(&format!(":{}/", pg::cluster().port), ":1/", 1);
    let r = d
        .cmd("ferry-export", &[&dead])
        .env("FERRY_RETRIES", "1")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("cannot connect"));
}

#[test]
fn a_connection_lost_mid_export_stops_with_a_resumable_error() {
    let d = Dir::new();
    let url = pg::big_table("cut", 200_000, 100);
    let (export, _) = pg::MidExport::start(&d, &[&url], 100);
    // The server drops the export's connection while the stream is paused on a full pipe.
    let dropped: i64 = pg::cluster()
        .admin()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name LIKE 'ferry-export %' AND datname = $1",
            &[&url.rsplit('/').next().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(dropped, 1);
    let (code, err, text) = export.finish(60);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(!text.contains("\"type\":\"END\""), "no END after a failure");
}

#[test]
fn a_nan_that_sqlite_cannot_hold_is_rejected_not_nulled() {
    let d = Dir::new();
    let url = pg::cluster().database("nan");
    pg::connect(&url)
        .batch_execute(
            "CREATE TABLE m (id int PRIMARY KEY, x double precision);
             INSERT INTO m VALUES (1, 'NaN'), (2, 'Infinity'), (3, 1.5);",
        )
        .unwrap();
    let lite = d.db("m.db");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&url]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&lite, "--create", "--reject-file", "rejects.ndjson"]),
        ],
        b"",
    );
    all_ok(&runs[..2]);
    runs[2].expect_code(3);
    assert_eq!(
        common::column::<i64>(&d.open("m.db"), "SELECT id FROM m ORDER BY id"),
        [2, 3]
    );
    let rejects = std::fs::read_to_string(d.path("rejects.ndjson")).unwrap();
    assert!(rejects.contains("NaN") && rejects.contains("\"id\":1"), "{rejects}");
    // And validation says so, by key.
    d.run("ferry-validate", &[&url, &lite], b"")
        .expect_code(1)
        .stderr_has("missing");
    // Without the dialect, the importer says what to do.
    d.pipe(
        &[
            ("ferry-export", &[&url]),
            ("ferry-import", &[&d.db("other.db"), "--create"]),
        ],
        b"",
    )[1]
    .expect_code(2)
    .stderr_has("--dialect sqlite");
}
