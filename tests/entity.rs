//! Entity exports and id remapping: one user's rows and everything that references them, as a
//! file that validates on its own, imported elsewhere with its ids remapped so every reference
//! still holds; on SQLite and on the throwaway PostgreSQL.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use std::collections::{BTreeMap, BTreeSet};

use crate::common::{Dir, all_ok, pg};

/// Users (one invited by another, in a chain), their posts, comments on posts by anyone,
/// shared tags and the tags of posts.
const SCHEMA: &str = "
    CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, invited_by INTEGER REFERENCES users (id));
    CREATE TABLE tags (name TEXT PRIMARY KEY);
    CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id), title TEXT);
    CREATE TABLE comments (id INTEGER PRIMARY KEY, post_id INTEGER NOT NULL REFERENCES posts (id),
                           author_id INTEGER NOT NULL REFERENCES users (id), body TEXT);
    CREATE TABLE post_tags (post_id INTEGER NOT NULL REFERENCES posts (id), tag TEXT NOT NULL REFERENCES tags (name),
                            PRIMARY KEY (post_id, tag));";

const DATA: &str = "
    INSERT INTO users VALUES (1, 'ann', NULL), (2, 'bob', 1), (3, 'cy', 2), (4, 'di', 3), (5, 'ed', 1);
    INSERT INTO tags VALUES ('news'), ('misc');
    INSERT INTO posts VALUES (10, 2, 'bob 1'), (11, 2, 'bob 2'), (12, 1, 'ann 1'), (13, 4, 'di 1'), (14, 5, 'ed 1');
    INSERT INTO comments VALUES (100, 10, 1, 'ann on bob'), (101, 12, 2, 'bob on ann'), (102, 14, 5, 'ed on ed'),
                                (103, 13, 3, 'cy on di');
    INSERT INTO post_tags VALUES (10, 'news'), (12, 'misc'), (13, 'news'), (14, 'misc');";

