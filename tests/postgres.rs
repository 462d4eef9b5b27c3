//! PostgreSQL as a target, against a real server (a private throwaway cluster, or FERRY_TEST_PG).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::pg::{self, PASSWORD};
use common::{Dir, all_ok};

fn count(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}") as &str, &[])
        .unwrap()
        .get(0)
}

#[test]
fn sqlite_sample_into_postgres_with_types_keys_and_rejects() {
    let d = Dir::new();
    let url = pg::cluster().database("sample");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.sample()]),
            ("ferry-import", &[&url, "--create", "--reject-file", "rejects.ndjson"]),
        ],
        b"",
    );
    all_ok(&runs);
    assert!(
        !runs[1].stderr().contains(PASSWORD),
        "the password never reaches the log:{:?}",
        runs[1]
    );
    let mut c = pg::connect(&url);
    // Types chosen to hold every value exactly.
    let types: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let t = |n: &str| {
        types
            .iter()
            .find(|(c, _)| c == n)
            .map(|(_, t)| t.as_str())
            .unwrap_or("?")
    };
    assert_eq!(t("id"), "bigint");
    assert_eq!(t("is_active"), "boolean");
    assert_eq!(t("created_at"), "timestamp without time zone");
    assert_eq!(t("avatar"), "bytea");
    assert_eq!(t("balance"), "jsonb", "a column of mixed kinds");
    // Rows PostgreSQL text cannot hold (a NUL byte, bytes that are not UTF-8) are rejected, with why.
    assert_eq!(count(&mut c, "public.users"), 45);
    let rejects = std::fs::read_to_string(d.path("rejects.ndjson")).unwrap();
    assert!(
        rejects.contains("NUL byte") && rejects.contains("not valid UTF-8"),
        "{rejects}"
    );
    assert_eq!(count(&mut c, "public.notifications"), 307);
    assert_eq!(count(&mut c, "public.audit_log"), 11);
    // Keys and indexes after the data; the identity continues after the largest id.
    let pk: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.users'::regclass AND contype = 'p'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(pk, 1);
    let next: i64 = c
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('public.saved_files', 'id'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(next, 501, "AUTOINCREMENT's sequence (500) carries over");
    // The foreign key to the missing user (as in the source) stays NOT VALID, the others validated.
    let fks: Vec<(String, bool)> = c
        .query(
            "SELECT conname::text, convalidated FROM pg_constraint WHERE contype = 'f' ORDER BY conname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        fks.iter().any(|(n, v)| n.starts_with("notifications_user_id") && !v),
        "{fks:?}"
    );
    assert!(fks.iter().any(|(n, v)| n.starts_with("file_tags_tag") && *v), "{fks:?}");
    // Values exactly: 64-bit extremes, -0.0, infinities, dynamic values through jsonb.
    let edge: (f64, f64) = c
        .query_one("SELECT (SELECT score FROM notifications WHERE id = 1001), (SELECT score FROM notifications WHERE id = 1003)", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(edge, (1e308, f64::INFINITY));
    let max_id: i64 = c.query_one("SELECT max(id) FROM users", &[]).unwrap().get(0);
    assert_eq!(max_id, i64::MAX);

    // The same pipeline again: nothing to do.
    let again = d.pipe(
        &[("ferry-export", &[&d.sample()]), ("ferry-import", &[&url, "--create"])],
        b"",
    );
    all_ok(&again);
    assert_eq!(common::written_and_already(&again[1]), (0, 680));
}
