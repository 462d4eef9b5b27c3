//! Every value SQLite can hold survives export -> import exactly (storage class and bytes), run
//! in-process through the library's stage functions.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use crate::common::{Dir, dump};
use ferry::address::Address;
use ferry::connect::Selection;
use ferry::protocol::StreamWriter;
use ferry::stage::{export, import, validate};

fn export_bytes(src: &str, state: &std::path::Path) -> Vec<u8> {
    let cfg = export::ExportConfig {
        state_every: 3,
        state_interval: Duration::from_secs(60),
        ..export::ExportConfig::of(Address::parse(src).unwrap(), Selection::default(), state.to_owned())
    };
    let mut w = StreamWriter::new(Vec::new());
    export::run(&cfg, &mut w).unwrap();
    w.into_inner().unwrap()
}

fn import_bytes(dst: &str, state: &std::path::Path, stream: &[u8]) -> import::ImportOutcome {
    let cfg = import::ImportConfig {
        create: true,
        max_rejects: 0,
        write_rows: 2,
        write_bytes: 1 << 20,
        jobs: 1,
        ..import::ImportConfig::new(Address::parse(dst).unwrap(), state.to_owned())
    };
    let mut w = StreamWriter::new(Vec::new());
    import::run(&cfg, stream, &mut w).unwrap()
}

#[test]
fn edge_values_survive_exactly() {
    let d = Dir::new();
    let c = d.open("src.db");
    c.execute_batch(
        "CREATE TABLE ints (id INTEGER PRIMARY KEY, v INTEGER);
         INSERT INTO ints VALUES (1, -9223372036854775808), (2, 9223372036854775807), (3, 0), (4, NULL), (5, 9007199254740993);
         CREATE TABLE reals (id INTEGER PRIMARY KEY, v REAL, untyped);
         INSERT INTO reals VALUES (1, 1e308, -0.0), (2, 5e-324, 0.0), (3, 9e999, -9e999), (4, 0.1 + 0.2, 1.0), (5, -1.5e-10, 2.5);
         CREATE TABLE texts (id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO texts VALUES (1, ''), (2, 'emoji 🦀🇺🇦 and combining é'), (3, 'NUL ' || char(0) || ' inside'),
             (4, CAST(x'ff00fe' AS TEXT)), (5, '00123'), (6, '\"quoted\" \\ back'), (7, char(10, 13, 9, 8, 12, 27));
         CREATE TABLE blobs (id INTEGER PRIMARY KEY, v BLOB);
         INSERT INTO blobs VALUES (1, x''), (2, x'00'), (3, zeroblob(10485760)), (4, randomblob(4096));
         CREATE TABLE dynamic (id INTEGER PRIMARY KEY, v);
         INSERT INTO dynamic VALUES (1, 42), (2, 4.5), (3, 'text'), (4, x'c3'), (5, NULL), (6, '42'), (7, 9e999), (8, CAST(x'80' AS TEXT));
         CREATE TABLE numeric_affinity (id INTEGER PRIMARY KEY, v NUMERIC);
         INSERT INTO numeric_affinity VALUES (1, 1), (2, 1.5), (3, 'n/a'), (4, '2024-01-01');
         CREATE TABLE strict_any (k TEXT PRIMARY KEY, v ANY) STRICT;
         INSERT INTO strict_any VALUES ('i', 1), ('t', '1'), ('r', 1.0), ('b', x'01');
         CREATE TABLE composite (a TEXT, b INTEGER, v, PRIMARY KEY (a, b)) WITHOUT ROWID;
         INSERT INTO composite VALUES ('x', 2, 1), ('x', 1, 2), ('', -1, 3);
         CREATE TABLE null_keys (k TEXT PRIMARY KEY, v);
         INSERT INTO null_keys VALUES (NULL, 1), (NULL, 2), ('a', 3);
         CREATE TABLE \"we\"\"ird; name\" (\"col umn\" INTEGER PRIMARY KEY, \"select\" TEXT);
         INSERT INTO \"we\"\"ird; name\" VALUES (1, 'drop table x');
         CREATE TABLE no_columns_but_rowid (x);",
    )
    .unwrap();
    drop(c);
    let state = d.path("state.db");
    let stream = export_bytes(&d.db("src.db"), &state);
    let out = import_bytes(&d.db("dst.db"), &state, &stream);
    assert_eq!(out.rejected, 0);
    let (a, b) = (d.open("src.db"), d.open("dst.db"));
    for (t, order) in [
        ("ints", "id"),
        ("reals", "id"),
        ("texts", "id"),
        ("blobs", "id"),
        ("dynamic", "id"),
        ("numeric_affinity", "id"),
        ("strict_any", "k"),
        ("composite", "a, b"),
        ("null_keys", "rowid"),
        ("we\"ird; name", "1"),
    ] {
        assert_eq!(dump(&a, t, order), dump(&b, t, order), "table {t}");
    }
    // -0.0 keeps its sign where SQLite keeps it (a column without affinity).
    let bits: i64 = b
        .query_row("SELECT untyped FROM reals WHERE id = 1", [], |r| {
            r.get::<_, f64>(0).map(|f| f.to_bits() as i64)
        })
        .unwrap();
    assert_eq!(bits as u64, (-0.0f64).to_bits());

    // And the validator agrees, in-process.
    let cfg = validate::ValidateConfig {
        source: Some(Address::parse(&d.db("src.db")).unwrap()),
        target: Some(Address::parse(&d.db("dst.db")).unwrap()),
        selection: Selection::default(),
        report: None,
        max_listed: 5,
        allow_unverified: false,
        max_line: 64 << 20,
        schema: None,
        s3: Default::default(),
        deep: false,
        shard: None,
    };
    let mut w = StreamWriter::new(Vec::new());
    let report = validate::run(&cfg, &b""[..], &mut w).unwrap();
    assert!(report.passed(), "{}", String::from_utf8_lossy(&w.into_inner().unwrap()));

    // A changed byte deep inside the 10 MB blob is found, and named by key.
    b.execute(
        "UPDATE blobs SET v = CAST(substr(v, 1, 5000000) || x'01' || substr(v, 5000002) AS BLOB) WHERE id = 3",
        [],
    )
    .unwrap();
    let mut w = StreamWriter::new(Vec::new());
    let report = validate::run(&cfg, &b""[..], &mut w).unwrap();
    assert!(!report.passed());
    let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
    assert!(
        out.contains(r#""stream":"main.blobs","kind":"changed","severity":"fail","key":{"id":3}"#),
        "{out}"
    );
}
