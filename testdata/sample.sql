-- The ferry sample application database: users, their uploaded files, notifications.
-- Deterministic (no random or current-time values), so the committed sample.db can be checked
-- against this script. Full of values that break migration tools: 64-bit extremes, NUL bytes,
-- emoji, text that is not valid UTF-8, blobs, a column holding four storage classes, a table
-- with no key and duplicate rows, a reference to a missing row, a STRICT table, WITHOUT ROWID.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT,
    password_hash TEXT NOT NULL,
    is_active     BOOLEAN NOT NULL DEFAULT 1,
    balance       NUMERIC(12,2),
    created_at    DATETIME NOT NULL DEFAULT (datetime('now')),
    avatar        BLOB,
    settings      TEXT
);
CREATE INDEX users_created ON users (created_at);

CREATE TABLE saved_files (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    sha256      TEXT,
    status      TEXT NOT NULL DEFAULT 'local' CHECK (status IN ('local', 'migrated', 'failed')),
    uploaded_at DATETIME,
    UNIQUE (user_id, path)
);
CREATE INDEX saved_files_pending ON saved_files (status, uploaded_at) WHERE status <> 'migrated';

CREATE TABLE notifications (
    id      INTEGER PRIMARY KEY,
    user_id INTEGER REFERENCES users (id),
    kind    TEXT NOT NULL,
    payload TEXT,
    score   REAL,
    read_at DATETIME
);
CREATE INDEX notifications_user ON notifications (user_id, read_at);