/// Keys per stream in a stream file.
fn keys(stream: &[u8]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(stream).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "RECORD" {
            let r = &v["record"];
            let key = if r.get("id").is_some() {
                r["id"].to_string()
            } else {
                format!("{}/{}", r["post_id"], r["tag"])
            };
            let table = v["stream"].as_str().unwrap().rsplit('.').next().unwrap().to_owned();
            out.entry(table).or_default().insert(key);
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Bob (2), everyone his invitations reach (3, then 4), their posts (10, 11, 13), the comments on
/// those posts or by those users (100, 101, 103), and those posts' tags: not ann, ed or their rows.
fn expected() -> BTreeMap<String, BTreeSet<String>> {
    BTreeMap::from([
        ("users".to_owned(), set(&["2", "3", "4"])),
        ("posts".to_owned(), set(&["10", "11", "13"])),
        ("comments".to_owned(), set(&["100", "101", "103"])),
        ("post_tags".to_owned(), set(&["10/\"news\"", "13/\"news\""])),
    ])
}

#[test]
fn one_users_rows_and_everything_referencing_them_go_to_a_file_and_into_another_database_remapped() {
    let d = Dir::new();
    d.open("app.db").execute_batch(&format!("{SCHEMA}{DATA}")).unwrap();
    let src = d.db("app.db");

    // Only the root row, without --follow-fks.
    let only = d.run("ferry-export", &[&src, "--root", "users:id=2"], b"");
    only.ok();
    assert_eq!(
        keys(&only.output.stdout),
        BTreeMap::from([("users".to_owned(), set(&["2"]))])
    );

    let export = d.run("ferry-export", &[&src, "--root", "users:id=2", "--follow-fks"], b"");
    export.ok();
    let file = export.output.stdout.clone();
    assert_eq!(keys(&file), expected());
    // Parents first: users, posts, then comments and post_tags.
    let order: Vec<String> = String::from_utf8_lossy(&file)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "SCHEMA")
        .map(|v| v["stream"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order.first().map(String::as_str), Some("main.users"), "{order:?}");
    assert!(order.iter().position(|s| s == "main.posts") < order.iter().position(|s| s == "main.comments"));
    // The file validates on its own (counts, digests, keys), and names what it points at outside
    // itself: bob's inviter, ann's comment on bob's post, the post bob commented on, the tags.
    std::fs::write(d.path("bob.ndjson"), &file).unwrap();
    let v = d.run("ferry-validate", &["bob.ndjson"], b"");
    v.expect_code(1);
    let findings: Vec<(String, String)> = v
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "FINDING")
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_owned(),
                l["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        findings,
        [
            ("main.users".to_owned(), "fk_orphans".to_owned()),
            ("main.comments".to_owned(), "fk_orphans".to_owned()),
            ("main.comments".to_owned(), "fk_orphans".to_owned()),
            ("main.post_tags".to_owned(), "unverified".to_owned()),
        ],
        "{v:?}"
    );

    // Into another application's database, where ids 2, 3 and 4 are taken: bob becomes 1077,
    // and every reference to him follows (his posts, his comment, cy's invited_by).
    d.open("other.db")
        .execute_batch(&format!(
            "{SCHEMA}
             INSERT INTO users VALUES (2, 'someone else', NULL), (3, 'another', NULL), (4, 'a third', NULL), (1, 'ann elsewhere', NULL);
             INSERT INTO tags VALUES ('news');
             INSERT INTO posts VALUES (12, 1, 'ann 1 elsewhere');"
        ))
        .unwrap();
    let runs = d.pipe(
        &[
            (
                "ferry-transform",
                &[
                    "--remap",
                    "main.users.id:2=1077",
                    "--remap",
                    "users.id:3=1078",
                    "--remap",
                    "users.id:4=1079",
                ],
            ),
            ("ferry-import", &["sqlite:other.db", "--on-conflict", "fail"]),
        ],
        &file,
    );
    all_ok(&runs);
    runs[0].stderr_has("remapped key values");
    let c = d.open("other.db");
    let rows = |sql: &str| common::column::<String>(&c, sql);
    assert_eq!(
        rows("SELECT id || ':' || name || ':' || ifnull(invited_by, '-') FROM users ORDER BY id"),
        [
            "1:ann elsewhere:-",
            "2:someone else:-",
            "3:another:-",
            "4:a third:-",
            "1077:bob:1",
            "1078:cy:1077",
            "1079:di:1078"
        ]
    );
    assert_eq!(
        rows("SELECT id || ':' || user_id FROM posts ORDER BY id"),
        ["10:1077", "11:1077", "12:1", "13:1079"]
    );
    assert_eq!(
        rows("SELECT id || ':' || post_id || ':' || author_id FROM comments ORDER BY id"),
        ["100:10:1", "101:12:1077", "103:13:1078"]
    );
    let orphans: i64 = c
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orphans, 0, "every reference holds");

    // A root that is not there, and a column that is not.
    d.run("ferry-export", &[&src, "--root", "accounts:id=1"], b"")
        .expect_code(2)
        .stderr_has("no table \"accounts\"");
    d.run("ferry-export", &[&src, "--root", "users:uid=1"], b"")
        .expect_code(2)
        .stderr_has("no column \"uid\"");
    d.run("ferry-export", &[&src, "--follow-fks"], b"").expect_code(2);
}

#[test]
fn an_entity_export_from_postgresql_takes_the_same_rows() {
    let d = Dir::new();
    let url = pg::cluster().database("entity");
    pg::connect(&url)
        .batch_execute(&format!("{}{DATA}", SCHEMA.replace("INTEGER", "bigint")))
        .unwrap();
    let export = d.run("ferry-export", &[&url, "--root", "users:id=2", "--follow-fks"], b"");
    export.ok();
    assert_eq!(keys(&export.output.stdout), expected());
    // A text root value is quoted, not spliced.
    let tag = d.run(
        "ferry-export",
        &[&url, "--root", "tags:name=news' OR '1'='1", "--follow-fks"],
        b"",
    );
    tag.ok();
    assert!(keys(&tag.output.stdout).is_empty(), "no tag has that odd name");
    let news = d.run("ferry-export", &[&url, "--root", "tags:name=news", "--follow-fks"], b"");
    news.ok();
    assert_eq!(
        keys(&news.output.stdout).get("post_tags"),
        Some(&set(&["10/\"news\"", "13/\"news\""]))
    );
}