CREATE TABLE tags (
    name  TEXT PRIMARY KEY,
    color TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE file_tags (
    file_id INTEGER NOT NULL REFERENCES saved_files (id),
    tag     TEXT NOT NULL REFERENCES tags (name),
    PRIMARY KEY (file_id, tag)
);

-- No primary key: exported in rowid order, compared as a multiset.
CREATE TABLE audit_log (
    at     TEXT,
    actor  TEXT,
    action TEXT,
    detail
);

CREATE TABLE app_settings (
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT;

-- 40 ordinary users ...
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
INSERT INTO users (id, email, name, password_hash, is_active, balance, created_at, avatar, settings)
SELECT i,
       'user' || i || '@example.com',
       'User ' || i,
       'pbkdf2_sha256$600000$' || printf('%08x', i * 2654435761 % 4294967296),
       i % 3 <> 0,
       round(i * 12.34, 2),
       printf('2024-%02d-%02d %02d:%02d:%02d', 1 + i % 12, 1 + i % 28, i % 24, i % 60, (i * 7) % 60),
       CASE WHEN i % 5 = 0 THEN zeroblob(i) END,
       json_object('theme', CASE WHEN i % 2 THEN 'dark' ELSE 'light' END, 'n', i, 'tags', json_array(i, i * 2))
FROM n;

-- ... and some awkward ones.
INSERT INTO users (id, email, name, password_hash, is_active, balance, created_at, avatar, settings) VALUES
    (9223372036854775807, 'max@example.com', 'Zoë 🦀 Ünïcødé', 'x', 1, 1234.50, '2024-02-29 23:59:59', x'', NULL),
    (-9223372036854775808, 'min@example.com', 'O''Brien "Bob"; DROP TABLE users; --', 'x', 0, 10, '1970-01-01 00:00:00', x'00ff00ff', '{}'),
    (0, 'zero@example.com', '', 'x', 1, 'n/a', '2000-01-01T00:00:00.123456Z', zeroblob(1024), '[1,2,3]'),
    (41, 'nul@example.com', 'before' || char(0) || 'after', 'x', 1, -0.01, '2024-06-01 12:00:00', x'deadbeef', NULL),
    (42, 'bytes@example.com', CAST(x'fffe4142' AS TEXT), 'x', 1, NULL, '2024-06-01 12:00:01', NULL, 'not json at all'),
    (43, 'long@example.com', replace(hex(zeroblob(5000)), '00', 'ab'), 'x', 1, 99999999.99, '2024-06-01 12:00:02', NULL, NULL),
    (44, 'tab	newline
@example.com', 'line1' || char(10) || 'line2' || char(13) || char(9) || '\u0041 \\', 'x', 1, 0, '2024-06-01 12:00:03', NULL, NULL);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
INSERT INTO saved_files (user_id, path, size, sha256, status, uploaded_at)
SELECT 1 + i % 40,
       printf('uploads/%04d/%02d/file-%d.%s', 2020 + i % 5, 1 + i % 12, i, CASE i % 4 WHEN 0 THEN 'pdf' WHEN 1 THEN 'jpg' WHEN 2 THEN 'png' ELSE 'tar.gz' END),
       i * 1013 % 100000,
       printf('%016x%016x%016x%016x', i * 7919, i * 104729, i * 1299709, i * 15485863),
       CASE WHEN i % 10 = 0 THEN 'migrated' WHEN i % 17 = 0 THEN 'failed' ELSE 'local' END,
       CASE WHEN i % 9 = 0 THEN NULL ELSE printf('2024-%02d-%02d 08:00:00', 1 + i % 12, 1 + i % 28) END
FROM n;
INSERT INTO saved_files (user_id, path, size, sha256, status, uploaded_at) VALUES
    (9223372036854775807, 'uploads/ünï/…/файл 🦀.txt', 0, NULL, 'local', NULL),
    (41, 'uploads/quote''s "and" spaces .txt', 9223372036854775807, NULL, 'failed', '2024-12-31 23:59:59');
-- AUTOINCREMENT remembers ids that were used and deleted: the sequence is ahead of max(id).
INSERT INTO saved_files (id, user_id, path, size, status) VALUES (500, 1, 'deleted-later', 1, 'local');
DELETE FROM saved_files WHERE id = 500;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
INSERT INTO notifications (id, user_id, kind, payload, score, read_at)
SELECT i,
       1 + i % 40,
       CASE i % 3 WHEN 0 THEN 'file_migrated' WHEN 1 THEN 'welcome' ELSE 'digest' END,
       json_object('file', i, 'ok', json(CASE WHEN i % 2 THEN 'true' ELSE 'false' END), 'ratio', i / 7.0),
       i / 3.0,
       CASE WHEN i % 4 = 0 THEN NULL ELSE printf('2024-03-%02d 10:%02d:00', 1 + i % 28, i % 60) END
FROM n;
INSERT INTO notifications (id, user_id, kind, payload, score, read_at) VALUES
    (1001, 9223372036854775807, 'edge', '{"big": 9007199254740993}', 1e308, NULL),
    (1002, -9223372036854775808, 'edge', '{"s": "\u0000"}', 5e-324, NULL),
    (1003, 0, 'edge', NULL, 9e999, NULL),
    (1004, 0, 'edge', NULL, -9e999, NULL),
    (1005, 41, 'edge', NULL, 0.1, NULL),
    (1006, 999999, 'orphan', '{"note": "refers to a user that does not exist"}', NULL, NULL),
    (1007, NULL, 'broadcast', NULL, -0.0, NULL);

INSERT INTO tags (name, color) VALUES ('urgent', 'red'), ('Ärger', '#ff0000'), ('', 'none'), ('z', 'blue'), ('Z', 'BLUE');

INSERT INTO file_tags (file_id, tag)
SELECT id, CASE id % 3 WHEN 0 THEN 'urgent' WHEN 1 THEN 'Ärger' ELSE 'z' END FROM saved_files WHERE id % 2 = 0;
INSERT INTO file_tags (file_id, tag) VALUES (2, ''), (2, 'Z');

INSERT INTO audit_log (at, actor, action, detail) VALUES
    ('2024-01-01 00:00:00', 'admin', 'login', 42),
    ('2024-01-01 00:00:01', 'admin', 'login', 42),
    ('2024-01-01 00:00:01', 'admin', 'login', 42),
    ('2024-01-02 00:00:00', 'system', 'export', 'text detail'),
    ('2024-01-03 00:00:00', 'system', 'resize', 3.5),
    ('2024-01-04 00:00:00', 'system', 'thumbnail', x'89504e470d0a1a0a'),
    ('2024-01-05 00:00:00', NULL, NULL, NULL),
    ('2024-01-06 00:00:00', 'system', 'range', -9223372036854775808),
    ('2024-01-07 00:00:00', 'system', 'tiny', 1e-300),
    ('2024-01-08 00:00:00', 'system', 'bytes', CAST(x'c3' AS TEXT)),
    ('2024-01-09 00:00:00', 'system', 'infinity', 9e999);

INSERT INTO app_settings (key, value) VALUES
    ('max_upload', 10485760),
    ('motd', 'hello'),
    ('ratio', 0.75),
    ('key', x'0102'),
    ('nothing', NULL);
